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
//! constraints, a partition that is not a plain table, a deferrable unique index) or the user may
//! not insert into it. The caller then writes through SPI, which does all of that, or raises the
//! error it raises.

use std::cell::Cell;
use std::ffi::c_char;
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
const FROM_DEFAULTS: [usize; 3] = [0, 1, 12];
const CHANGED_AT: usize = 1;

thread_local! {
    /// Rows this backend stored here, for tests that must tell this path from SPI's.
    static ROWS_WRITTEN: Cell<u64> = const { Cell::new(0) };
    /// The log's oid, and whether it is partitioned by range on `changed_at` alone: a table's
    /// partition key never changes, so this is asked once per table.
    static RANGE_ON_CHANGED_AT: Cell<(pg_sys::Oid, bool)> = const { Cell::new((pg_sys::InvalidOid, false)) };
}

/// How many log rows this backend has stored without the executor.
pub fn rows_written() -> u64 {
    ROWS_WRITTEN.with(Cell::get)
}

/// One change, as the caller has it; the rest comes from the column defaults.
#[derive(Clone, Copy)]
pub struct LogRow<'a> {
    pub relid: pg_sys::Oid,
    pub table: &'a str,
    pub op: Op,
    pub event_type: &'a str,
    pub pk: Option<&'a str>,
    pub key: Option<&'a str>,
    pub from_id: Option<&'a str>,
    pub to_id: Option<&'a str>,
    /// `jsonb` datums.
    pub new_row: Option<pg_sys::Datum>,
    pub old_row: Option<pg_sys::Datum>,
}

struct Partition {
    oid: pg_sys::Oid,
    relation: pg_sys::Relation,
    result: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
}

/// The log, open for this statement's rows.
pub struct ChangeLog {
    parent: pg_sys::Relation,
    estate: *mut pg_sys::EState,
    econtext: *mut pg_sys::ExprContext,
    defaults: Vec<(usize, *mut pg_sys::ExprState)>,
    /// `changed_at`'s comparison, for the search in the partition bounds.
    compare: pg_sys::FmgrInfo,
    partitions: Vec<Partition>,
}

impl ChangeLog {
    /// Opens `cep.change_log` for writing, or `None` when the executor must write it.
    pub fn open() -> Option<ChangeLog> {
        // SAFETY: catalog lookups and relation opens inside a transaction; everything opened is
        // closed by `close`, or by the transaction's end if an error comes first.
        unsafe {
            let namespace = pg_sys::get_namespace_oid(c"cep".as_ptr(), true);
            let oid = pg_sys::get_relname_relid(c"change_log".as_ptr(), namespace);
            if oid == pg_sys::InvalidOid || pg_sys::pg_class_aclcheck(oid, pg_sys::GetUserId(), pg_sys::ACL_INSERT as pg_sys::AclMode) != pg_sys::AclResult::ACLCHECK_OK {
                return None;
            }
            let parent = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let rel = &*(*parent).rd_rel;
            let plain = rel.relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE
                && !rel.relrowsecurity
                && (*parent).rd_rules.is_null()
                && (*parent).trigdesc.is_null()
                && has_the_logs_columns((*parent).rd_att)
                && range_on_changed_at(oid)
                && all_partitions_are_leaves(parent);
            if !plain {
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            }
            let Some(defaults) = compiled_defaults(parent) else {
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            let estate = pg_sys::CreateExecutorState();
            let mut compare: pg_sys::FmgrInfo = std::mem::zeroed();
            pg_sys::fmgr_info(builtin(c"timestamp_cmp"), &mut compare);
            let econtext = pg_sys::MakePerTupleExprContext(estate);
            let mut log = ChangeLog { parent, estate, econtext, defaults, compare, partitions: Vec::new() };
            // This statement's rows go where the transaction's start time goes: check that partition now,
            // before anything is written, so that a partition this path cannot fill leaves it all to SPI.
            let now = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
            let usable = log.route(now).is_some_and(|oid| log.partition(oid).is_some());
            if !usable {
                log.close();
                return None;
            }
            Some(log)
        }
    }

    /// Stores one row and its index entries; returns its `change_id`. Fails as the executor
    /// would: a NULL default in a NOT NULL column, no partition for the row; a duplicate key
    /// raises its ERROR.
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
            let text = |s: Option<&str>| s.map(|s| pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(s.as_ptr() as *const c_char, s.len() as i32)));
            let mut values: [Option<pg_sys::Datum>; 13] = [
                None,
                None,
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
                None,
            ];
            EVALUATING.with(|e| e.set(true));
            for &(index, state) in &self.defaults {
                let mut isnull = false;
                let value = (*state).evalfunc.expect("a compiled expression has its function")(state, self.econtext, &mut isnull);
                values[index] = (!isnull).then_some(value);
            }
            EVALUATING.with(|e| e.set(false));
            for index in FROM_DEFAULTS {
                if values[index].is_none() && (*tuple_attr((*self.parent).rd_att, index)).attnotnull {
                    return Err(CepError::NotNull(format!("null value in column \"{}\" of relation \"change_log\" violates not-null constraint", COLUMNS[index].0)));
                }
            }
            let Some(oid) = values[CHANGED_AT].and_then(|at| self.route(at)) else {
                return Err(CepError::NoPartition("no partition of relation \"change_log\" found for row".into()));
            };
            // Only when a changed default sends rows past the partition `open` checked.
            let Some(target) = self.partition(oid) else {
                return Err(CepError::NoPartition(format!(
                    "partition {} of relation \"change_log\" has triggers, check constraints or columns of its own, which pg_cep does not apply",
                    pgrx::spi::Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[oid.into()]).ok().flatten().unwrap_or_default()
                )));
            };
            let partition = &self.partitions[target];
            let slot = partition.slot;
            pg_sys::ExecClearTuple(slot);
            for (i, value) in values.iter().enumerate() {
                *(*slot).tts_values.add(i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*slot).tts_isnull.add(i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            pg_sys::simple_table_tuple_insert(partition.relation, slot);
            if (*partition.result).ri_NumIndices > 0 {
                pg_sys::ExecInsertIndexTuples(partition.result, slot, self.estate, false, false, ptr::null_mut(), ptr::null_mut());
            }
            Ok(values[0].map_or(0, |id| id.value() as i64))
        }
    }

    /// Closes what `open` and `write` opened, and makes the rows visible to the statement's next
    /// queries, as an INSERT through SPI does.
    pub fn close(self) {
        // SAFETY: releases exactly what this log opened; locks stay until the transaction ends.
        unsafe {
            for p in &self.partitions {
                pg_sys::ExecCloseIndices(p.result);
                pg_sys::ExecDropSingleTupleTableSlot(p.slot);
                pg_sys::table_close(p.relation, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
            pg_sys::table_close(self.parent, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::CommandCounterIncrement();
        }
    }

    /// The leaf partition whose bounds hold `changed_at`, or the default partition, as the
    /// executor's routing finds it.
    unsafe fn route(&mut self, changed_at: pg_sys::Datum) -> Option<pg_sys::Oid> {
        unsafe {
            let desc = pg_sys::RelationGetPartitionDesc(self.parent, omit_detached());
            if desc.is_null() || (*desc).nparts == 0 || (*desc).boundinfo.is_null() {
                return None;
            }
            let bounds = (*desc).boundinfo;
            let mut index = -1;
            if (*bounds).ndatums > 0 {
                let (mut values, mut collation, mut equal) = ([changed_at], [pg_sys::InvalidOid], false);
                // The greatest lower bound at or below the value; the partition it starts, if any.
                let offset = pg_sys::partition_range_datum_bsearch(&mut self.compare, collation.as_mut_ptr(), bounds, 1, values.as_mut_ptr(), &mut equal);
                index = *(*bounds).indexes.offset(offset as isize + 1);
            }
            if index < 0 {
                index = (*bounds).default_index;
            }
            (index >= 0 && *(*desc).is_leaf.add(index as usize)).then(|| *(*desc).oids.add(index as usize))
        }
    }

    /// The partition opened for writing (its index in `partitions`), or `None` if it is not one
    /// this path can fill as the executor would.
    unsafe fn partition(&mut self, oid: pg_sys::Oid) -> Option<usize> {
        if let Some(i) = self.partitions.iter().position(|p| p.oid == oid) {
            return Some(i);
        }
        unsafe {
            let relation = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let desc = (*relation).rd_att;
            let constraints = (*desc).constr;
            let plain = (*(*relation).rd_rel).relkind as u8 == pg_sys::RELKIND_RELATION
                && (*relation).trigdesc.is_null()
                && (constraints.is_null() || ((*constraints).num_check == 0 && !(*constraints).has_generated_stored))
                && same_columns((*self.parent).rd_att, desc);
            if !plain {
                pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            }
            let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
            pg_sys::InitResultRelInfo(result, relation, 1, ptr::null_mut(), 0);
            pg_sys::ExecOpenIndices(result, false);
            // A deferred unique check would need an after-trigger event, which only the executor queues.
            let deferred = (0..(*result).ri_NumIndices as usize).any(|i| {
                let index = &*(**(*result).ri_IndexRelationDescs.add(i)).rd_index;
                index.indisunique && !index.indimmediate
            });
            if deferred {
                pg_sys::ExecCloseIndices(result);
                pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            }
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsVirtual);
            self.partitions.push(Partition { oid, relation, result, slot });
            Some(self.partitions.len() - 1)
        }
    }
}

/// The log's column defaults, compiled once and kept while their definitions stay the same
/// (parsing and compiling them took a tenth of a captured single-row INSERT).
struct Defaults {
    definitions: Vec<(usize, std::ffi::CString)>,
    states: Vec<(usize, *mut pg_sys::ExprState)>,
    memory: pg_sys::MemoryContext,
}

thread_local! {
    static DEFAULTS: std::cell::RefCell<Option<Defaults>> = const { std::cell::RefCell::new(None) };
    /// Set while a default runs: a default that writes to a captured table would reach `open`
    /// again, and must not find its own compiled state replaced or reused under it.
    static EVALUATING: Cell<bool> = const { Cell::new(false) };
}

/// After an error: no default is running any more.
pub fn reset() {
    EVALUATING.with(|e| e.set(false));
}

/// The compiled defaults of the columns pg_cep leaves to them; `None` while one is running.
unsafe fn compiled_defaults(parent: pg_sys::Relation) -> Option<Vec<(usize, *mut pg_sys::ExprState)>> {
    if EVALUATING.with(Cell::get) {
        return None;
    }
    unsafe {
        let constraints = (*(*parent).rd_att).constr;
        let mut definitions = Vec::new();
        if !constraints.is_null() {
            for i in 0..(*constraints).num_defval as usize {
                let default = &*(*constraints).defval.add(i);
                let index = default.adnum as usize - 1;
                if FROM_DEFAULTS.contains(&index) && !default.adbin.is_null() {
                    definitions.push((index, std::ffi::CStr::from_ptr(default.adbin).to_owned()));
                }
            }
        }
        definitions.sort();
        DEFAULTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.as_ref().is_some_and(|d| d.definitions == definitions) {
                return cache.as_ref().map(|d| d.states.clone());
            }
            if let Some(old) = cache.take() {
                pg_sys::MemoryContextDelete(old.memory);
            }
            let memory = pg_sys::AllocSetContextCreateInternal(
                pg_sys::TopMemoryContext,
                c"pg_cep change_log defaults".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            );
            let old = pg_sys::MemoryContextSwitchTo(memory);
            let states = definitions
                .iter()
                .map(|&(index, _)| {
                    let expr = pg_sys::expression_planner(pg_sys::build_column_default(parent, index as i32 + 1).cast());
                    (index, pg_sys::ExecInitExpr(expr, ptr::null_mut()))
                })
                .collect::<Vec<_>>();
            pg_sys::MemoryContextSwitchTo(old);
            *cache = Some(Defaults { definitions, states: states.clone(), memory });
            Some(states)
        })
    }
}

thread_local! {
    static BUILTINS: std::cell::RefCell<Vec<(&'static std::ffi::CStr, pg_sys::Oid)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A built-in function's oid by its C name, looked up once per backend (the lookup is a scan).
pub fn builtin(name: &'static std::ffi::CStr) -> pg_sys::Oid {
    if let Some(oid) = BUILTINS.with(|b| b.borrow().iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)) {
        return oid;
    }
    // SAFETY: a read of the built-in function table.
    let oid = unsafe { pg_sys::fmgr_internal_function(name.as_ptr()) };
    BUILTINS.with(|b| b.borrow_mut().push((name, oid)));
    oid
}

unsafe fn tuple_attr(desc: pg_sys::TupleDesc, index: usize) -> *const pg_sys::FormData_pg_attribute {
    unsafe { (*desc).attrs.as_ptr().add(index) }
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

unsafe fn all_partitions_are_leaves(parent: pg_sys::Relation) -> bool {
    unsafe {
        let desc = pg_sys::RelationGetPartitionDesc(parent, omit_detached());
        !desc.is_null() && (0..(*desc).nparts as usize).all(|i| *(*desc).is_leaf.add(i))
    }
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
