//! The three streams (alerts, matches, changes): one reader that follows pg_cep's cursors, an
//! in-memory ring per stream, and the consumers that read from it over SSE or WebSocket.
//!
//! Why a ring: pg_cep's cursors (`cep.*_since`) return rows in a stable order (by writing
//! transaction, then id, each row only once every older transaction ended), so the sequence of rows
//! after an id never changes once read. One reader per bridge follows that sequence and appends it
//! to a ring; any consumer can then be served from the ring at the position after its last id,
//! without a query per consumer. A consumer whose last id is older than the ring catches up with
//! its own cursor queries until it reaches a row the ring holds, and switches there: both are the
//! same sequence, so the switch neither repeats nor skips a row.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::auth::{self, Viewer};
use crate::db::{self, Backoff};
use crate::AppState;

/// Rows asked of a cursor per query.
const BATCH: i32 = 1000;

/// One of the cursors pg_cep offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Alerts,
    Matches,
    Changes,
}

impl StreamKind {
    pub const ALL: [StreamKind; 3] = [StreamKind::Alerts, StreamKind::Matches, StreamKind::Changes];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Alerts => "alerts",
            StreamKind::Matches => "matches",
            StreamKind::Changes => "changes",
        }
    }

    pub fn from_name(name: &str) -> Option<StreamKind> {
        StreamKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The cursor query: rows after `$1` (an id), at most `$2`, as (id, row as JSON text, oid of
    /// the table the row is about: `relid`, or for a match its pattern's source table).
    fn since_sql(self) -> &'static str {
        match self {
            StreamKind::Alerts => "SELECT alert_id, to_jsonb(r)::text, relid FROM cep.alerts_since($1, $2) r",
            StreamKind::Matches => "SELECT match_id, to_jsonb(r)::text, cep.pattern_source(pattern_id) FROM cep.matches_since($1, $2) r",
            StreamKind::Changes => "SELECT change_id, to_jsonb(r)::text, relid FROM cep.changes_since($1, $2) r",
        }
    }

    /// The last `$1` rows the cursor can deliver now, in cursor order: the bridge starts there.
    /// Same order and same "every older transaction ended" rule as the cursor functions, so the
    /// last row is a valid cursor position and the rows before it fill the ring.
    fn tail_sql(self) -> &'static str {
        match self {
            StreamKind::Alerts => {
                "SELECT id, j, rel FROM (SELECT alert_id AS id, coalesce(xid, '0'::xid8) AS x, to_jsonb(r)::text AS j, relid AS rel FROM cep.alerts r
                   WHERE coalesce(xid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY coalesce(xid, '0'::xid8) DESC, alert_id DESC LIMIT $1) t ORDER BY x, id"
            }
            StreamKind::Matches => {
                "SELECT id, j, rel FROM (SELECT match_id AS id, coalesce(xid, '0'::xid8) AS x, to_jsonb(r)::text AS j,
                          cep.pattern_source(pattern_id) AS rel FROM cep.pattern_matches r
                   WHERE coalesce(xid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY coalesce(xid, '0'::xid8) DESC, match_id DESC LIMIT $1) t ORDER BY x, id"
            }
            StreamKind::Changes => {
                "SELECT id, j, rel FROM (SELECT change_id AS id, correlation_id AS x, to_jsonb(r)::text AS j, relid AS rel FROM cep.change_log r
                   WHERE correlation_id < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY correlation_id DESC, change_id DESC LIMIT $1) t ORDER BY x, id"
            }
        }
    }
}

/// One row of a stream: its id, the whole row as JSON text (shared, never re-serialised), and the
/// table it is about (what decides who may see it in role mode; None: a dropped pattern's match).
#[derive(Clone, Debug)]
pub struct Event {
    pub id: i64,
    pub json: Arc<str>,
    pub relid: Option<u32>,
}

/// The last rows of a stream in cursor order, each with a sequence number that only grows.
struct Ring {
    cap: usize,
    buf: VecDeque<Event>,
    /// Sequence number of `buf[0]`.
    first_seq: u64,
    /// Row id → sequence number, for the rows in `buf`.
    index: HashMap<i64, u64>,
}

/// The position a consumer asked for is no longer in the ring.
struct Evicted;

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring { cap: cap.max(1), buf: VecDeque::new(), first_seq: 0, index: HashMap::new() }
    }

    fn next_seq(&self) -> u64 {
        self.first_seq + self.buf.len() as u64
    }

    fn push(&mut self, e: Event) {
        if self.buf.len() == self.cap {
            if let Some(old) = self.buf.pop_front() {
                if self.index.get(&old.id) == Some(&self.first_seq) {
                    self.index.remove(&old.id);
                }
            }
            self.first_seq += 1;
        }
        self.index.insert(e.id, self.next_seq());
        self.buf.push_back(e);
    }

    fn seq_of(&self, id: i64) -> Option<u64> {
        self.index.get(&id).copied()
    }

    /// Up to `max` rows from sequence number `from` on.
    fn read(&self, from: u64, max: usize) -> Result<Vec<Event>, Evicted> {
        if from < self.first_seq {
            return Err(Evicted);
        }
        let start = (from - self.first_seq) as usize;
        Ok(self.buf.iter().skip(start).take(max).cloned().collect())
    }
}

/// A stream's shared state: its ring, the reader's position and the live consumers' positions.
pub struct Hub {
    ring: RwLock<Ring>,
    /// Sends the ring's next sequence number whenever rows are appended (or it becomes ready).
    changed: watch::Sender<u64>,
    /// Set once the reader has found where the cursor stands; live consumers start only then.
    ready: AtomicBool,
    /// The reader's cursor position: the id of the last row read (0 before any).
    last_id: AtomicI64,
    /// Next sequence number each live consumer will send, for the lag metric.
    positions: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Hub {
    fn new(cap: usize) -> Hub {
        Hub {
            ring: RwLock::new(Ring::new(cap)),
            changed: watch::channel(0).0,
            ready: AtomicBool::new(false),
            last_id: AtomicI64::new(0),
            positions: Mutex::new(Vec::new()),
        }
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends rows read from the cursor, in cursor order, and wakes consumers.
    fn append(&self, events: Vec<Event>) {
        let Some(last) = events.last().map(|e| e.id) else { return };
        let next = {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            for e in events {
                ring.push(e);
            }
            ring.next_seq()
        };
        self.last_id.store(last, Relaxed);
        self.changed.send_replace(next);
    }

    fn mark_ready(&self) {
        self.ready.store(true, Relaxed);
        let next = self.ring().next_seq();
        self.changed.send_replace(next);
    }

    /// Id of the newest row read from the database (0: none).
    pub fn newest_id(&self) -> i64 {
        self.last_id.load(Relaxed)
    }

    /// How many rows the slowest live consumer is behind the newest row read.
    pub fn max_lag(&self) -> u64 {
        let next = self.ring().next_seq();
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions.retain(|w| w.strong_count() > 0);
        positions.iter().filter_map(|w| w.upgrade()).map(|p| next.saturating_sub(p.load(Relaxed))).max().unwrap_or(0)
    }
}

/// The three hubs, indexed by stream.
pub struct Hubs([Hub; 3]);

impl Hubs {
    pub fn new(cap: usize) -> Hubs {
        Hubs(StreamKind::ALL.map(|_| Hub::new(cap)))
    }

    pub fn get(&self, kind: StreamKind) -> &Hub {
        &self.0[kind.index()]
    }
}

/// Reads pg_cep's catalog for every NOTIFY channel in use (watches, patterns, captures).
const CHANNELS_SQL: &str = "SELECT channel FROM cep.watches UNION SELECT channel FROM cep.patterns
    UNION SELECT channel FROM cep.captures UNION SELECT anomaly_channel FROM cep.captures";

/// The reader: keeps one connection that LISTENs on pg_cep's channels and follows the three
/// cursors, reconnecting with backoff when the connection is lost. Runs for the bridge's life.
pub async fn run_reader(state: Arc<AppState>) {
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    loop {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
        let error = match db::connect(&state.config.database_url, Some(wake_tx)).await {
            Ok(client) => {
                if connected_before {
                    state.metrics.db_reconnects.fetch_add(1, Relaxed);
                    let positions: Vec<String> =
                        StreamKind::ALL.iter().map(|k| format!("{} after id {}", k.name(), state.hubs.get(*k).newest_id())).collect();
                    eprintln!("pg_cep-bridge: reconnected, resuming {}", positions.join(", "));
                }
                connected_before = true;
                let e = follow(&state, &client, &mut wake_rx, &mut backoff).await;
                state.metrics.db_up.store(false, Relaxed);
                state.pool.clear();
                e
            }
            Err(e) => e,
        };
        let delay = backoff.step();
        eprintln!("pg_cep-bridge: database connection lost: {error}, retrying in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

/// Follows the cursors on one connection until it fails; returns why.
async fn follow(state: &AppState, client: &Client, wake: &mut mpsc::UnboundedReceiver<Result<(), String>>, backoff: &mut Backoff) -> String {
    let mut listening = HashSet::new();
    if let Err(e) = refresh_channels(client, &mut listening).await {
        return db::describe(&e);
    }
    let mut statements = Vec::new();
    for kind in StreamKind::ALL {
        let hub = state.hubs.get(kind);
        if !hub.ready.load(Relaxed) {
            match client.query(kind.tail_sql(), &[&(state.config.ring_size as i64)]).await {
                Ok(rows) => hub.append(rows.iter().map(row_event).collect()),
                Err(e) => return db::describe(&e),
            }
            hub.mark_ready();
        }
        match client.prepare(kind.since_sql()).await {
            Ok(s) => statements.push((kind, s)),
            Err(e) => return db::describe(&e),
        }
    }
    state.metrics.db_up.store(true, Relaxed);
    backoff.reset();
    let mut tick = tokio::time::interval(state.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(state.config.channel_refresh);
    refresh.tick().await;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            w = wake.recv() => {
                match w {
                    None => return "connection closed".to_string(),
                    Some(Err(why)) => return why,
                    Some(Ok(())) => {}
                }
                while let Ok(w) = wake.try_recv() {
                    if let Err(why) = w {
                        return why;
                    }
                }
            }
            _ = tick.tick() => {}
            _ = refresh.tick() => {
                if let Err(e) = refresh_channels(client, &mut listening).await {
                    if client.is_closed() {
                        return db::describe(&e);
                    }
                    eprintln!("pg_cep-bridge: reading NOTIFY channels: {}", db::describe(&e));
                }
                continue;
            }
        }
        for (kind, statement) in &statements {
            if let Err(e) = poll(state, client, *kind, statement).await {
                if client.is_closed() {
                    return db::describe(&e);
                }
                // A query error on a live connection (the extension dropped, a permission): say
                // so once, and keep trying on the next tick.
                let message = format!("reading {}: {}", kind.name(), db::describe(&e));
                if last_error.as_ref() != Some(&message) {
                    eprintln!("pg_cep-bridge: {message}");
                    last_error = Some(message);
                }
            }
        }
    }
}

/// Reads a cursor from the hub's position until it has nothing more, appending to the ring.
async fn poll(state: &AppState, client: &Client, kind: StreamKind, statement: &tokio_postgres::Statement) -> Result<(), tokio_postgres::Error> {
    let hub = state.hubs.get(kind);
    loop {
        let rows = client.query(statement, &[&hub.newest_id(), &BATCH]).await?;
        let n = rows.len();
        state.metrics.events_read[kind.index()].fetch_add(n as u64, Relaxed);
        hub.append(rows.iter().map(row_event).collect());
        if n < BATCH as usize {
            return Ok(());
        }
    }
}

fn row_event(row: &tokio_postgres::Row) -> Event {
    let json: String = row.get(1);
    Event { id: row.get(0), json: json.into(), relid: row.get(2) }
}

/// LISTENs on channels new in the catalog and UNLISTENs those gone.
async fn refresh_channels(client: &Client, listening: &mut HashSet<String>) -> Result<(), tokio_postgres::Error> {
    let rows = client.query(CHANNELS_SQL, &[]).await?;
    let wanted: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut sql = String::new();
    for c in wanted.difference(listening) {
        sql.push_str(&format!("LISTEN {};", db::quote_ident(c)));
    }
    for c in listening.difference(&wanted) {
        sql.push_str(&format!("UNLISTEN {};", db::quote_ident(c)));
    }
    if !sql.is_empty() {
        client.batch_execute(&sql).await?;
        *listening = wanted;
    }
    Ok(())
}

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Only rows read from now on.
    Live,
    /// The rows after this id in cursor order (0: from the beginning).
    After(i64),
}

/// What a consumer's feeder hands to its socket.
pub enum Item {
    Row(Event),
    /// The consumer fell out of the ring and is disconnected; it resumes after `last_id`.
    Lagged {
        last_id: Option<i64>,
    },
}

/// Counts a consumer while it is connected.
struct ConsumerGuard<'a>(&'a AppState, StreamKind);

impl Drop for ConsumerGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.consumers[self.1.index()].fetch_sub(1, Relaxed);
    }
}

/// Starts a consumer's feeder task; its rows arrive on the returned queue, which ends when the
/// consumer must disconnect. A viewer with a role gets only the rows of tables that role may
/// SELECT; the others are passed over (its position moves past them all the same).
pub fn subscribe(state: Arc<AppState>, kind: StreamKind, start: Start, viewer: Viewer) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(state.config.consumer_queue.max(1));
    tokio::spawn(async move {
        state.metrics.consumers[kind.index()].fetch_add(1, Relaxed);
        let _guard = ConsumerGuard(&state, kind);
        feed(&state, kind, start, &viewer, tx).await;
    });
    rx
}

/// Whether the viewer may see the row; None when the consumer went away while the database,
/// needed to answer, was unreachable (it is asked again with backoff: skipping would be a gap).
async fn visible(state: &AppState, viewer: &Viewer, row: &Event, tx: &mpsc::Sender<Item>) -> Option<bool> {
    let Some(role) = &viewer.0 else { return Some(true) };
    let Some(relid) = row.relid else { return Some(false) };
    let mut backoff = Backoff::default();
    loop {
        match auth::can_select(state, role, relid).await {
            Ok(answer) => return Some(answer),
            Err(_) => tokio::select! {
                _ = tokio::time::sleep(backoff.step()) => {}
                _ = tx.closed() => return None,
            },
        }
    }
}

async fn feed(state: &AppState, kind: StreamKind, start: Start, viewer: &Viewer, tx: mpsc::Sender<Item>) {
    let hub = state.hubs.get(kind);
    let mut changed = hub.changed.subscribe();
    // The id to resume after if the consumer falls behind: the last row it was sent.
    let mut last_id: Option<i64>;
    let mut seq = match start {
        Start::Live => {
            while !hub.ready.load(Relaxed) {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
            // The cursor position just before the first row this consumer gets: the ring's last row
            // (0 when the reader has read none yet, i.e. the cursor is at its start). Resuming
            // there is right even if the consumer falls behind before it received anything.
            let ring = hub.ring();
            last_id = Some(ring.buf.back().map_or(0, |e| e.id));
            ring.next_seq()
        }
        Start::After(id) => {
            last_id = Some(id);
            match catch_up(state, kind, id, viewer, &tx, &mut last_id).await {
                Some(seq) => seq,
                None => return,
            }
        }
    };
    let position = Arc::new(AtomicU64::new(seq));
    hub.positions.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&position));
    loop {
        changed.borrow_and_update();
        let batch = hub.ring().read(seq, state.config.consumer_queue.max(1));
        match batch {
            Err(Evicted) => {
                state.metrics.consumers_lagged[kind.index()].fetch_add(1, Relaxed);
                let _ = tx.send(Item::Lagged { last_id }).await;
                return;
            }
            Ok(rows) if rows.is_empty() => {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
            Ok(rows) => {
                for row in rows {
                    let id = row.id;
                    let Some(show) = visible(state, viewer, &row, &tx).await else { return };
                    if show {
                        if tx.send(Item::Row(row)).await.is_err() {
                            return;
                        }
                        last_id = Some(id);
                    }
                    seq += 1;
                    position.store(seq, Relaxed);
                }
            }
        }
    }
}

/// Serves a consumer from its own cursor queries until it reaches a row the ring holds; returns
/// the ring position to go on from, or None when the consumer went away.
async fn catch_up(
    state: &AppState,
    kind: StreamKind,
    mut after: i64,
    viewer: &Viewer,
    tx: &mpsc::Sender<Item>,
    last_id: &mut Option<i64>,
) -> Option<u64> {
    let hub = state.hubs.get(kind);
    let mut changed = hub.changed.subscribe();
    let mut backoff = Backoff::default();
    loop {
        changed.borrow_and_update();
        if let Some(seq) = hub.ring().seq_of(after) {
            return Some(seq + 1);
        }
        let rows = match query_since(state, kind, after).await {
            Ok(rows) => rows,
            Err(_) => {
                // The database is away; the reader logs it. Try again later, unless the consumer left.
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => continue,
                    _ = tx.closed() => return None,
                }
            }
        };
        backoff.reset();
        if rows.is_empty() {
            // Ahead of the reader (or nothing new yet): wait for the ring to move.
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(state.config.poll_interval) => {}
                _ = tx.closed() => return None,
            }
            continue;
        }
        for row in rows {
            if let Some(seq) = hub.ring().seq_of(row.id) {
                return Some(seq);
            }
            let id = row.id;
            if visible(state, viewer, &row, tx).await? {
                tx.send(Item::Row(row)).await.ok()?;
                *last_id = Some(id);
            }
            after = id;
        }
    }
}

async fn query_since(state: &AppState, kind: StreamKind, after: i64) -> Result<Vec<Event>, String> {
    let client = state.pool.get().await?;
    let rows = client.query(kind.since_sql(), &[&after, &BATCH]).await.map_err(|e| e.to_string())?;
    Ok(rows.iter().map(row_event).collect())
}

/// Reads the resume point: `Last-Event-ID` first (what EventSource sends on reconnect), then
/// `?after=`; neither means live.
fn resume_point(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Start, String> {
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| "Last-Event-ID is not text".to_string())?.trim().to_string()),
        None => query.get("after").map(|s| s.trim().to_string()),
    };
    match raw {
        None => Ok(Start::Live),
        Some(s) if s.is_empty() => Ok(Start::Live),
        Some(s) => match s.parse::<i64>() {
            Ok(id) if id >= 0 => Ok(Start::After(id)),
            _ => Err(format!("resume id {s:?} is not a non-negative integer")),
        },
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn parse_request(stream: &str, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<(StreamKind, Start), Response> {
    let kind = StreamKind::from_name(stream).ok_or_else(|| {
        (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": format!("no stream {stream:?}: alerts, matches or changes") })))
            .into_response()
    })?;
    let start = resume_point(headers, query).map_err(bad_request)?;
    Ok((kind, start))
}

/// `GET /events/{stream}`: Server-Sent Events, `id` = the row's id, `data` = the row as JSON.
pub async fn sse_handler(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let (kind, start) = match parse_request(&stream, &headers, &query) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let rx = subscribe(state.clone(), kind, start, viewer);
    Sse::new(sse_events(state, kind, rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn sse_events(state: Arc<AppState>, kind: StreamKind, rx: mpsc::Receiver<Item>) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).map(move |item| {
        Ok(match item {
            Item::Row(e) => {
                state.metrics.events_out[kind.index()].fetch_add(1, Relaxed);
                SseEvent::default().id(e.id.to_string()).data(&*e.json)
            }
            Item::Lagged { last_id } => {
                // The id makes EventSource resume there on its own (Last-Event-ID).
                let event = match last_id {
                    Some(id) => SseEvent::default().id(id.to_string()),
                    None => SseEvent::default(),
                };
                event
                    .event("lagged")
                    .data(serde_json::json!({ "error": "consumer fell behind; reconnect to resume", "resume_after": last_id }).to_string())
            }
        })
    })
}

/// `GET /ws/{stream}`: one JSON text message per row. Resume with `?after=ID`. A consumer that
/// falls behind is closed with code 4000 and the id to resume after in the reason.
pub async fn ws_handler(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (kind, start) = match parse_request(&stream, &headers, &query) {
        Ok(v) => v,
        Err(r) => return r,
    };
    upgrade.on_upgrade(move |socket| ws_session(state, kind, start, viewer, socket))
}

async fn ws_session(state: Arc<AppState>, kind: StreamKind, start: Start, viewer: Viewer, mut socket: WebSocket) {
    let mut rx = subscribe(state.clone(), kind, start, viewer);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Item::Row(e)) => {
                    if socket.send(Message::Text(e.json.to_string().into())).await.is_err() {
                        return;
                    }
                    state.metrics.events_out[kind.index()].fetch_add(1, Relaxed);
                }
                Some(Item::Lagged { last_id }) => {
                    let reason = format!("lagged; resume after {}", last_id.map_or("none".to_string(), |id| id.to_string()));
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 4000, reason: reason.into() }))).await;
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64) -> Event {
        Event { id, json: Arc::from(format!("{{\"id\":{id}}}")), relid: None }
    }

    #[test]
    fn ring_evicts_and_indexes() {
        let mut ring = Ring::new(3);
        for id in [5, 2, 9, 7] {
            ring.push(ev(id));
        }
        assert_eq!(ring.first_seq, 1);
        assert_eq!(ring.seq_of(5), None);
        assert_eq!(ring.seq_of(2), Some(1));
        assert_eq!(ring.seq_of(7), Some(3));
        assert!(ring.read(0, 10).is_err());
        let ids: Vec<i64> = ring.read(2, 10).ok().unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![9, 7]);
        assert!(ring.read(4, 10).ok().unwrap().is_empty());
    }

    #[test]
    fn resume_point_prefers_last_event_id() {
        let mut headers = HeaderMap::new();
        let mut query = HashMap::new();
        assert_eq!(resume_point(&headers, &query), Ok(Start::Live));
        query.insert("after".to_string(), "4".to_string());
        assert_eq!(resume_point(&headers, &query), Ok(Start::After(4)));
        headers.insert("last-event-id", "9".parse().unwrap());
        assert_eq!(resume_point(&headers, &query), Ok(Start::After(9)));
        headers.insert("last-event-id", "x".parse().unwrap());
        assert!(resume_point(&headers, &query).is_err());
    }
}
