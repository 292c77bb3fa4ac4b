//! End-to-end tests of the bridge against a real PostgreSQL with pg_cep (no mocks).
//! `make e2e` runs them against its cluster (`PG_CEP_TEST_PORT`); without one they fail.

mod common;

use std::time::Duration;

use common::{start_bridge, test_port, SseReader, TestDb};
use futures_util::{SinkExt, StreamExt};
use pg_cep_bridge::Config;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(1500);

fn row_pk(e: &common::SseEvent) -> i64 {
    e.json()["row_pk"].as_str().and_then(|s| s.parse().ok()).expect("alert names its row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_alerts_in_cursor_order() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let c = db.client().await;
    let mut rows = Vec::new();
    for user in 1..=3 {
        rows.push(db.insert_alerting(&c, user).await);
    }
    let mut sse = SseReader::open(&format!("http://{}/events/alerts?after=0", bridge.addr), &[]).await;
    let events = sse.take(3, WAIT).await;
    assert_eq!(events.iter().map(row_pk).collect::<Vec<_>>(), rows, "one alert per row, in commit order");
    assert_eq!(events.iter().map(|e| e.id()).collect::<Vec<_>>(), db.alert_ids().await, "same order as cep.alerts_since");
    assert_eq!(events[0].json()["table_name"], "public.tx");

    // Live: rows written after connecting arrive too, and nothing else.
    let mut live = SseReader::open(&format!("http://{}/events/alerts", bridge.addr), &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_row = db.insert_alerting(&c, 4).await;
    let got = live.take(1, WAIT).await;
    assert_eq!(row_pk(&got[0]), new_row);
    assert!(live.next(QUIET).await.is_none(), "no duplicate");
    let more = sse.take(1, WAIT).await;
    assert_eq!(row_pk(&more[0]), new_row);
}

/// Resuming with Last-Event-ID gives exactly the rows after it, from the ring and (with a ring too
/// small to hold the resume point) from the consumer's own catch-up queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_has_no_gap_and_no_duplicate() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let c = db.client().await;
    for user in 1..=6 {
        db.insert_alerting(&c, user).await;
    }
    let all = db.alert_ids().await;
    assert_eq!(all.len(), 6);
    for ring_size in [10_000, 2] {
        let mut config = Config::new(db.url());
        config.ring_size = ring_size;
        let bridge = start_bridge(config).await;
        for from in [0usize, 1, 4, 5] {
            let resume = all[from].to_string();
            let mut sse = SseReader::open(&format!("http://{}/events/alerts", bridge.addr), &[("Last-Event-ID", resume.as_str())]).await;
            let events = sse.take(all.len() - from - 1, WAIT).await;
            assert_eq!(events.iter().map(|e| e.id()).collect::<Vec<_>>(), all[from + 1..].to_vec(), "ring {ring_size}, after {resume}");
            assert!(sse.next(Duration::from_millis(700)).await.is_none(), "nothing more (ring {ring_size}, after {resume})");
        }
        // A consumer that resumes from an old id keeps following live rows after catching up.
        let mut sse = SseReader::open(&format!("http://{}/events/alerts?after={}", bridge.addr, all[0]), &[]).await;
        let caught_up = sse.take(5, WAIT).await;
        assert_eq!(caught_up.iter().map(|e| e.id()).collect::<Vec<_>>(), all[1..].to_vec());
        let row = db.insert_alerting(&c, 99).await;
        let next = sse.take(1, WAIT).await;
        assert_eq!(row_pk(&next[0]), row);
        assert!(sse.next(QUIET).await.is_none(), "no duplicate after switching to the ring");
        drop(bridge);
        // The next round starts from the new end.
        db.client().await.execute("DELETE FROM cep.alerts WHERE alert_id > $1", &[&all[5]]).await.expect("delete");
    }
}

/// An alert of a transaction still running holds back newer ones; after it commits both come, in
/// cursor order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_transaction_holds_back_newer_alerts() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let mut sse = SseReader::open(&format!("http://{}/events/alerts?after=0", bridge.addr), &[]).await;

    let mut a = db.client().await;
    let b = db.client().await;
    let tx_a = a.transaction().await.expect("begin A");
    let row_a: i64 = tx_a.query_one("INSERT INTO tx (user_id, amount) VALUES (1, 5000) RETURNING id", &[]).await.expect("insert A").get(0);
    let row_b = db.insert_alerting(&b, 2).await;
    assert!(sse.next(Duration::from_secs(2)).await.is_none(), "B's alert must wait while A is in flight");
    tx_a.commit().await.expect("commit A");
    let events = sse.take(2, WAIT).await;
    assert_eq!(events.iter().map(row_pk).collect::<Vec<_>>(), vec![row_a, row_b], "A's alert first, then B's");
    assert!(sse.next(QUIET).await.is_none(), "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_writes_rows_and_fires_the_monitor() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let mut sse = SseReader::open(&format!("http://{}/events/alerts?after=0", bridge.addr), &[]).await;
    let http = reqwest::Client::new();
    let body = "{\"user_id\": 7, \"amount\": 12}\n\n{\"user_id\": 8, \"amount\": 25000, \"location\": \"Shanghai\"}\n";
    let r = http.post(format!("http://{}/ingest/tx", bridge.addr)).body(body).send().await.expect("ingest");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["rows"], 2);
    let c = db.client().await;
    let rows = c.query("SELECT user_id, amount::float8, location, created_at IS NOT NULL FROM tx ORDER BY id", &[]).await.expect("select");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].get::<_, i32>(0), 8);
    assert_eq!(rows[1].get::<_, Option<String>>(2).as_deref(), Some("Shanghai"));
    assert!(rows[0].get::<_, bool>(3), "unnamed columns take their defaults");
    let alert = sse.take(1, WAIT).await;
    assert_eq!(alert[0].json()["key"], "8", "the monitor ran on the ingested row");

    // WebSocket ingest: one ack per batch.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/ingest/tx", bridge.addr)).await.expect("ws connect");
    ws.send(Message::text("{\"user_id\": 9, \"amount\": 3}\n{\"user_id\": 9, \"amount\": 4}")).await.expect("send");
    let ack: serde_json::Value = serde_json::from_str(ws.next().await.expect("ack").expect("ack").to_text().expect("text")).expect("json");
    assert_eq!(ack["rows"], 2);
    ws.send(Message::text("{\"user_id\": 9, \"amount\": 3}\n42")).await.expect("send");
    let ack: serde_json::Value = serde_json::from_str(ws.next().await.expect("ack").expect("ack").to_text().expect("text")).expect("json");
    assert_eq!(ack["line"], 2);
    let count: i64 = c.query_one("SELECT count(*) FROM tx", &[]).await.expect("count").get(0);
    assert_eq!(count, 4);

    let metrics = http.get(format!("http://{}/metrics", bridge.addr)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("pg_cep_bridge_rows_ingested_total 4"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_bad_batches_and_writes_nothing() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let http = reqwest::Client::new();
    let post = |table: &str, body: &'static str| http.post(format!("http://{}/ingest/{table}", bridge.addr)).body(body).send();

    let r = post("tx", "{\"user_id\": 1, \"amount\": 1}\n{\"user_id\": 2, \"amount\": 2}\n{not json}\n").await.expect("post");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["line"], 3, "{body}");
    let r = post("tx", "{\"user_id\": 1, \"amount\": 1}\n[1]\n").await.expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["line"], 2);
    // The database refuses a row: its message and SQLSTATE, nothing written.
    let r = post("tx", "{\"user_id\": 1, \"amount\": 1}\n{\"amount\": 2}\n").await.expect("post");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["sqlstate"], "23502", "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("user_id"), "{body}");
    // Unknown columns, tables and pg_cep's own tables.
    assert_eq!(post("tx", "{\"user_id\": 1, \"amount\": 1, \"bogus\": 1}").await.expect("post").status(), 400);
    assert_eq!(post("no_such_table", "{\"a\": 1}").await.expect("post").status(), 404);
    assert_eq!(post("cep.alerts", "{\"key\": \"x\"}").await.expect("post").status(), 403);
    // Not a name: 400 where to_regclass rejects the syntax (PostgreSQL 15), 404 where it answers
    // NULL for it (16 and later). Either way nothing runs as SQL.
    let status = post("tx;DROP TABLE tx", "{\"user_id\": 1, \"amount\": 1}").await.expect("post").status();
    assert!(status == 400 || status == 404, "{status}");
    let count: i64 = db.client().await.query_one("SELECT count(*) FROM tx", &[]).await.expect("count").get(0);
    assert_eq!(count, 0, "no batch wrote anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_stream_delivers_rows_as_json() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let c = db.client().await;
    let first = db.insert_alerting(&c, 1).await;
    let second = db.insert_alerting(&c, 2).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/alerts?after=0", bridge.addr)).await.expect("ws connect");
    let mut got = Vec::new();
    while got.len() < 2 {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("in time").expect("open").expect("message");
        if let Message::Text(t) = message {
            let row: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            got.push(row["row_pk"].as_str().and_then(|s| s.parse::<i64>().ok()).expect("row_pk"));
        }
    }
    assert_eq!(got, vec![first, second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_dropped_connection() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let mut sse = SseReader::open(&format!("http://{}/events/alerts?after=0", bridge.addr), &[]).await;
    let c = db.client().await;
    let first = db.insert_alerting(&c, 1).await;
    assert_eq!(row_pk(&sse.take(1, WAIT).await[0]), first);
    // Kill every other connection to the database: the bridge's reader and pool.
    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
        .await
        .expect("terminate");
    let second = db.insert_alerting(&c, 2).await;
    assert_eq!(row_pk(&sse.take(1, WAIT).await[0]), second, "resumed after the reconnect");
    assert!(sse.next(QUIET).await.is_none(), "no duplicate after the reconnect");
    let metrics = reqwest::get(format!("http://{}/metrics", bridge.addr)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("pg_cep_bridge_db_reconnects_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let health = reqwest::get(format!("http://{}/healthz", bridge.addr)).await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<serde_json::Value>().await.expect("json"), serde_json::json!({"database": "up"}));

    let mut sse = SseReader::open(&format!("http://{}/events/alerts?after=0", bridge.addr), &[]).await;
    let c = db.client().await;
    db.insert_alerting(&c, 1).await;
    let event = sse.take(1, WAIT).await;
    let metrics = reqwest::get(format!("http://{}/metrics", bridge.addr)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("pg_cep_bridge_events_out_total{stream=\"alerts\"} 1"), "{metrics}");
    assert!(metrics.contains("pg_cep_bridge_consumers{stream=\"alerts\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("pg_cep_bridge_newest_id{{stream=\"alerts\"}} {}", event[0].id())), "{metrics}");
    assert!(metrics.contains("pg_cep_bridge_db_up 1"), "{metrics}");

    // A bridge whose database is unreachable still serves HTTP, and says the database is down.
    let mut config = Config::new("host=127.0.0.1 port=1 user=postgres dbname=nowhere connect_timeout=1");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let down = pg_cep_bridge::start(config).await.expect("start");
    let health = reqwest::get(format!("http://{}/healthz", down.addr)).await.expect("healthz");
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<serde_json::Value>().await.expect("json"), serde_json::json!({"database": "down"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_everywhere_but_healthz() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let mut config = Config::new(db.url());
    config.token = Some("s3cret/+".to_string());
    let bridge = start_bridge(config).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", bridge.addr);
    for path in ["/metrics", "/", "/api/summary?table=tx", "/events/alerts"] {
        assert_eq!(http.get(format!("{base}{path}")).send().await.expect("get").status(), 401, "{path} without token");
        let wrong = http.get(format!("{base}{path}")).bearer_auth("nope").send().await.expect("get");
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(http.post(format!("{base}/ingest/tx")).body("{\"user_id\":1,\"amount\":1}").send().await.expect("post").status(), 401);
    assert_eq!(http.get(format!("{base}/metrics")).bearer_auth("s3cret/+").send().await.expect("get").status(), 200);
    assert_eq!(http.get(format!("{base}/metrics?token=s3cret%2F%2B")).send().await.expect("get").status(), 200);
    assert_eq!(http.get(format!("{base}/healthz")).send().await.expect("get").status(), 200);
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/ws/alerts", bridge.addr)).await.is_err(), "ws without token");
    assert!(tokio_tungstenite::connect_async(format!("ws://{}/ws/alerts?token=s3cret%2F%2B", bridge.addr)).await.is_ok(), "ws with token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_summary() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let c = db.client().await;
    c.batch_execute("INSERT INTO tx (user_id, amount) SELECT 1 + g % 3, 100 * g FROM generate_series(1, 20) g").await.expect("insert");
    let page = reqwest::get(format!("http://{}/", bridge.addr)).await.expect("page").text().await.expect("text");
    for id in [
        "card-total",
        "card-tps",
        "card-latency",
        "card-users",
        "alert-feed",
        "match-feed",
        "chart-minutes",
        "chart-cost",
        "chart-users",
        "chart-latency",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "dashboard has #{id}");
    }
    assert!(!page.contains("http://") && !page.contains("https://"), "no external resources");
    let summary: serde_json::Value =
        reqwest::get(format!("http://{}/api/summary?table=tx", bridge.addr)).await.expect("summary").json().await.expect("json");
    assert_eq!(summary["table"], "tx");
    assert_eq!(summary["cards"]["total"], 20);
    assert_eq!(summary["cards"]["active_users"], 3);
    assert!(summary["cards"]["latency_ms"].as_f64().is_some(), "{summary}");
    assert_eq!(summary["rules"]["1"], "big amount");
    assert_eq!(summary["recent_alerts"].as_array().map(Vec::len), Some(10), "amounts 1100..2000 alert");
    let missing = reqwest::get(format!("http://{}/api/summary?table=nope", bridge.addr)).await.expect("summary");
    assert_eq!(missing.status(), 404);
}

/// Reads `/metrics` until `line` shows up, or panics after `WAIT`.
async fn wait_for_metric(addr: std::net::SocketAddr, line: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {line:?} in {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A consumer that does not read while more rows arrive than the ring, its queue and the socket
/// buffers hold is disconnected: SSE ends with `event: lagged` naming the last id it was sent, and
/// resuming there gives exactly the rest (no gap, no duplicate). WebSocket closes with code 4000
/// and the same resume point in the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_resumes_without_gap() {
    const ROWS: i64 = 5000;
    let port = test_port();
    let db = TestDb::new(port).await;
    let mut config = Config::new(db.url());
    // A ring larger than one cursor read (1000 rows), so that consumers get some rows before
    // they fall out of it; a short queue.
    config.ring_size = 2000;
    config.consumer_queue = 4;
    let bridge = start_bridge(config).await;
    let c = db.client().await;

    // Opened (headers read) but not read while the rows arrive.
    // Live consumers (a resume point older than the ring would be served by catch-up queries,
    // which go at the consumer's pace and never fall behind), on connections with small receive
    // buffers, so that a few thousand rows are more than the connection holds.
    let mut slow = SseReader::open_small(bridge.addr, "/events/alerts").await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws/alerts", bridge.addr), common::small_socket(bridge.addr).await)
        .await
        .expect("ws connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One statement, one alert per row.
    c.execute("INSERT INTO tx (user_id, amount) SELECT g, 5000 FROM generate_series(1, $1::bigint) g", &[&ROWS]).await.expect("insert");
    let all = db.alert_ids().await;
    assert_eq!(all.len() as i64, ROWS);
    // Once the reader has read them all, both consumers are far behind: their feeders wait for
    // room in the queue, and see that they fell out of the ring when the client reads again.
    wait_for_metric(bridge.addr, &format!("pg_cep_bridge_newest_id{{stream=\"alerts\"}} {}", all[all.len() - 1])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SSE: rows in cursor order from the first, then `lagged` with the last of them, then the end.
    let mut got = Vec::new();
    let resume_after = loop {
        let event = slow.next(WAIT).await.expect("an event before the stream ends");
        if event.event.as_deref() == Some("lagged") {
            let resume_after = event.json()["resume_after"].as_i64().expect("resume_after is an id");
            assert_eq!(event.id(), resume_after, "the lagged event's id is the resume point (EventSource resumes there)");
            break resume_after;
        }
        got.push(event.id());
    };
    assert!(slow.next(Duration::from_secs(2)).await.is_none(), "the stream ends after lagged");
    assert!(!got.is_empty() && got.len() < all.len(), "fell behind after {} of {} rows", got.len(), all.len());
    assert_eq!(got, all[..got.len()].to_vec(), "what came is the start of the cursor's order");
    assert_eq!(resume_after, *got.last().expect("some rows"), "resume after the last row delivered");

    // Resuming with Last-Event-ID: exactly the rest.
    let resume = resume_after.to_string();
    let mut again = SseReader::open(&format!("http://{}/events/alerts", bridge.addr), &[("Last-Event-ID", resume.as_str())]).await;
    let rest = again.take(all.len() - got.len(), Duration::from_secs(60)).await;
    assert_eq!(rest.iter().map(|e| e.id()).collect::<Vec<_>>(), all[got.len()..].to_vec(), "the rest, no gap, no duplicate");
    assert!(again.next(QUIET).await.is_none(), "nothing more");

    // WebSocket: rows, then close code 4000 whose reason names the last row sent.
    let mut ws_got = Vec::new();
    let reason = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("in time").expect("open").expect("message") {
            Message::Text(t) => ws_got.push(serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json")["alert_id"].as_i64().expect("id")),
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000, "{frame:?}");
                break frame.reason.to_string();
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(!ws_got.is_empty() && ws_got.len() < all.len(), "ws fell behind after {} rows", ws_got.len());
    assert_eq!(ws_got, all[..ws_got.len()].to_vec());
    assert_eq!(reason, format!("lagged; resume after {}", ws_got.last().expect("rows")));
}
