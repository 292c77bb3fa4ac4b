//! Helpers for the integration tests: a fresh database per test on the cluster named by
//! `PG_CEP_TEST_PORT`, the bridge started in-process, and a hand-written SSE reader.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pg_cep_bridge::{Config, Running};
use tokio_postgres::{Client, NoTls};

/// The cluster's port. The tests need a real cluster with pg_cep: without one they fail, so
/// that a run without a database can never pass for one that tested the bridge.
pub fn test_port() -> u16 {
    std::env::var("PG_CEP_TEST_PORT").ok().and_then(|p| p.parse().ok()).expect(
        "PG_CEP_TEST_PORT is not set: run the bridge's tests with `make e2e` (or point it at a cluster with pg_cep installed, host 127.0.0.1, user postgres)",
    )
}

pub fn url(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname={db}")
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to the test cluster");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own for one test, with pg_cep, a watched table `tx` and one rule that
/// alerts on any amount over 1000. Dropped when the value is.
pub struct TestDb {
    pub port: u16,
    pub name: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    pub async fn new(port: u16) -> TestDb {
        let name = format!("bridge_test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let admin = connect(&url(port, "postgres")).await;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("drop old database");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let db = TestDb { port, name };
        let c = db.client().await;
        c.batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION pg_cep;
             CREATE TABLE tx (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                              location text, created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
                 VALUES ('big amount', 'threshold', '{\"metric\": \"amount\", \"operator\": \">\", \"value\": 1000}', 0.9);
             SELECT cep.watch('tx', channel => 'bridge_test_alerts');",
        )
        .await
        .expect("set up pg_cep in the test database");
        db
    }

    pub fn url(&self) -> String {
        url(self.port, &self.name)
    }

    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }

    /// Inserts one row that alerts (amount over 1000) in its own transaction; returns its id.
    pub async fn insert_alerting(&self, c: &Client, user: i32) -> i64 {
        c.query_one("INSERT INTO tx (user_id, amount) VALUES ($1, 5000) RETURNING id", &[&user]).await.expect("insert").get(0)
    }

    pub async fn alert_ids(&self) -> Vec<i64> {
        let c = self.client().await;
        c.query("SELECT alert_id FROM cep.alerts_since(0, 100000)", &[]).await.expect("alerts_since").iter().map(|r| r.get(0)).collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (port, name) = (self.port, self.name.clone());
        // Drop runs outside async code: a thread with its own runtime drops the database.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&url(port, "postgres"), NoTls).await {
                    tokio::spawn(conn);
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// Starts the bridge on a free port and waits until its reader is connected.
pub async fn start_bridge(mut config: Config) -> Running {
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.poll_interval = Duration::from_millis(300);
    let running = pg_cep_bridge::start(config).await.expect("start bridge");
    let deadline = Instant::now() + Duration::from_secs(15);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("http://{}/healthz", running.addr)).send().await {
            if r.status() == 200 {
                return running;
            }
        }
        assert!(Instant::now() < deadline, "bridge did not report the database up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn id(&self) -> i64 {
        self.id.as_deref().and_then(|s| s.parse().ok()).expect("event has a numeric id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Reads Server-Sent Events off a response by hand.
pub struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
}

impl SseReader {
    /// Opens `GET url` with the given extra headers; panics unless the answer is 200.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut request = reqwest::Client::new().get(url).header("Accept", "text/event-stream");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("SSE request");
        assert_eq!(response.status(), 200, "SSE status for {url}");
        SseReader { body: response.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(), buf: String::new() }
    }

    /// Opens `GET path` as HTTP/1.0 (so the body is the bare event stream, ended by the close) on
    /// a connection whose receive buffer is as small as the system allows: a consumer that can be
    /// made to fall behind with a few thousand rows. Panics unless the answer is 200.
    pub async fn open_small(addr: std::net::SocketAddr, path: &str) -> SseReader {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = small_socket(addr).await;
        socket.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await.expect("send request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(socket.read(&mut byte).await.expect("read headers"), 1, "connection closed in the headers");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        let body = futures_util::stream::unfold(socket, |mut socket| async move {
            let mut chunk = vec![0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok(chunk), socket))
                }
            }
        });
        SseReader { body: body.boxed(), buf: String::new() }
    }

    /// The next event (comments skipped), or None if none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf[..end].to_string();
                self.buf.drain(..end + 2);
                let mut event = SseEvent { id: None, event: None, data: String::new() };
                let mut has_field = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
                    has_field = true;
                    match field {
                        "id" => event.id = Some(value.to_string()),
                        "event" => event.event = Some(value.to_string()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if has_field {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// The next `n` events, panicking if they do not all come within `wait`.
    pub async fn take(&mut self, n: usize, wait: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) => out.push(e),
                None => panic!("expected {n} events within {wait:?}, got {}: {out:?}", out.len()),
            }
        }
        out
    }
}

/// A TCP connection to `addr` with the smallest receive buffer the system allows.
pub async fn small_socket(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}
