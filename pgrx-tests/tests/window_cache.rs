//! The shared window cache against SQL ground truth, after a random mixed workload from two
//! concurrent sessions: single and multi-row inserts, COPY, rollbacks, savepoints, updates and
//! deletes. The e2e cluster preloads pg_cep with a cache of 8 keys and 1,500 events, far fewer than
//! the tests use, so evictions, reloads and the fallback to SQL are exercised too.

use pg_cep_e2e::{connect_to, restart_server, Client, TestDb};

/// Rules that always fire, so `assess_transaction` reports every metric it computed.
const RULES: &str = r#"
    INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
    ('count', 'threshold', '{"metric": "transaction_count", "operator": ">=", "value": 0, "window": "1 hour"}', 0.1),
    ('sum', 'threshold', '{"metric": "total_amount", "operator": ">=", "value": -1e15, "window": "1 hour"}', 0.1),
    ('max', 'threshold', '{"metric": "max_amount", "operator": ">=", "value": -1e15, "window": "30 minutes"}', 0.1),
    ('places', 'threshold', '{"metric": "distinct_locations", "operator": ">=", "value": 0, "window": "1 hour"}', 0.1)"#;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn values(rng: &mut Lcg, key: u64) -> String {
    let place = ["A", "B", "C"][rng.next(3) as usize];
    format!("({key}, {}, '{place}', now() - make_interval(secs => {}))", 1 + rng.next(5000), rng.next(3300))
}

fn workload(db: String, seed: u64) {
    let mut c = connect_to(&db);
    let mut rng = Lcg(seed);
    let insert = "INSERT INTO tx (user_id, amount, location, created_at) VALUES ";
    for _ in 0..150 {
        let key = rng.next(12);
        match rng.next(7) {
            0 => c.batch_execute(&format!("{insert}{}", values(&mut rng, key))).unwrap(),
            1 => {
                let n = 3 + rng.next(4);
                let rows: Vec<String> = (0..n)
                    .map(|_| {
                        let k = rng.next(12);
                        values(&mut rng, k)
                    })
                    .collect();
                c.batch_execute(&format!("{insert}{}", rows.join(", "))).unwrap();
            }
            2 => c.batch_execute(&format!("BEGIN; {insert}{}; ROLLBACK", values(&mut rng, key))).unwrap(),
            3 => c
                .batch_execute(&format!(
                    "BEGIN; {insert}{}; SAVEPOINT s; {insert}{}; ROLLBACK TO s; {insert}{}; COMMIT",
                    values(&mut rng, key),
                    values(&mut rng, key),
                    values(&mut rng, key)
                ))
                .unwrap(),
            4 => c.batch_execute(&format!("DELETE FROM tx WHERE id = (SELECT min(id) FROM tx WHERE user_id = {key})")).unwrap(),
            5 => c.batch_execute(&format!("UPDATE tx SET amount = amount + 7 WHERE id = (SELECT max(id) FROM tx WHERE user_id = {key})")).unwrap(),
            _ => {
                let mut w = c.copy_in("COPY tx (user_id, amount, location, created_at) FROM STDIN").unwrap();
                for _ in 0..5 {
                    let line = format!("{}\t{}\tB\t{}\n", rng.next(12), 1 + rng.next(900), "2026-01-01 00:00+00");
                    std::io::Write::write_all(&mut w, line.as_bytes()).unwrap();
                }
                w.finish().unwrap();
                // COPY's rows are old; move them into the window with a plain insert of the same.
                c.batch_execute(&format!("{insert}{}", values(&mut rng, key))).unwrap();
            }
        }
    }
}

fn check_against_sql(c: &mut Client) {
    let at: String = c.query_one("SELECT now()::text", &[]).unwrap().get(0);
    for key in 0..12 {
        let details: String = c
            .query_one("SELECT details::text FROM cep.assess_transaction('tx', $1, 0, 'A', $2::text::timestamptz)", &[&key.to_string(), &at])
            .unwrap()
            .get(0);
        let d: serde_json::Value = serde_json::from_str(&details).unwrap();
        let observed =
            |rule: i64| d.as_array().unwrap().iter().find(|r| r["rule_id"] == rule).map(|r| r["evidence"]["observed"].as_f64().unwrap_or(f64::NAN));
        let truth = c
            .query_one(
                "SELECT count(*)::float8, coalesce(sum(amount), 0)::float8, \
                        (SELECT max(amount)::float8 FROM tx WHERE user_id = $1 AND created_at >= $2::text::timestamptz - interval '30 minutes' AND created_at <= $2::text::timestamptz), \
                        count(DISTINCT location)::float8 \
                 FROM tx WHERE user_id = $1 AND created_at >= $2::text::timestamptz - interval '1 hour' AND created_at <= $2::text::timestamptz",
                &[&key, &at],
            )
            .unwrap();
        let (n, sum, max, places): (f64, f64, Option<f64>, f64) = (truth.get(0), truth.get(1), truth.get(2), truth.get(3));
        assert_eq!(observed(1), Some(n), "count for key {key}");
        assert!((observed(2).unwrap() - sum).abs() < 1e-6, "sum for key {key}: {:?} vs {sum}", observed(2));
        assert_eq!(observed(3), max, "max for key {key}");
        assert_eq!(observed(4), Some(places), "distinct locations for key {key}");
    }
}

#[test]
fn window_cache_matches_sql_after_a_mixed_concurrent_workload() {
    let db = TestDb::new("cache");
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE TABLE tx (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL, location text, created_at timestamptz NOT NULL);
         {RULES};
         INSERT INTO tx (user_id, amount, location, created_at)
           SELECT g % 12, g, 'C', now() - make_interval(secs => g * 7) FROM generate_series(1, 400) g;
         SELECT cep.watch('tx', alert_level => 'high');"
    ))
    .unwrap();
    // The rows stored before watching are loaded in one scan.
    let warmed: i64 = c.query_one("SELECT cep.window_cache_warm('tx')", &[]).unwrap().get(0);
    assert_eq!(warmed, 12);
    let enabled: bool = c.query_one("SELECT enabled FROM cep.window_cache()", &[]).unwrap().get(0);
    assert!(enabled, "the e2e cluster preloads pg_cep, so the cache must be on");
    let writers: Vec<_> = [11, 23]
        .into_iter()
        .map(|seed| {
            let name = db.name.clone();
            std::thread::spawn(move || workload(name, seed))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    check_against_sql(&mut c);
    let hits: i64 = c.query_one("SELECT hits FROM cep.window_cache()", &[]).unwrap().get(0);
    assert!(hits > 100, "scoring must have used the cache, hits = {hits}");

    // After a restart the cache is empty and fills again from the table.
    drop(c);
    restart_server();
    let mut c = db.connect();
    let figures = "SELECT keys, events, hits, misses FROM cep.window_cache()";
    let usage = |c: &mut Client| -> (i64, i64, i64, i64) {
        let r = c.query_one(figures, &[]).unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    // Shared memory is new: nothing cached, nothing counted yet.
    assert_eq!(usage(&mut c), (0, 0, 0, 0), "keys, events, hits, misses after the restart");
    workload(db.name.clone(), 5);
    // Misses only, not keys: a workload ending with an UPDATE or DELETE drops the table from the cache.
    let (_, _, _, misses) = usage(&mut c);
    assert!(misses > 0, "scoring after the restart must have loaded keys from the table");
    check_against_sql(&mut c);
}
