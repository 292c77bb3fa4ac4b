//! pg_cep's transaction callbacks, registered once, and the one shape every per-transaction
//! buffer takes. Each module that keeps this transaction's work in backend memory (capture's
//! pending notifications, the notices queued for the sender, the cooldown's repeats, the
//! pattern-state copies, the window cache's events, the rollups) implements [`XactBuffer`]: every
//! method is required, so a new buffer has to say what commit, abort, PREPARE and savepoints do to
//! it. [`BUFFERS`] gets every event, in its order.

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

/// Called once from `_PG_init`.
pub fn init() {
    // SAFETY: the callbacks have static lifetime.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    for buffer in BUFFERS {
        match event {
            XACT_EVENT_PRE_COMMIT => buffer.pre_commit(),
            XACT_EVENT_COMMIT => buffer.commit(),
            XACT_EVENT_ABORT => buffer.abort(),
            XACT_EVENT_PRE_PREPARE => buffer.pre_prepare(),
            XACT_EVENT_PREPARE => buffer.prepare(),
            // Parallel workers run no trigger of pg_cep's: their buffers stay empty.
            _ => {}
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    mine: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
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
