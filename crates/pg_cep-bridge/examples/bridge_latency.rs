//! `make bench`'s bridge case: COMMIT-to-receipt latency of alerts through the bridge's SSE stream,
//! next to a plain LISTEN client on the same alerts, at a steady rate, with one SSE client and
//! then with many (fan-out).
//!
//!   cargo run --release -p pg_cep-bridge --example bridge_latency -- PORT [RATE] [SECONDS] [FANOUT]
//!
//! It makes a database of its own (`pg_cep_bridge_bench`, dropped first) with a watched table and
//! one rule that alerts on every row, starts the bridge in this process, and inserts `RATE` rows a
//! second (each its own transaction) for `SECONDS`. A row's latency is from its INSERT's commit
//! returning to the writer to its alert reaching each client; every alert carries its row's user
//! id, unique per row, so each receipt is matched to its commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pg_cep_bridge::Config;
use tokio_postgres::{AsyncMessage, NoTls};

type Commits = Arc<Mutex<HashMap<i64, Instant>>>;
type Receipts = Arc<Mutex<Vec<(i64, Instant)>>>;

const DB: &str = "pg_cep_bridge_bench";
const WRITERS: i64 = 2;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect("usage: bridge_latency PORT [RATE] [SECONDS] [FANOUT]");
    let rate: u64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(5);
    let fanout: usize = args.get(4).and_then(|p| p.parse().ok()).unwrap_or(100);
    let url = |db: &str| format!("host=127.0.0.1 port={port} user=postgres dbname={db}");
    set_up(&url("postgres"), &url(DB)).await;

    let mut config = Config::new(url(DB));
    config.listen = "127.0.0.1:0".parse().expect("address");
    let bridge = pg_cep_bridge::start(config).await.expect("start the bridge");
    let events = format!("http://{}/events/alerts", bridge.addr);
    wait_until_up(&format!("http://{}/healthz", bridge.addr)).await;

    for clients in [1, fanout] {
        let listen = Receipts::default();
        let sse: Vec<Receipts> = (0..clients).map(|_| Receipts::default()).collect();
        let listener = tokio::spawn(listen_for(url(DB), listen.clone()));
        let readers: Vec<_> = sse.iter().map(|r| tokio::spawn(read_sse(events.clone(), r.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let commits = write_rows(&url(DB), rate, secs, clients as i64 * 10_000_000).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        listener.abort();
        readers.iter().for_each(|r| r.abort());
        let sent = commits.lock().expect("commits").len();
        let (lp50, lp99, ln) = percentiles(&commits, &[listen]);
        let (sp50, sp99, sn) = percentiles(&commits, &sse);
        println!(
            "bridge, {rate} alerts/s for {secs} s, {clients} SSE client(s): SSE p50 {sp50:.2} ms p99 {sp99:.2} ms ({sn} of {} receipts) | plain LISTEN p50 {lp50:.2} ms p99 {lp99:.2} ms ({ln} of {sent}) | SSE/LISTEN p99 {:.1}x",
            sent * clients,
            sp99 / lp99.max(0.001)
        );
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn set_up(admin_url: &str, db_url: &str) {
    let admin = connect(admin_url).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).await.expect("drop the old database");
    admin.batch_execute(&format!("CREATE DATABASE {DB}")).await.expect("fresh database");
    connect(db_url)
        .await
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION pg_cep;
             CREATE TABLE bench_tx (id bigserial PRIMARY KEY, user_id bigint NOT NULL, amount numeric NOT NULL,
                                    created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
                 VALUES ('every row', 'threshold', '{\"metric\": \"amount\", \"operator\": \">\", \"value\": 0}', 0.9);
             SELECT cep.watch('bench_tx', channel => 'bench_bridge');",
        )
        .await
        .expect("set up the bench table");
}

async fn wait_until_up(healthz: &str) {
    for _ in 0..100 {
        if reqwest::get(healthz).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bridge did not come up");
}

/// Concurrent writers, each its share of the rows, at the pace of `rate` rows a second in all.
async fn write_rows(url: &str, rate: u64, secs: u64, first: i64) -> Commits {
    let commits = Commits::default();
    let total = (rate * secs) as i64;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, commits) = (url.to_string(), commits.clone());
            tokio::spawn(async move {
                let c = connect(&url).await;
                let insert = c.prepare("INSERT INTO bench_tx (user_id, amount) VALUES ($1, 100)").await.expect("prepare");
                let start = Instant::now();
                let mut n = w;
                while n < total {
                    let due = start + Duration::from_micros(n as u64 * 1_000_000 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let user = first + n;
                    c.execute(&insert, &[&user]).await.expect("insert");
                    commits.lock().expect("commits").insert(user, Instant::now());
                    n += WRITERS;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    commits
}

/// A plain LISTEN client on the watch's channel: the baseline.
async fn listen_for(url: String, receipts: Receipts) {
    let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = tokio::spawn(async move { client.batch_execute("LISTEN bench_bridge").await.map(|_| client) });
    let mut client = None;
    let mut listen = Some(listen);
    while let Some(message) = messages.next().await {
        if let Some(l) = listen.take_if(|l| l.is_finished()) {
            client = l.await.ok().and_then(Result::ok);
        }
        if let Ok(AsyncMessage::Notification(n)) = message {
            let payload: serde_json::Value = serde_json::from_str(n.payload()).unwrap_or_default();
            if let Some(key) = payload["key"].as_str().and_then(|k| k.parse().ok()) {
                receipts.lock().expect("receipts").push((key, Instant::now()));
            }
        }
    }
    drop(client);
}

/// One SSE client: every alert's key, with the time it arrived.
async fn read_sse(url: String, receipts: Receipts) {
    let Ok(response) = reqwest::get(&url).await else { return };
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            for line in buf[..end].lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let row: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                    if let Some(key) = row["key"].as_str().and_then(|k| k.parse().ok()) {
                        receipts.lock().expect("receipts").push((key, at));
                    }
                }
            }
            buf.drain(..end + 2);
        }
    }
}

/// p50 and p99 in ms of receipt minus commit over every client's receipts, and how many matched.
fn percentiles(commits: &Commits, clients: &[Receipts]) -> (f64, f64, usize) {
    let commits = commits.lock().expect("commits");
    let mut ms: Vec<f64> = clients
        .iter()
        .flat_map(|r| r.lock().expect("receipts").clone())
        .filter_map(|(key, at)| commits.get(&key).map(|c| at.saturating_duration_since(*c).as_secs_f64() * 1000.0))
        .collect();
    if ms.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), ms.len())
}
