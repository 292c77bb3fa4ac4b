//! Scoring one transaction on a watched table: read its key's windows, run the rules.
//! `cep.evaluate_risk_rules`, `cep.assess_transaction` and both monitor triggers all come here.

use std::borrow::Cow;

use crate::engine::evaluate::{evaluate, include_candidate, Evidence, Outcome, Transaction, WindowStats};
use crate::error::CepResult;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::error::CepError;
use crate::pg::{time, watched::Watch, window_cache};

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

pub use crate::pg::window_cache::Event;

/// Outcomes of the watch's runnable rules, in `rule_id` order.
pub fn score(watch: &Watch, event: &Event, standing: Standing) -> CepResult<Vec<Outcome>> {
    let cached = window_cache::window_stats(watch, std::slice::from_ref(event))?.pop().flatten();
    score_with(watch, event, standing, cached.as_deref(), Evidence::Explained)
}

/// `score`, with the window stats the cache gave for this row (`None`: read them with SQL), and
/// with or without the fired rules' evidence.
pub fn score_with(watch: &Watch, event: &Event, standing: Standing, cached: Option<&[WindowStats]>, evidence: Evidence) -> CepResult<Vec<Outcome>> {
    let mut stats = match cached {
        Some(stats) => Cow::Borrowed(stats),
        None => Cow::Owned(read_window_stats(watch, event.key, event.at, event.location)?),
    };
    let tx = Transaction {
        amount: event.amount,
        location: event.location,
        unix_micros: time::pg_to_unix_micros(event.at),
        session_utc_offset_secs: time::session_utc_offset_secs(event.at),
        in_history: standing != Standing::Candidate,
    };
    if standing == Standing::Incoming {
        include_candidate(stats.to_mut(), &tx);
    }
    Ok(evaluate(&watch.rules, &watch.plan, &stats, &tx, evidence))
}

/// Warns once about rules that cannot run on this table now; returns how many there are.
pub fn warn_skipped(watch: &Watch) -> usize {
    if let Some((_, why)) = watch.skipped.first() {
        let ids: Vec<String> = watch.skipped.iter().map(|(id, _)| id.to_string()).collect();
        pgrx::warning!("pg_cep: rules {} are skipped on {}: {why}; fix the table or call cep.watch again", ids.join(", "), watch.qualified_name);
    }
    watch.skipped.len()
}

/// Reads the key's history once and returns one `WindowStats` per window of the plan.
pub fn read_window_stats(watch: &Watch, key: &str, at: pg_sys::TimestampTz, location: Option<&str>) -> CepResult<Vec<WindowStats>> {
    let Some(query) = watch.window_query.as_ref() else { return Ok(Vec::new()) };
    let ts = |micros: pg_sys::TimestampTz| {
        TimestampWithTimeZone::try_from(micros).map_err(|_| CepError::InvalidArgument(format!("timestamp {micros} is out of range")))
    };
    let mut args: Vec<pgrx::datum::DatumWithOid> = Vec::with_capacity(watch.plan.windows.len() + 3);
    args.push(key.into());
    for w in &watch.plan.windows {
        args.push(ts(crate::engine::window::window_from(at, *w))?.into());
    }
    args.push(ts(at)?.into());
    if watch.binds_location {
        args.push(location.into());
    }
    crate::pg::privileges::as_table_owner(watch.owner, || {
        Spi::connect(|client| {
            let row = client.select(query, Some(1), &args)?.first();
            // Columns come in the order window_query_sql wrote them.
            let mut col = 0;
            let mut next = || {
                col += 1;
                col
            };
            let mut out = Vec::with_capacity(watch.plan.windows.len());
            for needs in &watch.plan.needs {
                let mut s = WindowStats::default();
                if needs.count {
                    s.count = row.get::<i64>(next())?.unwrap_or(0);
                }
                if needs.sum {
                    s.sum = row.get::<f64>(next())?.unwrap_or(0.0);
                }
                if needs.max {
                    s.max = row.get::<f64>(next())?;
                }
                if needs.sum_sq {
                    s.sum_sq = row.get::<f64>(next())?.unwrap_or(0.0);
                }
                if watch.has_location {
                    if needs.distinct_locations {
                        s.distinct_locations = row.get::<i64>(next())?.unwrap_or(0);
                        s.same_location = row.get::<i64>(next())?.unwrap_or(0);
                    }
                    if needs.other_locations {
                        s.other_locations = row.get::<i64>(next())?.unwrap_or(0);
                    }
                }
                out.push(s);
            }
            Ok(out)
        })
    })
}
