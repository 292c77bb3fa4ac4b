//! Partition maintenance against a real cluster: while another session inserts, two sessions at
//! once, the background worker on its interval, and the `cep_maintenance` notifications.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pg_cep_e2e::{connect_to, drain_settled, Client, TestDb};

const TABLE: &str = "CREATE TABLE tx (id bigserial, user_id integer NOT NULL, amount bigint NOT NULL,
                     created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
                     CREATE TABLE tx_default PARTITION OF tx DEFAULT;";

/// Rows spread over the last four months, all in DEFAULT until maintenance gives them months.
const BACKLOG: &str = "INSERT INTO tx (user_id, amount, created_at)
                       SELECT g % 100, g, now() - make_interval(mins => g * 5) FROM generate_series(1, 30000) g";

fn totals(c: &mut Client) -> (i64, i64) {
    let row = c.query_one("SELECT count(*), coalesce(sum(amount), 0)::bigint FROM tx", &[]).unwrap();
    (row.get(0), row.get(1))
}

fn in_default(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM tx_default", &[]).unwrap().get(0)
}

/// Months present (monthly partitions, DEFAULT excluded), each listed once.
fn months(c: &mut Client) -> Vec<String> {
    c.query("SELECT partition::text FROM cep.partitions('tx') WHERE NOT is_default", &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

#[test]
fn maintenance_while_another_session_inserts_loses_and_duplicates_nothing() {
    let db = TestDb::new("part_insert");
    let mut c = db.connect();
    c.batch_execute(TABLE).unwrap();
    c.batch_execute(BACKLOG).unwrap();
    let (rows_before, sum_before) = totals(&mut c);
    assert_eq!(in_default(&mut c), 30000);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (name, stop) = (db.name.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w = connect_to(&name);
            let (mut rows, mut sum, mut failed, mut i) = (0i64, 0i64, 0i64, 0i64);
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                // Alternating old months (DEFAULT until drained) and this month.
                let ago = if i % 2 == 0 { (i * 7919) % 170_000 } else { i % 600 };
                match w.execute(
                    "INSERT INTO tx (user_id, amount, created_at) VALUES ($1, $2, now() - make_interval(mins => $3))",
                    &[&((i % 100) as i32), &i, &(ago as i32)],
                ) {
                    Ok(_) => {
                        rows += 1;
                        sum += i;
                    }
                    Err(e) => {
                        eprintln!("insert failed: {:?}", e.as_db_error());
                        failed += 1;
                    }
                }
            }
            (rows, sum, failed)
        })
    };
    // Polled, not slept: the writer is under way before maintenance starts, and goes on after it.
    let wrote = |c: &mut Client, n: i64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while totals(c).0 < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wrote(&mut c, rows_before + 20);
    c.batch_execute("SET cep.maintenance_lock_timeout = '10s'").unwrap();
    let created: i64 = c
        .query_one("SELECT count(*) FROM cep.manage_partitions('tx', premake => 1, batch_size => 1000) WHERE action = 'create'", &[])
        .unwrap()
        .get(0);
    let after = totals(&mut c).0;
    wrote(&mut c, after + 40);
    stop.store(true, Ordering::SeqCst);
    let (rows, sum, failed) = writer.join().unwrap();
    assert!(rows > 50, "the writer kept inserting: {rows}");
    assert_eq!(failed, 0, "no insert failed while maintenance ran");
    assert!(created >= 5, "{created}");

    // Rows the writer sent to DEFAULT after their month was created? None: routing follows the
    // attached months. A second run only reports that there is nothing left to drain.
    c.batch_execute("SELECT cep.run_maintenance('tx')").unwrap();
    assert_eq!(in_default(&mut c), 0);
    assert_eq!(totals(&mut c), (rows_before + rows, sum_before + sum));
    let moved: i64 = c.query_one("SELECT sum(rows_moved)::bigint FROM cep.partition_log", &[]).unwrap().get(0);
    assert!(moved >= 30000, "{moved}");
}

#[test]
fn two_sessions_running_maintenance_at_once_agree() {
    let db = TestDb::new("part_two");
    let mut c = db.connect();
    c.batch_execute(TABLE).unwrap();
    c.batch_execute(BACKLOG).unwrap();
    c.batch_execute(
        "INSERT INTO cep.partition_config (parent, control_column, control_type, premake) VALUES ('tx'::regclass, 'created_at', 'timestamptz', 2)",
    )
    .unwrap();
    let before = totals(&mut c);
    let barrier = Arc::new(Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (name, barrier) = (db.name.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = connect_to(&name);
                barrier.wait();
                s.query("SELECT action FROM cep.run_maintenance() WHERE parent = 'public.tx'", &[])
                    .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
            })
        })
        .collect();
    let results: Vec<Vec<String>> = runs.into_iter().map(|h| h.join().unwrap().expect("neither session fails")).collect();
    let creates: usize = results.iter().map(|r| r.iter().filter(|a| *a == "create").count()).sum();
    let list = months(&mut c);
    // Every month exists once; whichever session came second created nothing twice.
    assert_eq!(creates, list.len(), "{results:?} {list:?}");
    assert!(list.len() >= 6, "{list:?}");
    assert_eq!(totals(&mut c), before);
    // Whatever the second session skipped, a later run completes with nothing to do.
    c.batch_execute("SELECT cep.run_maintenance()").unwrap();
    assert_eq!(in_default(&mut c), 0);
    assert_eq!(
        c.query_one("SELECT count(*) FROM cep.run_maintenance() WHERE action <> 'protected' AND parent = 'public.tx'", &[]).unwrap().get::<_, i64>(0),
        0
    );
}

#[test]
fn a_session_holding_the_table_makes_maintenance_skip_not_wait() {
    let db = TestDb::new("part_busy");
    let mut c = db.connect();
    c.batch_execute(TABLE).unwrap();
    c.batch_execute("SELECT count(*) FROM cep.manage_partitions('tx', premake => 0)").unwrap();
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; LOCK TABLE tx IN SHARE MODE").unwrap();
    c.batch_execute("UPDATE cep.partition_config SET premake = 2; SET cep.maintenance_lock_timeout = '200ms'").unwrap();
    let started = Instant::now();
    let actions: Vec<String> = c.query("SELECT action FROM cep.run_maintenance('tx')", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(started.elapsed() < Duration::from_secs(3), "it did not queue behind the lock");
    assert_eq!(actions, ["skipped", "skipped"]);
    // Asked for one month by name, it says why it cannot, in the same time, and adds nothing.
    let started = Instant::now();
    let e = c.batch_execute("SELECT cep.create_monthly_partition('tx', (date_trunc('month', now()) + interval '1 month')::date)").unwrap_err();
    let e = e.as_db_error().expect("a server error");
    assert!(started.elapsed() < Duration::from_secs(3), "it did not queue behind the lock");
    assert_eq!(e.code().code(), "55P03", "{}", e.message());
    assert!(e.message().starts_with("could not lock public.tx within cep.maintenance_lock_timeout (200 ms)"), "{}", e.message());
    assert_eq!(months(&mut c).len(), 1);
    holder.batch_execute("ROLLBACK").unwrap();
    let actions: Vec<String> = c.query("SELECT action FROM cep.run_maintenance('tx')", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(actions, ["create", "create"]);
    assert_eq!(months(&mut c).len(), 3);
}

#[test]
fn maintenance_is_notified_on_cep_maintenance() {
    let db = TestDb::new("part_notify");
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN cep_maintenance").unwrap();
    c.batch_execute(TABLE).unwrap();
    c.batch_execute("INSERT INTO tx (user_id, amount, created_at) VALUES (1, 1, now())").unwrap();
    c.batch_execute("SELECT count(*) FROM cep.manage_partitions('tx', premake => 1)").unwrap();
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 2, "{got:?}");
    let first: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(first["action"], "create");
    assert_eq!(first["parent"], "public.tx");
    assert_eq!(first["rows_moved"], 1);
    // Nothing is sent for maintenance that rolls back.
    c.batch_execute("BEGIN; UPDATE cep.partition_config SET premake = 3; SELECT cep.run_maintenance(); ROLLBACK").unwrap();
    assert!(drain_settled(&mut listener).is_empty());
    assert_eq!(months(&mut c).len(), 2);
}

/// The e2e cluster runs the worker every second in database `e2e_worker`.
#[test]
fn the_background_worker_creates_months_on_its_interval() {
    let db = TestDb::named("e2e_worker");
    let mut c = db.connect();
    c.batch_execute(TABLE).unwrap();
    c.batch_execute("SELECT count(*) FROM cep.manage_partitions('tx', premake => 1)").unwrap();
    assert_eq!(months(&mut c).len(), 2);
    c.batch_execute("UPDATE cep.partition_config SET premake = 4").unwrap();
    // The worker may be waiting out a restart after the database appeared: allow it 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while months(&mut c).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(months(&mut c).len(), 5, "the worker added three months");
    let by_worker: i64 = c.query_one("SELECT count(*) FROM cep.partition_log WHERE action = 'create' AND parent = 'public.tx'", &[]).unwrap().get(0);
    assert_eq!(by_worker, 5);
    let worker: i64 = c.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cep worker'", &[]).unwrap().get(0);
    assert_eq!(worker, 1);
}
