//! MEASURES: what each match reports, evaluated over its rows with the expressions DEFINE uses
//! (`expr`). With the standard's matching a match's rows are consecutive rows of the partition,
//! so `PREV` on its first row reads the row before it; otherwise (the live engine's contiguity
//! modes) a match is read as its own rows alone, and `PREV` is the match's previous row, as in
//! the live engine's DEFINE.

use std::cell::Cell;
use std::collections::HashMap;

use super::expr::Frame;
use super::{Event, Match, Pattern, Value};

impl Pattern {
    /// The measures of each of one partition's matches (`found`, as the pattern returned them
    /// over `rows`): per match, one list of values in [`Pattern::measure_names`] order, or with
    /// `per_row` one list per matched row (ALL ROWS PER MATCH: running, up to that row).
    pub fn measure(&self, rows: &[Event], found: &[Match], per_row: bool) -> Vec<Vec<Vec<Value>>> {
        // Each row by its id, once: a match names its rows by id.
        let mut index: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
        for (i, e) in rows.iter().enumerate() {
            index.entry(e.id).or_insert(i);
        }
        let mut out = Vec::with_capacity(found.len());
        for (number, m) in found.iter().enumerate() {
            let labels: Vec<u16> = m.rows.iter().map(|(s, _)| *s).collect();
            let at: Vec<usize> = m.rows.iter().filter_map(|(_, id)| index.get(id).copied()).collect();
            let consecutive = at.len() == m.rows.len() && at.windows(2).all(|w| w[1] == w[0] + 1);
            let own: Vec<Event>;
            let (partition, start) = match at.first() {
                Some(&first) if consecutive => (rows, first),
                _ => {
                    own = at.iter().map(|&i| rows[i].clone()).collect();
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
