//! The hardening audit's defect classes, replayed over the wire with real roles: an owner, a
//! writer, an analyst and an attacker, each on a connection of its own.

use std::time::{Duration, Instant};

use pg_cep_e2e::{connect_to, port, Client, NoTls, TestDb};

/// Login roles for one test, dropped (with what they own) when the test ends.
struct Roles {
    names: Vec<String>,
}

impl Roles {
    fn new(labels: &[&str]) -> Roles {
        let mut admin = connect_to("postgres");
        let names: Vec<String> = labels.iter().map(|l| format!("cep_e2e_{l}_{}", std::process::id())).collect();
        for n in &names {
            admin.batch_execute(&format!("DROP ROLE IF EXISTS {n}; CREATE ROLE {n} LOGIN")).unwrap();
        }
        Roles { names }
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", port()), NoTls) {
            for n in &self.names {
                let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {n}"));
            }
        }
    }
}

fn connect_as(db: &TestDb, role: &str) -> Client {
    Client::connect(&format!("host=127.0.0.1 port={} user={role} dbname={} connect_timeout=10", port(), db.name), NoTls).unwrap()
}

/// The SQLSTATE and message of a statement that must fail.
fn refusal(c: &mut Client, sql: &str) -> (String, String) {
    let e = c.batch_execute(sql).expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

fn server_started(c: &mut Client) -> String {
    c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0)
}

#[test]
fn a_pattern_nested_20000_deep_is_refused_and_no_backend_crashes() {
    let db = TestDb::new("sec_deep");
    let mut c = db.connect();
    let mut bystander = db.connect();
    let started = server_started(&mut bystander);
    c.batch_execute("CREATE TABLE ev (id bigserial PRIMARY KEY, user_id int, kind text, created_at timestamptz)").unwrap();
    let deep = "repeat('(', 20000) || 'a' || repeat(')', 20000)";
    for sql in [
        format!("SELECT * FROM cep.match_recognize('ev', 'user_id', 'created_at', {deep}, '{{}}')"),
        format!("SELECT cep.define_pattern('deep', 'ev', 'user_id', 'created_at', {deep}, '{{}}')"),
        "SELECT cep.define_pattern('nested', 'ev', 'user_id', 'created_at', repeat('(', 1000) || 'a' || repeat(')', 1000), '{}')".to_string(),
    ] {
        let t = Instant::now();
        let (code, message) = refusal(&mut c, &sql);
        assert_eq!(code, "54001", "{message}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // Same connection, other connection, same server.
    assert_eq!(c.query_one("SELECT count(*) FROM cep.patterns", &[]).unwrap().get::<_, i64>(0), 0);
    assert_eq!(server_started(&mut bystander), started);
    // A huge range of hopping windows is refused with a hint, not allocated.
    let e = c.batch_execute("SELECT count(*) FROM cep.hop(now(), '36500 days', '1 microsecond')").unwrap_err();
    let e = e.as_db_error().unwrap();
    assert_eq!(e.code().code(), "22023");
    assert!(e.hint().is_some_and(|h| h.contains("widen the slide")), "{e:?}");
}

#[test]
fn a_failed_partition_step_leaves_the_session_usable_in_autocommit_and_in_a_transaction() {
    let db = TestDb::new("sec_subxact");
    let mut c = db.connect();
    c.batch_execute("CREATE TABLE far (id int, created_at timestamptz) PARTITION BY RANGE (created_at)").unwrap();
    let step = "SELECT cep.create_monthly_partition('far', '294276-12-01')";
    assert_eq!(refusal(&mut c, step).0, "22008");
    // Autocommit: the next statement runs (0.2.0 answered 25P02 here).
    assert_eq!(c.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
    // In a transaction block: the block is failed as usual, and ROLLBACK ends it (0.2.0: FATAL).
    c.batch_execute("BEGIN").unwrap();
    assert_eq!(refusal(&mut c, step).0, "22008");
    assert_eq!(refusal(&mut c, "SELECT 1").0, "25P02");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(c.query_one("SELECT 2", &[]).unwrap().get::<_, i32>(0), 2);
    // And the work that could be done still is.
    let made: String = c.query_one("SELECT cep.create_monthly_partition('far', '2026-12-01')::text", &[]).unwrap().get(0);
    assert_eq!(made, "far_2026_12");
}

#[test]
fn an_attackers_function_in_public_never_runs_inside_pg_cep() {
    let roles = Roles::new(&["attacker"]);
    let db = TestDb::new("sec_path");
    let attacker_role = roles.name(0).to_string();
    let mut admin = db.connect();
    admin
        .batch_execute(&format!(
            "GRANT CREATE, USAGE ON SCHEMA public TO {attacker_role};
             CREATE TABLE hijacked (by text);
             GRANT INSERT ON hijacked TO PUBLIC;
             CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric NOT NULL,
                                        location text, created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
             VALUES ('big', 'threshold', '{{\"metric\": \"amount\", \"operator\": \">\", \"value\": 10000}}', 0.6);
             SELECT cep.watch('transactions');
             SELECT cep.capture('transactions', key_column => 'user_id');
             SELECT cep.define_pattern('two', 'transactions', 'user_id', 'created_at', 'a b', '{{}}');"
        ))
        .unwrap();
    let mut attacker = connect_as(&db, &attacker_role);
    attacker
        .batch_execute(
            "CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.hijacked VALUES (current_user); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
             CREATE FUNCTION public.format(f text, a name, b name) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.hijacked VALUES (current_user); RETURN pg_catalog.format(f, a, b); END $$;",
        )
        .unwrap();
    // A superuser's INSERTs that alert, notify, capture, match, and DDL that uninstalls.
    admin.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 50000), (1, 60000)").unwrap();
    admin.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (2, 70000)").unwrap();
    admin.batch_execute("SELECT cep.uncapture('transactions'); SELECT cep.unwatch('transactions'); SELECT cep.drop_pattern('two')").unwrap();
    let alerts: i64 = admin.query_one("SELECT count(*) FROM cep.alerts", &[]).unwrap().get(0);
    let changes: i64 = admin.query_one("SELECT count(*) FROM cep.change_log", &[]).unwrap().get(0);
    let matches: i64 = admin.query_one("SELECT count(*) FROM cep.pattern_matches", &[]).unwrap().get(0);
    assert_eq!((alerts, changes, matches), (3, 3, 1));
    let hijacked: i64 = admin.query_one("SELECT count(*) FROM hijacked", &[]).unwrap().get(0);
    assert_eq!(hijacked, 0, "the attacker's function ran inside pg_cep as the superuser");
    drop(attacker);
}

#[test]
fn a_role_that_does_not_own_a_table_cannot_make_maintenance_drop_or_move_its_rows() {
    let roles = Roles::new(&["owner", "attacker"]);
    let db = TestDb::new("sec_owner");
    let (owner_role, attacker_role) = (roles.name(0).to_string(), roles.name(1).to_string());
    let mut admin = db.connect();
    admin.batch_execute(&format!("GRANT CREATE, USAGE ON SCHEMA public TO {owner_role}, {attacker_role}")).unwrap();
    let mut owner = connect_as(&db, &owner_role);
    owner
        .batch_execute(&format!(
            "CREATE TABLE ledger (id bigserial, amount int, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
             CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;
             INSERT INTO ledger (amount, created_at) SELECT g, now() - make_interval(days => g * 20) FROM generate_series(1, 30) g;
             GRANT SELECT ON ledger TO {attacker_role};"
        ))
        .unwrap();
    let count = |c: &mut Client| -> i64 { c.query_one("SELECT count(*) FROM ledger", &[]).unwrap().get(0) };
    let rows = count(&mut owner);
    let mut attacker = connect_as(&db, &attacker_role);
    for sql in [
        "SELECT * FROM cep.manage_partitions('ledger', premake => 0, retention => '1 month', retention_mode => 'drop')",
        "SELECT cep.create_monthly_partition('ledger', date '2026-01-01')",
        "SELECT * FROM cep.run_maintenance('ledger')",
        "INSERT INTO cep.partition_config (parent, control_column, control_type, retention, retention_mode)
         VALUES ('ledger'::regclass, 'created_at', 'timestamptz', '1 day', 'drop')",
    ] {
        let (code, message) = refusal(&mut attacker, sql);
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    // Maintenance of everything by the attacker succeeds, with nothing of theirs to do, and leaves
    // the owner's table as it was.
    let steps = attacker.query("SELECT * FROM cep.run_maintenance()", &[]).unwrap();
    assert!(steps.is_empty(), "{} steps for a role that owns no managed table", steps.len());
    assert_eq!(count(&mut owner), rows);
    let partitions: i64 = admin.query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ledger'::regclass", &[]).unwrap().get(0);
    assert_eq!(partitions, 1, "only DEFAULT");
    let configured: i64 = admin.query_one("SELECT count(*) FROM cep.partition_config WHERE parent = 'ledger'::regclass", &[]).unwrap().get(0);
    assert_eq!(configured, 0);
}

#[test]
fn create_extension_refuses_a_cep_schema_that_another_role_owns() {
    let roles = Roles::new(&["squatter"]);
    let db = TestDb::without_extension("sec_schema");
    let squatter = roles.name(0).to_string();
    let mut admin = db.connect();
    admin.batch_execute(&format!("CREATE SCHEMA cep AUTHORIZATION {squatter}")).unwrap();
    let (code, message) = refusal(&mut admin, "CREATE EXTENSION pg_cep");
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains(&format!("owned by {squatter}")), "{message}");
    let installed: i64 = admin.query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cep'", &[]).unwrap().get(0);
    assert_eq!(installed, 0);
    // The installer's own schema is fine, and so is DROP EXTENSION with the event trigger.
    admin.batch_execute("DROP SCHEMA cep; CREATE SCHEMA cep; CREATE EXTENSION pg_cep; DROP EXTENSION pg_cep; CREATE EXTENSION pg_cep").unwrap();
    assert_eq!(admin.query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cep'", &[]).unwrap().get::<_, i64>(0), 1);
}

#[test]
fn writers_record_without_grants_and_each_role_reads_only_the_tables_it_may_select() {
    let roles = Roles::new(&["owner", "writer", "analyst", "attacker"]);
    let db = TestDb::new("sec_rls");
    let [owner_role, writer_role, analyst_role, attacker_role] = [0, 1, 2, 3].map(|i| roles.name(i).to_string());
    let mut admin = db.connect();
    // The administrator writes the rules (one that reads history) and watches a table of its own.
    admin
        .batch_execute(&format!(
            "GRANT CREATE, USAGE ON SCHEMA public TO {owner_role};
             INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
               ('big', 'threshold', '{{\"metric\": \"amount\", \"operator\": \">\", \"value\": 10000}}', 0.6),
               ('busy', 'threshold', '{{\"metric\": \"transaction_count\", \"operator\": \">=\", \"value\": 1, \"window\": \"1_hour\"}}', 0.3);
             CREATE TABLE secret (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric NOT NULL,
                                  created_at timestamptz NOT NULL DEFAULT now());
             SELECT cep.watch('secret');
             INSERT INTO secret (user_id, amount) VALUES (7, 90000);"
        ))
        .unwrap();
    // The owner configures its own table with no grant on any of pg_cep's tables.
    let mut owner = connect_as(&db, &owner_role);
    owner
        .batch_execute(&format!(
            "CREATE TABLE payments (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric NOT NULL,
                                    created_at timestamptz NOT NULL DEFAULT now());
             GRANT INSERT ON payments TO {writer_role};
             GRANT USAGE ON SEQUENCE payments_id_seq TO {writer_role};
             GRANT SELECT ON payments TO {analyst_role};
             SELECT cep.watch('payments');
             SELECT cep.capture('payments', key_column => 'user_id');
             SELECT cep.define_pattern('twice', 'payments', 'user_id', 'created_at', 'a b', '{{}}');"
        ))
        .unwrap();
    // A writer allowed only to INSERT: its rows are scored (history included), logged and matched.
    let mut writer = connect_as(&db, &writer_role);
    writer
        .batch_execute("INSERT INTO payments (user_id, amount) VALUES (1, 50000); INSERT INTO payments (user_id, amount) VALUES (1, 60000)")
        .unwrap();
    let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    let ours = "SELECT count(*) FROM cep.alerts WHERE relid = 'payments'::regclass";
    assert_eq!(count(&mut admin, ours), 2);
    let busy: i64 = count(&mut admin, "SELECT count(*) FROM cep.alerts a, jsonb_array_elements(a.rules) r WHERE a.relid = 'payments'::regclass AND r->>'rule_id' = (SELECT rule_id::text FROM cep.risk_rules WHERE rule_name = 'busy')");
    assert_eq!(busy, 2, "the history rule ran for a writer that cannot SELECT the table");
    let totals = |c: &mut Client| -> (i64, i64, i64) {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM cep.alerts), (SELECT count(*) FROM cep.change_log), (SELECT count(*) FROM cep.pattern_matches)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(totals(&mut admin), (3, 2, 1));
    // Each role reads what its rights on the source tables allow.
    let mut analyst = connect_as(&db, &analyst_role);
    let mut attacker = connect_as(&db, &attacker_role);
    assert_eq!(totals(&mut analyst), (2, 2, 1), "the analyst reads payments' alerts, changes and matches, not secret's");
    assert_eq!(totals(&mut writer), (0, 0, 0), "the writer may not read payments");
    assert_eq!(totals(&mut attacker), (0, 0, 0));
    assert_eq!(count(&mut analyst, "SELECT count(*) FROM cep.alerts_since(0)"), 2);
    assert_eq!(count(&mut analyst, "SELECT count(*) FROM cep.changes_since(0)"), 2);
    // Nobody but the installer writes pg_cep's tables directly, and nobody logs another table's changes.
    let payments: i64 = count(&mut admin, "SELECT 'payments'::regclass::oid::int8");
    let alert = format!("INSERT INTO cep.alerts (relid, table_name, key, score, level, rules) VALUES ({payments}, 'payments', '1', 1, 'high', '[]')");
    let refused: [(&mut Client, String); 8] = [
        (&mut attacker, alert.clone()),
        (&mut writer, alert),
        (&mut owner, "UPDATE cep.watches SET block_at = 0.1".to_string()),
        (&mut analyst, "DELETE FROM cep.alerts".to_string()),
        // The change log takes rows only for a table the role may change.
        (&mut connect_as(&db, &attacker_role), format!("INSERT INTO cep.change_log (relid, table_name, op, event_type) VALUES ({payments}, 'payments', 'I', 'x')")),
        (&mut connect_as(&db, &writer_role), "INSERT INTO cep.change_log (relid, table_name, op, event_type) VALUES ('secret'::regclass, 'secret', 'I', 'x')".to_string()),
        (&mut connect_as(&db, &attacker_role), "INSERT INTO cep.pattern_matches (pattern_id, pattern_name, key, rows, match_start, match_end) VALUES (1, 'twice', '1', '{}', now(), now())".to_string()),
        (&mut connect_as(&db, &attacker_role), "SELECT * FROM cep.evaluate_risk_rules('payments'::regclass, '1', 100, NULL, now())".to_string()),
    ];
    for (client, sql) in refused {
        let (code, message) = refusal(client, &sql);
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    assert_eq!(totals(&mut admin), (3, 2, 1), "nothing was written by a refused statement");
    // Whoever may read an alert may acknowledge it; the others cannot even see it, and nobody
    // but the installer changes what an alert says.
    let first: i64 = count(&mut admin, "SELECT min(alert_id) FROM cep.alerts WHERE relid = 'payments'::regclass");
    let mut attacker = connect_as(&db, &attacker_role);
    assert_eq!(refusal(&mut attacker, &format!("SELECT cep.acknowledge_alert({first})")).0, "P0002");
    assert_eq!(refusal(&mut attacker, "UPDATE cep.alerts SET score = 0").0, "42501");
    assert_eq!(refusal(&mut analyst, "UPDATE cep.alerts SET score = 0").0, "42501");
    let by: String = analyst.query_one(&format!("SELECT state_changed_by::text FROM cep.acknowledge_alert({first}, 'mine')"), &[]).unwrap().get(0);
    assert_eq!(by, analyst_role);
    assert_eq!(count(&mut admin, "SELECT count(*) FROM cep.alerts WHERE state = 'acknowledged' AND score > 0"), 1);
    assert_eq!(count(&mut analyst, "SELECT count(*) FROM cep.evaluate_risk_rules('payments'::regclass, '1', 100, NULL, now()) WHERE triggered"), 1);
}
