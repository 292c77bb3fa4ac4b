//! Change capture in Postgres: a statement's rows logged in `cep.change_log` (stored directly by
//! `pg::change_log`, or by one set-based INSERT through SPI), the anomaly checks for that
//! statement, and one notification per transaction and channel, sent once the transaction has
//! committed (and never when it rolls back; see `pg::notifier`).

use std::cell::RefCell;
use std::rc::Rc;

use pgrx::pg_sys::BuiltinOid::{BOOLOID, INT4OID, INT8OID, INTERVALOID, OIDOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgOid;

use crate::engine::capture::{crosses, event_type, Kind, Op};
use crate::engine::payload;
use crate::error::CepResult;
use crate::pg::change_log::{ChangeLog, LogRow};
use crate::pg::tuple::for_each_transition_row;
use crate::pg::xact::{xact_local, BySubxact, XactBuffer};
use crate::pg::{notifier, spi};

/// A captured table's settings, as `cep.capture` stored them.
pub struct Capture {
    pub relid: pg_sys::Oid,
    pub name: String,
    pub kind: Option<Kind>,
    pub channel: String,
    pub changed_columns_only: bool,
    pub key_column: Option<String>,
    pub from_column: Option<String>,
    pub to_column: Option<String>,
    pub pk_columns: Vec<String>,
    pub high_frequency: Option<(i32, pgrx::datum::Interval)>,
    pub mass_deletion: Option<(i32, pgrx::datum::Interval)>,
    pub anomaly_channel: String,
    /// The INSERT for each kind of statement, prepared on this table's transition tables and
    /// kept with these settings: the cache drops both when the table's definition changes.
    plans: RefCell<Vec<(Op, Rc<pgrx::spi::OwnedPreparedStatement>)>>,
}

/// Reads a table's capture settings and its primary key columns; `None` if not captured.
/// The capture settings of `relid`, if it is captured, with its prepared statements.
pub fn cached(relid: pg_sys::Oid) -> CepResult<Option<Rc<Capture>>> {
    thread_local! {
        static CAPTURES: crate::pg::cache::PerTable<Option<Rc<Capture>>> = Default::default();
    }
    CAPTURES.with(|c| c.get_or_load(relid, || Ok(load(relid)?.map(Rc::new))))
}

fn load(relid: pg_sys::Oid) -> CepResult<Option<Capture>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1),
                    kind, channel, changed_columns_only, key_column::text, from_column::text, to_column::text,
                    high_frequency, high_frequency_window, mass_deletion, mass_deletion_window, anomaly_channel,
                    ARRAY(SELECT a.attname::text FROM pg_index i
                          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, o)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                          WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.o)
             FROM cep.captures WHERE relid = $1",
            None,
            &[relid.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        let threshold = |n: usize| -> CepResult<Option<(i32, pgrx::datum::Interval)>> {
            Ok(match (row.get::<i32>(n)?, row.get::<pgrx::datum::Interval>(n + 1)?) {
                (Some(limit), Some(window)) => Some((limit, window)),
                _ => None,
            })
        };
        Ok(Some(Capture {
            relid,
            name: row.get(1)?.unwrap_or_default(),
            kind: Kind::parse(row.get::<String>(2)?.as_deref()).unwrap_or(None),
            channel: row.get(3)?.unwrap_or_default(),
            changed_columns_only: row.get(4)?.unwrap_or(true),
            key_column: row.get(5)?,
            from_column: row.get(6)?,
            to_column: row.get(7)?,
            high_frequency: threshold(8)?,
            mass_deletion: threshold(10)?,
            anomaly_channel: row.get(12)?.unwrap_or_default(),
            pk_columns: row.get(13)?.unwrap_or_default(),
            plans: RefCell::new(Vec::new()),
        }))
    })
}

/// Rows as jsonb, each with its primary key as text (columns joined by commas), read from the
/// trigger's transition table `rows`. Generic over the table: nothing here names its columns,
/// so a renamed or dropped column cannot make the user's statement fail.
/// The key's columns are the elements of parameter `$4`, `key_columns` of them: the statement
/// reads them by position, so it stays a plain projection (no subquery per row).
fn keyed(rows: &str, key_columns: usize) -> String {
    let pk = match key_columns {
        0 => "NULL::text".to_string(),
        n => format!("concat_ws(',', {})", (1..=n).map(|i| format!("r ->> ($4::text[])[{i}]")).collect::<Vec<_>>().join(", ")),
    };
    // OFFSET 0 keeps the inner query apart: flattened, to_jsonb would run once per use of `r`.
    format!("SELECT r, {pk} AS pk FROM (SELECT to_jsonb(x) AS r FROM {rows} x OFFSET 0) t")
}

/// `bounded`: keys and endpoints go through `cep.stored_key` (0.3.0's objects have it), as
/// [`stored`] bounds them on the direct path.
fn insert_sql(op: Op, key_columns: usize, bounded: bool) -> String {
    let rows_of = |rows| keyed(rows, key_columns);
    let columns = "INSERT INTO cep.change_log (relid, table_name, op, event_type, pk, key, from_id, to_id, new_row, old_row)";
    let fields = if bounded {
        "$1, $2, $3::\"char\", $5, {pk}, cep.stored_key({r} ->> $6), cep.stored_key({r} ->> $7), cep.stored_key({r} ->> $8)"
    } else {
        "$1, $2, $3::\"char\", $5, {pk}, {r} ->> $6, {r} ->> $7, {r} ->> $8"
    };
    let body = match op {
        Op::Insert => format!("{columns} SELECT {}, n.r, NULL FROM ({}) n", fields.replace("{pk}", "n.pk").replace("{r}", "n.r"), rows_of("cep_new")),
        Op::Delete => format!("{columns} SELECT {}, NULL, o.r FROM ({}) o", fields.replace("{pk}", "o.pk").replace("{r}", "o.r"), rows_of("cep_old")),
        // Old and new rows are paired by primary key; with `changed_columns_only`, each keeps only
        // the columns whose values differ.
        Op::Update => format!(
            "{columns} SELECT {},
                 CASE WHEN $9 AND o.r IS NOT NULL AND n.r IS NOT NULL
                      THEN (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}') FROM jsonb_each(n.r) e WHERE o.r -> e.key IS DISTINCT FROM e.value)
                      ELSE n.r END,
                 CASE WHEN $9 AND o.r IS NOT NULL AND n.r IS NOT NULL
                      THEN (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}') FROM jsonb_each(o.r) e WHERE n.r -> e.key IS DISTINCT FROM e.value)
                      ELSE o.r END
             FROM ({}) n FULL JOIN ({}) o ON n.pk = o.pk",
            fields.replace("{pk}", "coalesce(n.pk, o.pk)").replace("{r}", "coalesce(n.r, o.r)"),
            rows_of("cep_new"),
            rows_of("cep_old")
        ),
        // The other parameters are typed at PREPARE; a statement need not use them all.
        Op::Truncate => format!("{columns} VALUES ($1, $2, $3::\"char\", $5, NULL, NULL, NULL, NULL, NULL, NULL)"),
    };
    format!("{body} RETURNING change_id, key")
}

/// The statement's changes as logged: first and last id, how many, and the keys touched, each
/// with its number of changes.
pub struct Logged {
    pub first: i64,
    pub last: i64,
    pub count: i64,
    pub keys: Vec<(String, i64)>,
}

impl Logged {
    fn collect(changes: impl IntoIterator<Item = (i64, Option<String>)>) -> Logged {
        let mut logged = Logged { first: i64::MAX, last: 0, count: 0, keys: Vec::new() };
        let mut keys: Vec<String> = Vec::new();
        for (id, key) in changes {
            (logged.first, logged.last, logged.count) = (logged.first.min(id), logged.last.max(id), logged.count + 1);
            keys.extend(key);
        }
        keys.sort_unstable();
        for key in keys {
            match logged.keys.last_mut() {
                Some((last, n)) if *last == key => *n += 1,
                _ => logged.keys.push((key, 1)),
            }
        }
        if logged.count == 0 {
            logged.first = 0;
        }
        logged
    }
}

/// Logs one statement's changes: by `change_log` whenever it can (see there why), or else
/// through SPI with one set-based INSERT, which does what the log's changed shape asks for.
///
/// # Safety
/// `trigger` must be the running statement trigger's own data.
pub unsafe fn log_statement(client: &mut SpiClient<'_>, capture: &Capture, op: Op, trigger: *const pg_sys::TriggerData) -> CepResult<Logged> {
    // A trigger made by hand without the transition table is left to SPI, whose statement names
    // it and fails clearly.
    let rows_at_hand = match op {
        // SAFETY: this trigger call's own data (the caller's promise).
        Op::Insert => unsafe { !(*trigger).tg_newtable.is_null() },
        // SAFETY: this trigger call's own data (the caller's promise).
        Op::Delete => unsafe { !(*trigger).tg_oldtable.is_null() },
        // A big UPDATE is paired by SQL, whose hash join spills to disk; here old rows stay in memory.
        // SAFETY: this trigger call's own data; the old rows' tuplestore is counted only when it is there.
        Op::Update => unsafe {
            let (new, old) = ((*trigger).tg_newtable, (*trigger).tg_oldtable);
            !new.is_null() && !old.is_null() && pg_sys::tuplestore_tuple_count(old) <= DIRECT_UPDATE_ROWS
        },
        Op::Truncate => true,
    };
    if rows_at_hand {
        if let Some(log) = ChangeLog::open() {
            // SAFETY: this trigger call's own data, and the log just opened.
            return unsafe { log_directly(log, capture, op, trigger) };
        }
    }
    log_through_spi(client, capture, op)
}

/// The most rows an UPDATE may change and still be logged without the executor.
const DIRECT_UPDATE_ROWS: i64 = 10_000;

/// `to_jsonb` as the SQL function, for rows of one type: the function reads its argument's type
/// from the call expression, so it gets one.
struct ToJsonb {
    call: pg_sys::FmgrInfo,
}

impl ToJsonb {
    unsafe fn new(row_type: pg_sys::Oid) -> ToJsonb {
        // SAFETY: inside a transaction: to_jsonb is a built-in function, and the caller passes a row type that exists;
        // the call's expression is built in the current memory context.
        unsafe {
            let oid = crate::pg::direct_insert::builtin(c"to_jsonb");
            let mut call: pg_sys::FmgrInfo = std::mem::zeroed();
            pg_sys::fmgr_info(oid, &mut call);
            let argument = pg_sys::makeNullConst(row_type, -1, pg_sys::InvalidOid);
            let arguments = pg_sys::lappend(std::ptr::null_mut(), argument.cast());
            call.fn_expr = pg_sys::makeFuncExpr(
                oid,
                pg_sys::JSONBOID,
                arguments,
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
            )
            .cast();
            ToJsonb { call }
        }
    }

    unsafe fn of(&mut self, row: pg_sys::Datum) -> pg_sys::Datum {
        // SAFETY: `call` is to_jsonb set up by `new` for this row type; the caller passes a row of that type.
        unsafe { pg_sys::FunctionCall1Coll(&mut self.call, pg_sys::InvalidOid, row) }
    }
}

/// `row ->> column` (a `text` datum), as the SPI statement reads the key columns: bytes in the
/// database's encoding.
unsafe fn field(row: pg_sys::Datum, column: pg_sys::Datum) -> Option<Vec<u8>> {
    // SAFETY: the caller passes a jsonb row and a text column name: the argument types of jsonb_object_field_text,
    // whose NULL result comes back as `None`.
    unsafe {
        let value = pgrx::fcinfo::direct_function_call_as_datum(|fcinfo| pg_sys::jsonb_object_field_text(fcinfo), &[Some(row), Some(column)])?;
        Some(pgrx::varlena::varlena_to_byte_slice(value.cast_mut_ptr()).to_vec())
    }
}

/// A key or endpoint as the log's indexes need it (`pg::keys`). Bytes that are not UTF-8 (a
/// database in another encoding) are left as they are.
fn stored(bytes: Vec<u8>) -> Vec<u8> {
    match String::from_utf8(bytes) {
        Ok(text) => crate::pg::keys::into_stored(text).into_bytes(),
        Err(e) => e.into_bytes(),
    }
}

/// A row of a transition table as the log keeps it: the row as jsonb, and its primary key
/// (the key's columns joined by commas, NULLs left out: concat_ws, as in SQL).
struct ChangedRow {
    row: pg_sys::Datum,
    pk: Option<Vec<u8>>,
}

/// The rows of one of the trigger's transition tables (see `tuple::for_each_transition_row`).
/// Each row is made in `memory`, reset before the next: what `each` keeps it copies. The first
/// error stops the writing; the rows after it are only skipped.
unsafe fn each_row(
    store: *mut pg_sys::Tuplestorestate,
    relation: pg_sys::Relation,
    capture: &Capture,
    memory: pg_sys::MemoryContext,
    mut each: impl FnMut(ChangedRow) -> CepResult<()>,
) -> CepResult<()> {
    // SAFETY: the caller passes one of this trigger's transition tables, its open relation, and a memory context of its own
    // that may be reset for each row.
    unsafe {
        let mut to_jsonb = ToJsonb::new((*(*relation).rd_rel).reltype);
        let pk_columns: Vec<pg_sys::Datum> = capture.pk_columns.iter().map(|c| text(c)).collect();
        let mut result = Ok(());
        for_each_transition_row(store, (*relation).rd_att, |t| {
            if result.is_err() {
                return;
            }
            pg_sys::MemoryContextReset(memory);
            let row = in_context(memory, || {
                let row = to_jsonb.of(t.as_datum());
                let pk = (!pk_columns.is_empty()).then(|| pk_columns.iter().filter_map(|&c| field(row, c)).collect::<Vec<_>>().join(&b','));
                ChangedRow { row, pk }
            });
            result = each(row);
        });
        result
    }
}

/// A column name as a `text` datum, for `field`.
fn text(name: &str) -> pg_sys::Datum {
    crate::pg::direct_insert::text_datum(name.as_bytes())
}

/// A copy of a (plain, untoasted) varlena datum in `memory`.
unsafe fn copy_into(memory: pg_sys::MemoryContext, datum: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: the caller passes a plain (untoasted) varlena: `size` bytes are read from it into a new allocation of that size.
    unsafe {
        let source = datum.cast_mut_ptr::<pg_sys::varlena>();
        let size = pgrx::varlena::varsize_any(source);
        let copy = pg_sys::MemoryContextAlloc(memory, size);
        std::ptr::copy_nonoverlapping(source as *const u8, copy as *mut u8, size);
        pg_sys::Datum::from(copy)
    }
}

/// Runs `f` with `memory` as the current memory context.
unsafe fn in_context<T>(memory: pg_sys::MemoryContext, f: impl FnOnce() -> T) -> T {
    // SAFETY: the caller passes a live memory context; the previous one is current again before returning.
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(memory);
        let result = f();
        pg_sys::MemoryContextSwitchTo(old);
        result
    }
}

/// `row` without the columns whose values `other` has too (`IS DISTINCT FROM` on their jsonb),
/// as the SQL's `jsonb_object_agg` over `jsonb_each` keeps for `changed_columns_only`.
unsafe fn changed_columns(row: pg_sys::Datum, other: pg_sys::Datum, columns: &[pg_sys::Datum]) -> pg_sys::Datum {
    // SAFETY: the caller passes jsonb rows and text column names; each function is called with its own argument types.
    unsafe {
        let value =
            |r: pg_sys::Datum, c: pg_sys::Datum| pgrx::fcinfo::direct_function_call_as_datum(|f| pg_sys::jsonb_object_field(f), &[Some(r), Some(c)]);
        let mut same: Vec<pg_sys::Datum> = columns
            .iter()
            .copied()
            .filter(|&c| match (value(row, c), value(other, c)) {
                (None, None) => true,
                (Some(a), Some(b)) => pgrx::fcinfo::direct_function_call::<bool>(|f| pg_sys::jsonb_eq(f), &[Some(a), Some(b)]).unwrap_or(false),
                _ => false,
            })
            .collect();
        let same =
            pg_sys::construct_array(same.as_mut_ptr(), same.len() as i32, pg_sys::TEXTOID, -1, false, pg_sys::TYPALIGN_INT as std::ffi::c_char);
        pgrx::fcinfo::direct_function_call_as_datum(|f| pg_sys::jsonb_delete_array(f), &[Some(row), Some(pg_sys::Datum::from(same))]).unwrap_or(row)
    }
}

/// Writes the rows of the statement's transition tables (none for TRUNCATE) to the open log, with
/// the same values `log_through_spi`'s statement computes. An UPDATE's old and new rows are
/// paired by primary key, as the SQL's FULL JOIN pairs them; rows without a partner (no primary
/// key, or a changed one) are logged on their own.
unsafe fn log_directly(mut log: ChangeLog, capture: &Capture, op: Op, trigger: *const pg_sys::TriggerData) -> CepResult<Logged> {
    let statement = LogRow {
        relid: capture.relid,
        table: capture.name.as_bytes(),
        op,
        event_type: event_type(capture.kind, op).as_bytes(),
        pk: None,
        key: None,
        from_id: None,
        to_id: None,
        new_row: None,
        old_row: None,
    };
    let mut changes: Vec<(i64, Option<String>)> = Vec::new();
    // Made once for the statement, where they outlive every row's memory.
    let named = [&capture.key_column, &capture.from_column, &capture.to_column].map(|c| c.as_deref().map(text));
    // One change; key and endpoints are read from `whole`, the whole new row, or else the old one
    // (`new_row` and `old_row` may hold only the changed columns).
    let mut write = |log: &mut ChangeLog,
                     pk: Option<&[u8]>,
                     whole: Option<pg_sys::Datum>,
                     new_row: Option<pg_sys::Datum>,
                     old_row: Option<pg_sys::Datum>|
     -> CepResult<()> {
        // SAFETY: jsonb datums of this statement's rows.
        let [key, from_id, to_id] = named.map(|c| c.zip(whole).and_then(|(c, r)| unsafe { field(r, c) }).map(stored));
        let change = LogRow { pk, key: key.as_deref(), from_id: from_id.as_deref(), to_id: to_id.as_deref(), new_row, old_row, ..statement };
        // Keys are counted by their text; one that is not UTF-8 is counted by a lossy copy.
        changes.push((log.write(&change)?, key.map(|k| String::from_utf8_lossy(&k).into_owned())));
        Ok(())
    };
    if op == Op::Truncate {
        write(&mut log, None, None, None, None)?;
        log.close();
        return Ok(Logged::collect(changes));
    }
    // SAFETY: the transition tables of this trigger call; rows are made in `per_row`, reset
    // between rows, except an UPDATE's old rows, kept in `kept` until they are paired.
    unsafe {
        let relation = (*trigger).tg_relation;
        let context = |name: &std::ffi::CStr| {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CurrentMemoryContext,
                name.as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        let (per_row, kept) = (context(c"pg_cep change row"), context(c"pg_cep old rows"));
        match op {
            Op::Insert => each_row((*trigger).tg_newtable, relation, capture, per_row, |r| {
                in_context(per_row, || write(&mut log, r.pk.as_deref(), Some(r.row), Some(r.row), None))
            })?,
            Op::Delete => each_row((*trigger).tg_oldtable, relation, capture, per_row, |r| {
                in_context(per_row, || write(&mut log, r.pk.as_deref(), Some(r.row), None, Some(r.row)))
            })?,
            _ => {
                // Old rows are kept (their jsonb copied out of the reader's memory) to be paired.
                let mut old_rows: Vec<ChangedRow> = Vec::new();
                each_row((*trigger).tg_oldtable, relation, capture, per_row, |r| {
                    old_rows.push(ChangedRow { row: copy_into(kept, r.row), pk: r.pk });
                    Ok(())
                })?;
                // Every old row with the new row's key, as the FULL JOIN on the key text pairs them
                // (a key text can repeat: inherited tables, commas inside key columns).
                let by_pk = index_by_pk(&old_rows);
                let mut paired = vec![false; old_rows.len()];
                let columns = in_context(kept, || column_names(relation));
                each_row((*trigger).tg_newtable, relation, capture, per_row, |n| {
                    let partners = n.pk.as_deref().and_then(|pk| by_pk.get(pk)).map_or(&[][..], |v| v.as_slice());
                    if partners.is_empty() {
                        return in_context(per_row, || write(&mut log, n.pk.as_deref(), Some(n.row), Some(n.row), None));
                    }
                    for &i in partners {
                        paired[i] = true;
                        let o = &old_rows[i];
                        in_context(per_row, || {
                            let (new_row, old_row) = if capture.changed_columns_only {
                                (changed_columns(n.row, o.row, &columns), changed_columns(o.row, n.row, &columns))
                            } else {
                                (n.row, o.row)
                            };
                            write(&mut log, n.pk.as_deref(), Some(n.row), Some(new_row), Some(old_row))
                        })?;
                    }
                    Ok(())
                })?;
                for (o, _) in old_rows.iter().zip(&paired).filter(|(_, paired)| !**paired) {
                    pg_sys::MemoryContextReset(per_row);
                    in_context(per_row, || write(&mut log, o.pk.as_deref(), Some(o.row), None, Some(o.row)))?;
                }
            }
        }
        pg_sys::MemoryContextDelete(per_row);
        pg_sys::MemoryContextDelete(kept);
    }
    log.close();
    Ok(Logged::collect(changes))
}

/// Old rows by their key text; a key text can repeat (inherited tables, commas inside key columns).
fn index_by_pk(old_rows: &[ChangedRow]) -> std::collections::HashMap<&[u8], Vec<usize>> {
    let mut by_pk: std::collections::HashMap<&[u8], Vec<usize>> = std::collections::HashMap::new();
    for (i, r) in old_rows.iter().enumerate() {
        if let Some(pk) = r.pk.as_deref() {
            by_pk.entry(pk).or_default().push(i);
        }
    }
    by_pk
}

/// The relation's live column names as text datums, in the current memory context.
///
/// # Safety
/// `relation` is an open relation.
unsafe fn column_names(relation: pg_sys::Relation) -> Vec<pg_sys::Datum> {
    // SAFETY: the caller's open relation; its tuple descriptor lives as long as it is open.
    unsafe {
        let desc = (*relation).rd_att;
        (0..(*desc).natts as usize)
            .map(|i| &*super::version::tuple_desc_attr(desc, i))
            .filter(|a| !a.attisdropped)
            .map(|a| pg_sys::Datum::from(pg_sys::cstring_to_text(a.attname.data.as_ptr())))
            .collect()
    }
}

/// Logs one statement's changes in one INSERT. The transition tables must be registered with
/// SPI (`SPI_register_trigger_data`) on this connection.
fn log_through_spi(client: &mut SpiClient<'_>, capture: &Capture, op: Op) -> CepResult<Logged> {
    let cached = capture.plans.borrow().iter().find(|(o, _)| *o == op).map(|(_, plan)| plan.clone());
    let plan = match cached {
        Some(plan) => plan,
        None => {
            let types = [OIDOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID].map(PgOid::from);
            let plan = Rc::new(client.prepare(insert_sql(op, capture.pk_columns.len(), crate::pg::cache::schema_0_3()).as_str(), &types)?.keep());
            capture.plans.borrow_mut().push((op, plan.clone()));
            plan
        }
    };
    let kind_event = event_type(capture.kind, op);
    let rows = client.update(
        &*plan,
        None,
        &[
            capture.relid.into(),
            capture.name.as_str().into(),
            op.code().into(),
            capture.pk_columns.clone().into(),
            kind_event.into(),
            capture.key_column.as_deref().into(),
            capture.from_column.as_deref().into(),
            capture.to_column.as_deref().into(),
            capture.changed_columns_only.into(),
        ],
    )?;
    let mut changes = Vec::new();
    for row in rows {
        changes.push((row.get::<i64>(1)?.unwrap_or(0), row.get::<String>(2)?));
    }
    Ok(Logged::collect(changes))
}

/// Changes of the table (or of one key) in the window before this statement, counted up to
/// `limit + 1` only: enough to tell whether this statement crosses the limit. When the window
/// is already past the limit, also until when it stays past it for sure: the `limit + 1`-th
/// latest change leaves the window then.
const COUNT_BEFORE: &str = "SELECT count(*), (min(changed_at) + $2)::timestamptz FROM (
     SELECT changed_at FROM cep.change_log
     WHERE relid = $1 AND changed_at > $7 - $2 AND change_id < $3
       AND ($4::text IS NULL OR key = $4) AND (NOT $5 OR op = 'D')
     ORDER BY changed_at DESC
     LIMIT $6 + 1) s";
const INSERT_ALERT: &str = "INSERT INTO cep.alerts (relid, table_name, key, score, level, action, rules, event_time)
     VALUES ($1, $2, coalesce($3, $2), 1.0, 'high', 'alert', $4, now()) RETURNING alert_id";

/// Seed 000's two anomalies, checked once for the whole statement (and once per key touched
/// when the capture has a key column): high-frequency operations and mass deletion.
pub fn check_anomalies(client: &mut SpiClient<'_>, capture: &Capture, op: Op, logged: &Logged) -> CepResult<()> {
    if logged.count == 0 {
        return Ok(());
    }
    let checks =
        [("high_frequency_operations", capture.high_frequency, false), ("mass_deletion", capture.mass_deletion.filter(|_| op == Op::Delete), true)];
    let now = crate::pg::time::now();
    let scopes: Vec<(Option<&str>, i64)> =
        if capture.key_column.is_some() { logged.keys.iter().map(|(k, n)| (Some(k.as_str()), *n)).collect() } else { vec![(None, logged.count)] };
    for (anomaly, setting, deletes_only) in checks {
        let Some((limit, window)) = setting else { continue };
        for &(key, added) in &scopes {
            let scope = (capture.relid.to_u32(), key.map(str::to_string), anomaly);
            if HOT_UNTIL.with(|h| h.borrow().get(&scope).is_some_and(|until| now < *until)) {
                // Still past the limit from an earlier count: this statement cannot cross it.
                continue;
            }
            let before_plan = spi::kept(COUNT_BEFORE, &[OIDOID, INTERVALOID, INT8OID, TEXTOID, BOOLOID, INT4OID, TIMESTAMPTZOID].map(PgOid::from))?;
            let (before, hot_until): (Option<i64>, Option<pgrx::datum::TimestampWithTimeZone>) = client
                .select(
                    &*before_plan,
                    None,
                    &[
                        capture.relid.into(),
                        window.into(),
                        logged.first.into(),
                        key.into(),
                        deletes_only.into(),
                        limit.into(),
                        crate::pg::time::timestamptz(now).into(),
                    ],
                )?
                .first()
                .get_two()?;
            let before = before.unwrap_or(0);
            if before > limit as i64 {
                if let Some(until) = hot_until {
                    HOT_UNTIL.with(|h| {
                        let mut h = h.borrow_mut();
                        // Bounded: a key-scoped capture over many keys must not grow it forever.
                        if h.len() > 10_000 {
                            h.clear();
                        }
                        h.insert(scope, pg_sys::TimestampTz::from(until));
                    });
                }
            }
            if !crosses(before, added, limit as i64) {
                continue;
            }
            let window_text: String = client.select("SELECT $1::interval::text", None, &[window.into()])?.first().get_one()?.unwrap_or_default();
            let evidence = serde_json::json!([{
                "anomaly": anomaly, "count": before + added, "threshold": limit, "window": window_text,
                "first_change_id": logged.first, "last_change_id": logged.last,
                // SAFETY: the transaction has an id: it just wrote to cep.change_log.
                "correlation_id": unsafe { pg_sys::GetTopFullTransactionId() }.value.to_string(),
            }]);
            let insert = spi::kept(INSERT_ALERT, &[OIDOID, TEXTOID, TEXTOID, pg_sys::BuiltinOid::JSONBOID].map(PgOid::from))?;
            let alert_id: i64 = client
                .update(&*insert, None, &[capture.relid.into(), capture.name.as_str().into(), key.into(), pgrx::JsonB(evidence).into()])?
                .first()
                .get_one()?
                .unwrap_or(0);
            let count = before + added;
            notifier::notify_at_commit(
                &capture.anomaly_channel,
                payload::anomaly(alert_id, &capture.name, key, anomaly, count, limit as i64, &window_text, payload::MAX_PAYLOAD_BYTES),
            );
        }
    }
    Ok(())
}

/// Changes waiting for their transaction to commit (tagged with the subtransaction that made
/// them, so that a rolled-back savepoint takes its changes out of the notification).
struct Pending {
    channel: String,
    table: String,
    first: i64,
    last: i64,
    count: i64,
}

thread_local! {
    /// Per table (and key) and anomaly: until when its window is known to hold more than the
    /// limit, so the statements of a busy table skip the count. Rows only leave a window as time
    /// passes, so the bound stays true whatever other sessions do.
    static HOT_UNTIL: RefCell<std::collections::HashMap<(u32, Option<String>, &'static str), pg_sys::TimestampTz>> = RefCell::new(std::collections::HashMap::new());
}

xact_local! {
    static PENDING: BySubxact<Pending> = BySubxact::new();
}

pub fn remember(capture: &Capture, logged: &Logged) {
    if logged.count == 0 {
        return;
    }
    PENDING.with_mut(|p| {
        p.push(Pending { channel: capture.channel.clone(), table: capture.name.clone(), first: logged.first, last: logged.last, count: logged.count })
    });
}

/// This transaction's captured changes, notified once it commits (or kept for COMMIT PREPARED).
pub struct PendingNotifications;

impl XactBuffer for PendingNotifications {
    fn pre_commit(&self) {
        hand_to_notifier();
    }
    fn commit(&self) {
        PENDING.with_mut(|p| p.clear());
    }
    fn abort(&self) {
        PENDING.with_mut(|p| p.clear());
    }
    fn pre_prepare(&self) {
        hand_to_notifier();
    }
    fn prepare(&self) {
        PENDING.with_mut(|p| p.clear());
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        PENDING.with_mut(|p| p.released(mine, parent));
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        PENDING.with_mut(|p| p.rolled_back(mine));
    }
}

/// One notification per channel: the notifier, whose part of the callback comes next, sends them
/// at commit or keeps them for COMMIT PREPARED.
fn hand_to_notifier() {
    let pending = PENDING.with_mut(|p| p.take());
    if pending.is_empty() {
        return;
    }
    // SAFETY: the transaction has an id, since it wrote to cep.change_log.
    let xid = unsafe { pg_sys::GetTopFullTransactionIdIfAny() }.value;
    let mut channels: Vec<&str> = pending.iter().map(|p| p.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    for channel in channels {
        let mine: Vec<&Pending> = pending.iter().filter(|p| p.channel == channel).collect();
        let first = mine.iter().map(|p| p.first).min().unwrap_or(0);
        let last = mine.iter().map(|p| p.last).max().unwrap_or(0);
        let count = mine.iter().map(|p| p.count).sum();
        let mut tables: Vec<String> = mine.iter().map(|p| p.table.clone()).collect();
        tables.sort();
        tables.dedup();
        notifier::notify_at_commit(channel, payload::changes(xid, first, last, count, &tables, payload::MAX_PAYLOAD_BYTES));
    }
}
