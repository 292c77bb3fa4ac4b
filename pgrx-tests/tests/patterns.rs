//! Sequence patterns over the wire: the seed's login → browse → purchase notified to a LISTEN
//! session, nothing from a rolled-back insert, partial matches surviving a restart, and two
//! sessions advancing the same key without losing an event.

use std::sync::{Arc, Barrier};

use pg_cep_e2e::{drain_settled, restart_server, Client, TestDb};

const EVENTS: &str = "CREATE TABLE user_events (id bigserial PRIMARY KEY, user_id integer NOT NULL, event_type text NOT NULL,
                      amount numeric, created_at timestamptz NOT NULL DEFAULT clock_timestamp())";

const CHECKOUT: &str = r#"SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase',
    '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"}, "purchase": {"event_type": "purchase"}}',
    within => '30 minutes', channel => 'checkouts')"#;

fn insert(c: &mut Client, user: i32, kind: &str) {
    c.execute("INSERT INTO user_events (user_id, event_type, amount) VALUES ($1, $2, 10)", &[&user, &kind]).unwrap();
}

#[test]
fn the_seeds_checkout_is_notified_once_committed_and_never_after_rollback() {
    let db = TestDb::new("pattern_notify");
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN checkouts").unwrap();
    c.batch_execute(EVENTS).unwrap();
    c.batch_execute(CHECKOUT).unwrap();

    // A rolled-back purchase sends nothing and leaves the partial match as it was.
    for kind in ["login", "browse", "browse"] {
        insert(&mut c, 7, kind);
    }
    c.batch_execute("BEGIN").unwrap();
    insert(&mut c, 7, "purchase");
    c.batch_execute("ROLLBACK").unwrap();
    assert!(drain_settled(&mut listener).is_empty());
    assert_eq!(c.query_one("SELECT count(*) FROM cep.pattern_matches", &[]).unwrap().get::<_, i64>(0), 0);

    insert(&mut c, 8, "login");
    insert(&mut c, 7, "purchase");
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    let payload: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(payload["type"], "pattern_match");
    assert_eq!(payload["pattern"], "checkout");
    assert_eq!(payload["key"], "7");
    assert_eq!(payload["rows"], serde_json::json!({"login": [1], "browse": [2, 3], "purchase": [6]}));
    let stored: i64 = c.query_one("SELECT match_id FROM cep.pattern_matches", &[]).unwrap().get(0);
    assert_eq!(payload["match_id"], stored);
}

#[test]
fn partial_matches_survive_a_restart() {
    let db = TestDb::new("pattern_restart");
    let mut c = db.connect();
    c.batch_execute(EVENTS).unwrap();
    c.batch_execute(CHECKOUT).unwrap();
    insert(&mut c, 1, "login");
    insert(&mut c, 1, "browse");
    drop(c);
    restart_server();
    let mut c = db.connect();
    insert(&mut c, 1, "purchase");
    let rows: String = c.query_one("SELECT rows::text FROM cep.pattern_matches", &[]).unwrap().get(0);
    assert_eq!(rows, r#"{"login": [1], "browse": [2], "purchase": [3]}"#);
}

#[test]
fn two_sessions_advancing_one_key_lose_no_event() {
    let db = TestDb::new("pattern_concurrent");
    let mut c = db.connect();
    c.batch_execute(EVENTS).unwrap();
    // Every 10 events of a key make one match: lost state would make fewer.
    c.batch_execute(r#"SELECT cep.define_pattern('tens', 'user_events', 'user_id', 'created_at', 'e{10}', '{"e": {"event_type": "tick"}}')"#)
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (name, barrier) = (db.name.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut w = pg_cep_e2e::connect_to(&name);
                barrier.wait();
                for i in 0..100 {
                    if i % 10 == 0 {
                        // Some multi-row statements too, in their own transactions.
                        w.batch_execute("BEGIN; INSERT INTO user_events (user_id, event_type) VALUES (1, 'tick'), (1, 'tick'); COMMIT").unwrap();
                    } else {
                        w.execute("INSERT INTO user_events (user_id, event_type) VALUES (1, 'tick')", &[]).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let events: i64 = c.query_one("SELECT count(*) FROM user_events", &[]).unwrap().get(0);
    assert_eq!(events, 220);
    let matches: i64 = c.query_one("SELECT count(*) FROM cep.pattern_matches", &[]).unwrap().get(0);
    assert_eq!(matches, 22);
    // Every event was used exactly once.
    let used: i64 = c.query_one("SELECT count(DISTINCT id) FROM cep.pattern_matches, jsonb_array_elements_text(rows->'e') id", &[]).unwrap().get(0);
    assert_eq!(used, 220);
}

/// The e2e cluster's worker runs `cep.fire_timeouts()` every second in database `e2e_worker`;
/// this test uses its own database, so it calls it itself, as users without the worker do.
#[test]
fn an_absence_completes_from_fire_timeouts_and_is_notified() {
    let db = TestDb::new("pattern_absence");
    let mut c = db.connect();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN resets").unwrap();
    c.batch_execute(EVENTS).unwrap();
    c.batch_execute(
        r#"SELECT cep.define_pattern('reset_no_login', 'user_events', 'user_id', 'created_at', 'reset !login',
        '{"reset": {"event_type": "password_reset"}, "login": {"event_type": "login"}}', within => '1 second', channel => 'resets')"#,
    )
    .unwrap();
    insert(&mut c, 1, "password_reset");
    insert(&mut c, 2, "password_reset");
    insert(&mut c, 2, "login");
    // Not yet due: nothing fires.
    let fired: i64 = c.query_one("SELECT cep.fire_timeouts()", &[]).unwrap().get(0);
    assert_eq!(fired, 0);
    // Two seconds later, by pg_cep's clock (no sleep): the reset of user 1 has seen no login.
    c.batch_execute("SET cep.clock_offset = '2s'").unwrap();
    let fired: i64 = c.query_one("SELECT cep.fire_timeouts()", &[]).unwrap().get(0);
    assert_eq!(fired, 1);
    let got = drain_settled(&mut listener);
    assert_eq!(got.len(), 1, "{got:?}");
    let payload: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(payload["completed_by"], "timeout");
    assert_eq!(payload["key"], "1");
}

/// Each backend keeps copies of the states it committed, valid while no other session wrote the
/// key. Two sessions take turns on the same keys, with rolled-back transactions and savepoints,
/// and the live matches must be the ones `cep.match_recognize` finds in the committed rows.
#[test]
fn two_sessions_taking_turns_with_rollbacks_match_like_history() {
    let db = TestDb::new("pattern_turns");
    let mut sessions = [db.connect(), db.connect()];
    sessions[0].batch_execute(EVENTS).unwrap();
    let define = r#"{"a": {"event_type": "login"}, "b": {"event_type": "browse", "amount": {">": "PREV.amount"}}, "c": {"event_type": "purchase"}}"#;
    let pattern = format!("'a b+ c', '{define}', within => '1 hour'");
    sessions[0].batch_execute(&format!("SELECT cep.define_pattern('turns', 'user_events', 'user_id', 'created_at', {pattern})")).unwrap();
    let mut seed = 11u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let kinds = ["login", "browse", "browse", "browse", "purchase"];
    for _ in 0..400 {
        let s = &mut sessions[next(2) as usize];
        let event = |n: &mut dyn FnMut(u64) -> u64| format!("({}, '{}', {})", n(3), kinds[n(5) as usize], n(100));
        let sql = match next(6) {
            0 => format!("BEGIN; INSERT INTO user_events (user_id, event_type, amount) VALUES {}; ROLLBACK", event(&mut next)),
            1 => format!(
                "BEGIN; INSERT INTO user_events (user_id, event_type, amount) VALUES {}; SAVEPOINT s; \
                 INSERT INTO user_events (user_id, event_type, amount) VALUES {}; ROLLBACK TO s; \
                 INSERT INTO user_events (user_id, event_type, amount) VALUES {}; COMMIT",
                event(&mut next),
                event(&mut next),
                event(&mut next)
            ),
            2 => format!("INSERT INTO user_events (user_id, event_type, amount) VALUES {}, {}", event(&mut next), event(&mut next)),
            _ => format!("INSERT INTO user_events (user_id, event_type, amount) VALUES {}", event(&mut next)),
        };
        s.batch_execute(&sql).unwrap();
    }
    let c = &mut sessions[0];
    let all = "coalesce(string_agg(key || rows::text, ';' ORDER BY key, match_end, rows::text), '')";
    let live: String = c.query_one(&format!("SELECT {all} FROM cep.pattern_matches WHERE pattern_name = 'turns'"), &[]).unwrap().get(0);
    let history: String =
        c.query_one(&format!("SELECT {all} FROM cep.match_recognize('user_events', 'user_id', 'created_at', {pattern})"), &[]).unwrap().get(0);
    assert!(live.matches(';').count() >= 5, "the workload must complete matches: {live}");
    assert_eq!(live, history);
}

/// The shared copies outlive the extension; a pattern defined again after DROP and CREATE
/// EXTENSION gets the same id, and must start with no partial matches.
#[test]
fn a_recreated_extension_starts_without_the_old_partial_matches() {
    let db = TestDb::new("pattern_recreate");
    let mut c = db.connect();
    c.batch_execute(EVENTS).unwrap();
    c.batch_execute(CHECKOUT).unwrap();
    insert(&mut c, 1, "login");
    insert(&mut c, 1, "browse");
    let id: i32 = c.query_one("SELECT pattern_id FROM cep.patterns", &[]).unwrap().get(0);
    c.batch_execute("SET client_min_messages = warning; DROP EXTENSION pg_cep CASCADE; CREATE EXTENSION pg_cep").unwrap();
    c.batch_execute(CHECKOUT).unwrap();
    assert_eq!(c.query_one("SELECT pattern_id FROM cep.patterns", &[]).unwrap().get::<_, i32>(0), id, "the same id again");
    insert(&mut c, 1, "purchase");
    assert_eq!(c.query_one("SELECT count(*) FROM cep.pattern_matches", &[]).unwrap().get::<_, i64>(0), 0);
    // Matching works as usual from there.
    for kind in ["login", "browse", "purchase"] {
        insert(&mut c, 1, kind);
    }
    assert_eq!(c.query_one("SELECT count(*) FROM cep.pattern_matches", &[]).unwrap().get::<_, i64>(0), 1);
}
