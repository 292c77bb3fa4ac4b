//! `cep.tumble`, `cep.hop` and `cep.window_aggregate`: time windows for any query.

use pgrx::datum::{Interval, Timestamp, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::engine::window::{self, Width, DEFAULT_ORIGIN_PG};
use crate::error::{required, CepError, CepResult, OrReport};
use crate::pg::table_arg::TableArg;

/// At most this many windows per `cep.window_aggregate` call.
const MAX_WINDOWS: usize = 100_000;

fn width_of(name: &str, i: &Interval) -> CepResult<Width> {
    Width::from_interval(i.months(), i.days(), i.micros()).map_err(|e| CepError::InvalidArgument(format!("{name}: {e}")))
}

fn fixed_width_of(name: &str, i: &Interval) -> CepResult<i64> {
    match width_of(name, i)? {
        Width::Micros(m) => Ok(m),
        Width::Months(_) => Err(CepError::InvalidArgument(format!("{name}: months are not supported here; give days or hours"))),
    }
}

fn tstz(micros: i64) -> CepResult<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(micros).map_err(|_| CepError::InvalidArgument(format!("timestamp {micros} is out of range")))
}

/// Start of the `width` bucket holding `ts`, as TimescaleDB's `time_bucket`: buckets align to
/// `origin` (Monday 2000-01-03 00:00 UTC by default); month widths align to 2000-01-01 in UTC.
/// Immutable, so it can be indexed and used in GROUP BY.
///
/// ```sql
/// SELECT cep.tumble(created_at, '5 minutes') AS bucket, count(*) FROM transactions GROUP BY 1;
/// ```
#[pg_extern(immutable, parallel_safe, strict, name = "tumble")]
fn tumble(ts: TimestampWithTimeZone, width: Interval, origin: default!(TimestampWithTimeZone, "'2000-01-03 00:00:00+00'")) -> TimestampWithTimeZone {
    let w = width_of("width", &width).or_report();
    let b = window::tumble(ts.into(), w, origin.into());
    b.and_then(|b| TimestampWithTimeZone::try_from(b).ok()).ok_or_else(|| CepError::InvalidArgument("the bucket is out of range".into())).or_report()
}

/// The same for `timestamp without time zone`, on its wall-clock values.
#[pg_extern(immutable, parallel_safe, strict, name = "tumble")]
fn tumble_timestamp(ts: Timestamp, width: Interval, origin: default!(Timestamp, "'2000-01-03 00:00:00'")) -> Timestamp {
    let w = width_of("width", &width).or_report();
    let b = window::tumble(pg_sys::Timestamp::from(ts), w, pg_sys::Timestamp::from(origin));
    b.and_then(|b| Timestamp::try_from(b).ok()).ok_or_else(|| CepError::InvalidArgument("the bucket is out of range".into())).or_report()
}

/// The hopping windows `[window_start, window_end)` of `width`, starting every `slide` (aligned
/// as `cep.tumble` aligns), that hold `ts`. Earliest first.
///
/// ```sql
/// SELECT * FROM cep.hop('2026-01-15 12:07+00', '10 minutes', '5 minutes');
/// ```
#[pg_extern(immutable, parallel_safe, strict)]
fn hop(
    ts: TimestampWithTimeZone,
    width: Interval,
    slide: Interval,
) -> TableIterator<'static, (name!(window_start, TimestampWithTimeZone), name!(window_end, TimestampWithTimeZone))> {
    let (w, s) = (fixed_width_of("width", &width).or_report(), fixed_width_of("slide", &slide).or_report());
    let starts = window::hop(ts.into(), w, s, DEFAULT_ORIGIN_PG, window::MAX_HOP_WINDOWS)
        .map_err(|count| CepError::TooMany {
            message: format!("width / slide: {count} windows would hold each time, more than {}", window::MAX_HOP_WINDOWS),
            hint: "A hopping window is a row per slide inside its width: widen the slide, or use cep.window_aggregate for a range.".into(),
        })
        .or_report();
    let rows: CepResult<Vec<_>> = starts.into_iter().map(|start| Ok((tstz(start)?, tstz(start.saturating_add(w))?))).collect();
    TableIterator::new(rows.or_report())
}

/// Aggregates of `value_column` per window of `width` sliding by `slide` (tumbling when equal),
/// for every window that overlaps `[start, finish)`, with no gaps: an empty window has count 0 and
/// sum 0. With `key_column`, `distinct_keys` counts its values per window; with `per_key`, there is
/// one row per key and window. `growth_rate` is the seed's: the percent change of `sum` against the
/// previous window (of the same key).
///
/// ```sql
/// SELECT * FROM cep.window_aggregate('transactions', 'created_at', 'amount', '1 minute',
///                                    start => now() - interval '1 hour', key_column => 'user_id');
/// ```
#[pg_extern(stable)]
#[allow(clippy::too_many_arguments)]
fn window_aggregate(
    relation: Option<TableArg>,
    time_column: Option<&str>,
    value_column: Option<&str>,
    width: Option<Interval>,
    slide: default!(Option<Interval>, "NULL"),
    start: default!(Option<TimestampWithTimeZone>, "now() - interval '1 hour'"),
    finish: default!(Option<TimestampWithTimeZone>, "now()"),
    key_column: default!(Option<&str>, "NULL"),
    per_key: default!(Option<bool>, "false"),
) -> TableIterator<
    'static,
    (
        name!(window_start, TimestampWithTimeZone),
        name!(window_end, TimestampWithTimeZone),
        name!(key, Option<String>),
        name!(count, i64),
        name!(sum, f64),
        name!(avg, Option<f64>),
        name!(min, Option<f64>),
        name!(max, Option<f64>),
        name!(distinct_keys, Option<i64>),
        name!(growth_rate, Option<f64>),
    ),
> {
    let relation = required("relation", relation).open("relation").or_report();
    let time_column = required("time_column", time_column);
    let value_column = required("value_column", value_column);
    let width = required("width", width);
    let start = required("start", start);
    let finish = required("finish", finish);
    let per_key = required("per_key", per_key);
    let relid = relation.oid();
    drop(relation);
    let w = fixed_width_of("width", &width).or_report();
    let s = match &slide {
        Some(sl) => fixed_width_of("slide", sl).or_report(),
        None => w,
    };
    let rows = aggregate(relid, time_column, value_column, w, s, start.into(), finish.into(), key_column, per_key).or_report();
    TableIterator::new(rows)
}

type WindowRow =
    (TimestampWithTimeZone, TimestampWithTimeZone, Option<String>, i64, f64, Option<f64>, Option<f64>, Option<f64>, Option<i64>, Option<f64>);

#[allow(clippy::too_many_arguments)]
fn aggregate(
    relid: pg_sys::Oid,
    time_column: &str,
    value_column: &str,
    width: i64,
    slide: i64,
    start: i64,
    finish: i64,
    key_column: Option<&str>,
    per_key: bool,
) -> CepResult<Vec<WindowRow>> {
    if per_key && key_column.is_none() {
        return Err(CepError::InvalidArgument("per_key needs a key_column".into()));
    }
    let table = crate::pg::table_arg::relation_name(relid)?;
    let columns = crate::pg::columns::TableColumns::read_for_queries(relid, &table)?;
    columns.check("time_column", time_column, crate::pg::columns::TIME_TYPES)?;
    columns.check("value_column", value_column, crate::pg::columns::AMOUNT_TYPES)?;
    if let Some(k) = key_column {
        if columns.type_of(k).is_none() {
            return Err(CepError::UndefinedColumn(format!("key_column {k:?} is not a column of \"{table}\"")));
        }
    }
    let starts = window::window_starts(start, finish, width, slide, DEFAULT_ORIGIN_PG, MAX_WINDOWS)
        .ok_or_else(|| CepError::InvalidArgument(format!("more than {MAX_WINDOWS} windows: widen the slide or narrow the range")))?;
    if starts.is_empty() {
        return Ok(Vec::new());
    }
    let q = pgrx::spi::quote_identifier;
    let (t, v) = (q(time_column), q(value_column));
    let key = key_column.map(q);
    let key_text = key.as_ref().map(|k| format!("{k}::text")).unwrap_or_else(|| "NULL::text".into());
    let (keys_join, key_filter, key_out) = if per_key {
        (
            format!("CROSS JOIN (SELECT DISTINCT {key_text} AS k FROM {table} WHERE {t} >= $3 AND {t} < $4 AND {key_text} IS NOT NULL) keys"),
            format!("AND {key_text} = keys.k"),
            "keys.k",
        )
    } else {
        (String::new(), String::new(), "NULL::text")
    };
    let distinct = if key.is_some() { "count(DISTINCT r.k)" } else { "NULL::int8" };
    let sql = format!(
        "SELECT w.ws, {key_out}, count(r.one), coalesce(sum(r.v), 0), avg(r.v), min(r.v), max(r.v), {distinct} \
         FROM unnest($1::timestamptz[]) w(ws) {keys_join} \
         LEFT JOIN LATERAL (SELECT 1 AS one, {v}::float8 AS v, {key_text} AS k FROM {table} \
                            WHERE {t} >= w.ws AND {t} < w.ws + $2 {key_filter}) r ON true \
         GROUP BY 1, 2 ORDER BY 2, 1"
    );
    let bounds: Vec<TimestampWithTimeZone> = starts.iter().map(|s| tstz(*s)).collect::<CepResult<_>>()?;
    let range_start = tstz(starts[0])?;
    let range_end = tstz(starts[starts.len() - 1] + width)?;
    let width_interval = Interval::from_micros(width);
    let mut out: Vec<WindowRow> = Vec::new();
    Spi::connect(|client| -> CepResult<()> {
        let rows = client.select(sql.as_str(), None, &[bounds.into(), width_interval.into(), range_start.into(), range_end.into()])?;
        let mut previous: Option<(Option<String>, f64)> = None;
        for r in rows {
            let ws: TimestampWithTimeZone = r.get(1)?.ok_or_else(|| CepError::InvalidArgument("window without start".into()))?;
            let key: Option<String> = r.get(2)?;
            let sum: f64 = r.get(4)?.unwrap_or(0.0);
            let prev_sum = previous.as_ref().filter(|(k, _)| *k == key).map(|(_, s)| *s);
            let growth = window::growth_rate(prev_sum, sum);
            previous = Some((key.clone(), sum));
            let we = tstz(pg_sys::TimestampTz::from(ws) + width)?;
            out.push((ws, we, key, r.get(3)?.unwrap_or(0), sum, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, growth));
        }
        Ok(())
    })?;
    Ok(out)
}
