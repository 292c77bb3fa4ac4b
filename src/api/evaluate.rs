//! `cep.evaluate_risk_rules` and `cep.assess_transaction`: scoring a transaction from SQL.
//!
//! A transaction is scored against the watched table as it stands: window metrics count the
//! stored rows of the key in `[p_timestamp - window, p_timestamp]`, as the seed's function does.
//! The transaction itself is not stored; its amount and location are the arguments.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB};

use crate::engine::evaluate::{assess, risk_level, Outcome};
use crate::error::{CepError, CepResult, OrReport};
use crate::gucs;
use crate::pg::cache;
use crate::pg::scoring::{self, Event, Standing};
use crate::pg::table_arg::TableArg;

fn score(
    relid: Option<pg_sys::Oid>,
    key: &str,
    amount: Option<AnyNumeric>,
    location: Option<&str>,
    at: TimestampWithTimeZone,
) -> CepResult<Vec<Outcome>> {
    let relid = match relid {
        Some(r) => r,
        None => cache::only_watch()?,
    };
    let watch = crate::pg::watched::cached(relid)?;
    crate::pg::privileges::require_select(watch.root, &watch.qualified_name, "scoring")?;
    let amount = match amount {
        Some(a) => Some(f64::try_from(a).map_err(|e| CepError::InvalidArgument(format!("p_amount: {e}")))?),
        None => None,
    };
    if let Some(why) = &watch.unusable {
        return Err(CepError::InvalidArgument(format!("{} cannot be scored: {why}", watch.qualified_name)));
    }
    let event = Event { key, amount, location, at: at.into() };
    let mut outcomes = scoring::score(&watch, &event, Standing::Candidate)?;
    // Rules that cannot run here still get their row, untriggered, after a WARNING.
    scoring::warn_skipped(&watch);
    for (id, why) in &watch.skipped {
        let rule = cache::active_rules()?.iter().find(|r| r.id == *id).cloned();
        if let Some(rule) = rule {
            outcomes.push(Outcome {
                rule_id: rule.id,
                version: rule.version,
                score: rule.score,
                triggered: false,
                evidence: serde_json::json!({"skipped": why}),
                shadow: rule.shadow,
            });
        }
    }
    outcomes.sort_by_key(|o| o.rule_id);
    Ok(outcomes)
}

fn rule_rows(outcomes: Vec<Outcome>) -> TableIterator<'static, (name!(rule_id, i32), name!(risk_score, f64), name!(triggered, bool))> {
    TableIterator::new(outcomes.into_iter().map(|o| (o.rule_id, o.score, o.triggered)))
}

fn assessment_row(
    outcomes: Vec<Outcome>,
) -> TableIterator<'static, (name!(total_risk_score, f64), name!(risk_level, String), name!(triggered_rules, Vec<i32>), name!(details, JsonB))> {
    let a = assess(&outcomes);
    let level = risk_level(a.total_score, gucs::high_risk_threshold(), gucs::medium_risk_threshold());
    TableIterator::once((a.total_score, level.to_string(), a.triggered, JsonB(a.evidence)))
}

/// The seed's function: one row per active rule, saying whether it fires for this transaction of
/// `p_user_id` on the only watched table.
///
/// ```sql
/// SELECT * FROM cep.evaluate_risk_rules(42, 15000, 'Shanghai', '2026-01-15 23:10');
/// ```
#[pg_extern(name = "evaluate_risk_rules", stable)]
fn evaluate_risk_rules(
    p_user_id: i64,
    p_amount: Option<AnyNumeric>,
    p_location: Option<&str>,
    p_timestamp: default!(TimestampWithTimeZone, "now()"),
) -> TableIterator<'static, (name!(rule_id, i32), name!(risk_score, f64), name!(triggered, bool))> {
    rule_rows(score(None, &p_user_id.to_string(), p_amount, p_location, p_timestamp).or_report())
}

/// The same, on a named watched table; the key is given as text and cast to the key column's type.
///
/// ```sql
/// SELECT * FROM cep.evaluate_risk_rules('transactions', '42', 15000, 'Shanghai', now());
/// ```
#[pg_extern(name = "evaluate_risk_rules", stable)]
fn evaluate_risk_rules_on(
    p_table: TableArg,
    p_key: &str,
    p_amount: Option<AnyNumeric>,
    p_location: Option<&str>,
    p_timestamp: TimestampWithTimeZone,
) -> TableIterator<'static, (name!(rule_id, i32), name!(risk_score, f64), name!(triggered, bool))> {
    let p_table = p_table.open("p_table").or_report();
    rule_rows(score(Some(p_table.oid()), p_key, p_amount, p_location, p_timestamp).or_report())
}

/// The seed's `RealTimeRiskMonitor.evaluate_transaction`: the triggered scores summed, the level
/// (`cep.high_risk_threshold`, `cep.medium_risk_threshold`), the triggered rules, and for each the
/// values that made it fire.
///
/// ```sql
/// SELECT * FROM cep.assess_transaction(42, 15000, 'Shanghai', '2026-01-15 23:10');
/// ```
#[pg_extern(name = "assess_transaction", stable)]
fn assess_transaction(
    p_user_id: i64,
    p_amount: Option<AnyNumeric>,
    p_location: Option<&str>,
    p_timestamp: default!(TimestampWithTimeZone, "now()"),
) -> TableIterator<'static, (name!(total_risk_score, f64), name!(risk_level, String), name!(triggered_rules, Vec<i32>), name!(details, JsonB))> {
    assessment_row(score(None, &p_user_id.to_string(), p_amount, p_location, p_timestamp).or_report())
}

/// The same, on a named watched table.
#[pg_extern(name = "assess_transaction", stable)]
fn assess_transaction_on(
    p_table: TableArg,
    p_key: &str,
    p_amount: Option<AnyNumeric>,
    p_location: Option<&str>,
    p_timestamp: TimestampWithTimeZone,
) -> TableIterator<'static, (name!(total_risk_score, f64), name!(risk_level, String), name!(triggered_rules, Vec<i32>), name!(details, JsonB))> {
    let p_table = p_table.open("p_table").or_report();
    assessment_row(score(Some(p_table.oid()), p_key, p_amount, p_location, p_timestamp).or_report())
}
