//! Watching a table: `watch`, `alter_watch`, the monitor's triggers (statement and row mode,
//! blocking), alerts (written without the executor, cooldowns, retention) and infinite times.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    /// An alert's evidence is built as jsonb directly; it must be the very jsonb `jsonb_in` makes
    /// of its text, byte for byte: key order and duplicates, numbers as numeric_in reads them,
    /// escapes, empty containers; and a NUL in a string is refused as jsonb_in refuses it.
    #[pg_test]
    fn alert_evidence_is_the_jsonb_its_text_reads_as() {
        use serde_json::json;
        // SAFETY: `d` is a jsonb datum made below; jsonb_out returns a palloc'd C string.
        let to_text = |d: pg_sys::Datum| unsafe {
            let out = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(d)]).unwrap();
            std::ffi::CStr::from_ptr(out.cast_mut_ptr()).to_string_lossy().into_owned()
        };
        // SAFETY: `d` is a plain (untoasted) jsonb varlena made below.
        let bytes = |d: pg_sys::Datum| unsafe {
            let p = d.cast_mut_ptr::<pg_sys::varlena>();
            std::slice::from_raw_parts(p as *const u8, pgrx::varlena::varsize_any(p)).to_vec()
        };
        let values = [
            json!({"rule_id": 1, "version": 3, "score": 0.8, "evidence": {"count": 11, "limit": 10, "window": "1 hour"}, "b": true, "a": null}),
            json!([1, 2.5, -3e-7, 1e300, 12345678901234567890u64, -42, 0.1, 1.0000000000000002, "x\"\\\n\u{1}é", [], {}, [[{}]]]),
            json!({"zz": {"y": [], "x": {}}, "": "", "aa": "a", "a": "b", "ab": [false]}),
            json!([]),
            json!({}),
            json!("scalar"),
            json!(3.25),
        ];
        for v in values {
            let container = v.is_array() || v.is_object();
            assert_eq!(crate::pg::alert_rows::built(&v).is_some(), container, "containers are built directly: {v}");
            let direct = crate::pg::alert_rows::jsonb(&v).unwrap();
            let text = std::ffi::CString::new(v.to_string()).unwrap();
            // SAFETY: jsonb_in reads a NUL-terminated string alive for the call.
            let read = unsafe { pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }.unwrap();
            assert_eq!(to_text(direct), to_text(read), "{v}");
            assert_eq!(bytes(direct), bytes(read), "{v}");
        }
        // More distinct numbers than a backend keeps read: those let go are read again, the same.
        let many = serde_json::Value::Array((0..2500).map(|i| json!({"n": i % 1300, "x": (i % 1300) as f64 / 8.0})).collect());
        let text = std::ffi::CString::new(many.to_string()).unwrap();
        // SAFETY: jsonb_in reads a NUL-terminated string alive for the call.
        let read = unsafe { pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }.unwrap();
        assert_eq!(bytes(crate::pg::alert_rows::built(&many).unwrap()), bytes(read));
        assert_eq!(bytes(crate::pg::alert_rows::built(&many).unwrap()), bytes(read), "after the kept numerics were let go");
        assert!(crate::pg::alert_rows::built(&json!({"k": ["a\u{0}b"]})).is_none());
        // Last: the caught ERROR leaves the test's transaction to be rolled back.
        let nul = PgTryBuilder::new(|| format!("{:?}", crate::pg::alert_rows::jsonb(&json!({"k": "a\u{0}b"})).is_some()))
            .catch_others(|e| match e {
                pgrx::pg_sys::panic::CaughtError::PostgresError(report) => report.message().to_string(),
                _ => "other".into(),
            })
            .execute();
        assert_eq!(nul, "unsupported Unicode escape sequence", "a NUL in a string fails as jsonb_in fails it");
    }

    /// An alert row's texts are made in one allocation: each must be the text Postgres makes, byte
    /// for byte, an empty one and one of an odd length between others included.
    #[pg_test]
    fn texts_made_together_are_the_texts_made_one_by_one() {
        let texts: [&[u8]; 5] = [b"public.tx", b"", "k\u{e9}y-7".as_bytes(), b"high", &[b'x'; 1000]];
        let together = crate::pg::direct_insert::text_datums(texts);
        for (text, datum) in texts.iter().zip(together) {
            // SAFETY: copies `text.len()` bytes into a new text, as Postgres makes one.
            let alone = pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text_with_len(text.as_ptr().cast(), text.len() as i32) });
            // SAFETY: both are plain text varlenas made above.
            let (a, b) =
                unsafe { (pgrx::varlena::varlena_to_byte_slice(datum.cast_mut_ptr()), pgrx::varlena::varlena_to_byte_slice(alone.cast_mut_ptr())) };
            assert_eq!(a, b);
            assert_eq!(a, *text);
            assert_eq!(datum.value() % 8, 0, "each text starts maximally aligned");
        }
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

    /// Keys, amounts and row ids are read straight from the datum for integers, float8 and text:
    /// they must read as SQL prints them, a long compressed key and a float4 amount included.
    #[pg_test]
    fn monitor_reads_each_column_type_as_sql_prints_it() {
        seed_setup();
        run("CREATE TABLE tx_types (id int2 PRIMARY KEY, k varchar, amt float4, created_at timestamptz)");
        run("ALTER TABLE tx_types ALTER COLUMN k SET STORAGE main");
        run("SELECT cep.watch('tx_types', key_column => 'k', amount_column => 'amt')");
        run("INSERT INTO tx_types VALUES (-7, repeat('ké', 3000), 20000.1, '2026-01-15 12:00+00'), (8, '', 10000.5, '2026-01-15 12:00+00')");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(format('%s|%s|%s', length(key), key = cep.stored_key(repeat('ké', 3000)), row_pk), ',' ORDER BY alert_id) FROM cep.alerts"
            )
            .unwrap(),
            // The 9,000-byte key is stored in its bounded form, whose hash covers every byte read.
            "707|t|-7,0|f|8"
        );
        // float4 20000.1 is 20000.099609375 in binary: the amount is the decimal SQL prints.
        assert_eq!(
            one::<String>("SELECT string_agg(rules -> 0 -> 'evidence' ->> 'observed', ',' ORDER BY alert_id) FROM cep.alerts").unwrap(),
            "20000.1,10000.5"
        );
        run("CREATE TABLE tx_ints (user_id int8, amount int4, created_at timestamptz)");
        run("SELECT cep.watch('tx_ints')");
        run("INSERT INTO tx_ints VALUES (-9223372036854775808, 2000000000, '2026-01-15 12:00+00')");
        assert_eq!(
            one::<String>("SELECT key || '|' || (rules -> 0 -> 'evidence' ->> 'observed') FROM cep.alerts WHERE relid = 'tx_ints'::regclass")
                .unwrap(),
            "-9223372036854775808|2000000000.0"
        );
    }

    #[pg_test]
    fn watch_refuses_bad_targets_and_registers_nothing() {
        seed_setup();
        run("SELECT cep.unwatch('transactions')");
        run("CREATE VIEW tx_view AS SELECT * FROM transactions");
        assert!(outcome("SELECT cep.watch('tx_view')").starts_with("42809: \"tx_view\" is not a table"));
        assert!(outcome("SELECT cep.watch('transactions', channel => '')").starts_with("22023: channel"));
        assert!(outcome(&format!("SELECT cep.watch('transactions', channel => '{}')", "c".repeat(64))).starts_with("22023: channel"));
        assert_eq!(outcome("SELECT cep.watch('transactions', channel => '  ')"), "22023: channel \"  \" must be 1 to 63 bytes long, not only spaces");
        assert!(outcome("SELECT cep.watch('no_such_table')").starts_with("42P01"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.watches"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgname = 'cep_monitor'"), Some(0));
        assert!(outcome("SELECT * FROM cep.evaluate_risk_rules(1, 1, 'A', now())").starts_with("55000: no table is watched"));
    }

    #[pg_test]
    fn watch_and_alter_watch_refuse_bad_settings_and_change_nothing() {
        seed_setup();
        run("SELECT cep.alter_watch('transactions', block_at => 0.9, channel => 'fraud', cooldown => '5 minutes')");
        run("CREATE VIEW tx_view AS SELECT * FROM transactions");
        let settings = || {
            one::<String>(
                "SELECT (to_jsonb(w) - 'created_at' - 'updated_at')::text || ' ' || (SELECT string_agg(pg_get_triggerdef(oid), '; ' ORDER BY tgname)
                 FROM pg_trigger WHERE tgrelid = 'transactions'::regclass AND NOT tgisinternal) FROM cep.watches w",
            )
        };
        let before = settings();
        for (call, refusal) in [
            ("cep.watch('transactions', block_at => 'NaN')", "22023: block_at NaN must be a score above zero"),
            ("cep.watch('transactions', block_at => 'Infinity')", "22023: block_at inf must be a score above zero"),
            ("cep.watch('transactions', location_column => 'nobody')", "42703: location_column \"nobody\""),
            ("cep.watch('transactions', location_column => 'created_at')", "42804: location_column \"created_at\" has type"),
            ("cep.watch('transactions', channel => NULL)", "22004: channel must not be NULL"),
            ("cep.watch('transactions', on_block => NULL)", "22004: on_block must not be NULL"),
            ("cep.alter_watch('transactions', cooldown => '-1 minute')", "22023: cooldown must be a positive interval"),
            ("cep.alter_watch('transactions', cooldown => '1 month')", "22023: cooldown must be a positive interval"),
            ("cep.alter_watch('transactions', channel => '')", "22023: channel \"\" must be 1 to 63 bytes long"),
            ("cep.alter_watch('tx_view', block_at => 0.5)", "42809: \"tx_view\" is not a table"),
            ("cep.alter_watch(NULL)", "22004: table must not be NULL"),
        ] {
            let got = outcome(&format!("SELECT {call}"));
            assert!(got.starts_with(refusal), "{call}: {got}");
        }
        assert_eq!(settings(), before);
        // The same for the other functions that attach to a table.
        assert!(outcome("SELECT cep.capture('tx_view')").starts_with("42809: \"tx_view\" is not a table"));
        assert!(outcome(r#"SELECT cep.define_pattern('p', 'tx_view', 'user_id', 'created_at', 'a', '{"a": {"location": "x"}}')"#)
            .starts_with("42809: \"tx_view\" is not a table"));
        assert_eq!(one::<i64>("SELECT (SELECT count(*) FROM cep.captures) + (SELECT count(*) FROM cep.patterns)"), Some(0));
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
        // Scoring from SQL says why it cannot, and writes nothing.
        let why = "22023: public.transactions cannot be scored: ";
        let got = outcome("SELECT * FROM cep.evaluate_risk_rules(1, 20000, 'A', now())");
        assert!(got.starts_with(why) && got.contains("created_at"), "{got}");
        let rule = r#"{"rule_type": "threshold", "risk_score": 0.5, "rule_condition": {"metric": "amount", "operator": ">", "value": 1}}"#;
        let got = outcome(&format!("SELECT * FROM cep.backtest_rule('{rule}', 'transactions')"));
        assert!(got.starts_with(why) && got.contains("created_at"), "{got}");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts"), Some(1));
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
        // The constraint changed in the same session: the compiled one is not reused (and a NOT
        // VALID one holds for new rows).
        run("ALTER TABLE cep.alerts DROP CONSTRAINT no_forbidden, ADD CONSTRAINT no_forbidden CHECK (key <> '601') NOT VALID");
        assert_eq!(
            outcome("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (30, 601, 20000, 'A', '2026-01-15 12:00+00')"),
            "23514: new row for relation \"alerts\" violates check constraint \"no_forbidden\""
        );
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (31, 666, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(written(), before + 2, "stored directly under the changed constraint");
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
        assert_eq!(written(), before + 3, "stored directly for a writer without rights");
        // A default that calls a user's function, or a column added to the table: the executor's.
        run("CREATE FUNCTION pg_temp.opened() RETURNS text LANGUAGE sql AS $$ SELECT 'open' $$");
        run("ALTER TABLE cep.alerts ALTER COLUMN state SET DEFAULT pg_temp.opened()");
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (13, 669, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(written(), before + 3, "nothing stored directly while a default is a user's");
        run("ALTER TABLE cep.alerts ALTER COLUMN state SET DEFAULT 'open'");
        run("ALTER TABLE cep.alerts ADD COLUMN team text DEFAULT 'by the executor'");
        run("INSERT INTO tx_a (id, user_id, amount, location, created_at) VALUES (12, 668, 20000, 'A', '2026-01-15 12:00+00')");
        assert_eq!(one::<String>("SELECT team FROM cep.alerts WHERE key = '668'"), Some("by the executor".into()));
        assert_eq!(written(), before + 3, "nothing stored directly while the table has a column pg_cep does not know");
        assert_eq!(
            one::<String>("SELECT string_agg(key || ':' || state, ',' ORDER BY alert_id) FROM cep.alerts WHERE key::int >= 667"),
            Some("667:open,670:open,669:open,668:open".into())
        );
    }

    /// Index expressions and predicates are compiled once per backend for alerts stored without
    /// the executor: every index must hold exactly the rows and keys its definition asks for, also
    /// after an index is replaced by another of the same name within the session.
    #[pg_test]
    fn alerts_stored_without_the_executor_are_indexed_as_each_index_defines() {
        let written = crate::pg::alert_rows::rows_written;
        seed_setup();
        run("CREATE EXTENSION IF NOT EXISTS amcheck");
        run("CREATE EXTENSION IF NOT EXISTS pageinspect");
        let insert = |id: i32, user: i32, amount: i32, location: &str| {
            run(&format!(
                "INSERT INTO transactions (id, user_id, amount, location, created_at) VALUES ({id}, {user}, {amount}, '{location}', '2026-01-15 12:0{id}+00')"
            ))
        };
        // Every btree index of cep.alerts, checked against the table: each row its predicate takes
        // is there, under the key its expressions compute.
        let check_all = || {
            run("SELECT bt_index_check(indexrelid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_am a ON a.oid = c.relam WHERE indrelid = 'cep.alerts'::regclass AND amname = 'btree'")
        };
        // And no row its predicate leaves out: the test index is one leaf page.
        let entries = || one::<i64>("SELECT count(*) FROM bt_page_items('cep.alerts_test_idx', 1)");
        // What an index returns, read through an index alone.
        let through_index = |sql: &str| {
            run("SET LOCAL enable_seqscan = off");
            run("SET LOCAL enable_bitmapscan = off");
            let n = one::<i64>(sql);
            run("RESET enable_seqscan");
            run("RESET enable_bitmapscan");
            n
        };
        run("CREATE INDEX alerts_test_idx ON cep.alerts ((lower(level) || ':' || key)) WHERE score < 0.7");
        let before = written();
        insert(1, 2, 20000, "A");
        insert(2, 3, 20000, "A");
        // A quiet row, then a large amount from elsewhere: 0.6 + 0.7.
        insert(3, 9, 5, "A");
        insert(4, 9, 20000, "B");
        assert_eq!(written(), before + 3, "three alerts stored directly");
        assert_eq!(
            one::<String>("SELECT string_agg(key || '=' || round(score::numeric, 2), ',' ORDER BY alert_id) FROM cep.alerts"),
            Some("2=0.60,3=0.60,9=1.30".into())
        );
        check_all();
        assert_eq!(entries(), Some(2), "the alert scoring 1.3 is not in an index of scores below 0.7");
        assert_eq!(through_index("SELECT count(*) FROM cep.alerts WHERE lower(level) || ':' || key = 'medium:3' AND score < 0.7"), Some(1));
        assert_eq!(through_index("SELECT count(*) FROM cep.alerts WHERE coalesce(xid, '0'::xid8) = pg_current_xact_id()"), Some(3));
        // The same name, another definition: the session must not use what it compiled before.
        run("DROP INDEX cep.alerts_test_idx");
        run("CREATE INDEX alerts_test_idx ON cep.alerts ((upper(level) || '/' || key)) WHERE score > 1");
        insert(5, 6, 20000, "A");
        insert(6, 10, 5, "A");
        insert(7, 10, 20000, "C");
        assert_eq!(written(), before + 5);
        check_all();
        assert_eq!(entries(), Some(2), "the alerts scoring 1.3, and no other");
        let key_10 = "(SELECT upper(level) || '/10' FROM cep.alerts WHERE key = '10')";
        assert_eq!(through_index(&format!("SELECT count(*) FROM cep.alerts WHERE upper(level) || '/' || key = {key_10} AND score > 1")), Some(1));
        assert_eq!(through_index("SELECT count(*) FROM cep.alerts WHERE coalesce(xid, '0'::xid8) = pg_current_xact_id()"), Some(5));
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
        // Repeats are counted in memory and written once per cep.alert_repeat_flush_interval; now, here.
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
        let found = crate::pg::alert_rows::open_alerts_found();
        insert(&[(1, "12")]);
        assert_eq!(
            crate::pg::alert_rows::open_alerts_found() - found,
            1,
            "the acknowledged alert, forgotten by the session, is found through the index"
        );
        assert_eq!(one::<i32>(&format!("SELECT repeats FROM cep.alerts WHERE alert_id = {second}")), Some(0), "counted in memory, not yet written");
        run("SELECT cep.flush_alert_repeats()");
        assert_eq!(one::<i32>(&format!("SELECT repeats FROM cep.alerts WHERE alert_id = {second}")), Some(1));
        assert_eq!(one::<String>(&format!("SELECT state || ' ' || note FROM cep.resolve_alert({second})")), Some("resolved looking".into()));
        let found = crate::pg::alert_rows::open_alerts_found();
        insert(&[(1, "13")]);
        assert_eq!(crate::pg::alert_rows::open_alerts_found(), found, "a resolved alert is not found");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(3));
        // Bad states and unknown alerts are refused, and nothing changes.
        assert!(outcome(&format!("SELECT cep.set_alert_state({second}, 'closed')")).starts_with("22023: state: closed"));
        assert!(outcome("SELECT cep.acknowledge_alert(-1)").starts_with("P0002: alert_id: alert -1 does not exist"));
        assert_eq!(one::<String>(&format!("SELECT state FROM cep.alerts WHERE alert_id = {second}")), Some("resolved".into()));
        // A note and key that JSON escapes six bytes each would make the notification 8000 bytes
        // or more, which NOTIFY refuses: it is sent shortened, and the note is kept whole.
        run(&format!("UPDATE cep.alerts SET key = repeat(chr(1), 200), table_name = repeat(chr(1), 200) WHERE alert_id = {second}"));
        assert_eq!(
            one::<String>(&format!("SELECT state || ' ' || octet_length(note) FROM cep.set_alert_state({second}, 'resolved', repeat(chr(1), 1000))")),
            Some("resolved 1000".into())
        );
        run(&format!("UPDATE cep.alerts SET key = '1', table_name = 'public.transactions' WHERE alert_id = {second}"));
        // A cooldown with months is refused; '0' turns it off, and every row alerts again.
        assert!(outcome("SELECT cep.alter_watch('transactions', cooldown => '1 month')").starts_with("22023: cooldown"));
        assert!(one::<pgrx::JsonB>("SELECT cep.alter_watch('transactions', cooldown => '0')").unwrap().0["cooldown"].is_null());
        insert(&[(1, "14"), (1, "15")]);
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '1'"), Some(5));
        // Under a cooldown rows are scored without evidence and those that open an alert are
        // explained then: every alert holds the same evidence as one written without a cooldown.
        assert_eq!(
            one::<String>("SELECT count(*) || ' ' || count(DISTINCT r) FROM cep.alerts, jsonb_array_elements(rules) r WHERE r ->> 'rule_id' = '2'"),
            Some("6 1".into())
        );
        assert_eq!(
            one::<String>("SELECT DISTINCT r::text FROM cep.alerts, jsonb_array_elements(rules) r WHERE r ->> 'rule_id' = '2'"),
            Some(r#"{"score": 0.6, "rule_id": 2, "version": 1, "evidence": {"value": 10000.0, "metric": "amount", "observed": 50000.0, "operator": ">"}}"#.into())
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM cep.alerts, jsonb_array_elements(rules) r WHERE jsonb_typeof(r -> 'evidence') <> 'object'"),
            Some(0)
        );
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
}
