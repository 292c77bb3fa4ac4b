//! `cep.watch` and `cep.unwatch`: registering a user's table and mapping its columns.

use pgrx::prelude::*;

use crate::engine::evaluate::level_rank;
use crate::error::{required, CepError, CepResult, OrReport};
use crate::pg::columns::{TableColumns, AMOUNT_TYPES, KEY_TYPES, LOCATION_TYPES, TIME_TYPES};
use crate::pg::privileges::as_extension_owner;
use crate::pg::table_arg::TableArg;

/// Registers a table of transactions so that rules can read its history, and maps its columns.
/// Watching a table again updates its mapping. With `create_index`, an index on
/// `(key_column, time_column) INCLUDE (amount_column, location_column)` is created unless one
/// already leads with those columns: rules then read a key's window from the index alone.
///
/// With `block_at`, the monitor scores each row before it is stored, and a row scoring at or
/// above `block_at` is refused (`on_block => 'error'`, SQLSTATE 09000) or dropped and recorded in
/// `cep.alerts` with action `blocked` (`on_block => 'skip'`). `log_assessments` writes the
/// monitor's assessments to `cep.risk_assessments`: `'none'` (default), `'alerts'` or `'all'`.
/// The monitor also keeps the per-minute rollups `cep.realtime_stats` reads; see
/// `cep.watch_rollups`.
///
/// ```sql
/// SELECT cep.watch('transactions', key_column => 'user_id', amount_column => 'amount',
///                  time_column => 'created_at', location_column => 'location');
/// ```
#[pg_extern(volatile)]
// One Rust argument per named argument of the SQL function, which callers name in their calls.
#[allow(clippy::too_many_arguments)]
fn watch(
    table: Option<TableArg>,
    key_column: default!(Option<&str>, "'user_id'"),
    amount_column: default!(Option<&str>, "'amount'"),
    time_column: default!(Option<&str>, "'created_at'"),
    location_column: default!(Option<&str>, "NULL"),
    channel: default!(Option<&str>, "'transaction_alerts'"),
    alert_level: default!(Option<&str>, "'medium'"),
    create_index: default!(Option<bool>, "true"),
    block_at: default!(Option<f64>, "NULL"),
    on_block: default!(Option<&str>, "'error'"),
    log_assessments: default!(Option<&str>, "'none'"),
) -> String {
    let table = required("table", table).open("table").or_report();
    let key_column = required("key_column", key_column);
    let amount_column = required("amount_column", amount_column);
    let time_column = required("time_column", time_column);
    let channel = required("channel", channel);
    let alert_level = required("alert_level", alert_level);
    let create_index = required("create_index", create_index);
    let on_block = required("on_block", on_block);
    let log_assessments = required("log_assessments", log_assessments);
    crate::pg::privileges::require_owner(table.oid(), "cep.watch").or_report();
    // The relation must be closed before CREATE INDEX, which refuses a table this session has open.
    crate::pg::table_arg::require_table(&table).or_report();
    let target = Target { relid: table.oid(), name: table.name().to_string() };
    drop(table);
    let mapping = Mapping { key_column, amount_column, time_column, location_column };
    let monitor = Monitor { channel, alert_level, block_at, on_block, log_assessments };
    // The mapping may change: what memory holds was summed under the old one.
    crate::pg::rollups::forget(target.relid);
    register(&target, &mapping, &monitor, create_index).or_report()
}

/// Changes some settings of a watched table and keeps the others (`cep.watch` replaces them all);
/// a NULL argument keeps its setting. `block_at` turns blocking on (or moves its threshold),
/// `blocking => false` turns it off. `cooldown` counts an alert's repeats on it (see the README's
/// "Storms"); `'0'` turns it off. Returns the settings in effect, as `cep.watches` holds them.
/// Refused, with nothing changed, for a table that is not watched or a bad value.
///
/// ```sql
/// SELECT cep.alter_watch('transactions', alert_level => 'high');
/// ```
#[pg_extern(volatile)]
#[allow(clippy::too_many_arguments)]
fn alter_watch(
    table: Option<TableArg>,
    key_column: default!(Option<&str>, "NULL"),
    amount_column: default!(Option<&str>, "NULL"),
    time_column: default!(Option<&str>, "NULL"),
    location_column: default!(Option<&str>, "NULL"),
    channel: default!(Option<&str>, "NULL"),
    alert_level: default!(Option<&str>, "NULL"),
    block_at: default!(Option<f64>, "NULL"),
    on_block: default!(Option<&str>, "NULL"),
    log_assessments: default!(Option<&str>, "NULL"),
    blocking: default!(Option<bool>, "NULL"),
    cooldown: default!(Option<pgrx::datum::Interval>, "NULL"),
) -> pgrx::JsonB {
    let table = required("table", table).open("table").or_report();
    crate::pg::privileges::require_owner(table.oid(), "cep.alter_watch").or_report();
    crate::pg::table_arg::require_table(&table).or_report();
    let target = Target { relid: table.oid(), name: table.name().to_string() };
    drop(table);
    let current = settings(target.relid)
        .and_then(|s| s.ok_or_else(|| CepError::NotWatched(format!("{} is not watched: call cep.watch on it first", target.name))))
        .or_report();
    let text = |name: &str| current.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (cur_key, cur_amount, cur_time) = (text("key_column"), text("amount_column"), text("time_column"));
    let (cur_location, cur_channel, cur_level) = (text("location_column"), text("channel"), text("alert_level"));
    let (cur_on_block, cur_log) = (text("on_block"), text("log_assessments"));
    let block_at = match (blocking, block_at) {
        (Some(false), Some(_)) => CepError::InvalidArgument("block_at and blocking => false contradict each other: pass one".into()).report(),
        (Some(false), None) => None,
        (_, Some(b)) => Some(b),
        (_, None) => current.get("block_at").and_then(|v| v.as_f64()),
    };
    if blocking == Some(true) && block_at.is_none() {
        CepError::InvalidArgument("blocking => true needs a threshold: pass block_at (such as 0.9)".into()).report();
    }
    let mapping = Mapping {
        key_column: key_column.or(cur_key.as_deref()).unwrap_or_default(),
        amount_column: amount_column.or(cur_amount.as_deref()).unwrap_or_default(),
        time_column: time_column.or(cur_time.as_deref()).unwrap_or_default(),
        location_column: location_column.or(cur_location.as_deref()),
    };
    let monitor = Monitor {
        channel: channel.or(cur_channel.as_deref()).unwrap_or_default(),
        alert_level: alert_level.or(cur_level.as_deref()).unwrap_or_default(),
        block_at,
        on_block: on_block.or(cur_on_block.as_deref()).unwrap_or_default(),
        log_assessments: log_assessments.or(cur_log.as_deref()).unwrap_or_default(),
    };
    if key_column.is_some() || amount_column.is_some() || time_column.is_some() {
        crate::pg::rollups::forget(target.relid);
    }
    let cooldown = cooldown.map(|c| cooldown_micros(&c).or_report());
    register(&target, &mapping, &monitor, false).or_report();
    if let Some(micros) = cooldown {
        as_extension_owner(|| {
            Spi::run_with_args(
                "UPDATE cep.watches SET cooldown = CASE WHEN $2 > 0 THEN make_interval(secs => $2 / 1e6) END, updated_at = now() WHERE relid = $1",
                &[target.relid.into(), (micros as f64).into()],
            )
        })
        .map_err(CepError::from)
        .or_report();
    }
    pgrx::JsonB(settings(target.relid).or_report().unwrap_or_default())
}

/// A cooldown in microseconds (0 turns it off). Months are refused: their length varies.
fn cooldown_micros(c: &pgrx::datum::Interval) -> CepResult<i64> {
    let micros = (c.days() as i64).checked_mul(86_400_000_000).and_then(|d| d.checked_add(c.micros()));
    match micros {
        Some(m) if c.months() == 0 && m >= 0 => Ok(m),
        _ => Err(CepError::InvalidArgument(
            "cooldown must be a positive interval without months or years (such as '10 minutes'), or '0' to turn it off".into(),
        )),
    }
}

/// A watched table's settings as `cep.watches` holds them (without its OID), or `None`.
fn settings(relid: pg_sys::Oid) -> CepResult<Option<serde_json::Value>> {
    let row = as_extension_owner(|| {
        Spi::get_one_with_args::<pgrx::JsonB>("SELECT to_jsonb(w) - 'relid' FROM cep.watches w WHERE relid = $1", &[relid.into()])
    });
    match row {
        Ok(v) => Ok(v.map(|j| j.0)),
        Err(pgrx::spi::SpiError::InvalidPosition) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

const PK_COLUMN: &str = "SELECT min(a.attname::text) FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = $1 AND i.indisprimary AND k.n <= i.indnkeyatts AND a.attname <> $2 \
     HAVING count(*) = 1";

struct Mapping<'a> {
    key_column: &'a str,
    amount_column: &'a str,
    time_column: &'a str,
    location_column: Option<&'a str>,
}

struct Monitor<'a> {
    channel: &'a str,
    alert_level: &'a str,
    block_at: Option<f64>,
    on_block: &'a str,
    log_assessments: &'a str,
}

struct Target {
    relid: pg_sys::Oid,
    name: String,
}

fn register(table: &Target, mapping: &Mapping, monitor: &Monitor, create_index: bool) -> CepResult<String> {
    let Mapping { key_column, amount_column, time_column, location_column } = *mapping;
    let Monitor { channel, alert_level, block_at, on_block, log_assessments } = *monitor;
    if !matches!(log_assessments, "none" | "alerts" | "all") {
        return Err(CepError::InvalidArgument(format!("log_assessments {log_assessments:?} must be 'none', 'alerts' or 'all'")));
    }
    if let Some(b) = block_at.filter(|b| !b.is_finite() || *b <= 0.0) {
        return Err(CepError::InvalidArgument(format!("block_at {b} must be a score above zero (such as 0.9)")));
    }
    if !matches!(on_block, "error" | "skip") {
        return Err(CepError::InvalidArgument(format!("on_block {on_block:?} must be 'error' or 'skip'")));
    }
    if level_rank(alert_level).is_none() {
        return Err(CepError::InvalidArgument(format!("alert_level {alert_level:?} must be one of low, medium, high")));
    }
    let relid = table.relid;
    crate::pg::notifier::check_channel("channel", channel)?;
    let columns = TableColumns::read(relid, &table.name)?;
    let check = |role: &str, name: &str, allowed: &[&str]| columns.check(role, name, allowed);
    check("key_column", key_column, KEY_TYPES)?;
    check("amount_column", amount_column, AMOUNT_TYPES)?;
    check("time_column", time_column, TIME_TYPES)?;
    // Without an explicit location column, a column named "location" is used when there is one.
    let location_column = match location_column {
        Some(name) => {
            check("location_column", name, LOCATION_TYPES)?;
            Some(name)
        }
        None => columns.type_of("location").is_some_and(|t| LOCATION_TYPES.contains(&t)).then_some("location"),
    };

    Spi::connect_mut(|client| -> CepResult<String> {
        // The primary key identifies the row in alerts: a single column, or the one column beside
        // the time column (a partitioned table's key must hold its partition key, as in
        // (id, created_at); the alert's event_time holds the other half).
        let pk_column: Option<String> =
            client.select(PK_COLUMN, None, &[relid.into(), time_column.into()])?.next().map(|r| r.get::<String>(1)).transpose()?.flatten();
        as_extension_owner(|| {
            client.update(
            "INSERT INTO cep.watches (relid, key_column, amount_column, time_column, location_column, pk_column, channel, alert_level, block_at, on_block, log_assessments) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (relid) DO UPDATE SET key_column = EXCLUDED.key_column, \
               amount_column = EXCLUDED.amount_column, time_column = EXCLUDED.time_column, \
               location_column = EXCLUDED.location_column, pk_column = EXCLUDED.pk_column, \
               channel = EXCLUDED.channel, alert_level = EXCLUDED.alert_level, block_at = EXCLUDED.block_at, \
               on_block = EXCLUDED.on_block, log_assessments = EXCLUDED.log_assessments, updated_at = now()",
            None,
            &[relid.into(), key_column.into(), amount_column.into(), time_column.into(), location_column.into(),
              pk_column.as_deref().into(), channel.into(), alert_level.into(), block_at.into(), on_block.into(), log_assessments.into()],
        )
        })?;
        // One trigger per table, whatever the number of calls: it is replaced, never added twice.
        // Blocking needs the row before it is stored; otherwise one call per statement is cheaper.
        let trigger = if block_at.is_some() {
            "BEFORE INSERT ON %1$s FOR EACH ROW EXECUTE FUNCTION cep.monitor_row()"
        } else {
            "AFTER INSERT ON %1$s REFERENCING NEW TABLE AS cep_new_rows FOR EACH STATEMENT EXECUTE FUNCTION cep.monitor()"
        };
        crate::pg::triggers::drop_triggers(client, relid, &["cep_monitor", "cep_monitor_changes"])?;
        run_ddl(
            client,
            &format!(
                "SELECT format('CREATE TRIGGER cep_monitor {trigger}; \
                 CREATE TRIGGER cep_monitor_changes AFTER UPDATE OR DELETE OR TRUNCATE ON %1$s \
                 FOR EACH STATEMENT EXECUTE FUNCTION cep.monitor_changes()', $1::regclass)"
            ),
            &[relid.into()],
        )?;
        let index_note = if create_index && create_covering_index(client, relid, mapping, location_column)? {
            format!(", covering index on ({key_column}, {time_column}) created")
        } else {
            String::new()
        };
        Ok(format!(
            "watching {} (key {key_column}, amount {amount_column}, time {time_column}, location {}){index_note}",
            table.name,
            location_column.unwrap_or("none")
        ))
    })
}

/// The index the monitor's window reads want, (key, time) covering amount and location, unless the
/// table already has an index leading with key and time. True when it was created.
fn create_covering_index(
    client: &mut pgrx::spi::SpiClient<'_>,
    relid: pg_sys::Oid,
    mapping: &Mapping,
    location_column: Option<&str>,
) -> CepResult<bool> {
    let Mapping { key_column, amount_column, time_column, .. } = *mapping;
    let has_index = client
        .select(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = i.indkey[0] \
               JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = i.indkey[1] \
             WHERE i.indrelid = $1 AND k.attname = $2 AND t.attname = $3)",
            None,
            &[relid.into(), key_column.into(), time_column.into()],
        )?
        .first()
        .get_one::<bool>()?
        .unwrap_or(false);
    if has_index {
        return Ok(false);
    }
    run_ddl(
        client,
        "SELECT format('CREATE INDEX ON %s (%I, %I) INCLUDE (%s)', $1::regclass, $2, $3, \
                (SELECT string_agg(quote_ident(c), ', ') FROM unnest(ARRAY[$4, $5]) c WHERE c IS NOT NULL))",
        &[relid.into(), key_column.into(), time_column.into(), amount_column.into(), location_column.into()],
    )?;
    Ok(true)
}

/// Runs DDL that `format_sql` builds from bound arguments: Postgres quotes every identifier
/// (`%I`, regclass), so no name is ever spliced into SQL by hand.
fn run_ddl(client: &mut pgrx::spi::SpiClient<'_>, format_sql: &str, args: &[pgrx::datum::DatumWithOid]) -> CepResult<()> {
    let ddl: String = client.select(format_sql, None, args)?.first().get_one::<String>()?.unwrap_or_default();
    client.update(ddl.as_str(), None, &[])?;
    Ok(())
}

/// Turns the per-minute rollups of a watched table on (the default) or off. Off,
/// `cep.realtime_stats` reads the table's rows; turned on again, memory is exact from the next
/// minute on, and `cep.rollup_rebuild` makes it exact further back. Returns the previous setting.
///
/// ```sql
/// SELECT cep.watch_rollups('transactions', false);
/// ```
#[pg_extern(volatile, strict)]
fn watch_rollups(table: TableArg, enabled: bool) -> bool {
    let table = table.open("table").or_report();
    let relid = table.oid();
    crate::pg::privileges::require_owner(relid, "cep.watch_rollups").or_report();
    let name = table.name().to_string();
    crate::pg::rollups::forget(relid);
    Spi::connect_mut(|client| -> CepResult<bool> {
        let previous = as_extension_owner(|| {
            client.update(
                "UPDATE cep.watches w SET rollups = $2, updated_at = now() FROM cep.watches old
                 WHERE w.relid = $1 AND old.relid = w.relid RETURNING old.rollups",
                None,
                &[relid.into(), enabled.into()],
            )
        })?;
        if previous.is_empty() {
            return Err(CepError::NotWatched(format!("{name} is not watched: call cep.watch on it first")));
        }
        Ok(previous.first().get_one::<bool>()?.unwrap_or(true))
    })
    .or_report()
}

/// Stops watching a table and removes its monitor trigger. Returns false when it was not watched.
///
/// ```sql
/// SELECT cep.unwatch('transactions');
/// ```
#[pg_extern(volatile, strict)]
fn unwatch(table: TableArg) -> bool {
    let table = table.open("table").or_report();
    let relid = table.oid();
    crate::pg::privileges::require_owner(relid, "cep.unwatch").or_report();
    // Closed first: DROP TRIGGER refuses a table this session has open.
    drop(table);
    crate::pg::rollups::forget(relid);
    Spi::connect_mut(|client| -> CepResult<bool> {
        let rows = as_extension_owner(|| client.update("DELETE FROM cep.watches WHERE relid = $1", None, &[relid.into()]))?;
        crate::pg::triggers::drop_triggers(client, relid, &["cep_monitor", "cep_monitor_changes"])?;
        Ok(!rows.is_empty())
    })
    .or_report()
}
