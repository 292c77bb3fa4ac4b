//! Which column types each role of a watched table accepts, checked when watching and again
//! whenever the table's definition changes.

use pgrx::prelude::*;

use crate::error::{CepError, CepResult};

pub const KEY_TYPES: &[&str] = &["smallint", "integer", "bigint", "text", "character varying", "uuid"];
pub const AMOUNT_TYPES: &[&str] = &["numeric", "double precision", "real", "smallint", "integer", "bigint"];
pub const TIME_TYPES: &[&str] = &["timestamp with time zone", "timestamp without time zone"];
pub const LOCATION_TYPES: &[&str] = &["text", "character varying", "character"];

/// A table's live columns: name, type as `format_type` prints it, attribute number, type OID.
pub struct TableColumns {
    table: String,
    columns: Vec<(String, String, i16, pg_sys::Oid)>,
}

impl TableColumns {
    pub fn read(relid: pg_sys::Oid, table: &str) -> CepResult<TableColumns> {
        let columns = Spi::connect(|client| -> CepResult<Vec<(String, String, i16, pg_sys::Oid)>> {
            let rows = client.select(
                "SELECT attname::text, format_type(atttypid, NULL), attnum, atttypid FROM pg_attribute \
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
                ));
            }
            Ok(v)
        })?;
        Ok(TableColumns { table: table.to_string(), columns })
    }

    /// The column `name` exists and has one of the `allowed` types.
    pub fn check(&self, role: &str, name: &str, allowed: &[&str]) -> CepResult<()> {
        let Some((_, ty, _, _)) = self.columns.iter().find(|(n, ..)| n == name) else {
            return Err(CepError::UndefinedColumn(format!("{role} {name:?} is not a column of \"{}\"", self.table)));
        };
        if !allowed.contains(&ty.as_str()) {
            return Err(CepError::WrongColumnType(format!("{role} {name:?} has type {ty}; expected one of: {}", allowed.join(", "))));
        }
        Ok(())
    }

    /// The column `name` exists, whatever its type.
    pub fn require(&self, role: &str, name: &str) -> CepResult<()> {
        match self.type_of(name) {
            Some(_) => Ok(()),
            None => Err(CepError::UndefinedColumn(format!("{role} {name:?} is not a column of \"{}\"", self.table))),
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
        self.columns.iter().find(|(n, ..)| n == name).map(|(_, _, num, oid)| (*num, *oid))
    }
}
