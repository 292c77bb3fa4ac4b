//! What pg_cep does when a prepared transaction is decided.
//!
//! `COMMIT PREPARED` runs no trigger and no transaction callback of the prepared transaction: a
//! utility hook sees it end. Then the database's sender sends the transaction's notifications
//! (`notifier`), and the window cache refuses loads that read the table before the commit
//! (`window_cache`). A transaction prepared before the server started was never registered in
//! shared memory (lost with the restart): the cache forgets its database's keys as well, and the
//! rollups their database's tables (`rollups`).

use std::ffi::{c_char, CStr};

use pgrx::prelude::*;

static mut NEXT_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Called from `_PG_init` while preloading: the hook chains to the one installed before.
pub fn init() {
    // SAFETY: hooks are chained while libraries are preloaded, before any statement runs.
    unsafe {
        NEXT_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// The `gid` of a `COMMIT PREPARED` statement.
///
/// # Safety
/// `pstmt` must be the statement Postgres hands a utility hook.
unsafe fn commit_prepared_gid(pstmt: *mut pg_sys::PlannedStmt) -> Option<String> {
    // SAFETY: the caller's promise; a TransactionStmt's gid is set for its PREPARED kinds.
    unsafe {
        let node = (*pstmt).utilityStmt;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_TransactionStmt {
            return None;
        }
        let stmt = node as *mut pg_sys::TransactionStmt;
        if (*stmt).kind != pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED || (*stmt).gid.is_null() {
            return None;
        }
        Some(CStr::from_ptr((*stmt).gid).to_string_lossy().into_owned())
    }
}

/// Whether the prepared transaction `gid` was prepared before pg_cep's shared memory was set up
/// (the server started, or restarted after a crash), so that what it knew of it is lost.
fn prepared_before_start(gid: &str) -> bool {
    let Some(started) = crate::pg::notifier::memory_started() else { return false };
    let prepared = crate::pg::spi::with_statement_snapshot(|| {
        Spi::get_one_with_args::<pgrx::datum::TimestampWithTimeZone>(
            "SELECT prepared FROM pg_catalog.pg_prepared_xacts WHERE gid = $1",
            &[gid.into()],
        )
    });
    prepared.ok().flatten().is_some_and(|at| pg_sys::TimestampTz::from(at) < started)
}

/// Whether pg_cep is installed in this database: elsewhere a prepared transaction has nothing
/// of pg_cep's to decide, and `COMMIT PREPARED` costs nothing more.
fn installed_here() -> bool {
    // SAFETY: a catalog lookup inside a transaction.
    unsafe { pg_sys::get_extension_oid(c"pg_cep".as_ptr(), true) != pg_sys::InvalidOid }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the statement this hook was handed; read before it runs.
    let gid = unsafe { commit_prepared_gid(pstmt) }.filter(|_| installed_here());
    // Asked before the commit: the transaction is gone from pg_prepared_xacts after it.
    let before_start = gid.as_deref().is_some_and(prepared_before_start);
    // SAFETY: the next hook, or Postgres's own, with the arguments we were given. An ERROR the
    // next hook raises crosses our frames as a Rust panic (the guard), not as a longjmp.
    unsafe {
        match NEXT_PROCESS_UTILITY {
            Some(next) => pg_sys::ffi::pg_guard_ffi_boundary(|| next(pstmt, query, read_only_tree, context, params, env, dest, qc)),
            None => pg_sys::standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc),
        }
    }
    if gid.is_some() {
        crate::pg::window_cache::prepared_committed(before_start);
        if before_start {
            crate::pg::rollups::forget_database();
        }
        crate::pg::notifier::prepared_committed();
    }
}
