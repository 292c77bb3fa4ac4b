//! pg_cep's engine, pure Rust: no pgrx here, so everything below is tested with plain `#[test]`
//! (`cargo test -p cep-core`), and the compiler keeps it that way.

pub mod capture;
pub mod clock;
pub mod counters;
pub mod evaluate;
#[cfg(test)]
mod fuzz;
pub mod interval;
pub mod notice_queue;
pub mod partition;
pub mod pattern;
pub mod payload;
pub mod repeats;
pub mod rollup;
pub mod rollup_store;
pub mod rules;
pub mod shared_repeats;
pub mod stored_key;
pub mod window;
pub mod window_cache;

static STACK_CHECK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// The host's stack check (Postgres's `check_stack_depth`, which raises an ERROR well before the
/// stack runs out), called on every level of the parsers' recursion. Their depth limits keep
/// them far from it; this is the second guard, as every recursive part of Postgres has.
pub fn set_stack_check(check: fn()) {
    let _ = STACK_CHECK.set(check);
}

/// Calls the host's stack check, if one is set (plain tests set none).
pub fn check_stack() {
    if let Some(check) = STACK_CHECK.get() {
        check();
    }
}

/// Longest message an engine error may carry. User input is echoed in messages so that they name
/// the offending value; without a bound a 10 MB argument would make a 10 MB error.
pub const MAX_MESSAGE_BYTES: usize = 1_000;

/// Characters of user input quoted in a message before it is cut with `…`.
const EXCERPT_CHARS: usize = 80;

/// `text` quoted as `{:?}` prints it, cut to [`EXCERPT_CHARS`] characters.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((at, _)) => format!("{:?}… ({} bytes)", &text[..at], text.len()),
    }
}

/// Cuts a message to [`MAX_MESSAGE_BYTES`] on a character boundary.
pub fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut at = MAX_MESSAGE_BYTES - 3;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod message_tests {
    #[test]
    fn excerpts_and_messages_are_bounded() {
        assert_eq!(super::excerpt("abc"), "\"abc\"");
        let long = "é".repeat(10_000);
        let e = super::excerpt(&long);
        assert!(e.chars().count() < 120 && e.ends_with("(20000 bytes)"), "{e}");
        let m = super::bounded_message("ü".repeat(5_000));
        assert!(m.len() <= super::MAX_MESSAGE_BYTES && m.ends_with('…'));
        assert_eq!(super::bounded_message("short".into()), "short");
    }
}
