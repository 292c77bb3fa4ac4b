//! pg_cep's transaction callbacks, registered once, and the one shape every per-transaction
//! buffer takes. Each module that keeps this transaction's work in backend memory (capture's
//! pending notifications, the notices queued for the sender, the cooldown's repeats, the
//! pattern-state copies, the window cache's events, the rollups) implements [`XactBuffer`]: every
//! method is required, so a new buffer has to say what commit, abort, PREPARE and savepoints do to
//! it. [`BUFFERS`] gets every event, in its order.
//!
//! A buffer's backend-local state is declared with [`xact_local!`]: only its `with_mut` can change
//! it, and that enlists the transaction. The callbacks run for enlisted transactions only, so a
//! transaction that touched no buffer (one on a table pg_cep does not watch) pays nothing for
//! them: with pg_cep in `shared_preload_libraries` the callbacks are registered in every backend.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::LocalKey;

use pgrx::prelude::*;

use crate::pg::{capture, cooldown, notifier, rollups, state_cache, window_cache};

/// What a module keeps for the running transaction. The callbacks run inside Postgres's
/// transaction machinery: an ERROR raised before commit or PREPARE refuses it; after, it is a PANIC
/// waiting to happen, so the post-event methods only move memory.
pub trait XactBuffer: Sync {
    /// Just before commit, while the transaction can still write, and fail.
    fn pre_commit(&self);
    /// Committed: its rows are visible to every new snapshot.
    fn commit(&self);
    /// Rolled back, or the backend is exiting after an error.
    fn abort(&self);
    /// Just before `PREPARE TRANSACTION`, while it can still write, and fail.
    fn pre_prepare(&self);
    /// Prepared: `COMMIT PREPARED` or `ROLLBACK PREPARED` decides later, in any session, and
    /// calls no hook of pg_cep's, so what the decision needs must already be in shared memory.
    fn prepare(&self);
    /// `RELEASE SAVEPOINT` (or a subtransaction that ended well): its work now belongs to `parent`.
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId);
    /// `ROLLBACK TO SAVEPOINT` (or a failed subtransaction): its work, and its children's, is gone.
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId);
}

/// Every buffer, in the order events reach them. Capture comes before the notifier: at commit it
/// hands its notifications to the notifier, whose part then sends them.
static BUFFERS: [&dyn XactBuffer; 6] = [
    &capture::PendingNotifications,
    &cooldown::Repeats,
    &notifier::Notices,
    &state_cache::TouchedStates,
    &window_cache::PendingEvents,
    &rollups::PendingRollups,
];

/// Whether this transaction changed any buffer: the callbacks run only then. Set before the
/// change, cleared once the transaction has ended and every buffer has seen it.
static ENLISTED: AtomicBool = AtomicBool::new(false);

/// A buffer's state in this backend (see [`xact_local!`]): reading it leaves the transaction as it
/// is, changing it enlists the transaction, so that its end reaches every buffer.
pub struct XactLocal<T: 'static>(&'static LocalKey<RefCell<T>>);

impl<T: 'static> XactLocal<T> {
    pub const fn new(cell: &'static LocalKey<RefCell<T>>) -> Self {
        XactLocal(cell)
    }

    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.0.with(|c| f(&c.borrow()))
    }

    pub fn with_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        ENLISTED.store(true, Ordering::Relaxed);
        self.0.with(|c| f(&mut c.borrow_mut()))
    }
}

/// Declares a buffer's backend-local state, reachable only through [`XactLocal`].
macro_rules! xact_local {
    ($(#[$meta:meta])* static $name:ident: $t:ty = $init:expr;) => {
        $(#[$meta])*
        static $name: $crate::pg::xact::XactLocal<$t> = {
            thread_local! {
                static CELL: std::cell::RefCell<$t> = std::cell::RefCell::new($init);
            }
            $crate::pg::xact::XactLocal::new(&CELL)
        };
    };
}
pub(crate) use xact_local;

/// Called once from `_PG_init`.
pub fn init() {
    // SAFETY: the callbacks have static lifetime.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// Registered in every backend: returns at once for a transaction that changed no buffer, before
/// the guard that the enlisted ones need.
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if ENLISTED.load(Ordering::Relaxed) {
        on_enlisted_xact(event);
    }
}

#[pg_guard]
extern "C-unwind" fn on_enlisted_xact(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    if event == XACT_EVENT_PRE_PREPARE {
        // `PREPARE TRANSACTION` is a utility statement: the buffers' writes need a snapshot.
        crate::pg::spi::with_statement_snapshot(|| BUFFERS.iter().for_each(|b| b.pre_prepare()));
    }
    for buffer in BUFFERS {
        match event {
            XACT_EVENT_PRE_COMMIT => buffer.pre_commit(),
            XACT_EVENT_COMMIT => buffer.commit(),
            XACT_EVENT_ABORT => buffer.abort(),
            XACT_EVENT_PREPARE => buffer.prepare(),
            // Parallel workers run no trigger of pg_cep's: their buffers stay empty.
            _ => {}
        }
    }
    // The transaction is over (a prepared one is in shared memory now): the next one enlists
    // again if it changes a buffer. What outlives a transaction (committed repeats waiting for
    // their flush) is taken by a later one that enlists to take it.
    if matches!(event, XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE) {
        ENLISTED.store(false, Ordering::Relaxed);
    }
}

unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    mine: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if ENLISTED.load(Ordering::Relaxed) {
        on_enlisted_subxact(event, mine, parent);
    }
}

#[pg_guard]
extern "C-unwind" fn on_enlisted_subxact(event: pg_sys::SubXactEvent::Type, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    for buffer in BUFFERS {
        match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => buffer.subxact_commit(mine, parent),
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => buffer.subxact_abort(mine),
            _ => {}
        }
    }
}

/// Items a transaction keeps until it ends, each tagged with the subtransaction that added it, so
/// that a rolled-back savepoint takes exactly its own items (and its children's) away.
pub struct BySubxact<T> {
    items: Vec<(pg_sys::SubTransactionId, T)>,
}

impl<T> BySubxact<T> {
    pub const fn new() -> Self {
        BySubxact { items: Vec::new() }
    }

    /// Adds `item` for the current subtransaction.
    pub fn push(&mut self, item: T) {
        // SAFETY: plain read of the current subtransaction's id.
        let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
        self.items.push((subxact, item));
    }

    pub fn released(&mut self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        for (subxact, _) in self.items.iter_mut().filter(|(s, _)| *s == mine) {
            *subxact = parent;
        }
    }

    pub fn rolled_back(&mut self, mine: pg_sys::SubTransactionId) {
        // Ids grow within a transaction: the aborted one's children have larger ids, and a
        // child that was released already carries `mine`.
        self.items.retain(|(s, _)| *s < mine);
    }

    /// Every item, oldest first, leaving the list empty.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items).into_iter().map(|(_, item)| item).collect()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}

impl<T> Default for BySubxact<T> {
    fn default() -> Self {
        Self::new()
    }
}
