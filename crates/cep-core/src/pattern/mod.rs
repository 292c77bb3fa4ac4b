//! CEP sequence patterns (MATCH_RECOGNIZE / Flink CEP style) over one key's
//! event stream. Pure Rust, no database code: the caller partitions events by
//! key, keeps one [`KeyState`] per key and feeds that key's events in order.
//!
//! Over history with `strict` contiguity (the standard's consecutive rows), `cep.match_recognize`
//! returns the standard's preferred matches (`preferred`). The live engine below, and history in
//! its other modes, make these decisions that differ from SQL:2016 MATCH_RECOGNIZE, and why:
//! - Emission is eager: a match is emitted when a run first reaches an
//!   accepting state, because a live trigger cannot wait for the future. So
//!   `a b+` emits `a b` at the first `b`, not the greedy longest match.
//!   With [`AfterMatch::NoSkip`] the run keeps extending and the greedy match
//!   is the last one emitted.
//! - `PREV.col` / `FIRST.col` refer to the previous / first event *of the
//!   match* (not of the partition); they coincide under strict contiguity.
//!   A symbol whose predicate uses them never matches the first event of a
//!   match (there is nothing to refer to), so it cannot start a match.
//! - A symbol used in the pattern but absent from `define` matches every row
//!   (as in MATCH_RECOGNIZE); a `define` entry not used in the pattern is an
//!   error, since it is almost always a typo.
//! - Run-time predicate evaluation never fails: NULL comparisons and type
//!   mismatches are false, because an error inside a trigger would fail the
//!   user's INSERT.
//! - `within` is inclusive: a match may span exactly `within` microseconds;
//!   runs are dropped (or, for a trailing absence, completed) once time is
//!   strictly past `start + within`, hence `next_deadline` = that + 1.
//! - Absences: `a !x c` forbids an `x` strictly between the rows bound to
//!   `a` and `c` (an event matching both `c` and `x` is taken as `c`).
//!   `a !x` at the end completes at the deadline; under Strict contiguity
//!   other events do not kill such a waiting run (there is nothing left to
//!   be contiguous with), they only stop it from binding more rows.
//! - SkipTillAny forks order "take" copies before the "skip" copy, so among
//!   matches completing together with the same start, the first one (the one
//!   kept by the skip strategies) binds the most rows, as greedy would.
//! - `max_partials`: when a key has more runs, the oldest are dropped and
//!   counted in `KeyState::dropped`, so one hot key cannot exhaust memory.
//! - Symbol ids follow first appearance in the pattern; `columns()` is
//!   sorted by name so it does not depend on JSON key order.

#[cfg(test)]
mod bench;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_sql;
mod expr;
mod expr_parser;
mod final_emit;
mod matcher;
mod measures;
mod nfa;
mod parser;
mod predicate;
mod preferred;
pub mod state_cache;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use self::expr::to_json as value_to_json;
pub use self::matcher::KeyState;
pub use self::measures::{OutputRow, RowsPerMatch};
use self::nfa::Nfa;
use self::predicate::SymbolPred;

/// A column value; the caller converts database datums into these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// JSON has no NaN/inf (serde_json writes null); reading null back as
    /// NaN keeps a stored KeyState loadable.
    Float(#[serde(deserialize_with = "f64_or_nan")] f64),
    Text(String),
    /// Only made by `ARRAY_AGG` in MEASURES: rows never hold one.
    Array(Vec<Value>),
}

fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One event of a key. `values` follow [`Pattern::columns`]; missing trailing
/// values are read as NULL rather than panicking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    /// Microseconds.
    pub ts: i64,
    pub values: Vec<Value>,
}

/// How events between consecutive matched events are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Contiguity {
    /// Matched events are consecutive; a non-extending event kills the run.
    Strict,
    /// Irrelevant events are skipped; a run takes the first event it can.
    SkipTillNext,
    /// A run that can take an event forks: one copy takes it, one skips it.
    SkipTillAny,
}

impl FromStr for Contiguity {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        match s {
            "strict" => Ok(Contiguity::Strict),
            "skip_till_next" => Ok(Contiguity::SkipTillNext),
            "skip_till_any" => Ok(Contiguity::SkipTillAny),
            _ => Err(PatternError::option(format!("contiguity: {} is not one of strict, skip_till_next, skip_till_any", super::excerpt(s)))),
        }
    }
}

/// What happens to other partial runs once a match is emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterMatch {
    /// Drop every run that started at or before the match's last row.
    SkipPastLastRow,
    /// Drop the runs that started at the match's first row; others go on.
    SkipToNextRow,
    /// Keep everything (Flink NO_SKIP): every match of every run is emitted.
    NoSkip,
    /// The standard's `AFTER MATCH SKIP TO FIRST var`: the next match starts at the first row
    /// bound to the variable. Only with the standard's matching (`Emit::Final`, or history).
    SkipToFirst(String),
    /// `AFTER MATCH SKIP TO LAST var` (and `SKIP TO var`): at the last row bound to it.
    SkipToLast(String),
}

impl FromStr for AfterMatch {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        match s {
            "past_last_row" => Ok(AfterMatch::SkipPastLastRow),
            "to_next_row" => Ok(AfterMatch::SkipToNextRow),
            "no_skip" => Ok(AfterMatch::NoSkip),
            _ => {
                let words: Vec<&str> = s.split_whitespace().collect();
                match words.as_slice() {
                    ["to_first", var] => Ok(AfterMatch::SkipToFirst(var.to_string())),
                    ["to_last", var] | ["to", var] => Ok(AfterMatch::SkipToLast(var.to_string())),
                    _ => Err(PatternError::option(format!(
                        "after_match: {} is not one of past_last_row, to_next_row, no_skip, 'to_first <symbol>', 'to_last <symbol>', 'to <symbol>'",
                        super::excerpt(s)
                    ))),
                }
            }
        }
    }
}

/// When a live pattern emits a match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Emit {
    /// As soon as a run reaches an accepting state (`a b+` emits `a b` at the first `b`).
    #[default]
    Eager,
    /// Once the match can no longer change: the standard's preferred match, the one
    /// `cep.match_recognize` returns over the same rows (`final_emit`).
    Final,
}

impl FromStr for Emit {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        match s {
            "eager" => Ok(Emit::Eager),
            "final" => Ok(Emit::Final),
            _ => Err(PatternError::option(format!("emit: {} is not one of eager, final", super::excerpt(s)))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatternOptions {
    pub contiguity: Contiguity,
    pub after_match: AfterMatch,
    /// Microseconds, inclusive.
    pub within: Option<i64>,
    /// Per key; when exceeded the oldest runs are dropped (and counted). With `Emit::Final`, the
    /// most rows a key keeps for a match not yet decided.
    pub max_partials: usize,
    #[serde(default)]
    pub emit: Emit,
}

impl Default for PatternOptions {
    fn default() -> Self {
        PatternOptions {
            contiguity: Contiguity::SkipTillNext,
            after_match: AfterMatch::SkipPastLastRow,
            within: None,
            max_partials: 1000,
            emit: Emit::Eager,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// The pattern text does not parse.
    Syntax,
    /// A `define` key is not a valid symbol name.
    UnknownSymbol,
    /// A `define` entry is not used by the pattern.
    UnusedDefine,
    /// A predicate in `define` is malformed.
    BadPredicate,
    /// An option value is invalid or inconsistent with the pattern.
    BadOption,
    /// Over a size limit (text, nesting, automaton, conditions): refused before it costs memory
    /// or time.
    TooComplex,
    /// A construct of the standard that this way of running the pattern cannot give its meaning.
    Unsupported,
    /// AFTER MATCH SKIP TO a row the standard forbids, found while matching history.
    SkipFailed,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    pub kind: PatternErrorKind,
    /// Complete, user-facing message naming the offending token.
    pub message: String,
    /// 0-based character offset in the pattern text, for syntax errors.
    pub position: Option<usize>,
}

impl PatternError {
    fn option(message: String) -> Self {
        PatternError { kind: PatternErrorKind::BadOption, message: super::bounded_message(message), position: None }
    }
    fn new(kind: PatternErrorKind, message: String) -> Self {
        PatternError { kind, message: super::bounded_message(message), position: None }
    }
    /// Every error leaving [`compile`] passes here, whichever part made it.
    fn bounded(mut self) -> Self {
        self.message = super::bounded_message(self.message);
        self
    }
}

/// One completed match. `rows` are (symbol id, event id) in event order;
/// absences bind no rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub start: i64,
    /// Last row's ts, or `start + within` for a match completed by a
    /// trailing absence.
    pub end: i64,
    pub rows: Vec<(u16, i64)>,
    /// Emitted while its key had dropped partial matches (`max_partials`): a match the bound
    /// did not change would be the same, but one may be missing or differ.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped_partials: bool,
    /// Ids of the rows bound inside an exclusion `{- -}`: ALL ROWS PER MATCH leaves them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<i64>,
    /// An empty match (no rows) found at the row with this id: the standard's matching has them
    /// for patterns like `a*`, and ALL ROWS PER MATCH shows that row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_at: Option<i64>,
    /// MEASURES of a live match (`emit => 'final'`), in [`Pattern::measure_names`] order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<Value>,
}

/// A compiled pattern; immutable and shareable across keys and threads.
#[derive(Debug)]
pub struct Pattern {
    columns: Vec<String>,
    symbols: Vec<String>,
    preds: Vec<SymbolPred>,
    nfa: Nfa,
    options: PatternOptions,
    /// Bits of symbols that may start a run (context-free predicates only).
    first_mask: u64,
    /// For PREV/FIRST references: which column each context slot copies,
    /// and whether it is refreshed on every row (PREV) or set once (FIRST).
    ctx_slots: Vec<(bool /* is_prev */, u16 /* column */)>,
    /// The pattern for the standard's preferred matches over history (`preferred`); `None` when
    /// it has an absence.
    program: Option<Vec<preferred::Inst>>,
    /// `AFTER MATCH SKIP TO FIRST|LAST var`: whether the last row, and the variable's symbols (a
    /// SUBSET name stands for several).
    skip_to: Option<(bool, u64)>,
    /// MEASURES: names and expressions.
    measures: Vec<(String, expr::Expr)>,
    /// Symbols whose rows DEFINE expressions tell apart (`expr::Reads::labels`).
    labels: u64,
    /// Rows before a match's first row that DEFINE or MEASURES may read (`PREV`).
    look_back: usize,
    /// What only `cep.match_recognize` runs (see [`Pattern::history_only`]).
    history_only: Option<&'static str>,
    /// MEASURES read `MATCH_NUMBER()`: a live key counts its matches.
    numbers: bool,
}

impl Pattern {
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }
    pub fn options(&self) -> &PatternOptions {
        &self.options
    }
    /// What in this pattern needs a partition's whole rows, which a live pattern never has: a
    /// live pattern with it is refused (0A000), `cep.match_recognize` runs it.
    pub fn history_only(&self) -> Option<&'static str> {
        self.history_only
    }
    /// MEASURES' names, in the order `measure` returns their values.
    pub fn measure_names(&self) -> impl Iterator<Item = &str> {
        self.measures.iter().map(|(n, _)| n.as_str())
    }
}

/// The standard's clauses a pattern may carry beyond PATTERN and DEFINE, as JSON (`null` for none).
#[derive(Clone, Debug, Default)]
pub struct Clauses {
    /// `{"name": "expression", ...}`: what each match reports.
    pub measures: serde_json::Value,
    /// `{"name": ["var", ...], ...}`: names for unions of variables.
    pub subset: serde_json::Value,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern(symbols={:?}, columns={:?})", self.symbols, self.columns)
    }
}

/// Compiles a pattern; all validation happens here so that `advance` never
/// has to fail.
pub fn compile(pattern: &str, define: &serde_json::Value, options: PatternOptions) -> Result<Pattern, PatternError> {
    compile_clauses(pattern, define, &Clauses::default(), options)
}

/// [`compile`] with MEASURES and SUBSET.
pub fn compile_clauses(pattern: &str, define: &serde_json::Value, clauses: &Clauses, options: PatternOptions) -> Result<Pattern, PatternError> {
    compile_unbounded(pattern, define, clauses, options).map_err(PatternError::bounded)
}

fn compile_unbounded(pattern: &str, define: &serde_json::Value, clauses: &Clauses, options: PatternOptions) -> Result<Pattern, PatternError> {
    if let Some(w) = options.within {
        if w <= 0 {
            return Err(PatternError::option(format!("within: must be positive, got {w}")));
        }
    }
    if options.max_partials == 0 {
        return Err(PatternError::option("max_partials: must be at least 1".into()));
    }
    let ast = parser::parse(pattern)?;
    let mut symbols: Vec<String> = Vec::new();
    parser::collect_symbols(&ast, &mut symbols);
    if symbols.len() > 64 {
        return Err(PatternError {
            kind: PatternErrorKind::Syntax,
            message: format!("pattern: too many distinct symbols ({}, at most 64)", symbols.len()),
            position: None,
        });
    }
    let subsets = predicate::compile_subsets(&clauses.subset, &symbols)?;
    let defs = predicate::compile_define(define, &symbols, &subsets, &clauses.measures)?;
    let navigating = defs.preds.iter().filter(|p| p.navigation().is_some());
    let labels = navigating.clone().fold(0, |bits, p| bits | p.reads.labels);
    let look_back = navigating.clone().map(|p| p.reads.back).max().unwrap_or(0);
    let navigates = navigating.count() > 0;
    let nfa = nfa::build(&ast, &symbols, pattern)?;
    if nfa.has_deferred() && options.within.is_none() {
        return Err(PatternError::option("within: a pattern ending in an absence (!sym) needs `within`, otherwise it never completes".into()));
    }
    let mut first_mask = 0u64;
    for &q in &nfa.first {
        let s = nfa.sym[q as usize] as usize;
        if !defs.preds[s].uses_refs() {
            first_mask |= 1 << s;
        }
    }
    let program = preferred::program(&ast, &symbols);
    let skip_to = match &options.after_match {
        AfterMatch::SkipToFirst(var) | AfterMatch::SkipToLast(var) => {
            let bits = symbols.iter().position(|s| s == var).map(|id| 1u64 << id).or(subsets.iter().find(|(n, _)| n == var).map(|(_, bits)| *bits));
            let Some(bits) = bits else {
                return Err(PatternError::option(format!("after_match: {} is not a symbol of the pattern or a subset", super::excerpt(var))));
            };
            Some((matches!(options.after_match, AfterMatch::SkipToLast(_)), bits))
        }
        _ => None,
    };
    // What only the standard's matching gives a meaning to is refused where the pattern would run
    // eagerly, never run with another meaning.
    let standard_only = parser::standard_only(&ast)
        .or(nfa.nullable.then_some("patterns that can match an empty sequence of rows (empty matches)"))
        .or(skip_to.map(|_| "after_match 'to_first <symbol>' and 'to_last <symbol>'"))
        .or(navigates.then_some("DEFINE expressions that read other rows (PREV, NEXT, FIRST, LAST, aggregates, CLASSIFIER)"));
    if let (Some(what), Emit::Eager) = (standard_only, options.emit) {
        return Err(PatternError::new(
            PatternErrorKind::Unsupported,
            format!(
                "{what} need the SQL standard's matching: contiguity => 'strict' and emit => 'final' (the default for a strict \
                 pattern), or cep.match_recognize with contiguity => 'strict'"
            ),
        ));
    }
    if options.emit == Emit::Final && (program.is_none() || options.contiguity != Contiguity::Strict || options.after_match == AfterMatch::NoSkip) {
        return Err(PatternError::option(
            "emit: 'final' gives the SQL standard's matches, which need contiguity => 'strict', no absence (!sym) and an after_match \
             other than no_skip; use emit => 'eager' for this pattern"
                .into(),
        ));
    }
    // What a live stream cannot give the standard's meaning: `$` needs the partition's end, a
    // match of no rows would be one per row, and NEXT in MEASURES reads rows after the match.
    let measured: Vec<expr::Reads> = defs.measures.iter().map(|(_, e)| e.reads()).collect();
    let history_only = if parser::history_only(&ast) {
        Some("anchors (^ $)")
    } else if nfa.nullable {
        Some("empty matches (its pattern can match no row)")
    } else if measured.iter().any(|r| r.ahead) {
        Some("MEASURES that read rows after the match (NEXT)")
    } else {
        None
    };
    // Live matches are measured over the rows a key keeps: as many before a match as PREV reads.
    let look_back = look_back.max(measured.iter().map(|r| r.back).max().unwrap_or(0));
    let numbers = measured.iter().any(|r| r.numbers);
    Ok(Pattern {
        numbers,
        history_only,
        columns: defs.columns,
        symbols,
        preds: defs.preds,
        nfa,
        options,
        first_mask,
        ctx_slots: defs.ctx_slots,
        program,
        skip_to,
        measures: defs.measures,
        labels,
        look_back,
    })
}

/// Runs one key's history through the live code path, so history and live
/// triggers agree on every match.
pub fn match_all(pattern: &Pattern, events: &[Event]) -> Vec<Match> {
    let mut st = pattern.new_state();
    let mut out = Vec::new();
    for e in events {
        pattern.advance(&mut st, e, &mut out);
    }
    pattern.expire(&mut st, i64::MAX, &mut out);
    out
}
