//! `cep.change_log` rows stored straight into their partition, without the executor (see
//! `direct_insert` for why and when): the parent's column defaults (`change_id`, `changed_at`,
//! `correlation_id`), routed by `changed_at` through the parent's partition bounds, then stored
//! and indexed as the executor does.
//!
//! `ChangeLog::open` returns `None` whenever the log differs from what pg_cep makes in a way the
//! executor would act on (columns, triggers, rules, row security, check constraints, defaults that
//! call functions other than Postgres's own, a partition that is not a plain table), or the
//! extension may not insert into it. The caller then writes through SPI.

use std::cell::Cell;

use pgrx::pg_sys;

use super::direct_insert::{self, builtin, compiled_defaults, has_columns, name_of, tuple_attr, Column, CompiledExpr, Statement, Target};
use crate::engine::capture::Op;
use crate::error::{CepError, CepResult};

/// The log's columns in order, as `sql/bootstrap.sql` makes them, and whether a row left NULL
/// there is acceptable (the columns pg_cep may leave empty).
const COLUMNS: [Column; 13] = [
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
const GIVEN: [usize; 10] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

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
    statement: Statement,
    change_id: *mut pg_sys::ExprState,
    correlation_id: *mut pg_sys::ExprState,
    changed_at: pg_sys::Datum,
    partition: Target,
    /// The default partition: each row is checked against its constraint, as the executor does
    /// (a month attached since the bounds were read would otherwise get rows in the default).
    check_partition: bool,
}

impl ChangeLog {
    /// Opens `cep.change_log` for one statement's rows, or `None` when the executor must write it.
    pub fn open() -> Option<ChangeLog> {
        let oid = direct_insert::relation_in_cep(c"change_log").filter(|&oid| direct_insert::insertable(oid))?;
        // SAFETY: relation opens inside a transaction; everything opened is closed by `close`, or
        // by the transaction's end if an error comes first.
        unsafe {
            let parent = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let rel = &*(*parent).rd_rel;
            let constraints = (*(*parent).rd_att).constr;
            let plain = rel.relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE
                && (*parent).rd_rules.is_null()
                && (*parent).trigdesc.is_null()
                && (constraints.is_null() || ((*constraints).num_check == 0 && !(*constraints).has_generated_stored))
                && has_columns((*parent).rd_att, &COLUMNS)
                && range_on_changed_at(oid);
            let defaults = if plain { compiled_defaults(parent, &GIVEN).and_then(|d| the_three(&d)) } else { None };
            let Some([change_id, changed_at, correlation_id]) = defaults else {
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            let statement = Statement::new();
            let at = statement.evaluate(changed_at);
            let estate = statement.estate;
            // The partition bounds as the executor reads them, kept for the statement (freed with the state).
            (*estate).es_partition_directory = pg_sys::CreatePartitionDirectory((*estate).es_query_cxt, omit_detached());
            let desc = pg_sys::PartitionDirectoryLookup((*estate).es_partition_directory, parent);
            let target = at.and_then(|at| route(desc, at));
            let opened = target.and_then(|(oid, is_default)| open_partition(&statement, parent, oid).map(|p| (p, is_default)));
            let Some((partition, check_partition)) = opened else {
                statement.free();
                pg_sys::table_close(parent, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            let changed_at = at.expect("a routed row has its time");
            Some(ChangeLog { parent, statement, change_id, correlation_id, changed_at, partition, check_partition })
        }
    }

    /// Stores one row and its index entries; returns its `change_id`. Fails as the executor
    /// would: a NULL default in a NOT NULL column, a row the default partition's constraint
    /// refuses, a duplicate key.
    pub fn write(&mut self, row: &LogRow) -> CepResult<i64> {
        // SAFETY: this log's open relations and executor state; values built in the per-row memory.
        let written = self.statement.in_row_memory(|| unsafe { self.store(row) });
        if written.is_ok() {
            ROWS_WRITTEN.with(|n| n.set(n.get() + 1));
        }
        written
    }

    unsafe fn store(&self, row: &LogRow) -> CepResult<i64> {
        // SAFETY: this log's open partition and executor state; `write` runs it in the per-row memory, where the texts are made.
        unsafe {
            let text = |s: Option<&[u8]>| s.map(direct_insert::text_datum);
            let values: [Option<pg_sys::Datum>; 13] = [
                self.statement.evaluate(self.change_id),
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
                self.statement.evaluate(self.correlation_id),
            ];
            for index in [CHANGE_ID, CORRELATION_ID] {
                if values[index].is_none() {
                    return Err(CepError::NotNull(format!(
                        "null value in column \"{}\" of relation \"change_log\" violates not-null constraint",
                        COLUMNS[index].0
                    )));
                }
            }
            self.partition.store(&self.statement, &values, self.check_partition);
            Ok(values[CHANGE_ID].map_or(0, |id| id.value() as i64))
        }
    }

    /// Closes what `open` opened, and makes the rows visible to the statement's next queries, as
    /// an INSERT through SPI does.
    pub fn close(self) {
        self.partition.close();
        // SAFETY: releases the parent this log opened; locks stay until the transaction ends.
        unsafe { pg_sys::table_close(self.parent, pg_sys::NoLock as pg_sys::LOCKMODE) };
        self.statement.free();
        direct_insert::rows_stored();
    }
}

/// `change_id`'s, `changed_at`'s and `correlation_id`'s defaults; `None` when one is missing, or
/// `changed_at`'s may differ within a statement (its rows go to one partition).
fn the_three(defaults: &[CompiledExpr]) -> Option<[*mut pg_sys::ExprState; 3]> {
    let find = |column: usize| defaults.iter().find(|d| d.column == column);
    let (change_id, changed_at, correlation_id) = (find(CHANGE_ID)?, find(CHANGED_AT)?, find(CORRELATION_ID)?);
    (defaults.len() == 3 && !changed_at.volatile).then_some([change_id.state, changed_at.state, correlation_id.state])
}

/// The leaf partition whose bounds hold `changed_at`, or else the default partition (then
/// `true`), as the executor's routing finds them.
unsafe fn route(desc: pg_sys::PartitionDesc, changed_at: pg_sys::Datum) -> Option<(pg_sys::Oid, bool)> {
    // SAFETY: the caller passes the executor's partition descriptor of the open parent: bounds, indexes and oids as
    // Postgres built them, indexed only where the descriptor says.
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

/// The partition, open for rows with its indexes; `None` (and nothing left open) if it is not one
/// this path can fill as the executor would.
unsafe fn open_partition(statement: &Statement, parent: pg_sys::Relation, oid: pg_sys::Oid) -> Option<Target> {
    // SAFETY: inside a transaction, with the caller's open parent and live statement; the partition is closed again when refused.
    unsafe {
        let partition = Target::open(statement, oid, false)?;
        if same_columns((*parent).rd_att, (*partition.relation).rd_att) {
            Some(partition)
        } else {
            partition.close();
            None
        }
    }
}

/// A partition's columns are its parent's, in the same places.
unsafe fn same_columns(parent: pg_sys::TupleDesc, partition: pg_sys::TupleDesc) -> bool {
    // SAFETY: the caller passes two open relations' descriptors; columns are read below their own counts.
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
