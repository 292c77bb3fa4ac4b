//! Partition maintenance against the catalog: reading a parent's layout, creating a month (and
//! draining the DEFAULT partition into it), retiring a month, logging and notifying. One piece
//! serves `cep.create_monthly_partition`, `cep.manage_partitions`, `cep.run_maintenance` and the
//! background worker.
//!
//! Locks are taken with `ConditionalLockRelationOid`, retried until `cep.maintenance_lock_timeout`:
//! maintenance never waits in a lock queue, so inserts never queue behind its ACCESS EXCLUSIVE
//! request, and it cannot be part of a deadlock.

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::engine::partition::{self, Action, Existing, Month, Policy};
use crate::error::{CepError, CepResult};
use crate::gucs;
use crate::pg::privileges::{as_extension_owner, as_owner};

/// `pg_try_advisory_xact_lock(bigint)` key space: "cep\0" in the high half, the parent's oid below.
const ADVISORY_CLASS: i64 = 0x6365_7000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ControlType {
    TimestampTz,
    Timestamp,
    Date,
}

impl ControlType {
    fn from_format_type(name: &str) -> Option<Self> {
        match name {
            "timestamp with time zone" => Some(Self::TimestampTz),
            "timestamp without time zone" => Some(Self::Timestamp),
            "date" => Some(Self::Date),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TimestampTz => "timestamptz",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
        }
    }

    /// A month's first instant as a bound literal. For timestamptz it is midnight UTC, so that
    /// sessions in different time zones agree on where a month starts.
    fn bound(self, month: Month) -> String {
        match self {
            Self::TimestampTz => format!("{} 00:00:00+00", month.first_day()),
            Self::Timestamp => format!("{} 00:00:00", month.first_day()),
            Self::Date => month.first_day(),
        }
    }

    /// SQL for the month number (`year * 12 + month - 1`) of `expr`, an expression of this type.
    fn month_of(self, expr: &str) -> String {
        let local = match self {
            Self::TimestampTz => format!("(({expr})::timestamptz AT TIME ZONE 'UTC')"),
            Self::Timestamp => format!("({expr})::timestamp"),
            Self::Date => format!("({expr})::date::timestamp"),
        };
        format!("(extract(year FROM {local})::int * 12 + extract(month FROM {local})::int - 1)")
    }
}

/// A partitioned table as maintenance sees it. Names are already quoted by Postgres.
pub struct Parent {
    pub relid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    /// `parent::regclass::text`, quoted and schema-qualified where needed.
    pub qualified: String,
    pub column: String,
    pub quoted_column: String,
    pub control: ControlType,
    pub default: Option<pg_sys::Oid>,
    pub owner: String,
    /// Maintenance runs the table's DDL and row moves as this role (see `privileges::as_owner`).
    pub owner_oid: pg_sys::Oid,
    /// The columns an INSERT can write, quoted, in order.
    pub insert_columns: String,
}

/// Reads a table's partitioning, refusing what pg_cep cannot manage.
pub fn describe(client: &SpiClient<'_>, relid: pg_sys::Oid) -> CepResult<Parent> {
    let row = client.select(
        "SELECT n.nspname::text, c.relname::text, format('%I.%I', n.nspname, c.relname), p.partstrat::text, p.partnatts::int,
                a.attname::text, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), p.partdefid,
                pg_get_userbyid(c.relowner)::text,
                (SELECT string_agg(quote_ident(x.attname), ', ' ORDER BY x.attnum) FROM pg_attribute x
                  WHERE x.attrelid = c.oid AND x.attnum > 0 AND NOT x.attisdropped AND x.attgenerated = ''),
                c.relowner
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_partitioned_table p ON p.partrelid = c.oid
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
         WHERE c.oid = $1",
        None,
        &[relid.into()],
    )?;
    let row = row.first();
    let qualified: String = row.get(3)?.unwrap_or_default();
    let Some(strategy) = row.get::<String>(4)? else {
        return Err(CepError::WrongObjectType(format!(
            "{qualified} is not a partitioned table; create it with PARTITION BY RANGE (a timestamptz, timestamp or date column)"
        )));
    };
    let natts: i32 = row.get(5)?.unwrap_or(0);
    let column: Option<String> = row.get(6)?;
    let type_name: String = row.get(8)?.unwrap_or_default();
    let control = ControlType::from_format_type(&type_name);
    let (Some(column), Some(control), "r", 1) = (column, control, strategy.as_str(), natts) else {
        let how = match strategy.as_str() {
            "l" => "by list".to_string(),
            "h" => "by hash".to_string(),
            _ if natts != 1 => format!("by range on {natts} columns"),
            _ if row.get::<String>(6)?.is_none() => "by range on an expression".to_string(),
            _ => format!("by range on a column of type {type_name}"),
        };
        return Err(CepError::InvalidTableDefinition(format!(
            "{qualified} is partitioned {how}; pg_cep manages tables partitioned by range on one timestamptz, timestamp or date column"
        )));
    };
    let default: Option<pg_sys::Oid> = row.get(9)?;
    Ok(Parent {
        relid,
        schema: row.get(1)?.unwrap_or_default(),
        name: row.get(2)?.unwrap_or_default(),
        qualified,
        column,
        quoted_column: row.get(7)?.unwrap_or_default(),
        control,
        default: default.filter(|oid| *oid != pg_sys::InvalidOid),
        owner: row.get(10)?.unwrap_or_default(),
        insert_columns: row.get(11)?.unwrap_or_default(),
        owner_oid: row.get(12)?.unwrap_or(pg_sys::InvalidOid),
    })
}

/// The parent's partitions other than DEFAULT, their bounds rounded out to months.
pub fn existing(client: &SpiClient<'_>, parent: &Parent) -> CepResult<Vec<Existing>> {
    let lo = parent.control.month_of("m[1]");
    let hi = parent.control.month_of("m[2]");
    let (lo_exact, hi_exact) = match parent.control {
        ControlType::Date => ("extract(day FROM m[1]::date) = 1", "extract(day FROM m[2]::date) = 1"),
        ControlType::Timestamp => {
            ("m[1]::timestamp = date_trunc('month', m[1]::timestamp)", "m[2]::timestamp = date_trunc('month', m[2]::timestamp)")
        }
        ControlType::TimestampTz => {
            ("m[1]::timestamptz = date_trunc('month', m[1]::timestamptz, 'UTC')", "m[2]::timestamptz = date_trunc('month', m[2]::timestamptz, 'UTC')")
        }
    };
    let sql = format!(
        r#"WITH r AS (
               SELECT c.relname::text AS name,
                      regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                   $re$FROM \((?:'([^']*)'|MINVALUE)\) TO \((?:'([^']*)'|MAXVALUE)\)$re$) AS m
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = $1 AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT')
           SELECT name, {lo}, {hi} + CASE WHEN {hi_exact} THEN 0 ELSE 1 END,
                  coalesce({lo_exact} AND {hi_exact} AND {hi} = {lo} + 1, false)
           FROM r"#
    );
    let mut out = Vec::new();
    for row in client.select(&sql, None, &[parent.relid.into()])? {
        let from: Option<i32> = row.get(2)?;
        let exact: bool = row.get(4)?.unwrap_or(false);
        out.push(Existing {
            name: row.get::<String>(1)?.unwrap_or_default(),
            from: from.map(Month),
            to: row.get::<i32>(3)?.map(Month),
            exact_month: if exact { from.map(Month) } else { None },
        });
    }
    Ok(out)
}

/// The months the DEFAULT partition holds rows for.
fn default_months(client: &SpiClient<'_>, parent: &Parent) -> CepResult<Vec<Month>> {
    let Some(default) = parent.default else { return Ok(Vec::new()) };
    let default_name = regclass_text(client, default)?;
    let sql =
        format!("SELECT DISTINCT {} FROM {default_name} WHERE {} IS NOT NULL", parent.control.month_of(&parent.quoted_column), parent.quoted_column);
    let mut months = Vec::new();
    for row in client.select(&sql, None, &[])? {
        if let Some(m) = row.get::<i32>(1)? {
            months.push(Month(m));
        }
    }
    months.sort();
    Ok(months)
}

fn regclass_text(client: &SpiClient<'_>, relid: pg_sys::Oid) -> CepResult<String> {
    // Always schema-qualified, whatever the session's search_path (the worker's differs).
    Ok(client
        .select(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            None,
            &[relid.into()],
        )?
        .first()
        .get_one::<String>()?
        .unwrap_or_default())
}

/// The month holding now, and the months holding `now - retention` and `now - widest window`.
fn months_now(
    client: &SpiClient<'_>,
    control: ControlType,
    retention: Option<pgrx::datum::Interval>,
    widest_micros: Option<i64>,
) -> CepResult<(Month, Option<Month>, Option<Month>)> {
    let sql = format!(
        "SELECT {}, {}, {}",
        control.month_of("now()"),
        control.month_of("now() - $1::interval"),
        control.month_of("now() - make_interval(secs => $2::float8 / 1e6)")
    );
    let row = client.select(&sql, None, &[retention.into(), widest_micros.map(|w| w as f64).into()])?;
    let row = row.first();
    Ok((Month(row.get::<i32>(1)?.unwrap_or(0)), row.get::<i32>(2)?.map(Month), row.get::<i32>(3)?.map(Month)))
}

/// Waits for locks without joining any queue: tries them all, and when one is busy releases
/// the ones just taken (so nobody waits behind a lock held while retrying), sleeps 10 ms, and
/// tries again until `cep.maintenance_lock_timeout`.
fn try_locks(locks: &[(pg_sys::Oid, u32)]) -> bool {
    let deadline = Instant::now() + Duration::from_millis(gucs::maintenance_lock_timeout().max(0) as u64);
    loop {
        let mut taken = 0;
        for (relid, mode) in locks {
            // SAFETY: inside a transaction: a lock that is never waited for, held until released below or the transaction ends.
            if !unsafe { pg_sys::ConditionalLockRelationOid(*relid, *mode as pg_sys::LOCKMODE) } {
                break;
            }
            taken += 1;
        }
        if taken == locks.len() {
            return true;
        }
        for (relid, mode) in locks[..taken].iter().rev() {
            // SAFETY: releases a lock taken just above, in the same mode.
            unsafe { pg_sys::UnlockRelationOid(*relid, *mode as pg_sys::LOCKMODE) };
        }
        if Instant::now() >= deadline {
            return false;
        }
        // SAFETY: a plain sleep.
        unsafe { pg_sys::pg_usleep(10_000) };
        check_for_interrupts!();
    }
}

/// Runs `body` in a subtransaction that is rolled back when it returns `None` or an error, so a
/// step that cannot finish (a lock stayed busy) leaves nothing half done. A Postgres ERROR raised
/// inside (a failed DDL, a permission check) rolls the subtransaction back too before it goes on
/// up: left open, it would keep the session in a failed transaction block even in autocommit.
fn in_subtransaction<T>(body: impl FnOnce() -> CepResult<Option<T>>) -> CepResult<Option<T>> {
    // SAFETY: reads of the backend's current memory context and resource owner, restored below
    // exactly as PL/pgSQL restores them around BeginInternalSubTransaction.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext as usize, pg_sys::CurrentResourceOwner as usize) };
    // SAFETY: restores the context and owner read above, which outlive the subtransaction (as PL/pgSQL does).
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context as pg_sys::MemoryContext);
        pg_sys::CurrentResourceOwner = owner as pg_sys::ResourceOwner;
    };
    // SAFETY: starts a subtransaction that every path below ends.
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let result = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(body))
        .catch_others(move |error| {
            // SAFETY: the subtransaction begun above is still the current one (pgrx has already
            // flushed the error state), so it is the one rolled back.
            unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
            restore();
            error.rethrow()
        })
        .execute();
    // SAFETY: as above; the body returned normally, so its subtransaction is current.
    unsafe {
        if matches!(result, Ok(Some(_))) {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
    }
    restore();
    result
}

/// One thing maintenance did, or decided not to do.
#[derive(Debug, Clone)]
pub struct Step {
    pub parent: String,
    pub action: &'static str,
    pub partition: Option<String>,
    pub rows_moved: i64,
    pub detail: Option<String>,
}

/// Writes a step to `cep.partition_log` and notifies `cep_maintenance` (ids and names only, far
/// under NOTIFY's 8000 bytes).
fn record(client: &mut SpiClient<'_>, step: &Step, started: Instant) -> CepResult<()> {
    // pg_cep's own log: written as the extension, whoever maintains the table.
    as_extension_owner(|| {
        client.update(
            "WITH l AS (
             INSERT INTO cep.partition_log (parent, action, partition, rows_moved, detail, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *)
         SELECT pg_notify('cep_maintenance', json_build_object('id', id, 'parent', parent, 'action', action,
                'partition', partition, 'rows_moved', rows_moved, 'detail', left(detail, 1000))::text)
         FROM l",
            None,
            &[
                step.parent.as_str().into(),
                step.action.into(),
                step.partition.as_deref().into(),
                step.rows_moved.into(),
                step.detail.as_deref().into(),
                (started.elapsed().as_secs_f64() * 1000.0).into(),
            ],
        )
    })?;
    Ok(())
}

/// The schema-qualified, quoted name of a new relation in the parent's schema.
fn qualify(client: &SpiClient<'_>, schema: &str, name: &str) -> CepResult<String> {
    Ok(client
        .select("SELECT format('%I.%I', $1::text, $2::text)", None, &[schema.into(), name.into()])?
        .first()
        .get_one::<String>()?
        .unwrap_or_default())
}

/// Moves the DEFAULT partition's rows of `[lo, hi)` into `target`, `batch` rows per statement,
/// so no statement holds more than a batch in memory. Returns the rows moved.
fn move_rows(client: &mut SpiClient<'_>, parent: &Parent, default_name: &str, target: &str, lo: &str, hi: &str, batch: i32) -> CepResult<i64> {
    let ty = parent.control.name();
    let col = &parent.quoted_column;
    let cols = &parent.insert_columns;
    let sql = format!(
        "WITH moved AS (
             DELETE FROM {default_name} WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM {default_name} WHERE {col} >= $1::{ty} AND {col} < $2::{ty} LIMIT $3))
             RETURNING {cols})
         INSERT INTO {target} ({cols}) SELECT {cols} FROM moved"
    );
    let mut total = 0i64;
    loop {
        let moved = client.update(&sql, None, &[lo.into(), hi.into(), batch.into()])?.len() as i64;
        total += moved;
        if moved < batch as i64 {
            return Ok(total);
        }
    }
}

/// Creates the month's partition: a plain table shaped like the parent, filled with the
/// DEFAULT partition's rows for that month in batches while inserts go on, then attached under
/// a short exclusive lock on DEFAULT only. Returns the rows moved, or `None` when a lock stayed
/// busy (and then nothing was changed).
fn create_month(client: &mut SpiClient<'_>, parent: &Parent, month: Month, batch: i32) -> CepResult<Option<i64>> {
    let name = partition::partition_name(&parent.name, month)?;
    let target = qualify(client, &parent.schema, &name)?;
    let taken = client.select("SELECT to_regclass($1) IS NOT NULL", None, &[target.as_str().into()])?.first().get_one::<bool>()?.unwrap_or(false);
    if taken {
        return Err(CepError::DuplicateTable(format!(
            "cannot create the {month} partition of {}: relation {target} already exists and is not that month's partition",
            parent.qualified
        )));
    }
    let (lo, hi) = (parent.control.bound(month), parent.control.bound(month.next()));
    in_subtransaction(|| {
        if !try_locks(&[(parent.relid, pg_sys::ShareUpdateExclusiveLock)]) {
            return Ok(None);
        }
        client.update(
            &format!(
                "CREATE TABLE {target} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)",
                parent.qualified
            ),
            None,
            &[],
        )?;
        let owner_ddl: Option<String> = client
            .select(
                "SELECT CASE WHEN $2::text <> current_user THEN format('ALTER TABLE %s OWNER TO %I', $1, $2::text) END",
                None,
                &[target.as_str().into(), parent.owner.as_str().into()],
            )?
            .first()
            .get_one()?;
        if let Some(ddl) = owner_ddl {
            client.update(&ddl, None, &[])?;
        }
        let mut moved = 0;
        if let Some(default) = parent.default {
            let default_name = regclass_text(client, default)?;
            // Most rows move while inserts continue; the exclusive lock only covers the tail.
            moved += move_rows(client, parent, &default_name, &target, &lo, &hi, batch)?;
            // While DEFAULT receives rows for this month, an INSERT already routing with the old
            // partition list would fail DEFAULT's new constraint once the month is attached:
            // SHARE on the parent waits (without queueing) until none is running.
            let attach_locks: &[(pg_sys::Oid, u32)] = if moved > 0 {
                &[(parent.relid, pg_sys::ShareLock), (default, pg_sys::AccessExclusiveLock)]
            } else {
                &[(default, pg_sys::AccessExclusiveLock)]
            };
            if !try_locks(attach_locks) {
                return Ok(None);
            }
            moved += move_rows(client, parent, &default_name, &target, &lo, &hi, batch)?;
        }
        let attach: String = client
            .select(
                "SELECT format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', $1::regclass, $2::text, $3::text, $4::text)",
                None,
                &[parent.relid.into(), target.as_str().into(), lo.as_str().into(), hi.as_str().into()],
            )?
            .first()
            .get_one()?
            .unwrap_or_default();
        client.update(&attach, None, &[])?;
        Ok(Some(moved))
    })
}

/// Detaches a month (and drops it in `drop` mode) under a conditional exclusive lock.
fn retire_month(client: &mut SpiClient<'_>, parent: &Parent, name: &str, drop: bool) -> CepResult<bool> {
    let target = qualify(client, &parent.schema, name)?;
    let Some(relid) = client.select("SELECT to_regclass($1)::oid", None, &[target.as_str().into()])?.first().get_one::<pg_sys::Oid>()? else {
        return Ok(true);
    };
    let done = in_subtransaction(|| {
        if !try_locks(&[(parent.relid, pg_sys::AccessExclusiveLock), (relid, pg_sys::AccessExclusiveLock)]) {
            return Ok(None);
        }
        client.update(&format!("ALTER TABLE {} DETACH PARTITION {target}", parent.qualified), None, &[])?;
        if drop {
            client.update(&format!("DROP TABLE {target}"), None, &[])?;
        }
        Ok(Some(()))
    })?;
    Ok(done.is_some())
}

/// A table's registration in `cep.partition_config`.
pub struct Config {
    pub premake: i32,
    pub retention: Option<pgrx::datum::Interval>,
    pub drop: bool,
    pub default_partition: bool,
    pub batch_size: i32,
}

fn config(client: &SpiClient<'_>, relid: pg_sys::Oid) -> CepResult<Option<Config>> {
    let rows = as_extension_owner(|| {
        client.select(
            "SELECT premake, retention, retention_mode = 'drop', default_partition, batch_size FROM cep.partition_config WHERE parent = $1",
            None,
            &[relid.into()],
        )
    })?;
    if rows.is_empty() {
        return Ok(None);
    }
    let row = rows.first();
    Ok(Some(Config {
        premake: row.get(1)?.unwrap_or(3),
        retention: row.get(2)?,
        drop: row.get(3)?.unwrap_or(false),
        default_partition: row.get(4)?.unwrap_or(true),
        batch_size: row.get(5)?.unwrap_or(10_000),
    }))
}

/// Microseconds of the widest window an active rule reads on this table, if it is watched.
pub fn widest_rule_window(relid: pg_sys::Oid) -> Option<i64> {
    crate::pg::watched::cached(relid).ok().and_then(|w| w.plan.windows.first().copied())
}

/// Takes the table's maintenance lock for this transaction; false when another session has it.
fn try_advisory(client: &SpiClient<'_>, relid: pg_sys::Oid, wait: bool) -> CepResult<bool> {
    let key = (ADVISORY_CLASS << 32) | u32::from(relid) as i64;
    if wait {
        client.select("SELECT pg_advisory_xact_lock($1)", None, &[key.into()])?;
        return Ok(true);
    }
    Ok(client.select("SELECT pg_try_advisory_xact_lock($1)", None, &[key.into()])?.first().get_one::<bool>()?.unwrap_or(false))
}

/// Brings one registered table to its desired state; returns every step, including those only
/// reported (protected months, conflicts), while the log keeps what changed or was skipped.
pub fn maintain(client: &mut SpiClient<'_>, relid: pg_sys::Oid) -> CepResult<Vec<Step>> {
    let started = Instant::now();
    let mut steps = Vec::new();
    let Some(config) = config(client, relid)? else {
        return Err(CepError::NotWatched(format!(
            "{} is not registered for partition management; call cep.manage_partitions first",
            regclass_text(client, relid)?
        )));
    };
    let mut parent = describe(client, relid)?;
    let qualified = parent.qualified.clone();
    let step = |action, partition: Option<String>, rows_moved, detail: Option<String>| Step {
        parent: qualified.clone(),
        action,
        partition,
        rows_moved,
        detail,
    };
    if !try_advisory(client, relid, false)? {
        let s = step("skipped", None, 0, Some("maintenance of this table is running in another session".into()));
        record(client, &s, started)?;
        return Ok(vec![s]);
    }
    if config.default_partition && parent.default.is_none() {
        let started = Instant::now();
        let (name, created) = create_default(client, &parent)?;
        let s = if created {
            step("create_default", Some(name), 0, None)
        } else {
            step("skipped", Some(name), 0, Some("the table stayed locked for cep.maintenance_lock_timeout".into()))
        };
        record(client, &s, started)?;
        steps.push(s);
        parent = describe(client, relid)?;
    }
    let existing = existing(client, &parent)?;
    let widest = widest_rule_window(relid);
    let (current, retain_from, protect_from) = months_now(client, parent.control, config.retention, widest)?;
    let policy =
        Policy { premake: config.premake.max(0) as u32, retain_from: config.retention.and(retain_from), protect_from: widest.and(protect_from) };
    let in_default = default_months(client, &parent)?;
    // After a month could not be created, later ones wait too, so months are never left with gaps.
    let mut creating = true;
    for action in partition::plan(&existing, current, &in_default, &policy) {
        let started = Instant::now();
        let s = match action {
            Action::Create { month, .. } if !creating => step(
                "skipped",
                Some(partition::partition_name(&parent.name, month)?),
                0,
                Some(format!("creating {month} waits for the earlier month")),
            ),
            Action::Create { month, .. } => match as_owner(parent.owner_oid, || create_month(client, &parent, month, config.batch_size))? {
                Some(moved) => step("create", Some(partition::partition_name(&parent.name, month)?), moved, None),
                None => {
                    creating = false;
                    step(
                        "skipped",
                        Some(partition::partition_name(&parent.name, month)?),
                        0,
                        Some(format!("creating {month}: a lock stayed busy for cep.maintenance_lock_timeout")),
                    )
                }
            },
            Action::Retire { name, month } => {
                let verb = if config.drop { "drop" } else { "detach" };
                if as_owner(parent.owner_oid, || retire_month(client, &parent, &name, config.drop))? {
                    step(verb, Some(name), 0, Some(format!("{month} is older than the retention")))
                } else {
                    step("skipped", Some(name), 0, Some(format!("{verb} {month}: a lock stayed busy for cep.maintenance_lock_timeout")))
                }
            }
            Action::Protected { name, month } => {
                steps.push(step(
                    "protected",
                    Some(name),
                    0,
                    Some(format!("{month} is past the retention but inside the widest window of an active rule")),
                ));
                continue;
            }
            Action::Conflict { month, with } => {
                steps.push(step("conflict", Some(with), 0, Some(format!("{month} is covered by a partition with other bounds"))));
                continue;
            }
        };
        record(client, &s, started)?;
        steps.push(s);
    }
    as_extension_owner(|| client.update("UPDATE cep.partition_config SET last_run = now() WHERE parent = $1", None, &[relid.into()]))?;
    Ok(steps)
}

/// The DEFAULT partition, which keeps rows of months not created yet. Its name, and false when
/// the table stayed locked for `cep.maintenance_lock_timeout`.
fn create_default(client: &mut SpiClient<'_>, parent: &Parent) -> CepResult<(String, bool)> {
    let name = format!("{}_default", parent.name);
    if name.len() > partition::MAX_IDENTIFIER_BYTES {
        return Err(CepError::NameTooLong(partition::NameTooLong { bytes: name.len(), name }));
    }
    let target = qualify(client, &parent.schema, &name)?;
    let created = as_owner(parent.owner_oid, || {
        in_subtransaction(|| {
            if !try_locks(&[(parent.relid, pg_sys::AccessExclusiveLock)]) {
                return Ok(None);
            }
            client.update(&format!("CREATE TABLE {target} PARTITION OF {} DEFAULT", parent.qualified), None, &[])?;
            Ok(Some(()))
        })
    })?;
    Ok((name, created.is_some()))
}

/// `cep.create_monthly_partition`: the seed's function, idempotent, returning the partition.
pub fn create_monthly(client: &mut SpiClient<'_>, relid: pg_sys::Oid, month: Month) -> CepResult<pg_sys::Oid> {
    let started = Instant::now();
    try_advisory(client, relid, true)?;
    let parent = describe(client, relid)?;
    let name = partition::partition_name(&parent.name, month)?;
    let existing = existing(client, &parent)?;
    if let Some(e) = existing.iter().find(|e| e.overlaps(month)) {
        if e.exact_month == Some(month) {
            let qualified = qualify(client, &parent.schema, &e.name)?;
            return Ok(client
                .select("SELECT $1::regclass::oid", None, &[qualified.as_str().into()])?
                .first()
                .get_one()?
                .unwrap_or(pg_sys::InvalidOid));
        }
        return Err(CepError::Overlap(format!(
            "the {month} partition of {} would overlap partition {}, which has other bounds",
            parent.qualified, e.name
        )));
    }
    let batch = config(client, relid)?.map(|c| c.batch_size).unwrap_or(10_000);
    let Some(moved) = as_owner(parent.owner_oid, || create_month(client, &parent, month, batch))? else {
        return Err(CepError::LockNotAvailable(format!(
            "could not lock {} within cep.maintenance_lock_timeout ({} ms) to add the {month} partition",
            parent.qualified,
            gucs::maintenance_lock_timeout()
        )));
    };
    let target = qualify(client, &parent.schema, &name)?;
    record(client, &Step { parent: parent.qualified.clone(), action: "create", partition: Some(name), rows_moved: moved, detail: None }, started)?;
    Ok(client.select("SELECT $1::regclass::oid", None, &[target.as_str().into()])?.first().get_one()?.unwrap_or(pg_sys::InvalidOid))
}

/// Registers (or re-registers) a table, refusing a retention that would cut into a rule's window.
#[allow(clippy::too_many_arguments)]
pub fn register(
    client: &mut SpiClient<'_>,
    relid: pg_sys::Oid,
    premake: i32,
    retention: Option<pgrx::datum::Interval>,
    retention_mode: &str,
    default_partition: bool,
    force: bool,
    batch_size: i32,
) -> CepResult<()> {
    let parent = describe(client, relid)?;
    if !(0..=120).contains(&premake) {
        return Err(CepError::InvalidArgument(format!("premake: {premake} is not between 0 and 120 months")));
    }
    if !matches!(retention_mode, "detach" | "drop") {
        return Err(CepError::InvalidArgument(format!("retention_mode: \"{retention_mode}\" is not 'detach' or 'drop'")));
    }
    if batch_size < 1 {
        return Err(CepError::InvalidArgument(format!("batch_size: {batch_size} is not a positive number of rows")));
    }
    if let Some(retention) = retention {
        let widest = widest_rule_window(relid);
        let row = client.select(
            "SELECT extract(epoch FROM $1::interval)::float8 * 1e6, $1::interval::text, justify_hours(make_interval(secs => $2::float8 / 1e6))::text",
            None,
            &[retention.into(), widest.map(|w| w as f64).into()],
        )?;
        let row = row.first();
        let micros: f64 = row.get(1)?.unwrap_or(0.0);
        if micros <= 0.0 {
            return Err(CepError::InvalidArgument("retention: must be a positive interval".into()));
        }
        if let Some(widest) = widest {
            if micros < widest as f64 && !force {
                return Err(CepError::InvalidArgument(format!(
                    "retention: {} is shorter than the widest window of an active rule on {} ({}); rows the rules still read would be removed. Pass force => true to accept",
                    row.get::<String>(2)?.unwrap_or_default(),
                    parent.qualified,
                    row.get::<String>(3)?.unwrap_or_default()
                )));
            }
        }
    }
    partition::partition_name(&parent.name, Month::new(2000, 1))?;
    as_extension_owner(|| {
        client.update(
        "INSERT INTO cep.partition_config AS c (parent, control_column, control_type, premake, retention, retention_mode, default_partition, force_retention, batch_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (parent) DO UPDATE SET control_column = excluded.control_column, control_type = excluded.control_type,
             premake = excluded.premake, retention = excluded.retention, retention_mode = excluded.retention_mode,
             default_partition = excluded.default_partition, force_retention = excluded.force_retention, batch_size = excluded.batch_size",
        None,
        &[
            relid.into(),
            parent.column.as_str().into(),
            parent.control.name().into(),
            premake.into(),
            retention.into(),
            retention_mode.into(),
            default_partition.into(),
            force.into(),
            batch_size.into(),
        ],
    )
    })?;
    Ok(())
}

/// Every registered table whose relation still exists, oldest registration first.
pub fn registered(client: &SpiClient<'_>) -> CepResult<Vec<pg_sys::Oid>> {
    let mut out = Vec::new();
    for row in as_extension_owner(|| {
        client.select(
            "SELECT parent::oid FROM cep.partition_config c WHERE EXISTS (SELECT 1 FROM pg_class WHERE oid = c.parent) ORDER BY created_at, parent",
            None,
            &[],
        )
    })? {
        if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
            out.push(oid);
        }
    }
    Ok(out)
}
