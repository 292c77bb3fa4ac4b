//! Keys as pg_cep's own indexed tables hold them (`cep.alerts`, `cep.pattern_state`,
//! `cep.change_log`).
//!
//! A btree entry must fit in a third of a page (2704 bytes), so a user's key of a few kB that does
//! not compress would fail the user's INSERT on pg_cep's index. A key longer than
//! [`MAX_STORED_KEY_BYTES`] is stored as its first bytes, [`MARK`] and the SHA-256 of the whole
//! key in hex: two keys share a stored form only if their hashes collide. A key that already ends
//! the way a stored form does is hashed too, so a short key can never pass for a long one's form.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// The longest key stored as it is, in bytes; also the length of every long key's stored form at
/// most.
pub const MAX_STORED_KEY_BYTES: usize = 1024;
/// Between a long key's first bytes and its hash.
pub const MARK: &str = "...sha256:";
const HASH_HEX: usize = 64;

/// The key as pg_cep stores it: itself when at most [`MAX_STORED_KEY_BYTES`] long (and not shaped
/// like a stored form), else its bounded form.
pub fn stored_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_STORED_KEY_BYTES && !shaped_like_stored(key) {
        return Cow::Borrowed(key);
    }
    let mut cut = MAX_STORED_KEY_BYTES - MARK.len() - HASH_HEX;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + MARK.len() + HASH_HEX);
    out.push_str(&key[..cut.min(key.len())]);
    out.push_str(MARK);
    for byte in Sha256::digest(key.as_bytes()).iter() {
        out.push(char::from_digit((byte >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((byte & 0xf) as u32, 16).unwrap_or('0'));
    }
    Cow::Owned(out)
}

/// The same, keeping the `String` it was given when the key is stored as it is.
pub fn into_stored_key(key: String) -> String {
    match stored_key(&key) {
        Cow::Borrowed(_) => key,
        Cow::Owned(stored) => stored,
    }
}

/// Ends with [`MARK`] and 64 bytes: the shape of a stored form.
fn shaped_like_stored(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() >= MARK.len() + HASH_HEX && bytes[bytes.len() - HASH_HEX - MARK.len()..].starts_with(MARK.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_stored_as_they_are_and_borrowed() {
        for key in ["", "42", "user@example.com", &"k".repeat(MAX_STORED_KEY_BYTES), "ünïcödé"] {
            assert!(matches!(stored_key(key), Cow::Borrowed(k) if k == key), "{key}");
        }
    }

    #[test]
    fn a_long_key_becomes_its_prefix_the_mark_and_its_hash() {
        let key = "a".repeat(1_000_000);
        let stored = stored_key(&key);
        assert_eq!(stored.len(), MAX_STORED_KEY_BYTES);
        // FIPS 180-2's test vector: SHA-256 of a million 'a's.
        let expected = format!(
            "{}{MARK}cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            "a".repeat(MAX_STORED_KEY_BYTES - MARK.len() - HASH_HEX)
        );
        assert_eq!(stored, expected);
        assert_eq!(stored_key(&key), stored, "the same key, the same form");
    }

    #[test]
    fn long_keys_sharing_their_first_kilobyte_stay_apart() {
        let common = "x".repeat(3000);
        let (a, b) = (format!("{common}a"), format!("{common}b"));
        assert_ne!(stored_key(&a), stored_key(&b));
        assert_eq!(stored_key(&a)[..900], stored_key(&b)[..900]);
    }

    /// A short key written to look like a long key's stored form is hashed as well: it cannot be
    /// taken for that key (and share its cooldown or pattern state).
    #[test]
    fn a_key_shaped_like_a_stored_form_is_not_taken_for_it() {
        let long = "y".repeat(4000);
        let forged = stored_key(&long).into_owned();
        assert!(forged.len() <= MAX_STORED_KEY_BYTES);
        assert_ne!(stored_key(&forged), forged.as_str());
        assert_ne!(stored_key(&forged), stored_key(&long));
        // Stable: the form of a stored form is a fixed point only by chance of the hash.
        assert!(stored_key(&stored_key(&forged)).len() <= MAX_STORED_KEY_BYTES);
    }

    #[test]
    fn multibyte_keys_are_cut_on_a_character_boundary() {
        for ch in ["é", "€", "𝄞"] {
            let key = ch.repeat(2000);
            let stored = stored_key(&key);
            assert!(stored.len() <= MAX_STORED_KEY_BYTES);
            let prefix = &stored[..stored.len() - HASH_HEX - MARK.len()];
            assert!(prefix.chars().all(|c| c.to_string() == ch), "{ch}");
        }
    }

    #[test]
    fn into_stored_key_keeps_a_short_string() {
        let key = String::from("abc");
        let ptr = key.as_ptr();
        let kept = into_stored_key(key);
        assert_eq!(kept.as_ptr(), ptr);
        assert_eq!(into_stored_key("z".repeat(2000)), stored_key(&"z".repeat(2000)));
    }
}
