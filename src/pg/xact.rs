//! pg_cep's transaction callbacks, registered once. Each module that keeps this transaction's
//! work in the backend (capture's pending notifications, the notices queued for the sender, the
//! window cache's events, the pattern-state copies, the rollups) gets every event, in this order.

use pgrx::prelude::*;

use crate::pg::{capture, cooldown, notifier, rollups, state_cache, window_cache};

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
    capture::on_xact(event);
    cooldown::on_xact(event);
    notifier::on_xact(event);
    state_cache::on_xact(event);
    window_cache::on_xact(event);
    rollups::on_xact(event);
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    mine: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    capture::on_subxact(event, mine, parent);
    cooldown::on_subxact(event, mine, parent);
    notifier::on_subxact(event, mine, parent);
    state_cache::on_subxact(event, mine, parent);
    window_cache::on_subxact(event, mine, parent);
    rollups::on_subxact(event, mine, parent);
}
