//! The background worker: in `cep.maintenance_database`, it runs partition maintenance every
//! `cep.maintenance_interval` seconds and completes pattern timeouts every
//! `cep.timeout_interval` seconds, each table or batch in its own transaction. On each round it
//! also replaces a change-capture notifier that left notices unsent (`pg::notifier::supervise`).

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::error::CepResult;
use crate::gucs;

/// Registers the worker; only possible while the postmaster preloads pg_cep.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_cep worker")
        .set_type("pg_cep worker")
        .set_function("pg_cep_worker_main")
        .set_library("pg_cep")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// A periodic job: when it last ran, and how often it should.
struct Every {
    last: Option<Instant>,
}

impl Every {
    /// Time left before the job is due again; `None` when it is off.
    fn wait(&self, seconds: i32) -> Option<Duration> {
        if seconds <= 0 {
            return None;
        }
        let period = Duration::from_secs(seconds as u64);
        Some(self.last.map_or(Duration::ZERO, |t| period.saturating_sub(t.elapsed())))
    }

    fn due(&mut self, seconds: i32) -> bool {
        if self.wait(seconds) == Some(Duration::ZERO) {
            self.last = Some(Instant::now());
            return true;
        }
        false
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_cep_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::maintenance_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // The worker runs pg_cep's SQL as a superuser: resolve names as pg_cep's functions do, so a
    // function another role put in public can never be picked instead of a built-in.
    // SAFETY: sets a GUC of this backend to a constant, before any transaction starts.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    let (mut maintenance, mut timeouts) = (Every { last: None }, Every { last: None });
    loop {
        if maintenance.due(gucs::maintenance_interval()) {
            run_maintenance();
        }
        crate::pg::notifier::supervise();
        if timeouts.due(gucs::timeout_interval()) {
            in_own_transaction("pattern timeouts", || {
                Spi::connect_mut(|c| if installed(c)? { crate::pg::patterns::fire_timeouts(c, 10_000).map(|_| ()) } else { Ok(()) })
            });
        }
        // Wake when the next job is due, or every 10 s while both are off, to notice a reload.
        let wait = [maintenance.wait(gucs::maintenance_interval()), timeouts.wait(gucs::timeout_interval()), Some(Duration::from_secs(10))]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(10));
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(50)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: in the worker's main loop, outside any transaction, as Postgres's own workers reload their settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    // Stopped (pg_terminate_backend, or DROP DATABASE ... WITH (FORCE) of its database): exit
    // code 1 has the postmaster start it again after its restart time, where 0 would unregister
    // it until the server restarts. At shutdown it is not restarted either way.
    // SAFETY: the worker's last act: it holds no lock and is in no transaction.
    unsafe { pg_sys::proc_exit(1) };
}

/// The worker waits quietly in a database where pg_cep is not installed (yet).
fn installed(client: &pgrx::spi::SpiClient<'_>) -> CepResult<bool> {
    Ok(!client.select("SELECT 1 FROM pg_extension WHERE extname = 'pg_cep'", None, &[])?.is_empty())
}

/// Runs one unit of a background process's work in a transaction of its own; false if it failed.
/// An error, a pg_cep one or a Postgres ERROR (a table's DDL refused, a lock timeout), is logged
/// and its transaction rolled back, so that one table's failure neither stops the others nor
/// restarts the process.
pub fn in_own_transaction(what: &str, body: impl FnOnce() -> CepResult<()>) -> bool {
    let result = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        BackgroundWorker::transaction(std::panic::AssertUnwindSafe(body)).map_err(|e| e.to_string())
    }))
    .catch_others(|error| {
        // SAFETY: the ERROR left the worker's transaction failed; end it as autovacuum does.
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(match error {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r) | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
            pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        })
    })
    .execute();
    if let Err(message) = result {
        pgrx::warning!("pg_cep: {what}: {message}");
        return false;
    }
    true
}

/// One pass over the registered tables, each in its own transaction so one table's work is
/// committed (and its locks released) before the next starts.
fn run_maintenance() {
    let tables =
        BackgroundWorker::transaction(|| Spi::connect(|c| if installed(c)? { crate::pg::partitions::registered(c) } else { Ok(Vec::new()) }));
    let Ok(tables) = tables.inspect_err(|e| pgrx::warning!("pg_cep worker: {e}")) else { return };
    for relid in tables {
        in_own_transaction(&format!("maintenance of table {}", u32::from(relid)), || {
            Spi::connect_mut(|c| crate::pg::partitions::maintain(c, relid).map(|_| ()))
        });
    }
    // Retention of alerts, assessments and matches (0.3.0 on), by the cep.*_retention settings.
    in_own_transaction("retention", || {
        Spi::connect_mut(|c| {
            if c.select("SELECT to_regprocedure('cep.apply_retention(interval,interval,interval,integer)') IS NOT NULL", None, &[])?
                .first()
                .get_one::<bool>()?
                == Some(true)
            {
                c.update("SELECT * FROM cep.apply_retention()", None, &[])?;
            }
            Ok(())
        })
    });
}
