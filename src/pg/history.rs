//! The SQL that reads a watched table's history, built from its mapping: one pass over a key's
//! recent rows yields every window aggregate the active rules need (`scoring` runs it).
//!
//! The query is built once per watched table and rule set, from identifiers quoted by Postgres,
//! and kept as a prepared plan; every value (key, window starts, time, location) is a bound
//! parameter. Windows are `[t - window, t]`: an event exactly one window old is inside.

use pgrx::prelude::*;
use pgrx::PgOid;

use crate::engine::evaluate::WindowPlan;

/// Quoted identifiers and types of a watched table's mapping.
pub struct Mapping {
    pub qualified_name: String,
    pub key: String,
    pub key_type: String,
    /// `None` when the mapped amount column is unusable.
    pub amount: Option<String>,
    pub time: String,
    pub location: Option<String>,
    pub pk: Option<String>,
}

/// `$1` key (as text, cast to the key's type), `$2..$n+1` window starts, `$n+2` the transaction's
/// time, `$n+3` its location when a rule needs it. Only the aggregates the rules read are
/// selected; with the covering index `cep.watch` creates, the scan is index-only.
pub fn window_query_sql(c: &Mapping, plan: &WindowPlan, binds_location: bool) -> (String, Vec<PgOid>) {
    let n = plan.windows.len();
    let time_param = n + 2;
    let location_param = n + 3;
    let mut select = Vec::new();
    for (i, needs) in plan.needs.iter().enumerate() {
        // The longest window is the scan's own range: no filter needed.
        let filter = if i == 0 { String::new() } else { format!(" FILTER (WHERE {} >= ${})", c.time, i + 2) };
        let inside = if i == 0 { "true".to_string() } else { format!("{} >= ${}", c.time, i + 2) };
        // Rules that read the amount are not planned when its column is unusable.
        let amount = format!("{}::float8", c.amount.as_deref().unwrap_or("NULL"));
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
                select.push(format!("count(*) FILTER (WHERE {inside} AND {loc} = ${location_param})"));
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

/// Amount and location as float8 and text, or typed NULLs when the column is unusable.
fn amount_and_location(c: &Mapping) -> String {
    format!(
        "{}, {}",
        c.amount.as_deref().map(|a| format!("{a}::float8")).unwrap_or_else(|| "NULL::float8".into()),
        c.location.as_deref().map(|l| format!("{l}::text")).unwrap_or_else(|| "NULL::text".into())
    )
}

/// All of a key's rows from `$2` on, for the shared window cache: time, amount, location and
/// the inserting transaction (so that a commit the loader saw is not added twice).
pub fn cache_load_sql(c: &Mapping) -> String {
    format!(
        "SELECT {t}::timestamptz, {}, xmin::text::int8 FROM {} WHERE {} = $1::{} AND {t} >= $2",
        amount_and_location(c),
        c.qualified_name,
        c.key,
        c.key_type,
        t = c.time,
    )
}

/// Every key's rows from `$1` on, ordered by key and time, to fill the window cache at once.
pub fn cache_warm_sql(c: &Mapping) -> String {
    format!(
        "SELECT {k}::text, {t}::timestamptz, {}, xmin::text::int8 FROM {} WHERE {t} >= $1 ORDER BY 1, 2",
        amount_and_location(c),
        c.qualified_name,
        k = c.key,
        t = c.time,
    )
}

/// Every key's rows in `[$1, $2]`, ordered by key and time, with their primary key: what
/// `cep.backtest_rule` replays.
pub fn backtest_sql(c: &Mapping) -> String {
    format!(
        "SELECT {k}::text, {t}::timestamptz, {}, {} FROM {} WHERE {t} >= $1 AND {t} <= $2 ORDER BY 1, 2",
        amount_and_location(c),
        c.pk.as_deref().map(|p| format!("{p}::text")).unwrap_or_else(|| "NULL::text".into()),
        c.qualified_name,
        k = c.key,
        t = c.time,
    )
}
