//! Change capture over the wire, on seed 000's graph schema: one notification per transaction,
//! nothing from a rollback, one alert for a bulk delete, and a consumer that reconnects missing
//! nothing, even when transactions commit out of id order.

use std::time::Duration;

use pg_cep_e2e::{drain_notifications_with_senders, drain_settled, drain_settled_with_senders, Client, TestDb};

const GRAPH: &str = "
    CREATE TABLE nodes (id bigint PRIMARY KEY, label text NOT NULL, properties jsonb NOT NULL DEFAULT '{}');
    CREATE TABLE relationships (id bigint PRIMARY KEY, from_id bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
                                to_id bigint NOT NULL REFERENCES nodes ON DELETE CASCADE, type text NOT NULL,
                                properties jsonb NOT NULL DEFAULT '{}');
    SELECT cep.capture('nodes', kind => 'node', channel => 'graph');
    SELECT cep.capture('relationships', kind => 'relationship', channel => 'graph');";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn one_transaction_is_three_events_one_notification_and_a_cascade() {
    let db = TestDb::new("capture_tx");
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN graph").unwrap();
    c.batch_execute(GRAPH).unwrap();
    c.batch_execute(
        "BEGIN;
         INSERT INTO nodes VALUES (1, 'Person', '{\"name\": \"Ada\"}');
         INSERT INTO nodes VALUES (2, 'Person', '{\"name\": \"Alan\"}');
         INSERT INTO relationships VALUES (10, 1, 2, 'KNOWS');
         COMMIT",
    )
    .unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    let note = json(&got[0].1);
    assert_eq!(note["count"], 3);
    let events: Vec<(String, String)> = c
        .query("SELECT event_type, correlation_id::text FROM cep.change_log ORDER BY change_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["node_created", "node_created", "relationship_created"]);
    assert!(events.iter().all(|e| e.1 == events[0].1), "one correlation id: {events:?}");
    assert_eq!(note["correlation_id"], events[0].1.as_str());
    let patterns: String = c.query_one("SELECT patterns::text FROM cep.correlation_patterns()", &[]).unwrap().get(0);
    assert_eq!(patterns, "{transaction_pattern,cascade_operation}");
}

#[test]
fn a_rolled_back_transaction_leaves_nothing_and_sends_nothing() {
    let db = TestDb::new("capture_rollback");
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN graph").unwrap();
    c.batch_execute(GRAPH).unwrap();
    c.batch_execute("BEGIN; INSERT INTO nodes VALUES (1, 'Person'); ROLLBACK").unwrap();
    // A savepoint rolled back inside a committed transaction takes its changes out too.
    c.batch_execute("BEGIN; INSERT INTO nodes VALUES (2, 'Person'); SAVEPOINT s; INSERT INTO nodes VALUES (3, 'Person'); ROLLBACK TO s; COMMIT")
        .unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(json(&got[0].1)["count"], 1);
    let pks: Vec<String> = c.query("SELECT pk FROM cep.change_log", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(pks, ["2"]);
}

#[test]
fn a_bulk_delete_raises_exactly_one_mass_deletion_alert() {
    let db = TestDb::new("capture_delete");
    let mut c = db.connect();
    let mut alerts = db.connect();
    alerts.batch_execute("LISTEN cep_anomalies").unwrap();
    c.batch_execute(GRAPH).unwrap();
    c.batch_execute("SELECT cep.capture('nodes', kind => 'node', channel => 'graph', high_frequency => NULL)").unwrap();
    c.batch_execute("INSERT INTO nodes SELECT g, 'Tmp' FROM generate_series(1, 10000) g").unwrap();
    c.batch_execute("DELETE FROM nodes").unwrap();
    let got = drain_settled(&mut alerts);
    assert_eq!(got.len(), 1, "{got:?}");
    let note = json(&got[0].1);
    assert_eq!(note["anomaly"], "mass_deletion");
    assert_eq!(note["count"], 10000);
    let stored: i64 = c.query_one("SELECT count(*) FROM cep.alerts WHERE rules -> 0 ->> 'anomaly' = 'mass_deletion'", &[]).unwrap().get(0);
    assert_eq!(stored, 1);
    assert_eq!(note["alert_id"], c.query_one("SELECT alert_id FROM cep.alerts", &[]).unwrap().get::<_, i64>(0));
}

fn ids(c: &mut Client, after: i64) -> Vec<i64> {
    c.query("SELECT change_id FROM cep.changes_since($1)", &[&after]).unwrap().iter().map(|r| r.get(0)).collect()
}

#[test]
fn a_consumer_that_reconnects_misses_nothing() {
    let db = TestDb::new("capture_consumer");
    let mut c = db.connect();
    c.batch_execute(GRAPH).unwrap();
    c.batch_execute("INSERT INTO nodes VALUES (1, 'A')").unwrap();
    let mut consumer = db.connect();
    let seen = ids(&mut consumer, 0);
    assert_eq!(seen.len(), 1);
    let last = *seen.last().unwrap();
    drop(consumer);

    // While the consumer is away: a transaction takes an id, another takes a later one and
    // commits first.
    let mut slow = db.connect();
    slow.batch_execute("BEGIN; INSERT INTO nodes VALUES (2, 'B')").unwrap();
    c.batch_execute("INSERT INTO nodes VALUES (3, 'C')").unwrap();
    let mut consumer = db.connect();
    // The later change waits until the earlier transaction ends, so reading past it cannot skip it.
    assert!(ids(&mut consumer, last).is_empty());
    slow.batch_execute("COMMIT").unwrap();
    let caught_up = ids(&mut consumer, last);
    assert_eq!(caught_up.len(), 2, "{caught_up:?}");
    let pks: Vec<String> =
        consumer.query("SELECT pk FROM cep.changes_since($1) ORDER BY change_id", &[&last]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(pks, ["2", "3"]);

    // The other way round: an older transaction takes the larger id and commits first, while a
    // younger one with the smaller id is still open. The consumer reads the larger id first, and
    // still gets the smaller one once it commits.
    let last = *ids(&mut consumer, 0).last().unwrap();
    let mut older = db.connect();
    older.batch_execute("BEGIN; SELECT pg_current_xact_id()").unwrap();
    let mut younger = db.connect();
    younger.batch_execute("BEGIN; INSERT INTO nodes VALUES (4, 'D')").unwrap();
    older.batch_execute("INSERT INTO nodes VALUES (5, 'E'); COMMIT").unwrap();
    let first: Vec<String> = consumer.query("SELECT pk FROM cep.changes_since($1)", &[&last]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(first, ["5"]);
    let five: i64 = consumer.query_one("SELECT change_id FROM cep.change_log WHERE pk = '5'", &[]).unwrap().get(0);
    younger.batch_execute("COMMIT").unwrap();
    let then: Vec<String> = consumer.query("SELECT pk FROM cep.changes_since($1)", &[&five]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(then, ["4"]);
}

/// The sender's process id in this database, once it runs (it starts on the first notifying commit).
fn sender(c: &mut Client) -> Option<i32> {
    c.query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cep notifier' AND datname = current_database()", &[])
        .unwrap()
        .map(|r| r.get(0))
}

/// Commits single-row inserts (ids from 500) until a notification comes from a process other
/// than `own_pid`, the writer's: the database's sender, whose pid this returns.
fn commit_until_the_sender_runs(c: &mut Client, listener: &mut Client, own_pid: i32) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for id in 500.. {
        c.batch_execute(&format!("INSERT INTO nodes VALUES ({id}, 'W')")).unwrap();
        let got = drain_notifications_with_senders(listener, Duration::from_millis(100));
        assert_eq!(got.len(), 1, "{got:?}");
        if got[0].2 != own_pid {
            return got[0].2;
        }
        assert!(std::time::Instant::now() < deadline, "no sender started");
    }
    unreachable!()
}

#[test]
fn notifications_are_sent_after_commit_by_the_databases_sender_which_leaves_when_idle() {
    let db = TestDb::new("capture_sender");
    let mut c = db.connect();
    c.batch_execute(GRAPH).unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN graph").unwrap();
    // The first commit finds no sender: it notifies itself, and starts one. Commits go on until
    // one is sent by another process: the sender then runs.
    let own_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut writers: Vec<Client> = (0..2).map(|_| db.connect()).collect();
    c.batch_execute("INSERT INTO nodes VALUES (1, 'A')").unwrap();
    let first = drain_notifications_with_senders(&mut listener, Duration::from_millis(300));
    assert_eq!(first.iter().map(|n| n.2).collect::<Vec<_>>(), [own_pid], "the first commit notifies by itself");
    let pid = commit_until_the_sender_runs(&mut c, &mut listener, own_pid);
    assert_eq!(sender(&mut c), Some(pid), "the notifications come from the sender");

    // Two writers, 100 single-row transactions each, some rolled back, some with a rolled-back
    // savepoint: one notification per committed transaction, from the sender, none for the rest.
    let writers: Vec<_> = writers
        .drain(..)
        .zip(0i64..)
        .map(|(mut c, w)| {
            std::thread::spawn(move || {
                for i in 0..100i64 {
                    let id = 1000 + w * 1000 + i;
                    match i % 10 {
                        3 => c.batch_execute(&format!("BEGIN; INSERT INTO nodes VALUES ({id}, 'X'); ROLLBACK")).unwrap(),
                        7 => c.batch_execute(&format!("BEGIN; SAVEPOINT s; INSERT INTO nodes VALUES ({id}, 'X'); ROLLBACK TO s; COMMIT")).unwrap(),
                        _ => c.batch_execute(&format!("INSERT INTO nodes VALUES ({id}, 'X')")).unwrap(),
                    }
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let got = drain_notifications_with_senders(&mut listener, Duration::from_millis(500));
    assert_eq!(got.len(), 160, "one per committed transaction");
    assert!(got.iter().all(|n| n.2 == pid), "all from the sender");
    let mut notified: Vec<String> = got.iter().map(|n| json(&n.1)["correlation_id"].as_str().unwrap().to_string()).collect();
    notified.sort();
    notified.dedup();
    let mut logged: Vec<String> =
        c.query("SELECT DISTINCT correlation_id::text FROM cep.change_log WHERE pk::bigint >= 1000", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    logged.sort();
    assert_eq!(notified, logged, "each committed transaction notified once, and no other");

    // Off, a transaction notifies itself.
    c.batch_execute("SET cep.notify_after_commit = off; INSERT INTO nodes VALUES (2, 'B')").unwrap();
    let got = drain_settled_with_senders(&mut listener);
    assert_eq!(got.iter().map(|n| n.2).collect::<Vec<_>>(), [own_pid]);

    // Idle, the sender leaves within seconds, so a plain DROP DATABASE is never kept waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sender(&mut c).is_some() {
        assert!(std::time::Instant::now() < deadline, "the sender stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((c, listener));
    let mut admin = pg_cep_e2e::connect_to("postgres");
    admin.batch_execute(&format!("DROP DATABASE \"{}\"", db.name)).unwrap();
}

/// Puts every commit that asks for it (`synchronous_commit = on`) on hold, waiting for a standby
/// that does not exist, until cancelled; everyone else commits with `local`. Undone on drop.
struct CommitsOnHold;

impl CommitsOnHold {
    fn new() -> CommitsOnHold {
        let mut admin = pg_cep_e2e::connect_to("postgres");
        for sql in [
            "ALTER SYSTEM SET synchronous_commit = 'local'",
            "ALTER SYSTEM SET synchronous_standby_names = 'pg_cep_test_nobody'",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).unwrap();
        }
        wait_for_setting("synchronous_standby_names", "pg_cep_test_nobody");
        CommitsOnHold
    }
}

impl Drop for CommitsOnHold {
    fn drop(&mut self) {
        let mut admin = pg_cep_e2e::connect_to("postgres");
        for sql in ["ALTER SYSTEM RESET synchronous_standby_names", "ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()"] {
            let _ = admin.batch_execute(sql);
        }
        wait_for_setting("synchronous_standby_names", "");
    }
}

/// Polls until a new session sees the reloaded setting: every backend rereads the configuration
/// when it next starts a command after the reload signal, so a fresh one reads it at once.
fn wait_for_setting(name: &str, value: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = pg_cep_e2e::connect_to("postgres");
        let now: String = c.query_one("SELECT current_setting($1)", &[&name]).unwrap().get(0);
        if now == value {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name} stayed {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_slow_commit_and_a_stopped_sender_lose_no_notification() {
    let _hold = CommitsOnHold::new();
    // The maintenance worker replaces a stopped sender: it runs in cep.maintenance_database
    // (e2e_worker on the test cluster), restarting every 10 s until that exists.
    let _worker_db = TestDb::named("e2e_worker");
    let db = TestDb::new("capture_slow_commit");
    let mut c = db.connect();
    c.batch_execute(GRAPH).unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN graph").unwrap();
    let own_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    // Connected first: the sender leaves after a second with nothing to do.
    let mut slow = db.connect();
    let slow_pid: i32 = slow.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let first_sender = commit_until_the_sender_runs(&mut c, &mut listener, own_pid);

    // A commit held after its commit record (its notice reserved, its transaction not yet ended),
    // and one behind it that commits at once.
    let held = std::thread::spawn(move || slow.batch_execute("SET synchronous_commit = on; INSERT INTO nodes VALUES (77, 'slow')").unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !c
        .query_one("SELECT wait_event IS NOT DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $1", &[&slow_pid])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "the commit was not held");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.batch_execute("INSERT INTO nodes VALUES (78, 'behind')").unwrap();
    // In order: nothing goes while the first is undecided, however long it takes.
    assert!(drain_notifications_with_senders(&mut listener, Duration::from_millis(1500)).is_empty());

    // The sender is stopped with both still queued; the maintenance worker starts another.
    c.batch_execute(&format!("SELECT pg_terminate_backend({first_sender})")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let second_sender = loop {
        match sender(&mut c) {
            Some(pid) if pid != first_sender => break pid,
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "no new sender");
        std::thread::sleep(Duration::from_millis(50));
    };

    // The held commit ends: both notifications go, in order, from the new sender.
    c.batch_execute(&format!("SELECT pg_cancel_backend({slow_pid})")).unwrap();
    held.join().unwrap();
    let got = drain_notifications_with_senders(&mut listener, Duration::from_millis(1000));
    let first_ids: Vec<i64> = got.iter().map(|n| json(&n.1)["first_id"].as_i64().unwrap()).collect();
    let expected: Vec<i64> =
        c.query("SELECT change_id FROM cep.change_log WHERE pk IN ('77', '78') ORDER BY pk", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(first_ids, expected, "{got:?}");
    assert!(got.iter().all(|n| n.2 == second_sender), "{got:?}");
}

/// The log's month is taken away, so captured rows go to its default partition; then maintenance
/// creates the month (moving those rows into it) while two sessions keep writing single-row and
/// multi-row statements. Every statement commits, every change is logged once, and none is left
/// in the default partition.
#[test]
fn captured_writers_lose_nothing_while_the_logs_month_is_created_under_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let db = TestDb::new("capture_month");
    let mut c = db.connect();
    c.batch_execute(GRAPH).unwrap();
    c.batch_execute("INSERT INTO nodes VALUES (0, 'Seed')").unwrap();
    let month: String = c.query_one("SELECT tableoid::regclass::text FROM cep.change_log", &[]).unwrap().get(0);
    c.batch_execute(&format!("ALTER TABLE cep.change_log DETACH PARTITION {month}; DROP TABLE {month}")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=2i64)
        .map(|w| {
            let (name, stop) = (db.name.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = pg_cep_e2e::connect_to(&name);
                let (mut rows, mut failed, mut i) = (0i64, 0i64, 0i64);
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let first = w * 10_000_000 + i * 10;
                    let n = if i % 3 == 0 { 5 } else { 1 };
                    match s.execute(
                        "INSERT INTO nodes (id, label) SELECT g, 'Person' FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
                        &[&first, &n],
                    ) {
                        Ok(_) => rows += n,
                        Err(e) => {
                            eprintln!("insert failed: {:?}", e.as_db_error());
                            failed += 1;
                        }
                    }
                }
                (rows, failed)
            })
        })
        .collect();
    let in_default = |c: &mut Client| -> i64 { c.query_one("SELECT count(*) FROM ONLY cep.change_log_default", &[]).unwrap().get(0) };
    // Polled, not slept: on a busy machine the writers may take a while to connect.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while in_default(&mut c) <= 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(in_default(&mut c) > 1, "the writers' changes went to the default partition first");
    c.batch_execute("SET cep.maintenance_lock_timeout = '10s'").unwrap();
    let created: i64 = c.query_one("SELECT count(*) FROM cep.run_maintenance('cep.change_log') WHERE action = 'create'", &[]).unwrap().get(0);
    // The writers go on into the new month before they stop.
    let nodes = |c: &mut Client| -> i64 { c.query_one("SELECT count(*) FROM nodes", &[]).unwrap().get(0) };
    let (after, deadline) = (nodes(&mut c), std::time::Instant::now() + Duration::from_secs(10));
    while nodes(&mut c) < after + 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    let (mut rows, mut failed) = (0i64, 0i64);
    for w in writers {
        let (r, f) = w.join().unwrap();
        (rows, failed) = (rows + r, failed + f);
    }
    assert!(created >= 1, "the month was created again");
    assert_eq!(failed, 0, "no captured statement failed while maintenance ran");
    assert!(rows > 50, "the writers kept writing: {rows}");
    c.batch_execute("SELECT cep.run_maintenance('cep.change_log')").unwrap();
    assert_eq!(in_default(&mut c), 0, "nothing left in the default partition");
    let (logged, distinct, nodes): (i64, i64, i64) = {
        let r = c
            // The seed node's change went with the dropped month.
            .query_one("SELECT count(*), count(DISTINCT pk), (SELECT count(*) FROM nodes WHERE id <> 0) FROM cep.change_log WHERE table_name = 'public.nodes' AND op = 'I'", &[])
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((logged, distinct, nodes), (rows, rows, rows), "every committed change logged once");
}
