//! `cep.backtest_rule`: a rule replayed over a watched table's history before it goes live.
//!
//! The rows of the time range are read once, in key and time order, and each is scored as the
//! monitor would have scored it when it was stored: with its key's rows up to it, by the same
//! engine, next to the table's live rules. Nothing is written.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::engine::evaluate::{assess, evaluate, level_rank, risk_level, Evidence, Transaction, WindowPlan};
use crate::engine::rules::{validate_rule, Rule};
use crate::engine::window_cache::{location_hash, stats_from_events, CachedEvent};
use crate::error::{required, CepError, CepResult, OrReport};
use crate::gucs;
use crate::pg::json_arg::JsonArg;
use crate::pg::table_arg::TableArg;
use crate::pg::time;

/// The candidate's id in the evidence: no stored rule has it.
const CANDIDATE: i32 = 0;

/// One row where the rule fires, in the order of the SQL result's columns.
type Verdict = (String, Option<String>, TimestampWithTimeZone, f64, f64, String, bool, bool, JsonB);

/// Replays a rule (as `cep.validate_rule` takes it) over the rows of a watched table stored in
/// `[since, until]`, next to the table's live rules, and returns each row where it fires: its
/// score, the row's total with it, the level, and whether the row would have alerted (at the
/// table's alert level) and been blocked (at its `block_at`). Reads the table as the caller.
///
/// ```sql
/// SELECT key, event_time, total_score, would_alert, would_block
/// FROM cep.backtest_rule('{"rule_type": "threshold", "risk_score": 0.5,
///                          "rule_condition": {"metric": "amount", "operator": ">", "value": 5000}}',
///                        'transactions', now() - interval '1 day', now());
/// ```
#[pg_extern(stable)]
fn backtest_rule(
    rule: Option<JsonArg>,
    relation: Option<TableArg>,
    since: default!(Option<TimestampWithTimeZone>, "'-infinity'"),
    until: default!(Option<TimestampWithTimeZone>, "'infinity'"),
) -> TableIterator<
    'static,
    (
        name!(key, String),
        name!(row_pk, Option<String>),
        name!(event_time, TimestampWithTimeZone),
        name!(rule_score, f64),
        name!(total_score, f64),
        name!(level, String),
        name!(would_alert, bool),
        name!(would_block, bool),
        name!(evidence, JsonB),
    ),
> {
    let rule = required("rule", rule).parse("rule").or_report();
    let relation = required("relation", relation).open("relation").or_report();
    let (since, until) = (required("since", since), required("until", until));
    TableIterator::new(replay(&rule, relation.oid(), since, until).or_report())
}

fn replay(rule: &serde_json::Value, relid: pg_sys::Oid, since: TimestampWithTimeZone, until: TimestampWithTimeZone) -> CepResult<Vec<Verdict>> {
    let condition = validate_rule(rule)?;
    let score = rule.get("risk_score").and_then(|s| s.as_f64()).unwrap_or_default();
    let watch = crate::pg::watched::cached(relid)?;
    let sql = watch.backtest_sql.as_deref().ok_or_else(|| {
        CepError::InvalidArgument(format!(
            "{} cannot be scored: {}",
            watch.qualified_name,
            watch.unusable.as_deref().unwrap_or("its mapping is unusable")
        ))
    })?;
    let mut rules: Vec<Rule> = watch.rules.iter().filter(|r| !r.shadow).cloned().collect();
    rules.push(Rule::new(CANDIDATE, 0, score, condition));
    let plan = WindowPlan::for_rules(&rules);
    let longest = plan.windows.first().copied().unwrap_or(0);
    let wanted = level_rank(&watch.alert_level).unwrap_or(1);
    let (high, medium) = (gucs::high_risk_threshold(), gucs::medium_risk_threshold());
    // History starts a window before the range, so its first rows are scored as they were.
    let from = i64::from(since).saturating_sub(longest);
    let from = TimestampWithTimeZone::try_from(from).unwrap_or(since);
    let mut out = Vec::new();
    Spi::connect(|client| -> CepResult<()> {
        let mut key: Option<String> = None;
        let mut events: Vec<CachedEvent> = Vec::new();
        for row in client.select(sql, None, &[from.into(), until.into()])? {
            check_for_interrupts!();
            let (Some(k), Some(at)) = (row.get::<String>(1)?, row.get::<TimestampWithTimeZone>(2)?) else { continue };
            let amount: Option<f64> = row.get(3)?;
            let location: Option<String> = row.get(4)?;
            if key.as_deref() != Some(k.as_str()) {
                key = Some(k.clone());
                events.clear();
            }
            let t = i64::from(at);
            let loc = location_hash(location.as_deref());
            events.push(CachedEvent { t, amount: amount.unwrap_or(f64::NAN), loc, xid: 0 });
            if at < since {
                continue;
            }
            let stats = stats_from_events(&events, &plan, t, loc);
            let tx = Transaction {
                amount,
                location: location.as_deref(),
                unix_micros: time::pg_to_unix_micros(t),
                session_utc_offset_secs: time::session_utc_offset_secs(t),
                in_history: true,
            };
            let outcomes = evaluate(&rules, &plan, &stats, &tx, Evidence::Explained);
            let Some(candidate) = outcomes.iter().find(|o| o.rule_id == CANDIDATE && o.triggered) else { continue };
            let a = assess(&outcomes);
            let level = risk_level(a.total_score, high, medium);
            let would_alert = level_rank(level).unwrap_or(0) >= wanted;
            let would_block = watch.block_at.is_some_and(|b| a.total_score >= b);
            out.push((k, row.get::<String>(5)?, at, candidate.score, a.total_score, level.to_string(), would_alert, would_block, JsonB(a.evidence)));
        }
        Ok(())
    })?;
    Ok(out)
}
