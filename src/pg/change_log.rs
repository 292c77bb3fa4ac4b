//! `cep.change_log` rows stored straight into their partition, without the executor.
//!
//! Through SPI, each captured statement paid for a whole executor around its log rows: partition
//! routing set up, the log's indexes opened, projections built over the transition table, then
//! all of it torn down. On a single-row INSERT that was about a third of the writer's time, more
//! than the log row itself. Here a row is stored as the executor stores it: the parent's column
//! defaults (`change_id`, `changed_at`, `correlation_id`), routed by `changed_at` through the
//! parent's partition bounds, a heap insert, then every index entry (unique checks and partial
//! indexes' predicates included).
//!
//! It only knows the log as pg_cep makes it. `ChangeLog::open` returns `None` whenever the log
//! differs in a way the executor would act on (columns, triggers, rules, row security, check
//! constraints, defaults that call functions other than Postgres's own, a partition that is not
//! a plain table), the user may not insert into it and read what the SPI statement returns, or a
//! permission hook is installed. The caller then writes through SPI, which does all of that, or
//! raises the error it raises.

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::ptr;

use pgrx::pg_sys;

use crate::engine::capture::Op;
use crate::error::{CepError, CepResult};

/// The log's columns in order, as `sql/bootstrap.sql` makes them, and whether a row left NULL
/// there is acceptable (the columns pg_cep may leave empty).
const COLUMNS: [(&str, pg_sys::Oid, bool); 13] = [
    ("change_id", pg_sys::INT8OID, false),
    ("changed_at", pg_sys::TIMESTAMPTZOID, false),
    ("relid", pg_sys::OIDOID, false),
    ("table_name", pg_sys::TEXTOID, false),
    ("op", pg_sys::CHAROID, false),
    ("event_type", pg_sys::TEXTOID, false),
    ("pk", pg_sys::TEXTOID, true),
    ("key", pg_sys::TEXTOID, true),
    ("from_id", pg_sys::TEXTOID, true),
    ("to_id", pg_sys::TEXTOID, true),
    ("new_row", pg_sys::JSONBOID, true),
    ("old_row", pg_sys::JSONBOID, true),
    ("correlation_id", pg_sys::XID8OID, false),
];
/// Columns filled by their defaults, as an INSERT that leaves them out does (0-based).
const CHANGE_ID: usize = 0;
const CHANGED_AT: usize = 1;
const CORRELATION_ID: usize = 12;

thread_local! {
    /// Rows this backend stored here, for tests that must tell this path from SPI's.
    static ROWS_WRITTEN: Cell<u64> = const { Cell::new(0) };
    /// The log's oid, and whether it is partitioned by range on `changed_at` alone: a table's
    /// partition key never changes, so this is asked once per table.
    static RANGE_ON_CHANGED_AT: Cell<(pg_sys::Oid, bool)> = const { Cell::new((pg_sys::InvalidOid, false)) };
    static DEFAULTS: RefCell<Option<Defaults>> = const { RefCell::new(None) };
    static BUILTINS: RefCell<Vec<(&'static CStr, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
}

/// How many log rows this backend has stored without the executor.
pub fn rows_written() -> u64 {
    ROWS_WRITTEN.with(Cell::get)
}

/// One change, as the caller has it; the rest comes from the column defaults. Texts are bytes in
/// the database's encoding, which need not be UTF-8.
#[derive(Clone, Copy)]
pub struct LogRow<'a> {
    pub relid: pg_sys::Oid,
    pub table: &'a [u8],
    pub op: Op,
    pub event_type: &'a [u8],
    pub pk: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub from_id: Option<&'a [u8]>,
    pub to_id: Option<&'a [u8]>,
    /// `jsonb` datums.
    pub new_row: Option<pg_sys::Datum>,
    pub old_row: Option<pg_sys::Datum>,
}

/// The log, open for one statement's rows. They all go to one partition: `changed_at`'s default
/// is the same for a whole statement (a volatile one sends the statement to SPI).
pub struct ChangeLog {
    parent: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    econtext: *mut pg_sys::ExprContext,
    change_id: *mut pg_sys::ExprState,
    correlation_id: *mut pg_sys::ExprState,
    changed_at: pg_sys::Datum,
    partition: pg_sys::Relation,
    result: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    /// The default partition: each row is checked against its constraint, as the executor does
    /// (a month attached since the bounds were read would otherwise get rows in the default).
    check_partition: bool,
}

impl ChangeLog {
    /// Opens `cep.change_log` for one statement's rows, or `None` when the executor must write it.
    pub fn open() -> Option<ChangeLog> {
        // SAFETY: catalog lookups and relation opens inside a transaction; everything opened is
        // closed by `close`, or by the transaction's end if an error comes first.
        unsafe {
            let namespace = pg_sys::get_namespace_oid(c"cep".as_ptr(), true);
            let oid = pg_sys::get_relname_relid(c"change_log".as_ptr(), namespace);
            if oid == pg_sys::InvalidOid {
                return None;
            }
            // The log's rows are pg_cep's own, stored as the extension (the writer's rows were read
            // as the writer): what the extension's owner may do is what counts, as in
            // `privileges::as_extension_owner`. A hook (sepgsql) may refuse more: leave it to the executor.
            let owner = crate::pg::privileges::extension_owner();
            let allowed = pg_sys::pg_class_aclcheck(oid, owner, pg_sys::ACL_INSERT as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK
                && pg_sys::check_enable_rls(oid, owner, true) != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32;
            if !allowed || ptr::read(&raw const pg_sys::ExecutorCheckPerms_hook).is_some() {
                return None;
            }
            let parent = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let rel = &*(*parent).rd_rel;
            let plain = rel.relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE
                && (*parent).rd_rules.is_null()
                && (*parent).trigdesc.is_null()
                && has_the_logs_columns((*parent).rd_att)
                && range_on_changed_at(oid);
            let defaults = if plain { compiled_defaults(parent) } else { None };
            let Some([change_id, changed_at, correlation_id]) = defaults else {
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            let estate = pg_sys::CreateExecutorState();
            let econtext = pg_sys::MakePerTupleExprContext(estate);
            let mut isnull = false;
            let at = evaluate(changed_at, econtext, &mut isnull);
            // The partition bounds as the executor reads them, kept for the statement (freed with the state).
            (*estate).es_partition_directory = pg_sys::CreatePartitionDirectory((*estate).es_query_cxt, omit_detached());
            let desc = pg_sys::PartitionDirectoryLookup((*estate).es_partition_directory, parent);
            let target = if isnull { None } else { route(desc, at) };
            let opened = target.and_then(|(oid, is_default)| open_partition(estate, parent, oid).map(|p| (p, is_default)));
            let Some(((partition, result, slot), check_partition)) = opened else {
                pg_sys::FreeExecutorState(estate);
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            Some(ChangeLog { parent, estate, econtext, change_id, correlation_id, changed_at: at, partition, result, slot, check_partition })
        }
    }

    /// Stores one row and its index entries; returns its `change_id`. Fails as the executor
    /// would: a NULL default in a NOT NULL column, a row the default partition's constraint
    /// refuses, a duplicate key.
    pub fn write(&mut self, row: &LogRow) -> CepResult<i64> {
        // SAFETY: this log's open relations and executor state; values built in the per-tuple
        // memory, which lives until the next row.
        unsafe {
            let memory = (*self.econtext).ecxt_per_tuple_memory;
            pg_sys::MemoryContextReset(memory);
            let old = pg_sys::MemoryContextSwitchTo(memory);
            let written = self.store(row);
            pg_sys::MemoryContextSwitchTo(old);
            if written.is_ok() {
                ROWS_WRITTEN.with(|n| n.set(n.get() + 1));
            }
            written
        }
    }

    unsafe fn store(&mut self, row: &LogRow) -> CepResult<i64> {
        unsafe {
            let text = |s: Option<&[u8]>| s.map(|s| pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32)));
            let evaluate = |state: *mut pg_sys::ExprState| {
                let mut isnull = false;
                let value = evaluate(state, self.econtext, &mut isnull);
                (!isnull).then_some(value)
            };
            let values: [Option<pg_sys::Datum>; 13] = [
                evaluate(self.change_id),
                Some(self.changed_at),
                Some(pg_sys::Datum::from(row.relid)),
                text(Some(row.table)),
                Some(pg_sys::Datum::from(row.op.code().as_bytes()[0] as i8)),
                text(Some(row.event_type)),
                text(row.pk),
                text(row.key),
                text(row.from_id),
                text(row.to_id),
                row.new_row,
                row.old_row,
                evaluate(self.correlation_id),
            ];
            for index in [CHANGE_ID, CORRELATION_ID] {
                if values[index].is_none() {
                    return Err(CepError::NotNull(format!(
                        "null value in column \"{}\" of relation \"change_log\" violates not-null constraint",
                        COLUMNS[index].0
                    )));
                }
            }
            let slot = self.slot;
            pg_sys::ExecClearTuple(slot);
            for (i, value) in values.iter().enumerate() {
                *(*slot).tts_values.add(i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*slot).tts_isnull.add(i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            if self.check_partition {
                pg_sys::ExecPartitionCheck(self.result, slot, self.estate, true);
            }
            pg_sys::simple_table_tuple_insert(self.partition, slot);
            if (*self.result).ri_NumIndices > 0 {
                super::version::insert_index_tuples(self.result, slot, self.estate);
            }
            Ok(values[CHANGE_ID].map_or(0, |id| id.value() as i64))
        }
    }

    /// Closes what `open` opened, and makes the rows visible to the statement's next queries, as
    /// an INSERT through SPI does.
    pub fn close(self) {
        // SAFETY: releases exactly what this log opened; locks stay until the transaction ends.
        unsafe {
            pg_sys::ExecCloseIndices(self.result);
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::table_close(self.partition, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(self.parent, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::CommandCounterIncrement();
        }
    }
}

/// A compiled expression's value. Guarded: `nextval` may raise an ERROR (no privilege on the
/// sequence, or the sequence used up), which must come back as one through the Rust frames.
unsafe fn evaluate(state: *mut pg_sys::ExprState, econtext: *mut pg_sys::ExprContext, isnull: &mut bool) -> pg_sys::Datum {
    unsafe {
        let function = (*state).evalfunc.expect("a compiled expression has its function");
        pg_sys::ffi::pg_guard_ffi_boundary(|| function(state, econtext, isnull))
    }
}

/// The leaf partition whose bounds hold `changed_at`, or else the default partition (then
/// `true`), as the executor's routing finds them.
unsafe fn route(desc: pg_sys::PartitionDesc, changed_at: pg_sys::Datum) -> Option<(pg_sys::Oid, bool)> {
    unsafe {
        if desc.is_null() || (*desc).nparts == 0 || (*desc).boundinfo.is_null() {
            return None;
        }
        let bounds = (*desc).boundinfo;
        let mut index = -1;
        if (*bounds).ndatums > 0 {
            let mut compare: pg_sys::FmgrInfo = std::mem::zeroed();
            pg_sys::fmgr_info(builtin(c"timestamp_cmp"), &mut compare);
            let (mut values, mut collation, mut equal) = ([changed_at], [pg_sys::InvalidOid], false);
            // The greatest lower bound at or below the value; the partition it starts, if any.
            let offset = pg_sys::partition_range_datum_bsearch(&mut compare, collation.as_mut_ptr(), bounds, 1, values.as_mut_ptr(), &mut equal);
            index = *(*bounds).indexes.offset(offset as isize + 1);
        }
        let is_default = index < 0;
        if is_default {
            index = (*bounds).default_index;
        }
        (index >= 0 && *(*desc).is_leaf.add(index as usize)).then(|| (*(*desc).oids.add(index as usize), is_default))
    }
}

/// The partition, open for writing with its indexes, in the statement's executor memory; `None`
/// (and nothing left open) if it is not one this path can fill as the executor would.
unsafe fn open_partition(
    estate: *mut pg_sys::EState,
    parent: pg_sys::Relation,
    oid: pg_sys::Oid,
) -> Option<(pg_sys::Relation, *mut pg_sys::ResultRelInfo, *mut pg_sys::TupleTableSlot)> {
    unsafe {
        let relation = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let desc = (*relation).rd_att;
        let constraints = (*desc).constr;
        let plain = (*(*relation).rd_rel).relkind as u8 == pg_sys::RELKIND_RELATION
            && (*relation).trigdesc.is_null()
            && (constraints.is_null() || ((*constraints).num_check == 0 && !(*constraints).has_generated_stored))
            && same_columns((*parent).rd_att, desc);
        if !plain {
            pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
            return None;
        }
        let old = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
        pg_sys::InitResultRelInfo(result, relation, 1, ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(result, false);
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsVirtual);
        pg_sys::MemoryContextSwitchTo(old);
        Some((relation, result, slot))
    }
}

/// The log's column defaults, compiled once and kept while their definitions stay the same
/// (parsing and compiling them took a tenth of a captured single-row INSERT). Only defaults that
/// call Postgres's own functions are kept: one of those cannot be redefined, nor write to a
/// captured table while it runs.
struct Defaults {
    definitions: Vec<(usize, std::ffi::CString)>,
    states: Option<[*mut pg_sys::ExprState; 3]>,
    memory: pg_sys::MemoryContext,
}

/// `change_id`'s, `changed_at`'s and `correlation_id`'s defaults, compiled; `None` when one is
/// missing, calls a function of a user's, or `changed_at`'s may differ within a statement.
unsafe fn compiled_defaults(parent: pg_sys::Relation) -> Option<[*mut pg_sys::ExprState; 3]> {
    unsafe {
        let constraints = (*(*parent).rd_att).constr;
        let mut definitions = Vec::new();
        if !constraints.is_null() {
            for i in 0..(*constraints).num_defval as usize {
                let default = &*(*constraints).defval.add(i);
                let index = default.adnum as usize - 1;
                if [CHANGE_ID, CHANGED_AT, CORRELATION_ID].contains(&index) && !default.adbin.is_null() {
                    definitions.push((index, CStr::from_ptr(default.adbin).to_owned()));
                }
            }
        }
        definitions.sort();
        if definitions.len() != 3 {
            return None;
        }
        DEFAULTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(cached) = cache.as_ref().filter(|d| d.definitions == definitions) {
                return cached.states;
            }
            // Built under this statement's memory, and kept only once complete: an error on the
            // way leaves nothing behind.
            let memory = pg_sys::AllocSetContextCreateInternal(
                pg_sys::CurrentMemoryContext,
                c"pg_cep change_log defaults".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            );
            let old = pg_sys::MemoryContextSwitchTo(memory);
            // Looked at before planning, which inlines SQL functions into what they call.
            let expressions = [CHANGE_ID, CHANGED_AT, CORRELATION_ID].map(|index| pg_sys::build_column_default(parent, index as i32 + 1));
            let usable = expressions.iter().all(|&e| !e.is_null() && !calls_user_functions(e)) && !pg_sys::contain_volatile_functions(expressions[1]);
            let states = usable.then(|| expressions.map(|e| pg_sys::ExecInitExpr(pg_sys::expression_planner(e.cast()), ptr::null_mut())));
            pg_sys::MemoryContextSwitchTo(old);
            pg_sys::MemoryContextSetParent(memory, pg_sys::TopMemoryContext);
            if let Some(replaced) = cache.replace(Defaults { definitions, states, memory }) {
                pg_sys::MemoryContextDelete(replaced.memory);
            }
            states
        })
    }
}

/// Whether an expression calls a function that is not built in (so could be redefined).
unsafe fn calls_user_functions(node: *mut pg_sys::Node) -> bool {
    unsafe extern "C-unwind" fn user_function(function: pg_sys::Oid, _: *mut std::ffi::c_void) -> bool {
        function.to_u32() >= pg_sys::FirstNormalObjectId
    }
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        unsafe {
            !node.is_null()
                && (pg_sys::check_functions_in_node(node, Some(user_function), context) || pg_sys::expression_tree_walker(node, Some(walk), context))
        }
    }
    unsafe { walk(node, ptr::null_mut()) }
}

/// A built-in function's oid by its C name, looked up once per backend (the lookup is a scan).
pub fn builtin(name: &'static CStr) -> pg_sys::Oid {
    if let Some(oid) = BUILTINS.with(|b| b.borrow().iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)) {
        return oid;
    }
    // SAFETY: a read of the built-in function table.
    let oid = unsafe { pg_sys::fmgr_internal_function(name.as_ptr()) };
    BUILTINS.with(|b| b.borrow_mut().push((name, oid)));
    oid
}

unsafe fn tuple_attr(desc: pg_sys::TupleDesc, index: usize) -> *const pg_sys::FormData_pg_attribute {
    unsafe { super::version::tuple_desc_attr(desc, index) }
}

fn name_of(attribute: &pg_sys::FormData_pg_attribute) -> &str {
    // SAFETY: a NameData is a NUL-terminated string within its 64 bytes.
    unsafe { std::ffi::CStr::from_ptr(attribute.attname.data.as_ptr()) }.to_str().unwrap_or("")
}

/// The columns `sql/bootstrap.sql` gives the log, in order, and NOT NULL only where pg_cep
/// always has a value.
unsafe fn has_the_logs_columns(desc: pg_sys::TupleDesc) -> bool {
    unsafe {
        let constraints = (*desc).constr;
        (*desc).natts as usize == COLUMNS.len()
            && (constraints.is_null() || ((*constraints).num_check == 0 && !(*constraints).has_generated_stored))
            && COLUMNS.iter().enumerate().all(|(i, &(name, type_oid, nullable))| {
                let a = &*tuple_attr(desc, i);
                !a.attisdropped && a.atttypid == type_oid && name_of(a) == name && !(nullable && a.attnotnull)
            })
    }
}

/// A partition's columns are its parent's, in the same places.
unsafe fn same_columns(parent: pg_sys::TupleDesc, partition: pg_sys::TupleDesc) -> bool {
    unsafe {
        (*parent).natts == (*partition).natts
            && (0..(*parent).natts as usize).all(|i| {
                let (a, b) = (&*tuple_attr(parent, i), &*tuple_attr(partition, i));
                !b.attisdropped && a.atttypid == b.atttypid && a.atttypmod == b.atttypmod && name_of(a) == name_of(b) && a.attnotnull == b.attnotnull
            })
    }
}

/// Whether partitions being detached concurrently are left out, as the executor's routing decides:
/// yes, except in a transaction whose snapshot predates the detach (repeatable read and above).
fn omit_detached() -> bool {
    // SAFETY: a read of the transaction's isolation level.
    unsafe { pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Whether the log is partitioned by range on `changed_at` alone, from the catalog, once per
/// table (a partition key cannot be altered).
fn range_on_changed_at(oid: pg_sys::Oid) -> bool {
    let (cached, answer) = RANGE_ON_CHANGED_AT.with(Cell::get);
    if cached == oid {
        return answer;
    }
    let answer = pgrx::spi::Spi::get_one_with_args::<bool>(
        "SELECT partstrat = 'r' AND partnatts = 1 AND partattrs[0] = 2 AND partexprs IS NULL FROM pg_catalog.pg_partitioned_table WHERE partrelid = $1",
        &[oid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    RANGE_ON_CHANGED_AT.with(|c| c.set((oid, answer)));
    answer
}
