//! This backend's ledger of alert repeats under a cooldown (`engine::repeats`), and its flushes.
//!
//! A repeat of an alert this backend knows to be open costs no SQL: it is counted in memory, and
//! handed over to shared memory (`engine::shared_repeats`) when its transaction commits. At most
//! once per `cep.alert_repeat_flush_interval` (1 s by default), the next alerting statement of a
//! session whose database's interval has passed takes every session's counts and adds them to the
//! alert rows with one UPDATE, in its transaction. So a database's open alerts are updated about
//! once per interval however many sessions count repeats on them. When no session of the database
//! alerts any more, its sender writes what waits ([`write_overdue`]). Without shared memory (pg_cep
//! not preloaded), or when it is full, a backend writes its own.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pgrx::prelude::*;
use pgrx::PgOid;

use crate::engine::repeats::{Ledger, Slot, Tally};
use crate::engine::shared_repeats::SharedRepeats;
use crate::error::CepResult;
use crate::pg::privileges::as_extension_owner;
use crate::pg::shmem::Region;
use crate::pg::spi;
use crate::pg::time::wall_clock;
use crate::pg::xact::{xact_local, XactBuffer};

xact_local! {
    static LEDGER: Ledger = Ledger::default();
}

thread_local! {
    /// When this backend last handed its repeats over or wrote them.
    static LAST_FLUSH: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether the exit callback that writes what is left is registered.
    static EXIT_HOOK: Cell<bool> = const { Cell::new(false) };
    /// Whether this backend hands its repeats over to shared memory (see `SharedRepeats::attach`).
    static ATTACHED: Cell<bool> = const { Cell::new(false) };
    /// The count of alert state changes this backend's ledger has caught up with.
    static SEEN_CHANGES: Cell<u64> = const { Cell::new(0) };
    /// When this sender last looked for overdue repeats.
    static OVERDUE_CHECKED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How often a sender looks for its database's overdue repeats.
const OVERDUE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

#[repr(C)]
struct AlertStates {
    /// How many times an alert's state changed, server-wide: a backend whose ledger is older
    /// forgets the alerts it knew open (the next repeat finds them again, or opens a new one if
    /// resolved).
    changes: AtomicU64,
    /// Repeats handed over by every backend, written by one flush per database and interval.
    repeats: SharedRepeats,
}

static SHARED: Region = Region::new(c"pg_cep_alert_states", std::mem::size_of::<AlertStates>, |base| {
    // SAFETY: the region was just created with room for `AlertStates`, for which all zeroes is the
    // initial state (no change counted, no repeat waiting).
    unsafe { std::ptr::write_bytes(base, 0, std::mem::size_of::<AlertStates>()) }
});

/// Called from `_PG_init`: shared memory exists only while the postmaster preloads us.
pub fn init() {
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        SHARED.request();
    }
}

fn state_changes() -> u64 {
    // SAFETY: an atomic in shared memory, read without a lock.
    SHARED.unlocked(|base| unsafe { (*(base as *const AlertStates)).changes.load(Ordering::Acquire) }).unwrap_or(0)
}

/// An alert's state changed (`cep.set_alert_state`), or a flush found alerts resolved or gone:
/// every backend forgets what it knew open.
pub fn state_changed() {
    // SAFETY: as above.
    SHARED.unlocked(|base| unsafe { (*(base as *const AlertStates)).changes.fetch_add(1, Ordering::AcqRel) });
    LEDGER.with_mut(|l| l.forget_open());
}

fn catch_up() {
    let now = state_changes();
    if SEEN_CHANGES.with(|s| s.replace(now)) != now {
        LEDGER.with_mut(|l| l.forget_open());
    }
}

fn database() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Runs `f` on the shared repeats under their lock; `None` without shared memory.
fn with_shared<R>(f: impl FnOnce(&mut SharedRepeats) -> R) -> Option<R> {
    // SAFETY: the region holds an `AlertStates`; its repeats are ours while the lock is held.
    SHARED.locked(|base| f(unsafe { &mut (*(base as *mut AlertStates)).repeats }))
}

/// Hands this backend's committed repeats over to shared memory at `now` (what does not fit stays
/// here), then runs `then` on the shared repeats, under the same lock. `None` without shared memory.
fn hand_over<R>(now: i64, then: impl FnOnce(&mut SharedRepeats, u32) -> R) -> Option<R> {
    let database = database();
    with_shared(|shared| {
        LEDGER.with_mut(|l| {
            let committed = l.take_committed();
            let left = shared.add(database, now, committed);
            l.keep(left);
        });
        then(shared, database)
    })
}

fn interval_micros() -> i64 {
    i64::try_from(crate::gucs::alert_repeat_flush_interval().as_micros()).unwrap_or(i64::MAX)
}

/// How long handed-over repeats wait for a session to take them before the sender does: two flush
/// intervals, and at least a second, so that the sender never races sessions that still alert.
fn overdue_after() -> i64 {
    interval_micros().saturating_mul(2).max(1_000_000)
}

/// For the supervisor: the databases whose handed-over repeats no session has taken in time.
/// Their senders write them ([`write_overdue`]).
pub fn overdue_databases() -> Vec<u32> {
    let (now, wait) = (wall_clock(), overdue_after());
    with_shared(|shared| shared.overdue(now, wait)).unwrap_or_default()
}

/// For the supervisor: `database` was dropped; its repeats go with its alerts.
pub fn discard(database: u32) {
    with_shared(|shared| shared.take(database));
}

/// Whether repeats handed over by this database's sessions wait to be written.
pub fn waiting() -> bool {
    let database = database();
    with_shared(|shared| shared.waiting(database)).unwrap_or(false)
}

/// For this database's sender, outside any transaction: writes its sessions' handed-over repeats
/// that are overdue (no session alerted to take them), in a transaction of its own. On failure
/// they are handed back, for the next try. Returns whether any were written.
pub fn write_overdue() -> bool {
    // A busy sender loops every millisecond or so; repeats become overdue on a scale of seconds.
    if OVERDUE_CHECKED.with(|c| c.get().is_some_and(|t| t.elapsed() < OVERDUE_CHECK_EVERY)) {
        return false;
    }
    OVERDUE_CHECKED.with(|c| c.set(Some(Instant::now())));
    let (database, now, wait) = (database(), wall_clock(), overdue_after());
    let taken = with_shared(|shared| {
        if !shared.overdue(now, wait).contains(&database) {
            return None;
        }
        shared.take_if_due(database, now, 0)
    });
    let Some(Some(tallies)) = taken else { return false };
    let written = crate::pg::worker::in_own_transaction("alert repeats handed over by sessions (kept for the next try)", || {
        // Nothing to add to where pg_cep's alerts are gone (DROP EXTENSION since).
        let present = Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('cep.alerts') IS NOT NULL")? == Some(true);
        if present {
            write(&tallies)
        } else {
            Ok(())
        }
    });
    if !written {
        let now = wall_clock();
        let lost = with_shared(|shared| shared.give_back(database, now, tallies).len()).unwrap_or(0);
        if lost > 0 {
            pgrx::warning!("pg_cep: the repeats of {lost} alerts were dropped: no room left to keep them");
        }
        return false;
    }
    true
}

fn subxact() -> u32 {
    // SAFETY: plain read of the current subtransaction's id.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}

/// The open alert a row of `slot` repeats, if this backend knows it.
pub fn alert_for(slot: &Slot) -> Option<i64> {
    catch_up();
    LEDGER.with(|l| l.alert_for(slot))
}

/// This transaction opened alert `id` for `slot`, or found it open.
pub fn found(slot: Slot, id: i64) {
    LEDGER.with_mut(|l| l.found(subxact(), slot, id));
}

/// A row repeats alert `id`.
pub fn repeat(id: i64, at: i64, score: f64) {
    if !EXIT_HOOK.with(|h| h.replace(true)) {
        // SAFETY: registers a callback of static lifetime, once per backend.
        unsafe { pg_sys::before_shmem_exit(Some(flush_at_exit), pg_sys::Datum::from(0)) };
        ATTACHED.with(|a| a.set(with_shared(|shared| shared.attach(database())) == Some(true)));
    }
    LEDGER.with_mut(|l| l.repeat(subxact(), id, at, score));
}

/// When the session ends: what it counted is handed over to shared memory, and what is left to
/// write (all its database's repeats if it is the last session that counted any, and whatever did
/// not fit) is written in a transaction of its own, as Postgres drops a session's temporary
/// tables. A failure is logged; the session ends anyway.
#[pg_guard]
unsafe extern "C-unwind" fn flush_at_exit(_code: i32, _arg: pg_sys::Datum) {
    // Only a session leaving normally, outside any transaction, can run one.
    // SAFETY: reads of the backend's transaction state.
    let idle = unsafe { !pg_sys::IsTransactionOrTransactionBlock() };
    let handed = if ATTACHED.with(|a| a.replace(false)) {
        hand_over(wall_clock(), |shared, database| if shared.detach(database) && idle { shared.take(database) } else { Vec::new() })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if !idle || (handed.is_empty() && !LEDGER.with(|l| l.has_unflushed())) {
        return;
    }
    let flushed = pgrx::PgTryBuilder::new(|| {
        // SAFETY: a transaction of its own, started and ended here.
        unsafe {
            pg_sys::StartTransactionCommand();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        // An ERROR here would end the session with a FATAL: skip a database where pg_cep's
        // alerts are gone (DROP EXTENSION since the counts were taken).
        let present = Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('cep.alerts') IS NOT NULL").ok().flatten() == Some(true);
        let tallies = LEDGER.with_mut(|l| l.take_for_flush(handed));
        // Names resolve as in every pg_cep function: the session's own path may hold anything.
        let written = if present { crate::pg::privileges::with_pinned_search_path(|| write(&tallies)) } else { Ok(()) };
        // SAFETY: ends the transaction started above, after its last statement.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        written
    })
    .catch_others(|_| {
        // SAFETY: ends the transaction the failed flush was in.
        unsafe { pg_sys::AbortCurrentTransaction() };
        Ok(())
    })
    .execute();
    if let Err(e) = flushed {
        pgrx::log!("pg_cep: alert repeats counted by this session were not written: {e}");
    }
}

/// Locks the alerts a flush is about to update, in id order whatever the plan (rows are locked
/// after sorting). Two sessions flushing repeats of the same alerts then wait for each other
/// instead of deadlocking: the UPDATE alone locks rows in its join's order, which is the ids'
/// order in a nested loop over the sorted ids but the table's order in a hash join.
const LOCK_IN_ID_ORDER: &str = "SELECT FROM cep.alerts WHERE alert_id = ANY($1) ORDER BY alert_id FOR NO KEY UPDATE";

const FLUSH: &str = "UPDATE cep.alerts a SET repeats = a.repeats + t.n, last_seen = greatest(a.last_seen, t.seen),
                            max_score = greatest(a.max_score, t.score)
     FROM unnest($1::int8[], $2::int4[], $3::timestamptz[], $4::float8[]) AS t(id, n, seen, score)
     WHERE a.alert_id = t.id AND a.state <> 'resolved'";

/// At most once per flush interval: hands this backend's committed repeats over and, when its
/// database's interval has passed, adds every session's (and this transaction's) to their alerts,
/// in this transaction: if it rolls back they wait here for the next flush. A backend without
/// shared memory writes its own committed repeats.
pub fn flush_if_due() -> CepResult<()> {
    let interval = crate::gucs::alert_repeat_flush_interval();
    if LAST_FLUSH.with(|f| f.get().is_some_and(|t| t.elapsed() < interval)) {
        return Ok(());
    }
    let handed = if ATTACHED.with(|a| a.get()) {
        LAST_FLUSH.with(|f| f.set(Some(Instant::now())));
        let (now, interval) = (wall_clock(), interval_micros());
        match hand_over(now, |shared, database| shared.take_if_due(database, now, interval)).flatten() {
            Some(handed) => handed,
            None => return Ok(()),
        }
    } else if LEDGER.with(|l| l.has_unflushed()) {
        LAST_FLUSH.with(|f| f.set(Some(Instant::now())));
        Vec::new()
    } else {
        return Ok(());
    };
    let tallies = LEDGER.with_mut(|l| l.take_for_flush(handed));
    write(&tallies)
}

/// Adds every repeat waiting to its alert now: this backend's, this transaction's included, and
/// those other sessions of the database handed over. Returns how many alerts were updated.
pub fn flush_now() -> CepResult<i64> {
    LAST_FLUSH.with(|f| f.set(Some(Instant::now())));
    let handed = hand_over(wall_clock(), |shared, database| shared.take(database)).unwrap_or_default();
    let tallies = LEDGER.with_mut(|l| l.take_for_flush(handed));
    write(&tallies)?;
    Ok(tallies.len() as i64)
}

/// Writes `tallies`; alerts resolved or deleted meanwhile are forgotten by every backend (their
/// repeats with them: the next repeat opens a new alert).
fn write(tallies: &[(i64, Tally)]) -> CepResult<()> {
    use pg_sys::{FLOAT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};
    if tallies.is_empty() {
        return Ok(());
    }
    let lock = spi::kept(LOCK_IN_ID_ORDER, &[PgOid::from(INT8ARRAYOID)])?;
    let plan = spi::kept(FLUSH, &[INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, FLOAT8ARRAYOID].map(PgOid::from))?;
    let ids: Vec<i64> = tallies.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = tallies.iter().map(|(_, t)| t.count).collect();
    let seen: Vec<Option<pgrx::datum::TimestampWithTimeZone>> =
        tallies.iter().map(|(_, t)| pgrx::datum::TimestampWithTimeZone::try_from(t.last_seen).ok()).collect();
    let scores: Vec<f64> = tallies.iter().map(|(_, t)| t.max_score).collect();
    let updated = as_extension_owner(|| {
        Spi::connect_mut(|client| -> CepResult<usize> {
            client.update(&*lock, None, &[ids.clone().into()])?;
            Ok(client.update(&*plan, None, &[ids.into(), counts.into(), seen.into(), scores.into()])?.len())
        })
    })?;
    if updated < tallies.len() {
        state_changed();
    }
    Ok(())
}

/// This transaction's repeats of open alerts, counted on them once it commits.
pub struct Repeats;

impl XactBuffer for Repeats {
    fn pre_commit(&self) {
        // Nothing to write yet: committed repeats are written by the once-a-second flush.
    }
    fn commit(&self) {
        // Handed over at once: if this session alerts no more, its sender can write them.
        if LEDGER.with_mut(|l| {
            l.commit();
            l.has_unflushed()
        }) && ATTACHED.with(|a| a.get())
        {
            // SAFETY: a plain read of the time this transaction committed, set before this callback.
            hand_over(unsafe { pg_sys::GetCurrentTransactionStopTimestamp() }, |_, _| ());
        }
    }
    fn abort(&self) {
        LEDGER.with_mut(|l| l.abort());
    }
    fn pre_prepare(&self) {
        // A prepared transaction writes its own repeats: whether they count is decided with it.
        let mine = LEDGER.with_mut(|l| l.take_pending());
        if let Err(e) = write(&mine) {
            pgrx::error!("pg_cep could not count alert repeats before PREPARE: {e}");
        }
    }
    fn prepare(&self) {
        LEDGER.with_mut(|l| l.prepared());
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        LEDGER.with_mut(|l| l.subxact_commit(mine, parent));
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        LEDGER.with_mut(|l| l.subxact_abort(mine));
    }
}
