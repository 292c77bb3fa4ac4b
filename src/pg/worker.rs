//! The maintenance background worker: runs `cep.run_maintenance()` every
//! `cep.maintenance_interval` seconds in `cep.maintenance_database`, one transaction per table.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::gucs;

/// Registers the worker; only possible while the postmaster preloads pg_cep.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_cep maintenance")
        .set_type("pg_cep maintenance")
        .set_function("pg_cep_maintenance_main")
        .set_library("pg_cep")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_cep_maintenance_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::maintenance_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let mut last_run: Option<Instant> = None;
    loop {
        let interval = gucs::maintenance_interval();
        let due = interval > 0 && last_run.is_none_or(|t| t.elapsed() >= Duration::from_secs(interval as u64));
        if due {
            last_run = Some(Instant::now());
            run_once();
        }
        // Wake at the next run, or every 10 s while off, to notice a reload that turns it on.
        let wait = if interval > 0 { Duration::from_secs(interval as u64).saturating_sub(last_run.map_or(Duration::ZERO, |t| t.elapsed())) } else { Duration::from_secs(10) };
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(100)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
}

/// One pass over the registered tables, each in its own transaction so one table's work is
/// committed (and its locks released) before the next starts.
fn run_once() {
    let tables = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let installed = client.select("SELECT 1 FROM pg_extension WHERE extname = 'pg_cep'", None, &[])?.len() > 0;
            if !installed {
                return Ok(Vec::new());
            }
            crate::pg::partitions::registered(client)
        })
    });
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            pgrx::warning!("pg_cep maintenance: {e}");
            return;
        }
    };
    for relid in tables {
        let result = BackgroundWorker::transaction(|| Spi::connect_mut(|client| crate::pg::partitions::maintain(client, relid).map(|_| ())));
        if let Err(e) = result {
            pgrx::warning!("pg_cep maintenance: {e}");
        }
    }
}
