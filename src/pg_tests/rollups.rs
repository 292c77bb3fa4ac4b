//! Rollups: `realtime_stats` and the rollup functions against the rows.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn realtime_stats_from_the_rows_equal_the_seeds_query() {
        seed_setup();
        // Random rows over the last 20 minutes, in single and multi-row statements. Nothing here
        // commits, so memory has none of them: every answer comes from the rows.
        let mut seed = 11u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..40 {
            let values: Vec<String> = (0..1 + next(5))
                .map(|_| format!("({}, {}, 'L', date_trunc('minute', now()) - make_interval(secs => {}))", next(30), 1 + next(5000), next(1200)))
                .collect();
            run(&format!("INSERT INTO transactions (user_id, amount, location, created_at) VALUES {}", values.join(", ")));
        }
        for window in ["5 minutes", "15 minutes", "1 hour"] {
            let truth = one::<String>(&format!(
                "SELECT count(*) || '/' || sum(amount)::float8 || '/' || count(DISTINCT user_id) || '/' || min(amount)::float8 || '/' || max(amount)::float8 \
                 FROM transactions WHERE created_at >= date_trunc('minute', now() - interval '{window}')"
            ));
            let stats = one::<String>(&format!(
                "SELECT total_transactions || '/' || total_volume || '/' || active_users || '/' || min_amount || '/' || max_amount \
                 FROM cep.realtime_stats('transactions', '{window}')"
            ));
            assert_eq!(stats, truth, "{window}");
            let top_truth = one::<String>(&format!(
                "SELECT string_agg(user_id || ':' || total, ',' ORDER BY total DESC, user_id::text) FROM ( \
                   SELECT user_id, sum(amount)::float8 AS total FROM transactions \
                   WHERE created_at >= date_trunc('minute', now() - interval '{window}') GROUP BY user_id ORDER BY total DESC, user_id::text LIMIT 3) t"
            ));
            let top = one::<String>(&format!(
                "SELECT string_agg((u ->> 'key') || ':' || (u ->> 'total'), ',' ORDER BY (u ->> 'total')::float8 DESC, u ->> 'key') \
                 FROM cep.realtime_stats('transactions', '{window}', 3), jsonb_array_elements(top_users) u"
            ));
            assert_eq!(top, top_truth, "{window}");
            assert_eq!(one::<String>(&format!("SELECT source FROM cep.realtime_stats('transactions', '{window}')")), Some("rows".into()));
        }
        // The monitoring view puts it together.
        assert_eq!(one::<bool>("SELECT rows_last_hour = (SELECT count(*) FROM transactions) FROM cep.streaming_performance"), Some(true));
        assert_eq!(
            one::<bool>("SELECT active_keys_last_5_minutes = (SELECT count(DISTINCT user_id) FROM transactions WHERE created_at >= date_trunc('minute', now() - interval '5 minutes')) FROM cep.streaming_performance"),
            Some(true)
        );
    }

    #[pg_test]
    fn rollup_functions_refuse_what_they_cannot_answer() {
        partitioned_setup("rr_tx");
        run("SELECT cep.watch('rr_tx')");
        run("SELECT count(*) FROM cep.manage_partitions('rr_tx', premake => 0)");
        run("INSERT INTO rr_tx (user_id, amount, created_at) VALUES (1, 5, now()), (2, 7, now())");
        assert_eq!(outcome("SELECT * FROM cep.realtime_stats('cep.alerts')"), "55000: cep.alerts is not watched");
        assert!(outcome("SELECT cep.rollup_rebuild('cep.alerts')").starts_with("55000: cep.alerts is not watched"));
        assert!(outcome("SELECT cep.window_cache_warm('cep.alerts')").starts_with("55000: cep.alerts is not watched"));
        assert_eq!(outcome("SELECT * FROM cep.realtime_stats('rr_tx', '5 minutes', -1)"), "22023: top must be 0 or more, not -1");
        // Turned off, the stats come from the rows; cep.watch_rollups says what it was.
        assert_eq!(one::<bool>("SELECT cep.watch_rollups('rr_tx', false)"), Some(true));
        assert_eq!(one::<String>("SELECT source || total_transactions FROM cep.realtime_stats('rr_tx')"), Some("rows2".into()));
        assert_eq!(outcome("SELECT cep.rollup_rebuild('rr_tx')"), "55000: the monitor keeps no rollups for public.rr_tx");
        assert!(outcome("SELECT cep.watch_rollups('cep.alerts', true)").starts_with("55000: alerts is not watched"));
        assert_eq!(one::<bool>("SELECT cep.watch_rollups('rr_tx', true)"), Some(false));
        // A direct call with arrays that do not line up is refused, not read past their end.
        assert!(outcome("SELECT cep.rollup_load('rr_tx'::regclass, now(), now(), ARRAY[now()], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')")
            .starts_with("22023: cep.rollup_load: the per-minute arrays"));
        assert_eq!(one::<i64>("SELECT cep.rollup_rebuild('rr_tx')"), Some(1));
    }
}
