//! pg_cep: complex event processing and risk control inside PostgreSQL.
//!
//! `engine` (the `cep-core` crate, `crates/cep-core`) is pure Rust and knows nothing of Postgres;
//! `api` is what users call from SQL, one file per area; `pg` is the shared plumbing (caches, kept
//! SPI plans, time conversion).

use pgrx::prelude::*;

pub mod api;
pub use cep_core as engine;
pub mod error;
pub mod gucs;
pub mod pg;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: Postgres's own check, raising an ERROR that pgrx carries back through Rust frames.
    engine::set_stack_check(|| unsafe { pgrx::pg_sys::check_stack_depth() });
    pg::cache::register_invalidation_callback();
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    let preloading = unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress };
    if preloading {
        gucs::init_preloaded();
    }
    pg::stats::init();
    pg::window_cache::init();
    pg::state_cache::init();
    pg::rollups::init();
    pg::notifier::init();
    pg::cooldown::init();
    pg::xact::init();
    if preloading {
        pg::worker::register();
        pg::two_phase::init();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
