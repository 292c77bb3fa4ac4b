//! `cep.capture` and `cep.uncapture`: seed 000's change-capture, analytics and correlation
//! processors as triggers on the user's own tables.

use pgrx::prelude::*;

use crate::engine::capture::{Kind, Op};
use crate::error::{required, CepError, CepResult, OrReport};
use crate::pg::capture;
use crate::pg::columns::TableColumns;
use crate::pg::privileges::as_extension_owner;
use crate::pg::table_arg::TableArg;

/// Records every INSERT, UPDATE, DELETE and TRUNCATE on a table in `cep.change_log`, and sends
/// one small notification per transaction on `channel` when it commits: the transaction id
/// (`correlation_id`), the first and last change ids and the count, never the rows.
///
/// With `kind => 'node'` or `'relationship'`, events are named as seed 000 names them
/// (`node_created`, `relationship_deleted`, ...), and relationships keep `from_column` and
/// `to_column` for correlation. `key_column` makes the anomaly checks per key instead of per
/// table. Anomalies (alerts in `cep.alerts`, notified on `anomaly_channel`): more than
/// `high_frequency` changes within `high_frequency_window`, more than `mass_deletion` deletes
/// within `mass_deletion_window`; NULL turns a check off. Calling it again updates the settings.
///
/// ```sql
/// SELECT cep.capture('nodes', kind => 'node');
/// SELECT cep.capture('relationships', kind => 'relationship');
/// ```
#[pg_extern(volatile)]
#[allow(clippy::too_many_arguments)]
fn capture(
    table: Option<TableArg>,
    kind: default!(Option<&str>, "NULL"),
    channel: default!(Option<&str>, "'cep_changes'"),
    changed_columns_only: default!(Option<bool>, true),
    key_column: default!(Option<&str>, "NULL"),
    from_column: default!(Option<&str>, "NULL"),
    to_column: default!(Option<&str>, "NULL"),
    high_frequency: default!(Option<i32>, 100),
    high_frequency_window: default!(Option<pgrx::datum::Interval>, "'1 minute'"),
    mass_deletion: default!(Option<i32>, 20),
    mass_deletion_window: default!(Option<pgrx::datum::Interval>, "'1 minute'"),
    anomaly_channel: default!(Option<&str>, "'cep_anomalies'"),
) -> String {
    let table = required("table", table).open("table").or_report();
    let channel = required("channel", channel);
    let changed_columns_only = required("changed_columns_only", changed_columns_only);
    let high_frequency_window = required("high_frequency_window", high_frequency_window);
    let mass_deletion_window = required("mass_deletion_window", mass_deletion_window);
    let anomaly_channel = required("anomaly_channel", anomaly_channel);
    let relid = table.oid();
    crate::pg::privileges::require_owner(relid, "cep.capture").or_report();
    let name = table.name().to_string();
    crate::pg::table_arg::require_table(&table).or_report();
    // Closed first: CREATE TRIGGER refuses a table this session has open.
    drop(table);
    Spi::connect_mut(|client| -> CepResult<String> {
        refuse_own_table(client, relid, &name)?;
        let kind = Kind::parse(kind).map_err(CepError::InvalidArgument)?;
        crate::pg::notifier::check_channel("channel", channel)?;
        crate::pg::notifier::check_channel("anomaly_channel", anomaly_channel)?;
        // Bounded when written: a window reaching back past the earliest timestamp would make
        // every write to the table fail ("timestamp out of range") when its changes are counted.
        for (what, window) in [("high_frequency_window", high_frequency_window), ("mass_deletion_window", mass_deletion_window)] {
            let row = client.select("SELECT $1::text, $1 > interval '0' AND $1 <= interval '100 years'", None, &[window.into()])?;
            let (shown, sane) = row.first().get_two::<String, bool>()?;
            if sane != Some(true) {
                return Err(CepError::InvalidArgument(format!("{what} '{}' must be longer than 0 and at most 100 years", shown.unwrap_or_default())));
            }
        }
        for (what, n) in [("high_frequency", high_frequency), ("mass_deletion", mass_deletion)] {
            if n.is_some_and(|n| n < 1) {
                return Err(CepError::InvalidArgument(format!(
                    "{what}: {} is not a positive number of changes (NULL turns the check off)",
                    n.unwrap_or(0)
                )));
            }
        }
        // Relationships default to seed 000's from_id / to_id.
        let (from_column, to_column) = match kind {
            Some(Kind::Relationship) => (Some(from_column.unwrap_or("from_id")), Some(to_column.unwrap_or("to_id"))),
            _ => (from_column, to_column),
        };
        let columns = TableColumns::read(relid, &name)?;
        for (role, column) in [("key_column", key_column), ("from_column", from_column), ("to_column", to_column)] {
            if let Some(column) = column {
                columns.require(role, column)?;
            }
        }
        let table: String = as_extension_owner(|| -> CepResult<String> {
            Ok(client
                .update(
                    "INSERT INTO cep.captures AS c (relid, kind, channel, changed_columns_only, key_column, from_column, to_column,
                                               high_frequency, high_frequency_window, mass_deletion, mass_deletion_window, anomaly_channel)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (relid) DO UPDATE SET kind = excluded.kind, channel = excluded.channel,
                     changed_columns_only = excluded.changed_columns_only, key_column = excluded.key_column,
                     from_column = excluded.from_column, to_column = excluded.to_column,
                     high_frequency = excluded.high_frequency, high_frequency_window = excluded.high_frequency_window,
                     mass_deletion = excluded.mass_deletion, mass_deletion_window = excluded.mass_deletion_window,
                     anomaly_channel = excluded.anomaly_channel
                 RETURNING relid::regclass::text",
                    None,
                    &[
                        relid.into(),
                        kind.map(|k| if k == Kind::Node { "node" } else { "relationship" }).into(),
                        channel.into(),
                        changed_columns_only.into(),
                        key_column.into(),
                        from_column.into(),
                        to_column.into(),
                        high_frequency.into(),
                        high_frequency_window.into(),
                        mass_deletion.into(),
                        mass_deletion_window.into(),
                        anomaly_channel.into(),
                    ],
                )?
                .first()
                .get_one()?
                .unwrap_or_default())
        })?;
        create_triggers(client, relid)?;
        // The log gets its months now, so the first changes do not wait in its DEFAULT partition.
        let log: pg_sys::Oid = client.select("SELECT 'cep.change_log'::regclass::oid", None, &[])?.first().get_one()?.unwrap_or(pg_sys::InvalidOid);
        // pg_cep's own table, kept by its owner whoever captures.
        as_extension_owner(|| crate::pg::partitions::maintain(client, log))?;
        Ok(table)
    })
    .or_report()
}

/// pg_cep's own tables are never captured: the log would record its own records.
fn refuse_own_table(client: &pgrx::spi::SpiClient<'_>, relid: pg_sys::Oid, name: &str) -> CepResult<()> {
    let in_cep: bool = client
        .select("SELECT relnamespace = 'cep'::regnamespace FROM pg_class WHERE oid = $1", None, &[relid.into()])?
        .first()
        .get_one()?
        .unwrap_or(false);
    if in_cep {
        return Err(CepError::InvalidArgument(format!("{name} belongs to pg_cep; capturing it would record its own records")));
    }
    Ok(())
}

/// Transition tables allow one event per trigger: four triggers, one function. Those already
/// there stay, so calling `cep.capture` again only updates the settings.
fn create_triggers(client: &mut pgrx::spi::SpiClient<'_>, relid: pg_sys::Oid) -> CepResult<()> {
    let ddl: Option<String> = client
        .select(
            "SELECT string_agg(format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION cep.capture_trigger()',
                                      t.name, t.event, $1::regclass, t.transition), '; ')
             FROM (VALUES ('cep_capture_insert', 'INSERT', 'REFERENCING NEW TABLE AS cep_new'),
                          ('cep_capture_update', 'UPDATE', 'REFERENCING OLD TABLE AS cep_old NEW TABLE AS cep_new'),
                          ('cep_capture_delete', 'DELETE', 'REFERENCING OLD TABLE AS cep_old'),
                          ('cep_capture_truncate', 'TRUNCATE', '')) AS t(name, event, transition)
             WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = t.name)",
            None,
            &[relid.into()],
        )?
        .first()
        .get_one()?;
    if let Some(ddl) = ddl {
        client.update(ddl.as_str(), None, &[])?;
    }
    Ok(())
}

/// Stops capturing a table: removes its triggers and settings. Its changes stay in
/// `cep.change_log`. Returns false when it was not captured.
///
/// ```sql
/// SELECT cep.uncapture('nodes');
/// ```
#[pg_extern(volatile, strict)]
fn uncapture(table: TableArg) -> bool {
    let table = table.open("table").or_report();
    let relid = table.oid();
    crate::pg::privileges::require_owner(relid, "cep.uncapture").or_report();
    drop(table);
    Spi::connect_mut(|client| -> CepResult<bool> {
        let rows = as_extension_owner(|| client.update("DELETE FROM cep.captures WHERE relid = $1", None, &[relid.into()]))?;
        crate::pg::triggers::drop_triggers(
            client,
            relid,
            &["cep_capture_insert", "cep_capture_update", "cep_capture_delete", "cep_capture_truncate"],
        )?;
        Ok(!rows.is_empty())
    })
    .or_report()
}

/// Statement trigger behind `cep.capture`; not called directly.
#[pg_trigger]
fn capture_trigger<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        let event = trigger.event();
        let op = match () {
            _ if event.fired_by_insert() => Op::Insert,
            _ if event.fired_by_update() => Op::Update,
            _ if event.fired_by_delete() => Op::Delete,
            _ => Op::Truncate,
        };
        let data = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
        let Some(settings) = crate::pg::capture::cached(relid).or_report() else { return Ok(None) };
        Spi::connect_mut(|client| -> CepResult<()> {
            // SAFETY: this trigger call's own data; makes cep_new / cep_old visible to our queries.
            unsafe { pg_sys::SPI_register_trigger_data(data) };
            // SAFETY: this trigger call's own data.
            let logged = unsafe { capture::log_statement(client, &settings, op, data)? };
            as_extension_owner(|| capture::check_anomalies(client, &settings, op, &logged))?;
            capture::remember(&settings, &logged);
            Ok(())
        })
        .or_report();
        Ok(None)
    })
}
