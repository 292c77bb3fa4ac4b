//! Per-key run management: stepping runs, `within`, absences, after-match
//! skipping and the partial-run bound.

use serde::{Deserialize, Serialize};

use super::nfa::Accept;
use super::{AfterMatch, Contiguity, Event, Match, Pattern, Value};

/// State of one key: its partial runs. Serializable so the caller can keep
/// it in a table between triggers; `is_empty()` states can be deleted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(rename = "r", default)]
    runs: Vec<Run>,
    /// Per-key event counter; only compared between live runs, so it is
    /// fine for a recreated state to restart it.
    #[serde(rename = "s", default)]
    seq: u64,
    /// Runs dropped because `max_partials` was exceeded.
    #[serde(rename = "d", default)]
    pub dropped: u64,
    /// Reused buffer so that stepping does not allocate per event.
    #[serde(skip)]
    spare: Vec<Run>,
    /// `emit => 'final'`: the key's rows from the first whose match is not decided yet, after the
    /// `behind` rows before them (what `PREV` reads from a match's first rows).
    #[serde(rename = "q", default, skip_serializing_if = "Vec::is_empty")]
    pub(super) rows: Vec<Event>,
    #[serde(rename = "b", default, skip_serializing_if = "is_zero", deserialize_with = "count_or_flag")]
    pub(super) behind: u32,
    /// Partial matches were dropped (`max_partials`) since the key last had none pending: the
    /// matches it emits meanwhile are flagged.
    #[serde(rename = "x", default, skip_serializing_if = "is_false")]
    pub(super) tainted: bool,
    /// Matches emitted so far (`emit => 'final'` with `MATCH_NUMBER()` in MEASURES): the last
    /// one's number. While it is not zero the key's state is kept, so the count goes on.
    #[serde(rename = "n", default, skip_serializing_if = "is_zero_u64")]
    pub(super) matched: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl PartialEq for KeyState {
    fn eq(&self, o: &Self) -> bool {
        self.runs == o.runs
            && self.seq == o.seq
            && self.dropped == o.dropped
            && self.rows == o.rows
            && self.behind == o.behind
            && self.matched == o.matched
    }
}

impl KeyState {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.rows.is_empty() && self.matched == 0
    }
    /// Number of partial runs.
    pub fn len(&self) -> usize {
        self.runs.len()
    }
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// `behind` was a flag (one row) before PREV could reach further back.
fn count_or_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Behind {
        Flag(bool),
        Count(u32),
    }
    Ok(match Behind::deserialize(d)? {
        Behind::Flag(b) => b as u32,
        Behind::Count(n) => n,
    })
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}
fn is_false(x: &bool) -> bool {
    !*x
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    /// NFA position of the last bound row.
    #[serde(rename = "p")]
    pos: u16,
    /// Absence guards violated since the last bound row.
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    poison: u32,
    /// Strict contiguity broken while waiting for a trailing absence: the
    /// run can no longer take rows, only complete or die.
    #[serde(rename = "z", default, skip_serializing_if = "is_false")]
    sealed: bool,
    /// ts of the first row.
    #[serde(rename = "t")]
    start_ts: i64,
    #[serde(rename = "s")]
    start_seq: u64,
    #[serde(rename = "l")]
    last_seq: u64,
    /// Bound rows as (symbol, row id), stored compactly (`rows_format`): a busy key's state is
    /// read, written and logged on every event, and its row ids are most of it.
    #[serde(rename = "w", with = "rows_format")]
    rows: Vec<(u16, i64)>,
    /// PREV/FIRST values (Pattern::ctx_slots); empty when unused.
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    ctx: Vec<Value>,
}

/// `[[symbol, count, symbol, count, ...], [first id, id - previous id, ...]]`: symbols
/// run-length encoded, ids as differences (rows arrive in id order, so they are small).
mod rows_format {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(rows: &[(u16, i64)], s: S) -> Result<S::Ok, S::Error> {
        let mut symbols: Vec<u32> = Vec::new();
        let mut ids = Vec::with_capacity(rows.len());
        let mut prev = 0i64;
        for &(symbol, id) in rows {
            match symbols.len() {
                n if n >= 2 && symbols[n - 2] == symbol as u32 => symbols[n - 1] += 1,
                _ => symbols.extend([symbol as u32, 1]),
            }
            ids.push(id.wrapping_sub(prev));
            prev = id;
        }
        (symbols, ids).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u16, i64)>, D::Error> {
        let (symbols, ids): (Vec<u32>, Vec<i64>) = Deserialize::deserialize(d)?;
        let mut rows = Vec::with_capacity(ids.len());
        let mut prev = 0i64;
        let mut ids = ids.into_iter();
        for pair in symbols.chunks(2) {
            let [symbol, count] = pair else { return Err(D::Error::custom("odd symbol list")) };
            let symbol = u16::try_from(*symbol).map_err(D::Error::custom)?;
            for _ in 0..*count {
                let delta = ids.next().ok_or_else(|| D::Error::custom("fewer ids than symbols"))?;
                prev = prev.wrapping_add(delta);
                rows.push((symbol, prev));
            }
        }
        if ids.next().is_some() {
            return Err(D::Error::custom("more ids than symbols"));
        }
        Ok(rows)
    }
}

struct Cand {
    start_seq: u64,
    last_seq: u64,
    m: Match,
}

impl Pattern {
    pub fn new_state(&self) -> KeyState {
        KeyState::default()
    }

    /// Earliest `now` at which `expire` would complete or drop a run
    /// (`within` is inclusive, so this is start + within + 1).
    pub fn next_deadline(&self, state: &KeyState) -> Option<i64> {
        let w = self.options.within?;
        if self.options.emit == super::Emit::Final {
            return self.final_deadline(state, w);
        }
        state.runs.iter().map(|r| r.start_ts.saturating_add(w).saturating_add(1)).min()
    }

    /// Whether an event with these values can change a key's partial matches (beyond what time
    /// alone does, which `expire` covers). It cannot when it fits no symbol, and the pattern
    /// neither wants consecutive rows (`strict`), nor watches for absences, nor compares with
    /// PREV/FIRST: the live trigger then leaves the key's stored state alone.
    pub fn can_affect(&self, values: &[Value]) -> bool {
        self.options.emit == super::Emit::Final
            || self.options.contiguity == super::Contiguity::Strict
            || !self.nfa.absences.is_empty()
            || self.preds.iter().any(|p| p.refs)
            || self.sym_mask(values) != 0
    }

    pub fn expire(&self, state: &mut KeyState, now: i64, out: &mut Vec<Match>) {
        let from = out.len();
        self.expire_unmarked(state, now, out);
        Self::mark(state, &mut out[from..]);
    }

    /// Flags the matches a key emitted while it had dropped partial matches, and forgets the drop
    /// once nothing is pending.
    fn mark(state: &mut KeyState, emitted: &mut [Match]) {
        if state.tainted {
            emitted.iter_mut().for_each(|m| m.dropped_partials = true);
            if state.runs.is_empty() && state.rows.len() <= state.behind as usize {
                state.tainted = false;
            }
        }
    }

    fn expire_unmarked(&self, state: &mut KeyState, now: i64, out: &mut Vec<Match>) {
        if self.options.emit == super::Emit::Final {
            return self.final_expire(state, now, out);
        }
        if let Some(w) = self.options.within {
            self.expire_runs(state, now, w, out);
        }
    }

    #[inline]
    fn sym_mask(&self, vals: &[Value]) -> u64 {
        let mut m = 0u64;
        for (i, p) in self.preds.iter().enumerate() {
            if !p.refs && p.eval(vals, None) {
                m |= 1 << i;
            }
        }
        m
    }

    #[inline]
    fn sym_ok(&self, s: u16, mask: u64, ev: &Event, ctx: &[Value]) -> bool {
        let p = &self.preds[s as usize];
        if p.refs {
            p.eval(&ev.values, Some(ctx))
        } else {
            mask >> s & 1 == 1
        }
    }

    /// Absence bits (restricted to those relevant at `run.pos`) that `ev`
    /// violates.
    fn poison_bits(&self, run: &Run, mask: u64, ev: &Event) -> u32 {
        let relevant = self.nfa.guards[run.pos as usize];
        let mut bits = 0;
        let mut r = relevant;
        while r != 0 {
            let k = r.trailing_zeros();
            r &= r - 1;
            if self.sym_ok(self.nfa.absences[k as usize], mask, ev, &run.ctx) {
                bits |= 1 << k;
            }
        }
        bits
    }

    fn set_ctx(&self, ctx: &mut Vec<Value>, ev: &Event, first: bool) {
        if self.ctx_slots.is_empty() {
            return;
        }
        if first {
            ctx.clear();
        }
        for (i, &(prev, col)) in self.ctx_slots.iter().enumerate() {
            let v = ev.values.get(col as usize).cloned().unwrap_or(Value::Null);
            if first {
                ctx.push(v);
            } else if prev {
                ctx[i] = v;
            }
        }
    }

    /// Feeds one event of this key; matches are appended to `out`.
    pub fn advance(&self, state: &mut KeyState, ev: &Event, out: &mut Vec<Match>) {
        let from = out.len();
        self.advance_unmarked(state, ev, out);
        Self::mark(state, &mut out[from..]);
    }

    fn advance_unmarked(&self, state: &mut KeyState, ev: &Event, out: &mut Vec<Match>) {
        if self.options.emit == super::Emit::Final {
            return self.final_advance(state, ev, out);
        }
        if let Some(w) = self.options.within {
            if !state.runs.is_empty() {
                self.expire_runs(state, ev.ts, w, out);
            }
        }
        state.seq += 1;
        let seq = state.seq;
        let mask = self.sym_mask(&ev.values);
        if state.runs.is_empty() && mask & self.first_mask == 0 {
            return;
        }
        let mut old = std::mem::take(&mut state.runs);
        let mut next = std::mem::take(&mut state.spare);
        next.clear();
        let mut cands: Vec<Cand> = Vec::new();
        for run in old.drain(..) {
            self.step(run, ev, mask, seq, &mut next, &mut cands);
        }
        if mask & self.first_mask != 0 {
            for &q in &self.nfa.first {
                let s = self.nfa.sym[q as usize];
                if mask >> s & 1 == 1 && !self.preds[s as usize].refs {
                    let mut run = Run {
                        pos: q,
                        poison: 0,
                        sealed: false,
                        start_ts: ev.ts,
                        start_seq: seq,
                        last_seq: seq,
                        rows: vec![(s, ev.id)],
                        ctx: Vec::new(),
                    };
                    self.set_ctx(&mut run.ctx, ev, true);
                    self.arrive(run, ev.ts, &mut next, &mut cands);
                }
            }
        }
        state.runs = next;
        state.spare = old;
        if !cands.is_empty() {
            self.emit(state, cands, out);
        }
        let max = self.options.max_partials;
        if state.runs.len() > max {
            let n = state.runs.len() - max;
            state.runs.drain(..n);
            state.dropped += n as u64;
            state.tainted = true;
        }
    }

    /// A run has just bound a row at `run.pos`.
    #[inline]
    fn arrive(&self, run: Run, ts: i64, next: &mut Vec<Run>, cands: &mut Vec<Cand>) {
        if self.nfa.accept[run.pos as usize] != Accept::Eager {
            next.push(run);
            return;
        }
        let continues = self.options.after_match == AfterMatch::NoSkip && self.nfa.off[run.pos as usize] != self.nfa.off[run.pos as usize + 1];
        // Under the skip strategies an accepted run never survives the skip,
        // so its rows can be moved instead of cloned.
        let m = Match {
            start: run.start_ts,
            end: ts,
            rows: if continues { run.rows.clone() } else { Vec::new() },
            dropped_partials: false,
            ..Match::default()
        };
        let (start_seq, last_seq) = (run.start_seq, run.last_seq);
        let m = if continues {
            next.push(run);
            m
        } else {
            Match { rows: run.rows, ..m }
        };
        cands.push(Cand { start_seq, last_seq, m });
    }

    fn take(&self, mut run: Run, q: u16, ev: &Event, seq: u64, next: &mut Vec<Run>, cands: &mut Vec<Cand>) {
        let s = self.nfa.sym[q as usize];
        run.pos = q;
        run.poison = 0;
        run.last_seq = seq;
        run.rows.push((s, ev.id));
        self.set_ctx(&mut run.ctx, ev, false);
        self.arrive(run, ev.ts, next, cands);
    }

    fn step(&self, mut run: Run, ev: &Event, mask: u64, seq: u64, next: &mut Vec<Run>, cands: &mut Vec<Cand>) {
        let mut first_hit: Option<u16> = None;
        let mut more: Vec<u16> = Vec::new();
        if !run.sealed {
            for &(q, g) in self.nfa.out(run.pos) {
                if g & run.poison == 0 && self.sym_ok(self.nfa.sym[q as usize], mask, ev, &run.ctx) {
                    if first_hit.is_none() {
                        first_hit = Some(q);
                    } else {
                        more.push(q);
                    }
                }
            }
        }
        let keep_skip = match self.options.contiguity {
            Contiguity::SkipTillAny => true,
            _ => first_hit.is_none(),
        };
        if let Some(q) = first_hit {
            if !more.is_empty() || keep_skip {
                self.take(run.clone(), q, ev, seq, next, cands);
                let last = more.pop();
                for &q2 in &more {
                    self.take(run.clone(), q2, ev, seq, next, cands);
                }
                if let Some(q2) = last {
                    if keep_skip {
                        self.take(run.clone(), q2, ev, seq, next, cands);
                    } else {
                        self.take(run, q2, ev, seq, next, cands);
                        return;
                    }
                }
            } else {
                self.take(run, q, ev, seq, next, cands);
                return;
            }
        }
        if !keep_skip {
            return;
        }
        // The run skips this event.
        if self.nfa.guards[run.pos as usize] != 0 {
            run.poison |= self.poison_bits(&run, mask, ev);
        }
        if self.options.contiguity == Contiguity::Strict && !run.sealed {
            // Only a run waiting on a trailing absence survives a gap.
            match self.nfa.accept[run.pos as usize] {
                Accept::Deferred(_) => run.sealed = true,
                _ => return,
            }
        }
        // Every position has an out-edge or an accept, so only guards can kill.
        if run.poison == 0 || self.nfa.alive(run.pos, run.poison, run.sealed) {
            next.push(run);
        }
    }

    /// Drops runs older than `within` before `now`, completing those that
    /// only waited for a trailing absence.
    fn expire_runs(&self, state: &mut KeyState, now: i64, w: i64, out: &mut Vec<Match>) {
        if !state.runs.iter().any(|r| r.start_ts.saturating_add(w) < now) {
            return;
        }
        let mut old = std::mem::take(&mut state.runs);
        let mut keep = std::mem::take(&mut state.spare);
        keep.clear();
        let mut cands = Vec::new();
        for r in old.drain(..) {
            if r.start_ts.saturating_add(w) >= now {
                keep.push(r);
            } else if let Accept::Deferred(g) = self.nfa.accept[r.pos as usize] {
                if g & r.poison == 0 {
                    cands.push(Cand {
                        start_seq: r.start_seq,
                        last_seq: r.last_seq,
                        m: Match { start: r.start_ts, end: r.start_ts.saturating_add(w), rows: r.rows, dropped_partials: false, ..Match::default() },
                    });
                }
            }
        }
        state.runs = keep;
        state.spare = old;
        if !cands.is_empty() {
            self.emit(state, cands, out);
        }
    }

    /// Applies the after-match strategy to matches completed at one moment,
    /// earliest start first.
    fn emit(&self, state: &mut KeyState, mut cands: Vec<Cand>, out: &mut Vec<Match>) {
        cands.sort_by_key(|c| c.start_seq); // stable: keeps run order for ties
        match &self.options.after_match {
            AfterMatch::NoSkip => {
                let base = out.len();
                for c in cands {
                    if !out[base..].contains(&c.m) {
                        out.push(c.m);
                    }
                }
            }
            AfterMatch::SkipPastLastRow => {
                let mut bound: Option<u64> = None;
                for c in cands {
                    if bound.is_some_and(|b| c.start_seq <= b) {
                        continue;
                    }
                    bound = Some(bound.map_or(c.last_seq, |b| b.max(c.last_seq)));
                    out.push(c.m);
                }
                if let Some(b) = bound {
                    state.runs.retain(|r| r.start_seq > b);
                }
            }
            // Skipping to a variable's row is the standard's, and never runs eagerly (`compile`).
            AfterMatch::SkipToNextRow | AfterMatch::SkipToFirst(_) | AfterMatch::SkipToLast(_) => {
                let mut killed: Vec<u64> = Vec::new();
                for c in cands {
                    if killed.last() == Some(&c.start_seq) {
                        continue;
                    }
                    killed.push(c.start_seq);
                    out.push(c.m);
                }
                state.runs.retain(|r| !killed.contains(&r.start_seq));
            }
        }
    }
}
