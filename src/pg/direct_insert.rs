//! Rows stored into pg_cep's own tables (the change log, the alerts) as the executor stores them,
//! without the executor.
//!
//! Through SPI, every statement that wrote one of these rows paid for a whole executor around it:
//! the plan's state built, the table's indexes opened, projections and constraint expressions
//! compiled, then all of it torn down. On a single-row INSERT into a watched or captured table that
//! cost more than the row itself. Here a row is stored as the executor stores it: column defaults
//! evaluated, constraints checked, a heap insert, then every index entry (unique checks and partial
//! indexes' predicates included).
//!
//! It only knows tables as pg_cep makes them. A writer asks `insertable` and `Target::open`, which
//! say no whenever the executor would do more than that (triggers, rules, row security, stored
//! generated columns, defaults that call functions other than Postgres's own, a permission hook);
//! the caller then writes through SPI, which does all of that, or raises the error it raises.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::ptr;

use pgrx::pg_sys;

thread_local! {
    static COMPILED: RefCell<Vec<Compiled>> = const { RefCell::new(Vec::new()) };
    static INDEXES: RefCell<Vec<CompiledIndex>> = const { RefCell::new(Vec::new()) };
    static BUILTINS: RefCell<Vec<(&'static CStr, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
}

/// A column as pg_cep makes it: name, type, and whether a row may leave it NULL (so a NOT NULL
/// added by hand sends the rows to the executor, which raises the error).
pub type Column = (&'static str, pg_sys::Oid, bool);

/// Whether pg_cep's rows may be stored in `oid` without the executor, as the extension: its rows
/// are pg_cep's own (the writer's rows were read as the writer), so what the extension's owner may
/// do is what counts, as in `privileges::as_extension_owner`. A hook (sepgsql) may refuse more:
/// that is left to the executor.
pub fn insertable(oid: pg_sys::Oid) -> bool {
    writable(oid, pg_sys::ACL_INSERT as pg_sys::AclMode)
}

/// As [`insertable`], for rows written by key (`Target::write_by_key`, which reads, inserts,
/// updates and deletes them).
pub fn writable_by_key(oid: pg_sys::Oid) -> bool {
    writable(oid, (pg_sys::ACL_SELECT | pg_sys::ACL_INSERT | pg_sys::ACL_UPDATE | pg_sys::ACL_DELETE) as pg_sys::AclMode)
}

fn writable(oid: pg_sys::Oid, mode: pg_sys::AclMode) -> bool {
    let owner = crate::pg::privileges::extension_owner();
    // SAFETY: catalog lookups inside a transaction.
    unsafe {
        pg_sys::pg_class_aclcheck(oid, owner, mode) == pg_sys::AclResult::ACLCHECK_OK
            && pg_sys::check_enable_rls(oid, owner, true) != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
            && ptr::read(&raw const pg_sys::ExecutorCheckPerms_hook).is_none()
    }
}

/// `cep.<name>`'s oid, if it exists.
pub fn relation_in_cep(name: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups inside a transaction.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"cep".as_ptr(), true);
        let oid = pg_sys::get_relname_relid(name.as_ptr(), namespace);
        (oid != pg_sys::InvalidOid).then_some(oid)
    }
}

/// The executor state of one statement's rows: their memory and expression context.
pub struct Statement {
    pub estate: *mut pg_sys::EState,
    pub econtext: *mut pg_sys::ExprContext,
}

impl Statement {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Statement {
        // SAFETY: a fresh executor state in the current memory context, freed by `free`, or with
        // that context if an error comes first.
        unsafe {
            let estate = pg_sys::CreateExecutorState();
            let econtext = pg_sys::MakePerTupleExprContext(estate);
            Statement { estate, econtext }
        }
    }

    /// Runs `body` in the per-row memory, emptied first: what one row's values need lives there
    /// until the next row.
    pub fn in_row_memory<T>(&self, body: impl FnOnce() -> T) -> T {
        // SAFETY: this statement's own per-tuple memory; the previous context is restored on every
        // path (an error unwinds through the guard).
        unsafe {
            let memory = (*self.econtext).ecxt_per_tuple_memory;
            pg_sys::MemoryContextReset(memory);
            let _back = Switched(pg_sys::MemoryContextSwitchTo(memory));
            body()
        }
    }

    /// A compiled expression's value, or `None` for NULL. Guarded: `nextval` may raise an ERROR (no
    /// privilege on the sequence, or the sequence used up), which must come back as one through
    /// the Rust frames.
    ///
    /// # Safety
    /// `state` must be compiled for no parameters and no input row.
    pub unsafe fn evaluate(&self, state: *mut pg_sys::ExprState) -> Option<pg_sys::Datum> {
        // SAFETY: the caller's promise: `state` is compiled for no parameters and no input row; evaluated in this statement's
        // expression context, its ERROR comes back through the guard.
        unsafe {
            let function = (*state).evalfunc.expect("a compiled expression has its function");
            let mut isnull = false;
            let value = pg_sys::ffi::pg_guard_ffi_boundary(|| function(state, self.econtext, &mut isnull));
            (!isnull).then_some(value)
        }
    }

    pub fn free(self) {
        // SAFETY: the state `new` made; nothing of it is used afterwards.
        unsafe { pg_sys::FreeExecutorState(self.estate) }
    }
}

struct Switched(pg_sys::MemoryContext);

impl Drop for Switched {
    fn drop(&mut self) {
        // SAFETY: the context that was current before the switch, still alive.
        unsafe { pg_sys::MemoryContextSwitchTo(self.0) };
    }
}

/// A plain table open for rows, with its indexes, in a statement's executor memory.
pub struct Target {
    pub relation: pg_sys::Relation,
    result: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    checked: bool,
}

impl Target {
    /// Opens `oid` for rows; `None` (and nothing left open) when the executor would do more than
    /// check, store and index them: not a plain table, triggers, rules, stored generated columns,
    /// or CHECK constraints where `checks` says the caller has none.
    ///
    /// # Safety
    /// Inside a transaction; `statement` outlives the target.
    pub unsafe fn open(statement: &Statement, oid: pg_sys::Oid, checks: bool) -> Option<Target> {
        // SAFETY: inside a transaction (the caller's promise); everything made lives in the statement's query memory, which
        // outlives the target, and the relation is closed again when refused.
        unsafe {
            let relation = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let constraints = (*(*relation).rd_att).constr;
            let has_checks = !constraints.is_null() && (*constraints).num_check > 0;
            let plain = (*(*relation).rd_rel).relkind as u8 == pg_sys::RELKIND_RELATION
                && (*relation).trigdesc.is_null()
                && (*relation).rd_rules.is_null()
                && (constraints.is_null() || !(*constraints).has_generated_stored)
                && (checks || !has_checks);
            if !plain {
                pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            }
            let estate = statement.estate;
            let old = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
            let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()) as *mut pg_sys::ResultRelInfo;
            // Range table index 0: the relation is in no query's range table. Error reports
            // (a CHECK constraint, a partition's bounds) then name no inserted columns, as for a
            // trigger's result relation, instead of reading a range table that is not there.
            pg_sys::InitResultRelInfo(result, relation, 0, ptr::null_mut(), 0);
            if checks && has_checks {
                // Compiled once per backend, not by ExecConstraints for every statement.
                if let Some(compiled) = compiled_checks(relation) {
                    let count = (*constraints).num_check as usize;
                    let states = pg_sys::palloc0(count * std::mem::size_of::<*mut pg_sys::ExprState>()) as *mut *mut pg_sys::ExprState;
                    for c in compiled {
                        *states.add(c.column) = c.state;
                    }
                    super::version::set_check_exprs(result, states);
                }
            }
            pg_sys::ExecOpenIndices(result, false);
            for i in 0..(*result).ri_NumIndices as usize {
                compiled_index(*(*result).ri_IndexRelationDescs.add(i), *(*result).ri_IndexRelationInfo.add(i));
            }
            let slot = pg_sys::MakeSingleTupleTableSlot((*relation).rd_att, &raw const pg_sys::TTSOpsVirtual);
            pg_sys::MemoryContextSwitchTo(old);
            Some(Target { relation, result, slot, checked: checks && !constraints.is_null() })
        }
    }

    /// Stores one row (a value per column, NULL for `None`) and its index entries. Fails as the
    /// executor would: a NULL in a NOT NULL column or a CHECK constraint not met (when the table
    /// has constraints), a row outside the partition's bounds (with `partition_check`), a
    /// duplicate key.
    ///
    /// # Safety
    /// `values` holds one datum of each column's type, alive until the call returns.
    pub unsafe fn store(&self, statement: &Statement, values: &[Option<pg_sys::Datum>], partition_check: bool) {
        // SAFETY: the slot and result relation `open` made for this relation; `values` holds one datum per column, of its type
        // (the caller's promise).
        unsafe {
            let slot = self.row(statement, values);
            if partition_check {
                pg_sys::ExecPartitionCheck(self.result, slot, statement.estate, true);
            }
            pg_sys::simple_table_tuple_insert(self.relation, slot);
            if (*self.result).ri_NumIndices > 0 {
                super::version::insert_index_tuples(self.result, slot, statement.estate, super::version::IndexUpdate::All);
            }
        }
    }

    /// `values` as a row in the target's slot, checked as the executor checks one (NOT NULL and
    /// CHECK constraints, when the table has them).
    ///
    /// # Safety
    /// As `store`.
    unsafe fn row(&self, statement: &Statement, values: &[Option<pg_sys::Datum>]) -> *mut pg_sys::TupleTableSlot {
        // SAFETY: the slot and result relation `open` made; values as the caller promises.
        unsafe {
            let slot = self.slot;
            pg_sys::ExecClearTuple(slot);
            for (i, value) in values.iter().enumerate() {
                *(*slot).tts_values.add(i) = value.unwrap_or(pg_sys::Datum::from(0));
                *(*slot).tts_isnull.add(i) = value.is_none();
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            if self.checked {
                pg_sys::ExecConstraints(self.result, slot, statement.estate);
            }
            slot
        }
    }

    /// The first of the target's indexes that `wanted` accepts.
    ///
    /// # Safety
    /// `wanted` reads an open index relation.
    pub unsafe fn index(&self, wanted: impl Fn(pg_sys::Relation) -> bool) -> Option<pg_sys::Relation> {
        // SAFETY: the index array `open` made, of `ri_NumIndices` open indexes.
        unsafe { (0..(*self.result).ri_NumIndices as usize).map(|i| *(*self.result).ri_IndexRelationDescs.add(i)).find(|&index| wanted(index)) }
    }

    /// Reads (with `read`) the latest committed version of the row `index` finds for `key` (per
    /// index column, its equality function and value), as a READ COMMITTED statement starting
    /// now would see it, this transaction's earlier writes included.
    ///
    /// # Safety
    /// `index` is one of the target's; `read` reads the found row's slot while it is valid.
    pub unsafe fn find<T>(
        &self,
        index: pg_sys::Relation,
        key: &[(u32, pg_sys::Datum)],
        read: impl FnOnce(*mut pg_sys::TupleTableSlot) -> T,
    ) -> Option<T> {
        // SAFETY: the caller's contract; the snapshot is registered for the scan and released after it.
        unsafe {
            // What this transaction wrote before is visible, as to the next statement through SPI.
            pg_sys::CommandCounterIncrement();
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
            let mut keys: Vec<pg_sys::ScanKeyData> = vec![std::mem::zeroed(); key.len()];
            for (i, ((procedure, value), scan_key)) in key.iter().zip(keys.iter_mut()).enumerate() {
                pg_sys::ScanKeyEntryInitialize(
                    scan_key,
                    0,
                    (i + 1) as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    pg_sys::InvalidOid,
                    *(*index).rd_indcollation.add(i),
                    pg_sys::Oid::from(*procedure),
                    *value,
                );
            }
            let found = pg_sys::table_slot_create(self.relation, ptr::null_mut());
            let scan = super::version::index_beginscan(self.relation, index, snapshot, key.len() as i32);
            pg_sys::index_rescan(scan, keys.as_mut_ptr(), key.len() as i32, ptr::null_mut(), 0);
            let result = pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, found).then(|| read(found));
            pg_sys::index_endscan(scan);
            pg_sys::ExecDropSingleTupleTableSlot(found);
            pg_sys::UnregisterSnapshot(snapshot);
            result
        }
    }

    /// Writes the row whose primary key is `key` (per key column, its equality function and
    /// value), as `INSERT ... ON CONFLICT (key) DO UPDATE` or `DELETE ... WHERE` the key does under
    /// READ COMMITTED for a key no other transaction writes meanwhile (the caller holds a lock that
    /// says so): the latest committed version found through the primary key, then a heap update
    /// (index entries only when it is not HOT), a heap insert with its index entries, or a heap
    /// delete. Checks constraints as `store` does.
    ///
    /// False when the table has no primary key or another transaction changed or deleted the
    /// row meanwhile: nothing was written, and the caller goes through SPI, whose statement
    /// follows it. Deleting a row that is not there is done.
    ///
    /// # Safety
    /// As `store`; the table is a heap table and `key` matches its primary key's columns.
    pub unsafe fn write_by_key(&self, statement: &Statement, key: &[(u32, pg_sys::Datum)], write: KeyedWrite) -> bool {
        // SAFETY: the relation, indexes and slot `open` made; values as `store` takes them (the
        // caller's promise); the snapshot is registered for the scan and released after it.
        unsafe {
            let Some(index) = self.index(|index| (*(*index).rd_index).indisprimary) else { return false };
            let tid = self.find(index, key, |found| (*found).tts_tid);
            match (write, tid) {
                (KeyedWrite::Delete, None) => true,
                (KeyedWrite::Delete, Some(mut tid)) => {
                    let mut failure: pg_sys::TM_FailureData = std::mem::zeroed();
                    let cid = pg_sys::GetCurrentCommandId(true);
                    pg_sys::heap_delete(self.relation, &mut tid, cid, ptr::null_mut(), true, &mut failure, false) == pg_sys::TM_Result::TM_Ok
                }
                (KeyedWrite::Put(values), None) => {
                    self.store(statement, values, false);
                    true
                }
                (KeyedWrite::Put(values), Some(mut tid)) => {
                    let slot = self.row(statement, values);
                    let mut should_free = false;
                    let tuple = pg_sys::ExecFetchSlotHeapTuple(slot, true, &mut should_free);
                    let Some(indexes) = super::version::heap_update(self.relation, &mut tid, tuple) else { return false };
                    (*slot).tts_tid = (*tuple).t_self;
                    if indexes != super::version::IndexUpdate::None {
                        super::version::insert_index_tuples(self.result, slot, statement.estate, indexes);
                    }
                    true
                }
            }
        }
    }

    /// Closes what `open` opened; the lock stays until the transaction ends.
    pub fn close(self) {
        // SAFETY: releases exactly what this target opened.
        unsafe {
            pg_sys::ExecCloseIndices(self.result);
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::table_close(self.relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// What `Target::write_by_key` writes: the row's values, or its removal.
#[derive(Clone, Copy)]
pub enum KeyedWrite<'a> {
    Put(&'a [Option<pg_sys::Datum>]),
    Delete,
}

/// `bytes` as a new `text` datum in the current memory context.
pub fn text_datum(bytes: &[u8]) -> pg_sys::Datum {
    let [text] = text_datums([bytes]);
    text
}

/// Several texts made in one allocation: one call into Postgres instead of one per text (an
/// alert row has five).
pub fn text_datums<const N: usize>(texts: [&[u8]; N]) -> [pg_sys::Datum; N] {
    const HEADER: usize = pg_sys::VARHDRSZ;
    // Each text starts where a palloc'd one would: maximally aligned.
    let sizes = texts.map(|t| (HEADER + t.len()).next_multiple_of(pg_sys::MAXIMUM_ALIGNOF as usize));
    let mut datums = [pg_sys::Datum::from(0); N];
    // SAFETY: one allocation of the texts' aligned sizes; each text's header and bytes are written
    // inside its own part of it.
    unsafe {
        let base = pg_sys::palloc(sizes.iter().sum()) as *mut u8;
        let mut at = base;
        for ((text, size), datum) in texts.iter().zip(sizes).zip(datums.iter_mut()) {
            pgrx::varlena::set_varsize_4b(at.cast(), (HEADER + text.len()) as i32);
            std::ptr::copy_nonoverlapping(text.as_ptr(), at.add(HEADER), text.len());
            *datum = pg_sys::Datum::from(at);
            at = at.add(size);
        }
    }
    datums
}

/// Makes the rows stored so far visible to the statement's next queries, as an INSERT through
/// SPI does.
pub fn rows_stored() {
    // SAFETY: inside a transaction.
    unsafe { pg_sys::CommandCounterIncrement() }
}

/// Expressions of one table (its column defaults, or its CHECK constraints), compiled once and
/// kept while their definitions stay the same: parsing and compiling the defaults took a tenth of
/// a captured single-row INSERT, and the executor compiles a table's CHECK constraints again for
/// every statement. Only expressions that call Postgres's own functions are kept: one of those
/// cannot be redefined, nor write to a watched table while it runs.
struct Compiled {
    relid: pg_sys::Oid,
    what: What,
    definitions: Vec<(usize, CString)>,
    states: Option<Vec<CompiledExpr>>,
    memory: pg_sys::MemoryContext,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Defaults,
    Checks,
}

/// A compiled expression: a column's default (or the `column`th CHECK constraint), and whether it
/// may differ between rows of one statement.
#[derive(Clone, Copy)]
pub struct CompiledExpr {
    pub column: usize,
    pub state: *mut pg_sys::ExprState,
    pub volatile: bool,
}

/// The defaults of every column of `relation` that is not in `given` (0-based), compiled; `None`
/// when one calls a function of a user's. A column without a default is not listed (it is NULL).
///
/// # Safety
/// `relation` must be open.
pub unsafe fn compiled_defaults(relation: pg_sys::Relation, given: &[usize]) -> Option<Vec<CompiledExpr>> {
    // SAFETY: `relation` is open (the caller's promise): its tuple descriptor and constraints are valid.
    unsafe {
        let constraints = (*(*relation).rd_att).constr;
        let mut definitions = Vec::new();
        if !constraints.is_null() {
            for i in 0..(*constraints).num_defval as usize {
                let default = &*(*constraints).defval.add(i);
                let index = default.adnum as usize - 1;
                if !given.contains(&index) && !default.adbin.is_null() {
                    definitions.push((index, CStr::from_ptr(default.adbin).to_owned()));
                }
            }
        }
        // Looked at before planning, which inlines SQL functions into what they call.
        compile_cached(relation, What::Defaults, definitions, |column, _| pg_sys::build_column_default(relation, column as i32 + 1))
    }
}

/// The table's enforced CHECK constraints, compiled, in the order of the relation's constraints
/// (`column` is the constraint's place); `None` when one calls a function of a user's, or the table
/// has generated columns (whose expressions the executor folds into the checks).
///
/// # Safety
/// `relation` must be open.
pub unsafe fn compiled_checks(relation: pg_sys::Relation) -> Option<Vec<CompiledExpr>> {
    // SAFETY: `relation` is open (the caller's promise): its tuple descriptor and constraints are valid.
    unsafe {
        let constraints = (*(*relation).rd_att).constr;
        if constraints.is_null() || super::version::has_generated_columns(constraints) {
            return None;
        }
        let mut definitions = Vec::new();
        for i in 0..(*constraints).num_check as usize {
            let check = &*(*constraints).check.add(i);
            if super::version::check_enforced(check) && !check.ccbin.is_null() {
                definitions.push((i, CStr::from_ptr(check.ccbin).to_owned()));
            }
        }
        compile_cached(relation, What::Checks, definitions, |_, definition| pg_sys::stringToNode(definition.as_ptr()).cast())
    }
}

/// The cached compiled expressions of `definitions`, or compiles them (with `node`) and keeps them
/// in a memory context of their own under TopMemoryContext.
///
/// # Safety
/// `relation` must be open; `node` returns an expression tree of the definition.
unsafe fn compile_cached(
    relation: pg_sys::Relation,
    what: What,
    mut definitions: Vec<(usize, CString)>,
    node: impl Fn(usize, &CStr) -> *mut pg_sys::Node,
) -> Option<Vec<CompiledExpr>> {
    // SAFETY: `relation` is open (the caller's promise); everything compiled lives in the entry's context.
    unsafe {
        let relid = (*relation).rd_id;
        definitions.sort();
        COMPILED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(cached) = cache.iter().find(|d| d.relid == relid && d.what == what && d.definitions == definitions) {
                return cached.states.clone();
            }
            let (states, memory) = built_to_keep(c"pg_cep compiled expressions", || {
                let expressions: Vec<(usize, *mut pg_sys::Node)> = definitions.iter().map(|(column, d)| (*column, node(*column, d))).collect();
                let usable = expressions.iter().all(|&(_, e)| !e.is_null() && !calls_user_functions(e));
                usable.then(|| {
                    expressions
                        .iter()
                        .map(|&(column, e)| CompiledExpr {
                            column,
                            volatile: pg_sys::contain_volatile_functions(e),
                            state: pg_sys::ExecInitExpr(pg_sys::expression_planner(e.cast()), ptr::null_mut()),
                        })
                        .collect::<Vec<_>>()
                })
            });
            let entry = Compiled { relid, what, definitions, states: states.clone(), memory };
            keep(&mut cache, entry, |d| d.relid == relid && d.what == what, |d| d.memory);
            states
        })
    }
}

/// An index's expressions and predicate, compiled. The executor compiles them again for every
/// statement that inserts (planned, then built into steps), and the alerts table has one of each
/// (the cursor's `coalesce(xid, ...)`, the cooldown's partial unique index): a single-row INSERT
/// that alerts paid that every time. Kept per index while the relcache keeps the same definitions
/// (an index's definition never changes; its entry is rebuilt when it is dropped), and only when
/// they call Postgres's own functions, as the compiled defaults are.
struct CompiledIndex {
    index: pg_sys::Oid,
    /// The relcache's lists the states were compiled from: another pair means another index.
    definitions: (*mut pg_sys::List, *mut pg_sys::List),
    expressions: *mut pg_sys::List,
    predicate: *mut pg_sys::ExprState,
    memory: pg_sys::MemoryContext,
}

/// Gives an opened index's `IndexInfo` its compiled expressions and predicate, from the cache or
/// compiled now; an index with user functions in them is left to the executor.
///
/// # Safety
/// `index` is an open index and `info` the `IndexInfo` `ExecOpenIndices` built for it.
unsafe fn compiled_index(index: pg_sys::Relation, info: *mut pg_sys::IndexInfo) {
    // SAFETY: an open index and its IndexInfo (the caller's promise); what is compiled lives in the entry's context.
    unsafe {
        if (*info).ii_Expressions.is_null() && (*info).ii_Predicate.is_null() {
            return;
        }
        let (oid, definitions) = ((*index).rd_id, ((*index).rd_indexprs, (*index).rd_indpred));
        let found = INDEXES
            .with(|cache| cache.borrow().iter().find(|c| c.index == oid && c.definitions == definitions).map(|c| (c.expressions, c.predicate)));
        let (expressions, predicate) = match found {
            Some(states) => states,
            None => {
                let mut nodes = list_items((*info).ii_Expressions).into_iter().chain(list_items((*info).ii_Predicate));
                if nodes.any(|n| calls_user_functions(n.cast())) {
                    return;
                }
                // As ExecPrepareExprList and ExecPrepareQual compile them, without a plan's state,
                // from copies made here: planning keeps the constants' values where they were (the
                // statement's memory, gone after it).
                let ((expressions, predicate), memory) = built_to_keep(c"pg_cep compiled index expressions", || {
                    let mut expressions: *mut pg_sys::List = ptr::null_mut();
                    for e in list_items((*info).ii_Expressions) {
                        let copied = pg_sys::copyObjectImpl(e);
                        let state = pg_sys::ExecInitExpr(pg_sys::expression_planner(copied.cast()), ptr::null_mut());
                        expressions = pg_sys::lappend(expressions, state.cast());
                    }
                    let predicate = if (*info).ii_Predicate.is_null() {
                        ptr::null_mut()
                    } else {
                        let copied = pg_sys::copyObjectImpl((*info).ii_Predicate.cast());
                        pg_sys::ExecInitQual(pg_sys::expression_planner(copied.cast()).cast(), ptr::null_mut())
                    };
                    (expressions, predicate)
                });
                let entry = CompiledIndex { index: oid, definitions, expressions, predicate, memory };
                INDEXES.with(|cache| keep(&mut cache.borrow_mut(), entry, |c| c.index == oid, |c| c.memory));
                (expressions, predicate)
            }
        };
        (*info).ii_ExpressionsState = expressions;
        (*info).ii_PredicateState = predicate;
    }
}

/// What `build` makes in a memory context of its own, which is then kept under TopMemoryContext:
/// compiled states outlive the statement. Built under the current memory, and kept only once
/// complete: an error on the way leaves nothing behind.
///
/// # Safety
/// As the Postgres calls `build` makes.
unsafe fn built_to_keep<T>(name: &CStr, build: impl FnOnce() -> T) -> (T, pg_sys::MemoryContext) {
    // SAFETY: a new context under the current one, switched to and back around `build`.
    unsafe {
        let memory = pg_sys::AllocSetContextCreateInternal(
            pg_sys::CurrentMemoryContext,
            name.as_ptr(),
            pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
            pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
            pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
        );
        let old = pg_sys::MemoryContextSwitchTo(memory);
        let built = build();
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::MemoryContextSetParent(memory, pg_sys::TopMemoryContext);
        (built, memory)
    }
}

/// Puts `entry` in a backend's cache in place of the one `same` finds, whose memory is freed.
///
/// # Safety
/// `memory` gives each entry's own context, used by nothing else once it is replaced.
unsafe fn keep<E>(cache: &mut Vec<E>, entry: E, same: impl Fn(&E) -> bool, memory: impl Fn(&E) -> pg_sys::MemoryContext) {
    match cache.iter_mut().find(|e| same(e)) {
        // SAFETY: the replaced entry's context, no longer referenced (the caller's promise).
        Some(replaced) => unsafe { pg_sys::MemoryContextDelete(memory(&std::mem::replace(replaced, entry))) },
        None => cache.push(entry),
    }
}

/// The pointers a Postgres `List` holds (none for NIL).
///
/// # Safety
/// `list` is NIL or a valid pointer list.
unsafe fn list_items(list: *mut pg_sys::List) -> Vec<*mut std::ffi::c_void> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a valid List (the caller's promise): `length` cells from `elements`, each a pointer.
    unsafe { (0..(*list).length as usize).map(|i| (*(*list).elements.add(i)).ptr_value).collect() }
}

/// Whether an expression calls a function that is not built in (so could be redefined).
unsafe fn calls_user_functions(node: *mut pg_sys::Node) -> bool {
    unsafe extern "C-unwind" fn user_function(function: pg_sys::Oid, _: *mut std::ffi::c_void) -> bool {
        function.to_u32() >= pg_sys::FirstNormalObjectId
    }
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
        // SAFETY: a node of the expression tree Postgres walks, or NULL (checked first).
        unsafe {
            !node.is_null()
                && (pg_sys::check_functions_in_node(node, Some(user_function), context) || pg_sys::expression_tree_walker(node, Some(walk), context))
        }
    }
    // SAFETY: the caller's expression tree, built in the current memory context.
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

/// # Safety
/// `index` must be below the descriptor's column count.
pub unsafe fn tuple_attr(desc: pg_sys::TupleDesc, index: usize) -> *const pg_sys::FormData_pg_attribute {
    // SAFETY: the caller's promise: `index` is below the descriptor's column count.
    unsafe { super::version::tuple_desc_attr(desc, index) }
}

pub fn name_of(attribute: &pg_sys::FormData_pg_attribute) -> &str {
    // SAFETY: a NameData is a NUL-terminated string within its 64 bytes.
    unsafe { std::ffi::CStr::from_ptr(attribute.attname.data.as_ptr()) }.to_str().unwrap_or("")
}

/// The table has exactly `columns`, in order, NOT NULL only where pg_cep always has a value.
///
/// # Safety
/// `desc` must be an open relation's descriptor.
pub unsafe fn has_columns(desc: pg_sys::TupleDesc, columns: &[Column]) -> bool {
    // SAFETY: `desc` is an open relation's descriptor (the caller's promise); columns are read below its count.
    unsafe {
        (*desc).natts as usize == columns.len()
            && columns.iter().enumerate().all(|(i, &(name, type_oid, nullable))| {
                let a = &*tuple_attr(desc, i);
                !a.attisdropped && a.atttypid == type_oid && name_of(a) == name && !(nullable && a.attnotnull)
            })
    }
}
