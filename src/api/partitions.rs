//! `cep.create_monthly_partition`, `cep.manage_partitions`, `cep.unmanage_partitions` and
//! `cep.run_maintenance`: monthly partitions kept ready, drained and retired.

use pgrx::prelude::*;

use crate::engine::partition::Month;
use crate::error::{required, CepError, CepResult, OrReport};
use crate::pg::partitions::{self, Step};
use crate::pg::table_arg::TableArg;

/// pgrx reads each function's return type from its signature, so it is spelled out there.
fn steps(
    steps: Vec<Step>,
) -> TableIterator<
    'static,
    (name!(parent, String), name!(action, String), name!(partition, Option<String>), name!(rows_moved, i64), name!(detail, Option<String>)),
> {
    TableIterator::new(steps.into_iter().map(|s| (s.parent, s.action.to_string(), s.partition, s.rows_moved, s.detail)))
}

/// Creates the month's partition `<parent>_YYYY_MM` (bounds: the first of the month to the
/// first of the next; midnight UTC for timestamptz) and returns it. Idempotent: an existing
/// partition for that month is returned as it is. Rows already in the DEFAULT partition for
/// that month are moved into the new one.
///
/// ```sql
/// SELECT cep.create_monthly_partition('transactions', date '2026-12-01');
/// ```
#[pg_extern(volatile, strict)]
fn create_monthly_partition(parent: TableArg, month: pgrx::datum::Date) -> RegClass {
    let parent = parent.open("parent").or_report();
    let relid = parent.oid();
    crate::pg::privileges::require_owner(relid, "cep.create_monthly_partition").or_report();
    // Closed first: ATTACH PARTITION refuses a table this session has open.
    drop(parent);
    let oid = Spi::connect_mut(|client| -> CepResult<pg_sys::Oid> {
        let m: i32 = client
            .select("SELECT extract(year FROM $1::date)::int * 12 + extract(month FROM $1::date)::int - 1", None, &[month.into()])?
            .first()
            .get_one()?
            .unwrap_or(0);
        partitions::create_monthly(client, relid, Month(m))
    })
    .or_report();
    RegClass(oid)
}

/// A relation returned to SQL as `regclass`, so that it prints as its name.
pub struct RegClass(pub pg_sys::Oid);

// SAFETY: the oid is returned by value, as a `regclass` result is (the SQL type declared below).
unsafe impl pgrx::callconv::BoxRet for RegClass {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: this call's own fcinfo, given by pgrx; an oid datum points at no memory.
        unsafe { fcinfo.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}

// SAFETY: `regclass` is an oid passed by value, which is what `box_into` above returns.
unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for RegClass {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RegClass);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin = pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef, pgrx::pgrx_sql_entity_graph::metadata::ArgumentError> =
        Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef, pgrx::pgrx_sql_entity_graph::metadata::ReturnsError> =
        Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("regclass")));
}

/// Registers a table partitioned by range on a timestamptz, timestamp or date column, and
/// brings it to the desired state at once: the current month plus `premake` future months, a
/// DEFAULT partition (with `default_partition`), and months older than `retention` detached or
/// dropped (`retention_mode`). Calling it again updates the settings.
///
/// A retention shorter than the widest window of an active rule on the (watched) table is
/// refused unless `force`; even then, maintenance keeps the months those rules still read.
///
/// ```sql
/// SELECT * FROM cep.manage_partitions('transactions', premake => 3, retention => '12 months');
/// ```
#[pg_extern(volatile)]
fn manage_partitions(
    parent: Option<TableArg>,
    premake: default!(Option<i32>, 3),
    retention: default!(Option<pgrx::datum::Interval>, "NULL"),
    retention_mode: default!(Option<&str>, "'detach'"),
    default_partition: default!(Option<bool>, true),
    force: default!(Option<bool>, false),
    batch_size: default!(Option<i32>, 10000),
) -> TableIterator<
    'static,
    (name!(parent, String), name!(action, String), name!(partition, Option<String>), name!(rows_moved, i64), name!(detail, Option<String>)),
> {
    let parent = required("parent", parent).open("parent").or_report();
    let premake = required("premake", premake);
    let retention_mode = required("retention_mode", retention_mode);
    let default_partition = required("default_partition", default_partition);
    let force = required("force", force);
    let batch_size = required("batch_size", batch_size);
    let relid = parent.oid();
    crate::pg::privileges::require_owner(relid, "cep.manage_partitions").or_report();
    drop(parent);
    let done = Spi::connect_mut(|client| -> CepResult<Vec<Step>> {
        partitions::register(client, relid, premake, retention, retention_mode, default_partition, force, batch_size)?;
        partitions::maintain(client, relid)
    })
    .or_report();
    steps(done)
}

/// Changes some partition settings of a managed table and keeps the others (`cep.manage_partitions`
/// replaces them all); a NULL argument keeps its setting, and `retention => '0'` keeps every
/// month. Applies them at once, as `cep.manage_partitions` does, and returns the settings in effect.
///
/// ```sql
/// SELECT cep.alter_partitions('transactions', retention => '24 months');
/// ```
#[pg_extern(volatile)]
fn alter_partitions(
    parent: Option<TableArg>,
    premake: default!(Option<i32>, "NULL"),
    retention: default!(Option<pgrx::datum::Interval>, "NULL"),
    retention_mode: default!(Option<&str>, "NULL"),
    default_partition: default!(Option<bool>, "NULL"),
    force: default!(Option<bool>, "NULL"),
    batch_size: default!(Option<i32>, "NULL"),
) -> pgrx::JsonB {
    let parent = required("parent", parent).open("parent").or_report();
    let (relid, name) = (parent.oid(), parent.name().to_string());
    crate::pg::privileges::require_owner(relid, "cep.alter_partitions").or_report();
    drop(parent);
    Spi::connect_mut(|client| -> CepResult<pgrx::JsonB> {
        let settings = |client: &pgrx::spi::SpiClient<'_>| -> CepResult<Option<serde_json::Value>> {
            let rows = crate::pg::privileges::as_extension_owner(|| {
                client.select(
                    "SELECT to_jsonb(c) - 'parent' - 'last_run' - 'created_at' FROM cep.partition_config c WHERE parent = $1",
                    None,
                    &[relid.into()],
                )
            })?;
            Ok(if rows.is_empty() { None } else { rows.first().get_one::<pgrx::JsonB>()?.map(|j| j.0) })
        };
        let current =
            settings(client)?.ok_or_else(|| CepError::NotWatched(format!("{name} is not managed: call cep.manage_partitions on it first")))?;
        let rows = crate::pg::privileges::as_extension_owner(|| {
            client.select("SELECT retention FROM cep.partition_config WHERE parent = $1", None, &[relid.into()])
        })?;
        let kept_retention: Option<pgrx::datum::Interval> = rows.first().get_one()?;
        let zero = |i: &pgrx::datum::Interval| i.months() == 0 && i.days() == 0 && i.micros() == 0;
        let retention = match retention {
            Some(r) if zero(&r) => None,
            Some(r) => Some(r),
            None => kept_retention,
        };
        let text = |k: &str| current.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mode = text("retention_mode").unwrap_or_else(|| "detach".into());
        partitions::register(
            client,
            relid,
            premake.or(current["premake"].as_i64().map(|v| v as i32)).unwrap_or(3),
            retention,
            retention_mode.unwrap_or(&mode),
            default_partition.or(current["default_partition"].as_bool()).unwrap_or(true),
            force.or(current["force_retention"].as_bool()).unwrap_or(false),
            batch_size.or(current["batch_size"].as_i64().map(|v| v as i32)).unwrap_or(10_000),
        )?;
        partitions::maintain(client, relid)?;
        Ok(pgrx::JsonB(settings(client)?.unwrap_or_default()))
    })
    .or_report()
}

/// Stops managing a table's partitions; its partitions stay as they are. Returns false when
/// it was not registered.
///
/// ```sql
/// SELECT cep.unmanage_partitions('transactions');
/// ```
#[pg_extern(volatile, strict)]
fn unmanage_partitions(parent: TableArg) -> bool {
    let parent = parent.open("parent").or_report();
    let relid = parent.oid();
    crate::pg::privileges::require_owner(relid, "cep.unmanage_partitions").or_report();
    Spi::connect_mut(|client| -> CepResult<bool> {
        let deleted =
            crate::pg::privileges::as_extension_owner(|| client.update("DELETE FROM cep.partition_config WHERE parent = $1", None, &[relid.into()]))?;
        Ok(!deleted.is_empty())
    })
    .or_report()
}

/// Brings one registered table, or every registered table, to its desired state: creates
/// missing months, drains the DEFAULT partition into them, applies retention. Steps that a
/// busy lock prevented are reported as `skipped` and retried by the next run. Every change is
/// logged in `cep.partition_log` and notified on channel `cep_maintenance`.
///
/// ```sql
/// SELECT * FROM cep.run_maintenance();
/// ```
#[pg_extern(volatile)]
fn run_maintenance(
    parent: default!(Option<TableArg>, "NULL"),
) -> TableIterator<
    'static,
    (name!(parent, String), name!(action, String), name!(partition, Option<String>), name!(rows_moved, i64), name!(detail, Option<String>)),
> {
    let only = parent.map(|p| p.open("parent").or_report().oid());
    if let Some(relid) = only {
        crate::pg::privileges::require_owner(relid, "cep.run_maintenance").or_report();
    }
    let done = Spi::connect_mut(|client| -> CepResult<Vec<Step>> {
        let tables = match only {
            Some(relid) => vec![relid],
            // Everyone's tables for a superuser; otherwise the caller's own.
            None => partitions::registered(client)?
                .into_iter()
                .filter(|relid| crate::pg::privileges::require_owner(*relid, "cep.run_maintenance").is_ok())
                .collect(),
        };
        let mut all = Vec::new();
        for relid in tables {
            all.extend(partitions::maintain(client, relid)?);
        }
        Ok(all)
    })
    .or_report();
    steps(done)
}
