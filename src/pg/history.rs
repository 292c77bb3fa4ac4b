//! One pass over a key's recent rows yields every window aggregate the active rules need.
//!
//! The query is built once per watched table and rule set, from identifiers quoted by Postgres,
//! and kept as a prepared plan; every value (key, window starts, time, location) is a bound
//! parameter. Windows are `[t - window, t]`: an event exactly one window old is inside.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgOid;

use crate::engine::evaluate::{WindowPlan, WindowStats};
use crate::error::{CepError, CepResult};
use crate::pg::cache::Watch;

struct WatchColumns {
    qualified_name: String,
    key: String,
    key_type: String,
    amount: String,
    time: String,
    location: Option<String>,
    pk: Option<String>,
    channel: String,
    alert_level: String,
}

pub fn load_watch(relid: pg_sys::Oid, plan: WindowPlan) -> CepResult<Watch> {
    let cols = Spi::connect(|client| -> CepResult<Option<WatchColumns>> {
        let rows = client.select(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(w.key_column), \
                    format_type(a.atttypid, NULL), quote_ident(w.amount_column), \
                    quote_ident(w.time_column), quote_ident(w.location_column), w.channel, \
                    quote_ident(w.pk_column), w.alert_level \
             FROM cep.watches w \
             JOIN pg_class c ON c.oid = w.relid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = w.relid AND a.attname = w.key_column AND NOT a.attisdropped \
             WHERE w.relid = $1",
            None,
            &[relid.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        Ok(Some(WatchColumns {
            qualified_name: row.get(1)?.unwrap_or_default(),
            key: row.get(2)?.unwrap_or_default(),
            key_type: row.get(3)?.unwrap_or_default(),
            amount: row.get(4)?.unwrap_or_default(),
            time: row.get(5)?.unwrap_or_default(),
            location: row.get(6)?,
            channel: row.get(7)?.unwrap_or_default(),
            pk: row.get(8)?,
            alert_level: row.get(9)?.unwrap_or_default(),
        }))
    })?;
    let cols = cols.ok_or_else(|| {
        CepError::NotWatched(format!("table with OID {relid} is not watched: call cep.watch on it first"))
    })?;
    let binds_location = cols.location.is_some() && plan.needs_location;
    let window_query = if plan.windows.is_empty() {
        None
    } else {
        let (sql, arg_types) = window_query_sql(&cols, &plan, binds_location);
        Some(Spi::connect(|client| client.prepare(sql.as_str(), &arg_types).map(|p| p.keep()))?)
    };
    let new_rows_sql = format!(
        "SELECT {}::text, {}::float8, {}, {}::timestamptz, {}::text FROM cep_new_rows",
        cols.key,
        cols.amount,
        cols.location.as_deref().map(|l| format!("{l}::text")).unwrap_or_else(|| "NULL::text".into()),
        cols.time,
        cols.pk.as_deref().unwrap_or("NULL"),
    );
    Ok(Watch {
        relid,
        alert_level: cols.alert_level,
        new_rows_sql,
        qualified_name: cols.qualified_name,
        key_column: cols.key,
        has_location: cols.location.is_some(),
        binds_location,
        channel: cols.channel,
        plan,
        window_query,
    })
}

/// `$1` key (as text, cast to the key's type), `$2..$n+1` window starts, `$n+2` the transaction's
/// time, `$n+3` its location when a rule needs it. Only the aggregates the rules read are
/// selected; with the covering index `cep.watch` creates, the scan is index-only.
fn window_query_sql(c: &WatchColumns, plan: &WindowPlan, binds_location: bool) -> (String, Vec<PgOid>) {
    let n = plan.windows.len();
    let time_param = n + 2;
    let location_param = n + 3;
    let mut select = Vec::new();
    for (i, needs) in plan.needs.iter().enumerate() {
        // The longest window is the scan's own range: no filter needed.
        let filter = if i == 0 { String::new() } else { format!(" FILTER (WHERE {} >= ${})", c.time, i + 2) };
        let inside = if i == 0 { "true".to_string() } else { format!("{} >= ${}", c.time, i + 2) };
        let amount = format!("{}::float8", c.amount);
        if needs.count {
            select.push(format!("count(*){filter}"));
        }
        if needs.sum {
            select.push(format!("coalesce(sum({amount}){filter}, 0)"));
        }
        if needs.max {
            select.push(format!("max({amount}){filter}"));
        }
        if needs.sum_sq {
            select.push(format!("coalesce(sum({amount} * {amount}){filter}, 0)"));
        }
        if let Some(loc) = &c.location {
            if needs.distinct_locations {
                select.push(format!("count(DISTINCT {loc}){filter}"));
            }
            if needs.other_locations {
                select.push(format!("count(*) FILTER (WHERE {inside} AND {loc} <> ${location_param})"));
            }
        }
    }
    if select.is_empty() {
        select.push("1".into());
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1::{} AND {} >= $2 AND {} <= ${time_param}",
        select.join(", "),
        c.qualified_name,
        c.key,
        c.key_type,
        c.time,
        c.time
    );
    let mut types = vec![PgOid::from(pg_sys::TEXTOID)];
    types.extend((0..n + 1).map(|_| PgOid::from(pg_sys::TIMESTAMPTZOID)));
    if binds_location {
        types.push(PgOid::from(pg_sys::TEXTOID));
    }
    (sql, types)
}

/// Reads the key's history once and returns one `WindowStats` per window of the plan.
pub fn read_window_stats(
    watch: &Watch,
    key: &str,
    at: pg_sys::TimestampTz,
    location: Option<&str>,
) -> CepResult<Vec<WindowStats>> {
    let Some(query) = watch.window_query.as_ref() else { return Ok(Vec::new()) };
    let ts = |micros: pg_sys::TimestampTz| {
        TimestampWithTimeZone::try_from(micros).map_err(|_| CepError::InvalidArgument(format!("timestamp {micros} is out of range")))
    };
    let mut args: Vec<pgrx::datum::DatumWithOid> = Vec::with_capacity(watch.plan.windows.len() + 3);
    args.push(key.into());
    for w in &watch.plan.windows {
        args.push(ts(at - w)?.into());
    }
    args.push(ts(at)?.into());
    if watch.binds_location {
        args.push(location.into());
    }
    Spi::connect(|client| {
        let row = client.select(query, Some(1), &args)?.first();
        // Columns come in the order window_query_sql wrote them.
        let mut col = 0;
        let mut next = || {
            col += 1;
            col
        };
        let mut out = Vec::with_capacity(watch.plan.windows.len());
        for needs in &watch.plan.needs {
            let mut s = WindowStats::default();
            if needs.count {
                s.count = row.get::<i64>(next())?.unwrap_or(0);
            }
            if needs.sum {
                s.sum = row.get::<f64>(next())?.unwrap_or(0.0);
            }
            if needs.max {
                s.max = row.get::<f64>(next())?;
            }
            if needs.sum_sq {
                s.sum_sq = row.get::<f64>(next())?.unwrap_or(0.0);
            }
            if watch.has_location {
                if needs.distinct_locations {
                    s.distinct_locations = row.get::<i64>(next())?.unwrap_or(0);
                }
                if needs.other_locations {
                    s.other_locations = row.get::<i64>(next())?.unwrap_or(0);
                }
            }
            out.push(s);
        }
        Ok(out)
    })
}
