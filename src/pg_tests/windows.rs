//! Windows: `tumble`, `hop` and `window_aggregate` against plain SQL.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    /// Random timestamps over six years, in a table, for the window property tests.
    fn random_times() {
        run("SELECT setseed(0.42)");
        run("CREATE TEMP TABLE times AS SELECT timestamptz '1998-06-01 00:00+00' + random() * interval '2200 days' AS ts FROM generate_series(1, 2000)");
    }

    #[pg_test]
    fn tumble_matches_date_bin_and_date_trunc_in_any_session_zone() {
        random_times();
        for zone in ["UTC", "America/New_York", "Asia/Kolkata"] {
            run(&format!("SET TimeZone = '{zone}'"));
            for width in ["1 second", "1 minute", "7 minutes", "1 hour", "90 minutes", "1 day", "7 days"] {
                let sql = format!(
                    "SELECT count(*) FROM times WHERE cep.tumble(ts, '{width}') <> date_bin('{width}', ts, timestamptz '2000-01-03 00:00+00')"
                );
                assert_eq!(one::<i64>(&sql), Some(0), "{width} in {zone}");
                let sql = format!("SELECT count(*) FROM times WHERE cep.tumble(ts::timestamp, '{width}') <> date_bin('{width}', ts::timestamp, timestamp '2000-01-03')");
                assert_eq!(one::<i64>(&sql), Some(0), "timestamp {width} in {zone}");
            }
            let sql = "SELECT count(*) FROM times WHERE cep.tumble(ts, '1 month') <> date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";
            assert_eq!(one::<i64>(sql), Some(0), "months in {zone}");
            let sql = "SELECT count(*) FROM times WHERE cep.tumble(ts, '1 year') <> date_trunc('year', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";
            assert_eq!(one::<i64>(sql), Some(0), "years in {zone}");
        }
        assert!(outcome("SELECT cep.tumble(now(), '1 month 1 day')").starts_with("22023: width: a width cannot mix months"));
        assert!(outcome("SELECT cep.tumble(now(), '-5 minutes')").starts_with("22023: width: a width must be positive"));
        // A bucket before the earliest timestamp is refused, not wrapped around.
        assert_eq!(
            outcome("SELECT cep.tumble('4714-11-24 00:00+00 BC'::timestamptz, '1 week', '2000-01-04 00:00+00')"),
            "22023: the bucket is out of range"
        );
        assert_eq!(outcome("SELECT cep.tumble('4714-11-24 00:00 BC'::timestamp, '1 week', '2000-01-04 00:00')"), "22023: the bucket is out of range");
    }

    #[pg_test]
    fn hop_returns_every_window_that_holds_the_time() {
        random_times();
        let bad = "SELECT count(*) FROM times, cep.hop(ts, '10 minutes', '3 minutes') h WHERE NOT (h.window_start <= ts AND ts < h.window_end)";
        assert_eq!(one::<i64>(bad), Some(0));
        // 10 minutes sliding by 3: every time lies in 3 or 4 windows, 3.33 on average.
        let counts = "SELECT min(n) || '-' || max(n) FROM (SELECT count(*) n FROM times, cep.hop(ts, '10 minutes', '3 minutes') GROUP BY ts) c";
        assert_eq!(one::<String>(counts).unwrap(), "3-4");
        assert!(outcome("SELECT * FROM cep.hop(now(), '1 month', '1 day')").starts_with("22023: width: months are not supported"));
    }

    #[pg_test]
    fn window_aggregate_matches_plain_sql_with_no_gaps() {
        run("SET TimeZone = 'Asia/Shanghai'");
        run("SELECT setseed(0.7)");
        // Rows around midnight UTC at a month's end, with a silent stretch in the middle.
        run("CREATE TABLE w_tx (user_id int, amount numeric, created_at timestamptz)");
        run("INSERT INTO w_tx SELECT (random() * 5)::int, round((random() * 100)::numeric, 2), \
             timestamptz '2026-01-31 23:40+00' + random() * interval '40 minutes' \
             FROM generate_series(1, 3000) WHERE random() > 0.1");
        run("DELETE FROM w_tx WHERE created_at >= '2026-01-31 23:55+00' AND created_at < '2026-01-31 23:58+00'");
        let expected = "WITH w AS (SELECT ws FROM generate_series(timestamptz '2026-01-31 23:40+00', timestamptz '2026-02-01 00:19+00', interval '1 minute') ws), \
            g AS (SELECT w.ws, count(t.amount) n, coalesce(sum(t.amount), 0)::float8 s, count(DISTINCT t.user_id) d \
                  FROM w LEFT JOIN w_tx t ON date_bin('1 minute', t.created_at, timestamptz '2000-01-03 00:00+00') = w.ws GROUP BY w.ws), \
            h AS (SELECT *, (s - lag(s) OVER (ORDER BY ws)) / nullif(lag(s) OVER (ORDER BY ws), 0) * 100 AS growth FROM g) \
            SELECT string_agg(format('%s/%s/%s/%s/%s', ws, n, round(s::numeric, 2), d, \
                   coalesce(round(growth::numeric, 6)::text, '-')), ',' ORDER BY ws) FROM h";
        let actual = "SELECT string_agg(format('%s/%s/%s/%s/%s', window_start, count, round(sum::numeric, 2), distinct_keys, \
                      coalesce(round(growth_rate::numeric, 6)::text, '-')), ',' ORDER BY window_start) \
                      FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 minute', \
                           start => '2026-01-31 23:40+00', finish => '2026-02-01 00:20+00', key_column => 'user_id')";
        // Growth rates are compared on rounded values: lag() in SQL sums numeric, pg_cep float8.
        let (e, a) = (one::<String>(expected).unwrap(), one::<String>(actual).unwrap());
        assert_eq!(a.matches(',').count(), 39, "40 windows, none missing");
        assert!(a.contains("/0/0.00/0/"), "the silent minutes appear with zero counts");
        assert_eq!(a, e);
        // Per key: every key gets every window, and the counts add up to the rows.
        let per_key = "SELECT count(*) || '/' || sum(count) FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 minute', \
                       start => '2026-01-31 23:40+00', finish => '2026-02-01 00:20+00', key_column => 'user_id', per_key => true)";
        let keys = one::<i64>("SELECT count(DISTINCT user_id) FROM w_tx").unwrap();
        assert_eq!(one::<String>(per_key).unwrap(), format!("{}/{}", keys * 40, one::<i64>("SELECT count(*) FROM w_tx").unwrap()));
        // Hopping windows of 10 minutes every 5 count each row twice: windows from 23:35 to 00:15
        // cover the whole range, and the data lies inside it.
        let hopping = "SELECT sum(count)::int8 FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '10 minutes', '5 minutes', \
                       start => '2026-01-31 23:40+00', finish => '2026-02-01 00:20+00')";
        assert_eq!(one::<i64>(hopping), Some(2 * one::<i64>("SELECT count(*) FROM w_tx").unwrap()));
        // An empty range returns nothing; bad input is refused.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 minute', start => now(), finish => now() - interval '1 hour')"), Some(0));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'ts', 'amount', '1 minute')").starts_with("42703"));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 second', start => now() - interval '2 days')")
            .starts_with("22023: more than 100000 windows"));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 minute', per_key => true)")
            .starts_with("22023: per_key needs"));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 minute', key_column => 'nobody')")
            .starts_with("42703: key_column \"nobody\" is not a column"));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'created_at', 'created_at', '1 minute')").starts_with("42804: value_column"));
        assert!(outcome("SELECT * FROM cep.window_aggregate('w_tx', 'created_at', 'amount', '1 hour', '1 month')")
            .starts_with("22023: slide: months are not supported here"));
    }
    /// The offset behind the night rule is kept between rows: in any order of rows, across
    /// daylight saving changes (Lord Howe's is half an hour) and after `SET TimeZone`, it must be
    /// what SQL says.
    #[pg_test]
    fn session_utc_offset_is_sqls_in_any_order_across_transitions_and_zone_changes() {
        run("CREATE TEMP TABLE tz_times AS SELECT ts, row_number() OVER () AS n FROM generate_series(timestamptz '2024-03-09 00:00+00', '2024-04-08 00:00+00', '7 minutes') ts \
             UNION ALL SELECT ts, 0 FROM generate_series(timestamptz '2024-10-05 00:00+00', '2024-11-04 00:00+00', '7 minutes') ts");
        let mut checked = 0;
        for zone in ["America/New_York", "Australia/Lord_Howe", "UTC", "Europe/London", "Asia/Kolkata", "America/New_York"] {
            run(&format!("SET TimeZone = '{zone}'"));
            for order in ["ts", "ts DESC", "md5(ts::text)"] {
                let rows: Vec<(i64, i32)> = Spi::connect(|client| {
                    let sql = format!("SELECT ts, extract(timezone FROM ts)::int FROM tz_times ORDER BY {order}");
                    client
                        .select(&sql, None, &[])
                        .unwrap()
                        .map(|r| (i64::from(r.get::<pgrx::datum::TimestampWithTimeZone>(1).unwrap().unwrap()), r.get::<i32>(2).unwrap().unwrap()))
                        .collect()
                });
                for (ts, sql_offset) in rows {
                    assert_eq!(crate::pg::time::session_utc_offset_secs(ts), sql_offset, "{zone}, rows by {order}, at {ts}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000, "{checked} rows checked");
    }
}
