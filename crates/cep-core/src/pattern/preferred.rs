//! The SQL standard's preferred matches, for history (`cep.match_recognize`), where every row of a
//! partition is at hand.
//!
//! MATCH_RECOGNIZE returns, at each start row, the first match in the pattern's preference order:
//! a greedy quantifier takes as many rows as it can, an alternation prefers its left branch, an
//! optional part is taken when it can be. That is a regular expression's leftmost-first match
//! (Perl's, not POSIX's longest), found here by a Pike VM: threads of a compiled program advance
//! together one row at a time in priority order, so when one reaches `Match`, every thread after it
//! can only give a less preferred match and is dropped, while those before it may still find a
//! preferred one. Two threads at one instruction after the same rows behave alike from then on, so
//! only the first is kept: the work per row is bounded by the program's size, whatever the nesting
//! of quantifiers.
//!
//! This is the standard's row pattern semantics, which assumes consecutive rows (`strict`
//! contiguity) and has no absences; the live engine's eager semantics serve everything else.
//! Navigation follows the standard too: `PREV` is the row before in the partition (the first row of
//! a match may look at the row before the match), `FIRST` the match's first row.

use std::collections::HashSet;
use std::rc::Rc;

use super::expr::Frame;
use super::parser::Node;
use super::{AfterMatch, Event, Match, Pattern, PatternError, Value};

/// Most threads one row may hold when DEFINE tells symbols' rows apart (`Seen`): beyond it the
/// least preferred are dropped and the match is flagged, as `max_partials` does.
const MAX_THREADS: usize = 10_000;

#[derive(Clone, Copy, Debug)]
pub(super) enum Inst {
    /// Binds the current row to a symbol, if its predicate holds; `true` inside an exclusion
    /// `{- -}`, whose rows ALL ROWS PER MATCH leaves out.
    Sym(u16, bool),
    /// `^` (false) holds before the partition's first row, `$` (true) after its last.
    Anchor(bool),
    /// Tries the first target, then the second.
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A pattern compiled for the VM, or `None` for one with an absence (`!x`), which the standard
/// does not have.
pub(super) fn program(ast: &Node, symbols: &[String]) -> Option<Vec<Inst>> {
    let mut code = Vec::new();
    emit(ast, symbols, false, &mut code)?;
    code.push(Inst::Match);
    Some(code)
}

fn emit(node: &Node, symbols: &[String], excluded: bool, code: &mut Vec<Inst>) -> Option<()> {
    let again = |node: &Node, code: &mut Vec<Inst>| emit(node, symbols, excluded, code);
    match node {
        Node::Sym(s) => code.push(Inst::Sym(symbols.iter().position(|x| x == s)? as u16, excluded)),
        Node::Absent(_) => return None,
        Node::Anchor(end) => code.push(Inst::Anchor(*end)),
        Node::Exclude(inner) => emit(inner, symbols, true, code)?,
        Node::Concat(items) => {
            for item in items {
                again(item, code)?;
            }
        }
        Node::Alt(branches) => {
            // Split(this branch, next split) ... each branch jumps to the end.
            let mut to_end = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                if i + 1 < branches.len() {
                    let split = code.len();
                    code.push(Inst::Split(split + 1, 0));
                    again(branch, code)?;
                    to_end.push(code.len());
                    code.push(Inst::Jmp(0));
                    code[split] = Inst::Split(split + 1, code.len());
                } else {
                    again(branch, code)?;
                }
            }
            let end = code.len();
            for j in to_end {
                code[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat { node, min, max, reluctant } => {
            for _ in 0..*min {
                again(node, code)?;
            }
            // Greedy tries another round first, then what follows; reluctant the other way round.
            let split = |take: usize, leave: usize| if *reluctant { Inst::Split(leave, take) } else { Inst::Split(take, leave) };
            match max {
                None => {
                    let top = code.len();
                    code.push(Inst::Split(top + 1, 0));
                    again(node, code)?;
                    code.push(Inst::Jmp(top));
                    code[top] = split(top + 1, code.len());
                }
                Some(max) => {
                    // Each optional round, if not taken, skips the rounds after it too.
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(code.len());
                        code.push(Inst::Split(0, 0));
                        again(node, code)?;
                    }
                    let end = code.len();
                    for s in splits {
                        code[s] = split(s + 1, end);
                    }
                }
            }
        }
    }
    Some(())
}

/// Where `AFTER MATCH SKIP TO [FIRST|LAST] var` cannot go, which the standard makes an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SkipFailed {
    /// The variable bound only the match's first row: the search would start there again.
    FirstRow,
    /// The variable bound no row of the match.
    Absent,
}

impl SkipFailed {
    fn reason(self) -> &'static str {
        match self {
            SkipFailed::FirstRow => "cannot skip to the first row of the match",
            SkipFailed::Absent => "the pattern variable is not present in the match",
        }
    }
}

/// What a search from one start row found.
pub(super) enum Found {
    /// The preferred match, the row the next search starts at (after-match skipping), and where
    /// the standard's skip failed (the next search then starts one row on).
    Match(Match, usize, Option<SkipFailed>),
    NoMatch,
    /// A later row could still change the answer.
    Undecided,
}

/// The symbols bound so far, newest first, shared between threads.
struct Path {
    symbol: u16,
    /// Bound inside an exclusion `{- -}`.
    excluded: bool,
    before: Option<Rc<Path>>,
}

/// The path's steps, newest first.
fn steps(path: &Option<Rc<Path>>) -> impl Iterator<Item = &Path> {
    std::iter::successors(path.as_deref(), |p| p.before.as_deref())
}

/// The symbols bound so far, oldest first: what DEFINE expressions and `Seen` read, per thread.
fn symbols_of(path: &Option<Rc<Path>>) -> Vec<u16> {
    let mut out: Vec<u16> = steps(path).map(|p| p.symbol).collect();
    out.reverse();
    out
}

/// Where a thread is added: before row `at` of a partition of `len` rows (`complete`: no row will
/// follow them), for the anchors.
#[derive(Clone, Copy)]
struct Position {
    at: usize,
    len: usize,
    complete: bool,
}

impl Position {
    fn holds(&self, end: bool) -> bool {
        if end {
            self.complete && self.at == self.len
        } else {
            self.at == 0
        }
    }
}

/// The threads added at one row. Two threads at one instruction behave alike from then on, so
/// only the first (most preferred) is kept, unless DEFINE expressions read which rows some
/// symbols bound (`labels`): then they must also agree on those.
struct Seen {
    pcs: Vec<bool>,
    labels: u64,
    paths: HashSet<(usize, Vec<u16>)>,
}

impl Seen {
    fn new(code: &[Inst], labels: u64) -> Self {
        Seen { pcs: vec![false; code.len()], labels, paths: HashSet::new() }
    }
    fn first(&mut self, pc: usize, path: &Option<Rc<Path>>) -> bool {
        if self.labels == 0 {
            return !std::mem::replace(&mut self.pcs[pc], true);
        }
        let told_apart = symbols_of(path).into_iter().map(|s| if self.labels >> s & 1 == 1 { s } else { u16::MAX }).collect();
        self.paths.insert((pc, told_apart))
    }
    fn clear(&mut self) {
        self.pcs.iter_mut().for_each(|s| *s = false);
        self.paths.clear();
    }
}

/// Adds the thread at `pc` and, through splits and jumps in priority order, every thread it
/// stands for; each at most once per row (`seen`).
fn add(code: &[Inst], list: &mut Vec<(usize, Option<Rc<Path>>)>, seen: &mut Seen, at: Position, pc: usize, path: Option<Rc<Path>>) {
    if !seen.first(pc, &path) {
        return;
    }
    match code[pc] {
        Inst::Jmp(to) => add(code, list, seen, at, to, path),
        Inst::Split(first, second) => {
            add(code, list, seen, at, first, path.clone());
            add(code, list, seen, at, second, path);
        }
        Inst::Anchor(end) => {
            if at.holds(end) {
                add(code, list, seen, at, pc + 1, path);
            }
        }
        Inst::Sym(..) | Inst::Match => list.push((pc, path)),
    }
}

impl Pattern {
    /// Whether `match_history` follows the standard for this pattern and these options.
    pub fn is_standard(&self) -> bool {
        self.program.is_some() && self.options.contiguity == super::Contiguity::Strict && self.options.after_match != AfterMatch::NoSkip
    }

    /// The standard's matches over one partition's rows, in order, where a skip the standard
    /// calls an error (see [`SkipFailed`]) moves one row on, as live patterns do. `None` when the
    /// pattern or its options are not the standard's (see `is_standard`).
    pub fn preferred_matches(&self, events: &[Event]) -> Option<Vec<Match>> {
        self.matches_over(events, false).map(|(found, _)| found)
    }

    /// [`Pattern::preferred_matches`], with the standard's error where AFTER MATCH SKIP fails:
    /// what `cep.match_recognize` returns.
    pub fn standard_matches(&self, events: &[Event]) -> Option<Result<Vec<Match>, PatternError>> {
        self.matches_over(events, true).map(|(found, failed)| failed.map_or(Ok(found), Err))
    }

    /// The matches, and the error where `stop_on_failed_skip` stopped at a failed skip.
    fn matches_over(&self, events: &[Event], stop_on_failed_skip: bool) -> Option<(Vec<Match>, Option<PatternError>)> {
        if !self.is_standard() {
            return None;
        }
        let code = self.program.as_deref()?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < events.len() {
            start = match self.preferred_at(code, events, start, true) {
                Found::Match(m, next, failed) => {
                    out.push(m);
                    if let (Some(failed), true) = (failed, stop_on_failed_skip) {
                        let message = format!("AFTER MATCH SKIP failed: {} (match {} of its partition)", failed.reason(), out.len());
                        return Some((out, Some(PatternError::new(super::PatternErrorKind::SkipFailed, message))));
                    }
                    next
                }
                Found::NoMatch | Found::Undecided => start + 1,
            };
        }
        Some((out, None))
    }

    /// The preferred match starting at row `start`, and the row the next search starts at.
    /// `complete` says no row will follow `events`; otherwise a search that a later row could
    /// still change is `Undecided`.
    pub(super) fn preferred_at(&self, code: &[Inst], events: &[Event], start: usize, complete: bool) -> Found {
        let mut seen = Seen::new(code, self.labels);
        let mut threads = Vec::new();
        let position = |at| Position { at, len: events.len(), complete };
        add(code, &mut threads, &mut seen, position(start), 0, None);
        let mut best = None;
        let mut truncated = false;
        let deadline = self.options.within.map(|w| events[start].ts.saturating_add(w));
        for at in start..=events.len() {
            // A row past the deadline, and every row after it, is out of reach: as final as the end.
            let past_deadline = events.get(at).is_some_and(|e| deadline.is_some_and(|d| e.ts > d));
            let row = events.get(at).filter(|_| !past_deadline);
            let ctx = row.map(|_| self.navigation(events, start, at));
            let mut next = Vec::new();
            seen.clear();
            for (pc, path) in threads {
                match code[pc] {
                    Inst::Match => {
                        // Every thread after this one is less preferred.
                        best = Some((at, path));
                        break;
                    }
                    Inst::Sym(s, excluded) => {
                        let Some(row) = row else {
                            // A preferred thread waits for a row that may still come.
                            if !complete && !past_deadline {
                                return Found::Undecided;
                            }
                            continue;
                        };
                        let pred = &self.preds[s as usize];
                        let holds = match pred.navigation() {
                            None => pred.eval(&row.values, ctx.as_deref()),
                            Some(e) => {
                                let labels = if self.labels == 0 { Vec::new() } else { [symbols_of(&path), vec![s]].concat() };
                                let frame = Frame::define(events, start, at, &labels, &self.symbols, complete);
                                let holds = e.holds(&frame);
                                // NEXT read a row that has not come yet.
                                if frame.undecided.get() {
                                    return Found::Undecided;
                                }
                                holds
                            }
                        };
                        if holds {
                            add(code, &mut next, &mut seen, position(at + 1), pc + 1, Some(Rc::new(Path { symbol: s, excluded, before: path })));
                        }
                    }
                    Inst::Split(..) | Inst::Jmp(_) | Inst::Anchor(_) => unreachable!("threads stop at symbols and Match"),
                }
            }
            if next.is_empty() || row.is_none() {
                break;
            }
            if next.len() > MAX_THREADS {
                next.truncate(MAX_THREADS);
                truncated = true;
            }
            threads = next;
        }
        match best {
            Some((end, path)) => {
                // The path runs newest first; its rows are `events[start..end]`, in reverse.
                let mut rows: Vec<(u16, i64)> = steps(&path).zip(events[start..end].iter().rev()).map(|(p, e)| (p.symbol, e.id)).collect();
                rows.reverse();
                let mut excluded: Vec<i64> =
                    steps(&path).zip(events[start..end].iter().rev()).filter(|(p, _)| p.excluded).map(|(_, e)| e.id).collect();
                excluded.reverse();
                let (next, failed) = match (&self.options.after_match, self.skip_to) {
                    // After an empty match, the next search starts at the next row, whatever the skip.
                    _ if end == start => (start + 1, None),
                    (AfterMatch::SkipPastLastRow, _) => (end, None),
                    // The first or last row bound to the variable. Where the standard raises an
                    // error, the next search starts one row on.
                    (_, Some((last, var))) => {
                        let mut bound = rows.iter().enumerate().filter(|(_, (s, _))| var >> *s & 1 == 1).map(|(i, _)| start + i);
                        match if last { bound.next_back() } else { bound.next() } {
                            Some(at) if at > start => (at, None),
                            Some(_) => (start + 1, Some(SkipFailed::FirstRow)),
                            None => (start + 1, Some(SkipFailed::Absent)),
                        }
                    }
                    _ => (start + 1, None),
                };
                let empty_at = (end == start).then_some(events[start].id);
                let end_ts = events[end.max(start + 1) - 1].ts;
                Found::Match(
                    Match { start: events[start].ts, end: end_ts, rows, dropped_partials: truncated, excluded, empty_at, ..Match::default() },
                    next,
                    failed,
                )
            }
            None => Found::NoMatch,
        }
    }

    /// The values `PREV` and `FIRST` read at row `at` of a match that starts at `start`: the row
    /// before in the partition (NULL before its first row), and the match's first row.
    fn navigation(&self, events: &[Event], start: usize, at: usize) -> Vec<Value> {
        let value = |row: Option<&Event>, column: u16| row.and_then(|e| e.values.get(column as usize)).cloned().unwrap_or(Value::Null);
        self.ctx_slots
            .iter()
            .map(|&(prev, column)| if prev { value(at.checked_sub(1).and_then(|i| events.get(i)), column) } else { value(events.get(start), column) })
            .collect()
    }
}
