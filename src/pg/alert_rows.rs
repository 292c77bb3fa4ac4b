//! `cep.alerts` rows stored without the executor (see `direct_insert` for why and when). When
//! every row of a busy table alerts, the INSERT through SPI cost as much as the user's own row;
//! stored here, an alert costs its heap row and index entries.
//!
//! `AlertRows::open` returns `None` whenever the table differs from what pg_cep makes in a way the
//! executor would act on (columns, triggers, rules, row security, stored generated columns,
//! defaults that call functions other than Postgres's own), or the extension may not insert into
//! it. The caller then writes through SPI. CHECK and NOT NULL constraints are checked here, as the
//! executor checks them.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::IntoDatum;

use super::direct_insert::{self, compiled_defaults, has_columns, Column, CompiledExpr, Statement, Target};

/// The table's columns in order, as the 0.3.0 scripts make them.
const COLUMNS: [Column; 22] = [
    ("alert_id", pg_sys::INT8OID, false),
    ("relid", pg_sys::OIDOID, false),
    ("table_name", pg_sys::TEXTOID, false),
    ("key", pg_sys::TEXTOID, false),
    ("row_pk", pg_sys::TEXTOID, true),
    ("score", pg_sys::FLOAT8OID, false),
    ("level", pg_sys::TEXTOID, false),
    ("action", pg_sys::TEXTOID, false),
    ("rules", pg_sys::JSONBOID, false),
    ("event_time", pg_sys::TIMESTAMPTZOID, true),
    ("created_at", pg_sys::TIMESTAMPTZOID, false),
    ("xid", pg_sys::XID8OID, true),
    ("state", pg_sys::TEXTOID, false),
    ("state_changed_at", pg_sys::TIMESTAMPTZOID, true),
    ("state_changed_by", pg_sys::NAMEOID, true),
    ("note", pg_sys::TEXTOID, true),
    ("repeats", pg_sys::INT4OID, false),
    ("last_seen", pg_sys::TIMESTAMPTZOID, true),
    ("max_score", pg_sys::FLOAT8OID, true),
    ("fingerprint", pg_sys::TEXTOID, true),
    ("cooldown_from", pg_sys::TIMESTAMPTZOID, true),
    ("attempted_row", pg_sys::JSONBOID, true),
];
const ALERT_ID: usize = 0;
const EVENT_TIME: usize = 9;
/// The columns an alert's writer gives (relid through event_time); the rest take their defaults.
const GIVEN: [usize; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

thread_local! {
    /// Alerts this backend stored here, for tests that must tell this path from SPI's.
    static ROWS_WRITTEN: Cell<u64> = const { Cell::new(0) };
    /// Open alerts this backend found through the cooldown index (`AlertRows::open_alert`).
    static OPEN_FOUND: Cell<u64> = const { Cell::new(0) };
}

/// How many open alerts this backend has found through the cooldown index.
pub fn open_alerts_found() -> u64 {
    OPEN_FOUND.with(Cell::get)
}

/// `alerts_cooldown_idx`'s columns (relid, key, fingerprint, cooldown_from), 1-based.
const COOLDOWN_KEY: [i16; 4] = [2, 4, 20, 21];
const STATE: usize = 12;

/// How many alerts this backend has stored without the executor.
pub fn rows_written() -> u64 {
    ROWS_WRITTEN.with(Cell::get)
}

/// One alert, as the monitor has it. Texts are UTF-8 (the monitor's keys are Rust strings).
pub struct AlertRow<'a> {
    pub relid: pg_sys::Oid,
    pub table: &'a str,
    pub key: &'a str,
    pub row_pk: Option<&'a str>,
    pub score: f64,
    pub level: &'a str,
    pub action: &'a str,
    pub rules: &'a serde_json::Value,
    /// Microseconds since 2000-01-01 UTC.
    pub event_time: pg_sys::TimestampTz,
}

/// `cep.alerts`, open for one statement's alerts.
pub struct AlertRows {
    statement: Statement,
    table: Target,
    /// Defaults that may differ from row to row (volatile: the id's `nextval`).
    defaults: Vec<CompiledExpr>,
    /// The other defaults (the state, the repeat count, `now()`, the writing transaction's id),
    /// the same for every row of the statement: evaluated once, when the table is opened.
    fixed: Vec<(usize, Option<pg_sys::Datum>)>,
}

impl AlertRows {
    /// Opens `cep.alerts`, or `None` when the executor must write it.
    pub fn open() -> Option<AlertRows> {
        let oid = direct_insert::relation_in_cep(c"alerts").filter(|&oid| direct_insert::insertable(oid))?;
        let statement = Statement::new();
        // SAFETY: a relation open inside a transaction, closed by `close`, or by the transaction's
        // end if an error comes first.
        let opened = unsafe {
            Target::open(&statement, oid, true).and_then(|table| {
                let defaults = has_columns((*table.relation).rd_att, &COLUMNS).then(|| compiled_defaults(table.relation, &GIVEN)).flatten();
                match defaults {
                    Some(defaults) => Some((table, defaults)),
                    None => {
                        table.close();
                        None
                    }
                }
            })
        };
        match opened {
            Some((table, defaults)) => {
                let (defaults, fixed): (Vec<CompiledExpr>, Vec<CompiledExpr>) = defaults.into_iter().partition(|d| d.volatile);
                // SAFETY: compiled for no parameters and no input row; a value made here lives in
                // the current memory, the caller's, for the statement.
                let fixed = fixed.iter().map(|d| (d.column, unsafe { statement.evaluate(d.state) })).collect();
                Some(AlertRows { statement, table, defaults, fixed })
            }
            None => {
                statement.free();
                None
            }
        }
    }

    /// Stores one alert; returns its id and `event_time` as text (empty when it has none), as an
    /// INSERT ... RETURNING alert_id, event_time::text does.
    pub fn write(&mut self, alert: &AlertRow) -> (i64, String) {
        let (statement, table, defaults, fixed) = (&self.statement, &self.table, &self.defaults, &self.fixed);
        let written = statement.in_row_memory(|| {
            // Texts are copied into the per-row memory, together.
            let [table_name, key, row_pk, level, action] =
                direct_insert::text_datums([alert.table, alert.key, alert.row_pk.unwrap_or_default(), alert.level, alert.action].map(str::as_bytes));
            let event_time = pgrx::datum::TimestampWithTimeZone::try_from(alert.event_time).ok();
            let mut values: [Option<pg_sys::Datum>; 22] = [None; 22];
            values[1] = Some(pg_sys::Datum::from(alert.relid));
            values[2] = Some(table_name);
            values[3] = Some(key);
            values[4] = alert.row_pk.map(|_| row_pk);
            values[5] = alert.score.into_datum();
            values[6] = Some(level);
            values[7] = Some(action);
            values[8] = jsonb(alert.rules);
            values[EVENT_TIME] = event_time.and_then(|t| t.into_datum());
            for &(column, value) in fixed {
                values[column] = value;
            }
            for default in defaults {
                // SAFETY: compiled for no parameters and no input row.
                values[default.column] = unsafe { statement.evaluate(default.state) };
            }
            // SAFETY: one datum of each column's type, alive in this row's memory.
            unsafe { table.store(statement, &values, false) };
            let id = values[ALERT_ID].map_or(0, |id| id.value() as i64);
            (id, event_time.map(|t| t.to_string()).unwrap_or_default())
        });
        ROWS_WRITTEN.with(|n| n.set(n.get() + 1));
        written
    }

    /// The open alert (not resolved) of `relid`'s `key` for a cooldown window starting at
    /// `window`, of the rule set `fingerprint`, as this transaction or a committed one left it:
    /// found through `alerts_cooldown_idx` without the executor. A session meets each of the
    /// alerts other sessions opened once per window; the upsert that found them through SPI took
    /// about 4% of a storm's CPU under a cooldown. `None` when there is none, or when the
    /// index is not as pg_cep makes it.
    pub fn open_alert(&self, relid: pg_sys::Oid, key: &str, fingerprint: &str, window: pg_sys::TimestampTz) -> Option<i64> {
        // SAFETY: the target's open indexes; the key datums live in the row memory until the scan
        // ends, and the found row is read while its slot holds it.
        let found = self.statement.in_row_memory(|| unsafe {
            let index = self.table.index(|index| {
                let form = &*(*index).rd_index;
                let name = std::ffi::CStr::from_ptr((*(*index).rd_rel).relname.data.as_ptr());
                name == c"alerts_cooldown_idx"
                    && form.indisunique
                    && form.indnkeyatts as usize == COOLDOWN_KEY.len()
                    && COOLDOWN_KEY.iter().enumerate().all(|(i, &attnum)| *form.indkey.values.as_ptr().add(i) == attnum)
            })?;
            let text = |s: &str| direct_insert::text_datum(s.as_bytes());
            let key = [
                (pg_sys::F_OIDEQ, pg_sys::Datum::from(relid)),
                (pg_sys::F_TEXTEQ, text(key)),
                (pg_sys::F_TEXTEQ, text(fingerprint)),
                (pg_sys::F_TIMESTAMPTZ_EQ, pg_sys::Datum::from(window)),
            ];
            self.table
                .find(index, &key, |row| {
                    let value = |i: usize| crate::pg::tuple::slot_value(row, i + 1);
                    let resolved = value(STATE).is_some_and(|state| {
                        let state = pg_sys::text_to_cstring(state.cast_mut_ptr());
                        std::ffi::CStr::from_ptr(state) == c"resolved"
                    });
                    value(ALERT_ID).filter(|_| !resolved).map(|id| id.value() as i64)
                })
                .flatten()
        });
        if found.is_some() {
            OPEN_FOUND.with(|n| n.set(n.get() + 1));
        }
        found
    }

    /// Closes what `open` opened, and makes the alerts visible to the statement's next queries.
    pub fn close(self) {
        self.table.close();
        self.statement.free();
        direct_insert::rows_stored();
    }
}

/// `value` as a `jsonb` datum, built as `jsonb_in` builds it from the value's text (numbers
/// through `numeric_in`, keys sorted and made unique by Postgres) but without printing and lexing
/// that text (about 4% of a storm's CPU, printing and parsing every alert's evidence).
pub fn jsonb(value: &serde_json::Value) -> Option<pg_sys::Datum> {
    built(value).or_else(|| via_text(value))
}

/// `value` built as jsonb directly; `None` where only `jsonb_in` gives the answer: a scalar at
/// the top (which it wraps in a raw-scalar array) and a string holding a NUL (which it refuses).
///
/// The value is laid out as Postgres's in-memory tree (objects' keys in jsonb's order: shorter
/// first, then bytewise) and converted with one call. Pushing it item by item, as `jsonb_in`
/// does, cost about 30 calls into Postgres per alert and a sort of every object's keys.
pub fn built(value: &serde_json::Value) -> Option<pg_sys::Datum> {
    if !matches!(value, serde_json::Value::Array(_) | serde_json::Value::Object(_)) {
        return None;
    }
    let_go_of_numerics();
    let mut tree = Tree::default();
    let mut root = tree.value(value)?;
    // SAFETY: a complete tree of containers whose arrays (in `tree`) and strings (in `value`)
    // outlive the call; Postgres copies them into the jsonb it returns.
    Some(pg_sys::Datum::from(unsafe { pg_sys::JsonbValueToJsonb(&mut root) }))
}

/// The arrays of an in-memory jsonb tree: each container's pairs or elements, kept (and not
/// moved) until the tree is converted.
#[derive(Default)]
struct Tree {
    pairs: Vec<Box<[pg_sys::JsonbPair]>>,
    elements: Vec<Box<[pg_sys::JsonbValue]>>,
}

impl Tree {
    /// `value` as a tree node; `None` for a string holding a NUL.
    fn value(&mut self, value: &serde_json::Value) -> Option<pg_sys::JsonbValue> {
        use serde_json::Value;
        // SAFETY: an all-zero JsonbValue is a valid null scalar; container fields are set below.
        let mut node: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                // jsonb's key order (`lengthCompareJsonbStringValue`); the keys are unique.
                entries.sort_unstable_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
                let pairs = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, v))| Some(pg_sys::JsonbPair { key: string(k)?, value: self.value(v)?, order: i as u32 }))
                    .collect::<Option<Box<[_]>>>()?;
                node.type_ = pg_sys::jbvType::jbvObject;
                node.val.object = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_3 { nPairs: pairs.len() as i32, pairs: pairs.as_ptr().cast_mut() };
                self.pairs.push(pairs);
            }
            Value::Array(items) => {
                let elements = items.iter().map(|v| self.value(v)).collect::<Option<Box<[_]>>>()?;
                node.type_ = pg_sys::jbvType::jbvArray;
                node.val.array = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_2 {
                    nElems: elements.len() as i32,
                    elems: elements.as_ptr().cast_mut(),
                    rawScalar: false,
                };
                self.elements.push(elements);
            }
            scalar => node = jsonb_scalar(scalar)?,
        }
        Some(node)
    }
}

fn via_text(value: &serde_json::Value) -> Option<pg_sys::Datum> {
    // serde_json escapes NUL inside strings, so the text has none.
    let text = std::ffi::CString::new(value.to_string()).ok()?;
    // SAFETY: jsonb_in reads a NUL-terminated string that lives until the call returns.
    unsafe { pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }
}

/// A string as a jsonb scalar that points into `s`; `None` when it holds a NUL.
fn string(s: &str) -> Option<pg_sys::JsonbValue> {
    if s.contains('\0') {
        return None;
    }
    // SAFETY: an all-zero JsonbValue is a valid null scalar; its string fields are set below.
    let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    v.type_ = pg_sys::jbvType::jbvString;
    v.val.string.len = s.len() as i32;
    v.val.string.val = s.as_ptr() as *mut std::ffi::c_char;
    Some(v)
}

/// Numerics read from their text, kept for the backend: an alert's evidence repeats the same
/// few numbers (rule ids, versions, scores, limits), and each `numeric_in` is a call into Postgres.
const NUMERICS_KEPT: usize = 1024;

struct Numerics {
    memory: pg_sys::MemoryContext,
    read: std::collections::HashMap<String, pg_sys::Datum>,
}

thread_local! {
    static NUMERICS: std::cell::RefCell<Option<Numerics>> = const { std::cell::RefCell::new(None) };
}

/// `text` read by `numeric_in` (as `jsonb_in` reads a number), from the backend's numerics when
/// read before. Once `NUMERICS_KEPT` are kept, others are read into the current memory until
/// `let_go_of_numerics` (before a tree is built: none of its nodes points to them then).
fn numeric(text: &str) -> Option<pg_sys::Datum> {
    NUMERICS.with_borrow_mut(|kept| {
        // SAFETY: a memory context of the backend's own, under TopMemoryContext.
        let kept = kept.get_or_insert_with(|| unsafe {
            Numerics {
                memory: pg_sys::AllocSetContextCreateInternal(
                    pg_sys::TopMemoryContext,
                    c"pg_cep numerics".as_ptr(),
                    pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                    pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                    pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
                ),
                read: std::collections::HashMap::new(),
            }
        });
        if let Some(&numeric) = kept.read.get(text) {
            return Some(numeric);
        }
        let c_text = std::ffi::CString::new(text).ok()?;
        // SAFETY: numeric_in reads a NUL-terminated string alive for the call (typmod -1), and
        // returns a varlena; it is copied into the kept memory, whole.
        let numeric = unsafe {
            let read = pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::numeric_in,
                &[Some(c_text.as_ptr().into()), Some(pg_sys::Datum::from(pg_sys::InvalidOid)), Some(pg_sys::Datum::from(-1i32))],
            )?;
            if kept.read.len() >= NUMERICS_KEPT {
                return Some(read);
            }
            let size = pgrx::varlena::varsize_any(read.cast_mut_ptr());
            let copy = pg_sys::MemoryContextAlloc(kept.memory, size);
            std::ptr::copy_nonoverlapping(read.cast_mut_ptr::<u8>(), copy as *mut u8, size);
            pg_sys::Datum::from(copy)
        };
        kept.read.insert(text.to_owned(), numeric);
        Some(numeric)
    })
}

fn let_go_of_numerics() {
    NUMERICS.with_borrow_mut(|kept| {
        if let Some(kept) = kept.as_mut().filter(|k| k.read.len() >= NUMERICS_KEPT) {
            kept.read.clear();
            // SAFETY: nothing points into the context: the map that did is empty, and no tree is
            // being built.
            unsafe { pg_sys::MemoryContextReset(kept.memory) };
        }
    })
}

/// A scalar (not an array or object) as jsonb has it: numbers read by `numeric_in`, as
/// `jsonb_in` reads them from their text.
fn jsonb_scalar(value: &serde_json::Value) -> Option<pg_sys::JsonbValue> {
    use serde_json::Value;
    // SAFETY: an all-zero JsonbValue is a valid null scalar.
    let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    match value {
        Value::String(s) => return string(s),
        Value::Bool(b) => {
            v.type_ = pg_sys::jbvType::jbvBool;
            v.val.boolean = *b;
        }
        Value::Number(n) => {
            v.type_ = pg_sys::jbvType::jbvNumeric;
            v.val.numeric = numeric(&n.to_string())?.cast_mut_ptr();
        }
        _ => v.type_ = pg_sys::jbvType::jbvNull,
    }
    Some(v)
}
