//! Reading the monitored values straight out of trigger tuples, without a query: the statement
//! trigger's transition table and the row trigger's NEW row go through the same code.

use std::ffi::CStr;
use std::num::NonZeroUsize;

use pgrx::prelude::*;

/// A mapped column: where it is in the tuple, and how to print it.
#[derive(Clone, Copy)]
pub struct Col {
    attnum: NonZeroUsize,
    typid: pg_sys::Oid,
    typoutput: pg_sys::Oid,
}

impl Col {
    pub fn new(attnum: i16, typid: pg_sys::Oid) -> Option<Col> {
        let attnum = NonZeroUsize::new(usize::try_from(attnum).ok()?)?;
        let mut typoutput = pg_sys::InvalidOid;
        let mut varlena = false;
        // SAFETY: a catalog lookup for a type that exists (it is a live column's type).
        unsafe { pg_sys::getTypeOutputInfo(typid, &mut typoutput, &mut varlena) };
        Some(Col { attnum, typid, typoutput })
    }
}

/// The columns the monitor reads from each row.
#[derive(Clone, Copy)]
pub struct RowColumns {
    pub key: Col,
    pub amount: Option<Col>,
    pub location: Option<Col>,
    pub time: Col,
    pub pk: Option<Col>,
}

pub struct Row {
    pub key: String,
    pub amount: Option<f64>,
    pub location: Option<String>,
    pub at: pg_sys::TimestampTz,
    pub pk: Option<String>,
}

struct Tuple {
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
}

impl Tuple {
    fn datum(&self, col: Col) -> Option<pg_sys::Datum> {
        // SAFETY: the tuple and descriptor belong together; attnum is a live column of it.
        unsafe { pgrx::heap_getattr_raw(self.tuple, col.attnum, self.desc) }
    }

    fn text(&self, col: Col) -> Option<String> {
        let datum = self.datum(col)?;
        // SAFETY: the output function of the column's own type, on a non-null datum.
        let cstr = unsafe { pg_sys::OidOutputFunctionCall(col.typoutput, datum) };
        let text = unsafe { CStr::from_ptr(cstr) }.to_string_lossy().into_owned();
        unsafe { pg_sys::pfree(cstr.cast()) };
        Some(text)
    }

    fn timestamptz(&self, col: Col) -> Option<pg_sys::TimestampTz> {
        let datum = self.datum(col)?;
        if col.typid == pg_sys::TIMESTAMPTZOID {
            Some(datum.value() as i64)
        } else {
            // timestamp without time zone: read as the session's local time, as SQL would.
            unsafe { pgrx::direct_function_call::<i64>(pg_sys::timestamp_timestamptz, &[Some(datum)]) }
        }
    }
}

impl RowColumns {
    fn read(&self, t: &Tuple) -> Option<Row> {
        Some(Row {
            key: t.text(self.key)?,
            // Any numeric type prints as a decimal that f64 parses.
            amount: self.amount.and_then(|c| t.text(c)).and_then(|s| s.parse().ok()),
            location: self.location.and_then(|c| t.text(c)),
            at: t.timestamptz(self.time)?,
            pk: self.pk.and_then(|c| t.text(c)),
        })
    }

    /// The row trigger's NEW row. `None` when its key or time is null: such a row is not scored.
    ///
    /// # Safety
    /// `tuple` must be a valid heap tuple described by `desc`.
    pub unsafe fn read_tuple(&self, tuple: *mut pg_sys::HeapTupleData, desc: pg_sys::TupleDesc) -> Option<Row> {
        self.read(&Tuple { tuple, desc })
    }

    /// Every row of the statement trigger's transition table, read with a read pointer of our
    /// own so that other consumers of the same tuplestore are not disturbed.
    ///
    /// # Safety
    /// `store` must be this trigger call's transition tuplestore, with rows described by `desc`.
    pub unsafe fn read_transition(&self, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Vec<Row> {
        let mut rows = Vec::new();
        if store.is_null() {
            return rows;
        }
        let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(store, pointer);
        pg_sys::tuplestore_rescan(store);
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
            let mut should_free = false;
            let tuple = pg_sys::ExecFetchSlotHeapTuple(slot, false, &mut should_free);
            if let Some(row) = self.read(&Tuple { tuple, desc }) {
                rows.push(row);
            }
            if should_free {
                pg_sys::heap_freetuple(tuple);
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        rows
    }
}
