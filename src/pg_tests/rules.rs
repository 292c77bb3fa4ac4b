//! Rules: the seed's rules, `evaluate_risk_rules`, `validate_rule`, `assess_transaction`, scoping,
//! shadow mode and `backtest_rule`.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

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
}
