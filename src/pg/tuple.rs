//! Reading the monitored values straight out of trigger tuples, without a query: the statement
//! trigger's transition table and the row trigger's NEW row go through the same code.

use std::ffi::CStr;
use std::num::NonZeroUsize;

use pgrx::prelude::*;

use crate::engine::pattern::Value;

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

/// One row of a trigger call, with its descriptor.
pub struct Tuple {
    source: Source,
    desc: pg_sys::TupleDesc,
}

/// Where a row's values are read: the row trigger's NEW heap tuple, or the slot a transition
/// table's row was fetched into. A slot's values are read where it keeps them, its columns
/// deformed once as far as asked, instead of a heap copy of each row read column by column (each
/// read a call into Postgres).
enum Source {
    Heap(*mut pg_sys::HeapTupleData),
    Slot(*mut pg_sys::TupleTableSlot),
}

impl Tuple {
    /// # Safety
    /// `tuple` must be a valid heap tuple described by `desc`.
    pub unsafe fn new(tuple: *mut pg_sys::HeapTupleData, desc: pg_sys::TupleDesc) -> Tuple {
        Tuple { source: Source::Heap(tuple), desc }
    }

    /// The whole row as a composite datum (a copy, in the current memory context).
    pub fn as_datum(&self) -> pg_sys::Datum {
        // SAFETY: a valid heap tuple and its descriptor (see `new`), or a slot holding a row of
        // `desc` (see `for_each_transition_row`).
        unsafe {
            match self.source {
                Source::Heap(tuple) => pg_sys::heap_copy_tuple_as_datum(tuple, self.desc),
                Source::Slot(slot) => pg_sys::ExecFetchSlotHeapTupleDatum(slot),
            }
        }
    }

    /// A column as a pattern value: integers, floats and booleans keep their type, numeric
    /// becomes a float, anything else its text.
    pub fn value(&self, col: Col) -> Value {
        match self.datum(col) {
            None => Value::Null,
            Some(datum) => datum_value(datum, col),
        }
    }

    pub fn int(&self, col: Col) -> Option<i64> {
        match self.value(col) {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    fn datum(&self, col: Col) -> Option<pg_sys::Datum> {
        // SAFETY: the tuple (or slot) and descriptor belong together; attnum is a live column of
        // it, so within the slot's arrays once deformed that far.
        unsafe {
            match self.source {
                Source::Heap(tuple) => pgrx::heap_getattr_raw(tuple, col.attnum, self.desc),
                Source::Slot(slot) => slot_value(slot, col.attnum.get()),
            }
        }
    }

    /// A numeric column as a float: integers and floats as they are, any other type as the
    /// decimal it prints (float4 too, so 1.1 stays 1.1 and not its widened binary value).
    pub fn number(&self, col: Col) -> Option<f64> {
        let datum = self.datum(col)?;
        match datum_value(datum, col) {
            Value::Int(i) => Some(i as f64),
            Value::Float(_) if col.typid == pg_sys::FLOAT4OID => datum_text(datum, col).parse().ok(),
            Value::Float(f) => Some(f),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn text(&self, col: Col) -> Option<String> {
        Some(datum_text(self.datum(col)?, col))
    }

    pub fn timestamptz(&self, col: Col) -> Option<pg_sys::TimestampTz> {
        let datum = self.datum(col)?;
        if col.typid == pg_sys::TIMESTAMPTZOID {
            Some(datum.value() as i64)
        } else {
            // timestamp without time zone: read as the session's local time, as SQL would.
            // SAFETY: a non-null timestamp datum, converted by Postgres's own cast function.
            unsafe { pgrx::direct_function_call::<i64>(pg_sys::timestamp_timestamptz, &[Some(datum)]) }
        }
    }
}

/// A non-null datum as its type's output function prints it. Integers and text, the usual keys,
/// are printed here: the output function's call and its palloc'd copy were a tenth of the
/// monitor's time per row in a profile of the alert storm.
fn datum_text(datum: pg_sys::Datum, col: Col) -> String {
    match col.typid {
        pg_sys::INT2OID => (datum.value() as i16).to_string(),
        pg_sys::INT4OID => (datum.value() as i32).to_string(),
        pg_sys::INT8OID => (datum.value() as i64).to_string(),
        pg_sys::TEXTOID | pg_sys::VARCHAROID => {
            // SAFETY: a non-null datum of a text type; detoasted (a copy only when it was toasted
            // or compressed, freed below), read as textout reads it. A plain one (the usual key) is
            // read where it is, without the call.
            unsafe {
                let stored = datum.cast_mut_ptr::<pg_sys::varlena>();
                let extended = pgrx::varlena::varatt_is_1b_e(stored) || pgrx::varlena::varatt_is_4b_c(stored);
                let plain = if extended { pg_sys::pg_detoast_datum_packed(stored) } else { stored };
                let text = String::from_utf8_lossy(pgrx::varlena::varlena_to_byte_slice(plain)).into_owned();
                if plain != stored {
                    pg_sys::pfree(plain.cast());
                }
                text
            }
        }
        _ => {
            // SAFETY: the output function of the column's own type, on a non-null datum.
            let cstr = unsafe { pg_sys::OidOutputFunctionCall(col.typoutput, datum) };
            // SAFETY: the NUL-terminated string the output function just returned.
            let text = unsafe { CStr::from_ptr(cstr) }.to_string_lossy().into_owned();
            // SAFETY: that string, palloc'd by the output function and no longer used.
            unsafe { pg_sys::pfree(cstr.cast()) };
            text
        }
    }
}

/// A non-null datum of `col`'s type as a pattern value; shared by the trigger and by SPI reads.
pub fn datum_value(datum: pg_sys::Datum, col: Col) -> Value {
    match col.typid {
        pg_sys::INT2OID => Value::Int(datum.value() as i16 as i64),
        pg_sys::INT4OID => Value::Int(datum.value() as i32 as i64),
        pg_sys::INT8OID => Value::Int(datum.value() as i64),
        pg_sys::BOOLOID => Value::Bool(datum.value() != 0),
        // SAFETY: float datums of their own types.
        pg_sys::FLOAT4OID => Value::Float(unsafe { f32::from_datum(datum, false) }.unwrap_or(f32::NAN) as f64),
        // SAFETY: float datums of their own types.
        pg_sys::FLOAT8OID => Value::Float(unsafe { f64::from_datum(datum, false) }.unwrap_or(f64::NAN)),
        pg_sys::NUMERICOID => datum_text(datum, col).parse().map(Value::Float).unwrap_or(Value::Null),
        _ => Value::Text(datum_text(datum, col)),
    }
}

/// Column `attnum` (1-based) of the row a slot holds, `None` for NULL. The slot's columns are
/// deformed only when not yet that far: a column already deformed is read without a call.
///
/// # Safety
/// `slot` holds a row, and `attnum` is one of its descriptor's columns.
pub unsafe fn slot_value(slot: *mut pg_sys::TupleTableSlot, attnum: usize) -> Option<pg_sys::Datum> {
    // SAFETY: the caller's promise; the slot's arrays hold `attnum` values once deformed that far.
    unsafe {
        if ((*slot).tts_nvalid as usize) < attnum {
            pg_sys::slot_getsomeattrs_int(slot, attnum as i32);
        }
        (!*(*slot).tts_isnull.add(attnum - 1)).then(|| *(*slot).tts_values.add(attnum - 1))
    }
}

/// Calls `each` on every row of a statement trigger's transition table, read with a read
/// pointer of our own so that other consumers of the same tuplestore are not disturbed.
///
/// # Safety
/// `store` must be this trigger call's transition tuplestore, with rows described by `desc`.
pub unsafe fn for_each_transition_row(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc, mut each: impl FnMut(&Tuple)) {
    if store.is_null() {
        return;
    }
    let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(store, pointer);
    pg_sys::tuplestore_rescan(store);
    let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
    while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
        each(&Tuple { source: Source::Slot(slot), desc });
    }
    pg_sys::ExecDropSingleTupleTableSlot(slot);
}

impl RowColumns {
    fn read(&self, t: &Tuple) -> Option<Row> {
        Some(Row {
            key: t.text(self.key)?,
            amount: self.amount.and_then(|c| t.number(c)),
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
        self.read(&Tuple::new(tuple, desc))
    }

    /// Every row of the statement trigger's transition table.
    ///
    /// # Safety
    /// `store` must be this trigger call's transition tuplestore, with rows described by `desc`.
    pub unsafe fn read_transition(&self, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Vec<Row> {
        let mut rows = Vec::new();
        for_each_transition_row(store, desc, |t| rows.extend(self.read(t)));
        rows
    }
}
