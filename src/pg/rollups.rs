//! Keeping `cep.rollups` and `cep.key_rollups` up to date from the monitor: one upsert per table
//! per statement. Table-wide rows are spread over shards (one per backend, modulo 8), so that
//! concurrent sessions do not queue on the current minute's row.

use pgrx::pg_sys::BuiltinOid::{FLOAT8ARRAYOID, FLOAT8OID, INT2OID, INT8ARRAYOID, INT8OID, OIDOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
use pgrx::prelude::*;
use pgrx::PgOid;

use crate::engine::rollup::Rollup;
use crate::error::CepResult;
use crate::pg::spi;
use crate::pg::time::timestamptz as ts;

/// One row of one key (a single-row INSERT, or the row trigger): scalar parameters, no arrays.
const ADD_ONE: &str = "WITH minutes AS (
         INSERT INTO cep.rollups AS r (relid, minute, shard, count, sum, min, max) VALUES ($1, $3, $2, $5, $6, $7, $8)
         ON CONFLICT (relid, minute, shard) DO UPDATE SET count = r.count + excluded.count, sum = r.sum + excluded.sum,
             min = least(r.min, excluded.min), max = greatest(r.max, excluded.max))
     INSERT INTO cep.key_rollups AS r (relid, minute, key, count, sum, min, max) VALUES ($1, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (relid, minute, key) DO UPDATE SET count = r.count + excluded.count, sum = r.sum + excluded.sum,
         min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)";

/// Both tables in one statement: one round trip per trigger call.
const ADD: &str = "WITH minutes AS (
         INSERT INTO cep.rollups AS r (relid, minute, shard, count, sum, min, max)
         SELECT $1, m, $2, c, s, lo, hi FROM unnest($3::timestamptz[], $4::int8[], $5::float8[], $6::float8[], $7::float8[]) AS u(m, c, s, lo, hi)
         ON CONFLICT (relid, minute, shard) DO UPDATE SET count = r.count + excluded.count, sum = r.sum + excluded.sum,
             min = least(r.min, excluded.min), max = greatest(r.max, excluded.max))
     INSERT INTO cep.key_rollups AS r (relid, minute, key, count, sum, min, max)
     SELECT $1, m, k, c, s, lo, hi FROM unnest($8::timestamptz[], $9::text[], $10::int8[], $11::float8[], $12::float8[], $13::float8[]) AS u(m, k, c, s, lo, hi)
     ON CONFLICT (relid, minute, key) DO UPDATE SET count = r.count + excluded.count, sum = r.sum + excluded.sum,
         min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)";

/// Adds one statement's rows (already summed per minute and key) to the rollups of `relid`.
pub fn add(relid: pg_sys::Oid, rollup: &Rollup) -> CepResult<()> {
    if rollup.is_empty() {
        return Ok(());
    }
    // SAFETY: plain read of this backend's process id.
    let shard = (unsafe { pg_sys::MyProcPid } % 8) as i16;
    if let (1, Some(((minute, key), agg))) = (rollup.keys.len(), rollup.keys.iter().next()) {
        // One key in one minute: the table-wide figures are that key's.
        let plan = spi::kept(ADD_ONE, &[OIDOID, INT2OID, TIMESTAMPTZOID, TEXTOID, INT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID].map(PgOid::from))?;
        return Spi::connect_mut(|client| -> CepResult<()> {
            client.update(
                &*plan,
                None,
                &[relid.into(), shard.into(), ts(*minute).into(), key.as_str().into(), agg.count.into(), agg.sum.into(), agg.min.into(), agg.max.into()],
            )?;
            Ok(())
        });
    }
    let types = [
        OIDOID, INT2OID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID,
        TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID,
    ];
    let plan = spi::kept(ADD, &types.map(PgOid::from))?;
    let m: Vec<_> = rollup.minutes.iter().collect();
    let k: Vec<_> = rollup.keys.iter().collect();
    Spi::connect_mut(|client| -> CepResult<()> {
        client.update(
            &*plan,
            None,
            &[
                relid.into(),
                shard.into(),
                m.iter().map(|(t, _)| ts(**t)).collect::<Vec<_>>().into(),
                m.iter().map(|(_, a)| a.count).collect::<Vec<_>>().into(),
                m.iter().map(|(_, a)| a.sum).collect::<Vec<_>>().into(),
                m.iter().map(|(_, a)| a.min).collect::<Vec<_>>().into(),
                m.iter().map(|(_, a)| a.max).collect::<Vec<_>>().into(),
                k.iter().map(|((t, _), _)| ts(*t)).collect::<Vec<_>>().into(),
                k.iter().map(|((_, key), _)| key.clone()).collect::<Vec<_>>().into(),
                k.iter().map(|(_, a)| a.count).collect::<Vec<_>>().into(),
                k.iter().map(|(_, a)| a.sum).collect::<Vec<_>>().into(),
                k.iter().map(|(_, a)| a.min).collect::<Vec<_>>().into(),
                k.iter().map(|(_, a)| a.max).collect::<Vec<_>>().into(),
            ],
        )?;
        Ok(())
    })
}
