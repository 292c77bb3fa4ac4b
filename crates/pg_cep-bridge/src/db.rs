//! Connections to PostgreSQL: one helper that connects and drives a connection, a tiny pool for
//! request-time queries, and the reconnect backoff.
//!
//! No TLS: the bridge is meant to sit next to its database (same host or private network).

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::poll_fn;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and spawns the task that drives the connection. NOTIFY payloads are not trusted, only
/// their arrival matters: each one sends `Ok(())` on `wake` (when given). When the connection
/// fails, `wake` gets `Err(why)` and is dropped, so its receiver also learns of the loss.
pub async fn connect(url: &str, wake: Option<mpsc::UnboundedSender<Result<(), String>>>) -> Result<Client, String> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| format!("connection attempt timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        let mut messages = poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(w) = &wake {
                        let _ = w.send(Ok(()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(w) = &wake {
                        let _ = w.send(Err(describe(&e)));
                    }
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// The error with its causes ("error connecting to server: Connection refused (os error 111)"):
/// tokio-postgres' own message alone hides why.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A handful of idle connections reused by requests (catch-up queries, ingest, summary), so a
/// request does not pay for a new backend. Connections are opened on demand; at most `max_idle`
/// are kept; a closed one is dropped instead of returned.
pub struct Pool {
    url: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(url: String, max_idle: usize) -> Arc<Pool> {
        Arc::new(Pool { url, idle: Mutex::new(Vec::new()), max_idle })
    }

    /// An idle connection, or a new one.
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, String> {
        loop {
            let candidate = self.idle.lock().map_err(|_| "pool lock poisoned".to_string())?.pop();
            match candidate {
                Some(c) if !c.is_closed() => return Ok(Pooled { client: Some(c), pool: self.clone() }),
                Some(_) => continue,
                None => break,
            }
        }
        let client = connect(&self.url, None).await?;
        Ok(Pooled { client: Some(client), pool: self.clone() })
    }

    /// Forgets idle connections, e.g. after the database was seen to restart.
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// A connection borrowed from a [`Pool`]; goes back when dropped.
pub struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        // The Option is only emptied in Drop.
        self.client.as_ref().expect("pooled client present until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("pooled client present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    if idle.len() < self.pool.max_idle {
                        idle.push(c);
                    }
                }
            }
        }
    }
}

/// Exponential backoff for reconnects: 100 ms, doubling, capped at 5 s.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Backoff::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::CAP);
        d
    }

    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

/// Quotes an identifier as PostgreSQL's `quote_ident` would (always quoting, which is also
/// correct). Used for column names taken from the catalog and role names that have just logged in,
/// never for raw user input.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The parts of a query error a client can act on.
pub struct DbError {
    pub message: String,
    pub sqlstate: Option<String>,
    pub detail: Option<String>,
    /// The database answered (a constraint, a trigger, a type error): the request was at fault.
    /// Otherwise the connection failed.
    pub from_server: bool,
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError {
                message: db.message().to_string(),
                sqlstate: Some(db.code().code().to_string()),
                detail: db.detail().map(str::to_string),
                from_server: true,
            },
            None => DbError { message: e.to_string(), sqlstate: None, detail: None, from_server: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        let steps: Vec<_> = (0..8).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("amount"), "\"amount\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
