//! Scoring one transaction on a watched table: read its key's windows, run the rules.
//! `cep.evaluate_risk_rules`, `cep.assess_transaction` and both monitor triggers all come here.

use crate::engine::evaluate::{evaluate, include_candidate, Outcome, Transaction, WindowStats};
use crate::error::CepResult;
use crate::pg::{history, time, watched::Watch, window_cache};

/// Where the transaction stands relative to the rows the window query reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Asked about from SQL: not stored, and not counted in its own window (the seed's function).
    Candidate,
    /// Already stored (the statement trigger): it is among the rows read.
    Stored,
    /// About to be stored (the blocking row trigger): counted as if it were.
    Incoming,
}

pub struct Event<'a> {
    pub key: &'a str,
    pub amount: Option<f64>,
    pub location: Option<&'a str>,
    pub at: pgrx::pg_sys::TimestampTz,
}

/// Outcomes of the watch's runnable rules, in `rule_id` order.
pub fn score(watch: &Watch, event: &Event, standing: Standing) -> CepResult<Vec<Outcome>> {
    let cached = window_cache::window_stats(watch, std::slice::from_ref(event))?.pop().flatten();
    score_with(watch, event, standing, cached)
}

/// `score`, with the window stats the cache gave for this row (`None`: read them with SQL).
pub fn score_with(watch: &Watch, event: &Event, standing: Standing, cached: Option<Vec<WindowStats>>) -> CepResult<Vec<Outcome>> {
    let mut stats = match cached {
        Some(stats) => stats,
        None => history::read_window_stats(watch, event.key, event.at, event.location)?,
    };
    let tx = Transaction {
        amount: event.amount,
        location: event.location,
        unix_micros: time::pg_to_unix_micros(event.at),
        session_utc_offset_secs: time::session_utc_offset_secs(event.at),
        in_history: standing != Standing::Candidate,
    };
    if standing == Standing::Incoming {
        include_candidate(&mut stats, &tx);
    }
    Ok(evaluate(&watch.rules, &watch.plan, &stats, &tx))
}

/// Warns once about rules that cannot run on this table now; returns how many there are.
pub fn warn_skipped(watch: &Watch) -> usize {
    if let Some((_, why)) = watch.skipped.first() {
        let ids: Vec<String> = watch.skipped.iter().map(|(id, _)| id.to_string()).collect();
        pgrx::warning!("pg_cep: rules {} are skipped on {}: {why}; fix the table or call cep.watch again", ids.join(", "), watch.qualified_name);
    }
    watch.skipped.len()
}
