//! What is refused or survived: NULL arguments, absurd sizes, deep documents, dropped tables and
//! OIDs, PostgreSQL 18's virtual generated columns.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

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
            (format!("SELECT cep.alter_watch({oid}::oid::regclass, block_at => 0.5)"), "table"),
            (format!("SELECT cep.capture({oid}::oid::regclass)"), "table"),
            (format!("SELECT cep.define_pattern('p', {oid}::oid::regclass, 'user_id', 'created_at', 'a', '{{}}')"), "source"),
            (format!("SELECT * FROM cep.evaluate_risk_rules({oid}::oid::regclass, '1', 1, 'A', now())"), "p_table"),
            (format!("SELECT * FROM cep.assess_transaction({oid}::oid::regclass, '1', 1, 'A', now())"), "p_table"),
            (format!("SELECT * FROM cep.backtest_rule('{{}}', {oid}::oid::regclass)"), "relation"),
            (format!("SELECT * FROM cep.window_aggregate({oid}::oid::regclass, 'created_at', 'amount', '1 minute')"), "relation"),
            (format!("SELECT * FROM cep.manage_partitions({oid}::oid::regclass)"), "parent"),
            (format!("SELECT cep.alter_partitions({oid}::oid::regclass, premake => 1)"), "parent"),
            (format!("SELECT cep.create_monthly_partition({oid}::oid::regclass, '2026-01-01')"), "parent"),
            (format!("SELECT cep.window_cache_warm({oid}::oid::regclass)"), "table"),
        ] {
            let got = outcome(&call);
            assert_eq!(got, format!("42P01: {parameter}: relation with OID {oid} does not exist"), "{call}");
        }
        // The drop took the watch with it; the session and the view go on.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(0));
        assert!(one::<i64>("SELECT count(*) FROM cep.streaming_performance").is_some());
    }

    #[pg_test]
    fn a_null_where_a_value_is_needed_gets_22004_naming_the_parameter_and_writes_nothing() {
        seed_setup();
        let before = configured();
        let rule = r#"'{"rule_type": "threshold", "risk_score": 0.5, "rule_condition": {"metric": "amount", "operator": ">", "value": 1}}'"#;
        for (call, parameter) in [
            ("cep.watch(NULL)".to_string(), "table"),
            ("cep.watch('transactions', amount_column => NULL)".into(), "amount_column"),
            ("cep.watch('transactions', time_column => NULL)".into(), "time_column"),
            ("cep.watch('transactions', alert_level => NULL)".into(), "alert_level"),
            ("cep.watch('transactions', log_assessments => NULL)".into(), "log_assessments"),
            ("cep.capture(NULL)".into(), "table"),
            ("cep.capture('transactions', channel => NULL)".into(), "channel"),
            ("cep.capture('transactions', high_frequency_window => NULL)".into(), "high_frequency_window"),
            ("cep.define_pattern('p', NULL, 'user_id', 'created_at', 'a', '{}')".into(), "source"),
            ("cep.define_pattern('p', 'transactions', 'user_id', 'created_at', NULL, '{}')".into(), "pattern"),
            ("cep.define_pattern('p', 'transactions', 'user_id', 'created_at', 'a', '{}', channel => NULL)".into(), "channel"),
            ("cep.manage_partitions(NULL)".into(), "parent"),
            ("cep.backtest_rule(NULL, 'transactions')".into(), "rule"),
            (format!("cep.backtest_rule({rule}, 'transactions', since => NULL)"), "since"),
            ("cep.window_aggregate('transactions', 'created_at', 'amount', NULL)".into(), "width"),
        ] {
            let got = outcome(&format!("SELECT * FROM {call}"));
            assert!(got.starts_with(&format!("22004: {parameter} must not be NULL")), "{call}: {got}");
        }
        assert_eq!(configured(), before);
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
        assert!(pattern.starts_with("0A000: define or measures: column \"amount\" of \"vtx\" is a virtual generated column"), "{pattern}");
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
