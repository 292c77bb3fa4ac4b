//! Notifications sent just after commit, by a sender per database (`engine::notice_queue`).
//!
//! Postgres holds one cluster-wide lock from the moment a transaction queues its notifications
//! until its commit has ended, so every notifying transaction waits for the others. Change capture
//! notifies on every committing transaction of a captured table: its writers would queue there.
//! Instead, a transaction reserves its notices before it commits, marks them ready once committed,
//! and a background worker of its database sends them, many per transaction of its own. The worker
//! is started by the first transaction that needs it and leaves after a second with nothing to do
//! (so that it never keeps `DROP DATABASE` waiting). Until it runs, and whenever its queue is full,
//! a transaction sends its notices itself, as `cep.notify_after_commit = off` always does. A
//! sender that fails, or is stopped, with notices left is replaced by the maintenance worker.
//!
//! A prepared transaction cannot NOTIFY, and its notices must outlive a restart as it does: it
//! writes them to `cep.prepared_notices` before it is prepared. `COMMIT PREPARED` commits them
//! (`pg::two_phase` then wakes the sender, which sends and deletes them), `ROLLBACK PREPARED`
//! drops them.

use std::ffi::{c_char, CString};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::engine::notice_queue::{Notice, NoticeQueues, Outcome, Refused, Ticket, Wake};
use crate::error::{CepError, CepResult};
use crate::gucs;
use crate::pg::shmem::Region;
use crate::pg::time::wall_clock;
use crate::pg::xact::{xact_local, BySubxact, XactBuffer};

static REGION: Region = Region::new(c"pg_cep_notices", std::mem::size_of::<NoticeQueues>, |base| {
    // SAFETY: the region was just created with this size; all-zero bytes are a valid queue set.
    unsafe {
        std::ptr::write_bytes(base, 0, std::mem::size_of::<NoticeQueues>());
        (*(base as *mut NoticeQueues)).init(wall_clock());
    }
});

/// Blocked attempts whose statement failed (`on_block => 'error'`): the failing transaction
/// cannot write them, so it leaves them here and the database's sender writes each in a
/// transaction of its own.
const BLOCKED_SLOTS: usize = 32;
pub const BLOCKED_BYTES: usize = 8000;

#[repr(C)]
struct BlockedSlot {
    /// 0 while the slot is free.
    database: u32,
    len: u32,
    record: [u8; BLOCKED_BYTES],
}

static BLOCKED: Region = Region::new(c"pg_cep_blocked", std::mem::size_of::<[BlockedSlot; BLOCKED_SLOTS]>, |base| {
    // SAFETY: the region was just created with this size; zero bytes are free slots.
    unsafe { std::ptr::write_bytes(base, 0, std::mem::size_of::<[BlockedSlot; BLOCKED_SLOTS]>()) }
});

fn blocked(base: *mut u8) -> &'static mut [BlockedSlot; BLOCKED_SLOTS] {
    // SAFETY: the region holds the slots, and the caller holds its lock.
    unsafe { &mut *(base as *mut [BlockedSlot; BLOCKED_SLOTS]) }
}

/// Leaves a blocked attempt (a JSON record, at most `BLOCKED_BYTES`) for the database's sender to
/// write, whatever becomes of this transaction; false when it cannot be kept (no room, or pg_cep
/// not preloaded).
pub fn record_blocked(record: &str) -> bool {
    if record.len() > BLOCKED_BYTES {
        return false;
    }
    let db = database();
    let kept = BLOCKED.locked(|base| {
        let Some(slot) = blocked(base).iter_mut().find(|s| s.database == 0) else { return false };
        slot.record[..record.len()].copy_from_slice(record.as_bytes());
        (slot.database, slot.len) = (db, record.len() as u32);
        true
    });
    if kept != Some(true) {
        return false;
    }
    // Wake the sender, or start one.
    let at = wall_clock();
    match REGION.locked(|base| {
        let q = queues(base);
        q.latch_of(db).map(Ok).unwrap_or_else(|| Err(q.start(db, at)))
    }) {
        // SAFETY: a running sender's latch, in shared memory.
        Some(Ok(latch)) => unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) },
        Some(Err(true)) => start_sender(db),
        _ => {}
    }
    true
}

fn take_blocked(db: u32) -> Vec<String> {
    BLOCKED
        .locked(|base| {
            let mut out = Vec::new();
            for slot in blocked(base).iter_mut().filter(|s| s.database == db) {
                out.push(String::from_utf8_lossy(&slot.record[..slot.len as usize]).into_owned());
                slot.database = 0;
            }
            out
        })
        .unwrap_or_default()
}

fn has_blocked(db: u32) -> bool {
    BLOCKED.locked_shared(|base| blocked(base).iter().any(|s| s.database == db)).unwrap_or(false)
}

const RECORD_BLOCKED: &str = "WITH r AS (SELECT $1::jsonb AS j)
     INSERT INTO cep.alerts (relid, table_name, key, row_pk, score, level, action, rules, event_time, attempted_row)
     SELECT (j->>'relid')::oid, j->>'table', j->>'key', j->>'row_pk', (j->>'score')::float8, j->>'level', 'blocked',
            j->'rules', (j->>'event_time')::timestamptz, j->'attempted'
     FROM r RETURNING alert_id, event_time::text";

/// The sender writes the blocked attempts left for its database, and notifies each as an alert.
fn write_blocked(records: Vec<String>) {
    for record in records {
        let written = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            BackgroundWorker::transaction(|| -> Result<(), String> {
                let Ok(j) = serde_json::from_str::<serde_json::Value>(&record) else { return Ok(()) };
                let (alert_id, ts): (Option<i64>, Option<String>) =
                    Spi::get_two_with_args(RECORD_BLOCKED, &[pgrx::JsonB(j.clone()).into()]).map_err(|e| e.to_string())?;
                let text = |k: &str| j.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                let rules: Vec<i32> =
                    j["fired"].as_array().map(|a| a.iter().filter_map(|r| r.as_i64()).map(|r| r as i32).collect()).unwrap_or_default();
                let payload = crate::engine::payload::alert_payload(
                    &crate::engine::payload::AlertNotice {
                        alert_id: alert_id.unwrap_or_default(),
                        table: &text("table"),
                        key: &text("key"),
                        row: j.get("row_pk").and_then(|v| v.as_str()),
                        score: j["score"].as_f64().unwrap_or_default(),
                        level: &text("level"),
                        action: "blocked",
                        rules: &rules,
                        ts: ts.as_deref().unwrap_or_default(),
                    },
                    crate::engine::payload::MAX_PAYLOAD_BYTES,
                );
                notify_now(&text("channel"), &payload);
                Ok(())
            })
        }))
        .catch_others(|e| {
            // SAFETY: ends the failed transaction, as the maintenance worker does.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(format!("{e:?}"))
        })
        .execute();
        if let Err(e) = written {
            pgrx::warning!("pg_cep notifier: a blocked attempt could not be recorded: {}", crate::engine::excerpt(&e));
        }
    }
}

/// A sender with nothing to do for this long leaves.
const IDLE_EXIT: Duration = Duration::from_secs(1);
/// How long a busy sender waits between batches (at most this much added latency).
const LINGER_US: std::ffi::c_long = 1000;
/// Batches this close together mean a busy stream (over 2,000 notices a second): the sender
/// lingers between them. A wider gap made a steady 1,000 alerts a second wait for the linger
/// (p99 COMMIT to LISTEN 1.45 ms against 0.47 ms) for no gain this machine could measure.
const BUSY_GAP: Duration = Duration::from_micros(500);
/// Notices a sender sends in one transaction.
const BATCH: usize = 1000;

xact_local! {
    /// This transaction's reserved notices, made ready at commit.
    static TICKETS: Vec<Ticket> = Vec::new();
}

xact_local! {
    /// Notices asked for during the transaction, with the subtransaction that asked: handed to
    /// the sender (or sent) just before commit, written for COMMIT PREPARED before PREPARE,
    /// dropped with their subtransaction or transaction.
    static PENDING: BySubxact<Pending> = BySubxact::new();
}

/// A notice asked for during the transaction.
struct Pending {
    channel: String,
    payload: String,
}

/// Refuses a channel NOTIFY would refuse at commit (empty, or `NAMEDATALEN` bytes or more). Checked
/// when a watch, capture or pattern is written: a bad channel found only at commit would fail
/// every transaction that writes the table.
pub fn check_channel(role: &str, channel: &str) -> CepResult<()> {
    if channel.trim().is_empty() || channel.len() >= pg_sys::NAMEDATALEN as usize {
        return Err(CepError::InvalidArgument(format!("{role} {channel:?} must be 1 to 63 bytes long, not only spaces")));
    }
    Ok(())
}

/// A notification to send if, and once, this transaction commits, as NOTIFY would: dropped with
/// a rolled-back subtransaction, and kept across PREPARE TRANSACTION until COMMIT PREPARED. It
/// takes no lock before commit, so the transaction may be prepared. Channel and payload must be
/// within NOTIFY's limits (`engine::payload` keeps them so).
pub fn notify_at_commit(channel: &str, payload: String) {
    PENDING.with_mut(|p| p.push(Pending { channel: channel.to_string(), payload }));
}

/// `cep.prepared_notices`, the table a prepared transaction's notices wait in, when it is pg_cep's
/// own: the sender, a superuser, deletes from it, and must never touch a look-alike a user made
/// in a database without pg_cep.
fn prepared_notices_table() -> Option<pg_sys::Oid> {
    let oid = crate::pg::direct_insert::relation_in_cep(c"prepared_notices")?;
    // SAFETY: catalog lookups inside a transaction.
    let ours = unsafe {
        let extension = pg_sys::get_extension_oid(c"pg_cep".as_ptr(), true);
        extension != pg_sys::InvalidOid && pg_sys::getExtensionOfObject(pg_sys::RelationRelationId, oid) == extension
    };
    ours.then_some(oid)
}

/// When pg_cep's shared memory was set up; `None` without preloading.
pub fn memory_started() -> Option<pg_sys::TimestampTz> {
    REGION.locked_shared(|base| queues(base).started)
}

/// Before PREPARE: NOTIFY cannot be prepared, so the transaction writes its notices, in order, to
/// `cep.prepared_notices`. COMMIT PREPARED commits them and ROLLBACK PREPARED drops them with
/// the rest of the transaction, and a restart in between keeps them, as it keeps the transaction.
/// The database's sender sends them once committed (`send_prepared`). Refuses the PREPARE when no
/// sender can ever send them, rather than lose them.
fn keep_for_commit_prepared(pending: Vec<Pending>) {
    if !REGION.exists() {
        pgrx::error!(
            "pg_cep cannot prepare this transaction: its notifications (on channel \"{}\") need pg_cep in shared_preload_libraries, whose sender sends them at COMMIT PREPARED",
            pending[0].channel
        );
    }
    if prepared_notices_table().is_none() {
        pgrx::error!(
            "pg_cep cannot prepare this transaction: its notifications (on channel \"{}\") need pg_cep's 0.3.0 objects; run ALTER EXTENSION pg_cep UPDATE",
            pending[0].channel
        );
    }
    let (channels, payloads): (Vec<String>, Vec<String>) = pending.into_iter().map(|p| (p.channel, p.payload)).unzip();
    let written = crate::pg::privileges::as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO cep.prepared_notices (channel, payload) \
             SELECT c, p FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(c, p, i) ORDER BY i",
            &[channels.into(), payloads.into()],
        )
    });
    if let Err(e) = written {
        pgrx::error!("pg_cep could not keep this transaction's notifications for COMMIT PREPARED: {e}");
    }
}

/// Notices of committed prepared transactions a sender sends in one transaction of its own, in
/// the order they were written, deleting them in the same transaction: each goes once.
const SEND_PREPARED: &str = "WITH sent AS (
         DELETE FROM cep.prepared_notices
         WHERE notice_id IN (SELECT notice_id FROM cep.prepared_notices ORDER BY notice_id LIMIT 1000)
         RETURNING notice_id, channel, payload)
     SELECT channel, payload FROM sent ORDER BY notice_id";

/// The sender sends the committed notices of prepared transactions; returns how many, or `None`
/// when it could not (they stay in the table).
fn send_prepared() -> Option<usize> {
    let sent = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        BackgroundWorker::transaction(|| -> Result<usize, String> {
            if prepared_notices_table().is_none() {
                return Ok(0);
            }
            Spi::connect_mut(|client| {
                let rows = client.update(SEND_PREPARED, None, &[]).map_err(|e| e.to_string())?;
                let mut n = 0;
                for row in rows {
                    if let (Ok(Some(channel)), Ok(Some(payload))) = (row.get::<String>(1), row.get::<String>(2)) {
                        notify_now(&channel, &payload);
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
    }))
    .catch_others(|e| {
        // SAFETY: ends the failed transaction, as the maintenance worker does.
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(format!("{e:?}"))
    })
    .execute();
    sent.map_err(|e| pgrx::warning!("pg_cep notifier: notifications of prepared transactions could not be sent: {}", crate::engine::excerpt(&e))).ok()
}

/// After `COMMIT PREPARED` (`pg::two_phase`): the transaction may have left notices in
/// `cep.prepared_notices`; if committed ones wait there, the database's sender is woken, or
/// started, to send them. A transaction that left none starts no sender.
pub fn prepared_committed() {
    if !REGION.exists() || prepared_notices().0 == 0 {
        return;
    }
    let (db, at) = (database(), wall_clock());
    match REGION.locked(|base| queues(base).prepared_committed(db, at)) {
        // SAFETY: a running sender's latch, in shared memory; setting a latch never fails.
        Some(Wake::Latch(latch)) => unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) },
        Some(Wake::Start) => start_sender(db),
        _ => {}
    }
}

unsafe extern "C-unwind" {
    /// `commands/async.h`, which pgrx's bindings leave out.
    fn Async_Notify(channel: *const c_char, payload: *const c_char);
}

/// Called from `_PG_init`: the queues exist only while the postmaster preloads us.
pub fn init() {
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        REGION.request();
        BLOCKED.request();
    }
}

fn queues(base: *mut u8) -> &'static mut NoticeQueues {
    // SAFETY: the region holds a NoticeQueues, and the caller holds its lock.
    unsafe { &mut *(base as *mut NoticeQueues) }
}

fn database() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// NOTIFY from this transaction, as the SQL command does. Channel and payload must be within
/// NOTIFY's limits (`engine::payload` keeps them so).
pub fn notify_now(channel: &str, payload: &str) {
    let (Ok(channel), Ok(payload)) = (CString::new(channel), CString::new(payload)) else { return };
    // SAFETY: NOTIFY's own entry point, inside a transaction. An ERROR it raises crosses this
    // frame as a Rust panic, which the guard turns back into the ERROR.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| Async_Notify(channel.as_ptr(), payload.as_ptr())) };
}

/// Before commit: a notification to send once this transaction has committed, by the
/// database's sender if it can take it, or else by this transaction itself.
pub fn notify_after_commit(channel: &str, payload: &str) {
    // SAFETY: reads this transaction's id; 0 when it has none (then it notifies itself).
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
    if gucs::notify_after_commit() && REGION.exists() && xid != 0 {
        let (db, at) = (database(), wall_clock());
        let reserved = REGION.locked(|base| {
            let q = queues(base);
            q.reserve(db, xid, channel, payload).map_err(|refused| refused == Refused::NoSender && q.start(db, at))
        });
        match reserved {
            Some(Ok(ticket)) => return TICKETS.with_mut(|t| t.push(ticket)),
            Some(Err(true)) => start_sender(db),
            _ => {}
        }
    }
    notify_now(channel, payload);
}

/// This database's notifications waiting for its sender: the queue's, with the committed notices
/// of prepared transactions counted in `queued`; and the notices of prepared transactions still
/// undecided. `None` without pg_cep in `shared_preload_libraries` (there is no queue).
pub fn queue_status() -> Option<(crate::engine::notice_queue::Status, u64)> {
    let db = database();
    let mut status = REGION.locked_shared(|base| queues(base).status(db))?;
    let (committed, undecided) = prepared_notices();
    status.queued += committed;
    Some((status, undecided))
}

/// The rows of `cep.prepared_notices`: committed (waiting for the sender), and of prepared
/// transactions still undecided. Those are read with a dirty snapshot, as a unique index check
/// reads: no snapshot of another session sees them.
fn prepared_notices() -> (u64, u64) {
    let Some(oid) = prepared_notices_table() else { return (0, 0) };
    let (mut committed, mut undecided) = (0, 0);
    // SAFETY: a heap scan of pg_cep's own table, opened, scanned and closed here, inside a
    // transaction; the tuples are read only for their inserting transaction's id.
    unsafe {
        let relation = pg_sys::table_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let mut snapshot: pg_sys::SnapshotData = std::mem::zeroed();
        snapshot.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let flags = pg_sys::ScanOptions::SO_TYPE_SEQSCAN | pg_sys::ScanOptions::SO_ALLOW_STRAT;
        let scan = pg_sys::heap_beginscan(relation, &mut snapshot, 0, std::ptr::null_mut(), std::ptr::null_mut(), flags);
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            // Aborted rows are not returned: a row's writer is prepared (in progress) or committed.
            let xmin = (*(*tuple).t_data).t_choice.t_heap.t_xmin;
            if pg_sys::TransactionIdIsInProgress(xmin) {
                undecided += 1;
            } else {
                committed += 1;
            }
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    (committed, undecided)
}

/// What became of a transaction whose notice is still marked reserved. Asked in this order, as
/// Postgres itself asks: a committed transaction is in progress until it has left the proc array.
fn outcome(xid: u32) -> Outcome {
    let xid = pg_sys::TransactionId::from(xid);
    // SAFETY: plain lookups in the proc array and the commit log.
    unsafe {
        if pg_sys::TransactionIdIsInProgress(xid) {
            Outcome::Running
        } else if pg_sys::TransactionIdDidCommit(xid) {
            Outcome::Committed
        } else {
            Outcome::Aborted
        }
    }
}

/// From the maintenance worker, about once a second: a database whose sender failed or was
/// stopped with notices left gets a new one, and so does one whose sessions handed alert repeats
/// over and stopped alerting (the sender writes them); a dropped database's queue is freed.
pub fn supervise() {
    let at = wall_clock();
    let Some(mut orphaned) = REGION.locked_shared(|base| queues(base).orphaned(at)) else { return };
    for db in crate::pg::cooldown::overdue_databases() {
        if !orphaned.contains(&db) {
            orphaned.push(db);
        }
    }
    for db in orphaned {
        let exists = BackgroundWorker::transaction(|| {
            Spi::get_one_with_args::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE oid = $1)", &[pg_sys::Oid::from(db).into()])
        });
        match exists {
            Ok(Some(true)) => {
                if REGION.locked(|base| queues(base).start(db, at)) == Some(true) {
                    start_sender(db);
                }
            }
            Ok(_) => {
                REGION.locked(|base| queues(base).reclaim(db));
                crate::pg::cooldown::discard(db);
            }
            Err(e) => pgrx::warning!("pg_cep worker: {e}"),
        }
    }
}

fn start_sender(db: u32) {
    let started = BackgroundWorkerBuilder::new(&format!("pg_cep notifier for database {db}"))
        .set_type("pg_cep notifier")
        .set_function("pg_cep_notifier_main")
        .set_library("pg_cep")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(db)))
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        // No worker slot free (max_worker_processes): transactions keep sending their own.
        REGION.locked(|base| queues(base).failed(db));
    }
}

/// This transaction's notices: reserved ones go once their transaction has committed, and never
/// if it aborted.
pub struct Notices;

impl XactBuffer for Notices {
    fn pre_commit(&self) {
        for p in PENDING.with_mut(|p| p.take()) {
            notify_after_commit(&p.channel, &p.payload);
        }
    }
    fn commit(&self) {
        finish_tickets(true);
    }
    fn abort(&self) {
        PENDING.with_mut(|p| p.clear());
        finish_tickets(false);
    }
    fn pre_prepare(&self) {
        let pending = PENDING.with_mut(|p| p.take());
        if !pending.is_empty() {
            keep_for_commit_prepared(pending);
        }
    }
    fn prepare(&self) {
        // Nothing was reserved in the queue: the notices are rows of the prepared transaction.
        TICKETS.with_mut(|t| t.clear());
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        PENDING.with_mut(|p| p.released(mine, parent));
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        PENDING.with_mut(|p| p.rolled_back(mine));
    }
}

/// Publishes (commit) or cancels (abort) the notices this transaction reserved in the queue.
fn finish_tickets(committed: bool) {
    let tickets = TICKETS.with_mut(std::mem::take);
    if tickets.is_empty() {
        return;
    }
    let latches = REGION.locked(|base| {
        let q = queues(base);
        let mut latches: Vec<usize> = Vec::new();
        for ticket in tickets {
            if committed {
                latches.extend(q.publish(ticket));
            } else {
                q.cancel(ticket);
            }
        }
        latches.dedup();
        latches
    });
    for latch in latches.unwrap_or_default() {
        // SAFETY: a running sender's latch, in shared memory; setting a latch never fails.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, arg: pg_sys::Datum) {
    let db = arg.value() as u32;
    // SAFETY: plain read of a backend global.
    let (pid, at) = (unsafe { pg_sys::MyProcPid }, wall_clock());
    REGION.locked(|base| queues(base).detach(db, pid, true, at));
}

/// The sender of one database (its oid is the argument).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_cep_notifier_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let db = arg.value() as u32;
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    // It writes blocked attempts as a superuser: resolve names as pg_cep's functions do.
    // SAFETY: sets a GUC of this backend to a constant, before any transaction starts.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    // SAFETY: plain read of a backend global.
    let pid = unsafe { pg_sys::MyProcPid };
    // SAFETY: plain read of a backend global: this process's latch, which lives as long as the process.
    let latch = unsafe { pg_sys::MyLatch } as usize;
    if REGION.locked(|base| queues(base).attach(db, pid, latch, wall_clock())) != Some(true) {
        return;
    }
    // SAFETY: registers a callback of static lifetime; it runs however this process exits.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(db)) };
    let mut notices: Vec<Notice> = Vec::with_capacity(BATCH);
    let mut last_work = Instant::now();
    // When the last batch was sent: a stream of notices is told from a trickle by their gaps.
    let mut last_sent: Option<Instant> = None;
    // Committed notices of prepared transactions may wait from before this sender (a restart, or
    // a COMMIT PREPARED that found no sender to wake): it looks once as it starts.
    let mut look_for_prepared = true;
    loop {
        let asked = REGION.locked(|base| queues(base).take_prepared_committed(db)) == Some(true);
        if asked || look_for_prepared {
            let Some(sent) = send_prepared() else {
                // Left to the next sender, which the maintenance worker starts after a delay, as
                // for a sender that failed with notices queued.
                REGION.locked(|base| queues(base).prepared_committed(db, wall_clock()));
                return;
            };
            last_work = Instant::now();
            // A full batch: more may wait, at once.
            look_for_prepared = sent >= 1000;
            if look_for_prepared {
                continue;
            }
        }
        let records = take_blocked(db);
        if !records.is_empty() {
            write_blocked(records);
            last_work = Instant::now();
        }
        if crate::pg::cooldown::write_overdue() {
            last_work = Instant::now();
        }
        let span = REGION.locked_shared(|base| queues(base).ready(db, BATCH, &mut notices, outcome)).unwrap_or_default();
        if !span.is_empty() {
            if !notices.is_empty() {
                // Removed from the queue only once sent: a sender that fails leaves them to the next.
                BackgroundWorker::transaction(|| notices.iter().for_each(|n| notify_now(&n.channel, &n.payload)));
            }
            REGION.locked(|base| queues(base).delivered(db, &span));
            last_work = Instant::now();
            // Busy (more than one notice was waiting, or the last batch went moments ago): let
            // notices gather for a moment. One transaction then sends many, and committing
            // backends find this process awake and need not signal it: a backend sets the latch
            // of a sender that sleeps there with a kill() system call (with every single-row
            // INSERT of a storm alerting, about one commit in twelve paid it). A trickle of
            // notices (an alert storm under a cooldown opens a few hundred alerts a second) goes
            // at once and is signalled: polling for it woke this process thousands of times a
            // second.
            let busy = notices.len() > 1 || last_sent.is_some_and(|sent| last_work.duration_since(sent) < BUSY_GAP);
            last_sent = Some(last_work);
            if busy {
                // SAFETY: a plain sleep.
                unsafe { pg_sys::pg_usleep(LINGER_US) };
            }
            // Busy, it never waits on its latch, where SIGTERM is noticed: look here too. What is
            // left goes to the next sender (see `supervise`).
            if BackgroundWorker::sigterm_received() {
                return;
            }
            continue;
        }
        if last_work.elapsed() >= IDLE_EXIT
            && !has_blocked(db)
            && !crate::pg::cooldown::waiting()
            && REGION.locked(|base| queues(base).detach(db, pid, false, wall_clock())) == Some(true)
        {
            return;
        }
        // Say so before sleeping, then look once more: a notice published in between did not wake us.
        REGION.locked(|base| queues(base).sleeping(db, true));
        let waiting = REGION.locked_shared(|base| queues(base).ready(db, 1, &mut notices, outcome)).unwrap_or_default();
        if !waiting.is_empty() {
            REGION.locked(|base| queues(base).sleeping(db, false));
            continue;
        }
        let awake = BackgroundWorker::wait_latch(Some(Duration::from_millis(100)));
        REGION.locked(|base| queues(base).sleeping(db, false));
        if !awake {
            return;
        }
    }
}
