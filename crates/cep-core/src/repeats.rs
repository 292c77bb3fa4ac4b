//! A backend's ledger of alert repeats under a cooldown.
//!
//! With a cooldown, a row that fires the same rules for the same key in the same cooldown window
//! as an open alert is counted on that alert instead of being written. Counting it with an
//! UPDATE of the alert row costs about what writing a new alert does, so a storm would cost as
//! much with a cooldown as without. Instead a backend remembers the open alerts it has seen, and
//! the repeats its committed transactions counted on them, until they are added to the alert rows
//! in one statement, about once per interval (by this backend, or by whichever backend of the
//! database flushes them all: `shared_repeats`). What is counted follows the transaction: a
//! rolled-back statement or savepoint counts nothing, a flush that rolls back is flushed again later.
//!
//! Pure data: the caller supplies subtransaction ids and runs the SQL.

use std::collections::HashMap;

/// Which open alert a row folds into: its table, key, fired rule set and cooldown window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub relid: u32,
    pub key: String,
    pub fingerprint: String,
    pub window: i64,
}

/// Repeats counted on one alert: how many, the latest row time, the highest score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tally {
    pub count: i32,
    pub last_seen: i64,
    pub max_score: f64,
}

impl Tally {
    /// Folds `other` in: counts add up, the latest time and the highest score stay.
    pub fn add(&mut self, other: Tally) {
        self.count = self.count.saturating_add(other.count);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.max_score = self.max_score.max(other.max_score);
    }
}

/// Open alerts a backend remembers at most; past this it forgets them all (they are found again,
/// one SQL statement each, on their next repeat).
pub const MAX_OPEN: usize = 100_000;

#[derive(Default)]
pub struct Ledger {
    /// Committed open alerts this backend has seen.
    open: HashMap<Slot, i64>,
    /// Alerts this transaction opened or found, by subtransaction: known open only once it commits.
    found: Vec<(u32, Slot, i64)>,
    /// This transaction's repeats, by subtransaction.
    pending: Vec<(u32, i64, Tally)>,
    /// Committed repeats not yet added to their alerts.
    unflushed: HashMap<i64, Tally>,
    /// What this transaction's flush took from `unflushed`, given back if it rolls back.
    flushing: Option<HashMap<i64, Tally>>,
}

impl Ledger {
    /// The open alert a row of `slot` is a repeat of, if this backend knows one.
    pub fn alert_for(&self, slot: &Slot) -> Option<i64> {
        self.found.iter().rev().find(|(_, s, _)| s == slot).map(|(_, _, id)| *id).or_else(|| self.open.get(slot).copied())
    }

    /// This transaction opened alert `id` for `slot`, or found it open.
    pub fn found(&mut self, subxact: u32, slot: Slot, id: i64) {
        self.found.push((subxact, slot, id));
    }

    /// A row of this transaction repeats alert `id`.
    pub fn repeat(&mut self, subxact: u32, id: i64, at: i64, score: f64) {
        self.pending.push((subxact, id, Tally { count: 1, last_seen: at, max_score: score }));
    }

    /// Whether committed repeats wait to be flushed.
    pub fn has_unflushed(&self) -> bool {
        !self.unflushed.is_empty()
    }

    /// Every repeat to add now: committed ones, this transaction's, and `handed` (taken from
    /// other sessions, see `shared_repeats`), by alert. They count as flushed if this transaction
    /// commits; if it rolls back, the committed and handed ones stay with this ledger.
    pub fn take_for_flush(&mut self, handed: Vec<(i64, Tally)>) -> Vec<(i64, Tally)> {
        let mut taken = std::mem::take(&mut self.unflushed);
        for (id, t) in handed {
            taken.entry(id).and_modify(|a| a.add(t)).or_insert(t);
        }
        let mut all = taken.clone();
        for (_, id, t) in self.pending.drain(..) {
            all.entry(id).and_modify(|a| a.add(t)).or_insert(t);
        }
        self.flushing = Some(taken);
        let mut all: Vec<(i64, Tally)> = all.into_iter().collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// The committed repeats, to hand over to `shared_repeats`; what does not fit comes back with
    /// [`Ledger::keep`].
    pub fn take_committed(&mut self) -> Vec<(i64, Tally)> {
        // Drained, not taken: the map keeps its room for the next transaction's (one per commit).
        self.unflushed.drain().collect()
    }

    pub fn keep(&mut self, tallies: Vec<(i64, Tally)>) {
        for (id, t) in tallies {
            self.unflushed.entry(id).and_modify(|a| a.add(t)).or_insert(t);
        }
    }

    /// This transaction's own repeats only, to be written by it (a prepared transaction, whose
    /// outcome is decided elsewhere).
    pub fn take_pending(&mut self) -> Vec<(i64, Tally)> {
        let mut all: HashMap<i64, Tally> = HashMap::new();
        for (_, id, t) in self.pending.drain(..) {
            all.entry(id).and_modify(|a| a.add(t)).or_insert(t);
        }
        let mut all: Vec<(i64, Tally)> = all.into_iter().collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Some alert changed state somewhere: forget every alert known open, this transaction's too
    /// (their repeats stay counted; a flush skips resolved alerts).
    pub fn forget_open(&mut self) {
        self.open.clear();
        self.found.clear();
    }

    pub fn commit(&mut self) {
        self.flushing = None;
        for (_, id, t) in self.pending.drain(..) {
            self.unflushed.entry(id).and_modify(|a| a.add(t)).or_insert(t);
        }
        if self.open.len() + self.found.len() > MAX_OPEN {
            self.open.clear();
        }
        for (_, slot, id) in self.found.drain(..) {
            self.open.insert(slot, id);
        }
    }

    /// Prepared: its outcome is decided elsewhere, and it wrote its repeats itself, and whatever its
    /// flush took (they count with it, as they would if it committed: a prepared transaction is
    /// almost always committed, and giving them back would count them twice then).
    pub fn prepared(&mut self) {
        self.found.clear();
        self.pending.clear();
        self.flushing = None;
    }

    /// Rolled back: what its flush took waits for the next one.
    pub fn abort(&mut self) {
        self.found.clear();
        self.pending.clear();
        if let Some(taken) = self.flushing.take() {
            for (id, t) in taken {
                self.unflushed.entry(id).and_modify(|a| a.add(t)).or_insert(t);
            }
        }
    }

    /// Ids grow within a transaction: the aborted subtransaction and its children have ids >= its own.
    pub fn subxact_abort(&mut self, mine: u32) {
        self.found.retain(|(s, _, _)| *s < mine);
        self.pending.retain(|(s, _, _)| *s < mine);
    }

    pub fn subxact_commit(&mut self, mine: u32, parent: u32) {
        for s in self.found.iter_mut().map(|(s, _, _)| s).chain(self.pending.iter_mut().map(|(s, _, _)| s)) {
            if *s == mine {
                *s = parent;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> Slot {
        Slot { relid: 1, key: key.into(), fingerprint: "2".into(), window: 0 }
    }

    #[test]
    fn repeats_count_once_committed_and_are_flushed_once() {
        let mut l = Ledger::default();
        l.found(1, slot("a"), 10);
        assert_eq!(l.alert_for(&slot("a")), Some(10), "this transaction's own alert");
        l.repeat(1, 10, 5, 0.6);
        l.commit();
        assert_eq!(l.alert_for(&slot("a")), Some(10));
        l.repeat(1, 10, 9, 0.9);
        l.repeat(1, 10, 7, 0.6);
        l.commit();
        let flushed = l.take_for_flush(vec![]);
        assert_eq!(flushed, vec![(10, Tally { count: 3, last_seen: 9, max_score: 0.9 })]);
        l.commit();
        assert!(!l.has_unflushed());
        assert!(l.take_for_flush(vec![]).is_empty());
    }

    #[test]
    fn a_rolled_back_statement_counts_nothing_and_a_rolled_back_flush_is_kept() {
        let mut l = Ledger::default();
        l.found(1, slot("a"), 10);
        l.repeat(1, 10, 5, 0.6);
        l.abort();
        assert_eq!(l.alert_for(&slot("a")), None, "the alert it opened is gone too");
        l.found(1, slot("a"), 11);
        l.commit();
        l.repeat(1, 11, 5, 0.6);
        l.commit();
        // A savepoint's repeats go with it.
        l.repeat(2, 11, 6, 0.6);
        l.subxact_abort(2);
        l.repeat(3, 11, 7, 0.7);
        l.subxact_commit(3, 1);
        let flushed = l.take_for_flush(vec![]);
        assert_eq!(flushed, vec![(11, Tally { count: 2, last_seen: 7, max_score: 0.7 })]);
        // The flush rolls back: the committed repeat waits for the next one; this transaction's does not.
        l.abort();
        assert_eq!(l.take_for_flush(vec![]), vec![(11, Tally { count: 1, last_seen: 5, max_score: 0.6 })]);
    }

    #[test]
    fn repeats_handed_over_by_other_sessions_are_flushed_with_ours_and_kept_if_the_flush_rolls_back() {
        let mut l = Ledger::default();
        l.repeat(1, 10, 5, 0.6);
        l.commit();
        l.repeat(1, 12, 8, 0.3);
        l.commit();
        let committed = l.take_committed();
        assert_eq!(committed.len(), 2);
        assert!(!l.has_unflushed(), "handed over");
        // The shared table had no room for alert 12: it comes back.
        l.keep(committed.into_iter().filter(|(id, _)| *id == 12).collect());
        l.repeat(1, 10, 9, 0.9);
        let handed = vec![(10, Tally { count: 4, last_seen: 7, max_score: 0.7 })];
        let flushed = l.take_for_flush(handed);
        assert_eq!(flushed, vec![(10, Tally { count: 5, last_seen: 9, max_score: 0.9 }), (12, Tally { count: 1, last_seen: 8, max_score: 0.3 })]);
        // The flush rolls back: what it took from other sessions stays here, to be written later.
        l.abort();
        let mut kept = l.take_committed();
        kept.sort_by_key(|(id, _)| *id);
        assert_eq!(kept, vec![(10, Tally { count: 4, last_seen: 7, max_score: 0.7 }), (12, Tally { count: 1, last_seen: 8, max_score: 0.3 })]);
        // A flush in a transaction that is then prepared counts with it: nothing is given back.
        l.keep(kept);
        assert_eq!(l.take_for_flush(vec![]).len(), 2);
        l.prepared();
        assert!(!l.has_unflushed());
    }

    #[test]
    fn resolved_alerts_are_forgotten_and_the_map_is_bounded() {
        let mut l = Ledger::default();
        l.found(1, slot("a"), 10);
        l.commit();
        l.forget_open();
        assert_eq!(l.alert_for(&slot("a")), None);
        for i in 0..MAX_OPEN + 1 {
            l.found(1, slot(&i.to_string()), i as i64);
        }
        l.commit();
        l.found(1, slot("x"), 1);
        l.commit();
        assert_eq!(l.alert_for(&slot("1")), None, "forgotten when full");
        assert_eq!(l.alert_for(&slot("x")), Some(1));
    }
}
