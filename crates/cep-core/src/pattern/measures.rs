//! MEASURES: what each match reports, evaluated over its rows with the expressions DEFINE uses
//! (`expr`). With the standard's matching a match's rows are consecutive rows of the partition,
//! so `PREV` on its first row reads the row before it; otherwise (the live engine's contiguity
//! modes) a match is read as its own rows alone, and `PREV` is the match's previous row, as in
//! the live engine's DEFINE.

use std::cell::Cell;

use super::expr::Frame;
use super::{Event, Match, Pattern, Value};

impl Pattern {
    /// The measures of each of one partition's matches (`found`, as the pattern returned them
    /// over `rows`): per match, one list of values in [`Pattern::measure_names`] order, or with
    /// `per_row` one list per matched row (ALL ROWS PER MATCH: running, up to that row).
    pub fn measure(&self, rows: &[Event], found: &[Match], per_row: bool) -> Vec<Vec<Vec<Value>>> {
        let mut out = Vec::with_capacity(found.len());
        let mut from = 0;
        for (number, m) in found.iter().enumerate() {
            let labels: Vec<u16> = m.rows.iter().map(|(s, _)| *s).collect();
            let first = m.rows.first().and_then(|(_, id)| rows[from..].iter().position(|e| e.id == *id)).map(|i| from + i);
            let consecutive = first.filter(|&f| m.rows.iter().enumerate().all(|(k, (_, id))| rows.get(f + k).is_some_and(|e| e.id == *id)));
            let own: Vec<Event>;
            let (partition, start) = match consecutive {
                Some(f) => {
                    from = f;
                    (rows, f)
                }
                None => {
                    own = m.rows.iter().filter_map(|(_, id)| rows.iter().find(|e| e.id == *id).cloned()).collect();
                    (own.as_slice(), 0)
                }
            };
            let end = start + labels.len().saturating_sub(1);
            let at_rows: Vec<usize> = if per_row { (start..=end).collect() } else { vec![end] };
            let values = at_rows
                .into_iter()
                .map(|at| {
                    let frame = Frame {
                        rows: partition,
                        one: None,
                        start,
                        at,
                        end,
                        labels: &labels,
                        symbols: &self.symbols,
                        match_number: number as i64 + 1,
                        complete: true,
                        undecided: Cell::new(false),
                    };
                    self.measures.iter().map(|(_, e)| e.eval(&frame)).collect()
                })
                .collect();
            out.push(values);
        }
        out
    }
}
