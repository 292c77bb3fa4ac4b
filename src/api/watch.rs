//! `cep.watch` and `cep.unwatch`: registering a user's table and mapping its columns.

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::engine::evaluate::level_rank;
use crate::error::{CepError, CepResult, OrReport};

const KEY_TYPES: &[&str] = &["smallint", "integer", "bigint", "text", "character varying", "uuid"];
const AMOUNT_TYPES: &[&str] = &["numeric", "double precision", "real", "smallint", "integer", "bigint"];
const TIME_TYPES: &[&str] = &["timestamp with time zone", "timestamp without time zone"];
const LOCATION_TYPES: &[&str] = &["text", "character varying", "character"];

/// Registers a table of transactions so that rules can read its history, and maps its columns.
/// Watching a table again updates its mapping. With `create_index`, an index on
/// `(key_column, time_column) INCLUDE (amount_column, location_column)` is created unless one
/// already leads with those columns: rules then read a key's window from the index alone.
///
/// ```sql
/// SELECT cep.watch('transactions', key_column => 'user_id', amount_column => 'amount',
///                  time_column => 'created_at', location_column => 'location');
/// ```
#[pg_extern(volatile)]
#[search_path(pg_catalog)]
fn watch(
    table: PgRelation,
    key_column: default!(&str, "'user_id'"),
    amount_column: default!(&str, "'amount'"),
    time_column: default!(&str, "'created_at'"),
    location_column: default!(Option<&str>, "NULL"),
    channel: default!(&str, "'transaction_alerts'"),
    alert_level: default!(&str, "'medium'"),
    create_index: default!(bool, "true"),
) -> String {
    // The relation must be closed before CREATE INDEX, which refuses a table this session has open.
    let target = Target { relid: table.oid(), name: table.name().to_string(), relkind: unsafe { (*table.rd_rel).relkind } as u8 };
    drop(table);
    register(&target, key_column, amount_column, time_column, location_column, channel, alert_level, create_index).or_report()
}

struct Target {
    relid: pg_sys::Oid,
    name: String,
    relkind: u8,
}

fn register(
    table: &Target,
    key_column: &str,
    amount_column: &str,
    time_column: &str,
    location_column: Option<&str>,
    channel: &str,
    alert_level: &str,
    create_index: bool,
) -> CepResult<String> {
    if level_rank(alert_level).is_none() {
        return Err(CepError::InvalidArgument(format!("alert_level {alert_level:?} must be one of low, medium, high")));
    }
    let relid = table.relid;
    let relkind = table.relkind;
    if relkind != pg_sys::RELKIND_RELATION && relkind != pg_sys::RELKIND_PARTITIONED_TABLE {
        return Err(CepError::InvalidArgument(format!("\"{}\" is not a table: only plain and partitioned tables can be watched", table.name)));
    }
    if channel.is_empty() || channel.len() >= pg_sys::NAMEDATALEN as usize {
        return Err(CepError::InvalidArgument(format!("channel {channel:?} must be 1 to 63 bytes long")));
    }
    let columns: Vec<(String, String)> = Spi::connect(|client| -> CepResult<_> {
        let rows = client.select(
            "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            None,
            &[relid.into()],
        )?;
        let mut v = Vec::new();
        for row in rows {
            v.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(v)
    })?;
    let check = |role: &str, name: &str, allowed: &[&str]| -> CepResult<()> {
        let Some((_, ty)) = columns.iter().find(|(n, _)| n == name) else {
            return Err(CepError::UndefinedColumn(format!("{role} {name:?} is not a column of \"{}\"", table.name)));
        };
        if !allowed.contains(&ty.as_str()) {
            return Err(CepError::WrongColumnType(format!("{role} {name:?} has type {ty}; expected one of: {}", allowed.join(", "))));
        }
        Ok(())
    };
    check("key_column", key_column, KEY_TYPES)?;
    check("amount_column", amount_column, AMOUNT_TYPES)?;
    check("time_column", time_column, TIME_TYPES)?;
    // Without an explicit location column, a column named "location" is used when there is one.
    let location_column = match location_column {
        Some(name) => {
            check("location_column", name, LOCATION_TYPES)?;
            Some(name)
        }
        None => columns.iter().any(|(n, t)| n == "location" && LOCATION_TYPES.contains(&t.as_str())).then_some("location"),
    };

    Spi::connect_mut(|client| -> CepResult<String> {
        // A single-column primary key identifies the row in alerts.
        let pk_column: Option<String> = client
            .select(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = $1 AND i.indisprimary AND i.indnkeyatts = 1",
                None,
                &[relid.into()],
            )?
            .into_iter()
            .next()
            .map(|r| r.get::<String>(1))
            .transpose()?
            .flatten();
        client.update(
            "INSERT INTO cep.watches (relid, key_column, amount_column, time_column, location_column, pk_column, channel, alert_level) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (relid) DO UPDATE SET key_column = EXCLUDED.key_column, \
               amount_column = EXCLUDED.amount_column, time_column = EXCLUDED.time_column, \
               location_column = EXCLUDED.location_column, pk_column = EXCLUDED.pk_column, \
               channel = EXCLUDED.channel, alert_level = EXCLUDED.alert_level, updated_at = now()",
            None,
            &[relid.into(), key_column.into(), amount_column.into(), time_column.into(), location_column.into(),
              pk_column.as_deref().into(), channel.into(), alert_level.into()],
        )?;
        // One trigger per table, whatever the number of calls: it is replaced, never added twice.
        run_ddl(
            client,
            "SELECT format('DROP TRIGGER IF EXISTS cep_monitor ON %1$s; \
               CREATE TRIGGER cep_monitor AFTER INSERT ON %1$s REFERENCING NEW TABLE AS cep_new_rows \
               FOR EACH STATEMENT EXECUTE FUNCTION cep.monitor()', $1::regclass)",
            &[relid.into()],
        )?;
        let mut index_note = String::new();
        if create_index {
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
            if !has_index {
                run_ddl(
                    client,
                    "SELECT format('CREATE INDEX ON %s (%I, %I) INCLUDE (%s)', $1::regclass, $2, $3, \
                            (SELECT string_agg(quote_ident(c), ', ') FROM unnest(ARRAY[$4, $5]) c WHERE c IS NOT NULL))",
                    &[relid.into(), key_column.into(), time_column.into(), amount_column.into(), location_column.into()],
                )?;
                index_note = format!(", covering index on ({key_column}, {time_column}) created");
            }
        }
        Ok(format!(
            "watching {} (key {key_column}, amount {amount_column}, time {time_column}, location {}){index_note}",
            table.name,
            location_column.unwrap_or("none")
        ))
    })
}

/// Runs DDL that `format_sql` builds from bound arguments: Postgres quotes every identifier
/// (`%I`, regclass), so no name is ever spliced into SQL by hand.
fn run_ddl(client: &mut pgrx::spi::SpiClient<'_>, format_sql: &str, args: &[pgrx::datum::DatumWithOid]) -> CepResult<()> {
    let ddl: String = client.select(format_sql, None, args)?.first().get_one::<String>()?.unwrap_or_default();
    client.update(ddl.as_str(), None, &[])?;
    Ok(())
}

/// Stops watching a table and removes its monitor trigger. Returns false when it was not watched.
///
/// ```sql
/// SELECT cep.unwatch('transactions');
/// ```
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog)]
fn unwatch(table: PgRelation) -> bool {
    let relid = table.oid();
    // Closed first: DROP TRIGGER refuses a table this session has open.
    drop(table);
    Spi::connect_mut(|client| -> CepResult<bool> {
        let rows = client.update("DELETE FROM cep.watches WHERE relid = $1", None, &[relid.into()])?;
        run_ddl(client, "SELECT format('DROP TRIGGER IF EXISTS cep_monitor ON %s', $1::regclass)", &[relid.into()])?;
        Ok(!rows.is_empty())
    })
    .or_report()
}
