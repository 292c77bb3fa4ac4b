//! Shared pgrx plumbing: the per-backend caches, the kept SPI plans, time conversion.

pub mod cache;
pub mod capture;
pub mod change_log;
pub mod columns;
pub mod cooldown;
pub mod history;
pub mod json_arg;
pub mod notifier;
pub mod partitions;
pub mod patterns;
pub mod privileges;
pub mod rollups;
pub mod scoring;
pub mod shmem;
pub mod spi;
pub mod state_cache;
pub mod stats;
pub mod table_arg;
pub mod time;
pub mod tuple;
pub mod version;
pub mod watched;
pub mod window_cache;
pub mod worker;
pub mod xact;
