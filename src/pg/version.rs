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

/// Inserts the index entries of a tuple just stored in `result`'s relation (plain insert: no
/// conflict arbiter, every index).
///
/// PostgreSQL 16 added `onlySummarizing` (for HOT updates); an insert is never one.
///
/// # Safety
/// As `ExecInsertIndexTuples`: `result` has open indexes, `slot` holds the stored tuple.
pub unsafe fn insert_index_tuples(result: *mut pg_sys::ResultRelInfo, slot: *mut pg_sys::TupleTableSlot, estate: *mut pg_sys::EState) {
    #[cfg(feature = "pg15")]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::ExecInsertIndexTuples(result, slot, estate, false, false, ptr::null_mut(), ptr::null_mut());
    }
    #[cfg(not(feature = "pg15"))]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::ExecInsertIndexTuples(result, slot, estate, false, false, ptr::null_mut(), ptr::null_mut(), false);
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
