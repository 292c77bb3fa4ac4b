//! `#[pg_test]`s: run inside a real Postgres by `cargo pgrx test`, one file per feature.
//!
//! pgrx's harness calls each test as `SELECT "tests"."<fn>"()`, so every file keeps its tests in a
//! `#[pgrx::pg_schema] mod tests`: each such module adds to the one SQL schema `tests`.
//! `helpers.rs` holds what several files share (`run`, `one`, `outcome`, the seed's rules and table).

mod helpers;

mod capture;
mod catalog;
mod limits;
mod monitor;
mod partitions;
mod patterns;
mod rollups;
mod rules;
mod security;
mod windows;
