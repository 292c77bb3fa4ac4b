//! pg_cep-bridge: serves pg_cep's cursors (alerts, pattern matches, changes) over Server-Sent
//! Events and WebSocket, ingests JSON lines into tables, and shows a dashboard.
//!
//! [`start`] binds and runs the bridge in the current tokio runtime (what the tests use);
//! [`serve`] runs it until Ctrl-C (what the binary uses).

pub mod auth;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod ingest;
pub mod metrics;
pub mod streams;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use config::Config;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    /// Connections for request-time queries (catch-up, ingest, summary).
    pub pool: Arc<db::Pool>,
    pub hubs: streams::Hubs,
    pub metrics: metrics::Metrics,
    /// Back-pressure for ingest: one permit per batch being written.
    pub ingest_slots: Semaphore,
    /// Role mode's caches: recent logins and table privileges.
    pub auth: auth::AuthCache,
}

impl AppState {
    pub fn new(config: Config) -> Arc<AppState> {
        Arc::new(AppState {
            pool: db::Pool::new(config.database_url.clone(), config.max_concurrent_ingests + 4),
            hubs: streams::Hubs::new(config.ring_size),
            metrics: metrics::Metrics::default(),
            ingest_slots: Semaphore::new(config.max_concurrent_ingests),
            auth: auth::AuthCache::default(),
            config,
        })
    }
}

/// The HTTP routes, with authentication ([`auth::require_auth`]) around all but `/healthz`.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard::page))
        .route("/api/summary", get(dashboard::summary))
        .route("/events/{stream}", get(streams::sse_handler))
        .route("/ws/ingest/{table}", get(ingest::ws_handler))
        .route("/ws/{stream}", get(streams::ws_handler))
        .route("/ingest/{table}", post(ingest::http_handler).layer(DefaultBodyLimit::max(state.config.max_ingest_bytes)))
        .route("/metrics", get(metrics_handler))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth));
    Router::new().route("/healthz", get(healthz)).merge(protected).with_state(state)
}

/// Whether the request carries the configured token (`Authorization: Bearer T` or `?token=T`).
pub(crate) fn token_matches(config: &Config, request: &Request) -> bool {
    let Some(expected) = config.token.as_deref() else {
        return false;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let from_query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "token").map(|(_, v)| percent_decode(v)));
    [from_header, from_query].into_iter().flatten().any(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()))
}

/// Compares without stopping at the first difference, so timing says little about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` and `+` in a query value (tokens may hold characters a URL escapes).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `GET /healthz`: 200 `{"database":"up"}` while the reader's connection is up, else 503.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let up = state.metrics.db_up.load(Relaxed);
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "database": if up { "up" } else { "down" } }))).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&state.hubs)).into_response()
}

/// A running bridge. Dropping it stops the server and the reader.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the server stops (it normally does not).
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.pop() {
            let _ = server.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `config.listen` and starts the reader and the HTTP server on the current runtime. HTTP
/// serves even while the database is unreachable; the reader keeps reconnecting.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config);
    let reader = tokio::spawn(streams::run_reader(state.clone()));
    let app = router(state.clone());
    let server = tokio::spawn(async move {
        // Each event is a small write: without TCP_NODELAY, Nagle's algorithm holds one back
        // until the client acknowledges the last, which adds milliseconds to every event.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("pg_cep-bridge: HTTP server stopped: {e}");
        }
    });
    Ok(Running { addr, state, tasks: vec![reader, server] })
}

/// Runs the bridge until Ctrl-C.
pub async fn serve(config: Config) -> std::io::Result<()> {
    let running = start(config).await?;
    eprintln!("pg_cep-bridge: listening on http://{}", running.addr);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("pg_cep-bridge: interrupted, stopping"),
        _ = running.wait() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_tokens() {
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
