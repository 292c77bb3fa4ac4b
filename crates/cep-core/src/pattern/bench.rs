//! Engine throughput, run by `make bench` (`cargo test --release --lib pattern_engine_throughput
//! -- --ignored --nocapture`): pattern `a b+ c`, skip_till_next, within 30 minutes, 1M events
//! over 100k keys, on one core.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use super::{compile, AfterMatch, Contiguity, Emit, Event, KeyState, PatternOptions, Value};

/// Multiplicative hasher for u64 keys: the default SipHash would dominate the measurement.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[test]
#[ignore = "a benchmark: run with --release --ignored"]
fn pattern_engine_throughput() {
    let (n_events, n_keys) = (1_000_000usize, 100_000u64);
    let define = serde_json::json!({
        "a": {"event_type": "login"},
        "b": {"event_type": "browse", "amount": {">": 10}},
        "c": {"event_type": "purchase", "amount": {">=": 100}},
    });
    let options = PatternOptions {
        contiguity: Contiguity::SkipTillNext,
        after_match: AfterMatch::SkipPastLastRow,
        within: Some(30 * 60 * 1_000_000),
        max_partials: 1000,
        emit: Emit::Eager,
    };
    let pattern = compile("a b+ c", &define, options).unwrap();
    assert_eq!(pattern.columns(), ["amount", "event_type"]);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let types = ["login", "browse", "browse", "browse", "purchase", "logout"];
    let mut ts = 0i64;
    let events: Vec<(u64, Event)> = (0..n_events as i64)
        .map(|id| {
            ts += (rnd() % 20_000) as i64;
            let key = rnd() % n_keys;
            let kind = types[(rnd() % types.len() as u64) as usize];
            (key, Event { id, ts, values: vec![Value::Int((rnd() % 1000) as i64), Value::Text(kind.to_string())] })
        })
        .collect();
    let mut states: HashMap<u64, KeyState, BuildHasherDefault<FxHasher>> = HashMap::default();
    let (mut out, mut matches) = (Vec::new(), 0usize);
    let started = Instant::now();
    for (key, event) in &events {
        let state = states.entry(*key).or_insert_with(|| pattern.new_state());
        pattern.advance(state, event, &mut out);
        if state.is_empty() {
            states.remove(key);
        }
        matches += out.len();
        out.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(matches > 0);
    println!(
        "{n_events} events, {n_keys} keys: {:.2} M events/s ({matches} matches, {} keys with partial matches)",
        n_events as f64 / secs / 1e6,
        states.len()
    );
}
