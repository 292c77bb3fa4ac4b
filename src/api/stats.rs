//! `cep.stats()` and `cep.stats_reset()`: what the monitor did, per watched table.

use pgrx::prelude::*;

use crate::pg::stats;
use crate::pg::table_arg::TableArg;

/// Per watched table: rows seen, alerts written, notifications sent, rows blocked, rule errors
/// (rules skipped at run time), and total and longest time spent in the monitor; per table with
/// live patterns, partial matches dropped by `max_partials`. `shared` is true when the figures
/// cover every session (pg_cep in `shared_preload_libraries`), false when they cover this session
/// only.
///
/// ```sql
/// SELECT * FROM cep.stats();
/// ```
#[pg_extern(volatile)]
fn stats() -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(rows_seen, i64),
        name!(alerts, i64),
        name!(notifications, i64),
        name!(rows_blocked, i64),
        name!(rule_errors, i64),
        name!(total_ms, f64),
        name!(max_ms, f64),
        name!(shared, bool),
        name!(partials_dropped, i64),
    ),
> {
    let shared = stats::is_shared();
    let mut rows = Vec::new();
    for (relid, c) in stats::snapshot() {
        let name = crate::pg::table_arg::relation_name(relid).unwrap_or_else(|_| relid.to_u32().to_string());
        rows.push((
            name,
            c.rows_seen as i64,
            c.alerts as i64,
            c.notifications as i64,
            c.rows_blocked as i64,
            c.rule_errors as i64,
            c.total_micros as f64 / 1000.0,
            c.max_micros as f64 / 1000.0,
            shared,
            c.partials_dropped as i64,
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    TableIterator::new(rows)
}

/// Zeroes this database's monitor counters.
#[pg_extern(volatile)]
fn stats_reset() {
    stats::reset();
}

/// The monitor's shared window cache: whether it is on (it needs `shared_preload_libraries`), how
/// many keys and events it holds, and how often scoring found a key's window there.
///
/// ```sql
/// SELECT * FROM cep.window_cache();
/// ```
#[pg_extern(volatile)]
fn window_cache() -> TableIterator<
    'static,
    (name!(enabled, bool), name!(keys, i64), name!(events, i64), name!(hits, i64), name!(misses, i64), name!(refused_loads, i64)),
> {
    let row = match crate::pg::window_cache::usage() {
        Some((k, e, h, m, r)) => (true, k as i64, e as i64, h as i64, m as i64, r as i64),
        None => (false, 0, 0, 0, 0, 0),
    };
    TableIterator::once(row)
}

/// The queue of this database's notifications that its sender sends after commit: whether the
/// queue exists (it needs `shared_preload_libraries`), whether a sender serves it, how many
/// notifications of committed transactions wait to be sent, and how many belong to prepared
/// transactions not yet decided (they go at `COMMIT PREPARED`, and hold no other back).
///
/// ```sql
/// SELECT * FROM cep.notification_queue();
/// ```
#[pg_extern(volatile)]
fn notification_queue() -> TableIterator<'static, (name!(enabled, bool), name!(sender_running, bool), name!(queued, i64), name!(prepared, i64))> {
    let row = match crate::pg::notifier::queue_status() {
        Some((s, prepared)) => (true, s.sender_running, s.queued as i64, prepared as i64),
        None => (false, false, 0, 0),
    };
    TableIterator::once(row)
}

/// Loads every key of a watched table into the shared window cache, with the rows of its longest
/// rule window, in one scan; returns how many keys were cached. After a restart the cache fills
/// key by key as rows arrive; this does it at once. Without the cache it returns 0.
///
/// ```sql
/// SELECT cep.window_cache_warm('transactions');
/// ```
#[pg_extern(volatile, strict)]
fn window_cache_warm(table: TableArg) -> i64 {
    let table = table.open("table").or_report();
    use crate::error::OrReport;
    let relid = table.oid();
    drop(table);
    let watch = crate::pg::watched::cached(relid).or_report();
    crate::pg::window_cache::warm(&watch).or_report()
}
