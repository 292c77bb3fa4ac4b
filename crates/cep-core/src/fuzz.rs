//! Seeded, bounded property tests ("fuzz") of the pure engine: the pattern parser and
//! compiler, `define` predicates and the matcher, the rule language, interval parsing and
//! window arithmetic. Plain `#[test]`s whose names start with `fuzz_`, so
//! `cargo test -p cep-core fuzz_` runs exactly these.
//!
//! - Seeded: every property draws its inputs from ChaCha seeded with `PG_CEP_FUZZ_SEED`
//!   (default [`DEFAULT_SEED`]) and writes no failure-persistence files, so a run is
//!   reproducible: the same command with the same environment generates the same inputs.
//! - Bounded: each property runs `PG_CEP_FUZZ_CASES` generated cases (default
//!   [`DEFAULT_CASES`], a few seconds for the whole suite; `make fuzz` sets 20000).
//!   Shrinking a failure is capped in iterations and time.
//! - Every call on a generated input is timed and must return within [`BUDGET`] (2 s).
//!   This catches runaway work (an exponential blowup, a loop that walks i64 one step at a
//!   time), not slowness: these are debug builds on a shared machine, and typical calls take
//!   microseconds.
//! - Every error message must be at most [`MAX_MESSAGE`] bytes, even for 1-10 MB inputs:
//!   messages are echoed to the client and the server log.
//!
//! A failure prints the property, the seed, the case count and the minimal failing input
//! (clipped; big inputs are built by repeating a chunk, so the shrunk form stays readable).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner};
use serde_json::{json, Map, Value as Json};

use super::interval::parse_interval;
use super::pattern::{compile, match_all, AfterMatch, Contiguity, Emit, Event, Pattern, PatternOptions, Value};
use super::rules::{parse_condition, validate_rule};
use super::window::{hop, window_starts, MAX_HOP_WINDOWS};

/// Cases per property when `PG_CEP_FUZZ_CASES` is unset.
const DEFAULT_CASES: u32 = 64;
/// Seed when `PG_CEP_FUZZ_SEED` is unset.
const DEFAULT_SEED: u64 = 0x70_67_63_65_70; // "pgcep"
/// Longest time one call on one generated input may take; see the module comment.
const BUDGET: Duration = Duration::from_secs(2);
/// Longest error message, in bytes.
const MAX_MESSAGE: usize = 1_000;
/// Marker for `reps()`: repeat the chunk up to a size drawn from `big_size()` (up to 1 MB).
const BIG: usize = usize::MAX;

// ------------------------------------------------------------------ runner

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

fn cases() -> u32 {
    env_or("PG_CEP_FUZZ_CASES", DEFAULT_CASES)
}

fn seed() -> u64 {
    env_or("PG_CEP_FUZZ_SEED", DEFAULT_SEED)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed()),
        max_shrink_iters: 2_000,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Runs one property over `cases()` seeded inputs; panics with the minimal failing input.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        let why = match e {
            TestError::Abort(why) => format!("aborted: {why}"),
            TestError::Fail(why, input) => {
                format!("{}\nminimal failing input: {}", clip(&why.to_string(), 2_000), clip(&format!("{input:?}"), 4_000))
            }
        };
        panic!("{name} failed (PG_CEP_FUZZ_SEED={}, PG_CEP_FUZZ_CASES={}): {why}", seed(), cases());
    }
}

/// `s` cut to about `max` bytes on a character boundary, with its full length.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..at], s.len())
}

/// Runs `f`, failing the case when it takes longer than [`BUDGET`].
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    if took > BUDGET {
        return Err(TestCaseError::fail(format!("{what} took {took:?}, over the {BUDGET:?} budget")));
    }
    Ok(out)
}

/// [`timed`] for the deterministic tests: panics instead.
fn timed_ok<T>(what: &str, f: impl FnOnce() -> T) -> T {
    timed(what, f).unwrap_or_else(|e| panic!("{e}"))
}

fn bounded(what: &str, message: &str) -> Result<(), TestCaseError> {
    if message.len() > MAX_MESSAGE {
        return Err(TestCaseError::fail(format!("{what}: error message is {} bytes, over {MAX_MESSAGE}: {}", message.len(), clip(message, 300))));
    }
    Ok(())
}

fn bounded_ok(what: &str, message: &str) {
    bounded(what, message).unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------- strategies

fn pick(xs: &'static [&'static str]) -> BoxedStrategy<String> {
    select(xs).prop_map(String::from).boxed()
}

fn object(entries: Vec<(String, Json)>) -> Json {
    Json::Object(entries.into_iter().collect::<Map<String, Json>>())
}

/// `{key: value}`, moving `value` (`json!` would copy it).
fn obj1(key: &str, value: Json) -> Json {
    object(vec![(key.to_string(), value)])
}

/// How often a chunk is repeated: mostly a few times, sometimes up to 1 MB.
fn reps() -> impl Strategy<Value = usize> {
    prop_oneof![30 => 0usize..4, 10 => 4usize..200, 3 => 200usize..5_000, 1 => Just(BIG)]
}

fn big_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1_000_000usize), 10_000usize..1_000_000]
}

/// `head + chunk * reps + tail`: cheap big inputs that shrink to small ones.
fn inflate(part: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (part.clone(), part.clone(), reps(), part, big_size())
        .prop_map(|(head, chunk, reps, tail, big)| {
            let reps = if reps == BIG { big / chunk.len().max(1) } else { reps };
            let mut s = String::with_capacity(head.len() + chunk.len() * reps + tail.len());
            s.push_str(&head);
            for _ in 0..reps {
                s.push_str(&chunk);
            }
            s.push_str(&tail);
            s
        })
        .boxed()
}

/// Decimal numbers as users and attackers write them, for quantifiers and intervals.
fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u64..=5).prop_map(|n| n.to_string()),
        4 => (0u64..=150).prop_map(|n| n.to_string()),
        2 => pick(&[
            "4294967296", "4294967295", "2147483648", "18446744073709551616",
            "99999999999999999999999999", "-1", "", " 2 ", "0003", "1e3", "1.5", "+1", "٣", "１",
        ]),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn pattern_token() -> BoxedStrategy<String> {
    prop_oneof![
        6 => pick(&["a", "b", "c", "d", "long_symbol_name_0", "_", "A1", "x_y"]),
        2 => (0u32..80).prop_map(|i| format!("s{i}")),
        4 => pick(&["(", ")", "|", "!", "+", "*", "?"]),
        2 => number_text().prop_map(|n| format!("{{{n}}}")),
        2 => (number_text(), number_text()).prop_map(|(n, m)| format!("{{{n},{m}}}")),
        1 => number_text().prop_map(|m| format!("{{,{m}}}")),
        1 => number_text().prop_map(|n| format!("{{{n},}}")),
        1 => pick(&["{", "}", ",", "{,}", "{}", "{1,2,3}", "{{1}}"]),
        3 => pick(&[" ", "  ", "\t", "\n", "\u{a0}", "\u{3000}"]),
        1 => any::<char>().prop_map(String::from),
    ]
    .boxed()
}

/// Pattern text: mostly from the pattern alphabet, sometimes anything.
fn pattern_piece() -> BoxedStrategy<String> {
    prop_oneof![
        6 => vec(pattern_token(), 0..24).prop_map(|t| t.concat()),
        1 => any::<String>(),
        1 => "[()|!+*?{},0-9a-d _]{0,40}",
    ]
    .boxed()
}

fn options() -> BoxedStrategy<PatternOptions> {
    (
        select(vec![Contiguity::Strict, Contiguity::SkipTillNext, Contiguity::SkipTillAny]),
        select(vec![AfterMatch::SkipPastLastRow, AfterMatch::SkipToNextRow, AfterMatch::NoSkip]),
        prop_oneof![
            3 => Just(None),
            3 => (1i64..1_000).prop_map(Some),
            1 => Just(Some(i64::MAX)),
            1 => Just(Some(0)),
            1 => any::<i64>().prop_map(Some),
        ],
        prop_oneof![4 => 1usize..=16, 1 => Just(1_000usize), 1 => Just(0usize)],
    )
        .prop_map(|(contiguity, after_match, within, max_partials)| PatternOptions {
            contiguity,
            after_match,
            within,
            max_partials,
            emit: Emit::Eager,
        })
        .boxed()
}

/// Short texts for event values (event values are not inflated to 1 MB: a run copies the
/// values PREV/FIRST refer to, and up to `max_partials` runs exist, by design).
fn event_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => pick(&["a", "b", "x", "abc", "", "%", "é", "A", "a\nb"]),
        2 => "[a-cx%_]{0,6}",
        1 => any::<String>(),
        1 => (0usize..10_000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => prop_oneof![-3i64..3, Just(i64::MAX), Just(i64::MIN), any::<i64>()].prop_map(Value::Int),
        2 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (-3i32..3).prop_map(f64::from),
            any::<f64>(),
        ]
        .prop_map(Value::Float),
        4 => event_text().prop_map(Value::Text),
    ]
    .boxed()
}

/// Up to `max` events; ts steps are mostly small and forward, sometimes backwards or extreme.
fn events(max: usize) -> BoxedStrategy<Vec<Event>> {
    let start = prop_oneof![4 => Just(0i64), 1 => Just(i64::MIN), 1 => Just(i64::MAX - 100), 1 => any::<i64>()];
    let step = prop_oneof![
        6 => 0i64..100,
        1 => -100i64..0,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ];
    (start, vec((step, vec(value(), 0..6)), 0..max))
        .prop_map(|(start, steps)| {
            let mut ts = start;
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (step, values))| {
                    ts = ts.saturating_add(step);
                    Event { id: i as i64, ts, values }
                })
                .collect()
        })
        .boxed()
}

fn column_name() -> BoxedStrategy<String> {
    prop_oneof![
        8 => pick(&["x", "y", "z", "t", "amount"]),
        1 => pick(&["", "PREV.x", "and ", "Not", "é", "x.y", "_", "or", "in"]),
        1 => "[a-z_]{1,70}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn reference() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (pick(&["PREV.", "FIRST."]), column_name()).prop_map(|(p, c)| p + &c),
        1 => pick(&["PREV.", "FIRST.", "PREV.1x", "PREV.PREV.x", "prev.x", "FIRST.x y", "LAST.x"]),
    ]
    .boxed()
}

fn text_literal() -> BoxedStrategy<String> {
    prop_oneof![
        6 => event_text(),
        1 => inflate(pick(&["a", "ab", "é", "\"", "\\"])),
    ]
    .boxed()
}

/// A JSON scalar as it may appear on the right of a condition.
fn literal() -> BoxedStrategy<Json> {
    prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        3 => prop_oneof![-3i64..3, Just(i64::MAX), Just(i64::MIN), any::<i64>()].prop_map(Json::from),
        1 => prop_oneof![Just(u64::MAX), any::<u64>()].prop_map(Json::from),
        // NaN and infinities become JSON null.
        2 => prop_oneof![Just(0.5f64), Just(-0.0), Just(1e308), Just(f64::MIN_POSITIVE), Just(f64::NAN), any::<f64>()]
            .prop_map(Json::from),
        2 => reference().prop_map(Json::String),
        3 => text_literal().prop_map(Json::String),
    ]
    .boxed()
}

fn like_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&["%x", "a%", "%", "_", "\\%", "\\", "a_c%", "%%%%%%%%%%%%%%%%%%%%%a", ""]),
        3 => "[a-c%_\\\\]{0,12}",
        1 => inflate(pick(&["%", "_", "a%", "\\"])),
    ]
    .boxed()
}

fn regex_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&[
            "^a", "(a|b)*c", "a{1000}{1000}", "a{0,100000}", "[", "(", "\\", "(?i)X", ".*",
            "\\p{Greek}+", "(((((a)))))", "^$", "\\b\\w+\\b", "(?-u:\\xFF)", "a**", "(?P<n>a)\\k<n>",
            "\\w{500}\\w{500}",
        ]),
        3 => "[a-c()|*+?{}\\[\\]^$.0-9,\\\\]{0,20}",
        1 => inflate(pick(&["a|", "(", "a*", "[a-z]", ".*", "\\w{9}"])),
    ]
    .boxed()
}

/// One `operator: rhs` entry of a column's condition object.
fn op_entry() -> BoxedStrategy<(String, Json)> {
    prop_oneof![
        4 => (pick(&["=", "==", "<>", "!=", "<", "<=", ">", ">="]), literal()),
        2 => (Just("in".to_string()), prop_oneof![4 => vec(literal(), 0..6).prop_map(Json::Array), 1 => literal()]),
        2 => (Just("like".to_string()), prop_oneof![4 => like_text().prop_map(Json::String), 1 => literal()]),
        2 => (Just("~".to_string()), prop_oneof![4 => regex_text().prop_map(Json::String), 1 => literal()]),
        1 => (Just("is_null".to_string()), prop_oneof![any::<bool>().prop_map(Json::Bool), literal()]),
        1 => (prop_oneof![pick(&["IN", "LIKE", "=~", "is null", "", "and", "not"]), any::<String>()], literal()),
    ]
    .boxed()
}

/// What a column maps to: a literal (equality), an operator object, or junk.
fn condition() -> BoxedStrategy<Json> {
    prop_oneof![
        2 => literal(),
        4 => vec(op_entry(), 0..4).prop_map(object),
        1 => vec(literal(), 0..3).prop_map(Json::Array),
    ]
    .boxed()
}

/// A symbol's predicate object, nested through `and` / `or` / `not`.
fn predicate() -> BoxedStrategy<Json> {
    let leaf = vec((column_name(), condition()), 1..4).prop_map(object);
    leaf.prop_recursive(5, 64, 4, |inner| {
        vec(
            prop_oneof![
                4 => (column_name(), condition()),
                1 => (pick(&["and", "or"]), vec(prop_oneof![5 => inner.clone(), 1 => literal()], 0..4).prop_map(Json::Array)),
                1 => (pick(&["and", "or", "not"]), inner.clone()),
                1 => (Just("not".to_string()), prop_oneof![4 => inner.clone(), 1 => literal()]),
            ],
            0..4,
        )
        .prop_map(object)
    })
    .boxed()
}

fn define() -> BoxedStrategy<Json> {
    let key = prop_oneof![
        8 => pick(&["a", "b", "c", "d", "x"]),
        1 => pick(&["", "1a", "a-b", "é", "and", "PREV"]),
        1 => any::<String>(),
    ];
    let body = prop_oneof![6 => predicate(), 1 => Just(Json::Bool(true)), 1 => literal()];
    prop_oneof![
        12 => vec((key, body), 0..5).prop_map(object),
        1 => literal(),
        1 => vec(literal(), 0..3).prop_map(Json::Array),
    ]
    .boxed()
}

/// Patterns over the symbols `define()` uses, mostly valid ones.
fn pattern_for_define() -> BoxedStrategy<String> {
    prop_oneof![
        4 => pick(&[
            "a", "a b", "a b+ c", "a b* c?", "(a|b)+ c", "a{2,4} b", "a !x c", "a !x", "a (b|c){1,3} d",
            "a b c d x", "(a b)* c", "a|b|c", "x+", "a b !c !d x",
        ]),
        2 => vec((pick(&["a", "b", "c", "d", "x"]), pick(&["", "", "+", "*", "?", "{2}", "{1,3}", "{2,}"])), 1..6)
            .prop_map(|v| v.iter().map(|(s, q)| format!("{s}{q}")).collect::<Vec<_>>().join(" ")),
        1 => pattern_piece(),
    ]
    .boxed()
}

/// `define` without the entries whose symbol does not occur in `text` (those are an error).
fn only_used(define: Json, text: &str) -> Json {
    let Json::Object(m) = define else { return define };
    let idents: std::collections::HashSet<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    Json::Object(m.into_iter().filter(|(k, _)| idents.contains(k.as_str())).collect())
}

/// Compiles and, when that works, matches: the shared body of the pattern properties.
fn compile_and_match(text: &str, define: &Json, opts: PatternOptions, events: &[Event]) -> Result<(), TestCaseError> {
    let compiled = timed("compile", || compile(text, define, opts))?;
    match compiled {
        Err(e) => {
            bounded("compile", &e.message)?;
            bounded("compile (Display)", &e.to_string())?;
            if let Some(pos) = e.position {
                let chars = text.chars().count();
                prop_assert!(pos <= chars, "error position {pos} is past the end ({chars} characters)");
            }
        }
        Ok(p) => {
            prop_assert!(p.symbols().len() <= 64, "{} symbols", p.symbols().len());
            let matches = timed("match_all", || match_all(&p, events))?;
            check_matches(&p, events, &matches)?;
        }
    }
    Ok(())
}

fn check_matches(p: &Pattern, events: &[Event], matches: &[super::pattern::Match]) -> Result<(), TestCaseError> {
    for m in matches {
        prop_assert!(m.rows.len() <= events.len(), "a match binds {} rows of {} events", m.rows.len(), events.len());
        for &(sym, id) in &m.rows {
            prop_assert!((sym as usize) < p.symbols().len(), "row symbol {sym} out of range");
            prop_assert!(id >= 0 && (id as usize) < events.len(), "row id {id} is no event's");
        }
    }
    Ok(())
}

// ----------------------------------------------------------- 1. patterns

#[test]
fn fuzz_pattern_text_never_panics() {
    let strategy = (inflate(pattern_piece()), options(), events(12));
    check("pattern text", strategy, |(text, opts, events)| compile_and_match(&text, &Json::Null, opts, &events));
}

#[test]
fn fuzz_pattern_random_strings_never_panic() {
    let strategy = prop_oneof![3 => any::<String>(), 1 => inflate(any::<String>().boxed()), 1 => ".{0,200}"];
    check("random pattern strings", strategy, |text| compile_and_match(&text, &Json::Null, PatternOptions::default(), &[]));
}

#[test]
fn fuzz_pattern_deep_nesting_is_refused() {
    // Deep enough to overflow any stack if the parser recursed without a bound.
    let deep = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
    let e = timed_ok("compile 20,000 nested", || compile(&deep, &Json::Null, PatternOptions::default()))
        .expect_err("20,000 nested parentheses must be refused");
    bounded_ok("20,000 nested", &e.message);
    // The 40 kB text may be refused for its length before its depth is looked at.
    assert!(e.message.contains("nested") || e.message.contains("longer than"), "{}", e.message);
    // Short enough for the length limit, still far too deep.
    let deep = format!("{}a{}", "(".repeat(4_000), ")".repeat(4_000));
    let e = timed_ok("compile 4,000 nested", || compile(&deep, &Json::Null, PatternOptions::default()))
        .expect_err("4,000 nested parentheses must be refused");
    bounded_ok("4,000 nested", &e.message);
    assert!(e.message.contains("nested"), "{}", e.message);
    // Unbalanced and nested with quantifiers.
    for text in ["(".repeat(20_000), "(".repeat(4_000), "(a".repeat(4_000), format!("{}a{}", "(".repeat(4_000), ")*".repeat(4_000))] {
        let e = timed_ok("compile unbalanced", || compile(&text, &Json::Null, PatternOptions::default()))
            .expect_err("unbalanced parentheses must be refused");
        bounded_ok("unbalanced", &e.message);
    }
}

#[test]
fn fuzz_pattern_wide_alternations_are_bounded() {
    let opts = PatternOptions::default();
    for n in [100_000, 4_999, 1_001, 1_000, 999] {
        let text = vec!["a"; n].join("|");
        if let Err(e) = timed_ok("compile a|a|…", || compile(&text, &Json::Null, opts.clone())) {
            bounded_ok("a|a|…", &e.message);
        }
    }
    // Many alternatives under a quantifier link every last position to every first one.
    let symbols: Vec<String> = (0..64).map(|i| format!("s{i}")).collect();
    let mut events = Vec::new();
    for i in 0..40 {
        events.push(Event { id: i, ts: i * 10, values: vec![] });
    }
    for n in [1_000, 600, 300, 100] {
        let alts: Vec<&str> = (0..n).map(|i| symbols[i % 64].as_str()).collect();
        for quant in ["*", "+", "{2}", "{1,3}"] {
            let text = format!("({}){quant} end", alts.join("|"));
            for contiguity in [Contiguity::Strict, Contiguity::SkipTillNext, Contiguity::SkipTillAny] {
                for after_match in [AfterMatch::SkipPastLastRow, AfterMatch::NoSkip] {
                    let opts = PatternOptions { contiguity, after_match: after_match.clone(), within: None, max_partials: 1_000, emit: Emit::Eager };
                    let what = format!("{n} alternatives, {quant}, {contiguity:?}, {after_match:?}");
                    match timed_ok(&format!("compile {what}"), || compile(&text, &Json::Null, opts)) {
                        Err(e) => bounded_ok(&what, &e.message),
                        Ok(p) => {
                            // `define` is null: every symbol matches every event.
                            timed_ok(&format!("match_all {what}"), || match_all(&p, &events));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fuzz_pattern_huge_text_is_refused_quickly() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let unit = |u: &str| u.repeat(TEN_MB / u.len());
    for text in [unit("a "), unit("x"), unit("é"), unit("("), unit("a|"), unit("a{100}"), unit("\u{0}"), unit("{")] {
        let what = format!("10 MB of {:?}", &text[..text.char_indices().nth(3).map_or(text.len(), |(i, _)| i)]);
        match timed_ok(&format!("compile {what}"), || compile(&text, &Json::Null, PatternOptions::default())) {
            Err(e) => bounded_ok(&what, &e.message),
            Ok(p) => timed_ok(&format!("match_all {what}"), || {
                match_all(&p, &[Event { id: 0, ts: 0, values: vec![] }]);
            }),
        }
    }
}

// --------------------------------------------------------- 2. predicates

#[test]
fn fuzz_define_predicates_compile_and_match() {
    let strategy = (pattern_for_define(), define(), prop::bool::weighted(0.1), options(), events(40));
    check("define predicates", strategy, |(text, define, keep_unused, opts, events)| {
        let define = if keep_unused { define } else { only_used(define, &text) };
        compile_and_match(&text, &define, opts, &events)
    });
}

/// Runs `f` on a thread with a 256 MB stack: a deeply nested `serde_json::Value` is dropped
/// (and printed) recursively, which would overflow a test thread's 2 MB stack by itself.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 << 20).spawn(f).expect("spawn").join().unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// `compile` on an 8 MB stack (a backend's usual limit), so that unbounded recursion in the
/// engine shows up even though the value itself lives on a big stack.
fn compile_on_backend_stack(text: &str, define: &Json) -> Result<(), super::pattern::PatternError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn_scoped(s, || compile(text, define, PatternOptions::default()).map(|_| ()))
            .expect("spawn")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

#[test]
fn fuzz_define_deep_nesting_is_refused() {
    on_big_stack(|| {
        for depth in [33, 64, 129, 2_000, 10_000] {
            // Built iteratively (serde_json::from_str stops at 128 levels by itself) and by
            // moving `v`: `json!({"not": v})` would copy `v` through `to_value` every level.
            type Wrap = fn(Json) -> Json;
            let chains: [(&str, Wrap); 4] = [
                ("not", |v| obj1("not", v)),
                ("and", |v| obj1("and", Json::Array(vec![v, json!({"y": 1})]))),
                ("or", |v| obj1("or", Json::Array(vec![json!({"y": 1}), v]))),
                ("mixed", |v| object(vec![("y".into(), json!({">": 0})), ("not".into(), obj1("or", Json::Array(vec![v])))])),
            ];
            for (name, wrap) in chains {
                let mut v = json!({"x": {"=": 1}});
                for _ in 0..depth {
                    v = wrap(v);
                }
                let define = obj1("a", v);
                let what = format!("{name} nested {depth} deep");
                let e = timed_ok(&what, || compile_on_backend_stack("a b", &define)).expect_err("predicates nested this deep must be refused");
                bounded_ok(&what, &e.message);
                assert!(e.message.contains("nested"), "{what}: {}", e.message);
            }
            if depth > 2_000 {
                continue;
            }
            // Deep literals where a scalar belongs: refused, message bounded.
            let mut arr = json!(1);
            let mut obj = json!(1);
            for _ in 0..depth {
                arr = Json::Array(vec![arr]);
                obj = obj1("=", obj);
            }
            let column = |cond: Json| obj1("a", obj1("x", cond));
            for (name, define) in [
                ("in [[[…]]]", column(obj1("in", Json::Array(vec![arr.clone()])))),
                ("= [[[…]]]", column(obj1("=", arr.clone()))),
                ("x: [[[…]]]", column(arr.clone())),
                ("= {= {…}}", column(obj.clone())),
                ("like [[[…]]]", column(obj1("like", arr.clone()))),
            ] {
                let what = format!("{name} {depth} deep");
                let e = timed_ok(&what, || compile_on_backend_stack("a b", &define)).expect_err("not a literal");
                bounded_ok(&what, &e.message);
            }
        }
    });
}

#[test]
fn fuzz_define_wide_is_bounded() {
    let events: Vec<Event> = (0..200).map(|i| Event { id: i, ts: i, values: vec![Value::Int(i % 7)] }).collect();
    for n in [100, 5_000, 20_000, 200_000] {
        let many: Vec<Json> = (0..n as i64).map(|i| json!(i)).collect();
        let ors: Vec<Json> = (0..n as i64).map(|i| json!({ "x": i })).collect();
        let likes: Vec<(String, Json)> = (0..n.min(500)).map(|i| (format!("c{i}"), json!({"like": "%a%"}))).collect();
        for (name, define) in [("in", json!({"a": {"x": {"in": many}}})), ("or", json!({"a": {"or": ors}})), ("columns", json!({"a": object(likes)}))]
        {
            let what = format!("{n} {name}");
            match timed_ok(&format!("compile {what}"), || compile("a b+", &define, PatternOptions::default())) {
                Err(e) => bounded_ok(&what, &e.message),
                Ok(p) => {
                    timed_ok(&format!("match_all {what}"), || match_all(&p, &events));
                }
            }
        }
    }
}

#[test]
fn fuzz_define_huge_strings_are_bounded() {
    // 1 MB operands: `like` and `~` become regexes, literals and `in` lists are copied.
    const MB: usize = 1 << 20;
    let events: Vec<Event> = (0..20).map(|i| Event { id: i, ts: i, values: vec![Value::Text("a".repeat(i as usize * 50))] }).collect();
    for (name, cond) in [
        ("like ___", json!({"like": "_".repeat(MB)})),
        ("like %%%", json!({"like": "%".repeat(MB)})),
        ("like a%", json!({"like": "a%".repeat(MB / 2)})),
        ("~ a|", json!({"~": "a|".repeat(MB / 2)})),
        ("~ (", json!({"~": "(".repeat(MB)})),
        ("~ .", json!({"~": ".".repeat(MB)})),
        ("= text", json!({"=": "x".repeat(MB)})),
        ("in texts", json!({"in": vec!["y".repeat(MB / 16); 16]})),
    ] {
        let define = obj1("a", obj1("x", cond));
        let what = format!("1 MB {name}");
        match timed_ok(&format!("compile {what}"), || compile("a b", &define, PatternOptions::default())) {
            Err(e) => bounded_ok(&what, &e.message),
            Ok(p) => {
                timed_ok(&format!("match_all {what}"), || match_all(&p, &events));
            }
        }
    }
}

// -------------------------------------------------------------- 3. rules

fn number_like() -> BoxedStrategy<Json> {
    prop_oneof![
        3 => prop_oneof![(-2i64..3), Just(i64::MAX), Just(i64::MIN), any::<i64>()].prop_map(Json::from),
        1 => Just(Json::from(u64::MAX)),
        3 => prop_oneof![0.0f64..=1.0, Just(1e308), Just(-1e-308), Just(f64::NAN), any::<f64>()].prop_map(Json::from),
        2 => pick(&[
            "NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400", " 0.5 ", "0x10", "", "1_000", "0.7", "-0", "1e-400",
        ])
        .prop_map(Json::String),
    ]
    .boxed()
}

fn interval_token() -> BoxedStrategy<String> {
    prop_oneof![
        3 => number_text(),
        3 => pick(&[
            "us", "ms", "s", "sec", "m", "min", "h", "hour", "hours", "d", "day", "w", "week", "mon", "y", "year",
            "hourz", "µs", "_", " ", ":", ".", "-", "+", "e", "E",
        ]),
        1 => any::<char>().prop_map(String::from),
    ]
    .boxed()
}

fn interval_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&[
            "1_hour", "1_hourz", "5_minutes", "90 minutes", "1 hour 30 minutes", "00:05:00", "1:30", "2 days",
            "1.5 hours", "30s", " 1 HOUR ", "", "hour", "5", "1 month", "0 minutes", "-5 minutes", "1e300 hours",
            "NaN hours", "inf seconds", "9223372036854775807 us", "9223372036854775808 weeks", "1e17 us", "-0 s",
            "1 2 3", "1:2:3:4", "99999999999:00", "1193047:00", "4294967295:59:59", "0.5 s", "1 us",
        ]),
        3 => vec(interval_token(), 0..8).prop_map(|t| t.concat()),
        1 => "[0-9:]{0,14}",
        1 => inflate(interval_token()),
    ]
    .boxed()
}

fn clock_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => pick(&["22:00", "06:00", "24:00", "23:59:59", "7", "07:60", "ab:00", "00:00:00:00", "-1:00", "9999999999:00", "٢٢:٠٠"]),
        2 => "[0-9:]{0,9}",
        1 => inflate(pick(&["1", ":", "0"])),
    ]
    .boxed()
}

/// JSON of any shape, for fields that expect something else.
fn junk() -> BoxedStrategy<Json> {
    prop_oneof![
        4 => literal(),
        1 => vec(literal(), 0..3).prop_map(Json::Array),
        1 => Just(json!({})),
        1 => (any::<String>(), literal()).prop_map(|(k, v)| object(vec![(k, v)])),
    ]
    .boxed()
}

fn rule_condition() -> BoxedStrategy<Json> {
    let field = prop_oneof![
        8 => pick(&[
            "metric", "operator", "value", "window", "pattern", "time_range", "timezone", "time_window", "method",
            "threshold", "min_samples", "description",
        ]),
        1 => any::<String>(),
        1 => inflate(pick(&["x", "é", "\""])),
    ];
    let value = prop_oneof![
        2 => number_like(),
        3 => interval_text().prop_map(Json::String),
        3 => pick(&[
            "amount", "transaction_count", "total_amount", "avg_amount", "max_amount", "distinct_locations",
            "night_transaction", "location_change", "zscore", "mean_multiple", ">", ">=", "<", "<=", "=", "==",
            "!=", "<>", "UTC", "Asia/Shanghai", "Mars/Olympus", "",
        ])
        .prop_map(Json::String),
        2 => vec(clock_text().prop_map(Json::String), 0..4).prop_map(Json::Array),
        1 => clock_text().prop_map(Json::String),
        1 => junk(),
    ];
    vec((field, value), 0..6).prop_map(object).boxed()
}

/// `{name: value, ...}` leaving out each field with probability 1/10.
fn some_fields(fields: Vec<(&'static str, BoxedStrategy<Json>)>) -> BoxedStrategy<Json> {
    let parts: Vec<BoxedStrategy<Option<(String, Json)>>> =
        fields.into_iter().map(|(name, value)| prop::option::weighted(0.9, value.prop_map(move |v| (name.to_string(), v))).boxed()).collect();
    parts.prop_map(|entries| object(entries.into_iter().flatten().collect())).boxed()
}

/// A rule type with a condition shaped like that type's, so that many rules are valid.
fn well_formed_rule() -> BoxedStrategy<(Json, Json)> {
    let text = |s: BoxedStrategy<String>| s.prop_map(Json::String).boxed();
    let metric = text(pick(&["amount", "transaction_count", "total_amount", "avg_amount", "max_amount", "distinct_locations", "Amount"]));
    let operator = text(pick(&[">", ">=", "<", "<=", "=", "==", "!=", "<>", "=>", ""]));
    let interval = prop_oneof![4 => text(interval_text()), 1 => number_like()].boxed();
    let clocks = vec(clock_text().prop_map(Json::String), 2..=2).prop_map(Json::Array).boxed();
    let timezone = text(pick(&["UTC", "Asia/Shanghai", "Europe/Berlin", "America/Sao_Paulo", "Mars/Olympus", "utc", ""]));
    let typed = |t: &'static str, c: BoxedStrategy<Json>| c.prop_map(move |c| (json!(t), c)).boxed();
    prop_oneof![
        typed("threshold", some_fields(vec![("metric", metric), ("operator", operator), ("value", number_like()), ("window", interval.clone())]),),
        typed("pattern", some_fields(vec![("pattern", Just(json!("night_transaction")).boxed()), ("time_range", clocks), ("timezone", timezone),]),),
        typed("pattern", some_fields(vec![("pattern", Just(json!("location_change")).boxed()), ("time_window", interval.clone())]),),
        typed(
            "anomaly",
            some_fields(vec![
                ("method", text(pick(&["zscore", "mean_multiple", "median"]))),
                ("threshold", number_like()),
                ("window", interval),
                ("min_samples", number_like()),
            ]),
        ),
    ]
    .boxed()
}

fn rule() -> BoxedStrategy<Json> {
    let rule_type = prop_oneof![6 => pick(&["threshold", "pattern", "anomaly"]).prop_map(Json::String), 1 => junk()];
    let condition = prop_oneof![8 => rule_condition(), 1 => junk()];
    let parts = prop_oneof![
        (prop::option::weighted(0.95, rule_type), prop::option::weighted(0.95, condition)),
        well_formed_rule().prop_map(|(t, c)| (Some(t), Some(c))),
    ];
    let score = prop_oneof![3 => (0.0f64..=1.0).prop_map(Json::from), 2 => number_like(), 1 => junk()];
    let extra_key = prop_oneof![
        3 => pick(&["rule_name", "rule_id", "is_active", "ruleType", "risk score", ""]),
        1 => inflate(pick(&["k", "é", "\""])),
    ];
    (parts, prop::option::weighted(0.95, score), vec((extra_key, junk()), 0..2))
        .prop_map(|((rule_type, condition), score, extra)| {
            let mut m: Map<String, Json> = extra.into_iter().collect();
            if let Some(t) = rule_type {
                m.insert("rule_type".into(), t);
            }
            if let Some(c) = condition {
                m.insert("rule_condition".into(), c);
            }
            if let Some(s) = score {
                m.insert("risk_score".into(), s);
            }
            Json::Object(m)
        })
        .boxed()
}

#[test]
fn fuzz_rules_never_panic() {
    check("validate_rule", rule(), |rule| {
        if let Err(e) = timed("validate_rule", || validate_rule(&rule))? {
            bounded("validate_rule", &e.to_string())?;
        }
        Ok(())
    });
}

/// A valid rule's canonical JSON (what `cep.validate_rule` shows) must read back as the same
/// condition, or a user copying it back gets an error.
#[test]
fn fuzz_rules_canonical_json_round_trips() {
    check("canonical rule JSON", rule(), |rule| {
        let Ok(condition) = timed("validate_rule", || validate_rule(&rule))? else { return Ok(()) };
        let rule_type = rule["rule_type"].as_str().expect("a valid rule has a rule_type string");
        let canonical = condition.to_json();
        let again = timed("parse_condition", || parse_condition(rule_type, &canonical))?;
        prop_assert_eq!(again.as_ref().ok(), Some(&condition), "canonical JSON {} reads back as {:?}", canonical, again);
        Ok(())
    });
}

/// Windows whose canonical form (`format_interval`) is unusual: fractions of a second, and
/// hour counts near and past `u32::MAX` seconds.
#[test]
fn fuzz_rules_canonical_windows_round_trip() {
    let mut failures = Vec::new();
    for window in ["1 us", "0.5 s", "1.5 s", "90 minutes", "2 days", "1193046 hours", "1193047 hours", "1e17 us"] {
        for (rule_type, condition) in [
            ("threshold", json!({"metric": "total_amount", "value": 1, "window": window})),
            ("pattern", json!({"pattern": "location_change", "time_window": window})),
        ] {
            let rule = json!({"rule_type": rule_type, "rule_condition": condition, "risk_score": 0.5});
            let outcome = std::panic::catch_unwind(|| {
                let Ok(c) = validate_rule(&rule) else { return Ok(()) };
                let canonical = c.to_json();
                match parse_condition(rule_type, &canonical) {
                    Ok(again) if again == c => Ok(()),
                    other => Err(format!("canonical {canonical} reads back as {other:?}")),
                }
            });
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{rule_type} window {window:?}: {e}")),
                Err(panic) => failures.push(format!(
                    "{rule_type} window {window:?}: panicked: {}",
                    panic.downcast_ref::<String>().map(String::as_str).or(panic.downcast_ref::<&str>().copied()).unwrap_or("?")
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{} round trips failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn fuzz_intervals_never_panic() {
    check("parse_interval", interval_text(), |text| {
        match timed("parse_interval", || parse_interval(&text))? {
            Ok(micros) => prop_assert!(micros > 0, "{text:?} parsed as {micros}"),
            Err(e) => bounded("parse_interval", &e)?,
        }
        Ok(())
    });
}

// ------------------------------------------------------------ 4. windows

fn instant() -> BoxedStrategy<i64> {
    prop_oneof![
        3 => any::<i64>(),
        2 => select(vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 0, -1, 1]),
        2 => -20_000i64..20_000,
        1 => i64::MIN..i64::MIN + 20_000,
        1 => i64::MAX - 20_000..=i64::MAX,
    ]
    .boxed()
}

/// Positive lengths (widths and slides are positive by construction: `Width::from_interval`).
fn small_length() -> BoxedStrategy<i64> {
    prop_oneof![3 => 1i64..=10_000, 1 => select(vec![1i64, 2, 3, 9_999, 10_000])].boxed()
}

fn any_length() -> BoxedStrategy<i64> {
    prop_oneof![3 => small_length(), 2 => 1i64..=i64::MAX, 1 => select(vec![i64::MAX, i64::MAX - 1, 1i64 << 62])].boxed()
}

/// `hop`'s windows all hold `ts`, are `slide` apart and are at most `max`.
fn check_hop(ts: i64, width: i64, slide: i64, origin: i64) -> Result<(), TestCaseError> {
    match timed("hop", || hop(ts, width, slide, origin, MAX_HOP_WINDOWS))? {
        Ok(starts) => {
            prop_assert!(starts.len() as i64 <= MAX_HOP_WINDOWS, "{} windows", starts.len());
            for (i, &s) in starts.iter().enumerate() {
                prop_assert!(s <= ts && (ts as i128) < s as i128 + width as i128, "window {s} of width {width} does not hold {ts}");
                if i > 0 {
                    prop_assert_eq!(s as i128 - starts[i - 1] as i128, slide as i128);
                }
            }
        }
        Err(count) => prop_assert!(count > MAX_HOP_WINDOWS, "refused a count of {}", count),
    }
    Ok(())
}

fn check_window_starts(start: i64, finish: i64, width: i64, slide: i64, origin: i64, max: usize) -> Result<(), TestCaseError> {
    if let Some(starts) = timed("window_starts", || window_starts(start, finish, width, slide, origin, max))? {
        prop_assert!(starts.len() <= max, "{} windows, max {max}", starts.len());
        for (i, &s) in starts.iter().enumerate() {
            prop_assert!(s < finish && s as i128 + width as i128 > start as i128, "window {s} misses [{start}, {finish})");
            if i > 0 {
                prop_assert_eq!(s as i128 - starts[i - 1] as i128, slide as i128);
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_windows_small_lengths() {
    // Widths and slides up to 10,000 µs keep even an uncapped `hop` under 10,000 windows,
    // so this property holds whatever the cap; `fuzz_windows_any_lengths` relies on the cap.
    let strategy = (instant(), small_length(), small_length(), instant(), instant(), 0usize..10_000);
    check("hop/window_starts, small lengths", strategy, |(ts, width, slide, origin, finish, max)| {
        check_hop(ts, width, slide, origin)?;
        check_window_starts(ts, finish, width, slide, origin, max)
    });
}

#[test]
fn fuzz_windows_any_lengths() {
    // Any positive width and slide: `hop` must refuse (Err(count)) rather than list more
    // than MAX_HOP_WINDOWS windows, and `window_starts` stops at `max`.
    let strategy = (instant(), any_length(), any_length(), instant(), instant(), 0usize..10_000);
    check("hop/window_starts, any lengths", strategy, |(ts, width, slide, origin, finish, max)| {
        check_hop(ts, width, slide, origin)?;
        check_window_starts(ts, finish, width, slide, origin, max)
    });
}

#[test]
fn fuzz_windows_extremes() {
    let extremes = [i64::MIN, i64::MIN + 1, i64::MIN + 5, -1, 0, 1, i64::MAX - 5, i64::MAX - 1, i64::MAX];
    let lengths = [1, 3, 10_000, i64::MAX / 2, i64::MAX - 1, i64::MAX];
    for ts in extremes {
        for origin in extremes {
            for width in lengths {
                for slide in lengths {
                    let r = check_hop(ts, width, slide, origin).and_then(|_| check_window_starts(ts, i64::MAX, width, slide, origin, 10_000));
                    if let Err(e) = r {
                        panic!("ts={ts} width={width} slide={slide} origin={origin}: {e}");
                    }
                }
            }
        }
    }
}
