//! Postgres timestamps to the engine's Unix microseconds, and back to SQL values.

use pgrx::pg_sys;
use pgrx::FromDatum;

/// Microseconds from 1970-01-01 to 2000-01-01, Postgres' epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// An infinite timestamp stays infinite (`i64::MIN` or `i64::MAX`).
pub fn pg_to_unix_micros(ts: pg_sys::TimestampTz) -> i64 {
    if ts == i64::MIN || ts == i64::MAX {
        return ts;
    }
    ts.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// The session time zone's offset from UTC at `ts`, in seconds east of Greenwich.
pub fn session_utc_offset_secs(ts: pg_sys::TimestampTz) -> i32 {
    let mut tz: std::ffi::c_int = 0;
    // SAFETY: pg_tm is a plain C struct; timestamp2tm fills it, and reads only the session zone.
    let mut tm: pg_sys::pg_tm = unsafe { std::mem::zeroed() };
    let mut fsec: pg_sys::fsec_t = 0;
    // SAFETY: plain out-parameters on the stack; no time zone name or abbreviation is asked for (null pointers).
    let rc = unsafe { pg_sys::timestamp2tm(ts, &mut tz, &mut tm, &mut fsec, std::ptr::null_mut(), std::ptr::null_mut()) };
    if rc == 0 {
        -tz
    } else {
        0
    }
}

/// A raw timestamptz (microseconds since 2000-01-01) as the SQL value, for SPI parameters.
pub fn timestamptz(micros: pg_sys::TimestampTz) -> pgrx::datum::TimestampWithTimeZone {
    // SAFETY: a timestamptz datum is its microseconds since 2000-01-01.
    unsafe { pgrx::datum::TimestampWithTimeZone::from_datum(pg_sys::Datum::from(micros), false) }.expect("non-null")
}

/// The time now, not the transaction's: what processes sharing memory stamp their bookkeeping with
/// (notification queues, waiting repeats, rollup minutes), all on one clock.
pub fn wall_clock() -> pg_sys::TimestampTz {
    // SAFETY: reads the clock; no state of Postgres is touched.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// pg_cep's clock: the transaction's start time (what SQL's `now()` returns), moved forward by
/// `cep.clock_offset`. Every judgement of "has this time passed" (pattern deadlines, windows
/// ending now, capture's anomaly windows) reads it, so a test can let time pass without sleeping.
pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: plain read of the transaction's start time, set whenever a transaction is running.
    let start = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    start.saturating_add(i64::from(crate::gucs::clock_offset_ms()) * 1000)
}
