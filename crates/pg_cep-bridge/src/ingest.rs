//! `POST /ingest/{table}` and `GET /ws/ingest/{table}`: JSON lines in, one INSERT per batch.
//!
//! A batch is written by one statement, so it is one transaction: all rows or none. It goes
//! through the table's triggers like any INSERT, so pg_cep's monitor, capture and patterns see it.
//! Only the columns the lines name are inserted; the others take their defaults.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::Viewer;
use crate::db::{quote_ident, DbError};
use crate::AppState;

/// A batch ready to insert: the lines as one JSON array, and the keys they use.
#[derive(Debug)]
pub struct Batch {
    pub json_array: String,
    /// Keys in the order first seen.
    pub keys: Vec<String>,
    pub rows: usize,
}

/// Why a batch was refused; rendered as a JSON body with a status.
#[derive(Debug)]
pub struct IngestError {
    pub status: StatusCode,
    pub body: Value,
}

impl IngestError {
    fn new(status: StatusCode, message: impl Into<String>) -> IngestError {
        IngestError { status, body: json!({ "error": message.into() }) }
    }

    fn at_line(line: usize, message: impl Into<String>) -> IngestError {
        IngestError { status: StatusCode::BAD_REQUEST, body: json!({ "error": message.into(), "line": line, "rows_written": 0 }) }
    }
}

impl From<DbError> for IngestError {
    fn from(e: DbError) -> Self {
        let status = match (e.from_server, e.sqlstate.as_deref()) {
            // insufficient_privilege: the role (in role mode, the consumer's) may not write there.
            (true, Some("42501")) => StatusCode::FORBIDDEN,
            (true, _) => StatusCode::UNPROCESSABLE_ENTITY,
            (false, _) => StatusCode::SERVICE_UNAVAILABLE,
        };
        IngestError { status, body: json!({ "error": e.message, "sqlstate": e.sqlstate, "detail": e.detail, "rows_written": 0 }) }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

/// Parses JSON lines: each non-blank line one object. Line numbers are 1-based.
pub fn parse_lines(body: &str) -> Result<Batch, IngestError> {
    let mut json_array = String::with_capacity(body.len() + 2);
    json_array.push('[');
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    let mut rows = 0;
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| IngestError::at_line(i + 1, format!("line {}: not JSON: {e}", i + 1)))?;
        let Value::Object(object) = value else {
            return Err(IngestError::at_line(i + 1, format!("line {}: not a JSON object", i + 1)));
        };
        for key in object.keys() {
            if seen.insert(key.clone()) {
                keys.push(key.clone());
            }
        }
        if rows > 0 {
            json_array.push(',');
        }
        json_array.push_str(line);
        rows += 1;
    }
    json_array.push(']');
    Ok(Batch { json_array, keys, rows })
}

/// The table as PostgreSQL names it (quoted as needed), with its schema, kind and live columns.
/// `to_regclass` parses the name as an identifier, never as SQL.
const RESOLVE_SQL: &str = "SELECT c.oid::regclass::text, n.nspname::text, c.relkind::text,
        array(SELECT attname::text FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";

/// Schemas ingest never writes to: pg_cep's own records and the system catalogs.
const PROTECTED_SCHEMAS: [&str; 4] = ["cep", "pg_catalog", "information_schema", "pg_toast"];

/// Parses, then inserts a batch into `table`; returns the rows written. With a viewer's role the
/// batch's transaction runs `SET LOCAL ROLE` to it first, so the table's own privileges (and its
/// row-level security) decide.
pub async fn ingest(state: &AppState, viewer: &Viewer, table: &str, body: &str) -> Result<u64, IngestError> {
    let batch = parse_lines(body)?;
    if batch.rows == 0 {
        return Ok(0);
    }
    let _slot = tokio::time::timeout(state.config.ingest_wait, state.ingest_slots.acquire())
        .await
        .map_err(|_| IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "too many ingests in progress; retry later"))?
        .map_err(|_| IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let mut client = state.pool.get().await.map_err(|e| IngestError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}")))?;
    let row = client.query_opt(RESOLVE_SQL, &[&table]).await.map_err(|e| {
        // A server error here is a name that does not parse as one (`a.b.c.d`, `x;y`): the request's fault.
        let e = DbError::from(e);
        if e.from_server {
            IngestError::new(StatusCode::BAD_REQUEST, format!("{table:?} is not a table name: {}", e.message))
        } else {
            IngestError::from(e)
        }
    })?;
    let Some(row) = row else {
        return Err(IngestError::new(StatusCode::NOT_FOUND, format!("no table {table:?}")));
    };
    let (qualified, schema, kind, columns): (String, String, String, Vec<String>) = (row.get(0), row.get(1), row.get(2), row.get(3));
    if PROTECTED_SCHEMAS.contains(&schema.as_str()) || !(kind == "r" || kind == "p") {
        return Err(IngestError::new(StatusCode::FORBIDDEN, format!("{qualified} is not a table ingest may write to")));
    }
    let known: HashSet<&str> = columns.iter().map(String::as_str).collect();
    if let Some(unknown) = batch.keys.iter().find(|k| !known.contains(k.as_str())) {
        return Err(IngestError::new(StatusCode::BAD_REQUEST, format!("{qualified} has no column {unknown:?}")));
    }
    if batch.keys.is_empty() {
        return Err(IngestError::new(StatusCode::BAD_REQUEST, "the lines name no column"));
    }
    let cols = batch.keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let sql = format!("INSERT INTO {qualified} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{qualified}, $1::text::jsonb)");
    let written = match viewer.role() {
        None => client.execute(&sql, &[&batch.json_array.as_str()]).await.map_err(DbError::from)?,
        Some(role) => {
            // Dropping the transaction unfinished rolls it back, also when a step fails.
            let transaction = client.transaction().await.map_err(DbError::from)?;
            transaction.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(role))).await.map_err(DbError::from)?;
            let n = transaction.execute(&sql, &[&batch.json_array.as_str()]).await.map_err(DbError::from)?;
            transaction.commit().await.map_err(DbError::from)?;
            n
        }
    };
    state.metrics.rows_ingested.fetch_add(written, Relaxed);
    state.metrics.ingest_batches.fetch_add(1, Relaxed);
    Ok(written)
}

/// `POST /ingest/{table}`: 200 `{"rows": n}`, or an error with nothing written.
pub async fn http_handler(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    Extension(viewer): Extension<Viewer>,
    body: String,
) -> Response {
    match ingest(&state, &viewer, &table, &body).await {
        Ok(n) => Json(json!({ "rows": n })).into_response(),
        Err(e) => {
            state.metrics.ingest_errors.fetch_add(1, Relaxed);
            e.into_response()
        }
    }
}

/// `GET /ws/ingest/{table}`: each text message is a batch of JSON lines, acknowledged with
/// `{"rows": n}` or the error body of the HTTP endpoint (`{"error": ..., "line": n}`).
pub async fn ws_handler(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    Extension(viewer): Extension<Viewer>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let max = state.config.max_ingest_bytes;
    upgrade.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| ws_session(state, viewer, table, socket))
}

async fn ws_session(state: Arc<AppState>, viewer: Viewer, table: String, mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(t) => t,
            Message::Close(_) => return,
            Message::Binary(_) => {
                let ack = json!({ "error": "send batches as text messages of JSON lines" });
                if socket.send(Message::Text(ack.to_string().into())).await.is_err() {
                    return;
                }
                continue;
            }
            _ => continue,
        };
        let ack = match ingest(&state, &viewer, &table, text.as_str()).await {
            Ok(n) => json!({ "rows": n }),
            Err(e) => {
                state.metrics.ingest_errors.fetch_add(1, Relaxed);
                e.body
            }
        };
        if socket.send(Message::Text(ack.to_string().into())).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_collects_keys() {
        let b = parse_lines("{\"a\":1,\"b\":2}\n\n  {\"c\":3}\n").unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.keys, vec!["a", "b", "c"]);
        assert_eq!(b.json_array, "[{\"a\":1,\"b\":2},{\"c\":3}]");
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse_lines("{\"a\":1}\n{\"a\":2}\nnope\n").unwrap_err();
        assert_eq!(e.body["line"], 3);
        let e = parse_lines("{\"a\":1}\n[1,2]\n").unwrap_err();
        assert_eq!(e.body["line"], 2);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
