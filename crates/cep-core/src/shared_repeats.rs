//! Alert repeats handed over by every session of the server, written by one flush per database
//! and interval.
//!
//! Each session counts the repeats of open alerts in its own ledger (`repeats::Ledger`). If each
//! session also wrote them, a storm over N sessions would update every open alert N times per
//! interval, and the sessions would queue on the same alert rows: with 8 sessions that cost more
//! than half the throughput. Instead a session hands its counts over to this table as each of its
//! transactions commits, and whichever session finds its database's interval passed takes them
//! all and writes them. When the storm ends and no session of the database alerts again, nobody
//! would: the supervisor asks for the database's sender ([`SharedRepeats::overdue`]), which takes
//! and writes them. The table is bounded: what does not fit stays with its session, which writes
//! it itself.
//!
//! Plain old data meant for shared memory (all zeroes is the empty table); every method expects the
//! caller to hold the lock that guards it.

use crate::repeats::Tally;

/// Databases whose sessions can share a flush at a time; the sessions of any further database
/// write their own repeats.
pub const DATABASES: usize = 64;
/// Alerts with repeats waiting, over all databases. A storm on more open alerts than a table three
/// quarters full leaves the rest with their sessions.
pub const CELLS: usize = 32_768;
const MAX_USED: usize = CELLS / 4 * 3;

#[repr(C)]
#[derive(Clone, Copy)]
struct Database {
    /// 0 while the slot is free.
    oid: u32,
    /// Sessions that may still hand repeats over (see [`SharedRepeats::attach`]).
    sessions: u32,
    last_flush: i64,
    /// When the oldest repeat waiting was handed over; 0 while none waits.
    waiting_since: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Cell {
    /// 0 while the cell is free.
    database: u32,
    count: i32,
    alert_id: i64,
    last_seen: i64,
    max_score: f64,
}

#[repr(C)]
pub struct SharedRepeats {
    databases: [Database; DATABASES],
    used: u32,
    cells: [Cell; CELLS],
}

impl SharedRepeats {
    /// An empty table on the heap, for tests (the server's lives in shared memory).
    pub fn boxed() -> Box<SharedRepeats> {
        // SAFETY: every field is an integer or a float, for which all zeroes is a valid value, and the
        // all-zero table is the empty one.
        unsafe { Box::<SharedRepeats>::new_zeroed().assume_init() }
    }

    fn database(&mut self, oid: u32) -> Option<&mut Database> {
        let i = self.databases.iter().position(|d| d.oid == oid).or_else(|| self.databases.iter().position(|d| d.oid == 0))?;
        let d = &mut self.databases[i];
        if d.oid == 0 {
            *d = Database { oid, sessions: 0, last_flush: i64::MIN, waiting_since: 0 };
        }
        Some(d)
    }

    /// A session of `database` will hand repeats over; false when no database slot is free (its
    /// repeats then stay with it).
    pub fn attach(&mut self, database: u32) -> bool {
        self.database(database).map(|d| d.sessions += 1).is_some()
    }

    /// A session that attached leaves; true when it was the last of its database, which must then
    /// take what is left ([`SharedRepeats::take`]) so that nothing waits for a session that never comes.
    pub fn detach(&mut self, database: u32) -> bool {
        match self.databases.iter_mut().find(|d| d.oid == database) {
            Some(d) => {
                d.sessions = d.sessions.saturating_sub(1);
                d.sessions == 0
            }
            None => true,
        }
    }

    fn home(database: u32, alert_id: i64) -> usize {
        let h = (alert_id as u64 ^ (u64::from(database) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize % CELLS
    }

    /// Adds the committed repeats of a session that attached, at `now` (microseconds); returns
    /// those that did not fit.
    pub fn add(&mut self, database: u32, now: i64, tallies: Vec<(i64, Tally)>) -> Vec<(i64, Tally)> {
        let Some(d) = self.databases.iter_mut().find(|d| d.oid == database && database != 0) else { return tallies };
        if d.waiting_since == 0 && !tallies.is_empty() {
            d.waiting_since = now.max(1);
        }
        tallies.into_iter().filter(|&(alert_id, t)| !self.insert(database, alert_id, t)).collect()
    }

    /// Puts back repeats taken for a write that failed, into the database's slot, taken again if it
    /// was freed meanwhile; returns those that did not fit.
    pub fn give_back(&mut self, database: u32, now: i64, tallies: Vec<(i64, Tally)>) -> Vec<(i64, Tally)> {
        if self.database(database).is_none() {
            return tallies;
        }
        self.add(database, now, tallies)
    }

    /// Adds one alert's repeats to its cell, or to a free one; false when the table is full.
    fn insert(&mut self, database: u32, alert_id: i64, t: Tally) -> bool {
        let mut i = Self::home(database, alert_id);
        loop {
            let c = &mut self.cells[i];
            if c.database == database && c.alert_id == alert_id {
                let mut sum = Tally { count: c.count, last_seen: c.last_seen, max_score: c.max_score };
                sum.add(t);
                (c.count, c.last_seen, c.max_score) = (sum.count, sum.last_seen, sum.max_score);
                return true;
            }
            if c.database == 0 {
                if self.used as usize >= MAX_USED {
                    return false;
                }
                *c = Cell { database, count: t.count, alert_id, last_seen: t.last_seen, max_score: t.max_score };
                self.used += 1;
                return true;
            }
            i = (i + 1) % CELLS;
        }
    }

    /// Every repeat of `database` waiting, if its last flush was at least `interval` before `now`
    /// (both in microseconds): the caller writes them, and `now` becomes the last flush. `None`
    /// when not due, so that at most one session per interval writes a database's repeats.
    pub fn take_if_due(&mut self, database: u32, now: i64, interval: i64) -> Option<Vec<(i64, Tally)>> {
        let d = self.databases.iter_mut().find(|d| d.oid == database)?;
        if now.saturating_sub(d.last_flush) < interval {
            return None;
        }
        d.last_flush = now;
        Some(self.take(database))
    }

    /// Every repeat of `database` waiting, whenever the last flush was.
    pub fn take(&mut self, database: u32) -> Vec<(i64, Tally)> {
        let mut taken = Vec::new();
        let mut others = Vec::new();
        for c in self.cells.iter_mut().filter(|c| c.database != 0) {
            let t = Tally { count: c.count, last_seen: c.last_seen, max_score: c.max_score };
            if c.database == database {
                taken.push((c.alert_id, t));
            } else {
                others.push((c.database, c.alert_id, t));
            }
            c.database = 0;
        }
        // Probes of the other databases' cells may have run through the freed ones: put them back.
        self.used = 0;
        for (database, alert_id, t) in others {
            let fitted = self.insert(database, alert_id, t);
            debug_assert!(fitted, "they fitted before");
        }
        if let Some(d) = self.databases.iter_mut().find(|d| d.oid == database) {
            d.waiting_since = 0;
            if d.sessions == 0 {
                d.oid = 0;
            }
        }
        taken.sort_by_key(|(id, _)| *id);
        taken
    }

    /// Databases whose oldest repeat waiting was handed over at least `wait` microseconds before
    /// `now`. While any of a database's sessions alerts, one takes its repeats every interval: with
    /// `wait` longer than that, the overdue are those no session is left to take. The database's
    /// sender takes them instead, with [`SharedRepeats::take_if_due`].
    pub fn overdue(&self, now: i64, wait: i64) -> Vec<u32> {
        self.databases.iter().filter(|d| d.oid != 0 && d.waiting_since != 0 && now.saturating_sub(d.waiting_since) >= wait).map(|d| d.oid).collect()
    }

    /// Whether repeats of `database` wait to be written.
    pub fn waiting(&self, database: u32) -> bool {
        self.databases.iter().any(|d| d.oid == database && d.waiting_since != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(count: i32, last_seen: i64, max_score: f64) -> Tally {
        Tally { count, last_seen, max_score }
    }

    #[test]
    fn repeats_of_many_sessions_are_summed_and_taken_once_per_interval() {
        let mut s = SharedRepeats::boxed();
        assert!(s.attach(5) && s.attach(5));
        assert!(s.add(5, 1, vec![(10, tally(2, 100, 0.5)), (11, tally(1, 50, 0.9))]).is_empty());
        assert!(s.add(5, 1, vec![(10, tally(3, 90, 0.7))]).is_empty());
        assert_eq!(s.take_if_due(5, 1_000, 1_000_000), Some(vec![(10, tally(5, 100, 0.7)), (11, tally(1, 50, 0.9))]), "never flushed: due");
        assert!(s.add(5, 1, vec![(10, tally(1, 200, 0.1))]).is_empty());
        assert_eq!(s.take_if_due(5, 999_999, 1_000_000), None, "within the interval of the last flush");
        assert_eq!(s.take_if_due(5, 1_001_000, 1_000_000), Some(vec![(10, tally(1, 200, 0.1))]));
        assert_eq!(s.take_if_due(5, 3_000_000, 1_000_000), Some(vec![]), "due, nothing waiting");
        assert_eq!(s.take_if_due(6, 3_000_000, 0), None, "a database with no slot has nothing");
    }

    #[test]
    fn databases_keep_their_own_repeats_and_a_full_table_hands_back_what_does_not_fit() {
        let mut s = SharedRepeats::boxed();
        assert!(s.attach(1) && s.attach(2));
        let many: Vec<(i64, Tally)> = (0..MAX_USED as i64 - 10).map(|id| (id, tally(1, id, 0.5))).collect();
        assert!(s.add(1, 1, many).is_empty());
        // Database 2's alerts share ids with database 1's: they are other alerts.
        let left = s.add(2, 1, (0..20).map(|id| (id, tally(2, id, 0.6))).collect());
        assert_eq!(left.len(), 10, "ten fit, ten are handed back");
        assert!(left.iter().all(|(_, t)| *t == tally(2, t.last_seen, 0.6)));
        // Taking database 1's frees its cells; database 2's are still found after the rebuild.
        let one = s.take(1);
        assert_eq!(one.len(), MAX_USED - 10);
        assert!(one.iter().all(|(id, t)| *t == tally(1, *id, 0.5)));
        assert!(s.add(2, 1, vec![(3, tally(1, 99, 0.1))]).is_empty());
        let two = s.take(2);
        assert_eq!(two.len(), 10);
        assert_eq!(two.iter().map(|(_, t)| t.count).sum::<i32>(), 10 * 2 + 1, "the later repeat of alert 3 added to its cell");
        assert!(s.take(1).is_empty() && s.take(2).is_empty());
    }

    #[test]
    fn repeats_no_session_takes_are_overdue_until_taken() {
        let mut s = SharedRepeats::boxed();
        assert!(s.attach(3) && s.attach(4));
        assert!(s.overdue(10_000_000, 2_000_000).is_empty() && !s.waiting(3), "nothing handed over");
        assert!(s.add(3, 1_000_000, vec![(1, tally(1, 1, 0.5))]).is_empty());
        assert!(s.add(3, 2_500_000, vec![(2, tally(1, 2, 0.5))]).is_empty());
        assert!(s.add(4, 2_000_000, vec![(1, tally(1, 1, 0.5))]).is_empty());
        assert!(s.waiting(3) && s.waiting(4) && !s.waiting(5));
        assert!(s.overdue(2_999_999, 2_000_000).is_empty(), "not waited that long since the oldest");
        assert_eq!(s.overdue(3_000_000, 2_000_000), vec![3], "counted from the oldest repeat waiting");
        assert_eq!(s.overdue(4_000_000, 2_000_000), vec![3, 4]);
        // The sender takes database 3's; they are no longer waiting, and new ones start the clock again.
        assert_eq!(s.take_if_due(3, 4_000_000, 1_000_000).map(|t| t.len()), Some(2));
        assert_eq!(s.overdue(4_000_000, 2_000_000), vec![4]);
        assert!(s.add(3, 4_500_000, vec![(1, tally(1, 5, 0.5))]).is_empty());
        assert_eq!(s.overdue(6_000_000, 2_000_000), vec![4]);
        assert_eq!(s.overdue(6_500_000, 2_000_000), vec![3, 4]);
        // Every session gone and nothing taken (the last one left in a failed transaction): still overdue.
        assert!(s.detach(4));
        assert_eq!(s.overdue(6_500_000, 2_000_000), vec![3, 4]);
        assert_eq!(s.take(4).len(), 1);
        assert_eq!(s.overdue(6_500_000, 2_000_000), vec![3]);
    }

    #[test]
    fn the_last_session_of_a_database_is_told_to_take_what_is_left_and_slots_are_reused() {
        let mut s = SharedRepeats::boxed();
        for db in 1..=DATABASES as u32 {
            assert!(s.attach(db));
        }
        assert!(!s.attach(1000), "no slot for another database");
        assert_eq!(s.add(1000, 1, vec![(1, tally(1, 1, 1.0))]).len(), 1, "its repeats stay with the session");
        assert!(s.attach(7));
        assert!(!s.detach(7), "another session of database 7 is still there");
        assert!(s.detach(7), "the last one");
        assert!(s.take(7).is_empty());
        assert!(s.attach(1000), "database 7's slot was freed");
        assert!(s.add(1000, 1, vec![(1, tally(1, 1, 1.0))]).is_empty());
    }
}
