//! `#[pg_test]`s: run inside a real Postgres by `cargo pgrx test`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs `stmt` in a subtransaction: "ok", or "SQLSTATE: message".
    fn outcome(stmt: &str) -> String {
        run("CREATE OR REPLACE FUNCTION pg_temp.outcome(stmt text) RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE stmt; RETURN 'ok'; \
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$");
        Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[stmt.into()]).unwrap().unwrap()
    }

    const SEED_RULES: &str = r#"
        INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
        ('高频交易检测', 'threshold',
         '{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}', 0.8),
        ('大额交易检测', 'threshold',
         '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
        ('异常时间交易', 'pattern',
         '{"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}', 0.4),
        ('异地登录检测', 'pattern',
         '{"pattern": "location_change", "time_window": "5_minutes"}', 0.7)"#;

    /// A transactions table like the seed's, watched, with the seed's rules, in a UTC session.
    fn seed_setup() {
        run("SET TimeZone = 'UTC'");
        // Each test rolls back, but sequences do not: number the seed's rules 1 to 4 every time.
        run("ALTER SEQUENCE cep.risk_rules_rule_id_seq RESTART");
        run("CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id integer NOT NULL, \
             amount numeric(12,2) NOT NULL, location text, created_at timestamptz NOT NULL DEFAULT now(), note text)");
        run(SEED_RULES);
        run("SELECT cep.watch('transactions')");
    }

    /// `n` rows for `user_id`, one a minute, ending at `last` (inclusive), in `location`.
    fn add_rows(user_id: i32, n: i32, last: &str, location: &str) {
        run(&format!(
            "INSERT INTO transactions (user_id, amount, location, created_at) \
             SELECT {user_id}, 100, '{location}', timestamptz '{last}' - make_interval(mins => g) \
             FROM generate_series(0, {n} - 1) g"
        ));
    }

    fn triggered(sql: &str) -> Vec<i32> {
        let mut v = Vec::new();
        Spi::connect(|c| {
            for row in c.select(sql, None, &[]).unwrap() {
                if row.get::<bool>(3).unwrap().unwrap() {
                    v.push(row.get::<i32>(1).unwrap().unwrap());
                }
            }
        });
        v
    }

    #[pg_test]
    fn seed_rules_are_accepted_verbatim() {
        seed_setup();
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_rules WHERE is_active AND version = 1"), Some(4));
        assert_eq!(one::<String>("SELECT rule_name::text FROM cep.risk_rules WHERE rule_id = 1").unwrap(), "高频交易检测");
    }

    #[pg_test]
    fn evaluate_risk_rules_matches_hand_checked_rows() {
        seed_setup();
        // User 1: 11 rows in the hour before 23:30, all in Shanghai. User 2: 10 rows, one in Beijing.
        add_rows(1, 11, "2026-01-15 23:30:00+00", "Shanghai");
        add_rows(2, 9, "2026-01-15 12:00:00+00", "Shanghai");
        add_rows(2, 1, "2026-01-15 11:57:00+00", "Beijing");
        let rows = |sql: &str| -> Vec<(i32, f64, bool)> {
            Spi::connect(|c| {
                c.select(sql, None, &[])
                    .unwrap()
                    .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap()))
                    .collect()
            })
        };
        assert_eq!(
            rows("SELECT * FROM cep.evaluate_risk_rules(1, 15000, 'Shanghai', '2026-01-15 23:30:00+00')"),
            vec![(1, 0.8, true), (2, 0.6, true), (3, 0.4, true), (4, 0.7, false)]
        );
        assert_eq!(
            rows("SELECT * FROM cep.evaluate_risk_rules(2, 500, 'Shanghai', '2026-01-15 12:00:00+00')"),
            vec![(1, 0.8, false), (2, 0.6, false), (3, 0.4, false), (4, 0.7, true)]
        );
        // A key with no history, at 06:00 (the range's end is exclusive).
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(3, 10000, 'X', '2026-01-15 06:00:00+00')"), Vec::<i32>::new());
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(3, 10000.01, 'X', '2026-01-15 05:59:59+00')"), vec![2, 3]);
        // Rows after the transaction's time are not its history.
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'Shanghai', '2026-01-15 23:25:00+00')"), vec![3]);
    }

    #[pg_test]
    fn window_edge_is_inclusive() {
        seed_setup();
        run("UPDATE cep.risk_rules SET is_active = false WHERE rule_id <> 1");
        // 11 rows: one exactly an hour before 12:00, ten within the hour.
        add_rows(7, 11, "2026-01-15 12:00:00+00", "A");
        run("UPDATE transactions SET created_at = '2026-01-15 11:00:00+00' WHERE created_at = '2026-01-15 11:50:00+00'");
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(7, 1, 'A', '2026-01-15 12:00:00+00')"), vec![1]);
        // A microsecond later the oldest row has left the window.
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(7, 1, 'A', '2026-01-15 12:00:00.000001+00')"), Vec::<i32>::new());
    }

    #[pg_test]
    fn session_and_rule_time_zones() {
        seed_setup();
        run("SET TimeZone = 'Asia/Shanghai'");
        // 15:00 UTC is 23:00 in Shanghai: night for the session.
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', '2026-01-15 15:00:00+00')"), vec![3]);
        run("SET TimeZone = 'UTC'");
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', '2026-01-15 15:00:00+00')"), Vec::<i32>::new());
        run(r#"UPDATE cep.risk_rules SET rule_condition = rule_condition || '{"timezone": "Asia/Shanghai"}' WHERE rule_id = 3"#);
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', '2026-01-15 15:00:00+00')"), vec![3]);
    }

    #[pg_test]
    fn a_rule_changed_mid_session_is_picked_up() {
        seed_setup();
        add_rows(1, 5, "2026-01-15 12:00:00+00", "A");
        let q = "SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', '2026-01-15 12:00:00+00')";
        assert_eq!(triggered(q), Vec::<i32>::new());
        run(r#"UPDATE cep.risk_rules SET rule_condition = jsonb_set(rule_condition, '{value}', '4') WHERE rule_id = 1"#);
        assert_eq!(triggered(q), vec![1]);
        assert_eq!(one::<i32>("SELECT version FROM cep.risk_rules WHERE rule_id = 1"), Some(2));
        run("UPDATE cep.risk_rules SET is_active = false WHERE rule_id = 1");
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM ({}) r", q.replace("SELECT *", "SELECT rule_id"))), Some(3));
        run(r#"INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
               VALUES ('busy 2h', 'threshold', '{"metric": "total_amount", "operator": ">=", "value": 500, "window": "2 hours"}', 0.5)"#);
        assert_eq!(triggered(q), vec![5]);
    }

    #[pg_test]
    fn bad_rules_are_refused_and_nothing_is_written() {
        seed_setup();
        let insert = |cond: &str, score: &str| {
            outcome(&format!(
                "INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('bad', 'threshold', '{cond}', {score})"
            ))
        };
        assert_eq!(
            insert(r#"{"metric": "total_amount", "value": 1, "window": "1_hourz"}"#, "0.5"),
            r#"22007: invalid rule: rule_condition.window: "1_hourz" is not an interval: it has the unknown unit "hourz" (use "1_hour" or '90 minutes')"#
        );
        assert!(insert(r#"{"metric": "velocity", "value": 1}"#, "0.5")
            .starts_with("22023: invalid rule: rule_condition.metric: \"velocity\" is not a metric"));
        assert!(insert(r#"{"metric": "amount", "operator": "=>", "value": 1}"#, "0.5").starts_with("22023: invalid rule: rule_condition.operator"));
        assert!(insert(r#"{"metric": "amount", "value": "lots"}"#, "0.5").starts_with("22P02: invalid rule: rule_condition.value"));
        assert!(insert(r#"{"metric": "amount", "value": 1}"#, "1.5").starts_with("22003: invalid rule: risk_score: 1.5 is outside [0, 1]"));
        assert!(outcome(r#"INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('bad', 'pattern', '{"pattern": "night_transaction", "time_range": ["22:00", "6pm"]}', 0.5)"#)
            .starts_with("22008: invalid rule: rule_condition.time_range[1]"));
        assert!(outcome(r#"INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('bad', 'heuristic', '{}', 0.5)"#)
            .starts_with("22023: invalid rule: rule_type: \"heuristic\" is not a rule type"));
        // An update that breaks a rule is refused too, and the rule stays as it was.
        assert!(outcome(r#"UPDATE cep.risk_rules SET rule_condition = '{"metric": "amount", "value": "x"}' WHERE rule_id = 2"#).starts_with("22P02"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_rules"), Some(4));
        assert_eq!(one::<i32>("SELECT version FROM cep.risk_rules WHERE rule_id = 2"), Some(1));
        assert_eq!(one::<String>("SELECT rule_condition->>'value' FROM cep.risk_rules WHERE rule_id = 2").unwrap(), "10000");
    }

    #[pg_test]
    fn validate_rule_gives_the_same_verdict() {
        let bad = r#"{"rule_type": "threshold", "risk_score": 0.5, "rule_condition": {"metric": "total_amount", "value": 1, "window": "1_hourz"}}"#;
        assert!(outcome(&format!("SELECT cep.validate_rule('{bad}')")).starts_with("22007: invalid rule: rule_condition.window"));
        let good = r#"{"rule_type": "pattern", "risk_score": 0.7, "rule_condition": {"pattern": "location_change", "time_window": "5_minutes"}}"#;
        assert_eq!(
            one::<pgrx::JsonB>(&format!("SELECT cep.validate_rule('{good}')")).unwrap().0,
            serde_json::json!({"pattern": "location_change", "time_window": "00:05:00"})
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_rules"), Some(0));
    }

    #[pg_test]
    fn assess_transaction_sums_levels_and_explains() {
        seed_setup();
        add_rows(1, 11, "2026-01-15 23:30:00+00", "Shanghai");
        let (score, level, rules, details) = Spi::connect(|c| {
            let r = c.select("SELECT * FROM cep.assess_transaction(1, 15000, 'Shanghai', '2026-01-15 23:30:00+00')", None, &[]).unwrap().first();
            (
                r.get::<f64>(1).unwrap().unwrap(),
                r.get::<String>(2).unwrap().unwrap(),
                r.get::<Vec<i32>>(3).unwrap().unwrap(),
                r.get::<pgrx::JsonB>(4).unwrap().unwrap().0,
            )
        });
        assert!((score - 1.8).abs() < 1e-9, "{score}");
        assert_eq!(level, "high");
        assert_eq!(rules, vec![1, 2, 3]);
        assert_eq!(details[0]["evidence"]["observed"], serde_json::json!(11.0));
        assert_eq!(details[1]["evidence"]["observed"], serde_json::json!(15000.0));
        assert_eq!(details[2]["evidence"]["local_time"], serde_json::json!("23:30:00"));
        run("SET cep.high_risk_threshold = 2");
        assert_eq!(one::<String>("SELECT risk_level FROM cep.assess_transaction(1, 15000, 'Shanghai', '2026-01-15 23:30:00+00')").unwrap(), "medium");
        assert_eq!(one::<String>("SELECT risk_level FROM cep.assess_transaction(9, 1, 'Shanghai', '2026-01-15 12:00:00+00')").unwrap(), "low");
    }

    #[pg_test]
    fn anomaly_rule_reads_the_keys_history() {
        seed_setup();
        run("UPDATE cep.risk_rules SET is_active = false");
        run(r#"INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
               VALUES ('spike', 'anomaly', '{"method": "zscore", "threshold": 3, "window": "1 day", "min_samples": 5}', 0.9)"#);
        run("INSERT INTO transactions (user_id, amount, location, created_at) \
             SELECT 4, 100 + (g % 3) * 10, 'A', timestamptz '2026-01-15 12:00+00' - make_interval(hours => g) FROM generate_series(1, 10) g");
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(4, 1000, 'A', '2026-01-15 12:00+00')"), vec![5]);
        assert_eq!(triggered("SELECT * FROM cep.evaluate_risk_rules(4, 115, 'A', '2026-01-15 12:00+00')"), Vec::<i32>::new());
    }

    #[pg_test]
    fn watch_checks_columns_and_several_tables_need_a_name() {
        seed_setup();
        assert!(outcome("SELECT cep.watch('transactions', key_column => 'customer')").starts_with("42703: key_column \"customer\" is not a column"));
        assert!(outcome("SELECT cep.watch('transactions', amount_column => 'note')").starts_with("42804: amount_column \"note\" has type text"));
        assert!(outcome("SELECT cep.watch('transactions', time_column => 'amount')").starts_with("42804"));
        assert_eq!(one::<String>("SELECT key_column::text FROM cep.watches").unwrap(), "user_id");
        // A second table with uuid keys and a mixed-case, quoted name.
        run(r#"CREATE TABLE "Payments" ("Client" uuid, amt float8, ts timestamp)"#);
        run(r#"SELECT cep.watch('"Payments"', key_column => 'Client', amount_column => 'amt', time_column => 'ts')"#);
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_indexes WHERE tablename = 'Payments'"), Some(1));
        assert!(outcome("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', now())").starts_with("42P08: more than one table is watched"));
        run(
            r#"INSERT INTO "Payments" SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1, timestamp '2026-01-15 12:00' - make_interval(mins => g) FROM generate_series(0, 11) g"#,
        );
        assert_eq!(
            triggered(
                r#"SELECT * FROM cep.evaluate_risk_rules('"Payments"', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1, NULL, '2026-01-15 12:00+00')"#
            ),
            vec![1]
        );
        assert!(outcome(r#"SELECT * FROM cep.evaluate_risk_rules('"Payments"', 'not-a-uuid', 1, NULL, now())"#).starts_with("22P02"));
        assert_eq!(one::<bool>(r#"SELECT cep.unwatch('"Payments"')"#), Some(true));
        assert_eq!(one::<bool>(r#"SELECT cep.unwatch('"Payments"')"#), Some(false));
        assert!(outcome(r#"SELECT * FROM cep.evaluate_risk_rules('"Payments"', 'x', 1, NULL, now())"#).starts_with("55000"));
    }

    #[pg_test]
    fn monitor_writes_explainable_alerts_once_per_table() {
        seed_setup();
        // One multi-row INSERT of 11 rows a minute apart: only the last sees 11 in its hour.
        add_rows(1, 11, "2026-01-15 12:00:00+00", "A");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(1));
        assert_eq!(
            one::<String>("SELECT format('%s|%s|%s|%s|%s', table_name, key, level, action, event_time) FROM cep.alerts").unwrap(),
            "public.transactions|1|high|alert|2026-01-15 12:00:00+00"
        );
        let rules = one::<pgrx::JsonB>("SELECT rules FROM cep.alerts").unwrap().0;
        assert_eq!(rules[0]["rule_id"], 1);
        assert_eq!(rules[0]["version"], 1);
        assert_eq!(rules[0]["evidence"]["observed"], 11.0);
        assert_eq!(
            one::<String>("SELECT row_pk FROM cep.alerts").unwrap(),
            one::<String>("SELECT id::text FROM transactions WHERE created_at = '2026-01-15 12:00+00'").unwrap()
        );
        // A large amount alone is medium (0.6): alerted. A small one is not.
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (2, 20000, 'A', '2026-01-15 12:00+00'), (3, 5, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT string_agg(key || ':' || level, ',' ORDER BY alert_id) FROM cep.alerts").unwrap(), "1:high,2:medium");
        // Watching again replaces the trigger; it never adds a second one.
        run("SELECT cep.watch('transactions', alert_level => 'high')");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'transactions'::regclass AND NOT tgisinternal"
            )
            .unwrap(),
            "cep_monitor,cep_monitor_changes"
        );
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (4, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(2), "medium is below the table's alert level now");
        assert_eq!(one::<bool>("SELECT cep.unwatch('transactions')"), Some(true));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'transactions'::regclass AND NOT tgisinternal"), Some(0));
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (5, 90000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(2));
        // This transaction has not committed: a cursor holds its alerts back (the e2e suite reads
        // them from another session once they are committed).
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts_since(0)"), Some(0));
        assert!(outcome("SELECT cep.watch('transactions', alert_level => 'severe')").starts_with("22023: alert_level"));
    }

    #[pg_test]
    fn monitor_covers_partitions_created_later() {
        seed_setup();
        run("CREATE TABLE tx_p (id bigint, user_id int, amount numeric, created_at timestamptz) PARTITION BY RANGE (created_at)");
        run("SELECT cep.watch('tx_p')");
        run("CREATE TABLE tx_p_2026_01 PARTITION OF tx_p FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')");
        run("INSERT INTO tx_p VALUES (1, 9, 50000, '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT table_name || ':' || key FROM cep.alerts").unwrap(), "public.tx_p:9");
    }

    #[pg_test]
    fn watch_refuses_bad_targets_and_registers_nothing() {
        seed_setup();
        run("SELECT cep.unwatch('transactions')");
        run("CREATE VIEW tx_view AS SELECT * FROM transactions");
        assert!(outcome("SELECT cep.watch('tx_view')").starts_with("22023: \"tx_view\" is not a table"));
        assert!(outcome("SELECT cep.watch('transactions', channel => '')").starts_with("22023: channel"));
        assert!(outcome(&format!("SELECT cep.watch('transactions', channel => '{}')", "c".repeat(64))).starts_with("22023: channel"));
        assert!(outcome("SELECT cep.watch('no_such_table')").starts_with("42P01"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgname = 'cep_monitor'"), Some(0));
        assert!(outcome("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', now())").starts_with("55000: no table is watched"));
    }

    fn add_rows_in_time_order(user_id: i32, n: i32, last: &str, amount: i32) {
        run(&format!(
            "INSERT INTO transactions (user_id, amount, location, created_at) \
             SELECT {user_id}, {amount}, 'A', timestamptz '{last}' - make_interval(mins => g) \
             FROM generate_series(0, {n} - 1) g ORDER BY g DESC"
        ));
    }

    #[pg_test]
    fn blocking_rejects_with_its_own_sqlstate_and_stores_nothing() {
        seed_setup();
        run("SELECT cep.watch('transactions', block_at => 0.9)");
        assert_eq!(
            one::<String>("SELECT tgtype::int::text FROM pg_trigger WHERE tgname = 'cep_monitor'").unwrap(),
            "7",
            "BEFORE INSERT FOR EACH ROW"
        );
        // 0.6 (amount) + 0.4 (23:30 is night) = 1.0, at or above 0.9.
        let err = outcome("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (1, 20000, 'A', '2026-01-15 23:30+00')");
        assert!(
            err.starts_with(
                "09000: pg_cep blocked an insert into public.transactions: key 1 scored 1.00, at or above block_at 0.9 (rule 2 v1, rule 3 v1)"
            ),
            "{err}"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(0));
        // Below block_at: stored, and alerted as usual (0.6 is medium).
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (1, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions"), Some(1));
        assert_eq!(one::<String>("SELECT action || ':' || level FROM cep.alerts").unwrap(), "alert:medium");
    }

    #[pg_test]
    fn blocking_skip_drops_the_row_and_records_the_attempt() {
        seed_setup();
        run("SELECT cep.watch('transactions', block_at => 0.9, on_block => 'skip')");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES \
             (1, 20000, 'A', '2026-01-15 23:30+00'), (2, 10, 'A', '2026-01-15 23:30+00'), (3, 10, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT string_agg(user_id::text, ',' ORDER BY user_id) FROM transactions").unwrap(), "2,3");
        assert_eq!(one::<String>("SELECT key || ':' || score FROM cep.alerts WHERE action = 'blocked'").unwrap(), "1:1");
        // User 2's night-time row (0.4, medium) is stored and alerted as usual.
        assert_eq!(one::<String>("SELECT key || ':' || level FROM cep.alerts WHERE action = 'alert'").unwrap(), "2:medium");
        let stats =
            one::<String>("SELECT format('%s/%s/%s/%s', rows_seen, alerts, rows_blocked, shared) FROM cep.stats() WHERE table_name = 'transactions'");
        assert_eq!(stats.unwrap(), "3/2/1/f");
        assert!(outcome("SELECT cep.watch('transactions', block_at => 0)").starts_with("22023: block_at"));
        assert!(outcome("SELECT cep.watch('transactions', block_at => 0.5, on_block => 'drop')").starts_with("22023: on_block"));
    }

    #[pg_test]
    fn row_mode_and_statement_mode_score_alike() {
        seed_setup();
        run("UPDATE cep.risk_rules SET is_active = false WHERE rule_id <> 1");
        add_rows_in_time_order(1, 12, "2026-01-15 12:00:00+00", 10);
        let statement_mode = one::<String>("SELECT string_agg(rules->0->'evidence'->>'observed', ',' ORDER BY alert_id) FROM cep.alerts");
        assert_eq!(statement_mode.as_deref(), Some("11.0,12.0"));
        run("DELETE FROM cep.alerts");
        run("SELECT cep.watch('transactions', block_at => 5)");
        add_rows_in_time_order(2, 12, "2026-01-15 12:00:00+00", 10);
        let row_mode = one::<String>("SELECT string_agg(rules->0->'evidence'->>'observed', ',' ORDER BY alert_id) FROM cep.alerts");
        assert_eq!(row_mode, statement_mode);
    }

    #[pg_test]
    fn a_dropped_column_skips_its_rules_and_inserts_go_on() {
        seed_setup();
        add_rows(1, 3, "2026-01-15 12:00:00+00", "A");
        run("ALTER TABLE transactions DROP COLUMN location");
        // The location rule is skipped and counted; the others still score.
        run("INSERT INTO transactions (user_id, amount, created_at) VALUES (1, 20000, '2026-01-15 12:01+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions"), Some(4));
        assert_eq!(one::<String>("SELECT string_agg(r->>'rule_id', ',') FROM cep.alerts, jsonb_array_elements(rules) r").unwrap(), "2");
        assert_eq!(one::<i64>("SELECT rule_errors FROM cep.stats() WHERE table_name = 'transactions'"), Some(1));
        let rows =
            one::<String>("SELECT string_agg(rule_id || ':' || triggered, ',') FROM cep.evaluate_risk_rules(1, 20000, 'A', '2026-01-15 12:02+00')");
        assert_eq!(rows.unwrap(), "1:false,2:true,3:false,4:false");
        // Without its time column nothing can be scored, but rows are still stored.
        run("ALTER TABLE transactions RENAME COLUMN created_at TO ts");
        run("INSERT INTO transactions (user_id, amount, ts) VALUES (1, 90000, '2026-01-15 12:03+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions"), Some(5));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(1));
        assert_eq!(one::<i64>("SELECT rule_errors FROM cep.stats() WHERE table_name = 'transactions'"), Some(5));
        // Watching again with the new name repairs it.
        run("SELECT cep.watch('transactions', time_column => 'ts')");
        run("INSERT INTO transactions (user_id, amount, ts) VALUES (1, 90000, '2026-01-15 12:04+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(2));
    }

    #[pg_test]
    fn row_mode_reads_partitions_with_their_own_column_order() {
        seed_setup();
        run("CREATE TABLE tx_p (id bigint, user_id int, amount numeric, created_at timestamptz) PARTITION BY RANGE (created_at)");
        run("CREATE TABLE tx_p_2026_01 PARTITION OF tx_p FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')");
        // A partition attached from a table whose columns sit in another order.
        run("CREATE TABLE tx_p_2026_02 (created_at timestamptz, amount numeric, id bigint, user_id int)");
        run("ALTER TABLE tx_p ATTACH PARTITION tx_p_2026_02 FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')");
        run("SELECT cep.watch('tx_p', block_at => 1.0, on_block => 'skip')");
        run("INSERT INTO tx_p VALUES (1, 9, 50000, '2026-01-15 12:00+00'), (2, 8, 60000, '2026-02-15 12:00+00'), (3, 7, 5, '2026-02-15 23:00+00')");
        assert_eq!(
            one::<String>("SELECT string_agg(table_name || ':' || key || ':' || action || ':' || level, ',' ORDER BY key) FROM cep.alerts").unwrap(),
            "public.tx_p:7:alert:medium,public.tx_p:8:alert:medium,public.tx_p:9:alert:medium"
        );
        assert_eq!(one::<i64>("SELECT rows_seen FROM cep.stats() WHERE table_name = 'tx_p'"), Some(3));
        // 0.6 + 0.4 at night reaches block_at in either partition.
        run("INSERT INTO tx_p VALUES (4, 6, 50000, '2026-02-15 23:00+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM tx_p"), Some(3));
        assert_eq!(one::<String>("SELECT key FROM cep.alerts WHERE action = 'blocked'").unwrap(), "6");
    }

    #[pg_test]
    fn assessments_are_logged_as_configured() {
        seed_setup();
        let insert = "INSERT INTO transactions (user_id, amount, location, created_at) VALUES \
                      (1, 20000, 'A', '2026-01-15 12:00+00'), (2, 10, 'A', '2026-01-15 12:00+00')";
        run(insert);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_assessments"), Some(0), "none by default");
        run("SELECT cep.watch('transactions', log_assessments => 'alerts')");
        run(insert);
        assert_eq!(
            one::<String>("SELECT string_agg(key || ':' || level || ':' || triggered_rules::text, ',') FROM cep.risk_assessments").unwrap(),
            "1:medium:{2}"
        );
        run("DELETE FROM cep.risk_assessments");
        run("SELECT cep.watch('transactions', log_assessments => 'all', block_at => 5)");
        run(insert);
        assert_eq!(
            one::<String>("SELECT string_agg(key || ':' || level || ':' || triggered_rules::text, ',' ORDER BY key) FROM cep.risk_assessments")
                .unwrap(),
            "1:medium:{2},2:low:{}"
        );
        assert!(outcome("SELECT cep.watch('transactions', log_assessments => 'some')").starts_with("22023: log_assessments"));
    }

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
    }

    // ---- partitions ----

    /// A monthly-partitioned transactions table, empty, in a UTC session.
    fn partitioned_setup(name: &str) {
        run("SET TimeZone = 'UTC'");
        run(&format!(
            "CREATE TABLE {name} (id bigserial, user_id integer NOT NULL, amount numeric(12,2) NOT NULL, \
             location text, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
        ));
    }

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

    // ---- patterns ----

    const CHECKOUT_DEFINE: &str =
        r#"{"login": {"event_type": "login"}, "browse": {"event_type": "browse"}, "purchase": {"event_type": "purchase", "amount": {">": 0}}}"#;

    fn events_setup() {
        run("SET TimeZone = 'UTC'");
        run("CREATE TABLE user_events (id bigserial PRIMARY KEY, user_id integer NOT NULL, event_type text NOT NULL, \
             amount numeric, location text, created_at timestamptz NOT NULL DEFAULT now())");
    }

    fn event(user: i32, kind: &str, amount: i32, minutes_ago: i32) -> String {
        format!("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES ({user}, '{kind}', {amount}, now() - make_interval(mins => {minutes_ago}))")
    }

    #[pg_test]
    fn login_browse_purchase_is_matched_live_per_user() {
        events_setup();
        run(&format!("SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase', '{CHECKOUT_DEFINE}', within => '30 minutes')"));
        // User 1 completes in 20 minutes; user 2's events interleave but never purchase; user 3 is too slow.
        for sql in [
            event(1, "login", 0, 50),
            event(2, "login", 0, 49),
            event(1, "browse", 0, 45),
            event(2, "browse", 0, 44),
            event(1, "browse", 0, 40),
            event(3, "login", 0, 45),
            event(3, "browse", 0, 30),
            event(1, "purchase", 99, 30),
            event(3, "purchase", 10, 1),
        ] {
            run(&sql);
        }
        assert_eq!(
            one::<String>("SELECT string_agg(key || ' ' || rows::text || ' ' || (match_end - match_start)::text, '; ') FROM cep.pattern_matches")
                .unwrap(),
            r#"1 {"login": [1], "browse": [3, 5], "purchase": [8]} 00:20:00"#
        );
        // Users 2 and 3 still have partial runs; user 1's ended with the match.
        assert_eq!(one::<String>("SELECT string_agg(key, ',' ORDER BY key) FROM cep.pattern_state"), Some("2".into()));
        // A multi-row INSERT is one statement: its rows are taken in time order per key.
        run("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES \
             (4, 'purchase', 5, now()), (4, 'browse', 0, now() - interval '1 minute'), (4, 'login', 0, now() - interval '2 minutes')");
        assert_eq!(
            one::<String>("SELECT rows::text FROM cep.pattern_matches WHERE key = '4'"),
            Some(r#"{"login": [12], "browse": [11], "purchase": [10]}"#.into())
        );
    }

    /// Live patterns emit eagerly; with `strict` contiguity `cep.match_recognize` gives the
    /// standard's preferred matches instead (see `match_recognize_with_strict_contiguity_...`).
    #[pg_test]
    fn live_matches_equal_match_recognize_over_the_same_rows() {
        events_setup();
        let patterns = [
            ("p_next", "a b+ c", "skip_till_next", "past_last_row"),
            ("p_any", "a b+ c", "skip_till_any", "to_next_row"),
            ("p_absent", "a !c b", "skip_till_next", "to_next_row"),
        ];
        let define = r#"{"a": {"event_type": "login"}, "b": {"event_type": "browse", "amount": {">": "PREV.amount"}}, "c": {"event_type": {"in": ["purchase", "logout"]}}}"#;
        for (name, pattern, contiguity, after) in patterns {
            run(&format!("SELECT cep.define_pattern('{name}', 'user_events', 'user_id', 'created_at', '{pattern}', '{define}', within => '1 hour', contiguity => '{contiguity}', after_match => '{after}')"));
        }
        // Random events, single rows and batches, some with equal times.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let kinds = ["login", "browse", "browse", "purchase", "logout"];
        let mut minute = 600i64;
        for _ in 0..60 {
            let n = 1 + next(4);
            let values: Vec<String> = (0..n)
                .map(|_| {
                    minute -= next(3) as i64;
                    format!("({}, '{}', {}, now() - make_interval(mins => {minute}))", next(3), kinds[next(5) as usize], next(100))
                })
                .collect();
            run(&format!("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES {}", values.join(", ")));
        }
        for (name, pattern, contiguity, after) in patterns {
            let live = one::<String>(&format!(
                "SELECT coalesce(string_agg(key || rows::text, ';' ORDER BY key, match_end, rows::text), '') FROM cep.pattern_matches WHERE pattern_name = '{name}'"
            ))
            .unwrap();
            let history = one::<String>(&format!(
                "SELECT coalesce(string_agg(key || rows::text, ';' ORDER BY key, match_end, rows::text), '') FROM cep.match_recognize('user_events', 'user_id', 'created_at', \
                 '{pattern}', '{define}', within => '1 hour', contiguity => '{contiguity}', after_match => '{after}')"
            ))
            .unwrap();
            assert_eq!(live, history, "{name}");
            assert!(!live.is_empty(), "{name} found matches");
        }
        // rows_per_match => 'all' lists each matched row with its symbol (CLASSIFIER).
        let classified = one::<i64>(&format!(
            "SELECT count(*) FROM cep.match_recognize('user_events', 'user_id', 'created_at', 'a b+ c', '{define}', within => '1 hour', rows_per_match => 'all') \
             WHERE symbol IN ('a', 'b', 'c') AND row_id IS NOT NULL"
        ))
        .unwrap();
        let ids =
            one::<i64>("SELECT sum(jsonb_array_length(v))::bigint FROM cep.pattern_matches, jsonb_each(rows) e(k, v) WHERE pattern_name = 'p_next'")
                .unwrap();
        assert_eq!(classified, ids);
    }

    #[pg_test]
    fn match_recognize_with_strict_contiguity_gives_the_standards_preferred_matches() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        // Oracle's ACME ticker, 1 to 20 April 2011, and a second symbol rising throughout.
        run("INSERT INTO ticker SELECT d, 'ACME', (ARRAY[12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22])[d], \
             timestamptz '2011-04-01 00:00+00' + make_interval(days => d - 1) FROM generate_series(1, 20) d");
        run("INSERT INTO ticker SELECT 100 + d, 'UP', d, timestamptz '2011-04-01 00:00+00' + make_interval(days => d - 1) FROM generate_series(1, 6) d");
        let v_shapes = |contiguity: &str, after: &str| {
            one::<String>(&format!(
                r#"SELECT string_agg(key || ':' || (rows->'strt'->>0) || '-' || (SELECT max(x::int) FROM jsonb_array_elements_text(rows->'up') x), ',' ORDER BY match_number)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+',
                        '{{"down": {{"price": {{"<": "PREV.price"}}}}, "up": {{"price": {{">": "PREV.price"}}}}}}',
                        contiguity => '{contiguity}', after_match => '{after}', id_column => 'id')"#
            ))
        };
        // Greedy UP+ runs to each top: three V-shapes, where eager emission stops at the first UP.
        assert_eq!(v_shapes("strict", "past_last_row"), Some("ACME:5-10,ACME:11-13,ACME:14-18".into()));
        assert_eq!(v_shapes("strict", "to_next_row"), Some("ACME:5-10,ACME:10-13,ACME:11-13,ACME:14-18,ACME:15-18".into()));
        // The other contiguities keep the live engine's eager matches (unchanged from 0.2.0).
        assert_eq!(v_shapes("skip_till_next", "past_last_row"), Some("ACME:2-7,ACME:8-13,ACME:14-17".into()));
        // PREV on a match's first row reads the row before the match; greedy B* takes every row.
        assert_eq!(
            one::<String>(
                r#"SELECT string_agg(key || ':' || rows::text, ',' ORDER BY match_number)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'up up*', '{"up": {"price": {">": "PREV.price"}}}',
                        contiguity => 'strict', id_column => 'id') WHERE key = 'UP'"#
            ),
            Some(r#"UP:{"up": [102, 103, 104, 105, 106]}"#.into())
        );
    }

    #[pg_test]
    fn a_live_pattern_emitting_final_matches_equals_match_recognize() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        let define = r#"{"down": {"price": {"<": "PREV.price"}}, "up": {"price": {">": "PREV.price"}}}"#;
        // Strict contiguity: final by default; eager when asked.
        run(&format!("SELECT cep.define_pattern('v_final', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict')"));
        run(&format!(
            "SELECT cep.define_pattern('v_eager', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict', emit => 'eager')"
        ));
        assert_eq!(
            one::<String>("SELECT string_agg(name || ':' || emit, ',' ORDER BY name) FROM cep.patterns"),
            Some("v_eager:eager,v_final:final".into())
        );
        // One row per statement, as a live feed: Oracle's ACME ticker.
        for (day, price) in [12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22].iter().enumerate() {
            run(&format!(
                "INSERT INTO ticker VALUES ({}, 'ACME', {price}, timestamptz '2011-04-01 00:00+00' + make_interval(days => {day}))",
                day + 1
            ));
        }
        let live = |name: &str| {
            one::<String>(&format!("SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.pattern_matches WHERE pattern_name = '{name}'"))
        };
        let history = one::<String>(&format!(
            "SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', \
             contiguity => 'strict', id_column => 'id')"
        ));
        assert_eq!(live("v_final"), history, "each V-shape once it has reached its top, as history has it");
        assert_eq!(
            history.as_deref(),
            Some(
                r#"{"up": [7, 8, 9, 10], "down": [6], "strt": [5]};{"up": [13], "down": [12], "strt": [11]};{"up": [17, 18], "down": [15, 16], "strt": [14]}"#
            )
        );
        assert_eq!(
            live("v_eager").as_deref(),
            Some(
                r#"{"up": [7], "down": [6], "strt": [5]};{"up": [13], "down": [11, 12], "strt": [10]};{"up": [17], "down": [15, 16], "strt": [14]}"#
            ),
            "eager: each match at its first UP"
        );
        // The last rows (23, 22: a descent) wait for a row that may still turn up.
        assert_eq!(
            one::<bool>("SELECT state LIKE '%\"q\"%' FROM cep.pattern_state s JOIN cep.patterns p USING (pattern_id) WHERE p.name = 'v_final'"),
            Some(true)
        );
        // 'final' needs the standard's kind of pattern: refused, and nothing is registered.
        let refused = outcome(&format!(
            "SELECT cep.define_pattern('v_next', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'skip_till_next', emit => 'final')"
        ));
        assert!(
            refused.starts_with("22023: invalid pattern: emit: 'final' gives the SQL standard's matches, which need contiguity => 'strict'"),
            "{refused}"
        );
        assert!(outcome(&format!("SELECT cep.define_pattern('v_bad', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', emit => 'later')"))
            .starts_with("22023: invalid pattern: emit: \"later\" is not one of eager, final"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(2));
    }

    #[pg_test]
    fn an_absence_at_the_end_fires_when_its_time_has_passed() {
        events_setup();
        run(r#"SELECT cep.define_pattern('reset_no_login', 'user_events', 'user_id', 'created_at', 'reset !login',
               '{"reset": {"event_type": "password_reset"}, "login": {"event_type": "login"}}', within => '10 minutes')"#);
        run(&event(1, "password_reset", 0, 30)); // no login since: due
        run(&event(2, "password_reset", 0, 30));
        run(&event(2, "login", 0, 25)); // logged in within 10 minutes: no match
        run(&event(3, "password_reset", 0, 2)); // not yet due
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(0));
        assert_eq!(one::<i64>("SELECT cep.fire_timeouts()"), Some(1));
        assert_eq!(
            one::<String>("SELECT key || ':' || completed_by || ':' || (match_end - match_start)::text FROM cep.pattern_matches"),
            Some("1:timeout:00:10:00".into())
        );
        assert_eq!(one::<i64>("SELECT cep.fire_timeouts()"), Some(0));
        assert_eq!(one::<String>("SELECT string_agg(key, ',') FROM cep.pattern_state"), Some("3".into()));
        // History agrees: the same single match.
        assert_eq!(
            one::<String>(
                r#"SELECT string_agg(key, ',') FROM cep.match_recognize('user_events', 'user_id', 'created_at', 'reset !login',
               '{"reset": {"event_type": "password_reset"}, "login": {"event_type": "login"}}', within => '10 minutes')"#
            ),
            Some("1".into())
        );
    }

    #[pg_test]
    fn bad_patterns_are_refused_when_defined_and_nothing_is_registered() {
        events_setup();
        let define = |pattern: &str, define: &str, extra: &str| {
            outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', '{pattern}', '{define}'{extra})"))
        };
        let d = r#"{"a": {"event_type": "login"}}"#;
        let syntax = define("a (b", d, "");
        assert!(syntax.starts_with("42601: invalid pattern: pattern:") && syntax.contains("position"), "{syntax}");
        let unused = define("a", r#"{"a": {"event_type": "login"}, "zz": {"event_type": "x"}}"#, "");
        assert!(unused.starts_with("42704: invalid pattern:") && unused.contains("zz"), "{unused}");
        let op = define("a", r#"{"a": {"amount": {"=>": 5}}}"#, "");
        assert!(op.starts_with("42804: invalid pattern: define.a.amount") && op.contains("=>"), "{op}");
        assert!(define("a", r#"{"a": {"colour": "red"}}"#, "").starts_with("42703: define: column \"colour\" is not a column"));
        assert!(define("a !b", d, "").starts_with("22023: invalid pattern:"), "an absence at the end needs within");
        assert!(define("a", d, ", contiguity => 'loose'").starts_with("22023: invalid pattern: contiguity"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'event_type', 'a', '{d}')"))
            .starts_with("42804: order_by \"event_type\" has type text"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', 'a', '{d}', id_column => 'location')"))
            .starts_with("42804: id_column"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'nobody', 'created_at', 'a', '{d}')"))
            .starts_with("42703: partition_by \"nobody\""));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', 'a', '{d}', within => '-1 minute')"))
            .starts_with("22023: within"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'user_events'::regclass"), Some(0));
        // Names are unique; a second definition under the same name is refused.
        run(&format!("SELECT cep.define_pattern('good', 'user_events', 'user_id', 'created_at', 'a', '{d}')"));
        assert!(outcome(&format!("SELECT cep.define_pattern('good', 'user_events', 'user_id', 'created_at', 'a', '{d}')"))
            .starts_with("42710: pattern \"good\" already exists"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(1));
        // Inserts go on when a column the pattern reads is dropped later: the pattern is skipped.
        run("SELECT cep.define_pattern('by_place', 'user_events', 'user_id', 'created_at', 'p', '{\"p\": {\"location\": \"x\"}}')");
        run("ALTER TABLE user_events DROP COLUMN location");
        assert_eq!(outcome(&event(1, "login", 0, 0)), "ok");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches WHERE pattern_name = 'good'"), Some(1));
        // Dropping the last patterns removes the trigger and the partial matches.
        assert_eq!(one::<bool>("SELECT cep.drop_pattern('good') AND cep.drop_pattern('by_place') AND NOT cep.drop_pattern('good')"), Some(true));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'user_events'::regclass"), Some(0));
    }

    #[pg_test]
    fn a_rolled_back_insert_leaves_no_partial_match() {
        events_setup();
        run(&format!("SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase', '{CHECKOUT_DEFINE}')"));
        run(&event(1, "login", 0, 10));
        // A failing statement after the browse rolls its subtransaction back, browse included.
        assert!(outcome(&format!("{}; SELECT 1/0", event(1, "browse", 0, 9))).starts_with("22012"));
        run(&event(1, "purchase", 5, 8));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(0));
        run(&event(1, "browse", 0, 7));
        run(&event(1, "purchase", 5, 6));
        assert_eq!(one::<String>("SELECT rows::text FROM cep.pattern_matches"), Some(r#"{"login": [1], "browse": [4], "purchase": [5]}"#.into()));
    }

    // ---- change capture ----

    fn graph_setup() {
        run("CREATE TABLE nodes (id bigint PRIMARY KEY, label text NOT NULL, properties jsonb NOT NULL DEFAULT '{}')");
        run("CREATE TABLE relationships (id bigint PRIMARY KEY, from_id bigint NOT NULL, to_id bigint NOT NULL, type text NOT NULL, properties jsonb NOT NULL DEFAULT '{}')");
        run("SELECT cep.capture('nodes', kind => 'node')");
        run("SELECT cep.capture('relationships', kind => 'relationship')");
    }

    #[pg_test]
    fn changes_are_logged_with_the_seeds_event_types_and_one_correlation_id() {
        graph_setup();
        run("INSERT INTO nodes VALUES (1, 'Person', '{\"name\": \"Ada\"}'), (2, 'Person', '{\"name\": \"Alan\"}')");
        run("INSERT INTO relationships VALUES (10, 1, 2, 'KNOWS')");
        assert_eq!(
            one::<String>("SELECT string_agg(event_type || ':' || pk || ':' || coalesce(from_id || '->' || to_id, '-'), ',' ORDER BY change_id) FROM cep.change_log"),
            Some("node_created:1:-,node_created:2:-,relationship_created:10:1->2".into())
        );
        assert_eq!(one::<i64>("SELECT count(DISTINCT correlation_id) FROM cep.change_log"), Some(1));
        assert_eq!(one::<String>("SELECT new_row ->> 'label' FROM cep.change_log WHERE pk = '2'"), Some("Person".into()));
        // Only what changed is kept for an UPDATE.
        run("UPDATE nodes SET properties = '{\"name\": \"Ada L.\"}' WHERE id = 1");
        assert_eq!(
            one::<String>("SELECT new_row::text || ' ' || old_row::text FROM cep.change_log WHERE event_type = 'node_updated'"),
            Some(r#"{"properties": {"name": "Ada L."}} {"properties": {"name": "Ada"}}"#.into())
        );
        // The seed's correlation labels: one transaction, nodes and a relationship together.
        assert_eq!(
            one::<String>("SELECT changes || ' ' || patterns::text FROM cep.correlation_patterns()"),
            Some("4 {transaction_pattern,cascade_operation}".into())
        );
        // The relationship is related to both nodes; by transaction first.
        assert_eq!(
            one::<String>("SELECT string_agg(pk || ':' || relation, ',' ORDER BY change_id) FROM cep.correlated_events((SELECT change_id FROM cep.change_log WHERE pk = '10'))"),
            Some("1:same_correlation,2:same_correlation,1:same_correlation".into())
        );
        run("TRUNCATE relationships");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.change_log WHERE event_type = 'truncate' AND table_name = 'public.relationships'"), Some(1));
    }

    #[pg_test]
    fn a_bulk_delete_raises_exactly_one_mass_deletion_alert() {
        graph_setup();
        run("INSERT INTO nodes SELECT g, 'Tmp' FROM generate_series(1, 500) g");
        // 500 inserts in one statement crossed the 100-per-minute high-frequency limit once.
        assert_eq!(one::<String>("SELECT string_agg(rules -> 0 ->> 'anomaly', ',') FROM cep.alerts"), Some("high_frequency_operations".into()));
        run("DELETE FROM nodes WHERE id <= 400");
        run("DELETE FROM nodes WHERE id <= 450");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE rules -> 0 ->> 'anomaly' = 'mass_deletion'"), Some(1));
        assert_eq!(one::<i64>("SELECT (rules -> 0 ->> 'count')::bigint FROM cep.alerts WHERE rules -> 0 ->> 'anomaly' = 'mass_deletion'"), Some(400));
        // Per key: with a key column, each key crosses on its own.
        run("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL)");
        run("SELECT cep.capture('accounts', key_column => 'owner', mass_deletion => 2, high_frequency => NULL)");
        run("INSERT INTO accounts SELECT g, CASE WHEN g <= 5 THEN 'ann' ELSE 'bob' END FROM generate_series(1, 7) g");
        run("DELETE FROM accounts");
        assert_eq!(
            one::<String>("SELECT string_agg(key, ',' ORDER BY key) FROM cep.alerts WHERE table_name = 'public.accounts'"),
            Some("ann".into())
        );
    }

    #[pg_test]
    fn capture_logs_composite_missing_and_added_primary_keys() {
        run("CREATE TABLE pairs (a int, b text, note text, PRIMARY KEY (a, b))");
        run("SELECT cep.capture('pairs')");
        run("INSERT INTO pairs VALUES (1, 'x', 'first'), (2, 'y', 'second')");
        run("UPDATE pairs SET note = 'changed' WHERE a = 1");
        assert_eq!(
            one::<String>("SELECT string_agg(op::text || ':' || pk, ';' ORDER BY change_id) FROM cep.change_log WHERE table_name = 'public.pairs'"),
            Some("I:1,x;I:2,y;U:1,x".into())
        );
        // No primary key: no pk text. Once the table has one, the next statement logs it.
        run("CREATE TABLE loose (v int NOT NULL)");
        run("SELECT cep.capture('loose')");
        run("INSERT INTO loose VALUES (4)");
        run("ALTER TABLE loose ADD PRIMARY KEY (v)");
        run("INSERT INTO loose VALUES (5)");
        assert_eq!(
            one::<String>("SELECT string_agg(coalesce(pk, 'none'), ';' ORDER BY change_id) FROM cep.change_log WHERE table_name = 'public.loose'"),
            Some("none;5".into())
        );
    }

    #[pg_test]
    fn the_log_written_without_the_executor_equals_the_spi_insert_and_steps_aside_for_a_changed_log() {
        let written = crate::pg::change_log::rows_written;
        run(
            r#"CREATE TABLE odd (a int, "Mixed Case" timestamptz, c numeric, d float8, e jsonb, f text[], g bool, h text, PRIMARY KEY ("Mixed Case", a))"#,
        );
        run(
            r#"SELECT cep.capture('odd', key_column => 'h', from_column => 'd', to_column => 'Mixed Case', high_frequency => NULL, mass_deletion => NULL)"#,
        );
        let rows = r#"INSERT INTO odd VALUES
            (1, '2026-01-15 12:00:00+00', 1.50, 1e20, '{"x": [1, null, "é"]}', '{a,"b c"}', true, 'k1'),
            (2, '2026-01-15 12:00:00.5+02', NULL, 'NaN', NULL, NULL, NULL, NULL),
            (3, '-infinity', -0.0, -1.25e-7, '"s"', '{}', false, 'k1');
            INSERT INTO odd_child SELECT * FROM ONLY odd WHERE a = 1"#;
        // An inherited table (not captured itself) holds a row with the parent's key: an UPDATE on
        // the parent sees the key twice on each side, and the FULL JOIN pairs all four ways.
        run("CREATE TABLE odd_child () INHERITS (odd)");
        let logged = |op: &str| {
            one::<String>(&format!(
                "SELECT string_agg(concat_ws('|', relid::regclass, table_name, event_type, pk, key, from_id, to_id, new_row, old_row), E'\n' \
                 ORDER BY concat_ws('|', relid::regclass, table_name, event_type, pk, key, from_id, to_id, new_row, old_row)) \
                 FROM cep.change_log WHERE op = '{op}'"
            ))
        };
        let updates = r#"UPDATE odd SET c = c + 1, h = 'k2' WHERE a = 1;
            UPDATE odd SET "Mixed Case" = '2026-02-01 00:00:00+00' WHERE a = 3;
            UPDATE odd SET g = g WHERE a = 2"#;
        let before = written();
        run(rows);
        run(updates);
        run("DELETE FROM odd");
        run("TRUNCATE odd");
        assert_eq!(
            written() - before,
            15,
            "3 inserts, 7 update changes (a twice-seen key is 4, a new key 2), 4 deletes and a truncate, stored directly"
        );
        assert_eq!(one::<bool>("SELECT bool_and(changed_at = now() AND correlation_id = pg_current_xact_id()) FROM cep.change_log"), Some(true));
        let direct = ["I", "U", "D", "T"].map(logged);
        assert_eq!(direct.iter().map(|d| d.as_deref().map_or(0, |d| d.lines().count())).collect::<Vec<_>>(), [3, 7, 4, 1]);
        let changed = r#"odd|public.odd|update|2026-01-15T12:00:00+00:00,1|k2|100000000000000000000|2026-01-15T12:00:00+00:00|{"c": 2.50, "h": "k2"}|{"c": 1.50, "h": "k1"}"#;
        assert!(direct[1].as_deref().unwrap().lines().any(|l| l == changed), "{direct:?}");
        let first = r#"odd|public.odd|insert|2026-01-15T12:00:00+00:00,1|k1|100000000000000000000|2026-01-15T12:00:00+00:00|{"a": 1, "c": 1.50, "d": 100000000000000000000, "e": {"x": [1, null, "é"]}, "f": ["a", "b c"], "g": true, "h": "k1", "Mixed Case": "2026-01-15T12:00:00+00:00"}"#;
        assert!(direct[0].as_deref().unwrap().lines().any(|l| l == first), "{direct:?}");
        run("DELETE FROM cep.change_log");
        // A trigger on the log is something only the executor runs: the same statements go through SPI.
        run("CREATE FUNCTION pg_temp.pass() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$");
        run("CREATE TRIGGER pass BEFORE INSERT ON cep.change_log FOR EACH ROW EXECUTE FUNCTION pg_temp.pass()");
        let before = written();
        run(rows);
        run(updates);
        run("DELETE FROM odd");
        run("TRUNCATE odd");
        assert_eq!(written(), before, "nothing stored directly while the log has a trigger");
        assert_eq!(["I", "U", "D", "T"].map(logged), direct);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.change_log"), Some(15));
        run("DROP TRIGGER pass ON cep.change_log");
        // The same for a CHECK constraint (which the executor enforces) and a column added to the log.
        run("ALTER TABLE cep.change_log ADD CONSTRAINT no_forbidden CHECK (key IS DISTINCT FROM 'forbidden')");
        let before = written();
        assert!(outcome("INSERT INTO odd VALUES (7, now(), 1, 1, NULL, NULL, NULL, 'forbidden')").starts_with("23514: new row for relation"));
        assert_eq!(outcome("INSERT INTO odd VALUES (8, now(), 1, 1, NULL, NULL, NULL, 'allowed')"), "ok");
        assert_eq!(written(), before);
        assert_eq!(one::<String>("SELECT string_agg(a::text, ',') FROM odd"), Some("8".into()), "the refused row is not stored");
        run("ALTER TABLE cep.change_log DROP CONSTRAINT no_forbidden");
        // Defaults: a volatile partition key, or a function of the user's, are the executor's to run.
        run("ALTER TABLE cep.change_log ALTER COLUMN changed_at SET DEFAULT clock_timestamp()");
        run("INSERT INTO odd VALUES (20, now(), 1, 1, NULL, NULL, NULL, 'k20')");
        run("ALTER TABLE cep.change_log ALTER COLUMN changed_at SET DEFAULT now()");
        run("CREATE FUNCTION pg_temp.xid() RETURNS xid8 LANGUAGE sql AS 'SELECT pg_current_xact_id()'");
        run("ALTER TABLE cep.change_log ALTER COLUMN correlation_id SET DEFAULT pg_temp.xid()");
        run("INSERT INTO odd VALUES (21, now(), 1, 1, NULL, NULL, NULL, 'k21')");
        assert_eq!(written(), before);
        run("ALTER TABLE cep.change_log ALTER COLUMN correlation_id SET DEFAULT pg_current_xact_id()");
        run("INSERT INTO odd VALUES (22, now(), 1, 1, NULL, NULL, NULL, 'k22')");
        assert_eq!(written(), before + 1, "back as pg_cep makes it, written directly again");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.change_log WHERE key IN ('k20', 'k21', 'k22')"), Some(3));
        run("ALTER TABLE cep.change_log ADD COLUMN note text DEFAULT 'by the executor'");
        run("INSERT INTO odd VALUES (10, now(), 1, 1, NULL, NULL, NULL, 'k10')");
        assert_eq!(written(), before + 1);
        assert_eq!(one::<String>("SELECT note FROM cep.change_log WHERE key = 'k10'"), Some("by the executor".into()));
        run("ALTER TABLE cep.change_log DROP COLUMN note");
        run("DELETE FROM odd");
        // No partition for the row: the executor's error, and the user's row is not stored.
        run("DELETE FROM cep.change_log");
        let detach = one::<String>(
            "SELECT string_agg(format('ALTER TABLE cep.change_log DETACH PARTITION %s', i.inhrelid::regclass), '; ') FROM pg_inherits i WHERE i.inhparent = 'cep.change_log'::regclass",
        )
        .unwrap();
        run(&detach);
        let before = written();
        assert_eq!(
            outcome("INSERT INTO odd VALUES (9, now(), 1, 1, NULL, NULL, NULL, 'k9')"),
            "23514: no partition of relation \"change_log\" found for row"
        );
        assert_eq!(written(), before);
        assert_eq!(one::<i64>("SELECT count(*) FROM odd"), Some(0));
    }

    #[pg_test]
    fn an_update_of_more_rows_than_the_direct_limit_is_logged_through_sql_alike() {
        let written = crate::pg::change_log::rows_written;
        run("CREATE TABLE big (id int PRIMARY KEY, v int)");
        run("SELECT cep.capture('big', high_frequency => NULL, mass_deletion => NULL)");
        run("INSERT INTO big SELECT g, 0 FROM generate_series(1, 10001) g");
        let before = written();
        run("UPDATE big SET v = 1");
        assert_eq!(written(), before, "10,001 rows: paired by SQL");
        run("UPDATE big SET v = 2 WHERE id <= 10000");
        assert_eq!(written(), before + 10_000, "10,000 rows: paired here");
        assert_eq!(
            one::<String>("SELECT string_agg(n || ' ' || c, ', ' ORDER BY c) FROM (SELECT new_row::text || '/' || old_row::text AS c, count(*) AS n FROM cep.change_log WHERE op = 'U' GROUP BY 1) s"),
            Some(r#"10001 {"v": 1}/{"v": 0}, 10000 {"v": 2}/{"v": 1}"#.into())
        );
    }

    #[pg_test]
    fn rows_at_infinity_or_the_earliest_time_are_scored_not_refused() {
        seed_setup();
        // Twelve rows of one key at -infinity: the hour of each holds all of them (infinity minus
        // an hour is infinity, as in SQL), so every one is high frequency, and so is a thirteenth;
        // an infinite time has no hour, so the night rule never fires on one. The earliest
        // timestamps' windows reach back before the earliest time: they start at -infinity.
        run("INSERT INTO transactions (user_id, amount, location, created_at) SELECT 1, 100, 'A', '-infinity' FROM generate_series(1, 12)");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (1, 100, 'A', '-infinity')");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (2, 50000, 'A', 'infinity'), (3, 50000, 'A', '4714-11-24 00:30:00+00 BC')");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (3, 50000, 'B', '4714-11-24 00:33:00+00 BC')");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(key || ':' || event_time || ':' || (SELECT string_agg(r->>'rule_id', '+' ORDER BY r->>'rule_id') FROM jsonb_array_elements(rules) r), ',' ORDER BY alert_id) FROM cep.alerts"
            ),
            Some(format!("{}2:infinity:2,3:4714-11-24 00:30:00+00 BC:2+3,3:4714-11-24 00:33:00+00 BC:2+3+4", "1:-infinity:1,".repeat(13)))
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions"), Some(16), "every row stored");
    }

    #[pg_test]
    fn alerts_stored_without_the_executor_equal_the_spi_insert_and_step_aside_for_a_changed_table() {
        let written = crate::pg::alert_rows::rows_written;
        seed_setup();
        run("CREATE TABLE tx_a (LIKE transactions INCLUDING ALL)");
        run("CREATE TABLE tx_b (LIKE transactions INCLUDING ALL)");
        run("SELECT cep.watch('tx_a'), cep.watch('tx_b')");
        // A single-row INSERT (one alert) and a multi-row one (two alerts, one quiet row).
        let insert = |table: &str| {
            run(&format!("INSERT INTO {table} (id, user_id, amount, location, created_at) VALUES (1, 2, 20000, 'A', '2026-01-15 12:00+00')"));
            run(&format!(
                "INSERT INTO {table} (id, user_id, amount, location, created_at) VALUES \
                 (2, 3, 20000, 'A', '2026-01-15 12:01+00'), (3, 4, 5, 'A', '2026-01-15 12:02+00'), (4, 5, 30000, NULL, '-infinity')"
            ));
        };
        let alerts = |table: &str| {
            one::<String>(&format!(
                "SELECT string_agg(concat_ws('|', relid::regclass, table_name, key, row_pk, score, level, action, rules, event_time, state, \
                                             repeats, created_at = now(), xid = pg_current_xact_id(), state_changed_at, note, attempted_row), \
                                   E'\\n' ORDER BY alert_id) FROM cep.alerts WHERE relid = '{table}'::regclass"
            ))
            .map(|s| s.replace(table, "T"))
        };
        let before = written();
        insert("tx_a");
        assert_eq!(written(), before + 3, "three alerts stored directly");
        let direct = alerts("tx_a");
        assert_eq!(direct.as_deref().map(|d| d.lines().count()), Some(3), "{direct:?}");
        assert!(direct.as_deref().unwrap().starts_with("T|public.T|2|1|0.6|medium|alert|[{"), "{direct:?}");
        assert!(direct.as_deref().unwrap().lines().all(|l| l.ends_with("|open|0|t|t")), "{direct:?}");
        // A trigger on cep.alerts is something only the executor runs: the same alerts through SPI.
        run("CREATE FUNCTION pg_temp.pass() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$");
        run("CREATE TRIGGER pass BEFORE INSERT ON cep.alerts FOR EACH ROW EXECUTE FUNCTION pg_temp.pass()");
        let before = written();
        insert("tx_b");
        assert_eq!(written(), before, "nothing stored directly while cep.alerts has a trigger");
        assert_eq!(alerts("tx_b"), direct);
        run("DROP TRIGGER pass ON cep.alerts");
        // A CHECK constraint is enforced here as the executor enforces it: the error, and neither
        // the alert nor the user's row is stored.
        run("ALTER TABLE cep.alerts ADD CONSTRAINT no_forbidden CHECK (key <> '666')");
        let count = || one::<i64>("SELECT (SELECT count(*) FROM cep.alerts) * 100 + (SELECT count(*) FROM tx_a)");
        let stored = count();
        assert_eq!(
            outcome("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (10, 666, 20000, 'A', '2026-01-15 12:00+00')"),
            "23514: new row for relation \"alerts\" violates check constraint \"no_forbidden\""
        );
        assert_eq!(count(), stored, "nothing stored");
        let before = written();
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (11, 667, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(written(), before + 1, "a table with CHECK constraints is still written directly");
        run("ALTER TABLE cep.alerts DROP CONSTRAINT no_forbidden");
        // A writer with no right on pg_cep's tables: its alerts are stored as the extension's.
        run("REVOKE ALL ON cep.alerts FROM PUBLIC");
        run("CREATE ROLE cep_test_alerted");
        run("GRANT INSERT ON tx_a TO cep_test_alerted");
        run("SET ROLE cep_test_alerted");
        let inserted = Spi::get_one_with_args::<String>(
            "SELECT pg_temp.outcome($1)",
            &["INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (14, 670, 20000, 'A', '2026-01-15 12:00+00')".into()],
        );
        run("RESET ROLE");
        assert_eq!(inserted.unwrap().as_deref(), Some("ok"));
        assert_eq!(written(), before + 2, "stored directly for a writer without rights");
        // A default that calls a user's function, or a column added to the table: the executor's.
        run("CREATE FUNCTION pg_temp.opened() RETURNS text LANGUAGE sql AS $$ SELECT 'open' $$");
        run("ALTER TABLE cep.alerts ALTER COLUMN state SET DEFAULT pg_temp.opened()");
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (13, 669, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(written(), before + 2, "nothing stored directly while a default is a user's");
        run("ALTER TABLE cep.alerts ALTER COLUMN state SET DEFAULT 'open'");
        run("ALTER TABLE cep.alerts ADD COLUMN team text DEFAULT 'by the executor'");
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (12, 668, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT team FROM cep.alerts WHERE key = '668'"), Some("by the executor".into()));
        assert_eq!(written(), before + 2, "nothing stored directly while the table has a column pg_cep does not know");
        assert_eq!(
            one::<String>("SELECT string_agg(key || ':' || state, ',' ORDER BY alert_id) FROM cep.alerts WHERE key::int >= 667"),
            Some("667:open,670:open,669:open,668:open".into())
        );
    }

    #[pg_test]
    fn a_writer_with_no_right_on_pg_cep_has_its_changes_logged_by_the_direct_path() {
        let written = crate::pg::change_log::rows_written;
        run("CREATE TABLE owned (id int PRIMARY KEY)");
        run("SELECT cep.capture('owned', high_frequency => NULL, mass_deletion => NULL)");
        run("CREATE ROLE cep_test_writer");
        run("GRANT INSERT ON owned TO cep_test_writer");
        // Not even what PUBLIC is granted: the log is pg_cep's, written as the extension.
        run("REVOKE ALL ON cep.change_log FROM PUBLIC");
        assert_eq!(outcome("SELECT 1"), "ok");
        let before = written();
        run("SET ROLE cep_test_writer");
        let inserted = Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &["INSERT INTO owned VALUES (1)".into()]);
        let read = Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &["SELECT count(*) FROM cep.change_log".into()]);
        run("RESET ROLE");
        assert_eq!(inserted.unwrap().as_deref(), Some("ok"));
        assert_eq!(read.unwrap().as_deref(), Some("42501: permission denied for table change_log"));
        assert_eq!(written(), before + 1, "logged without the executor");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.change_log WHERE relid = 'owned'::regclass AND op = 'I'"), Some(1));
    }

    #[pg_test]
    fn capture_refuses_bad_settings_and_survives_dropped_columns() {
        run("CREATE TABLE plain (id int PRIMARY KEY, note text, owner text)");
        assert!(outcome("SELECT cep.capture('plain', kind => 'edge')").starts_with("22023: kind: \"edge\""));
        assert!(outcome("SELECT cep.capture('plain', mass_deletion => 0)").starts_with("22023: mass_deletion: 0"));
        assert!(outcome("SELECT cep.capture('plain', key_column => 'nobody')").starts_with("42703: key_column \"nobody\""));
        assert!(outcome("SELECT cep.capture('plain', kind => 'relationship')").starts_with("42703: from_column \"from_id\""));
        assert!(outcome("SELECT cep.capture('cep.alerts')").starts_with("22023: alerts belongs to pg_cep"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.captures"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(0));
        // Twice is an update, not a second set of triggers.
        run("SELECT cep.capture('plain', key_column => 'owner')");
        run("SELECT cep.capture('plain', key_column => 'owner', channel => 'plain_changes')");
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(4));
        assert_eq!(one::<String>("SELECT channel FROM cep.captures"), Some("plain_changes".into()));
        // A column dropped later does not make writes fail.
        run("ALTER TABLE plain DROP COLUMN owner");
        assert_eq!(outcome("INSERT INTO plain VALUES (1, 'x')"), "ok");
        assert_eq!(one::<String>("SELECT new_row::text FROM cep.change_log"), Some(r#"{"id": 1, "note": "x"}"#.into()));
        assert_eq!(one::<bool>("SELECT cep.uncapture('plain') AND NOT cep.uncapture('plain')"), Some(true));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(0));
    }

    // ---- rollups ----

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
        assert_eq!(outcome("SELECT * FROM cep.realtime_stats('rr_tx', '5 minutes', -1)"), "22023: top must be 0 or more, not -1");
        // Turned off, the stats come from the rows; cep.watch_rollups says what it was.
        assert_eq!(one::<bool>("SELECT cep.watch_rollups('rr_tx', false)"), Some(true));
        assert_eq!(one::<String>("SELECT source || total_transactions FROM cep.realtime_stats('rr_tx')"), Some("rows2".into()));
        assert_eq!(outcome("SELECT cep.rollup_rebuild('rr_tx')"), "55000: the monitor keeps no rollups for public.rr_tx");
        assert!(outcome("SELECT cep.watch_rollups('cep.alerts', true)").starts_with("55000: alerts is not watched"));
        assert_eq!(one::<bool>("SELECT cep.watch_rollups('rr_tx', true)"), Some(false));
        // A direct call with arrays that do not line up is refused, not read past their end.
        assert!(outcome("SELECT cep.rollup_load('rr_tx'::regclass, now(), now(), ARRAY[now()], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')")
            .starts_with("XX000: cep.rollup_load: the per-minute arrays"));
        assert_eq!(one::<i64>("SELECT cep.rollup_rebuild('rr_tx')"), Some(1));
    }

    // ----- Hardening (0.3.0): limits, search_path, ownership, NULLs, dropped tables -----

    /// Rows in pg_cep's configuration tables, to show a refused call wrote nothing.
    fn configured() -> i64 {
        one::<i64>(
            "SELECT (SELECT count(*) FROM cep.watches) + (SELECT count(*) FROM cep.captures) + (SELECT count(*) FROM cep.patterns)
                  + (SELECT count(*) FROM cep.partition_config WHERE parent <> 'cep.change_log'::regclass)",
        )
        .unwrap()
    }

    #[pg_test]
    fn every_function_that_runs_sql_pins_its_search_path() {
        let unpinned = one::<String>(
            "SELECT coalesce(string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid::regprocedure::text), '') FROM pg_proc p
             WHERE p.pronamespace = 'cep'::regnamespace
               AND coalesce(p.proconfig, '{}') <> '{\"search_path=pg_catalog, pg_temp\"}'",
        );
        // The immutable C functions run no SQL (and are called per row in GROUP BYs); cep.stats()
        // casts an oid to regclass and nothing else; trigger functions pin the path themselves.
        assert_eq!(
            unpinned.as_deref(),
            Some("cep.capture_trigger(), cep.hop(timestamp with time zone,interval,interval), cep.invalidate_cep_cache(), cep.monitor(), cep.monitor_changes(), cep.monitor_row(), cep.pattern_trigger(), cep.stats(), cep.tumble(timestamp with time zone,interval,timestamp with time zone), cep.tumble(timestamp without time zone,interval,timestamp without time zone), cep.validate_rule(jsonb)")
        );
        assert_eq!(
            one::<bool>("SELECT bool_and((provolatile = 'i' AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')) OR prorettype = 'trigger'::regtype)
                         FROM pg_proc WHERE pronamespace = 'cep'::regnamespace AND proconfig IS NULL AND proname <> 'stats'"),
            Some(true)
        );
    }

    #[pg_test]
    fn a_role_that_can_create_in_public_cannot_run_code_inside_a_superusers_alerting_insert() {
        seed_setup();
        run("CREATE TABLE public.hijacked (by text, during text)");
        run("GRANT INSERT ON public.hijacked TO PUBLIC");
        run("CREATE ROLE cep_test_attacker");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_attacker");
        run("SET ROLE cep_test_attacker");
        // Better matches than pg_catalog's polymorphic unnest(anyarray), for the SQL pg_cep runs.
        {
            let signature = "text[], text[], double precision[], text[], jsonb[], timestamptz[]";
            let args: Vec<String> = signature.split(", ").enumerate().map(|(i, t)| format!("a{i} {t}")).collect();
            run(&format!(
                "CREATE FUNCTION public.unnest({}) RETURNS SETOF record LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO public.hijacked VALUES (current_user, 'unnest'); END $$",
                args.join(", ")
            ));
        }
        run("CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.hijacked VALUES (current_user, 'unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$");
        run("RESET ROLE");
        run("SET search_path = public, cep");
        // A superuser's INSERT that alerts, notifies and logs.
        run("INSERT INTO transactions (user_id, amount, location) VALUES (7, 50000, 'Shanghai')");
        run("RESET search_path");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '7'"), Some(1));
        assert_eq!(one::<i64>("SELECT count(*) FROM public.hijacked"), Some(0), "the attacker's function ran inside pg_cep");
    }

    #[pg_test]
    fn only_a_tables_owner_may_configure_pg_cep_for_it_and_nothing_is_written_otherwise() {
        run("CREATE ROLE cep_test_owner");
        run("CREATE ROLE cep_test_other");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_owner");
        run("SET ROLE cep_test_owner");
        run("CREATE TABLE owned (id bigserial, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL, kind text)
             PARTITION BY RANGE (created_at)");
        run("RESET ROLE");
        // Even a role an administrator let write pg_cep's tables cannot configure someone else's.
        run("GRANT USAGE ON SCHEMA cep TO cep_test_other");
        run("GRANT ALL ON ALL TABLES IN SCHEMA cep TO cep_test_other");
        run("GRANT ALL ON ALL SEQUENCES IN SCHEMA cep TO cep_test_other");
        run("GRANT SELECT ON owned TO cep_test_other");
        let before = configured();
        assert_eq!(outcome("SELECT 1"), "ok");
        run("SET ROLE cep_test_other");
        for call in [
            "SELECT cep.watch('owned')",
            "SELECT cep.capture('owned')",
            "SELECT cep.define_pattern('p', 'owned', 'user_id', 'created_at', 'a b', '{}')",
            "SELECT * FROM cep.manage_partitions('owned', retention => '1 month', retention_mode => 'drop')",
            "SELECT cep.create_monthly_partition('owned', date '2026-01-01')",
            "SELECT * FROM cep.run_maintenance('owned')",
            "SELECT cep.unwatch('owned')",
            "SELECT cep.uncapture('owned')",
            "SELECT cep.unmanage_partitions('owned')",
        ] {
            let got = Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[call.into()]).unwrap().unwrap();
            assert!(got.starts_with("42501: permission denied: cep."), "{call}: {got}");
            assert!(got.contains("must be owner of table public.owned"), "{call}: {got}");
        }
        // With no table of its own, maintenance of everything does nothing for it.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.run_maintenance()"), Some(0));
        run("RESET ROLE");
        assert_eq!(configured(), before);
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_inherits WHERE inhparent = 'owned'::regclass"), Some(0));
        // Without grants, pg_cep's tables cannot be written directly either.
        run("CREATE ROLE cep_test_nobody");
        run("GRANT USAGE ON SCHEMA cep TO cep_test_nobody");
        run("SET ROLE cep_test_nobody");
        let direct = Spi::get_one_with_args::<String>(
            "SELECT pg_temp.outcome($1)",
            &["INSERT INTO cep.partition_config (parent, control_column, control_type, retention, retention_mode) VALUES ('owned'::regclass, 'created_at', 'timestamptz', '1 day', 'drop')".into()],
        );
        run("RESET ROLE");
        assert_eq!(direct.unwrap().as_deref(), Some("42501: permission denied for table partition_config"));
    }

    #[pg_test]
    fn maintenance_runs_a_tables_own_code_as_its_owner_not_as_the_superuser_who_started_it() {
        run("CREATE ROLE cep_test_owner");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_owner");
        run("CREATE TABLE public.ran_as (who text)");
        run("GRANT INSERT ON public.ran_as TO PUBLIC");
        run("SET ROLE cep_test_owner");
        run("CREATE FUNCTION public.note_who(v int) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN v IS NOT NULL; END $$");
        run("CREATE TABLE owned (v int CHECK (public.note_who(v)), created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)");
        run("CREATE TABLE owned_default PARTITION OF owned DEFAULT");
        run("INSERT INTO owned VALUES (1, now()), (2, now() - interval '1 month')");
        run("RESET ROLE");
        run("DELETE FROM public.ran_as");
        // The superuser registers the table and maintenance moves the rows out of DEFAULT.
        let moved = one::<i64>("SELECT sum(rows_moved)::int8 FROM cep.manage_partitions('owned', premake => 0)");
        assert_eq!(moved, Some(2));
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT who, ',') FROM public.ran_as"), Some("cep_test_owner".into()));
        // And the new partitions are the owner's, created by the owner.
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner), ',') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'owned'::regclass"), Some("cep_test_owner".into()));
        assert_eq!(one::<String>("SELECT current_user::text"), Some("postgres".into()));
    }

    #[pg_test]
    fn null_arguments_name_the_parameter_and_write_nothing() {
        run("CREATE TABLE t (id bigserial PRIMARY KEY, user_id int, amount numeric, created_at timestamptz)");
        let before = configured();
        for (call, parameter) in [
            ("SELECT cep.watch(NULL)", "table"),
            ("SELECT cep.watch('t', key_column => NULL)", "key_column"),
            ("SELECT cep.watch('t', create_index => NULL)", "create_index"),
            ("SELECT cep.capture(NULL)", "table"),
            ("SELECT cep.capture('t', channel => NULL)", "channel"),
            ("SELECT cep.define_pattern('p', 't', 'user_id', 'created_at', NULL, '{}')", "pattern"),
            ("SELECT cep.define_pattern('p', 't', 'user_id', 'created_at', 'a', NULL)", "define"),
            ("SELECT * FROM cep.match_recognize('t', 'user_id', NULL, 'a', '{}')", "order_by"),
            ("SELECT * FROM cep.manage_partitions(NULL)", "parent"),
            ("SELECT * FROM cep.window_aggregate('t', 'created_at', 'amount', NULL)", "width"),
        ] {
            assert_eq!(outcome(call), format!("22004: {parameter} must not be NULL"), "{call}");
        }
        assert_eq!(configured(), before);
    }

    #[pg_test]
    fn dropping_a_configured_table_takes_its_configuration_with_it() {
        partitioned_setup("gone_tx");
        run("SELECT cep.watch('gone_tx')");
        run("SELECT cep.capture('gone_tx', key_column => 'user_id')");
        run("SELECT cep.define_pattern('gone_p', 'gone_tx', 'user_id', 'created_at', 'a b', '{}')");
        run("SELECT count(*) FROM cep.manage_partitions('gone_tx', premake => 0)");
        run("INSERT INTO gone_tx (user_id, amount, created_at) VALUES (1, 5, now()), (1, 6, now())");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(1));
        let before = configured();
        assert_eq!(before, 4);
        run("DROP TABLE gone_tx");
        assert_eq!(configured(), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_state"), Some(0));
        // What reads the configuration keeps working; what happened stays recorded.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.streaming_performance"), Some(0));
        assert_eq!(outcome("SELECT count(*) FROM cep.run_maintenance()"), "ok");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(1));
        assert_eq!(one::<bool>("SELECT cep.drop_pattern('gone_p')"), Some(false));
    }

    #[pg_test]
    fn absurd_sizes_get_a_clear_error_and_write_nothing() {
        run("CREATE TABLE ev (id bigserial PRIMARY KEY, user_id int, kind text, created_at timestamptz)");
        let hop = outcome("SELECT count(*) FROM cep.hop(now(), '36500 days', '1 microsecond')");
        assert!(hop.starts_with("22023: width / slide: 3153600000000000 windows would hold each time, more than 10000"), "{hop}");
        let deep = "repeat('(', 20000) || 'a' || repeat(')', 20000)";
        for call in [
            format!("SELECT * FROM cep.match_recognize('ev', 'user_id', 'created_at', {deep}, '{{}}')"),
            format!("SELECT cep.define_pattern('deep', 'ev', 'user_id', 'created_at', {deep}, '{{}}')"),
            "SELECT cep.define_pattern('nested', 'ev', 'user_id', 'created_at', repeat('(', 40) || 'a' || repeat(')', 40), '{}')".into(),
            "SELECT cep.define_pattern('big', 'ev', 'user_id', 'created_at', repeat('a ', 5000000), '{}')".into(),
            "SELECT cep.define_pattern('alts', 'ev', 'user_id', 'created_at', 'x (' || repeat('a | ', 399) || 'a)+', '{}')".into(),
            "SELECT cep.define_pattern('cond', 'ev', 'user_id', 'created_at', 'a', jsonb_build_object('a', jsonb_build_object('kind', jsonb_build_object('in', (SELECT jsonb_agg(g) FROM generate_series(1, 100000) g)))))".into(),
        ] {
            let got = outcome(&call);
            assert!(got.starts_with("54001: invalid pattern: "), "{call}: {got}");
            assert!(got.len() < 1100, "{call}: a {} byte message", got.len());
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ev'::regclass"), Some(0));
        // A 10 MB value in a rule is refused with a short message, and no rule is stored.
        let rule = outcome("INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('x', 'threshold', jsonb_build_object('metric', repeat('m', 10000000)), 0.5)");
        assert!(rule.starts_with("22023: invalid rule: rule_condition.metric:") && rule.len() < 1100, "{}", &rule[..rule.len().min(300)]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_rules"), Some(0));
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
    fn a_table_oid_that_no_longer_exists_gets_42p01_naming_the_parameter() {
        run("CREATE TABLE gone (id int PRIMARY KEY, user_id int, amount numeric, created_at timestamptz)");
        let oid = one::<i64>("SELECT 'gone'::regclass::oid::int8").unwrap();
        run("SELECT cep.watch('gone', 'user_id', 'amount', 'created_at')");
        run("DROP TABLE gone");
        for (call, parameter) in [
            (format!("SELECT cep.unwatch({oid}::oid::regclass)"), "table"),
            (format!("SELECT cep.watch_rollups({oid}::oid::regclass, false)"), "table"),
            (format!("SELECT cep.uncapture({oid}::oid::regclass)"), "table"),
            (format!("SELECT cep.watch({oid}::oid::regclass)"), "table"),
            (format!("SELECT cep.unmanage_partitions({oid}::oid::regclass)"), "parent"),
            (format!("SELECT * FROM cep.run_maintenance({oid}::oid::regclass)"), "parent"),
            (format!("SELECT * FROM cep.match_recognize({oid}::oid::regclass, 'user_id', 'created_at', 'a', '{{}}')"), "relation"),
        ] {
            let got = outcome(&call);
            assert_eq!(got, format!("42P01: {parameter}: relation with OID {oid} does not exist"), "{call}");
        }
        // The drop took the watch with it; the session and the view go on.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(0));
        assert!(one::<i64>("SELECT count(*) FROM cep.streaming_performance").is_some());
    }

    #[pg_test]
    fn alter_watch_changes_one_setting_and_keeps_the_others() {
        seed_setup();
        run("SELECT cep.watch('transactions', channel => 'fraud', block_at => 0.9, on_block => 'skip', log_assessments => 'alerts')");
        let level = one::<pgrx::JsonB>("SELECT cep.alter_watch('transactions', alert_level => 'high')").unwrap().0;
        assert_eq!(level["alert_level"], "high");
        assert_eq!((level["channel"].as_str(), level["block_at"].as_f64(), level["on_block"].as_str()), (Some("fraud"), Some(0.9), Some("skip")));
        assert_eq!(level["log_assessments"], "alerts");
        let trigger = "SELECT pg_get_triggerdef(oid) LIKE '%BEFORE INSERT%FOR EACH ROW%' FROM pg_trigger WHERE tgrelid = 'transactions'::regclass AND tgname = 'cep_monitor'";
        assert_eq!(one::<bool>(trigger), Some(true), "still blocking, row by row");
        // Bad values and contradictions are refused, and nothing changes.
        assert!(outcome("SELECT cep.alter_watch('transactions', alert_level => 'severe')").starts_with("22023: alert_level"));
        assert!(outcome("SELECT cep.alter_watch('transactions', block_at => 0.5, blocking => false)").starts_with("22023: block_at and blocking"));
        assert!(outcome("SELECT cep.alter_watch('transactions', key_column => 'nobody')").starts_with("42703"));
        assert_eq!(one::<String>("SELECT alert_level || ' ' || block_at || ' ' || key_column FROM cep.watches"), Some("high 0.9 user_id".into()));
        // Blocking off: the monitor goes back to one call per statement; the channel stays.
        let off = one::<pgrx::JsonB>("SELECT cep.alter_watch('transactions', blocking => false)").unwrap().0;
        assert!(off["block_at"].is_null());
        assert_eq!(off["channel"], "fraud");
        assert_eq!(one::<bool>(trigger), Some(false));
        assert!(outcome("SELECT cep.alter_watch('transactions', blocking => true)").starts_with("22023: blocking => true needs"));
        run("CREATE TABLE unwatched (id int)");
        assert!(outcome("SELECT cep.alter_watch('unwatched', alert_level => 'low')").starts_with("55000: unwatched is not watched"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(1));
    }

    #[pg_test]
    fn a_cooldown_keeps_one_open_alert_per_key_and_rule_set_and_counts_the_repeats_on_it() {
        seed_setup();
        let set = one::<pgrx::JsonB>("SELECT cep.alter_watch('transactions', cooldown => '10 minutes')").unwrap().0;
        assert_eq!(set["cooldown"], "00:10:00");
        let insert = |rows: &[(i32, &str)]| {
            let values: Vec<String> = rows.iter().map(|(k, t)| format!("({k}, 50000, 'A', '2026-01-15 12:{t}+00')")).collect();
            run(&format!("INSERT INTO transactions (user_id, amount, location, created_at) VALUES {}", values.join(", ")));
        };
        for t in ["00", "01", "02", "03", "04"] {
            insert(&[(1, t)]);
        }
        // Several repeats in one statement, and another key.
        insert(&[(1, "06"), (1, "07"), (2, "07")]);
        // Repeats are counted in memory and written about once a second; now, here.
        assert_eq!(one::<i64>("SELECT cep.flush_alert_repeats()"), Some(1));
        let one_key =
            "SELECT count(*)::text || ' ' || sum(repeats) || ' ' || max(last_seen)::text || ' ' || max(max_score) FROM cep.alerts WHERE key = '1'";
        assert_eq!(one::<String>(one_key), Some("1 6 2026-01-15 12:07:00+00 0.6".into()));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '2' AND repeats = 0"), Some(1));
        // The next cooldown window opens a new alert.
        insert(&[(1, "11")]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(2));
        // Acknowledged, it still counts repeats; resolved, the next repeat opens a new one.
        let second = one::<i64>("SELECT max(alert_id) FROM cep.alerts WHERE key = '1'").unwrap();
        let acked = one::<String>(&format!("SELECT state || ' ' || state_changed_by || ' ' || note FROM cep.acknowledge_alert({second}, 'looking')"));
        assert_eq!(acked, Some("acknowledged postgres looking".into()));
        insert(&[(1, "12")]);
        run("SELECT cep.flush_alert_repeats()");
        assert_eq!(one::<i32>(&format!("SELECT repeats FROM cep.alerts WHERE alert_id = {second}")), Some(1));
        assert_eq!(one::<String>(&format!("SELECT state || ' ' || note FROM cep.resolve_alert({second})")), Some("resolved looking".into()));
        insert(&[(1, "13")]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(3));
        // Bad states and unknown alerts are refused, and nothing changes.
        assert!(outcome(&format!("SELECT cep.set_alert_state({second}, 'closed')")).starts_with("22023: state: closed"));
        assert!(outcome("SELECT cep.acknowledge_alert(-1)").starts_with("P0002: alert_id: alert -1 does not exist"));
        assert_eq!(one::<String>(&format!("SELECT state FROM cep.alerts WHERE alert_id = {second}")), Some("resolved".into()));
        // A cooldown with months is refused; '0' turns it off, and every row alerts again.
        assert!(outcome("SELECT cep.alter_watch('transactions', cooldown => '1 month')").starts_with("22023: cooldown"));
        assert!(one::<pgrx::JsonB>("SELECT cep.alter_watch('transactions', cooldown => '0')").unwrap().0["cooldown"].is_null());
        insert(&[(1, "14"), (1, "15")]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(5));
    }

    #[pg_test]
    fn a_rule_can_be_scoped_to_tables_turned_off_on_one_and_tried_in_shadow_mode() {
        seed_setup();
        run("CREATE TABLE payouts (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL)");
        run("SELECT cep.watch('payouts')");
        let big = "(SELECT rule_id FROM cep.risk_rules WHERE rule_name = '大额交易检测')";
        // Scoped to payouts only: transactions no longer alert on large amounts.
        run(&format!("UPDATE cep.risk_rules SET tables = ARRAY['payouts'::regclass::oid] WHERE rule_id = {big}"));
        assert_eq!(one::<i32>(&format!("SELECT version FROM cep.risk_rules WHERE rule_id = {big}")), Some(2), "scoping is a new version");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (1, 50000, 'A', '2026-01-15 12:00+00')");
        run("INSERT INTO payouts (user_id, amount, created_at) VALUES (1, 50000, '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT string_agg(table_name, ',') FROM cep.alerts"), Some("public.payouts".into()));
        // Turned off on payouts too: nowhere.
        run(&format!("UPDATE cep.risk_rules SET tables = NULL, except_tables = ARRAY['payouts'::regclass::oid, 'transactions'::regclass::oid] WHERE rule_id = {big}"));
        run("INSERT INTO payouts (user_id, amount, created_at) VALUES (2, 50000, '2026-01-15 12:01+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(1));
        // In shadow mode on every table: scored and recorded as a 'shadow' assessment, never an
        // alert, and it does not block either.
        run(&format!("UPDATE cep.risk_rules SET except_tables = NULL, mode = 'shadow' WHERE rule_id = {big}"));
        run("SELECT cep.watch('transactions', block_at => 0.5)");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (3, 50000, 'A', '2026-01-15 12:02+00')");
        assert_eq!(one::<i64>("SELECT count(*) FROM transactions WHERE user_id = 3"), Some(1), "not blocked");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(1));
        assert_eq!(
            one::<String>("SELECT level || ' ' || score || ' ' || triggered_rules::text FROM cep.risk_assessments WHERE key = '3'"),
            Some(format!("shadow 0.6 {{{}}}", one::<i32>(big).unwrap()))
        );
        // SQL scoring shows the shadow rule firing, but it adds nothing to the score.
        assert_eq!(
            one::<f64>("SELECT total_risk_score FROM cep.assess_transaction('transactions'::regclass, '9', 50000, 'A', '2026-01-15 12:03+00')"),
            Some(0.0)
        );
        assert!(outcome(&format!("UPDATE cep.risk_rules SET mode = 'dry' WHERE rule_id = {big}")).starts_with("23514"));
    }

    #[pg_test]
    fn retention_deletes_only_what_is_older_than_it_in_batches() {
        seed_setup();
        run("INSERT INTO transactions (user_id, amount, location, created_at) SELECT g, 50000, 'A', '2026-01-15 12:00+00' FROM generate_series(1, 5) g");
        run("SELECT cep.watch('transactions', log_assessments => 'all')");
        run("INSERT INTO transactions (user_id, amount, location, created_at) SELECT g, 50000, 'A', '2026-01-15 12:00+00' FROM generate_series(6, 8) g");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(8));
        run("UPDATE cep.alerts SET created_at = now() - interval '100 days' WHERE key::int <= 5");
        run("UPDATE cep.risk_assessments SET created_at = now() - interval '100 days'");
        // Nothing is set: nothing is deleted.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.apply_retention()"), Some(0));
        let deleted =
            "SELECT string_agg(table_name || ' ' || deleted, ', ' ORDER BY table_name) FROM cep.apply_retention(alerts => '90 days', batch => 3)";
        assert_eq!(one::<String>(deleted), Some("cep.alerts 3".into()));
        assert_eq!(one::<String>(deleted), Some("cep.alerts 2".into()));
        assert_eq!(one::<String>(deleted), Some("cep.alerts 0".into()));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(3), "the recent ones stay");
        run("SET cep.assessment_retention = '30 days'");
        assert_eq!(one::<String>("SELECT table_name || ' ' || deleted FROM cep.apply_retention()"), Some("cep.risk_assessments 3".into()));
        assert!(outcome("SELECT * FROM cep.apply_retention(batch => 0)").starts_with("22023: batch"));
        assert!(outcome("SET cep.alert_retention = 'forever'; SELECT * FROM cep.apply_retention()").starts_with("22007"));
    }

    #[pg_test]
    fn alerts_on_a_partitioned_table_name_their_row() {
        seed_setup();
        run("CREATE TABLE tx_parts (id bigserial, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL,
             PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)");
        run("CREATE TABLE tx_parts_2026_01 PARTITION OF tx_parts FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')");
        run("SELECT cep.watch('tx_parts')");
        assert_eq!(one::<String>("SELECT pk_column::text FROM cep.watches WHERE relid = 'tx_parts'::regclass"), Some("id".into()));
        run("INSERT INTO tx_parts (user_id, amount, created_at) VALUES (4, 50000, '2026-01-15 12:00+00')");
        let id = one::<i64>("SELECT id FROM tx_parts").unwrap();
        assert_eq!(
            one::<String>("SELECT row_pk || ' ' || event_time FROM cep.alerts WHERE relid = 'tx_parts'::regclass"),
            Some(format!("{id} 2026-01-15 12:00:00+00"))
        );
    }

    #[pg_test]
    fn backtest_rule_replays_history_as_the_monitor_would_have_scored_it() {
        seed_setup();
        // Key 1: five rows ten minutes apart; key 2: one large row.
        run("INSERT INTO transactions (user_id, amount, location, created_at)
             SELECT 1, 100, 'A', '2026-01-15 12:00+00'::timestamptz + make_interval(mins => 10 * g) FROM generate_series(0, 4) g");
        run("INSERT INTO transactions (user_id, amount, location, created_at) VALUES (2, 9000, 'A', '2026-01-15 12:30+00')");
        run("SELECT cep.alter_watch('transactions', block_at => 1.2)");
        let busy = r#"'{"rule_type": "threshold", "risk_score": 0.5, "rule_condition": {"metric": "transaction_count", "operator": ">=", "value": 3, "window": "1_hour"}}'"#;
        let fired = one::<String>(&format!(
            "SELECT string_agg(key || '@' || to_char(event_time AT TIME ZONE 'UTC', 'HH24:MI') || ' ' || total_score || ' ' || level || ' ' || would_alert, ', ' ORDER BY key, event_time)
             FROM cep.backtest_rule({busy}, 'transactions', '2026-01-15 00:00+00', '2026-01-16 00:00+00')"
        ));
        assert_eq!(fired, Some("1@12:20 0.5 medium true, 1@12:30 0.5 medium true, 1@12:40 0.5 medium true".into()));
        // The range starts later, but rows before it still count in the windows.
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM cep.backtest_rule({busy}, 'transactions', '2026-01-15 12:35+00', '2026-01-16')")),
            Some(1)
        );
        // Next to the live rules: a large amount and this rule would block at 1.2.
        let big = r#"'{"rule_type": "threshold", "risk_score": 0.7, "rule_condition": {"metric": "amount", "operator": ">", "value": 5000}}'"#;
        assert_eq!(
            one::<String>(&format!(
                "SELECT key || ' ' || rule_score || ' ' || total_score || ' ' || would_block FROM cep.backtest_rule({big}, 'transactions')"
            )),
            Some("2 0.7 0.7 false".into())
        );
        // Nothing was written by the replays.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(0));
        assert!(outcome("SELECT * FROM cep.backtest_rule('{\"rule_type\": \"threshold\"}', 'transactions')")
            .starts_with("22004: invalid rule: risk_score"));
        run("CREATE TABLE quiet (id int)");
        assert!(outcome(&format!("SELECT * FROM cep.backtest_rule({big}, 'quiet')")).starts_with("55000"));
        assert!(outcome(&format!("SELECT * FROM cep.backtest_rule({big}, NULL)")).starts_with("22004: relation must not be NULL"));
    }

    #[pg_test]
    fn a_document_nested_deeper_than_the_json_parser_takes_gets_54001_not_xx000() {
        run("CREATE TABLE ev (id bigserial PRIMARY KEY, user_id int, kind text, created_at timestamptz)");
        let deep = "(repeat('{\"a\":', 200) || '1' || repeat('}', 200))::jsonb";
        for call in [
            format!("SELECT cep.define_pattern('deep', 'ev', 'user_id', 'created_at', 'a', {deep})"),
            format!("SELECT count(*) FROM cep.match_recognize('ev', 'user_id', 'created_at', 'a', {deep})"),
            format!("SELECT cep.validate_rule(jsonb_build_object('rule_type', 'threshold', 'risk_score', 0.5, 'rule_condition', {deep}))"),
            format!("INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('deep', 'threshold', {deep}, 0.5)"),
        ] {
            let got = outcome(&call);
            assert!(got.starts_with("54001: ") && got.contains("nested deeper than 128 levels"), "{call}: {got}");
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.risk_rules"), Some(0));
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

    /// `\df+` explains every function: each one in schema cep has a comment.
    #[pg_test]
    fn every_function_has_a_comment() {
        let missing = one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p \
             WHERE p.pronamespace = 'cep'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL",
        );
        assert_eq!(missing, None, "functions without a comment");
        assert!(one::<String>("SELECT obj_description('cep.watch'::regproc, 'pg_proc')").unwrap().starts_with("Watches a table"));
    }

    /// PostgreSQL 18's virtual generated columns are NULL in every trigger: a role that pg_cep
    /// reads in its triggers refuses one (0A000) and registers nothing; queries over the table
    /// (window_aggregate) read it computed.
    #[cfg(not(feature = "pg15"))]
    #[pg_test]
    fn virtual_generated_columns_are_refused_where_triggers_read_them() {
        run("SET TimeZone = 'UTC'");
        run("CREATE TABLE vtx (id bigserial PRIMARY KEY, user_id integer, cents bigint, \
             amount numeric GENERATED ALWAYS AS (cents / 100.0) VIRTUAL, \
             vkey integer GENERATED ALWAYS AS (user_id * 10) VIRTUAL, \
             event_type text, location text, created_at timestamptz NOT NULL DEFAULT now())");
        let refused = outcome("SELECT cep.watch('vtx', 'user_id', 'amount', 'created_at', 'location')");
        assert!(refused.starts_with("0A000: amount_column \"amount\" of \"vtx\" is a virtual generated column"), "{refused}");
        assert!(outcome("SELECT cep.watch('vtx', 'vkey', 'cents', 'created_at', 'location')").starts_with("0A000: key_column \"vkey\""));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(0));
        assert!(outcome("SELECT cep.capture('vtx', key_column => 'vkey')").starts_with("0A000: key_column \"vkey\""));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.captures"), Some(0));
        let pattern = outcome(
            r#"SELECT cep.define_pattern('big', 'vtx', 'user_id', 'created_at', 'a b', '{"a": {"amount": {">": 1}}, "b": {"event_type": "x"}}')"#,
        );
        assert!(pattern.starts_with("0A000: define: column \"amount\" of \"vtx\" is a virtual generated column"), "{pattern}");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'vtx'::regclass"), Some(0));
        // The same table watched on its stored columns works, and a query computes the virtual one.
        run("SELECT cep.watch('vtx', 'user_id', 'cents', 'created_at', 'location')");
        run("INSERT INTO vtx (user_id, cents, created_at) VALUES (1, 250, '2026-01-01 10:00:10'), (1, 150, '2026-01-01 10:00:20')");
        let sum = one::<String>(
            "SELECT sum::text FROM cep.window_aggregate('vtx', 'created_at', 'amount', '1 minute', \
             start => '2026-01-01 10:00', finish => '2026-01-01 10:01') WHERE count > 0",
        );
        assert_eq!(sum.as_deref().map(|s| s.parse::<f64>().unwrap()), Some(4.0));
    }
}
