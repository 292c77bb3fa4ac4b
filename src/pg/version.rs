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
