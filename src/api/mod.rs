//! What users call from SQL, one file per area. Each function converts its arguments, calls the
//! engine and converts the result back.

pub mod alerts;
pub mod backtest;
pub mod capture;
pub mod evaluate;
pub mod keys;
pub mod monitor;
pub mod partitions;
pub mod patterns;
pub mod rollups;
pub mod rules;
pub mod stats;
pub mod watch;
pub mod windows;
