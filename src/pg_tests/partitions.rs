//! Monthly partitions: `create_monthly_partition`, `manage_partitions`, `alter_partitions`,
//! retention and draining the DEFAULT partition.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    fn partition_names(parent: &str) -> Vec<String> {
        let mut v = Vec::new();
        Spi::connect(|c| {
            for row in c.select(&format!("SELECT partition::text FROM cep.partitions('{parent}')"), None, &[]).unwrap() {
                v.push(row.get::<String>(1).unwrap().unwrap());
            }
        });
        v
    }

    #[pg_test]
    fn create_monthly_partition_names_bounds_and_is_idempotent() {
        partitioned_setup("\"Tx Mixed\"");
        run("CREATE SCHEMA \"Sales Data\"");
        run("ALTER TABLE \"Tx Mixed\" SET SCHEMA \"Sales Data\"");
        let first = one::<String>("SELECT cep.create_monthly_partition('\"Sales Data\".\"Tx Mixed\"', '2026-02-17')::text").unwrap();
        assert_eq!(first, "\"Sales Data\".\"Tx Mixed_2026_02\"");
        let again = one::<String>("SELECT cep.create_monthly_partition('\"Sales Data\".\"Tx Mixed\"', '2026-02-01')::text").unwrap();
        assert_eq!(again, first);
        assert_eq!(
            one::<String>("SELECT range_from || ' .. ' || range_to FROM cep.partitions('\"Sales Data\".\"Tx Mixed\"')").unwrap(),
            "2026-02-01 00:00:00+00 .. 2026-03-01 00:00:00+00"
        );
        run("INSERT INTO \"Sales Data\".\"Tx Mixed\" (user_id, amount, created_at) VALUES (1, 5, '2026-02-28 23:59:59+00')");
        assert!(outcome("INSERT INTO \"Sales Data\".\"Tx Mixed\" (user_id, amount, created_at) VALUES (1, 5, '2026-03-01 00:00:00+00')")
            .starts_with("23514"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.partition_log WHERE action = 'create'"), Some(1));
    }

    #[pg_test]
    fn create_monthly_partition_refuses_bad_tables_and_changes_nothing() {
        run("SET TimeZone = 'UTC'");
        run("CREATE TABLE plain_tx (id int, created_at timestamptz)");
        assert!(
            outcome("SELECT cep.create_monthly_partition('plain_tx', '2026-01-01')").starts_with("42809: public.plain_tx is not a partitioned table")
        );
        run("CREATE TABLE list_tx (id int, kind text) PARTITION BY LIST (kind)");
        assert!(outcome("SELECT cep.create_monthly_partition('list_tx', '2026-01-01')").starts_with("42P16: public.list_tx is partitioned by list"));
        run("CREATE TABLE int_tx (id int) PARTITION BY RANGE (id)");
        assert!(outcome("SELECT cep.create_monthly_partition('int_tx', '2026-01-01')")
            .starts_with("42P16: public.int_tx is partitioned by range on a column of type integer"));
        // A quarter made by hand: a month inside it overlaps.
        partitioned_setup("q_tx");
        run("CREATE TABLE q_tx_q1 PARTITION OF q_tx FOR VALUES FROM ('2026-01-01') TO ('2026-04-01')");
        assert_eq!(
            outcome("SELECT cep.create_monthly_partition('q_tx', '2026-02-01')"),
            "42P17: the 2026-02 partition of public.q_tx would overlap partition q_tx_q1, which has other bounds"
        );
        // A table by that name already exists outside the partition tree.
        run("CREATE TABLE q_tx_2026_05 (x int)");
        assert!(outcome("SELECT cep.create_monthly_partition('q_tx', '2026-05-01')")
            .starts_with("42P07: cannot create the 2026-05 partition of public.q_tx: relation public.q_tx_2026_05 already exists"));
        // A name past 63 bytes would be truncated by Postgres into another name.
        let long = "t".repeat(56);
        partitioned_setup(&long);
        assert!(outcome(&format!("SELECT cep.create_monthly_partition('{long}', '2026-01-01')")).starts_with("42622: partition name"));
        for t in ["plain_tx", "list_tx", "int_tx", &long] {
            assert!(partition_names(t).is_empty(), "{t}");
        }
        assert_eq!(partition_names("q_tx"), ["q_tx_q1"]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.partition_log"), Some(0));
    }

    #[pg_test]
    fn default_rows_move_into_the_new_month_without_loss() {
        partitioned_setup("d_tx");
        run("CREATE TABLE d_tx_default PARTITION OF d_tx DEFAULT");
        run("INSERT INTO d_tx (user_id, amount, created_at) \
             SELECT g % 7, g, timestamptz '2026-03-01' + make_interval(hours => g) FROM generate_series(0, 2000) g");
        let before = one::<String>("SELECT count(*) || '/' || sum(amount) FROM d_tx").unwrap();
        run("SELECT cep.create_monthly_partition('d_tx', '2026-03-01')");
        assert_eq!(one::<String>("SELECT count(*) || '/' || sum(amount) FROM d_tx").unwrap(), before);
        // March's 744 hours moved; the rest (April onwards) waits in DEFAULT.
        assert_eq!(one::<i64>("SELECT count(*) FROM d_tx_2026_03"), Some(744));
        assert_eq!(one::<i64>("SELECT count(*) FROM d_tx_default WHERE created_at < '2026-04-01'"), Some(0));
        assert_eq!(one::<i64>("SELECT rows_moved FROM cep.partition_log WHERE partition = 'd_tx_2026_03'"), Some(744));
    }

    #[pg_test]
    fn manage_partitions_premakes_drains_and_retires() {
        partitioned_setup("m_tx");
        // Rows from five months ago sit in DEFAULT until maintenance gives them a month.
        run("CREATE TABLE m_tx_default PARTITION OF m_tx DEFAULT");
        run("INSERT INTO m_tx (user_id, amount, created_at) SELECT 1, g, date_trunc('month', now()) - interval '5 months' + make_interval(days => g) FROM generate_series(0, 9) g");
        let steps = one::<String>("SELECT string_agg(action, ',' ORDER BY partition) FROM cep.manage_partitions('m_tx', premake => 2)").unwrap();
        assert_eq!(steps, "create,create,create,create,create,create,create,create", "{steps}");
        assert_eq!(partition_names("m_tx").len(), 9); // 5 past + current + 2 ahead, + DEFAULT
        assert_eq!(one::<i64>("SELECT count(*) FROM m_tx_default"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM m_tx"), Some(10));
        // Nothing left to do: a second run changes nothing.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.run_maintenance('m_tx')"), Some(0));
        // Retention of two months detaches the older ones; they still exist as tables.
        run("SELECT count(*) FROM cep.manage_partitions('m_tx', premake => 2, retention => '2 months')");
        let kept = partition_names("m_tx");
        assert!(kept.len() <= 6 && kept.len() >= 5, "{kept:?}");
        assert!(one::<i64>("SELECT count(*) FROM cep.partition_log WHERE action = 'detach'").unwrap() >= 3);
        assert_eq!(one::<i64>("SELECT count(*) FROM m_tx"), Some(0));
        assert_eq!(one::<bool>("SELECT to_regclass(format('m_tx_%s', to_char(now() - interval '5 months', 'YYYY_MM'))) IS NOT NULL"), Some(true));
    }

    #[pg_test]
    fn retention_keeps_months_an_active_rule_still_reads() {
        partitioned_setup("r_tx");
        run("INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES \
             ('quarterly volume', 'threshold', '{\"metric\": \"total_amount\", \"operator\": \">\", \"value\": 1e9, \"window\": \"90 days\"}', 0.5)");
        run("SELECT cep.watch('r_tx')");
        assert_eq!(
            outcome("SELECT cep.manage_partitions('r_tx', retention => '30 days')"),
            "22023: retention: 30 days is shorter than the widest window of an active rule on public.r_tx (90 days); rows the rules still read would be removed. Pass force => true to accept"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.partition_config WHERE parent = 'r_tx'::regclass"), Some(0));
        assert!(partition_names("r_tx").is_empty());
        // Forced, retention still keeps what the 90-day window reads.
        run("SELECT cep.create_monthly_partition('r_tx', (now() - interval '6 months')::date)");
        run("SELECT cep.create_monthly_partition('r_tx', (now() - interval '2 months')::date)");
        let protected =
            one::<i64>("SELECT count(*) FROM cep.manage_partitions('r_tx', retention => '30 days', force => true) WHERE action = 'protected'")
                .unwrap();
        assert!(protected >= 1, "{protected}");
        let names = partition_names("r_tx");
        assert!(
            names.iter().any(|n| *n == one::<String>("SELECT format('r_tx_%s', to_char(now() - interval '2 months', 'YYYY_MM'))").unwrap()),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| *n == one::<String>("SELECT format('r_tx_%s', to_char(now() - interval '6 months', 'YYYY_MM'))").unwrap()),
            "{names:?}"
        );
    }

    #[pg_test]
    fn manage_partitions_refuses_bad_settings() {
        partitioned_setup("b_tx");
        assert!(outcome("SELECT cep.manage_partitions('b_tx', premake => -1)").starts_with("22023: premake: -1"));
        assert!(outcome("SELECT cep.manage_partitions('b_tx', premake => 121)").starts_with("22023: premake: 121"));
        assert!(outcome("SELECT cep.manage_partitions('b_tx', retention_mode => 'shred')").starts_with("22023: retention_mode"));
        assert!(outcome("SELECT cep.manage_partitions('b_tx', batch_size => 0)").starts_with("22023: batch_size"));
        assert!(outcome("SELECT cep.manage_partitions('b_tx', retention => '-1 day')").starts_with("22023: retention: must be a positive"));
        assert!(outcome("SELECT cep.run_maintenance('b_tx')").starts_with("55000: public.b_tx is not registered"));
        assert!(partition_names("b_tx").is_empty());
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.partition_config WHERE parent = 'b_tx'::regclass"), Some(0));
    }

    #[pg_test]
    fn a_watched_partitioned_table_is_monitored_in_new_months() {
        partitioned_setup("w_ptx");
        run(SEED_RULES);
        run("SELECT cep.watch('w_ptx')");
        run("SELECT count(*) FROM cep.manage_partitions('w_ptx', premake => 1)");
        run("INSERT INTO w_ptx (user_id, amount, created_at) VALUES (1, 50000, now() + interval '1 month')");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE relid = 'w_ptx'::regclass"), Some(1));
    }

    #[pg_test]
    fn a_failed_partition_step_is_rolled_back_and_the_transaction_goes_on() {
        run("CREATE TABLE far (id int, created_at timestamptz) PARTITION BY RANGE (created_at)");
        let got = outcome("SELECT cep.create_monthly_partition('far', '294276-12-01')");
        assert!(got.starts_with("22008: timestamp out of range"), "{got}");
        // The internal subtransaction was closed: statements, and later partition steps, work.
        assert_eq!(one::<i32>("SELECT 1"), Some(1));
        assert_eq!(one::<String>("SELECT cep.create_monthly_partition('far', '2026-12-01')::text"), Some("far_2026_12".into()));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_class WHERE relname LIKE 'far_2942%'"), Some(0));
    }

    #[pg_test]
    fn alter_partitions_changes_one_setting_and_keeps_the_others() {
        run("CREATE TABLE ledger (id bigserial, amount int, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)");
        run("SELECT count(*) FROM cep.manage_partitions('ledger', premake => 2, retention => '12 months', retention_mode => 'drop', batch_size => 500)");
        let months = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ledger'::regclass";
        let before = one::<i64>(months).unwrap();
        let set = one::<pgrx::JsonB>("SELECT cep.alter_partitions('ledger', retention => '24 months')").unwrap().0;
        assert_eq!((set["premake"].as_i64(), set["retention_mode"].as_str(), set["batch_size"].as_i64()), (Some(2), Some("drop"), Some(500)));
        assert_eq!(set["retention"], "2 years");
        // More months ahead: created at once.
        run("SELECT cep.alter_partitions('ledger', premake => 4)");
        assert_eq!(one::<i64>(months), Some(before + 2));
        assert_eq!(one::<String>("SELECT retention::text FROM cep.partition_config WHERE parent = 'ledger'::regclass"), Some("2 years".into()));
        // '0' keeps every month; bad values change nothing.
        assert!(one::<pgrx::JsonB>("SELECT cep.alter_partitions('ledger', retention => '0')").unwrap().0["retention"].is_null());
        assert!(outcome("SELECT cep.alter_partitions('ledger', retention_mode => 'shred')").starts_with("22023"));
        assert_eq!(one::<String>("SELECT retention_mode FROM cep.partition_config WHERE parent = 'ledger'::regclass"), Some("drop".into()));
        run("CREATE TABLE other (id int, created_at timestamptz) PARTITION BY RANGE (created_at)");
        assert!(outcome("SELECT cep.alter_partitions('other', premake => 1)").starts_with("55000: other is not managed"));
    }
}
