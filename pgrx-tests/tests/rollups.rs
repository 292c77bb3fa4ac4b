//! The shared rollups over the wire: `cep.realtime_stats` answered from memory must equal the same
//! figures computed from the rows, after concurrent writers with rollbacks and savepoints; a
//! restart leaves memory empty, and the answers come from the rows until `cep.rollup_rebuild`.

use pg_cep_e2e::{connect_to, restart_server, Client, TestDb};

fn setup(c: &mut Client) {
    c.batch_execute(
        "CREATE TABLE tx (id bigserial PRIMARY KEY, user_id integer, amount numeric(12,2),
                          location text, created_at timestamptz NOT NULL DEFAULT now());
         SELECT cep.watch('tx');
         SELECT cep.rollup_rebuild('tx');",
    )
    .unwrap();
}

/// realtime_stats next to the same figures from the rows, in one statement (one `now()`):
/// (source, rows equal, volume equal, active keys equal, top keys equal, rows counted).
fn compare(c: &mut Client, window: &str) -> (String, bool, bool, bool, bool, i64) {
    let row = c
        .query_one(
            "WITH s AS (SELECT * FROM cep.realtime_stats('tx', $1::text::interval, 5)),
                  k AS (SELECT user_id::text AS key, count(*) AS n, sum(amount) AS total FROM tx
                        WHERE created_at >= (SELECT window_start FROM s) AND user_id IS NOT NULL GROUP BY 1),
                  want AS (SELECT coalesce(jsonb_agg(jsonb_build_array(key, n, round(total, 2)) ORDER BY total DESC, key COLLATE \"C\"), '[]') AS top
                           FROM (SELECT * FROM k ORDER BY total DESC, key COLLATE \"C\" LIMIT 5) x),
                  got AS (SELECT coalesce(jsonb_agg(jsonb_build_array(u->>'key', (u->>'transactions')::int8, round((u->>'total')::numeric, 2))
                                                    ORDER BY ord), '[]') AS top
                          FROM s, jsonb_array_elements(s.top_users) WITH ORDINALITY AS t(u, ord))
             SELECT s.source,
                    s.total_transactions = (SELECT coalesce(sum(n), 0) FROM k),
                    round(s.total_volume::numeric, 2) = (SELECT coalesce(sum(total), 0) FROM k),
                    s.active_users = (SELECT count(*) FROM k),
                    (SELECT top FROM got) = (SELECT top FROM want),
                    s.total_transactions
             FROM s",
            &[&window],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5))
}

fn writer(db: String, seed: u64) {
    let mut c = connect_to(&db);
    let mut x = seed;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let values = |next: &mut dyn FnMut(u64) -> u64| {
        format!("({}, {}.{:02}, now() - make_interval(secs => {}))", next(15), 1 + next(900), next(100), next(200))
    };
    let insert = "INSERT INTO tx (user_id, amount, created_at) VALUES ";
    for _ in 0..120 {
        let sql = match next(5) {
            0 => format!("{insert}{}", values(&mut next)),
            1 => format!("{insert}{}, {}, {}", values(&mut next), values(&mut next), values(&mut next)),
            2 => format!("BEGIN; {insert}{}; ROLLBACK", values(&mut next)),
            3 => format!(
                "BEGIN; {insert}{}; SAVEPOINT s; {insert}{}; ROLLBACK TO s; {insert}{}; COMMIT",
                values(&mut next),
                values(&mut next),
                values(&mut next)
            ),
            _ => format!("{insert}(NULL, 5, now()), {}", values(&mut next)),
        };
        c.batch_execute(&sql).unwrap();
    }
}

#[test]
fn stats_from_memory_equal_the_rows_after_concurrent_writers_with_rollbacks() {
    let db = TestDb::new("rollups");
    let mut c = db.connect();
    setup(&mut c);
    // Nothing committed yet: exact, and empty.
    assert_eq!(compare(&mut c, "5 minutes"), ("memory".into(), true, true, true, true, 0));
    c.batch_execute("BEGIN; INSERT INTO tx (user_id, amount) SELECT g % 3, 10 FROM generate_series(1, 50) g; ROLLBACK").unwrap();
    assert_eq!(compare(&mut c, "5 minutes").5, 0, "a rolled-back INSERT leaves nothing in memory");
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let name = db.name.clone();
            std::thread::spawn(move || writer(name, 7 + i))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let (source, rows, volume, active, top, counted) = compare(&mut c, "5 minutes");
    assert_eq!(source, "memory");
    assert!(counted > 100, "the writers' rows are counted: {counted}");
    assert!(rows && volume && active && top, "memory and rows disagree: rows {rows}, volume {volume}, active {active}, top {top}");
    // A window memory cannot answer exactly (per key it keeps minutes, not hours) comes from the rows.
    let (source, rows, volume, active, top, _) = compare(&mut c, "2 hours");
    assert_eq!(source, "rows");
    assert!(rows && volume && active && top);
    let memory: (bool, i64, i64) = {
        let r = c.query_one("SELECT enabled, tables, records FROM cep.rollup_memory()", &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(memory.0 && memory.1 >= 1 && memory.2 > 0, "{memory:?}");
    // The monitoring view counts the same rows.
    let (hour, keys): (i64, i64) = {
        let r = c.query_one("SELECT rows_last_hour, active_keys_last_5_minutes FROM cep.streaming_performance", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    let (want_hour, want_keys): (i64, i64) = {
        let r = c.query_one("SELECT count(*), count(DISTINCT user_id) FROM tx WHERE user_id IS NOT NULL", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((hour, keys), (want_hour, want_keys));
}

#[test]
fn after_a_restart_stats_come_from_the_rows_until_rebuilt() {
    let db = TestDb::new("rollups_restart");
    let mut c = db.connect();
    setup(&mut c);
    c.batch_execute("INSERT INTO tx (user_id, amount, created_at) SELECT g % 7, g, now() - make_interval(secs => g) FROM generate_series(1, 200) g")
        .unwrap();
    let before = compare(&mut c, "5 minutes");
    assert_eq!((before.0.as_str(), before.1 && before.2 && before.3 && before.4), ("memory", true));
    // A row stamped in the future, committed before the restart.
    c.batch_execute("INSERT INTO tx (user_id, amount, created_at) VALUES (99, 1, now() + interval '3 minutes')").unwrap();
    drop(c);
    restart_server();
    let mut c = db.connect();
    let after = compare(&mut c, "5 minutes");
    assert_eq!((after.0.as_str(), after.1 && after.2 && after.3 && after.4, after.5), ("rows", true, before.5 + 1));
    // The first commit after the restart starts memory; the window from 2 minutes ahead holds
    // the future row, which memory never saw: it must not claim that window.
    c.batch_execute("INSERT INTO tx (user_id, amount) VALUES (1, 1)").unwrap();
    let ahead = compare(&mut c, "-2 minutes");
    assert_eq!((ahead.0.as_str(), ahead.1 && ahead.2 && ahead.3 && ahead.4, ahead.5), ("rows", true, 1));
    assert!(c.query_one("SELECT cep.rollup_rebuild('tx')", &[]).unwrap().get::<_, i64>(0) > 0);
    let rebuilt = compare(&mut c, "5 minutes");
    assert_eq!((rebuilt.0.as_str(), rebuilt.1 && rebuilt.2 && rebuilt.3 && rebuilt.4, rebuilt.5), ("rows", true, before.5 + 2));
    // Memory read the future row too, and is exact from the minute after it.
    let rebuilt = compare(&mut c, "-5 minutes");
    assert_eq!((rebuilt.0.as_str(), rebuilt.5), ("memory", 0));
    // A rebuild in a savepoint that rolls back is not loaded; memory starts over instead.
    c.batch_execute("BEGIN; SAVEPOINT s; SELECT cep.rollup_rebuild('tx'); ROLLBACK TO s; COMMIT").unwrap();
    assert_eq!(compare(&mut c, "-5 minutes").0, "rows");
    // Turned off, the stats come from the rows; turned on again, memory starts over.
    c.batch_execute("SELECT cep.watch_rollups('tx', false)").unwrap();
    assert_eq!(compare(&mut c, "5 minutes").0, "rows");
    c.batch_execute("SELECT cep.watch_rollups('tx', true); INSERT INTO tx (user_id, amount) VALUES (1, 1)").unwrap();
    assert_eq!(compare(&mut c, "5 minutes").0, "rows");
    // An older snapshot than the rebuild's lock would miss rows: refused, and memory is untouched.
    let err = c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT cep.rollup_rebuild('tx')").unwrap_err();
    assert_eq!(err.code().map(|s| s.code()), Some("25000"), "{err}");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(compare(&mut c, "5 minutes").0, "rows");
}
