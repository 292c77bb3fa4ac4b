//! Which column types each role of a watched table accepts, checked when watching and again
//! whenever the table's definition changes.

use pgrx::prelude::*;

use crate::error::{CepError, CepResult};

pub const KEY_TYPES: &[&str] = &["smallint", "integer", "bigint", "text", "character varying", "uuid"];
pub const AMOUNT_TYPES: &[&str] = &["numeric", "double precision", "real", "smallint", "integer", "bigint"];
pub const TIME_TYPES: &[&str] = &["timestamp with time zone", "timestamp without time zone"];
pub const LOCATION_TYPES: &[&str] = &["text", "character varying", "character"];

/// A table's live columns: name, type as `format_type` prints it, attribute number, type OID,
/// and whether it is a virtual generated column.
pub struct TableColumns {
    table: String,
    columns: Vec<(String, String, i16, pg_sys::Oid, bool)>,
    /// Whether the columns are read from rows in triggers (the monitor, patterns, capture) rather
    /// than by a query over the table.
    in_triggers: bool,
}

impl TableColumns {
    /// The columns of a table whose rows pg_cep reads in its triggers.
    pub fn read(relid: pg_sys::Oid, table: &str) -> CepResult<TableColumns> {
        let columns = Spi::connect(|client| -> CepResult<Vec<(String, String, i16, pg_sys::Oid, bool)>> {
            // attgenerated is 'v' only on PostgreSQL 18 and later; the same query serves 15.
            let rows = client.select(
                "SELECT attname::text, format_type(atttypid, NULL), attnum, atttypid, attgenerated = 'v' FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
                None,
                &[relid.into()],
            )?;
            let mut v = Vec::new();
            for row in rows {
                v.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<i16>(3)?.unwrap_or_default(),
                    row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
                    row.get::<bool>(5)?.unwrap_or(false),
                ));
            }
            Ok(v)
        })?;
        Ok(TableColumns { table: table.to_string(), columns, in_triggers: true })
    }

    /// The columns of a table that pg_cep only queries (with SQL, which computes virtual columns).
    pub fn read_for_queries(relid: pg_sys::Oid, table: &str) -> CepResult<TableColumns> {
        Ok(TableColumns { in_triggers: false, ..Self::read(relid, table)? })
    }

    /// The column `name` exists and has one of the `allowed` types.
    pub fn check(&self, role: &str, name: &str, allowed: &[&str]) -> CepResult<()> {
        let (_, ty, ..) = self.usable(role, name)?;
        if !allowed.contains(&ty.as_str()) {
            return Err(CepError::WrongColumnType(format!("{role} {name:?} has type {ty}; expected one of: {}", allowed.join(", "))));
        }
        Ok(())
    }

    /// The column `name` exists, whatever its type, and its value is in the rows pg_cep reads.
    ///
    /// A virtual generated column (PostgreSQL 18) is computed when a query reads it, never
    /// stored: every trigger, PL/pgSQL's included, sees it as NULL. pg_cep refuses it rather than
    /// score, match or capture a NULL.
    pub fn require(&self, role: &str, name: &str) -> CepResult<()> {
        self.usable(role, name).map(|_| ())
    }

    fn usable(&self, role: &str, name: &str) -> CepResult<&(String, String, i16, pg_sys::Oid, bool)> {
        match self.columns.iter().find(|(n, ..)| n == name) {
            None => Err(CepError::UndefinedColumn(format!("{role} {name:?} is not a column of \"{}\"", self.table))),
            Some((.., true)) if self.in_triggers => Err(CepError::Unsupported(format!(
                "{role} {name:?} of \"{}\" is a virtual generated column, which triggers see as NULL: make it STORED or use another column",
                self.table
            ))),
            Some(column) => Ok(column),
        }
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    pub fn type_of(&self, name: &str) -> Option<&str> {
        self.columns.iter().find(|(n, ..)| n == name).map(|(_, t, ..)| t.as_str())
    }

    /// Attribute number and type OID of a column.
    pub fn position(&self, name: &str) -> Option<(i16, pg_sys::Oid)> {
        self.columns.iter().find(|(n, ..)| n == name).map(|(_, _, num, oid, _)| (*num, *oid))
    }
}
