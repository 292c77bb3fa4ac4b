//! The transaction monitor, attached by `cep.watch` as one trigger named `cep_monitor`:
//!
//! - without `block_at`: `AFTER INSERT ... REFERENCING NEW TABLE AS cep_new_rows FOR EACH
//!   STATEMENT`, so a multi-row INSERT or a COPY is one call that reads its rows once; each row is
//!   scored with its key's window as stored, itself and the statement's earlier rows included;
//! - with `block_at`: `BEFORE INSERT FOR EACH ROW`, so a row can be refused before it is stored;
//!   the row is counted in its own window as if it were stored, and the rows its statement
//!   inserted before it are visible. For rows inserted in time order, both modes give the same
//!   scores; a row mode batch out of time order sees only the rows inserted before each row.
//!
//! Alerts go to `cep.alerts`; NOTIFY carries the alert id and is delivered only on commit.

use std::time::Instant;

use pgrx::prelude::*;
use pgrx::{AllocatedByPostgres, PgTrigger, PgTriggerError};

use crate::engine::counters::MonitorCounters;
use crate::engine::evaluate::{assess, level_rank, risk_level, Assessment, Evidence, WindowStats};
use crate::engine::payload::{alert_payload, AlertNotice};
use crate::error::{CepError, CepResult, OrReport};
use crate::gucs;
use crate::pg::alert_rows::{AlertRow, AlertRows};
use crate::pg::privileges::as_extension_owner;
use crate::pg::scoring::{self, Event, Standing};
use crate::pg::tuple::Row;
use crate::pg::{
    cache, rollups, spi, stats,
    watched::{self, Watch},
    window_cache,
};
use pgrx::PgOid;

/// Statement-level trigger function behind `cep.watch`; not called directly.
#[pg_trigger]
fn monitor<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        let data = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
        let started = Instant::now();
        let mut counts = MonitorCounters::default();
        let result = score_new_rows(relid, data, &mut counts);
        finish(relid, &mut counts, started);
        result.or_report();
        Ok(None)
    })
}

/// Statement trigger for UPDATE, DELETE and TRUNCATE on a watched table: the window cache cannot
/// follow those, so the table is read from SQL for the rest of the transaction and dropped from
/// the cache when it commits. Not called directly.
#[pg_trigger]
fn monitor_changes<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        let root = watched::cached(relid).map(|w| w.root).unwrap_or(relid);
        window_cache::mark_dirty(root);
        Ok(None)
    })
}

/// Row-level trigger function behind `cep.watch(..., block_at => ...)`; not called directly.
/// A refused row raises SQLSTATE 09000 (triggered_action_exception), naming the rules.
#[pg_trigger]
fn monitor_row<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        let started = Instant::now();
        let mut counts = MonitorCounters::default();
        let verdict = check_incoming_row(relid, trigger.trigger_data(), &mut counts);
        finish(relid, &mut counts, started);
        match verdict.or_report() {
            Verdict::Keep => Ok(trigger.new()),
            Verdict::Skip => Ok(None),
            Verdict::Reject(message, detail) => CepError::Blocked { message, detail }.report(),
        }
    })
}

fn finish(relid: pg_sys::Oid, counts: &mut MonitorCounters, started: Instant) {
    counts.total_micros = started.elapsed().as_micros() as u64;
    // Counted under the watched table, also when the trigger fired on one of its partitions.
    let table = watched::cached(relid).map(|w| w.root).unwrap_or(relid);
    stats::record(table, counts);
}

fn event(row: &Row) -> Event<'_> {
    Event { key: &row.key, amount: row.amount, location: row.location.as_deref(), at: row.at }
}

/// True when the watch cannot score at all; warns and counts every rule as an error.
fn cannot_score(watch: &Watch, rows: u64, counts: &mut MonitorCounters) -> bool {
    if let Some(why) = &watch.unusable {
        pgrx::warning!("pg_cep: the monitor on {} skips every rule: {why}; fix the table or call cep.watch again", watch.qualified_name);
        counts.rule_errors += rows * watch.skipped.len() as u64;
        return true;
    }
    counts.rule_errors += rows * scoring::warn_skipped(watch) as u64;
    false
}

fn score_new_rows(relid: pg_sys::Oid, data: *mut pg_sys::TriggerData, counts: &mut MonitorCounters) -> CepResult<()> {
    // Rows go into the rollups and the window cache even when there is nothing to score.
    let no_rules = cache::active_rules()?.is_empty();
    let watch = watched::cached(relid)?;
    if no_rules && !window_cache::enabled() && !watch.rollups {
        return Ok(());
    }
    // SAFETY: `data` is this trigger call's TriggerData: its transition table and relation.
    let (store, desc) = unsafe { ((*data).tg_newtable, (*(*data).tg_relation).rd_att) };
    let Some(columns) = watch.row_columns else {
        // SAFETY: the NEW TABLE read above (cep.watch makes this trigger with REFERENCING NEW TABLE).
        counts.rows_seen = unsafe { pg_sys::tuplestore_tuple_count(store) } as u64;
        window_cache::mark_dirty(watch.root);
        cannot_score(&watch, counts.rows_seen, counts);
        return Ok(());
    };
    // SAFETY: this trigger call's NEW TABLE and its relation's descriptor, read above.
    let rows = unsafe { columns.read_transition(store, desc) };
    counts.rows_seen = rows.len() as u64;
    // Every row of the statement is in the window of the later ones: remember them all first.
    for row in &rows {
        window_cache::remember(&watch, &event(row));
    }
    if watch.rollups {
        rollups::add(&watch, rows.iter().map(|r| (r.at, r.key.as_str(), r.amount)));
    }
    if no_rules || cannot_score(&watch, counts.rows_seen, counts) {
        return Ok(());
    }
    let mut log = AssessmentLog::default();
    let mut alerted = Vec::new();
    let events: Vec<Event> = rows.iter().map(event).collect();
    let cached = window_cache::window_stats(&watch, &events)?;
    // Under a cooldown most alerting rows only repeat an open alert: their evidence is never
    // written, so it is built only for the rows that open one (`write_repeating_alerts`).
    let evidence = if repeats_counted(&watch).is_some() { Evidence::Omitted } else { Evidence::Explained };
    for ((row, e), cached) in rows.iter().zip(&events).zip(cached) {
        let outcomes = scoring::score_with(&watch, e, Standing::Stored, cached.as_deref(), evidence)?;
        let assessment = assess(&outcomes);
        let level = alert_level(&watch, &assessment);
        log.add(&watch, row, &assessment, level.is_some());
        log.add_shadow(row, &outcomes);
        if let Some(level) = level {
            alerted.push(Alerted::new(row, assessment, level, cached));
        }
    }
    write_alerts(&watch, &alerted, "alert", counts)?;
    log.write(&watch)
}

/// The statement's assessments for `cep.risk_assessments`, written with one INSERT.
#[derive(Default)]
struct AssessmentLog(Vec<serde_json::Value>);

impl AssessmentLog {
    fn add(&mut self, watch: &Watch, row: &Row, a: &Assessment, alerted: bool) {
        if watch.log_assessments == "all" || (watch.log_assessments == "alerts" && alerted) {
            let level = risk_level(a.total_score, gucs::high_risk_threshold(), gucs::medium_risk_threshold());
            self.0.push(serde_json::json!({"key": crate::pg::keys::stored(&row.key), "row": row.pk, "score": a.total_score, "level": level, "rules": a.triggered}));
        }
    }

    /// Shadow rules that fired on the row: recorded as an assessment of level `shadow` (their
    /// scores summed), whatever `log_assessments` says, and nothing else.
    fn add_shadow(&mut self, row: &Row, outcomes: &[crate::engine::evaluate::Outcome]) {
        let fired: Vec<&crate::engine::evaluate::Outcome> = outcomes.iter().filter(|o| o.shadow && o.triggered).collect();
        if fired.is_empty() {
            return;
        }
        let score: f64 = fired.iter().map(|o| o.score).sum();
        let rules: Vec<i32> = fired.iter().map(|o| o.rule_id).collect();
        self.0.push(serde_json::json!({"key": crate::pg::keys::stored(&row.key), "row": row.pk, "score": score, "level": "shadow", "rules": rules}));
    }

    fn write(self, watch: &Watch) -> CepResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        as_extension_owner(|| {
            Spi::connect_mut(|client| -> CepResult<()> {
                client.update(
                    "INSERT INTO cep.risk_assessments (relid, table_name, key, row_pk, score, level, triggered_rules) \
                 SELECT $1, $2, x->>'key', x->>'row', (x->>'score')::float8, x->>'level', \
                        ARRAY(SELECT jsonb_array_elements_text(x->'rules')::int) \
                 FROM jsonb_array_elements($3) x",
                    None,
                    &[watch.root.into(), watch.qualified_name.as_str().into(), pgrx::JsonB(serde_json::Value::Array(self.0)).into()],
                )?;
                Ok(())
            })
        })
    }
}

enum Verdict {
    Keep,
    Skip,
    /// Message and detail of the error that rejects the INSERT.
    Reject(String, String),
}

fn check_incoming_row(relid: pg_sys::Oid, data: &pg_sys::TriggerData, counts: &mut MonitorCounters) -> CepResult<Verdict> {
    counts.rows_seen = 1;
    let no_rules = cache::active_rules()?.is_empty();
    let watch = watched::cached(relid)?;
    if no_rules && !window_cache::enabled() && !watch.rollups {
        return Ok(Verdict::Keep);
    }
    let Some(columns) = watch.row_columns else {
        window_cache::mark_dirty(watch.root);
        cannot_score(&watch, 1, counts);
        return Ok(Verdict::Keep);
    };
    // SAFETY: tg_trigtuple is this call's NEW row and tg_relation its open relation.
    let Some(row) = (unsafe { columns.read_tuple(data.tg_trigtuple, (*data.tg_relation).rd_att) }) else {
        return Ok(Verdict::Keep);
    };
    if no_rules || cannot_score(&watch, 1, counts) {
        keep(&watch, &row)?;
        return Ok(Verdict::Keep);
    }
    let outcomes = scoring::score(&watch, &event(&row), Standing::Incoming)?;
    let a = assess(&outcomes);
    if let Some(block_at) = watch.block_at.filter(|b| a.total_score >= *b && !a.triggered.is_empty()) {
        counts.rows_blocked = 1;
        let level = risk_level(a.total_score, gucs::high_risk_threshold(), gucs::medium_risk_threshold());
        // SAFETY: this call's NEW row and its relation, as read above.
        let attempted = unsafe { attempted_row(data) };
        if watch.on_block == "skip" {
            let id = write_alerts(&watch, &[Alerted::new(&row, a, level, None)], "blocked", counts)?;
            if let (Some(id), Some(attempted), true) = (id, attempted, cache::schema_0_3()) {
                as_extension_owner(|| {
                    Spi::run_with_args("UPDATE cep.alerts SET attempted_row = $2 WHERE alert_id = $1", &[id.into(), pgrx::JsonB(attempted).into()])
                })?;
            }
            return Ok(Verdict::Skip);
        }
        // The statement fails, and its transaction with it: the attempt is left to the database's
        // sender, which records it in a transaction of its own.
        if cache::schema_0_3() {
            let record = blocked_record(&watch, &row, &a, level, attempted);
            if !crate::pg::notifier::record_blocked(&record) {
                pgrx::warning!("pg_cep: the blocked attempt on {} (key {}) is not recorded: pg_cep is not in shared_preload_libraries, or too many blocked attempts wait to be recorded", watch.qualified_name, crate::engine::excerpt(&row.key));
            }
        }
        let fired: Vec<String> =
            a.evidence.as_array().map(|rules| rules.iter().map(|r| format!("rule {} v{}", r["rule_id"], r["version"])).collect()).unwrap_or_default();
        return Ok(Verdict::Reject(
            format!(
                "pg_cep blocked an insert into {}: key {} scored {:.2}, at or above block_at {block_at} ({})",
                watch.qualified_name,
                row.key,
                a.total_score,
                fired.join(", ")
            ),
            a.evidence.to_string(),
        ));
    }
    keep(&watch, &row)?;
    let mut log = AssessmentLog::default();
    let level = alert_level(&watch, &a);
    log.add(&watch, &row, &a, level.is_some());
    log.add_shadow(&row, &outcomes);
    if let Some(level) = level {
        write_alerts(&watch, &[Alerted::new(&row, a, level, None)], "alert", counts)?;
    }
    log.write(&watch)?;
    Ok(Verdict::Keep)
}

/// A row the row trigger lets through: into the window cache and the rollups.
fn keep(watch: &Watch, row: &Row) -> CepResult<()> {
    window_cache::remember(watch, &event(row));
    if watch.rollups {
        rollups::add(watch, std::iter::once((row.at, row.key.as_str(), row.amount)));
    }
    Ok(())
}

/// The assessment's level, when it is high enough for an alert on this table.
fn alert_level(watch: &Watch, a: &Assessment) -> Option<&'static str> {
    let level = risk_level(a.total_score, gucs::high_risk_threshold(), gucs::medium_risk_threshold());
    let wanted = level_rank(&watch.alert_level).unwrap_or(1);
    (!a.triggered.is_empty() && level_rank(level).unwrap_or(0) >= wanted).then_some(level)
}

/// One INSERT for all of a statement's alerts, in the order given (`ORDER BY n`, so their ids
/// follow it too); then one call that sends their notifications.
const INSERT_ALERT: &str = "INSERT INTO cep.alerts (relid, table_name, key, row_pk, score, level, action, rules, event_time) \
     VALUES ($1, $2, $4, $5, $6, $7, $3, $8, $9) RETURNING alert_id, event_time::text";
const INSERT_ALERTS: &str = "INSERT INTO cep.alerts (relid, table_name, key, row_pk, score, level, action, rules, event_time) \
     SELECT $1, $2, a.key, a.row_pk, a.score, a.level, $3, a.rules, a.event_time \
     FROM unnest($4::text[], $5::text[], $6::float8[], $7::text[], $8::jsonb[], $9::timestamptz[]) \
          WITH ORDINALITY AS a(key, row_pk, score, level, rules, event_time, n) \
     ORDER BY a.n RETURNING alert_id, event_time::text";

/// A row that raised an alert, with its assessment and level.
struct Alerted<'r> {
    row: &'r Row,
    /// The row's key as the alert row holds it (`pg::keys`), worked out once for the row, its
    /// notification and its cooldown.
    key: std::borrow::Cow<'r, str>,
    assessment: Assessment,
    level: &'static str,
    /// The window stats the row was scored with (`None`: read with SQL), to explain it later
    /// when it was scored with `Evidence::Omitted`.
    window: Option<Vec<WindowStats>>,
}

impl<'r> Alerted<'r> {
    fn new(row: &'r Row, assessment: Assessment, level: &'static str, window: Option<Vec<WindowStats>>) -> Self {
        Alerted { row, key: crate::pg::keys::stored(&row.key), assessment, level, window }
    }

    /// The fired rules' evidence, built now if the row was scored without it (a statement
    /// trigger's row: it is stored, and its window is as it was when scored).
    fn evidence(&self, watch: &Watch) -> CepResult<serde_json::Value> {
        if !self.assessment.evidence.is_null() {
            return Ok(self.assessment.evidence.clone());
        }
        let outcomes = scoring::score_with(watch, &event(self.row), Standing::Stored, self.window.as_deref(), Evidence::Explained)?;
        Ok(assess(&outcomes).evidence)
    }
}

/// The table's cooldown in microseconds, when repeats are counted on open alerts.
fn repeats_counted(watch: &Watch) -> Option<i64> {
    watch.cooldown.filter(|_| cache::schema_0_3())
}

/// Writes the alerts (action `alert` or `blocked`) and sends one notification for each.
/// Returns the first alert's id (for a blocked row, the one alert).
fn write_alerts(watch: &Watch, alerted: &[Alerted], action: &str, counts: &mut MonitorCounters) -> CepResult<Option<i64>> {
    if alerted.is_empty() {
        return Ok(None);
    }
    if let Some(cooldown) = repeats_counted(watch).filter(|_| action == "alert") {
        return write_repeating_alerts(watch, alerted, cooldown, counts).map(|_| None);
    }
    // Alerts are pg_cep's own rows, written as the extension: the writer needs no grant on them.
    let written = as_extension_owner(|| match AlertRows::open() {
        Some(rows) => Ok(store_alerts(rows, watch, alerted, action)),
        None => insert_alerts(watch, alerted, action),
    })?;
    for (a, (alert_id, ts)) in alerted.iter().zip(&written) {
        notify_alert(watch, a, *alert_id, action, ts);
    }
    counts.alerts += alerted.len() as u64;
    counts.notifications += alerted.len() as u64;
    Ok(written.first().map(|(id, _)| *id))
}

/// The alerts stored without the executor (`pg::alert_rows`): their ids and event times as text.
fn store_alerts(mut rows: AlertRows, watch: &Watch, alerted: &[Alerted], action: &str) -> Vec<(i64, String)> {
    let written = alerted
        .iter()
        .map(|a| {
            rows.write(&AlertRow {
                relid: watch.root,
                table: &watch.qualified_name,
                key: &a.key,
                row_pk: a.row.pk.as_deref(),
                score: a.assessment.total_score,
                level: a.level,
                action,
                rules: &a.assessment.evidence,
                event_time: a.row.at,
            })
        })
        .collect();
    rows.close();
    written
}

/// The alerts inserted through SPI, when `cep.alerts` is not as pg_cep made it: their ids and
/// event times as text.
fn insert_alerts(watch: &Watch, alerted: &[Alerted], action: &str) -> CepResult<Vec<(i64, String)>> {
    use pg_sys::{FLOAT8ARRAYOID, FLOAT8OID, JSONBARRAYOID, JSONBOID, OIDOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
    let time = |a: &Alerted| pgrx::datum::TimestampWithTimeZone::try_from(a.row.at).ok();
    Spi::connect_mut(|client| -> CepResult<Vec<(i64, String)>> {
        let inserted = if let [a] = alerted {
            // One row (a single-row INSERT): a plain VALUES, with no arrays to build and unnest.
            let types = [OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID].map(PgOid::from);
            let insert = spi::kept(INSERT_ALERT, &types)?;
            client.update(
                &*insert,
                None,
                &[
                    watch.root.into(),
                    watch.qualified_name.as_str().into(),
                    action.into(),
                    a.key.as_ref().into(),
                    a.row.pk.as_deref().into(),
                    a.assessment.total_score.into(),
                    a.level.into(),
                    pgrx::JsonB(a.assessment.evidence.clone()).into(),
                    time(a).into(),
                ],
            )?
        } else {
            let types = [OIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID]
                .map(PgOid::from);
            let insert = spi::kept(INSERT_ALERTS, &types)?;
            let keys: Vec<&str> = alerted.iter().map(|a| a.key.as_ref()).collect();
            let pks: Vec<Option<&str>> = alerted.iter().map(|a| a.row.pk.as_deref()).collect();
            let scores: Vec<f64> = alerted.iter().map(|a| a.assessment.total_score).collect();
            let levels: Vec<&str> = alerted.iter().map(|a| a.level).collect();
            let rules: Vec<pgrx::JsonB> = alerted.iter().map(|a| pgrx::JsonB(a.assessment.evidence.clone())).collect();
            let times: Vec<Option<pgrx::datum::TimestampWithTimeZone>> = alerted.iter().map(time).collect();
            client.update(
                &*insert,
                None,
                &[
                    watch.root.into(),
                    watch.qualified_name.as_str().into(),
                    action.into(),
                    keys.into(),
                    pks.into(),
                    scores.into(),
                    levels.into(),
                    rules.into(),
                    times.into(),
                ],
            )?
        };
        inserted.map(|r| Ok((r.get::<i64>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default()))).collect()
    })
}

/// Queues an alert's notification, sent at commit by the database's sender when it can: no
/// NOTIFY lock is taken here, and the transaction may be prepared.
fn notify_alert(watch: &Watch, a: &Alerted, alert_id: i64, action: &str, ts: &str) {
    let notice = AlertNotice {
        alert_id,
        table: &watch.qualified_name,
        key: &a.key,
        row: a.row.pk.as_deref(),
        score: a.assessment.total_score,
        level: a.level,
        action,
        rules: &a.assessment.triggered,
        ts,
    };
    crate::pg::notifier::notify_at_commit(&watch.channel, alert_payload(&notice, crate::engine::payload::MAX_PAYLOAD_BYTES));
}

unsafe extern "C-unwind" {
    /// Postgres's `row_to_json(record)`, as a function pointer for `DirectFunctionCall1Coll`.
    #[link_name = "row_to_json"]
    fn row_to_json_c(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// The row a BEFORE trigger was given, as JSON, for the record of a blocked attempt.
///
/// # Safety
/// `data` must be a row trigger call's data, with its NEW tuple and open relation.
unsafe fn attempted_row(data: &pg_sys::TriggerData) -> Option<serde_json::Value> {
    // SAFETY: the caller's promise: a row trigger's data, its NEW tuple and open relation; row_to_json on a
    // record of that relation's type, and its text printed in the current memory context.
    unsafe {
        let datum = pg_sys::heap_copy_tuple_as_datum(data.tg_trigtuple, (*data.tg_relation).rd_att);
        let json = pg_sys::DirectFunctionCall1Coll(Some(row_to_json_c), pg_sys::InvalidOid, datum);
        let text = pg_sys::text_to_cstring(json.cast_mut_ptr());
        serde_json::from_str(std::ffi::CStr::from_ptr(text).to_str().ok()?).ok()
    }
}

/// What the sender needs to record a blocked attempt, within the slot it waits in: the attempted
/// row is left out (`{"truncated": true}`) when it does not fit, then the rules' evidence.
fn blocked_record(watch: &Watch, row: &Row, a: &Assessment, level: &str, attempted: Option<serde_json::Value>) -> String {
    let at = chrono::DateTime::from_timestamp_micros(crate::pg::time::pg_to_unix_micros(row.at)).map(|t| t.to_rfc3339());
    let mut record = serde_json::json!({
        "relid": watch.root.to_u32(), "table": watch.qualified_name, "channel": watch.channel,
        "key": crate::pg::keys::stored(&row.key), "row_pk": row.pk, "score": a.total_score, "level": level,
        "rules": a.evidence, "fired": a.triggered, "event_time": at, "attempted": attempted,
    });
    let limit = crate::pg::notifier::BLOCKED_BYTES;
    if record.to_string().len() > limit {
        record["attempted"] = serde_json::json!({"truncated": true});
    }
    if record.to_string().len() > limit {
        record["rules"] = serde_json::json!([]);
    }
    record.to_string()
}

/// With a cooldown: one INSERT that opens an alert per key, fired rule set and cooldown window,
/// or counts the rows on the one already open (`repeats`, `last_seen`, `max_score`). Rows of the
/// statement that repeat each other are folded first: ON CONFLICT may touch a row only once.
/// Alerts are written in the order of their unique key (bytewise), not the rows': two statements
/// opening the same alerts then wait for each other in one order instead of deadlocking.
const UPSERT_ALERTS: &str = "INSERT INTO cep.alerts AS x (relid, table_name, key, row_pk, score, level, action, rules, event_time, \
                                   fingerprint, cooldown_from, last_seen, max_score, repeats) \
     SELECT $1, $2, g.key, g.row_pk, g.score, g.level, 'alert', g.rules, g.event_time, g.fp, g.bucket, g.last_seen, g.max_score, g.repeats \
     FROM (SELECT DISTINCT ON (a.key, a.fp, a.bucket) a.*, max(a.event_time) OVER w AS last_seen, \
                  max(a.score) OVER w AS max_score, (count(*) OVER w - 1)::int4 AS repeats \
           FROM unnest($3::text[], $4::text[], $5::float8[], $6::text[], $7::jsonb[], $8::timestamptz[], $9::text[], $10::timestamptz[]) \
                WITH ORDINALITY AS a(key, row_pk, score, level, rules, event_time, fp, bucket, n) \
           WINDOW w AS (PARTITION BY a.key, a.fp, a.bucket) \
           ORDER BY a.key, a.fp, a.bucket, a.n) g \
     ORDER BY g.key COLLATE \"C\", g.fp COLLATE \"C\", g.bucket \
     ON CONFLICT (relid, key, fingerprint, cooldown_from) WHERE cooldown_from IS NOT NULL AND state <> 'resolved' \
     DO UPDATE SET repeats = x.repeats + excluded.repeats + 1, last_seen = greatest(x.last_seen, excluded.last_seen), \
                   max_score = greatest(x.max_score, excluded.max_score) \
     RETURNING alert_id, event_time::text, xmax = 0, key, fingerprint, cooldown_from";

/// The rules that fired, in a stable order: alerts of the same key and rule set repeat each other.
fn fingerprint(a: &Assessment) -> String {
    let mut ids = a.triggered.clone();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn write_repeating_alerts(watch: &Watch, alerted: &[Alerted], cooldown: i64, counts: &mut MonitorCounters) -> CepResult<()> {
    use crate::engine::repeats::Slot;
    use crate::pg::cooldown;
    use pg_sys::{FLOAT8ARRAYOID, JSONBARRAYOID, OIDOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID};
    cooldown::flush_if_due()?;
    let slot = |a: &Alerted, fingerprint: &str, window: i64| Slot {
        relid: watch.root.to_u32(),
        key: a.key.to_string(),
        fingerprint: fingerprint.to_string(),
        window,
    };
    // Repeats of an alert this backend knows to be open are only counted (see `pg::cooldown`).
    // One it does not know (another session opened it) is looked up in the cooldown index, with
    // the table opened at the first such row, and is known from then on. The others go to SQL
    // with their fingerprint and window, worked out once. A row outside the timestamp range has
    // no window: it is inserted as a plain alert.
    let mut unknown: Vec<(&Alerted, String, Option<i64>)> = Vec::with_capacity(alerted.len());
    let mut table: Option<Option<AlertRows>> = None;
    for a in alerted {
        let fp = fingerprint(&a.assessment);
        let window =
            crate::engine::window::tumble(a.row.at, crate::engine::window::Width::Micros(cooldown), crate::engine::window::DEFAULT_ORIGIN_PG);
        let known = window.and_then(|w| {
            cooldown::alert_for(&slot(a, &fp, w)).or_else(|| {
                let rows = table.get_or_insert_with(|| as_extension_owner(AlertRows::open)).as_ref()?;
                let id = rows.open_alert(watch.root, &a.key, &fp, w)?;
                cooldown::found(slot(a, &fp, w), id);
                Some(id)
            })
        });
        match known {
            Some(id) => cooldown::repeat(id, a.row.at, a.assessment.total_score),
            None => unknown.push((a, fp, window)),
        }
    }
    if let Some(Some(rows)) = table {
        rows.close();
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let types = [
        OIDOID,
        TEXTOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        FLOAT8ARRAYOID,
        TEXTARRAYOID,
        JSONBARRAYOID,
        TIMESTAMPTZARRAYOID,
        TEXTARRAYOID,
        TIMESTAMPTZARRAYOID,
    ]
    .map(PgOid::from);
    let upsert = spi::kept(UPSERT_ALERTS, &types)?;
    let ts = |micros: Option<i64>| micros.and_then(|m| pgrx::datum::TimestampWithTimeZone::try_from(m).ok());
    let fingerprints: Vec<&str> = unknown.iter().map(|(_, fp, _)| fp.as_str()).collect();
    let keys: Vec<&str> = unknown.iter().map(|(a, _, _)| a.key.as_ref()).collect();
    let pks: Vec<Option<&str>> = unknown.iter().map(|(a, _, _)| a.row.pk.as_deref()).collect();
    let scores: Vec<f64> = unknown.iter().map(|(a, _, _)| a.assessment.total_score).collect();
    let levels: Vec<&str> = unknown.iter().map(|(a, _, _)| a.level).collect();
    let rules: Vec<pgrx::JsonB> = unknown.iter().map(|(a, _, _)| a.evidence(watch).map(pgrx::JsonB)).collect::<CepResult<_>>()?;
    let times: Vec<Option<pgrx::datum::TimestampWithTimeZone>> = unknown.iter().map(|(a, _, _)| ts(Some(a.row.at))).collect();
    let from: Vec<Option<pgrx::datum::TimestampWithTimeZone>> = unknown.iter().map(|(_, _, w)| ts(*w)).collect();
    as_extension_owner(|| {
        Spi::connect_mut(|client| -> CepResult<()> {
            let written = client.update(
                &*upsert,
                None,
                &[
                    watch.root.into(),
                    watch.qualified_name.as_str().into(),
                    keys.into(),
                    pks.into(),
                    scores.into(),
                    levels.into(),
                    rules.into(),
                    times.into(),
                    fingerprints.into(),
                    from.into(),
                ],
            )?;
            for r in written {
                let alert_id: i64 = r.get(1)?.unwrap_or_default();
                let (key, fp): (String, String) = (r.get(4)?.unwrap_or_default(), r.get(5)?.unwrap_or_default());
                let at: Option<i64> = r.get::<pgrx::datum::TimestampWithTimeZone>(6)?.map(i64::from);
                if let Some(window) = at {
                    cooldown::found(Slot { relid: watch.root.to_u32(), key: key.clone(), fingerprint: fp.clone(), window }, alert_id);
                }
                if r.get::<bool>(3)? != Some(true) {
                    continue;
                }
                let ts: String = r.get(2)?.unwrap_or_default();
                let opened = unknown.iter().find(|(a, f, w)| a.key == key && *f == fp && *w == at);
                let Some((a, _, _)) = opened else { continue };
                notify_alert(watch, a, alert_id, "alert", &ts);
                counts.alerts += 1;
                counts.notifications += 1;
            }
            Ok(())
        })
    })
}
