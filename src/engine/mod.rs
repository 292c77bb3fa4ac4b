//! Pure Rust: no pgrx types here, so everything below is tested with plain `#[test]`.

pub mod capture;
pub mod clock;
pub mod counters;
pub mod evaluate;
pub mod interval;
pub mod notice_queue;
pub mod partition;
pub mod pattern;
pub mod payload;
pub mod rollup;
pub mod rollup_store;
pub mod rules;
pub mod window;
pub mod window_cache;
