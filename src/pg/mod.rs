//! Shared pgrx plumbing: the per-backend caches, the kept SPI plans, time conversion.

pub mod cache;
pub mod history;
pub mod time;
