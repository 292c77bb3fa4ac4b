//! The monitor over the wire: LISTEN on a second connection, COPY, concurrent writers, restarts.

use std::time::Duration;

use pg_cep_e2e::{drain_settled, restart_server, Client, TestDb};

const RULES: &str = r#"
    INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
    ('high frequency', 'threshold', '{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}', 0.8),
    ('large amount', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6)"#;

fn setup(db: &TestDb) -> Client {
    let mut c = db.connect();
    c.batch_execute(&format!(
        "SET TimeZone = 'UTC';
         CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL,
                                    location text, created_at timestamptz NOT NULL DEFAULT now());
         {RULES};
         SELECT cep.watch('transactions');"
    ))
    .unwrap();
    c
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Alerts the monitor must have written, computed with plain SQL over the committed rows:
/// a row alerts when its key has more than 10 rows in [t - 1 hour, t], or its amount exceeds 10000.
const GROUND_TRUTH: &str = "SELECT count(*) FROM transactions t WHERE t.amount > 10000 OR
    (SELECT count(*) FROM transactions h WHERE h.user_id = t.user_id
       AND h.created_at >= t.created_at - interval '1 hour' AND h.created_at <= t.created_at) > 10";

#[test]
fn listener_gets_alerts_after_commit_and_none_after_rollback() {
    let db = TestDb::new("listen");
    let mut writer = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();

    let mut tx = writer.transaction().unwrap();
    tx.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 20000)").unwrap();
    assert!(drain_settled(&mut listener).is_empty(), "nothing before COMMIT");
    tx.commit().unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    let payload: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    let alert_id: i64 = writer.query_one("SELECT alert_id FROM cep.alerts", &[]).unwrap().get(0);
    assert_eq!(payload["alert_id"], alert_id);
    assert_eq!(payload["type"], "risk_alert");
    assert_eq!(payload["level"], "medium");
    assert_eq!(payload["key"], "1");

    let mut tx = writer.transaction().unwrap();
    tx.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 30000)").unwrap();
    tx.rollback().unwrap();
    assert!(drain_settled(&mut listener).is_empty(), "nothing after ROLLBACK");
    assert_eq!(count(&mut writer, "SELECT count(*) FROM cep.alerts"), 1);

    // A consumer that was away catches up from the table.
    let missed = count(&mut writer, &format!("SELECT count(*) FROM cep.alerts_since({})", alert_id - 1));
    assert_eq!(missed, 1);

    // One statement, three alerting rows: written together, one notification each, and every
    // payload names its own alert and row.
    writer.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (2, 20000), (3, 5), (4, 30000), (5, 40000)").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 3, "{got:?}");
    let mut keys = Vec::new();
    for (_, text) in &got {
        let payload: serde_json::Value = serde_json::from_str(text).unwrap();
        let alert_id = payload["alert_id"].as_i64().unwrap();
        let row = writer
            .query_one(
                "SELECT key, row_pk, (SELECT id::text FROM transactions WHERE user_id = key::int) FROM cep.alerts WHERE alert_id = $1",
                &[&alert_id],
            )
            .unwrap();
        let (key, row_pk, id): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((payload["key"].as_str(), payload["row"].as_str()), (Some(key.as_str()), Some(row_pk.as_str())));
        assert_eq!(row_pk, id, "the alert points at its own row");
        keys.push(key);
    }
    assert_eq!(keys, ["2", "4", "5"], "in the statement's order");
}

#[test]
fn copy_of_10k_rows_matches_sql_ground_truth() {
    let db = TestDb::new("copy");
    let mut c = setup(&db);
    let mut data = String::new();
    // 200 keys, 50 rows each, one a minute: keys get busy within the hour; every 97th row is large.
    for i in 0..10_000 {
        let user = i % 200;
        let minute = i / 200;
        let amount = if i % 97 == 0 { 25_000 } else { 100 + i % 50 };
        data.push_str(&format!("{user}\t{amount}\t2026-01-15 10:{:02}:00+00\n", minute));
    }
    let mut w = c.copy_in("COPY transactions (user_id, amount, created_at) FROM STDIN").unwrap();
    std::io::Write::write_all(&mut w, data.as_bytes()).unwrap();
    assert_eq!(w.finish().unwrap(), 10_000);
    let expected = count(&mut c, GROUND_TRUTH);
    assert!(expected > 5_000, "the workload must raise many alerts, got {expected}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts"), expected);
}

/// For `concurrent_writers_lose_no_alerts`, each row's count-rule window bounded from both sides,
/// and the rows whose alert is outside them. A row's window (`[t - 1 hour, t]`, as GROUND_TRUTH's)
/// holds the rows committed when it is scored, so no query over the final table decides it; but
/// it may hold no more than every row of its key up to its time (`may`), and must hold itself,
/// its own session's earlier rows (each committed before the next began) and the other session's
/// rows followed by a row of theirs that started before it (`must`). Sessions are told apart by
/// `location`, which no rule reads. Returns: rows that must alert, those of them without a
/// count-rule alert (lost), and count-rule alerts on rows whose window held 10 rows at most (spurious).
const COUNT_RULE_BOUNDS: &str = "
    WITH r AS (
        SELECT id, user_id, created_at, location AS session,
               lead(created_at) OVER (PARTITION BY location ORDER BY id) AS next_started
        FROM transactions),
    bounds AS (
        SELECT t.id, count(*) AS may,
               count(*) FILTER (WHERE h.id = t.id OR (h.session = t.session AND h.id < t.id) OR h.next_started < t.created_at) AS must
        FROM r t JOIN r h ON h.user_id = t.user_id AND h.created_at >= t.created_at - interval '1 hour' AND h.created_at <= t.created_at
        GROUP BY t.id),
    fired AS (
        SELECT a.row_pk FROM cep.alerts a, jsonb_array_elements(a.rules) f
        WHERE f->>'rule_id' = (SELECT rule_id::text FROM cep.risk_rules WHERE rule_name = 'high frequency'))
    SELECT count(*) FILTER (WHERE b.must > 10),
           coalesce(array_agg(b.id ORDER BY b.id) FILTER (WHERE b.must > 10 AND f.row_pk IS NULL), '{}'),
           coalesce(array_agg(b.id ORDER BY b.id) FILTER (WHERE b.may <= 10 AND f.row_pk IS NOT NULL), '{}')
    FROM bounds b LEFT JOIN fired f ON f.row_pk = b.id::text";

#[test]
fn concurrent_writers_lose_no_alerts() {
    let db = TestDb::new("concurrent");
    drop(setup(&db));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let db_name = db.name.clone();
            std::thread::spawn(move || {
                let mut c = pg_cep_e2e::connect_to(&db_name);
                let session = format!("w{w}");
                for i in 0..300 {
                    let amount = if i % 10 == 0 { 50_000 } else { 10 };
                    c.execute(
                        "INSERT INTO transactions (user_id, amount, location, created_at) VALUES ($1, $2::int::numeric, $3, now())",
                        &[&(i % 5), &amount, &session],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut c = db.connect();
    assert_eq!(count(&mut c, "SELECT count(*) FROM transactions"), 600);
    let alerted_rows = count(&mut c, "SELECT count(DISTINCT row_pk) FROM cep.alerts");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts"), alerted_rows, "one alert per row");
    // Large amounts need no window: exactly their 60 rows alert, whichever session wrote them.
    let large = count(&mut c, "SELECT count(*) FROM transactions WHERE amount > 10000");
    assert_eq!(large, 60);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts a JOIN transactions t ON t.id::text = a.row_pk WHERE t.amount > 10000"), 60);
    // The count rule against its ground truth: which of a key's first rows alert depends on the
    // commit order, so every row alerts that must, and none that cannot.
    let row = c.query_one(COUNT_RULE_BOUNDS, &[]).unwrap();
    let (must, lost, spurious): (i64, Vec<i64>, Vec<i64>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(lost, Vec::<i64>::new(), "rows whose window held more than 10 committed rows, without a count-rule alert");
    assert_eq!(spurious, Vec::<i64>::new(), "count-rule alerts on rows with 10 rows or fewer of their key up to their time");
    // At most two rows of the other session are in doubt for any row: from a key's 13th of 120 on, it must alert.
    assert!(must >= 5 * (120 - 12), "{must} rows must alert: the bounds are too loose to test anything");
    // So the alerts are the ground truth, but for rows near a key's 11th that the commit order decided.
    let truth = count(&mut c, GROUND_TRUTH);
    assert!(alerted_rows <= truth && alerted_rows >= must, "{alerted_rows} alerts, {must} certain, {truth} in GROUND_TRUTH");
}

#[test]
fn scoring_survives_a_server_restart() {
    let db = TestDb::new("restart");
    let mut c = setup(&db);
    c.batch_execute(
        "INSERT INTO transactions (user_id, amount, created_at) SELECT 1, 10, now() - make_interval(mins => g) FROM generate_series(1, 10) g",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts"), 0);
    drop(c);
    restart_server();
    let mut c = db.connect();
    // The 11th row in the hour: the count rule sees the rows stored before the restart.
    c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 10)").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '1' AND level = 'high'"), 1);
}

#[test]
fn evaluate_risk_rules_over_the_wire() {
    let db = TestDb::new("evaluate");
    let mut c = setup(&db);
    let rows = c.query("SELECT rule_id, risk_score, triggered FROM cep.evaluate_risk_rules(1, 20000, 'X', now())", &[]).unwrap();
    let got: Vec<(i32, f64, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got, vec![(1, 0.8, false), (2, 0.6, true)]);
    let err = c.batch_execute("INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES ('x', 'threshold', '{\"metric\": \"amount\", \"value\": \"ten\"}', 0.5)").unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22P02");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.risk_rules"), 2);
}

#[test]
fn blocking_over_the_wire_in_both_modes() {
    let db = TestDb::new("block");
    let mut c = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    // 0.8 (the 11th row in the hour) + 0.6 (large amount) = 1.4.
    c.batch_execute("SELECT cep.watch('transactions', block_at => 1.0)").unwrap();
    c.batch_execute(
        "INSERT INTO transactions (user_id, amount, created_at) SELECT 1, 10, now() - make_interval(mins => g) FROM generate_series(1, 10) g",
    )
    .unwrap();
    let err = c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 50000)").unwrap_err();
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "09000");
    assert!(db_err.message().contains("key 1 scored 1.40"), "{}", db_err.message());
    assert!(db_err.detail().unwrap_or("").contains("\"observed\":50000.0"), "{:?}", db_err.detail());
    assert_eq!(count(&mut c, "SELECT count(*) FROM transactions"), 10);
    // The attempt is recorded all the same, by the sender (0.2.0 left no trace of it), in a
    // transaction of its own that also notifies.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&mut c, "SELECT count(*) FROM cep.alerts WHERE action = 'blocked'") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains("\"action\":\"blocked\""), "{}", got[0].1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE action = 'blocked'"), 1);

    c.batch_execute("SELECT cep.watch('transactions', block_at => 1.0, on_block => 'skip')").unwrap();
    c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (1, 50000)").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM transactions"), 10, "the row is dropped");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE action = 'blocked'"), 2);
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains("\"action\":\"blocked\""), "{}", got[0].1);
}

#[test]
fn stats_are_shared_across_sessions() {
    let db = TestDb::new("stats");
    let mut writer = setup(&db);
    writer
        .batch_execute("INSERT INTO transactions (user_id, amount) SELECT g % 3, CASE WHEN g = 1 THEN 20000 ELSE 5 END FROM generate_series(1, 50) g")
        .unwrap();
    let mut reader = db.connect();
    let row = reader
        .query_one("SELECT rows_seen, alerts, notifications, rule_errors, total_ms > 0, max_ms <= total_ms, shared FROM cep.stats() WHERE table_name = 'transactions'", &[])
        .unwrap();
    let alerts = count(&mut reader, "SELECT count(*) FROM cep.alerts");
    assert!(alerts >= 1);
    assert_eq!(row.get::<_, i64>(0), 50);
    assert_eq!(row.get::<_, i64>(1), alerts);
    assert_eq!(row.get::<_, i64>(2), alerts);
    assert_eq!(row.get::<_, i64>(3), 0);
    assert!(row.get::<_, bool>(4) && row.get::<_, bool>(5) && row.get::<_, bool>(6));
    reader.batch_execute("SELECT cep.stats_reset()").unwrap();
    assert_eq!(count(&mut writer, "SELECT count(*) FROM cep.stats()"), 0);
}

/// Reads a cursor function until it returns nothing, from `last`; returns the ids read and the new last.
fn read_cursor(c: &mut Client, function: &str, last: i64) -> (Vec<i64>, i64) {
    let ids: Vec<i64> = c.query(&format!("SELECT {function}($1)"), &[&last]).unwrap().iter().map(|r| r.get(0)).collect();
    let next = ids.last().copied().unwrap_or(last);
    (ids, next)
}

#[test]
fn cursors_deliver_an_alert_and_a_match_of_a_slow_transaction_that_a_naive_id_cursor_misses() {
    let db = TestDb::new("cursors");
    let mut fast = setup(&db);
    fast.batch_execute("SELECT cep.define_pattern('every', 'transactions', 'user_id', 'created_at', 'a', '{}')").unwrap();
    let mut slow = db.connect();
    let mut consumer = db.connect();
    // The slow transaction writes first (alert and match ids 1), the fast one commits first (ids 2).
    slow.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (1, 50000)").unwrap();
    fast.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (2, 60000)").unwrap();
    let naive = |c: &mut Client, table: &str, id: &str, after: i64| -> Vec<i64> {
        c.query(&format!("SELECT {id} FROM cep.{table} WHERE {id} > $1 ORDER BY {id}"), &[&after]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    for (function, table, id) in
        [("alert_id FROM cep.alerts_since", "alerts", "alert_id"), ("match_id FROM cep.matches_since", "pattern_matches", "match_id")]
    {
        // A consumer reading now gets nothing yet: the slow transaction, older, is still running.
        let (first, last) = read_cursor(&mut consumer, function, 0);
        assert!(first.is_empty(), "{table}: {first:?} delivered ahead of a transaction still running");
        // The naive cursor delivers the fast one's id now, and has moved past the slow one's.
        assert_eq!(naive(&mut consumer, table, id, 0).len(), 1, "{table}");
        assert_eq!(last, 0);
    }
    slow.batch_execute("COMMIT").unwrap();
    for (function, table, id) in
        [("alert_id FROM cep.alerts_since", "alerts", "alert_id"), ("match_id FROM cep.matches_since", "pattern_matches", "match_id")]
    {
        let all = naive(&mut consumer, table, id, 0);
        assert_eq!(all.len(), 2, "{table}");
        // The naive cursor, having read the fast id, never sees the slow one.
        let fast_id = *all.iter().max().unwrap();
        assert!(naive(&mut consumer, table, id, fast_id).is_empty(), "{table}");
        // The cursor delivers both, the slow transaction's first, and nothing twice.
        let (got, last) = read_cursor(&mut consumer, function, 0);
        assert_eq!(got, all, "{table}: in commit order of the writing transactions");
        assert!(read_cursor(&mut consumer, function, last).0.is_empty(), "{table}");
    }
}

#[test]
fn a_prepared_transaction_alerts_at_commit_prepared_and_its_rows_count_only_once_committed() {
    let db = TestDb::new("prepared");
    let mut c = db.connect();
    c.batch_execute(
        r#"CREATE TABLE tx (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
           INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
           ('large', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
           ('pair', 'threshold', '{"metric": "transaction_count", "operator": ">=", "value": 2, "window": "1_hour"}', 0.7);
           SELECT cep.watch('tx');
           SELECT cep.capture('tx', key_column => 'user_id');"#,
    )
    .unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    let mut preparer = db.connect();
    let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    let pair = "SELECT count(*) FROM cep.alerts a, jsonb_array_elements(a.rules) r WHERE a.key = $KEY AND r->>'rule_id' = (SELECT rule_id::text FROM cep.risk_rules WHERE rule_name = 'pair')";
    // An alerting row in a transaction that is prepared (0.2.0: "cannot PREPARE a transaction
    // that has executed NOTIFY").
    preparer.batch_execute("BEGIN; INSERT INTO tx (user_id, amount) VALUES (7, 50000); PREPARE TRANSACTION 'cep_p1'").unwrap();
    assert!(drain_settled(&mut listener).is_empty(), "nothing before COMMIT PREPARED");
    // Undecided, its row does not count in the key's window.
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (7, 10)").unwrap();
    assert_eq!(count(&mut c, &pair.replace("$KEY", "'7'")), 0);
    c.batch_execute("COMMIT PREPARED 'cep_p1'").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains(r#""type":"risk_alert""#) && got[0].1.contains(r#""key":"7""#), "{got:?}");
    // Committed, it counts: a third row finds two before it.
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (7, 10)").unwrap();
    assert_eq!(count(&mut c, &pair.replace("$KEY", "'7'")), 1);
    assert_eq!(drain_settled(&mut listener).len(), 1);
    // Rolled back, it never notifies and never counts.
    preparer.batch_execute("BEGIN; INSERT INTO tx (user_id, amount) VALUES (8, 50000); PREPARE TRANSACTION 'cep_p2'").unwrap();
    c.batch_execute("ROLLBACK PREPARED 'cep_p2'").unwrap();
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (8, 10)").unwrap();
    assert!(drain_settled(&mut listener).is_empty());
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '8'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.change_log WHERE relid = 'tx'::regclass"), 4, "the committed rows, once each");
}

/// A prepared transaction may stay undecided for hours (a coordinator that died between PREPARE
/// and COMMIT PREPARED). Its notices wait, but the alerts committed after it must not wait with
/// them: before 0.3.0's fix they queued behind it until it was decided.
#[test]
fn an_undecided_prepared_transaction_holds_back_no_other_alert() {
    let db = TestDb::new("prepared_held");
    let mut c = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    let mut preparer = db.connect();
    preparer.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (1, 50000); PREPARE TRANSACTION 'cep_held'").unwrap();
    let queue = |c: &mut Client| -> (i64, i64) {
        let r = c.query_one("SELECT queued, prepared FROM cep.notification_queue()", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(queue(&mut c), (0, 1), "the prepared alert waits, counted apart");
    for user in 2..5 {
        c.batch_execute(&format!("INSERT INTO transactions (user_id, amount) VALUES ({user}, 50000)")).unwrap();
    }
    // Each arrives at once, from the sender, while the prepared one still waits.
    let keys = |got: &[(String, String)]| -> Vec<String> {
        let mut keys: Vec<String> =
            got.iter().map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).unwrap()["key"].as_str().unwrap().to_string()).collect();
        keys.sort();
        keys
    };
    let got = drain_settled(&mut listener);
    assert_eq!(keys(&got), ["2", "3", "4"], "{got:?}");
    assert_eq!(queue(&mut c), (0, 1));
    c.batch_execute("COMMIT PREPARED 'cep_held'").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(keys(&got), ["1"], "{got:?}");
    assert_eq!(queue(&mut c), (0, 0));
    // ROLLBACK PREPARED: never sent, and nothing left waiting.
    preparer.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (9, 50000); PREPARE TRANSACTION 'cep_dropped'").unwrap();
    c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (5, 50000)").unwrap();
    c.batch_execute("ROLLBACK PREPARED 'cep_dropped'").unwrap();
    assert_eq!(keys(&drain_settled(&mut listener)), ["5"]);
    assert_eq!(queue(&mut c), (0, 0));
}

/// A prepared transaction outlives a restart, and so must its notifications: they wait in
/// `cep.prepared_notices`, a table, and go at COMMIT PREPARED after the restart. Before, they
/// waited in shared memory, and the restart lost them.
#[test]
fn a_prepared_transactions_notifications_outlive_a_restart() {
    let db = TestDb::new("prepared_restart");
    let mut c = setup(&db);
    let mut preparer = db.connect();
    preparer.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (1, 50000); PREPARE TRANSACTION 'cep_restart'").unwrap();
    let queue = |c: &mut Client| -> (i64, i64) {
        let r = c.query_one("SELECT queued, prepared FROM cep.notification_queue()", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(queue(&mut c), (0, 1));
    drop((c, preparer));
    restart_server();
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    assert_eq!(queue(&mut c), (0, 1), "still waiting for its transaction");
    c.batch_execute("COMMIT PREPARED 'cep_restart'").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    let alert: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    let id: i64 = c.query_one("SELECT alert_id FROM cep.alerts WHERE key = '1'", &[]).unwrap().get(0);
    assert_eq!((alert["key"].as_str(), alert["alert_id"].as_i64()), (Some("1"), Some(id)), "{alert}");
    assert_eq!(queue(&mut c), (0, 0));
    let left: i64 = c.query_one("SELECT count(*) FROM cep.prepared_notices", &[]).unwrap().get(0);
    assert_eq!(left, 0, "sent once, and deleted");
    assert!(drain_settled(&mut listener).is_empty(), "and sent once only");
}

/// pg_cep's SQL runs as the extension's owner: a session's temporary objects must never resolve
/// in it. A temporary type named `text`, with a cast to it that raises, is not reached when a
/// prepared transaction writes its notifications (`$1::text[]`). On 15 the pinned path searched
/// the temporary schema first, and the cast ran.
#[test]
fn a_sessions_temporary_type_is_never_reached_by_pg_cep() {
    let db = TestDb::new("temp_shadow");
    let mut c = setup(&db);
    c.batch_execute(
        "CREATE TYPE pg_temp.text AS (x int);
         CREATE FUNCTION pg_temp.hijack(pg_catalog.text[]) RETURNS pg_temp.text[] LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$;
         CREATE CAST (pg_catalog.text[] AS pg_temp.text[]) WITH FUNCTION pg_temp.hijack(pg_catalog.text[]);",
    )
    .unwrap();
    c.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (1, 50000); PREPARE TRANSACTION 'temp_shadow'").unwrap();
    c.batch_execute("COMMIT PREPARED 'temp_shadow'").unwrap();
    let alerts: i64 = c.query_one("SELECT count(*) FROM cep.alerts WHERE key = '1'", &[]).unwrap().get(0);
    assert_eq!(alerts, 1);
}

/// A prepared transaction's rows count in its keys' windows once COMMIT PREPARED has committed
/// them, also after a restart in between. The registry of prepared transactions is in shared
/// memory and the restart loses it: the window cache loaded the key without the prepared row, and
/// kept counting without it after COMMIT PREPARED. Now it forgets the database's keys then.
#[test]
fn a_prepared_transactions_rows_count_after_a_restart_and_commit_prepared() {
    let db = TestDb::new("prepared_restart_window");
    let mut c = db.connect();
    c.batch_execute(
        r#"CREATE TABLE tx (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
           INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
           ('three', 'threshold', '{"metric": "transaction_count", "operator": ">=", "value": 3, "window": "1_hour"}', 0.7);
           SELECT cep.watch('tx');"#,
    )
    .unwrap();
    let mut preparer = db.connect();
    preparer.batch_execute("BEGIN; INSERT INTO tx (user_id, amount) VALUES (7, 10); PREPARE TRANSACTION 'cep_window'").unwrap();
    drop((c, preparer));
    restart_server();
    let mut c = db.connect();
    // Undecided, the prepared row does not count; this row puts the key in the cache.
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (7, 10)").unwrap();
    let cached: i64 = c.query_one("SELECT keys FROM cep.window_cache()", &[]).unwrap().get(0);
    assert_eq!(cached, 1);
    c.batch_execute("COMMIT PREPARED 'cep_window'").unwrap();
    // Committed, it counts: the third row of the key finds all three.
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (7, 10)").unwrap();
    let alerts: Vec<i64> =
        c.query("SELECT id FROM tx t JOIN cep.alerts a ON a.row_pk = t.id::text ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let third: i64 = c.query_one("SELECT max(id) FROM tx", &[]).unwrap().get(0);
    assert_eq!(alerts, [third]);
}

/// An undecided prepared transaction keeps no sender running (before, the sender stayed and
/// looked every 100 ms for as long as it was undecided); COMMIT PREPARED starts one again.
#[test]
fn an_undecided_prepared_transaction_keeps_no_sender_running() {
    let db = TestDb::new("prepared_idle");
    let mut c = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (2, 50000)").unwrap();
    assert_eq!(drain_settled(&mut listener).len(), 1, "a sender ran");
    let mut preparer = db.connect();
    preparer.batch_execute("BEGIN; INSERT INTO transactions (user_id, amount) VALUES (1, 50000); PREPARE TRANSACTION 'cep_idle'").unwrap();
    let senders = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cep notifier' AND datname = current_database()", &[])
            .unwrap()
            .get(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while senders(&mut c) > 0 {
        assert!(std::time::Instant::now() < deadline, "the sender stayed while the prepared transaction was undecided");
        std::thread::sleep(Duration::from_millis(100));
    }
    let prepared: i64 = c.query_one("SELECT prepared FROM cep.notification_queue()", &[]).unwrap().get(0);
    assert_eq!(prepared, 1);
    c.batch_execute("COMMIT PREPARED 'cep_idle'").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains(r#""key":"1""#), "{got:?}");
}

/// COMMIT PREPARED wakes a sender only in a database with pg_cep: in another, it starts none (at
/// most 8 databases have one at a time). Above all, the sender (a superuser) never deletes from a
/// look-alike `cep.prepared_notices` a user made there, whose trigger would run as superuser.
#[test]
fn commit_prepared_starts_no_sender_in_a_database_without_pg_cep() {
    let db = TestDb::without_extension("prepared_no_cep");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA cep;
         CREATE TABLE cep.prepared_notices (notice_id bigserial PRIMARY KEY, channel text NOT NULL, payload text NOT NULL);
         INSERT INTO cep.prepared_notices (channel, payload) VALUES ('c', 'p');
         CREATE TABLE t (v int); BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'no_cep'",
    )
    .unwrap();
    c.batch_execute("COMMIT PREPARED 'no_cep'").unwrap();
    // A sender starts within milliseconds and stays a second: look for one over half a second.
    for _ in 0..10 {
        let senders: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cep notifier' AND datname = current_database()", &[])
            .unwrap()
            .get(0);
        assert_eq!(senders, 0);
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(rows, 1, "committed");
    let untouched: i64 = c.query_one("SELECT count(*) FROM cep.prepared_notices", &[]).unwrap().get(0);
    assert_eq!(untouched, 1);
}

/// A key too long for a btree entry (3.2 kB of hex, which does not compress) on a table without
/// an index of its own: 0.2.0 failed the user's INSERT on `cep.alerts`' index, and so did the
/// pattern state and the change log. Now each holds the key's bounded form, `cep.stored_key`, and
/// a cooldown, a pattern and capture's counts still tell long keys apart by it.
#[test]
fn a_key_too_long_for_an_index_is_stored_bounded_and_still_told_apart() {
    let db = TestDb::new("long_keys");
    let mut c = db.connect();
    c.batch_execute(
        r#"CREATE TABLE tx (id bigserial PRIMARY KEY, user_key text NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
           INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
           ('large', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6);
           SELECT cep.watch('tx', key_column => 'user_key', create_index => false);
           SELECT cep.alter_watch('tx', cooldown => '1 hour');
           SELECT cep.capture('tx', key_column => 'user_key', high_frequency => 3, anomaly_channel => 'transaction_alerts');
           SELECT cep.define_pattern('two_big', 'tx', 'user_key', 'created_at', 'a a', '{"a": {"amount": {">": 10000}}}', channel => 'transaction_alerts');
           CREATE TABLE keys AS SELECT k, (SELECT string_agg(md5(k || g), '') FROM generate_series(1, 100) g) AS long_key
           FROM unnest(ARRAY['a', 'b']) k;
           -- Two keys sharing their first 3,000 bytes, and a short key shaped like a's stored form.
           UPDATE keys SET long_key = left((SELECT long_key FROM keys WHERE k = 'a'), 3000) || k;
           INSERT INTO keys SELECT 'forged', cep.stored_key(long_key) FROM keys WHERE k = 'a';"#,
    )
    .unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    for _ in 0..4 {
        c.batch_execute("INSERT INTO tx (user_key, amount) SELECT long_key, 50000 FROM keys ORDER BY k").unwrap();
    }
    let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count(&mut c, "SELECT count(*) FROM tx"), 12, "every INSERT went in");
    // One open alert per key, each with its repeats, under its bounded key.
    c.batch_execute("SELECT cep.flush_alert_repeats()").unwrap();
    let alerts = c
        .query(
            "SELECT k.k, a.repeats, octet_length(a.key) FROM keys k JOIN cep.alerts a ON a.key = cep.stored_key(k.long_key)
             WHERE a.cooldown_from IS NOT NULL ORDER BY k.k",
            &[],
        )
        .unwrap();
    let alerts: Vec<(String, i32, i32)> = alerts.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    for (k, repeats, bytes) in &alerts {
        assert_eq!(*repeats, 3, "{k}");
        assert!(*bytes <= 1024, "{k}: {bytes}");
    }
    // Capture's anomaly alerts are rows of cep.alerts too: one per key, under the same form.
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE cooldown_from IS NULL"), 3);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT a.key) FROM cep.alerts a JOIN keys k ON a.key = cep.stored_key(k.long_key) WHERE a.cooldown_from IS NULL"
        ),
        3
    );
    // The pattern matched each key's two pairs (each second event found the first's partial match
    // under the bounded form), and the change log holds every change once under that form:
    // capture counted 4 changes of each key, and flagged each key once.
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.pattern_matches m JOIN keys k ON m.key = cep.stored_key(k.long_key)"), 6);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.change_log l JOIN keys k ON l.key = cep.stored_key(k.long_key)"), 12);
    let got = drain_settled(&mut listener);
    let kinds = |kind: &str| got.iter().filter(|(_, p)| serde_json::from_str::<serde_json::Value>(p).unwrap()["type"] == kind).count();
    assert_eq!((kinds("risk_alert"), kinds("pattern_match"), kinds("anomaly_alert")), (3, 6, 3), "{got:?}");
}

/// A prepared transaction cannot NOTIFY: its notices wait in `cep.prepared_notices`, whole. An
/// alert on a key too long for the sender's 448-byte slots goes as a committed transaction's
/// would (before, a short form with `"truncated": true` went instead).
#[test]
fn a_prepared_transaction_with_long_keys_notifies_whole_payloads() {
    let db = TestDb::new("prepared_long");
    let mut c = db.connect();
    c.batch_execute(
        r#"CREATE TABLE tx (id bigserial PRIMARY KEY, user_key text NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
           INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
           ('large', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6);
           SELECT cep.watch('tx', key_column => 'user_key');
           SELECT cep.capture('tx', key_column => 'user_key', high_frequency => 1, anomaly_channel => 'transaction_alerts');
           SELECT cep.define_pattern('big', 'tx', 'user_key', 'created_at', 'a', '{"a": {"amount": {">": 10000}}}', channel => 'transaction_alerts');"#,
    )
    .unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    // Control characters: JSON prints each as 6 bytes.
    let key = "\u{1}".repeat(600);
    let mut preparer = db.connect();
    preparer
        .batch_execute(
            "BEGIN; INSERT INTO tx (user_key, amount) VALUES (repeat(chr(1), 600), 50000), (repeat(chr(1), 600), 60000); PREPARE TRANSACTION 'cep_long'",
        )
        .unwrap();
    c.batch_execute("COMMIT PREPARED 'cep_long'").unwrap();
    let got = drain_settled(&mut listener);
    let mut kinds: Vec<String> = Vec::new();
    for (_, payload) in &got {
        assert!(payload.len() > 448 && payload.len() < 8000, "{payload}");
        let p: serde_json::Value = serde_json::from_str(payload).unwrap();
        if p["type"] != "pattern_match" {
            assert_eq!((p.get("truncated"), p["key"].as_str()), (None, Some(key.as_str())), "{payload}");
        }
        // The consumer finds the whole alert or match, key and all, by its id.
        let stored: String = match p["alert_id"].as_i64() {
            Some(id) => c.query_one("SELECT key FROM cep.alerts WHERE alert_id = $1", &[&id]).unwrap().get(0),
            None => c.query_one("SELECT key FROM cep.pattern_matches WHERE match_id = $1", &[&p["match_id"].as_i64().unwrap()]).unwrap().get(0),
        };
        assert_eq!(stored, key);
        kinds.push(p["type"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(kinds, ["anomaly_alert", "pattern_match", "pattern_match", "risk_alert", "risk_alert"], "{got:?}");
}

#[test]
fn a_cooldown_turns_a_storm_into_one_notified_alert_and_state_changes_are_notified() {
    let db = TestDb::new("storm");
    let mut c = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    c.batch_execute("SELECT cep.alter_watch('transactions', cooldown => '1 hour')").unwrap();
    let mut writer = db.connect();
    for _ in 0..20 {
        writer.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (3, 50000)").unwrap();
    }
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 2, "one alert per fired rule set (large amount; then large amount and high frequency): {got:?}");
    // The repeats are counted in the writer's memory; they are written when it disconnects.
    drop(writer);
    let sum = "SELECT coalesce(sum(repeats), 0) FROM cep.alerts WHERE key = '3'";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count(&mut c, sum) != 18 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c, sum), 18);
    let id = count(&mut c, "SELECT min(alert_id) FROM cep.alerts WHERE key = '3'");
    c.batch_execute(&format!("SELECT cep.resolve_alert({id}, 'fixed')")).unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1);
    assert!(got[0].1.contains(r#""type" : "alert_state""#) && got[0].1.contains(r#""state" : "resolved""#), "{got:?}");
}

#[test]
fn a_blocked_attempt_is_recorded_with_its_row_even_though_its_statement_fails() {
    let db = TestDb::new("blocked");
    let mut c = setup(&db);
    let mut listener = db.connect();
    listener.batch_execute("LISTEN transaction_alerts").unwrap();
    c.batch_execute("SELECT cep.alter_watch('transactions', block_at => 0.5)").unwrap();
    let e = c.batch_execute("INSERT INTO transactions (user_id, amount, location) VALUES (5, 90000, 'Paris')").unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "09000");
    assert_eq!(count(&mut c, "SELECT count(*) FROM transactions"), 0, "the row is refused");
    // Recorded by the database's sender in a transaction of its own, and notified.
    let recorded = "SELECT count(*) FROM cep.alerts WHERE action = 'blocked' AND key = '5' AND attempted_row->>'amount' = '90000' AND attempted_row->>'location' = 'Paris'";
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count(&mut c, recorded) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c, recorded), 1);
    let got = drain_settled(&mut listener);
    assert!(got.iter().any(|(_, p)| p.contains(r#""action":"blocked""#) && p.contains(r#""key":"5""#)), "{got:?}");
    // In a transaction block too, rolled back: the attempt stays recorded.
    c.batch_execute("BEGIN").unwrap();
    // Refused as the block, not by any other error (0.6 for the large amount, at or above 0.5).
    let e = c.batch_execute("INSERT INTO transactions (user_id, amount) VALUES (6, 80000)").unwrap_err();
    let blocked = e.as_db_error().expect("a server error");
    assert_eq!(blocked.code().code(), "09000", "{}", blocked.message());
    assert!(blocked.message().contains("pg_cep blocked an insert into public.transactions: key 6 scored 0.60"), "{}", blocked.message());
    c.batch_execute("ROLLBACK").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '6'") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '6' AND action = 'blocked'"), 1);
    // Dropped rows ('skip') keep theirs as well.
    c.batch_execute("SELECT cep.alter_watch('transactions', on_block => 'skip'); INSERT INTO transactions (user_id, amount) VALUES (7, 70000)")
        .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '7' AND action = 'blocked' AND attempted_row->>'amount' = '70000'"), 1);
}

/// Runs rounds in lockstep, one thread per session: in each round every session runs its first
/// statement, all wait for each other, then each runs its second (`step(session, round)` gives
/// both; `None` runs nothing). Every session meets every barrier whatever failed, so a failure
/// never leaves another waiting. Returns the failures as SQLSTATE and message.
fn in_lockstep(sessions: Vec<Client>, rounds: i64, step: impl Fn(usize, i64) -> [Option<String>; 2] + Send + Sync + 'static) -> Vec<String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(sessions.len()));
    let step = std::sync::Arc::new(step);
    let threads: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(session, mut s)| {
            let (barrier, step) = (barrier.clone(), step.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for round in 0..rounds {
                    let [before, after] = step(session, round);
                    let mut run = |sql: Option<String>| {
                        let failed = sql.and_then(|sql| s.batch_execute(&sql).err());
                        failures.extend(failed.map(|e| e.as_db_error().map_or(e.to_string(), |d| format!("{}: {}", d.code().code(), d.message()))));
                    };
                    run(before);
                    barrier.wait();
                    run(after);
                }
                failures
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// Two sessions counting repeats of the same open alerts write them to the same rows. Whatever
/// plan each session's flush gets (a nested loop, or a custom plan's hash join, visits the alerts
/// in id order; a generic plan's hash join in the table's order, which CLUSTER makes another), the
/// rows are locked in id order, so the sessions wait for each other and never deadlock; and no
/// repeat is lost. Each key gets 9 rows: under the count rule's 10, the rule set stays the same.
#[test]
fn sessions_flushing_repeats_of_the_same_alerts_never_deadlock_and_lose_none() {
    const KEYS: i64 = 2000;
    const ROUNDS: i64 = 4;
    let db = TestDb::new("flushorder");
    let mut c = setup(&db);
    c.batch_execute("SELECT cep.alter_watch('transactions', cooldown => '1 hour')").unwrap();
    // One alert per key, ids rising as the keys fall; clustered by key, the table is in another order.
    c.batch_execute(&format!(
        "INSERT INTO transactions (user_id, amount) SELECT k, 50000 FROM generate_series({KEYS}, 1, -1) k;
         CLUSTER cep.alerts USING alerts_table_key_idx; ANALYZE cep.alerts"
    ))
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE repeats = 0"), KEYS);
    // A nested loop over the sorted ids; a generic plan's hash join of the ids, over the table.
    let plans = [
        "SET enable_hashjoin = off; SET enable_mergejoin = off",
        "SET enable_nestloop = off; SET enable_mergejoin = off; SET plan_cache_mode = force_generic_plan",
    ];
    let sessions = plans.map(|plan| {
        let mut s = db.connect();
        s.batch_execute(plan).unwrap();
        s
    });
    let insert = format!("INSERT INTO transactions (user_id, amount) SELECT k, 50000 FROM generate_series(1, {KEYS}) k");
    let failures = in_lockstep(sessions.into(), ROUNDS, move |_, _| [Some(insert.clone()), Some("SELECT cep.flush_alert_repeats()".into())]);
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts"), KEYS, "every row repeated an open alert");
    assert_eq!(count(&mut c, "SELECT sum(repeats)::int8 FROM cep.alerts"), 2 * ROUNDS * KEYS);
}

/// Two statements opening the same alerts under a cooldown, their rows in opposite orders: each
/// alert is written in the order of its key, so the second statement waits for the first and counts
/// its rows as repeats, where writing them in row order deadlocked.
#[test]
fn statements_opening_the_same_alerts_in_opposite_orders_never_deadlock() {
    const KEYS: i64 = 200;
    const ROUNDS: i64 = 2;
    let db = TestDb::new("openorder");
    let mut c = setup(&db);
    // Each alert takes a few milliseconds to write, so that the two statements' writes overlap.
    c.batch_execute(
        "SELECT cep.alter_watch('transactions', cooldown => '1 hour');
         CREATE FUNCTION public.slowly() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.003); RETURN NEW; END $$;
         CREATE TRIGGER slowly BEFORE INSERT ON cep.alerts FOR EACH ROW EXECUTE FUNCTION public.slowly();",
    )
    .unwrap();
    let failures = in_lockstep(vec![db.connect(), db.connect()], ROUNDS, |session, round| {
        let order = ["ASC", "DESC"][session];
        let (from, to) = (round * KEYS + 1, (round + 1) * KEYS);
        [None, Some(format!("INSERT INTO transactions (user_id, amount) SELECT k, 50000 FROM generate_series({from}, {to}) k ORDER BY k {order}"))]
    });
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(count(&mut c, "SELECT count(*) FROM transactions"), 2 * ROUNDS * KEYS);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE repeats = 1"), ROUNDS * KEYS, "one alert per key, the other row its repeat");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts"), ROUNDS * KEYS);
}

/// `cep.alert_repeat_flush_interval` decides when a session's counted repeats reach the alert:
/// under an hour no statement writes them (each commit hands them over to shared memory, where
/// the database's sender leaves them for two of its own intervals), and 0 writes them with the
/// next alerting statement.
#[test]
fn the_repeat_flush_interval_decides_when_counts_reach_the_alert() {
    let db = TestDb::new("flushinterval");
    let mut c = setup(&db);
    c.batch_execute("SELECT cep.alter_watch('transactions', cooldown => '1 hour')").unwrap();
    assert_eq!(c.query_one("SHOW cep.alert_repeat_flush_interval", &[]).unwrap().get::<_, String>(0), "1s");
    // The database's hour, read by its sender when the first alert starts it: at the default 1 s
    // it writes handed-over repeats 2 s after their commit, so a check of 0 below would race it.
    c.batch_execute(&format!("ALTER DATABASE {} SET cep.alert_repeat_flush_interval = '1h'", db.name)).unwrap();
    let mut w = db.connect();
    assert_eq!(w.query_one("SHOW cep.alert_repeat_flush_interval", &[]).unwrap().get::<_, String>(0), "1h");
    let insert = "INSERT INTO transactions (user_id, amount) VALUES (4, 50000)";
    let repeats = "SELECT coalesce(sum(repeats), 0)::int8 FROM cep.alerts WHERE key = '4'";
    // The first row opens the alert; the explicit flush starts the interval.
    w.batch_execute(&format!("{insert}; SELECT cep.flush_alert_repeats()")).unwrap();
    for _ in 0..3 {
        w.batch_execute(insert).unwrap();
    }
    assert_eq!(count(&mut c, repeats), 0, "an hour: nothing writes the three repeats, however long this took");
    w.batch_execute(&format!("SET cep.alert_repeat_flush_interval = 0; {insert}")).unwrap();
    assert_eq!(count(&mut c, repeats), 3, "0: the next alerting statement writes the repeats counted before it");
    w.batch_execute(insert).unwrap();
    assert_eq!(count(&mut c, repeats), 4);
    for bad in ["-1", "'2h'"] {
        let e = w.batch_execute(&format!("SET cep.alert_repeat_flush_interval = {bad}")).unwrap_err();
        assert_eq!(e.as_db_error().unwrap().code().code(), "22023", "{bad}");
    }
    assert_eq!(w.query_one("SHOW cep.alert_repeat_flush_interval", &[]).unwrap().get::<_, String>(0), "0");
    assert_eq!(count(&mut c, "SELECT count(*) FROM cep.alerts WHERE key = '4'"), 1);
}

/// Rows of the alerts table updated so far, as the statistics collector counts them.
fn alert_updates(c: &mut Client) -> i64 {
    c.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
    count(c, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'cep.alerts'::regclass")
}

/// A watched table under a one-hour cooldown, with an open alert for each key `1..=keys`.
fn cooldown_alerts_open(db: &TestDb, keys: i32) -> Client {
    let mut c = setup(db);
    c.batch_execute(&format!(
        "SELECT cep.alter_watch('transactions', cooldown => '1 hour');
         INSERT INTO transactions (user_id, amount) SELECT k, 50000 FROM generate_series(1, {keys}) k"
    ))
    .unwrap();
    c
}

/// `sessions` sessions, each running `prepare` and then repeating the alerts of keys `1..=keys`
/// for `storm`, one row per INSERT: their connections and how many rows each inserted.
fn repeat_storm(db: &TestDb, sessions: usize, keys: i32, storm: Duration, prepare: &str) -> Vec<(Client, i64)> {
    let running: Vec<_> = (0..sessions)
        .map(|_| {
            let (mut w, prepare) = (db.connect(), prepare.to_string());
            std::thread::spawn(move || {
                w.batch_execute(&prepare).unwrap();
                let until = std::time::Instant::now() + storm;
                let mut rows = 0;
                while std::time::Instant::now() < until {
                    w.execute("INSERT INTO transactions (user_id, amount) VALUES ($1, 50000)", &[&(rows % keys + 1)]).unwrap();
                    rows += 1;
                }
                (w, i64::from(rows))
            })
        })
        .collect();
    running.into_iter().map(|s| s.join().unwrap()).collect()
}

/// When a storm ends and its sessions stay connected but alert no more, no statement of theirs
/// is left to write the repeats they counted: the database's sender writes them, a few seconds
/// later, and every row is then an alert or a repeat on one while the sessions still idle.
#[test]
fn repeats_are_written_after_the_storm_ends_while_its_sessions_idle() {
    const SESSIONS: usize = 2;
    const KEYS: i32 = 10;
    let db = TestDb::new("idleflush");
    let mut c = cooldown_alerts_open(&db, KEYS);
    let (idle, counts): (Vec<Client>, Vec<i64>) = repeat_storm(&db, SESSIONS, KEYS, Duration::from_millis(1500), "").into_iter().unzip();
    let rows: i64 = counts.iter().sum();
    let ended = std::time::Instant::now();
    let written = "SELECT (sum(repeats) + count(*))::int8 FROM cep.alerts";
    while count(&mut c, written) < rows + i64::from(KEYS) && ended.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let others =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'";
    assert_eq!(count(&mut c, others), SESSIONS as i64, "the sessions are still connected, idle");
    assert_eq!(count(&mut c, written), rows + i64::from(KEYS), "every row is an alert or a repeat on one, {:?} after the storm", ended.elapsed());
    eprintln!("{rows} rows: every repeat written {:?} after the storm ended", ended.elapsed());
    drop(idle);
}

/// The sender's write of a storm's last repeats fails (the alert row is locked past the
/// database's `lock_timeout`): the counts are kept and written at its next try, none lost.
#[test]
fn overdue_repeats_the_sender_cannot_write_are_kept_for_its_next_try() {
    const ROWS: i64 = 50;
    let db = TestDb::new("overdueretry");
    let mut c = setup(&db);
    // Before the first alert: the sender reads the database's settings when it starts.
    c.batch_execute(&format!(
        "ALTER DATABASE {} SET lock_timeout = '200ms';
         SELECT cep.alter_watch('transactions', cooldown => '1 hour')",
        db.name
    ))
    .unwrap();
    let mut w = db.connect();
    for _ in 0..=ROWS {
        w.execute("INSERT INTO transactions (user_id, amount) VALUES (1, 50000)", &[]).unwrap();
    }
    // The storm is over and `w` idles; its repeats wait for the sender, which cannot lock the alert.
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; SELECT FROM cep.alerts FOR UPDATE").unwrap();
    // Past 10 rows the count rule fires too: a second alert. Every row is one or a repeat on one.
    let repeats = "SELECT (coalesce(sum(repeats), 0) + count(*))::int8 FROM cep.alerts";
    std::thread::sleep(Duration::from_secs(4));
    let while_locked = count(&mut c, repeats);
    assert!(while_locked < ROWS, "{while_locked} rows counted through a lock held all along");
    holder.batch_execute("COMMIT").unwrap();
    let released = std::time::Instant::now();
    while count(&mut c, repeats) < ROWS + 1 && released.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&mut c, repeats), ROWS + 1, "every repeat written once the lock was released");
    drop(w);
}

/// Sessions counting repeats of the same open alerts hand them over to shared memory, and one
/// flush per interval writes them all: the alert rows are updated about once per interval, where
/// each session writing its own updated them once per session and interval (and the sessions
/// queued on the same rows). When the sessions leave, the last one writes what is left, so no
/// repeat is lost.
#[test]
fn sessions_counting_repeats_share_one_flush_per_interval_and_lose_none() {
    const SESSIONS: usize = 4;
    const KEYS: i32 = 20;
    const INTERVAL_MS: u128 = 250;
    let db = TestDb::new("sharedflush");
    let mut c = cooldown_alerts_open(&db, KEYS);
    let before = alert_updates(&mut c);
    let started = std::time::Instant::now();
    let interval = format!("SET cep.alert_repeat_flush_interval = '{INTERVAL_MS}ms'");
    // Each session disconnects as its storm ends.
    let rows: i64 = repeat_storm(&db, SESSIONS, KEYS, Duration::from_secs(3), &interval).into_iter().map(|(_, rows)| rows).sum();
    let elapsed = started.elapsed();
    // The sessions are gone once their backends are (the last one writes what is left as it ends).
    let others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&mut c, others) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c, others), 0);
    assert_eq!(
        count(&mut c, "SELECT (sum(repeats) + count(*))::int8 FROM cep.alerts"),
        rows + i64::from(KEYS),
        "every row is an alert or a repeat on one"
    );
    // Past 10 rows a key, the count rule fires too: a second alert per key, opened by whichever
    // session was first (the others' rows then update it as they open it, at most once each).
    let alerts = count(&mut c, "SELECT count(*) FROM cep.alerts");
    let flushes = (elapsed.as_millis() / INTERVAL_MS) as i64 + 2;
    let updated = alert_updates(&mut c) - before;
    assert!(
        updated <= alerts * (flushes + SESSIONS as i64),
        "{updated} updates of {alerts} alerts in {elapsed:?}: more than one flush per {INTERVAL_MS} ms ({rows} rows)"
    );
}
