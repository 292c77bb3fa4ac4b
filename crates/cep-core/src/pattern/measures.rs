//! MEASURES and the rows a match gives (ROWS PER MATCH), evaluated over its rows with the
//! expressions DEFINE uses (`expr`). With the standard's matching a match's rows are consecutive
//! rows of the partition, so `PREV` on its first row reads the row before it; otherwise (the live
//! engine's contiguity modes) a match is read as its own rows alone, and `PREV` is the match's
//! previous row, as in the live engine's DEFINE.

use std::cell::Cell;
use std::collections::HashMap;
use std::str::FromStr;

use super::expr::Frame;
use super::{Event, Match, Pattern, PatternError, Value};

/// The standard's ROWS PER MATCH: one row per match, or one per matched row, with empty matches
/// shown (the default), omitted, or shown with every row no match took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowsPerMatch {
    #[default]
    One,
    All,
    AllOmitEmpty,
    AllWithUnmatched,
}

impl FromStr for RowsPerMatch {
    type Err = PatternError;
    /// `one`, `all`, `all_omit_empty`, `all_with_unmatched`, or the standard's words for them
    /// (`ALL ROWS PER MATCH WITH UNMATCHED ROWS`), in any case.
    fn from_str(s: &str) -> Result<Self, PatternError> {
        let words = s.split(|c: char| c.is_whitespace() || c == '_').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ").to_lowercase();
        Ok(match words.as_str() {
            "one" | "one row per match" => RowsPerMatch::One,
            "all" | "all rows per match" | "all show empty" | "all rows per match show empty matches" => RowsPerMatch::All,
            "all omit empty" | "all rows per match omit empty matches" => RowsPerMatch::AllOmitEmpty,
            "all with unmatched" | "all rows per match with unmatched rows" => RowsPerMatch::AllWithUnmatched,
            _ => {
                return Err(PatternError::option(format!(
                    "rows_per_match: {} is not 'one', 'all', 'all_omit_empty' or 'all_with_unmatched'",
                    crate::excerpt(s)
                )))
            }
        })
    }
}

impl RowsPerMatch {
    pub fn all_rows(self) -> bool {
        self != RowsPerMatch::One
    }
}

/// One output row of a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputRow {
    /// The match (its index in the partition's matches), or `None` for a row no match took.
    pub found: Option<usize>,
    /// ALL ROWS PER MATCH: the row shown, by id, and the symbol it matched (`None` for an empty
    /// match's row and a row no match took).
    pub row: Option<(i64, Option<u16>)>,
    /// In [`Pattern::measure_names`] order (NULL for a row no match took).
    pub measures: Vec<Value>,
}

impl Pattern {
    /// The rows one partition gives (`rows`, all of them, in order; `found`, the matches the
    /// pattern returned over them), in the standard's order: each match's rows in turn, and with
    /// `AllWithUnmatched` each row no match took where the search passed it.
    pub fn output(&self, rows: &[Event], found: &[Match], mode: RowsPerMatch) -> Vec<OutputRow> {
        let index = id_index(rows);
        // Rows some match took (an empty match takes its row); the others are shown where the
        // search passed them, before the first match that starts after them.
        let mut taken = vec![false; if mode == RowsPerMatch::AllWithUnmatched { rows.len() } else { 0 }];
        if !taken.is_empty() {
            for m in found {
                m.rows.iter().map(|(_, id)| id).chain(&m.empty_at).filter_map(|id| index.get(id)).for_each(|&i| taken[i] = true);
            }
        }
        let mut next_unmatched = 0;
        let mut out = Vec::new();
        for (n, m) in found.iter().enumerate() {
            if !taken.is_empty() {
                let first = m.empty_at.or(m.rows.first().map(|r| r.1)).and_then(|id| index.get(&id).copied()).unwrap_or(rows.len());
                emit_unmatched(self, rows, &taken, &mut next_unmatched, first, &mut out);
            }
            if m.empty_at.is_some() && mode == RowsPerMatch::AllOmitEmpty {
                continue;
            }
            let values = self.measure_found(rows, &index, m, n as i64 + 1, mode.all_rows());
            if !mode.all_rows() {
                out.push(OutputRow { found: Some(n), row: None, measures: values.into_iter().next().unwrap_or_default() });
                continue;
            }
            if let Some(id) = m.empty_at {
                out.push(OutputRow { found: Some(n), row: Some((id, None)), measures: values.into_iter().next().unwrap_or_default() });
                continue;
            }
            for ((symbol, id), measures) in m.rows.iter().zip(values) {
                if !m.excluded.contains(id) {
                    out.push(OutputRow { found: Some(n), row: Some((*id, Some(*symbol))), measures });
                }
            }
        }
        if !taken.is_empty() {
            emit_unmatched(self, rows, &taken, &mut next_unmatched, rows.len(), &mut out);
        }
        out
    }

    /// The measures of each of one partition's matches (`found`, as the pattern returned them
    /// over `rows`): per match, one list of values in [`Pattern::measure_names`] order, or with
    /// `per_row` one list per matched row (ALL ROWS PER MATCH: running, up to that row).
    pub fn measure(&self, rows: &[Event], found: &[Match], per_row: bool) -> Vec<Vec<Vec<Value>>> {
        let index = id_index(rows);
        found.iter().enumerate().map(|(n, m)| self.measure_found(rows, &index, m, n as i64 + 1, per_row)).collect()
    }

    /// A live match's measures (`emit => 'final'`): it starts at row `start` of the key's rows.
    pub(super) fn measure_live(&self, rows: &[Event], start: usize, m: &Match, number: i64) -> Vec<Value> {
        let labels: Vec<u16> = m.rows.iter().map(|(s, _)| *s).collect();
        self.measure_rows(rows, start, &labels, number, false, m.empty_at.is_some()).into_iter().next().unwrap_or_default()
    }

    fn measure_found(&self, rows: &[Event], index: &HashMap<i64, usize>, m: &Match, number: i64, per_row: bool) -> Vec<Vec<Value>> {
        if self.measures.is_empty() {
            return vec![Vec::new(); if per_row { m.rows.len().max(1) } else { 1 }];
        }
        if let Some(at) = m.empty_at.and_then(|id| index.get(&id)) {
            return self.measure_rows(rows, *at, &[], number, false, true);
        }
        let labels: Vec<u16> = m.rows.iter().map(|(s, _)| *s).collect();
        let at: Vec<usize> = m.rows.iter().filter_map(|(_, id)| index.get(id).copied()).collect();
        let consecutive = at.len() == m.rows.len() && at.windows(2).all(|w| w[1] == w[0] + 1);
        match at.first() {
            Some(&first) if consecutive => self.measure_rows(rows, first, &labels, number, per_row, false),
            _ => {
                let own: Vec<Event> = at.iter().map(|&i| rows[i].clone()).collect();
                self.measure_rows(&own, 0, &labels, number, per_row, false)
            }
        }
    }

    /// The measures of a match bound to `labels` from row `start` of `partition` on: once at its
    /// last row (FINAL), or with `per_row` at each of its rows (RUNNING).
    fn measure_rows(&self, partition: &[Event], start: usize, labels: &[u16], number: i64, per_row: bool, empty: bool) -> Vec<Vec<Value>> {
        let end = start + labels.len().saturating_sub(1);
        let at_rows: Vec<usize> = if per_row { (start..=end).collect() } else { vec![end] };
        at_rows
            .into_iter()
            .map(|at| {
                let frame = Frame {
                    rows: partition,
                    one: None,
                    start,
                    at,
                    end,
                    labels,
                    symbols: &self.symbols,
                    match_number: number,
                    complete: true,
                    undecided: Cell::new(false),
                    empty,
                };
                self.measures.iter().map(|(_, e)| e.eval(&frame)).collect()
            })
            .collect()
    }
}

/// Each row by its id, once: a match names its rows by id.
fn id_index(rows: &[Event]) -> HashMap<i64, usize> {
    let mut index: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    for (i, e) in rows.iter().enumerate() {
        index.entry(e.id).or_insert(i);
    }
    index
}

/// The rows from `*next` up to `until` that no match took, as rows of no match.
fn emit_unmatched(p: &Pattern, rows: &[Event], taken: &[bool], next: &mut usize, until: usize, out: &mut Vec<OutputRow>) {
    while *next < until {
        if !taken[*next] {
            out.push(OutputRow { found: None, row: Some((rows[*next].id, None)), measures: vec![Value::Null; p.measures.len()] });
        }
        *next += 1;
    }
}
