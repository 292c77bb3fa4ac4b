//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven
//! over WebDriver: rows written after the page opened must show in its cards and its alert feed,
//! which follow the bridge's SSE stream, and a screenshot of the page is saved under the test's
//! output folder (`target/tmp/dashboard.png`). `make e2e` runs it against its cluster.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{start_bridge, test_port, TestDb};
use pg_cep_bridge::Config;
use serde_json::{json, Value};

/// A chromedriver on a port of its own, stopped when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `make deps` installs it)");
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.http.get(format!("{}/status", driver.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.expect("webdriver request").json().await.expect("webdriver reply");
        reply["value"].clone()
    }

    /// A headless browser session, as the machine's probe starts Chromium: no sandbox (root), no
    /// GPU, and none of the background connections that a closed network refuses.
    async fn session(&self) -> String {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let value = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        value["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {value}")).to_string()
    }

    async fn text_of(&self, session: &str, css: &str) -> String {
        let found =
            self.call(reqwest::Method::POST, &format!("/session/{session}/element"), Some(json!({"using": "css selector", "value": css}))).await;
        let Some(element) = found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str) else { return String::new() };
        self.call(reqwest::Method::GET, &format!("/session/{session}/element/{element}/text"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// Polls until `css`'s text satisfies `ok`; returns the last text read.
    async fn wait_for(&self, session: &str, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text_of(session, css).await;
            if ok(&text) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_new_rows_and_alerts_live_in_a_real_browser() {
    let port = test_port();
    let db = TestDb::new(port).await;
    let bridge = start_bridge(Config::new(db.url())).await;
    let c = db.client().await;
    c.batch_execute("INSERT INTO tx (user_id, amount) SELECT 1 + g % 4, 10 * g FROM generate_series(1, 30) g").await.expect("quiet rows");

    let driver = Driver::start().await;
    let session = driver.session().await;
    driver.call(reqwest::Method::POST, &format!("/session/{session}/url"), Some(json!({"url": format!("http://{}/?table=tx", bridge.addr)}))).await;
    let total = driver.wait_for(&session, "#card-total", |t| t == "30").await;
    assert_eq!(total, "30", "the cards show the rows written before the page opened");
    assert_eq!(driver.text_of(&session, "#card-users").await, "4");
    assert!(driver.text_of(&session, "#alert-feed").await.is_empty(), "no alert yet");

    // Written while the page is open: the feed and the cards follow without a reload.
    for user in [7, 8] {
        db.insert_alerting(&c, user).await;
    }
    let feed = driver.wait_for(&session, "#alert-feed", |t| t.contains("big amount") && t.matches("big amount").count() >= 2).await;
    assert_eq!(feed.matches("big amount").count(), 2, "both alerts, once each: {feed}");
    assert!(feed.to_lowercase().contains("high"), "the alert's level is shown: {feed}");
    assert_eq!(driver.wait_for(&session, "#card-total", |t| t == "32").await, "32");
    assert_eq!(driver.wait_for(&session, "#card-users", |t| t == "6").await, "6");
    assert!(driver.text_of(&session, "#status").await.contains("live"), "the page says it is live");
    // The latency distribution counts the two alerts received live, and only those.
    let counted = driver
        .call(
            reqwest::Method::POST,
            &format!("/session/{session}/execute/sync"),
            Some(json!({"script": "return latencyCounts.reduce((a, b) => a + b, 0)", "args": []})),
        )
        .await;
    assert_eq!(counted, json!(2), "alerts in the latency chart");
    assert!(driver.text_of(&session, "#chart-latency").await.contains("ms"), "the chart is drawn");

    let shot = driver.call(reqwest::Method::GET, &format!("/session/{session}/screenshot"), None).await;
    let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().expect("a screenshot")).expect("base64 PNG");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).expect("save the screenshot");
    eprintln!("screenshot: {}", out.display());
    driver.call(reqwest::Method::DELETE, &format!("/session/{session}"), None).await;
}
