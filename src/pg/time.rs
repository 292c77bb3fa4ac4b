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
///
/// Every scored row asks (the night rule reads local hours), and the time zone lookup was about
/// 0.5% of all CPU in an alert storm: the offset is kept with the span it holds for, up to the
/// zone's next transition, and asked again only outside it or after `SET TimeZone`.
pub fn session_utc_offset_secs(ts: pg_sys::TimestampTz) -> i32 {
    // SAFETY: plain read of a backend global: the session zone, which lives as long as the backend.
    let zone = unsafe { pg_sys::session_timezone } as usize;
    let kept = OFFSET.with(|o| o.get()).filter(|k| k.zone == zone && (k.from..k.until).contains(&ts));
    if let Some(kept) = kept {
        return kept.secs;
    }
    let secs = offset_at(ts);
    if let Some(until) = next_transition(ts, zone) {
        OFFSET.with(|o| o.set(Some(KeptOffset { zone, from: ts, until, secs })));
    }
    secs
}

/// An offset and the span of timestamps it holds for in one time zone (by address).
#[derive(Clone, Copy)]
struct KeptOffset {
    zone: usize,
    from: pg_sys::TimestampTz,
    until: pg_sys::TimestampTz,
    secs: i32,
}

thread_local! {
    static OFFSET: std::cell::Cell<Option<KeptOffset>> = const { std::cell::Cell::new(None) };
}

fn offset_at(ts: pg_sys::TimestampTz) -> i32 {
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

/// The first timestamp after `ts` at which `zone` may change its offset (`i64::MAX`: never);
/// `None` when the zone cannot say.
fn next_transition(ts: pg_sys::TimestampTz, zone: usize) -> Option<pg_sys::TimestampTz> {
    if zone == 0 || ts == i64::MIN || ts == i64::MAX {
        return None;
    }
    let second: pg_sys::pg_time_t = pg_to_unix_micros(ts).div_euclid(1_000_000);
    let (mut before, mut after, mut boundary): (std::ffi::c_long, std::ffi::c_long, pg_sys::pg_time_t) = (0, 0, 0);
    let (mut before_dst, mut after_dst): (std::ffi::c_int, std::ffi::c_int) = (0, 0);
    // SAFETY: plain out-parameters on the stack, and the session zone read above (non-null).
    let found = unsafe {
        pg_sys::pg_next_dst_boundary(&second, &mut before, &mut before_dst, &mut boundary, &mut after, &mut after_dst, zone as *const pg_sys::pg_tz)
    };
    match found {
        0 => Some(i64::MAX),
        1 => boundary.checked_mul(1_000_000).and_then(|b| b.checked_sub(PG_EPOCH_UNIX_MICROS)),
        _ => None,
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
