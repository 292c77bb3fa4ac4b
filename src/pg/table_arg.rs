//! A `regclass` argument that is checked before it is opened.
//!
//! pgrx's `PgRelation` opens the relation while it decodes the argument, so an OID whose table
//! was dropped (`cep.unwatch(16384)`, a stale `regclass` kept by a client) fails inside Postgres
//! with `could not open relation with OID ...` and SQLSTATE XX000, before pg_cep can say which
//! argument is wrong. `TableArg` is the same `regclass` in SQL, and [`TableArg::open`] answers
//! such an OID with 42P01 naming the parameter.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{CepError, CepResult};

#[derive(Clone, Copy, Debug)]
pub struct TableArg(pub pg_sys::Oid);

impl TableArg {
    /// The relation, locked as `PgRelation` locks an argument; 42P01 naming `parameter` when no
    /// relation has this OID.
    pub fn open(self, parameter: &str) -> CepResult<PgRelation> {
        // SAFETY: opens and closes by OID; the lock taken stays for the transaction, so the
        // relation cannot go away before `with_lock` opens it again.
        unsafe {
            let rel = pg_sys::try_relation_open(self.0, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            if rel.is_null() {
                return Err(CepError::UndefinedTable(format!("{parameter}: relation with OID {} does not exist", u32::from(self.0))));
            }
            pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            Ok(PgRelation::with_lock(self.0, pg_sys::AccessShareLock as pg_sys::LOCKMODE))
        }
    }
}

/// Only plain and partitioned tables carry pg_cep's triggers (a view, a foreign table or a sequence
/// would take the registration and never fire): the one check every registering function makes.
pub fn require_table(relation: &PgRelation) -> CepResult<()> {
    // SAFETY: a relation PgRelation holds open; rd_rel is its pg_class row.
    let relkind = unsafe { (*relation.rd_rel).relkind } as u8;
    if relkind == pg_sys::RELKIND_RELATION || relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
        return Ok(());
    }
    Err(CepError::WrongObjectType(format!("\"{}\" is not a table: only plain and partitioned tables can be used", relation.name())))
}

/// How SQL names the relation (`regclass::text`: schema-qualified unless on the search path,
/// quoted where needed), for messages and for SQL that pg_cep builds.
pub fn relation_name(relid: pg_sys::Oid) -> CepResult<String> {
    Ok(Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[relid.into()])?.unwrap_or_default())
}

impl FromDatum for TableArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<TableArg> {
        if is_null {
            None
        } else {
            // SAFETY: a regclass datum is an oid, passed by value.
            unsafe { pg_sys::Oid::from_datum(datum, false) }.map(TableArg)
        }
    }
}

// SAFETY: decoded as `PgRelation` is (pgrx's `argue_from_datum!`), without opening the relation.
unsafe impl<'fcx> ArgAbi<'fcx> for TableArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: this call's own argument, given by pgrx; its SQL type is regclass, which `from_datum` reads.
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: this call's own argument, given by pgrx; its SQL type is regclass, which `from_datum` reads.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

pgrx::impl_sql_translatable!(TableArg, "regclass");
