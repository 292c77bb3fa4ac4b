//! `ALTER EXTENSION pg_cep UPDATE` from every released version gives the same objects as a
//! fresh `CREATE EXTENSION`, and keeps the user's rules, watches and alerts.

use pg_cep_e2e::{port, Client, NoTls, TestDb};

/// Every object of the extension, described: functions with their arguments and results,
/// tables and views with their columns, indexes, triggers, constraints, row-security policies and grants.
const CATALOG: &str = "
    SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || pg_get_function_result(p.oid)
           || ' ' || p.provolatile::text || p.proisstrict::text || p.prosecdef::text || ' ' || coalesce(array_to_string(p.proconfig, ';'), '')
           || ' ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
    FROM pg_proc p WHERE p.pronamespace = 'cep'::regnamespace
    UNION ALL
    SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text FROM pg_event_trigger
    UNION ALL
    SELECT c.relkind::text || ' ' || c.relname || '(' || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                                                  || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
                                                           FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') || ')'
           || coalesce(' with ' || array_to_string(c.reloptions, ','), '')
    FROM pg_class c WHERE c.relnamespace = 'cep'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    WHERE c.relnamespace = 'cep'::regnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'cep'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'cep'::regnamespace
    UNION ALL
    SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid) FROM pg_class c
    WHERE c.relnamespace = 'cep'::regnamespace AND c.relkind = 'v'
    UNION ALL
    SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '')
    FROM pg_policies WHERE schemaname = 'cep'
    UNION ALL
    SELECT 'grants ' || c.relname || ' ' || c.relrowsecurity::text || ' ' || coalesce(array_to_string(ARRAY(SELECT unnest(c.relacl)::text ORDER BY 1), ','), '')
    FROM pg_class c WHERE c.relnamespace = 'cep'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
    UNION ALL
    SELECT 'schema grants ' || coalesce(array_to_string(ARRAY(SELECT unnest(nspacl)::text ORDER BY 1), ','), '') FROM pg_namespace WHERE nspname = 'cep'
    UNION ALL
    SELECT 'config ' || c.relname FROM pg_extension e, unnest(e.extconfig) x JOIN pg_class c ON c.oid = x WHERE e.extname = 'pg_cep'
    ORDER BY 1";

fn catalog(c: &mut Client) -> Vec<String> {
    c.query(CATALOG, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

#[test]
fn updating_from_0_1_0_equals_a_fresh_install_and_keeps_user_data() {
    updating_from("0.1.0");
}

#[test]
fn updating_from_0_2_0_equals_a_fresh_install_and_keeps_user_data() {
    updating_from("0.2.0");
}

fn updating_from(release: &str) {
    let fresh = TestDb::new("upgrade_fresh");
    let expected = catalog(&mut fresh.connect());

    let old = TestDb::without_extension(&format!("upgrade_from_{}", release.replace('.', "_")));
    let mut c = old.connect();
    c.batch_execute(&format!("CREATE EXTENSION pg_cep VERSION '{release}'")).unwrap();
    c.batch_execute(
        "CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL,
                                    location text, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
         VALUES ('big', 'threshold', '{\"metric\": \"amount\", \"operator\": \">\", \"value\": 10000}', 0.6);
         SELECT cep.watch('transactions');
         INSERT INTO transactions (user_id, amount) VALUES (1, 50000);",
    )
    .unwrap();
    let long = "c".repeat(70);
    if release == "0.2.0" {
        // Settings 0.2.0's functions took that fail every write: NOTIFY refuses the channel at
        // commit, and the window reaches back past the earliest timestamp when the changes are
        // counted. (Its SQL calls this build's library, which refuses them now, and a capture's
        // partitions of the change log would differ from the fresh install's: written directly.)
        c.batch_execute(&format!(
            "CREATE TABLE nodes (id bigint PRIMARY KEY, v int);
             INSERT INTO cep.captures (relid, channel, high_frequency_window, anomaly_channel) VALUES ('nodes'::regclass, '{long}', '7000 years', 'cep_anomalies');
             INSERT INTO cep.patterns (name, source, partition_by, order_by, id_column, pattern, define, contiguity, after_match, channel, max_partials)
             VALUES ('long_channel', 'transactions'::regclass, 'user_id', 'created_at', 'id', 'a', '{{\"a\": {{\"location\": \"x\"}}}}',
                     'skip_till_next', 'past_last_row', '{long}', 1000);
             -- Partial matches of a key 0.2.0 stored whole (1,500 bytes), of a short one, and of a
             -- short key shaped like a long one's bounded form (built here with SQL: 950 bytes,
             -- the mark, a SHA-256), which 0.3.0 hashes as well.
             INSERT INTO cep.pattern_state (pattern_id, key, state)
             SELECT pattern_id, k, '{{}}' FROM cep.patterns,
                    unnest(ARRAY[repeat('k', 1500), 'short',
                                 repeat('m', 950) || '...sha256:' || encode(sha256(convert_to(repeat('m', 2000), 'UTF8')), 'hex')]) k;"
        ))
        .unwrap();
    }
    // Until the update, a transaction that notifies cannot be prepared (its notifications need
    // 0.3.0's table): the error says what to do, and nothing of the transaction stays.
    let err = c.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (2, 50000); PREPARE TRANSACTION 'cep_old'").unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("need pg_cep's 0.3.0 objects; run ALTER EXTENSION pg_cep UPDATE"), "{err:?}");
    c.batch_execute("ROLLBACK").unwrap();
    let left: i64 = c
        .query_one("SELECT (SELECT count(*) FROM transactions WHERE user_id = 2) + (SELECT count(*) FROM cep.alerts WHERE key = '2') + (SELECT count(*) FROM pg_prepared_xacts)", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // The update's WARNINGs, read on a connection of its own.
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = warnings.clone();
    let mut updater = format!("host=127.0.0.1 port={} user=postgres dbname={}", port(), old.name)
        .parse::<postgres::Config>()
        .unwrap()
        .notice_callback(move |n| seen.lock().unwrap().push(format!("{}: {}", n.severity(), n.message())))
        .connect(NoTls)
        .unwrap();
    updater.batch_execute("ALTER EXTENSION pg_cep UPDATE").unwrap();
    drop(updater);
    let warnings = warnings.lock().unwrap().clone();
    if release == "0.2.0" {
        assert_eq!(
            warnings,
            ["WARNING: pg_cep: settings NOTIFY or timestamp arithmetic would refuse were replaced (channels by their defaults, windows by 100 years): capture of public.nodes, pattern 'long_channel'"]
        );
        let fixed: String = c
            .query_one("SELECT (SELECT channel || ' ' || high_frequency_window FROM cep.captures) || ' ' || (SELECT channel FROM cep.patterns)", &[])
            .unwrap()
            .get(0);
        assert_eq!(fixed, "cep_changes 100 years pattern_matches");
        // The long key's and the shaped key's partial matches now sit under the forms the trigger
        // looks up. The SQL-built form is the library's own for 'm' * 2000, so its form differs.
        let keys: Vec<String> = c.query("SELECT key FROM cep.pattern_state ORDER BY key", &[]).unwrap().iter().map(|r| r.get(0)).collect();
        let stored: Vec<String> = c
            .query(
                "SELECT cep.stored_key(k) FROM unnest(ARRAY[repeat('k', 1500),
                        cep.stored_key(repeat('m', 2000))]) k ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(keys, [stored[0].clone(), stored[1].clone(), "short".to_string()]);
        assert!(keys[..2].iter().all(|k| k.len() == 1024));
        let sql_built: bool = c
            .query_one(
                "SELECT cep.stored_key(repeat('m', 2000)) = repeat('m', 950) || '...sha256:' || encode(sha256(convert_to(repeat('m', 2000), 'UTF8')), 'hex')",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(sql_built, "the bounded form is the first bytes, the mark and the SHA-256 of the whole key");
    } else {
        assert!(warnings.iter().all(|w| !w.starts_with("WARNING")), "{warnings:?}");
    }
    let (version, default): (String, String) = c
        .query_one("SELECT extversion, default_version FROM pg_extension, pg_available_extensions WHERE extname = 'pg_cep' AND name = extname", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(version, default);
    assert_ne!(version, release);
    let got = catalog(&mut c);
    let missing: Vec<&String> = expected.iter().filter(|e| !got.contains(e)).collect();
    let extra: Vec<&String> = got.iter().filter(|g| !expected.contains(g)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing after update: {missing:#?}\nextra after update: {extra:#?}");
    // The user's rule, watch and alert are still there, and the monitor still works.
    let alerts: i64 = c.query_one("SELECT count(*) FROM cep.alerts", &[]).unwrap().get(0);
    assert_eq!(alerts, 1);
    c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (2, 60000)").unwrap();
    let alerts: i64 = c.query_one("SELECT count(*) FROM cep.alerts", &[]).unwrap().get(0);
    assert_eq!(alerts, 2);
    // And what 0.2.0 added works on the updated database.
    // Memory knows only the row committed after the update, and not from the start of its minute:
    // the stats come from the rows, and count the row from before the update too.
    let stats = c.query_one("SELECT total_transactions, source FROM cep.realtime_stats('transactions')", &[]).unwrap();
    assert_eq!(stats.get::<_, i64>(0), 2);
    if release == "0.1.0" {
        assert_eq!(stats.get::<_, String>(1), "rows");
    }
    // Updated, the same transaction can be prepared, and alerts at COMMIT PREPARED.
    c.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (3, 50000); PREPARE TRANSACTION 'cep_new'").unwrap();
    c.batch_execute("COMMIT PREPARED 'cep_new'").unwrap();
    let alerted: i64 = c.query_one("SELECT count(*) FROM cep.alerts WHERE key = '3'", &[]).unwrap().get(0);
    assert_eq!(alerted, 1);
    // What 0.3.0 added: dropping the table forgets its watch.
    c.batch_execute("DROP TABLE transactions").unwrap();
    assert_eq!(c.query_one("SELECT count(*) FROM cep.watches", &[]).unwrap().get::<_, i64>(0), 0);
}
