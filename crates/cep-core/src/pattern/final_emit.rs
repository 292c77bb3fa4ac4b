//! Live patterns with `emit => 'final'`: each match is emitted once it can no longer change, and
//! it is the standard's preferred match, the one `cep.match_recognize` returns over the same rows.
//!
//! A key keeps its rows from the first row whose match is undecided (and the rows before it that
//! `PREV` reads). Each new row runs the same search as history (`preferred::preferred_at`) from
//! that first row: a match no later row can change is emitted and its rows let go (after-match
//! skipping as in history); a start row that cannot begin a match is let go; a search a later row
//! could still change waits. `within` decides the rest: once time is past a start row's deadline,
//! no later row can join, which the timer (`expire`) and the next row both use. Without `within`,
//! a match that could still grow (`a b*` after its last `b`) waits for the row that ends it.

use super::preferred::Found;
use super::{Event, KeyState, Match, Pattern};

impl Pattern {
    pub(super) fn final_advance(&self, state: &mut KeyState, ev: &Event, out: &mut Vec<Match>) {
        state.rows.push(ev.clone());
        self.decide(state, None, out);
    }

    pub(super) fn final_expire(&self, state: &mut KeyState, now: i64, out: &mut Vec<Match>) {
        self.decide(state, Some(now), out);
    }

    /// Just past the first undecided start row's deadline, when the timer decides it.
    pub(super) fn final_deadline(&self, state: &KeyState, within: i64) -> Option<i64> {
        let first = state.rows.get(state.behind as usize)?;
        Some(first.ts.saturating_add(within).saturating_add(1))
    }

    /// Emits every match that is decided, from the first pending row on. `now` (the timer's) makes
    /// start rows whose deadline has passed final.
    fn decide(&self, state: &mut KeyState, now: Option<i64>, out: &mut Vec<Match>) {
        let Some(code) = self.program.as_deref() else { return };
        loop {
            let start = state.behind as usize;
            let Some(first) = state.rows.get(start) else { break };
            let expired = now.zip(self.options.within).is_some_and(|(now, w)| now > first.ts.saturating_add(w));
            // Bounded memory: a key holding more rows than max_partials decides its oldest search as
            // if its rows had ended, and counts it.
            let forced = state.rows.len() - start > self.options.max_partials;
            if forced {
                state.dropped += 1;
                state.tainted = true;
            }
            let next = match self.preferred_at(code, &state.rows, start, expired || forced) {
                // Where the standard's skip fails, a live pattern moves one row on: an INSERT never fails.
                Found::Match(mut m, next, _) => {
                    if !self.measures.is_empty() {
                        if self.numbers {
                            state.matched += 1;
                        }
                        m.measures = self.measure_live(&state.rows, start, &m, state.matched as i64);
                    }
                    out.push(m);
                    next
                }
                Found::NoMatch => start + 1,
                Found::Undecided => break,
            };
            // The rows before the next start that PREV may read stay.
            let keep = self.rows_behind().min(next);
            state.rows.drain(..next - keep);
            state.behind = keep as u32;
        }
    }

    /// Rows before a match's first row that DEFINE reads: `PREV.col` one, `PREV(col, n)` n.
    pub(super) fn rows_behind(&self) -> usize {
        self.look_back.max(self.ctx_slots.iter().any(|&(prev, _)| prev) as usize)
    }
}
