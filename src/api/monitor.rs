//! The transaction monitor: a statement-level trigger that scores every inserted row.
//!
//! `cep.watch` attaches it as `AFTER INSERT ... REFERENCING NEW TABLE AS cep_new_rows FOR EACH
//! STATEMENT`, so a multi-row INSERT or COPY is one trigger call that reads its rows once. Each
//! row is scored with the key's window as stored, this row and the statement's earlier rows
//! included (`[t - window, t]`). Alerts go to `cep.alerts`; NOTIFY is sent with the alert id, and
//! Postgres delivers it only if the transaction commits.

use pgrx::prelude::*;
use pgrx::{AllocatedByPostgres, PgTrigger, PgTriggerError};
use serde_json::Value;

use crate::engine::evaluate::{assess, evaluate, level_rank, risk_level, Transaction};
use crate::engine::payload::{alert_payload, AlertNotice};
use crate::error::{CepResult, OrReport};
use crate::gucs;
use crate::pg::{cache, history, time};

/// Trigger function behind `cep.watch`; not called directly.
#[pg_trigger]
fn monitor<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let relid = trigger.relid()?;
    let data = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    score_new_rows(relid, data).or_report();
    Ok(None)
}

struct NewRow {
    key: String,
    amount: Option<f64>,
    location: Option<String>,
    at: pg_sys::TimestampTz,
    pk: Option<String>,
}

fn score_new_rows(relid: pg_sys::Oid, data: *mut pg_sys::TriggerData) -> CepResult<()> {
    let rules = cache::active_rules()?;
    if rules.is_empty() {
        return Ok(());
    }
    let watch = cache::watch(relid)?;
    let rows: Vec<NewRow> = Spi::connect(|client| -> CepResult<Vec<NewRow>> {
        // SAFETY: `data` is this trigger call's TriggerData; registering makes cep_new_rows visible.
        unsafe { pg_sys::SPI_register_trigger_data(data) };
        let mut rows = Vec::new();
        for r in client.select(watch.new_rows_sql.as_str(), None, &[])? {
            let Some(key) = r.get::<String>(1)? else { continue };
            let Some(at) = r.get::<pgrx::datum::TimestampWithTimeZone>(4)? else { continue };
            rows.push(NewRow { key, amount: r.get(2)?, location: r.get(3)?, at: at.into(), pk: r.get(5)? });
        }
        Ok(rows)
    })?;
    let (high, medium) = (gucs::high_risk_threshold(), gucs::medium_risk_threshold());
    let min_rank = level_rank(&watch.alert_level).unwrap_or(1);
    for row in rows {
        let stats = history::read_window_stats(&watch, &row.key, row.at, row.location.as_deref())?;
        let tx = Transaction {
            amount: row.amount,
            location: row.location.as_deref(),
            unix_micros: time::pg_to_unix_micros(row.at),
            session_utc_offset_secs: time::session_utc_offset_secs(row.at),
            in_history: true,
        };
        let a = assess(&evaluate(&rules, &watch.plan, &stats, &tx));
        let level = risk_level(a.total_score, high, medium);
        if a.triggered.is_empty() || level_rank(level).unwrap_or(0) < min_rank {
            continue;
        }
        write_alert(&watch, &row, a.total_score, level, &a.triggered, a.evidence)?;
    }
    Ok(())
}

fn write_alert(
    watch: &cache::Watch,
    row: &NewRow,
    score: f64,
    level: &str,
    rules: &[i32],
    evidence: Value,
) -> CepResult<()> {
    let at = pgrx::datum::TimestampWithTimeZone::try_from(row.at).ok();
    Spi::connect_mut(|client| -> CepResult<()> {
        let inserted = client
            .update(
                "INSERT INTO cep.alerts (relid, table_name, key, row_pk, score, level, rules, event_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING alert_id, event_time::text",
                None,
                &[
                    watch.relid.into(),
                    watch.qualified_name.as_str().into(),
                    row.key.as_str().into(),
                    row.pk.as_deref().into(),
                    score.into(),
                    level.into(),
                    pgrx::JsonB(evidence).into(),
                    at.into(),
                ],
            )?
            .first();
        let alert_id: i64 = inserted.get(1)?.unwrap_or_default();
        let ts: String = inserted.get(2)?.unwrap_or_default();
        let payload = alert_payload(&AlertNotice {
            alert_id,
            table: &watch.qualified_name,
            key: &row.key,
            row: row.pk.as_deref(),
            score,
            level,
            rules,
            ts: &ts,
        });
        client.select("SELECT pg_notify($1, $2)", None, &[watch.channel.as_str().into(), payload.as_str().into()])?;
        Ok(())
    })
}
