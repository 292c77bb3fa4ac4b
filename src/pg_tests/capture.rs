//! Change capture: `capture`, the change log (and its path without the executor), anomalies.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

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

    /// Keys and endpoints over 1024 bytes are logged in one bounded form, whichever path logs them:
    /// the direct path (the INSERT) in Rust, the SQL path (an UPDATE of more than 10,000 rows)
    /// through `cep.stored_key`.
    #[pg_test]
    fn long_keys_are_logged_alike_by_the_direct_and_the_sql_path() {
        let written = crate::pg::change_log::rows_written;
        run("CREATE TABLE long_keyed (id int PRIMARY KEY, k text, a text, b text, v int)");
        run("SELECT cep.capture('long_keyed', key_column => 'k', from_column => 'a', to_column => 'b', high_frequency => NULL, mass_deletion => NULL)");
        let before = written();
        run("INSERT INTO long_keyed SELECT g, repeat(md5(g::text), 35), repeat('é', 600) || g, 'short', 0 FROM generate_series(1, 10001) g");
        assert_eq!(written(), before + 10_001, "the INSERT: logged here");
        run("UPDATE long_keyed SET v = 1");
        assert_eq!(written(), before + 10_001, "10,001 rows updated: logged by SQL");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(op || ' ' || n, ', ' ORDER BY op) FROM (
                   SELECT l.op::text AS op, count(*) AS n FROM cep.change_log l JOIN long_keyed t ON l.pk = t.id::text
                   WHERE l.key = cep.stored_key(t.k) AND l.from_id = cep.stored_key(t.a) AND l.to_id = 'short'
                     AND octet_length(l.key) = 1024 AND octet_length(l.from_id) <= 1024 GROUP BY 1) s"
            ),
            Some("I 10001, U 10001".into())
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
        assert!(outcome("SELECT cep.capture('plain', high_frequency => -1)").starts_with("22023: high_frequency: -1"));
        assert!(outcome("SELECT cep.capture('plain', kind => 'relationship', from_column => 'id', to_column => 'nobody')")
            .starts_with("42703: to_column \"nobody\""));
        assert!(outcome("SELECT cep.capture('plain', key_column => 'nobody')").starts_with("42703: key_column \"nobody\""));
        assert!(outcome("SELECT cep.capture('plain', kind => 'relationship')").starts_with("42703: from_column \"from_id\""));
        assert!(outcome("SELECT cep.capture('cep.alerts')").starts_with("22023: alerts belongs to pg_cep"));
        // What NOTIFY would refuse at every commit, and a window reaching back past the earliest
        // timestamp (every write would fail counting the table's changes), are refused now.
        let long = "c".repeat(64);
        assert_eq!(
            outcome(&format!("SELECT cep.capture('plain', channel => '{long}')")),
            format!("22023: channel \"{long}\" must be 1 to 63 bytes long, not only spaces")
        );
        assert_eq!(
            outcome("SELECT cep.capture('plain', anomaly_channel => ' ')"),
            "22023: anomaly_channel \" \" must be 1 to 63 bytes long, not only spaces"
        );
        assert_eq!(
            outcome("SELECT cep.capture('plain', high_frequency_window => '7000 years')"),
            "22023: high_frequency_window '7000 years' must be longer than 0 and at most 100 years"
        );
        assert_eq!(
            outcome("SELECT cep.capture('plain', mass_deletion_window => '0')"),
            "22023: mass_deletion_window '00:00:00' must be longer than 0 and at most 100 years"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.captures"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(0));
        // Twice is an update, not a second set of triggers.
        run("SELECT cep.capture('plain', key_column => 'owner')");
        run("SELECT cep.capture('plain', key_column => 'owner', channel => 'plain_changes')");
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(4));
        assert_eq!(one::<String>("SELECT channel FROM cep.captures"), Some("plain_changes".into()));
        // The longest of each is taken; a direct write past them is refused by the table.
        let longest = "c".repeat(63);
        run(&format!("SELECT cep.capture('plain', key_column => 'owner', channel => '{longest}', high_frequency_window => '100 years', mass_deletion_window => '365 days')"));
        assert_eq!(one::<String>("SELECT channel || ' ' || high_frequency_window FROM cep.captures"), Some(format!("{longest} 100 years")));
        assert!(outcome("UPDATE cep.captures SET channel = channel || 'c'")
            .starts_with("23514: new row for relation \"captures\" violates check constraint \"captures_channels_notify\""));
        assert!(outcome("UPDATE cep.captures SET mass_deletion_window = '7000 years'")
            .starts_with("23514: new row for relation \"captures\" violates check constraint \"captures_windows_bounded\""));
        run("SELECT cep.capture('plain', key_column => 'owner', channel => 'plain_changes')");
        // A column dropped later does not make writes fail.
        run("ALTER TABLE plain DROP COLUMN owner");
        assert_eq!(outcome("INSERT INTO plain VALUES (1, 'x')"), "ok");
        assert_eq!(one::<String>("SELECT new_row::text FROM cep.change_log"), Some(r#"{"id": 1, "note": "x"}"#.into()));
        assert_eq!(one::<bool>("SELECT cep.uncapture('plain') AND NOT cep.uncapture('plain')"), Some(true));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'plain'::regclass"), Some(0));
    }
}
