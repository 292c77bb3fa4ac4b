//! `cep.stored_key`: a key as pg_cep's own tables hold it.

use pgrx::prelude::*;

/// The key as `cep.alerts`, `cep.pattern_state` and `cep.change_log` store it: itself when at most
/// 1024 bytes long, else its first bytes, `...sha256:` and the SHA-256 of the whole key in hex, so
/// that a key of any length fits pg_cep's indexes (a btree entry must be under 2.7 kB). Query
/// those tables by `key = cep.stored_key(...)` when keys can be long.
///
/// ```sql
/// SELECT cep.stored_key('42'), length(cep.stored_key(repeat('x', 5000)));
/// ```
#[pg_extern(immutable, strict, parallel_safe)]
fn stored_key(key: &str) -> String {
    crate::engine::stored_key::stored_key(key).into_owned()
}
