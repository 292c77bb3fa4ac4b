//! Every `cep.*` setting, in one place, with typed getters.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

static HIGH_RISK_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.7);
static MEDIUM_RISK_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.4);
static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(0);
static TIMEOUT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1);
static MAINTENANCE_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5000);
static NOTIFY_AFTER_COMMIT: GucSetting<bool> = GucSetting::<bool>::new(true);
static MAINTENANCE_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ALERT_RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ASSESSMENT_RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MATCH_RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static WINDOW_CACHE_KEYS: GucSetting<i32> = GucSetting::<i32>::new(-1);
static WINDOW_CACHE_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(-1);
static PATTERN_STATE_COPIES: GucSetting<i32> = GucSetting::<i32>::new(16_384);
static ROLLUP_RECORDS: GucSetting<i32> = GucSetting::<i32>::new(262_144);
static CLOCK_OFFSET: GucSetting<i32> = GucSetting::<i32>::new(0);
static ALERT_REPEAT_FLUSH_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1000);

pub fn init() {
    GucRegistry::define_float_guc(
        c"cep.high_risk_threshold",
        c"Total risk score at or above which a transaction is 'high' risk.",
        c"The seed's RealTimeRiskMonitor uses 0.7.",
        &HIGH_RISK_THRESHOLD,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"cep.medium_risk_threshold",
        c"Total risk score at or above which a transaction is 'medium' risk.",
        c"The seed's RealTimeRiskMonitor uses 0.4. Below it a transaction is 'low' risk.",
        &MEDIUM_RISK_THRESHOLD,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"cep.maintenance_lock_timeout",
        c"How long partition maintenance keeps trying for a table lock before it skips the step.",
        c"Maintenance never queues for a lock, so inserts are never stuck behind it and it can take part in no deadlock.",
        &MAINTENANCE_LOCK_TIMEOUT,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"cep.maintenance_interval",
        c"How often the background worker runs cep.run_maintenance() (0 turns it off).",
        c"Needs pg_cep in shared_preload_libraries; reloaded on SIGHUP.",
        &MAINTENANCE_INTERVAL,
        0,
        86_400 * 31,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"cep.alert_repeat_flush_interval",
        c"How often the repeats that a database's sessions count under a cooldown are added to the alert rows.",
        c"Longer: fewer row updates in a storm, and repeats, last_seen and max_score further behind; 0 writes them with every alerting statement. When no session alerts any more, the sender adds them after two intervals (at least 1 s).",
        &ALERT_REPEAT_FLUSH_INTERVAL,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"cep.clock_offset",
        c"Moves pg_cep's clock forward, for tests: pattern deadlines and capture's correlation windows are judged at now() plus this.",
        c"Lets a test see a pattern's `within` pass without waiting for it. Superuser only; leave it at 0.",
        &CLOCK_OFFSET,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"cep.notify_after_commit",
        c"Whether change-capture notifications are sent just after commit by a sender per database.",
        c"Off: the committing transaction sends them itself, and Postgres serialises every committing transaction that notifies. \
          Needs pg_cep in shared_preload_libraries; without it they are always sent by the transaction.",
        &NOTIFY_AFTER_COMMIT,
        GucContext::Userset,
        GucFlags::default(),
    );
}

pub fn notify_after_commit() -> bool {
    NOTIFY_AFTER_COMMIT.get()
}

/// Settings read by the background worker only.
fn init_worker_settings() {
    GucRegistry::define_int_guc(
        c"cep.timeout_interval",
        c"How often the background worker runs cep.fire_timeouts() (0 turns it off).",
        c"Completes patterns that end in an absence. Needs pg_cep in shared_preload_libraries; reloaded on SIGHUP.",
        &TIMEOUT_INTERVAL,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// Seconds; 0 means off.
pub fn timeout_interval() -> i32 {
    TIMEOUT_INTERVAL.get()
}

/// Server-start settings, defined only while the postmaster preloads pg_cep, and before the
/// modules that size shared memory from them ask for it.
pub fn init_preloaded() {
    init_worker_settings();
    init_shared_memory_settings();
    for (name, what, setting) in [
        (c"cep.alert_retention", c"How long alerts are kept (empty: forever); cep.apply_retention() deletes older ones.", &ALERT_RETENTION),
        (c"cep.assessment_retention", c"How long rows of cep.risk_assessments are kept (empty: forever).", &ASSESSMENT_RETENTION),
        (c"cep.match_retention", c"How long pattern matches are kept (empty: forever).", &MATCH_RETENTION),
    ] {
        GucRegistry::define_string_guc(
            name,
            what,
            c"An interval such as '90 days'. The maintenance worker applies it in its database every cep.maintenance_interval.",
            setting,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
    GucRegistry::define_string_guc(
        c"cep.maintenance_database",
        c"The database the maintenance worker connects to.",
        c"pg_cep must be installed there; the worker waits quietly until it is.",
        &MAINTENANCE_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

/// The sizes of pg_cep's shared memory regions.
fn init_shared_memory_settings() {
    GucRegistry::define_int_guc(
        c"cep.window_cache_keys",
        c"Keys the monitor's shared window cache can hold (0 turns the cache off, -1 sizes it from shared_buffers).",
        c"Needs pg_cep in shared_preload_libraries; takes effect at server start.",
        &WINDOW_CACHE_KEYS,
        -1,
        10_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"cep.window_cache_events",
        c"Events the monitor's shared window cache can hold, over all keys (about 32 bytes each; -1 sizes it from shared_buffers).",
        c"A key whose window holds more than fit is read from the table instead.",
        &WINDOW_CACHE_EVENTS,
        -1,
        100_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"cep.pattern_state_copies",
        c"Partial-match states of sequence patterns copied in shared memory (about 1 kB each; 0 turns it off).",
        c"A key whose state is copied is advanced without reading cep.pattern_state. Takes effect at server start.",
        &PATTERN_STATE_COPIES,
        0,
        10_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"cep.rollup_records",
        c"Per-key, per-minute records the shared rollups hold (about 45 bytes each; 0 turns them off).",
        c"Needs pg_cep in shared_preload_libraries; takes effect at server start. Without them, cep.realtime_stats reads the rows.",
        &ROLLUP_RECORDS,
        0,
        100_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

/// -1 sizes the cache from shared_buffers.
pub fn window_cache_keys() -> i32 {
    WINDOW_CACHE_KEYS.get()
}

/// -1 sizes the cache from shared_buffers.
pub fn window_cache_events() -> i32 {
    WINDOW_CACHE_EVENTS.get()
}

pub fn pattern_state_copies() -> i32 {
    PATTERN_STATE_COPIES.get()
}

pub fn rollup_records() -> i32 {
    ROLLUP_RECORDS.get()
}

/// Milliseconds added to pg_cep's clock (see `pg::time::now`); 0 outside tests.
pub fn clock_offset_ms() -> i32 {
    CLOCK_OFFSET.get()
}

/// Set in milliseconds; 0 flushes with every alerting statement.
pub fn alert_repeat_flush_interval() -> std::time::Duration {
    std::time::Duration::from_millis(ALERT_REPEAT_FLUSH_INTERVAL.get().max(0) as u64)
}

/// Milliseconds.
pub fn maintenance_lock_timeout() -> i32 {
    MAINTENANCE_LOCK_TIMEOUT.get()
}

/// Seconds; 0 means off.
pub fn maintenance_interval() -> i32 {
    MAINTENANCE_INTERVAL.get()
}

pub fn maintenance_database() -> String {
    MAINTENANCE_DATABASE.get().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "postgres".into())
}

pub fn high_risk_threshold() -> f64 {
    HIGH_RISK_THRESHOLD.get()
}

pub fn medium_risk_threshold() -> f64 {
    MEDIUM_RISK_THRESHOLD.get()
}
