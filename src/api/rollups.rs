//! The shared rollups from SQL: what `cep.realtime_stats`, `cep.streaming_performance` and
//! `cep.rollup_rebuild` (SQL functions, in `finalize.sql`) call. Each read returns no row when
//! memory is not exact for the window, and the SQL around it then reads the table's rows.

use std::collections::BTreeMap;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::engine::rollup::{Agg, Rollup};
use crate::engine::rollup_store::{Owner, Window};
use crate::error::{CepError, OrReport};
use crate::pg::rollups;

type WindowRow = (TimestampWithTimeZone, i64, f64, Option<f64>, Option<f64>, Option<f64>, i64, JsonB, String);

/// `cep.realtime_stats` from memory: the window from `since` (a whole minute) on, or no row.
#[pg_extern(stable, strict)]
fn rollup_window(
    relation: pg_sys::Oid,
    since: TimestampWithTimeZone,
    top: i32,
) -> TableIterator<
    'static,
    (
        name!(window_start, TimestampWithTimeZone),
        name!(total_transactions, i64),
        name!(total_volume, f64),
        name!(avg_transaction, Option<f64>),
        name!(min_amount, Option<f64>),
        name!(max_amount, Option<f64>),
        name!(active_users, i64),
        name!(top_users, JsonB),
        name!(source, String),
    ),
> {
    TableIterator::new(window_row(relation, since, top.max(0) as usize))
}

/// Whose rollups memory holds for a watched table; `None` while the watch is unusable, since it
/// adds no rows then and what memory holds is out of date.
fn usable_owner(relation: pg_sys::Oid) -> Option<Owner> {
    let watch = crate::pg::watched::cached(relation).or_report();
    watch.row_columns.as_ref().map(|_| rollups::owner(&watch))
}

fn window_row(relation: pg_sys::Oid, since: TimestampWithTimeZone, top: usize) -> Option<WindowRow> {
    let Window { totals, active, top } = rollups::window(usable_owner(relation)?, since.into(), top)?;
    let top_users: Vec<serde_json::Value> = top
        .into_iter()
        .map(|(key, k)| serde_json::json!({"key": key, "transactions": k.count, "total": k.sum, "avg": k.sum / k.count as f64}))
        .collect();
    Some((
        since,
        totals.count,
        totals.sum,
        (totals.count > 0).then(|| totals.sum / totals.count as f64),
        totals.min,
        totals.max,
        active as i64,
        JsonB(serde_json::Value::Array(top_users)),
        "memory".to_string(),
    ))
}

/// The table's rows from `since` on and their mean age in seconds (from the middle of each
/// minute), from memory, or no row.
#[pg_extern(stable, strict)]
fn rollup_totals(
    relation: pg_sys::Oid,
    since: TimestampWithTimeZone,
) -> TableIterator<'static, (name!(row_count, i64), name!(avg_delay_s, Option<f64>))> {
    let totals = usable_owner(relation).and_then(|owner| rollups::totals(owner, since.into()));
    TableIterator::new(totals.map(|t| (t.count, (t.count > 0).then(|| t.age_sum / t.count as f64 / 1e6))))
}

/// `cep.rollup_rebuild`'s load: per-minute totals read from the table's rows from `totals_since`
/// on, and per-minute, per-key figures from `keys_since` on, put in memory when this transaction
/// commits.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile)]
fn rollup_load(
    relation: pg_sys::Oid,
    totals_since: TimestampWithTimeZone,
    keys_since: TimestampWithTimeZone,
    minutes: Vec<TimestampWithTimeZone>,
    counts: Vec<i64>,
    sums: Vec<f64>,
    mins: Vec<Option<f64>>,
    maxs: Vec<Option<f64>>,
    key_minutes: Vec<TimestampWithTimeZone>,
    keys: Vec<String>,
    key_counts: Vec<i64>,
    key_sums: Vec<f64>,
) {
    let lengths = [minutes.len(), counts.len(), sums.len(), mins.len(), maxs.len()];
    let key_lengths = [key_minutes.len(), keys.len(), key_counts.len(), key_sums.len()];
    if lengths.iter().any(|&n| n != lengths[0]) || key_lengths.iter().any(|&n| n != key_lengths[0]) {
        CepError::InvalidArgument("cep.rollup_load: the per-minute arrays, and the per-key arrays, must have the same lengths".into()).report();
    }
    let watch = crate::pg::watched::cached(relation).or_report();
    let mut rollup = Rollup { minutes: BTreeMap::new(), keys: BTreeMap::new() };
    for (i, m) in minutes.iter().enumerate() {
        let agg = Agg { count: counts[i], sum: sums[i], min: mins[i], max: maxs[i] };
        rollup.minutes.insert((*m).into(), agg);
    }
    for (i, m) in key_minutes.iter().enumerate() {
        let agg = Agg { count: key_counts[i], sum: key_sums[i], min: None, max: None };
        rollup.keys.insert(((*m).into(), keys[i].clone()), agg);
    }
    rollups::load(&watch, totals_since.into(), keys_since.into(), rollup);
}

/// The shared rollups: whether they are on (pg_cep in `shared_preload_libraries` and
/// `cep.rollup_records` above 0), the tables and per-key records they hold, their capacity, and
/// how many key minutes were dropped to make room.
///
/// ```sql
/// SELECT * FROM cep.rollup_memory();
/// ```
#[pg_extern(volatile)]
fn rollup_memory(
) -> TableIterator<'static, (name!(enabled, bool), name!(tables, i64), name!(records, i64), name!(capacity, i64), name!(dropped_minutes, i64))> {
    let row = match rollups::usage() {
        Some((tables, records, capacity, dropped)) => (true, tables as i64, records as i64, capacity as i64, dropped as i64),
        None => (false, 0, 0, 0, 0),
    };
    TableIterator::once(row)
}
