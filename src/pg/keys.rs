//! Keys as pg_cep's own tables hold them (`engine::stored_key`), once its 0.3.0 objects are
//! installed. Between installing the library and `ALTER EXTENSION pg_cep UPDATE`, keys are written
//! whole, as 0.2.0 wrote them: every path (the monitor, patterns, capture's direct and SQL paths)
//! then agrees, and the update bounds the long ones it finds.

use std::borrow::Cow;

use crate::engine::stored_key;

pub fn stored(key: &str) -> Cow<'_, str> {
    if crate::pg::cache::schema_0_3() {
        stored_key::stored_key(key)
    } else {
        Cow::Borrowed(key)
    }
}

/// The same, keeping the `String` it was given when the key is stored as it is.
pub fn into_stored(key: String) -> String {
    if crate::pg::cache::schema_0_3() {
        stored_key::into_stored_key(key)
    } else {
        key
    }
}
