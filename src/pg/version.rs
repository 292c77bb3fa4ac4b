//! The few PostgreSQL internals whose shape differs between the supported major versions.
//!
//! pg_cep builds for PostgreSQL 15 and 18 (the `pg15` / `pg18` features). Each difference is one
//! function here, so the callers read the same on every version. The non-15 branch is the API of
//! PostgreSQL 16 and later, which keeps the door open for 16 and 17.
//! The one difference kept with its caller is the pinned search path
//! (`privileges::with_pinned_search_path`): PostgreSQL 17 removed search path overrides.

use pgrx::pg_sys;
use std::ptr;

/// The `index`th attribute of a tuple descriptor.
///
/// PostgreSQL 18 put an array of compact attributes in front of the full ones, so the field
/// offset changed; its `TupleDescAttr` (a static inline, reached through pgrx's C shim) knows it.
///
/// # Safety
/// `desc` must be a valid tuple descriptor and `index < natts`.
pub unsafe fn tuple_desc_attr(desc: pg_sys::TupleDesc, index: usize) -> *const pg_sys::FormData_pg_attribute {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract; PostgreSQL 15 lays the attributes out inline.
    unsafe {
        (*desc).attrs.as_ptr().add(index)
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract; the shim reads PostgreSQL's own layout.
    unsafe {
        pg_sys::TupleDescAttr(desc, index as std::ffi::c_int)
    }
}

/// Whether a CHECK constraint is enforced (PostgreSQL 18 added NOT ENFORCED ones, which the
/// executor skips; before, every one is).
pub fn check_enforced(check: &pg_sys::ConstrCheck) -> bool {
    #[cfg(feature = "pg15")]
    {
        let _ = check;
        true
    }
    #[cfg(not(feature = "pg15"))]
    {
        check.ccenforced
    }
}

/// Whether the table has generated columns (PostgreSQL 18 added virtual ones, whose expressions
/// the executor folds into CHECK constraints).
///
/// # Safety
/// `constraints` is a valid tuple descriptor's constraints.
pub unsafe fn has_generated_columns(constraints: *const pg_sys::TupleConstr) -> bool {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract.
    unsafe {
        (*constraints).has_generated_stored
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract.
    unsafe {
        (*constraints).has_generated_stored || (*constraints).has_generated_virtual
    }
}

/// Gives a result relation its CHECK constraints already compiled, one per constraint in the
/// relation's order (NULL for one not enforced), so `ExecConstraints` does not compile them.
/// PostgreSQL 18 renamed the field.
///
/// # Safety
/// `result` is an initialised result relation; `states` holds `num_check` entries and lives as
/// long as it.
pub unsafe fn set_check_exprs(result: *mut pg_sys::ResultRelInfo, states: *mut *mut pg_sys::ExprState) {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract.
    unsafe {
        (*result).ri_ConstraintExprs = states;
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract.
    unsafe {
        (*result).ri_CheckConstraintExprs = states;
    }
}

/// Which index entries a heap update needs (PostgreSQL 16 added summarizing-only updates).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IndexUpdate {
    /// A HOT update: none.
    None,
    All,
    /// Only summarizing indexes (BRIN).
    Summarizing,
}

/// Updates the tuple at `tid` to `tuple` in this command, waiting for a transaction that holds it;
/// which index entries it needs, or `None` when another transaction changed or deleted it.
/// PostgreSQL 16 made `heap_update` say which indexes; before, a heap-only tuple needs none.
///
/// # Safety
/// `relation` is an open heap table locked for writes; `tuple` is a tuple of its descriptor.
pub unsafe fn heap_update(relation: pg_sys::Relation, tid: &mut pg_sys::ItemPointerData, tuple: pg_sys::HeapTuple) -> Option<IndexUpdate> {
    // SAFETY: the caller's contract; the failure data and lock mode are outputs only.
    unsafe {
        let mut failure: pg_sys::TM_FailureData = std::mem::zeroed();
        let mut lock_mode: pg_sys::LockTupleMode::Type = 0;
        let cid = pg_sys::GetCurrentCommandId(true);
        #[cfg(feature = "pg15")]
        {
            let result = pg_sys::heap_update(relation, tid, tuple, cid, ptr::null_mut(), true, &mut failure, &mut lock_mode);
            let heap_only = (*(*tuple).t_data).t_infomask2 as u32 & pg_sys::HEAP_ONLY_TUPLE != 0;
            (result == pg_sys::TM_Result::TM_Ok).then_some(if heap_only { IndexUpdate::None } else { IndexUpdate::All })
        }
        #[cfg(not(feature = "pg15"))]
        {
            let mut update: pg_sys::TU_UpdateIndexes::Type = 0;
            let result = pg_sys::heap_update(relation, tid, tuple, cid, ptr::null_mut(), true, &mut failure, &mut lock_mode, &mut update);
            (result == pg_sys::TM_Result::TM_Ok).then_some(match update {
                pg_sys::TU_UpdateIndexes::TU_None => IndexUpdate::None,
                pg_sys::TU_UpdateIndexes::TU_Summarizing => IndexUpdate::Summarizing,
                _ => IndexUpdate::All,
            })
        }
    }
}

/// Inserts the index entries of a tuple just stored or updated in `result`'s relation (`slot`
/// holds it, with its tid): no conflict arbiter, and without `ExecUpdate`'s hint that the key is
/// unchanged (which reads the updated columns from a range table entry that a relation written
/// here does not have). `which` is `All` for an insert; PostgreSQL 16 added `onlySummarizing`.
///
/// # Safety
/// As `ExecInsertIndexTuples`: `result` has open indexes, `slot` holds the tuple.
pub unsafe fn insert_index_tuples(
    result: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
    which: IndexUpdate,
) {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract.
    unsafe {
        let _ = which;
        pg_sys::ExecInsertIndexTuples(result, slot, estate, false, false, ptr::null_mut(), ptr::null_mut());
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::ExecInsertIndexTuples(result, slot, estate, false, false, ptr::null_mut(), ptr::null_mut(), which == IndexUpdate::Summarizing);
    }
}

/// Starts a scan of `index` (PostgreSQL 18 added instrumentation, unused here).
///
/// # Safety
/// As `index_beginscan`: both relations open, `snapshot` registered for the scan's life.
pub unsafe fn index_beginscan(heap: pg_sys::Relation, index: pg_sys::Relation, snapshot: pg_sys::Snapshot, keys: i32) -> pg_sys::IndexScanDesc {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::index_beginscan(heap, index, snapshot, keys, 0)
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::index_beginscan(heap, index, snapshot, ptr::null_mut(), keys, 0)
    }
}
