//! `--auth role` against a real cluster: HTTP Basic credentials checked by logging in as the role,
//! streams filtered to the tables the role may SELECT, summaries refused for others, ingest
//! written as the role.
//!
//! The test cluster trusts every local connection, which would accept any password. So that the
//! password check is real, the test puts a `scram-sha-256` rule for its own two roles (and no one
//! else) at the top of the cluster's `pg_hba.conf` (found with `SHOW hba_file`; the tests run on
//! the cluster's machine with the right to write it) and takes it out again when done, panic or not.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{connect, start_bridge, test_port, url, SseReader, TestDb};
use futures_util::StreamExt;
use pg_cep_bridge::config::AuthMode;
use pg_cep_bridge::Config;
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(1500);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Two login roles with passwords, unique to this run (roles are cluster-wide); dropped when the
/// value is. Declare it before the [`TestDb`] whose tables it is granted on, so that the database
/// (and with it the grants) is dropped first.
struct Roles {
    port: u16,
    alice: String,
    bob: String,
}

impl Roles {
    async fn create(port: u16) -> Roles {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let roles = Roles { port, alice: format!("bridge_alice_{pid}_{n}"), bob: format!("bridge_bob_{pid}_{n}") };
        let admin = connect(&url(port, "postgres")).await;
        admin
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256';
                 DROP ROLE IF EXISTS {a}; DROP ROLE IF EXISTS {b};
                 CREATE ROLE {a} LOGIN PASSWORD 'alice-pw'; CREATE ROLE {b} LOGIN PASSWORD 'bob-pw';",
                a = roles.alice,
                b = roles.bob
            ))
            .await
            .expect("create roles");
        roles
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let (port, sql) = (self.port, format!("DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {};", self.alice, self.bob));
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url(port, "postgres"), NoTls).await {
                    tokio::spawn(conn);
                    if let Err(e) = c.batch_execute(&sql).await {
                        eprintln!("dropping the test roles: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// Lines put at the top of the cluster's pg_hba.conf: passwords required of the test's roles over
/// TCP. Removed (those lines only) and the configuration reloaded when dropped.
struct HbaGuard {
    port: u16,
    path: String,
    lines: Vec<String>,
}

impl HbaGuard {
    async fn require_passwords(port: u16, roles: &[&str]) -> HbaGuard {
        let admin = connect(&url(port, "postgres")).await;
        let path: String = admin.query_one("SHOW hba_file", &[]).await.expect("SHOW hba_file").get(0);
        let who = roles.join(",");
        let lines = vec![
            format!("host all {who} 127.0.0.1/32 scram-sha-256 # pg_cep-bridge test {}", std::process::id()),
            format!("host all {who} ::1/128 scram-sha-256 # pg_cep-bridge test {}", std::process::id()),
        ];
        let old = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path} (the test must run on the cluster's machine): {e}"));
        let guard = HbaGuard { port, path, lines };
        // Written in place: the file keeps its owner and mode.
        std::fs::write(&guard.path, format!("{}\n{old}", guard.lines.join("\n"))).unwrap_or_else(|e| panic!("write {}: {e}", guard.path));
        admin.execute("SELECT pg_reload_conf()", &[]).await.expect("reload");
        guard
    }

    fn remove(&self) {
        if let Ok(text) = std::fs::read_to_string(&self.path) {
            let kept: Vec<&str> = text.lines().filter(|l| !self.lines.iter().any(|ours| ours == l)).collect();
            let _ = std::fs::write(&self.path, format!("{}\n", kept.join("\n")));
        }
    }
}

impl Drop for HbaGuard {
    fn drop(&mut self) {
        self.remove();
        let port = self.port;
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url(port, "postgres"), NoTls).await {
                    tokio::spawn(conn);
                    let _ = c.execute("SELECT pg_reload_conf()", &[]).await;
                }
            });
        })
        .join();
    }
}

/// Logging in as `user` with `password` directly, as the bridge's check does.
async fn can_log_in(port: u16, db: &str, user: &str, password: &str) -> bool {
    let url = format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db}");
    tokio_postgres::connect(&url, NoTls).await.is_ok()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn row_pk(e: &common::SseEvent) -> i64 {
    e.json()["row_pk"].as_str().and_then(|s| s.parse().ok()).expect("alert names its row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_auth_filters_streams_summaries_and_ingest() {
    let port = test_port();
    let roles = Roles::create(port).await;
    let db = TestDb::new(port).await;
    let (alice, bob) = (roles.alice.as_str(), roles.bob.as_str());
    let _hba = HbaGuard::require_passwords(port, &[alice, bob]).await;
    // The reload takes effect shortly after pg_reload_conf returns: wait until a wrong password
    // is refused, which also shows the rule works.
    let deadline = Instant::now() + WAIT;
    while can_log_in(port, &db.name, alice, "wrong").await {
        assert!(Instant::now() < deadline, "the scram rule for the test roles did not take effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(can_log_in(port, &db.name, alice, "alice-pw").await, "alice logs in with her password");

    let c = db.client().await;
    c.batch_execute(&format!(
        "SET client_min_messages = warning;
         CREATE TABLE tx2 (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                           location text, created_at timestamptz NOT NULL DEFAULT now(), written_by name DEFAULT current_user);
         SELECT cep.watch('tx2', channel => 'bridge_test_alerts2');
         GRANT SELECT ON tx TO {alice};
         GRANT SELECT ON tx, tx2 TO {bob};"
    ))
    .await
    .expect("second table and grants");
    // Interleaved: tx, tx2, tx, tx2, tx, each its own transaction, each one alert.
    let mut rows = Vec::new();
    for i in 0..5 {
        let table = if i % 2 == 0 { "tx" } else { "tx2" };
        let id: i64 =
            c.query_one(&format!("INSERT INTO {table} (user_id, amount) VALUES ($1, 5000) RETURNING id"), &[&i]).await.expect("insert").get(0);
        rows.push((table, id));
    }
    // The cursor holds a row back while an older transaction still runs (a background one, on a
    // busy machine): read until the horizon has passed the last commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all: Vec<(i64, String)> = loop {
        let all: Vec<(i64, String)> = c
            .query("SELECT alert_id, table_name FROM cep.alerts_since(0, 100000)", &[])
            .await
            .expect("alerts_since")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if all.len() >= 5 || Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(all.len(), 5, "{all:?}");
    let all_ids: Vec<i64> = all.iter().map(|a| a.0).collect();
    let tx_ids: Vec<i64> = all.iter().filter(|a| a.1 == "public.tx").map(|a| a.0).collect();
    assert_eq!(tx_ids.len(), 3);

    let (alice_auth, bob_auth) = (basic(alice, "alice-pw"), basic(bob, "bob-pw"));
    // A ring that holds everything (the ring path) and one of 2 rows (the catch-up path).
    for ring_size in [10_000, 2] {
        let mut config = Config::new(db.url());
        config.auth = AuthMode::Role;
        config.ring_size = ring_size;
        let bridge = start_bridge(config).await;
        let base = format!("http://{}", bridge.addr);
        let http = reqwest::Client::new();

        // Without credentials, with a wrong password, as an unknown role: 401 and a Basic challenge.
        let mut failures = 0;
        for path in ["/", "/metrics", "/api/summary?table=tx", "/events/alerts?after=0", "/ws/alerts"] {
            for auth in [None, Some(basic(alice, "wrong")), Some(basic("no_such_role_x", "pw")), Some("Bearer alice-pw".to_string())] {
                let mut request = http.get(format!("{base}{path}"));
                if let Some(a) = &auth {
                    request = request.header("Authorization", a);
                }
                let r = request.send().await.expect("get");
                assert_eq!(r.status(), 401, "{path} with {auth:?}");
                let challenge = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                assert!(challenge.starts_with("Basic realm=\"pg_cep\""), "{challenge}");
                failures += 1;
            }
        }
        let r = http.post(format!("{base}/ingest/tx")).body("{\"user_id\":1,\"amount\":1}").send().await.expect("post");
        assert_eq!(r.status(), 401);
        failures += 1;
        assert_eq!(http.get(format!("{base}/healthz")).send().await.expect("get").status(), 200, "/healthz is open");
        let mut ws_request = format!("ws://{}/ws/alerts?after=0", bridge.addr).into_client_request().expect("request");
        assert!(tokio_tungstenite::connect_async(ws_request.clone()).await.is_err(), "ws without credentials");
        failures += 1;

        // Streams: alice sees tx's alerts only, bob both tables', each in cursor order, no gap.
        let mut alice_sse = SseReader::open(&format!("{base}/events/alerts?after=0"), &[("Authorization", &alice_auth)]).await;
        let got = alice_sse.take(3, WAIT).await;
        assert_eq!(got.iter().map(|e| e.id()).collect::<Vec<_>>(), tx_ids, "alice: tx only (ring {ring_size})");
        assert!(got.iter().all(|e| e.json()["table_name"] == "public.tx"));
        assert!(alice_sse.next(QUIET).await.is_none(), "alice: nothing of tx2 (ring {ring_size})");
        let mut bob_sse = SseReader::open(&format!("{base}/events/alerts?after=0"), &[("Authorization", &bob_auth)]).await;
        let got = bob_sse.take(5, WAIT).await;
        assert_eq!(got.iter().map(|e| e.id()).collect::<Vec<_>>(), all_ids, "bob: everything (ring {ring_size})");
        assert!(bob_sse.next(QUIET).await.is_none(), "bob: nothing more");
        // Resuming after the first of alice's alerts: the rest of hers, across tx2's rows.
        let resume = tx_ids[0].to_string();
        let mut again =
            SseReader::open(&format!("{base}/events/alerts"), &[("Authorization", &alice_auth), ("Last-Event-ID", resume.as_str())]).await;
        assert_eq!(again.take(2, WAIT).await.iter().map(|e| e.id()).collect::<Vec<_>>(), tx_ids[1..].to_vec());
        assert!(again.next(QUIET).await.is_none());

        // WebSocket with Basic credentials: alice's first message is tx's first alert.
        ws_request.headers_mut().insert("authorization", alice_auth.parse().expect("header"));
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_request).await.expect("ws with credentials");
        let first = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("in time").expect("open").expect("message") {
                Message::Text(t) => break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json"),
                _ => continue,
            }
        };
        assert_eq!(first["alert_id"], tx_ids[0]);

        // Live rows: a tx2 row and a tx row; alice gets the tx row's alert only, bob both.
        let t2: i64 = c.query_one("INSERT INTO tx2 (user_id, amount) VALUES (77, 5000) RETURNING id", &[]).await.expect("insert").get(0);
        let t1 = db.insert_alerting(&c, 78).await;
        assert_eq!(alice_sse.take(1, WAIT).await.iter().map(row_pk).collect::<Vec<_>>(), vec![t1]);
        assert!(alice_sse.next(QUIET).await.is_none(), "alice: not tx2's live alert");
        assert_eq!(bob_sse.take(2, WAIT).await.iter().map(row_pk).collect::<Vec<_>>(), vec![t2, t1]);
        // Back to the five alerts for the next round.
        c.execute("DELETE FROM cep.alerts WHERE alert_id > $1", &[&all_ids.iter().max()]).await.expect("clean up the live alerts");

        // Summaries: 403 for a table the role may not SELECT; only readable tables' alerts else.
        let summary = |table: &str, auth: &str| http.get(format!("{base}/api/summary?table={table}")).header("Authorization", auth).send();
        let r = summary("tx2", &alice_auth).await.expect("summary");
        assert_eq!(r.status(), 403);
        let r = summary("tx", &alice_auth).await.expect("summary");
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.expect("json");
        let tables: Vec<&str> = body["recent_alerts"].as_array().expect("alerts").iter().filter_map(|a| a["table_name"].as_str()).collect();
        assert!(!tables.is_empty() && tables.iter().all(|t| *t == "public.tx"), "{tables:?}");
        assert!(body["stats"].as_array().expect("stats").iter().all(|s| s["table_name"] != "tx2"), "{}", body["stats"]);
        assert_eq!(summary("tx2", &bob_auth).await.expect("summary").status(), 200);
        assert_eq!(http.get(format!("{base}/")).header("Authorization", &alice_auth).send().await.expect("page").status(), 200);

        let metrics = http.get(format!("{base}/metrics")).header("Authorization", &bob_auth).send().await.expect("metrics");
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.expect("text");
        assert!(text.contains(&format!("pg_cep_bridge_auth_failures_total {failures}")), "{failures} failures: {text}");
    }

    // Ingest is written as the role: alice has no INSERT on tx2, so nothing is written.
    let mut config = Config::new(db.url());
    config.auth = AuthMode::Role;
    let bridge = start_bridge(config).await;
    let http = reqwest::Client::new();
    let ingest = |auth: &str| {
        http.post(format!("http://{}/ingest/tx2", bridge.addr))
            .header("Authorization", auth)
            .body("{\"user_id\": 5, \"amount\": 3}\n{\"user_id\": 6, \"amount\": 4}\n")
            .send()
    };
    let count = || async { db.client().await.query_one("SELECT count(*) FROM tx2", &[]).await.expect("count").get::<_, i64>(0) };
    let before = count().await;
    let r = ingest(&alice_auth).await.expect("ingest");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["sqlstate"], "42501", "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("permission denied"), "{body}");
    assert_eq!(count().await, before, "nothing written");
    c.batch_execute(&format!("GRANT INSERT ON tx2 TO {alice}; GRANT USAGE ON SEQUENCE tx2_id_seq TO {alice}")).await.expect("grant");
    let r = ingest(&alice_auth).await.expect("ingest");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(count().await, before + 2);
    let writers: Vec<String> =
        c.query("SELECT DISTINCT written_by::text FROM tx2 WHERE user_id IN (5, 6)", &[]).await.expect("select").iter().map(|r| r.get(0)).collect();
    assert_eq!(writers, vec![alice.to_string()], "written as alice");
    let r = http
        .post(format!("http://{}/ingest/tx", bridge.addr))
        .header("Authorization", &bob_auth)
        .body("{\"user_id\": 9, \"amount\": 1}")
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status(), 403, "bob has no INSERT on tx either");
    drop(bridge);
}
