use std::collections::HashMap;

use serde_json::json;

use super::*;

// ---------------------------------------------------------------- helpers

fn opts(c: Contiguity, a: AfterMatch, within: Option<i64>) -> PatternOptions {
    PatternOptions { contiguity: c, after_match: a, within, max_partials: 1000, emit: Emit::Eager }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Define where each listed symbol matches events of the same type (column `t`).
fn by_type(syms: &[&str]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for s in syms {
        m.insert(s.to_string(), json!({ "t": s }));
    }
    serde_json::Value::Object(m)
}

/// "a b1 d1" -> events whose type is the label without trailing digits;
/// id = index, ts = 10 * index.
fn stream(p: &Pattern, input: &str) -> (Vec<String>, Vec<Event>) {
    let labels: Vec<String> = input.split_whitespace().map(String::from).collect();
    let events = labels
        .iter()
        .enumerate()
        .map(|(i, l)| ev(p, i as i64, 10 * i as i64, &[("t", text(l.trim_end_matches(|c: char| c.is_ascii_digit())))]))
        .collect();
    (labels, events)
}

/// Builds an event with values placed in `p.columns()` order.
fn ev(p: &Pattern, id: i64, ts: i64, cols: &[(&str, Value)]) -> Event {
    let values = p.columns().iter().map(|c| cols.iter().find(|(n, _)| n == c).map(|(_, v)| v.clone()).unwrap_or(Value::Null)).collect();
    Event { id, ts, values }
}

/// Matches as space-joined input labels, leaving out rows bound to `hide`.
fn show(p: &Pattern, labels: &[String], ms: &[Match], hide: &[&str]) -> Vec<String> {
    ms.iter()
        .map(|m| {
            m.rows
                .iter()
                .filter(|(s, _)| !hide.contains(&p.symbols()[*s as usize].as_str()))
                .map(|(_, id)| labels[*id as usize].clone())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn run(pattern: &str, define: serde_json::Value, o: PatternOptions, input: &str) -> Vec<String> {
    let p = compile(pattern, &define, o).unwrap();
    let (labels, events) = stream(&p, input);
    show(&p, &labels, &match_all(&p, &events), &[])
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ids(ms: &[Match]) -> Vec<Vec<i64>> {
    ms.iter().map(|m| m.rows.iter().map(|r| r.1).collect()).collect()
}

use AfterMatch::*;
use Contiguity::*;

// ------------------------------------------------- Flink documentation example

const FLINK_INPUT: &str = "a b1 d1 b2 d2 b3 c";

// Flink CEP docs, "Contiguity within looping patterns":
// https://nightlies.apache.org/flink/flink-docs-stable/docs/libs/cep/#contiguity-within-looping-patterns
// (apache/flink docs/content/docs/libs/cep.md). Pattern "a b+ c" where a -> b
// and b -> c are followedByAny and only the contiguity *inside* b+ varies:
//   strict:   {a b1 c}, {a b2 c}, {a b3 c}
//   relaxed:  {a b1 c}, {a b1 b2 c}, {a b1 b2 b3 c}, {a b2 c}, {a b2 b3 c}, {a b3 c}
//   non-det:  the 7 non-empty subsets of {b1, b2, b3}
// Flink uses NO_SKIP there. Our contiguity is one setting for the whole
// pattern, so the non-deterministic set is reproduced directly, and the
// mixed-contiguity sets with Strict plus an always-true gap symbol `g`
// (undefined symbols match every row) standing for followedByAny.
#[test]
fn flink_doc_non_deterministic_relaxed() {
    let got = run("a b+ c", by_type(&["a", "b", "c"]), opts(SkipTillAny, NoSkip, None), FLINK_INPUT);
    let want = strs(&["a b1 c", "a b1 b2 c", "a b1 b3 c", "a b1 b2 b3 c", "a b2 c", "a b2 b3 c", "a b3 c"]);
    assert_eq!(sorted(got.clone()), sorted(want));
    // Forks that take an event are ordered before the copy that skips it,
    // so the greedy (longest) combination comes first.
    assert_eq!(got[0], "a b1 b2 b3 c");
}

#[test]
fn flink_doc_strict_inside_loop() {
    let p = compile("a g* b+ g* c", &by_type(&["a", "b", "c"]), opts(Strict, NoSkip, None)).unwrap();
    let (labels, events) = stream(&p, FLINK_INPUT);
    let got = show(&p, &labels, &match_all(&p, &events), &["g"]);
    assert_eq!(sorted(got), sorted(strs(&["a b1 c", "a b2 c", "a b3 c"])));
}

#[test]
fn flink_doc_relaxed_inside_loop() {
    let mut define = by_type(&["a", "b", "c"]);
    define["n"] = json!({"not": {"t": "b"}});
    let p = compile("a g* b (n* b)* g* c", &define, opts(Strict, NoSkip, None)).unwrap();
    let (labels, events) = stream(&p, FLINK_INPUT);
    let got = show(&p, &labels, &match_all(&p, &events), &["g", "n"]);
    let want = strs(&["a b1 c", "a b1 b2 c", "a b1 b2 b3 c", "a b2 c", "a b2 b3 c", "a b3 c"]);
    assert_eq!(sorted(got), sorted(want));
}

/// The same input with one contiguity for the whole pattern.
#[test]
fn uniform_contiguity_on_flink_input() {
    let d = by_type(&["a", "b", "c"]);
    assert!(run("a b+ c", d.clone(), opts(Strict, SkipPastLastRow, None), FLINK_INPUT).is_empty());
    assert_eq!(run("a b+ c", d.clone(), opts(SkipTillNext, SkipPastLastRow, None), FLINK_INPUT), ["a b1 b2 b3 c"]);
    // Skip strategies keep one match per start row; the first is the greedy one.
    assert_eq!(run("a b+ c", d.clone(), opts(SkipTillAny, SkipPastLastRow, None), FLINK_INPUT), ["a b1 b2 b3 c"]);
    assert_eq!(run("a b+ c", d, opts(SkipTillAny, SkipToNextRow, None), FLINK_INPUT), ["a b1 b2 b3 c"]);
}

// ----------------------------------------------------- Oracle MATCH_RECOGNIZE

// Ticker data (ACME, 1..20 April 2011) and the V-shape query
//   PATTERN (STRT DOWN+ UP+) DEFINE DOWN AS price < PREV(price), UP AS price > PREV(price)
// from Oracle Database Data Warehousing Guide, "SQL for Pattern Matching",
// Example "Pattern Match: Simple V-Shape" and the W-shape example:
// https://docs.oracle.com/en/database/oracle/oracle-database/18/dwhsg/sql-pattern-matching-data-warehouses.html
// Oracle (greedy, AFTER MATCH SKIP TO LAST UP) reports V-shapes 5..10, 10..13,
// 14..18 and the W-shape 5..13. Deviation: we emit eagerly at the first UP,
// so with SKIP PAST LAST ROW we get 5..7, 10..13, 14..17 (worked out by hand);
// with NoSkip the greedy matches appear as the last extension of each run.
const ACME: [i64; 20] = [12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22];

fn acme(pattern: &str, after: AfterMatch) -> Vec<Vec<i64>> {
    let define = json!({
        "down": {"price": {"<": "PREV.price"}},
        "up": {"price": {">": "PREV.price"}},
    });
    let p = compile(pattern, &define, opts(Strict, after, None)).unwrap();
    let events: Vec<Event> = ACME.iter().enumerate().map(|(i, &pr)| ev(&p, i as i64 + 1, i as i64 + 1, &[("price", Value::Int(pr))])).collect();
    ids(&match_all(&p, &events))
}

#[test]
fn oracle_v_shape_past_last_row() {
    assert_eq!(acme("strt down+ up+", SkipPastLastRow), vec![vec![5, 6, 7], vec![10, 11, 12, 13], vec![14, 15, 16, 17]]);
}

#[test]
fn oracle_v_shape_to_next_row() {
    // Runs starting on days 11 and 15 complete on the same rows as 10 and 14;
    // to-next-row keeps them (different start rows).
    assert_eq!(
        acme("strt down+ up+", SkipToNextRow),
        vec![vec![5, 6, 7], vec![10, 11, 12, 13], vec![11, 12, 13], vec![14, 15, 16, 17], vec![15, 16, 17]]
    );
}

#[test]
fn oracle_v_shape_no_skip_contains_greedy() {
    let all = acme("strt down+ up+", NoSkip);
    for greedy in [vec![5, 6, 7, 8, 9, 10], vec![10, 11, 12, 13], vec![14, 15, 16, 17, 18]] {
        assert!(all.contains(&greedy), "{greedy:?} missing from {all:?}");
    }
}

#[test]
fn oracle_w_shape() {
    assert_eq!(acme("strt down+ up+ down+ up+", SkipPastLastRow), vec![(5..=13).collect::<Vec<i64>>()]);
}

// ------------------------------------------------------------- predicates

/// Ids of single events matching symbol `x` defined by `pred`.
fn pred_hits(pred: serde_json::Value, rows: &[&[(&str, Value)]]) -> Vec<i64> {
    let p = compile("x", &json!({ "x": pred }), PatternOptions::default()).unwrap();
    let events: Vec<Event> = rows.iter().enumerate().map(|(i, r)| ev(&p, i as i64, i as i64, r)).collect();
    match_all(&p, &events).iter().map(|m| m.rows[0].1).collect()
}

fn amounts() -> Vec<Vec<(&'static str, Value)>> {
    vec![
        vec![("amount", Value::Int(5))],
        vec![("amount", Value::Float(10.0))],
        vec![("amount", Value::Int(15))],
        vec![("amount", Value::Null)],
        vec![("amount", text("10"))],
    ]
}

fn hits(pred: serde_json::Value) -> Vec<i64> {
    let rows = amounts();
    let refs: Vec<&[(&str, Value)]> = rows.iter().map(|r| r.as_slice()).collect();
    pred_hits(pred, &refs)
}

#[test]
fn comparison_operators() {
    // Int/Float compare numerically; NULL and text-vs-number are false.
    assert_eq!(hits(json!({"amount": 10})), vec![1]);
    assert_eq!(hits(json!({"amount": {"=": 10.0}})), vec![1]);
    assert_eq!(hits(json!({"amount": {"<>": 10}})), vec![0, 2]);
    assert_eq!(hits(json!({"amount": {"!=": 10}})), vec![0, 2]);
    assert_eq!(hits(json!({"amount": {"<": 10}})), vec![0]);
    assert_eq!(hits(json!({"amount": {"<=": 10}})), vec![0, 1]);
    assert_eq!(hits(json!({"amount": {">": 10}})), vec![2]);
    assert_eq!(hits(json!({"amount": {">=": 10}})), vec![1, 2]);
    assert_eq!(hits(json!({"amount": {">": 4, "<": 11}})), vec![0, 1]);
    assert_eq!(hits(json!({"amount": "10"})), vec![4]);
}

#[test]
fn in_null_and_logic_operators() {
    assert_eq!(hits(json!({"amount": {"in": [5, 15, "x", null]}})), vec![0, 2]);
    assert_eq!(hits(json!({"amount": {"is_null": true}})), vec![3]);
    assert_eq!(hits(json!({"amount": {"is_null": false}})), vec![0, 1, 2, 4]);
    assert_eq!(hits(json!({"amount": null})), vec![3]);
    assert_eq!(hits(json!({"or": [{"amount": 5}, {"amount": {">": 12}}]})), vec![0, 2]);
    assert_eq!(hits(json!({"not": {"amount": 5}})), vec![1, 2, 3, 4]);
    assert_eq!(hits(json!({"and": [{"amount": {">": 1}}, {"amount": {"<": 12}}]})), vec![0, 1]);
    // A bare `true` is an explicit always-true definition.
    assert_eq!(hits(json!(true)), vec![0, 1, 2, 3, 4]);
}

#[test]
fn text_operators() {
    let rows: Vec<Vec<(&str, Value)>> = ["alice", "bob", "al_x", "Alfred", "a%b"]
        .iter()
        .map(|s| vec![("name", text(s))])
        .chain([vec![("name", Value::Int(1))], vec![("name", Value::Null)]])
        .collect();
    let refs: Vec<&[(&str, Value)]> = rows.iter().map(|r| r.as_slice()).collect();
    assert_eq!(pred_hits(json!({"name": {"like": "al%"}}), &refs), vec![0, 2]);
    assert_eq!(pred_hits(json!({"name": {"like": "_ob"}}), &refs), vec![1]);
    assert_eq!(pred_hits(json!({"name": {"like": "al\\_%"}}), &refs), vec![2]);
    assert_eq!(pred_hits(json!({"name": {"like": "a\\%b"}}), &refs), vec![4]);
    assert_eq!(pred_hits(json!({"name": {"~": "^[Aa]l"}}), &refs), vec![0, 2, 3]);
    assert_eq!(pred_hits(json!({"name": {"~": "o"}}), &refs), vec![1]);
    assert_eq!(pred_hits(json!({"name": {">": "b"}}), &refs), vec![1]);
    // Bool column.
    let b: Vec<Vec<(&str, Value)>> = vec![vec![("ok", Value::Bool(true))], vec![("ok", Value::Bool(false))]];
    let refs: Vec<&[(&str, Value)]> = b.iter().map(|r| r.as_slice()).collect();
    assert_eq!(pred_hits(json!({"ok": true}), &refs), vec![0]);
}

#[test]
fn columns_are_sorted_and_deduplicated() {
    let p = compile("a b", &json!({"b": {"zeta": 1, "amount": {">": "PREV.amount"}}, "a": {"kind": "x", "amount": 3}}), PatternOptions::default())
        .unwrap();
    assert_eq!(p.columns(), ["amount", "kind", "zeta"]);
    assert_eq!(p.symbols(), ["a", "b"]);
}

#[test]
fn missing_values_read_as_null() {
    let p = compile("x", &json!({"x": {"v": {"is_null": true}}}), PatternOptions::default()).unwrap();
    let m = match_all(&p, &[Event { id: 1, ts: 0, values: vec![] }]);
    assert_eq!(m.len(), 1);
}

#[test]
fn prev_and_first_references() {
    // Strictly rising amounts after a start row, all of the same user as FIRST.
    let define = json!({
        "s": {"amount": {">": 0}},
        "up": {"amount": {">": "PREV.amount"}, "user": "FIRST.user"},
    });
    let p = compile("s up{2}", &define, opts(SkipTillNext, SkipPastLastRow, None)).unwrap();
    let e = |id, amount, user: &str| ev(&p, id, id, &[("amount", Value::Int(amount)), ("user", text(user))]);
    let events = vec![e(1, 5, "u"), e(2, 7, "v"), e(3, 6, "u"), e(4, 9, "u")];
    // Run from 1: 7 is user v (skipped), 6 rises from 5, 9 rises from 6.
    assert_eq!(ids(&match_all(&p, &events)), vec![vec![1, 3, 4]]);
}

#[test]
fn prev_symbol_cannot_start_a_match() {
    let define = json!({"up": {"amount": {">": "PREV.amount"}}});
    let p = compile("up up", &define, opts(Strict, SkipPastLastRow, None)).unwrap();
    let events: Vec<Event> = (1..=5).map(|i| ev(&p, i, i, &[("amount", Value::Int(i))])).collect();
    assert!(match_all(&p, &events).is_empty());
    // FIRST is likewise unavailable for the first row.
    let p = compile("f", &json!({"f": {"amount": "FIRST.amount"}}), PatternOptions::default()).unwrap();
    assert!(match_all(&p, &[ev(&p, 1, 1, &[("amount", Value::Int(1))])]).is_empty());
}

// ------------------------------------------------------------- quantifiers

#[test]
fn quantifiers_bounds() {
    let d = || by_type(&["x", "a", "y"]);
    let s = |pat: &str, input: &str| run(pat, d(), opts(Strict, SkipPastLastRow, None), input);
    assert_eq!(s("x a{2} y", "x a a y"), ["x a a y"]);
    assert!(s("x a{2} y", "x a a a y").is_empty());
    assert!(s("x a{2} y", "x a y").is_empty());
    assert_eq!(s("x a{2,} y", "x a a a a y"), ["x a a a a y"]);
    assert!(s("x a{2,} y", "x a y").is_empty());
    assert_eq!(s("x a{1,3} y", "x a a a y"), ["x a a a y"]);
    assert!(s("x a{1,3} y", "x a a a a y").is_empty());
    assert_eq!(s("x a{,2} y", "x y"), ["x y"]);
    assert_eq!(s("x a* y", "x y"), ["x y"]);
    assert_eq!(s("x a* y", "x a a y"), ["x a a y"]);
    assert_eq!(s("x a? y", "x y x a y"), ["x y", "x a y"]);
    assert!(s("x a? y", "x a a y").is_empty());
    assert_eq!(s("x a+ y", "x a a y"), ["x a a y"]);
    assert!(s("x a+ y", "x y").is_empty());
}

#[test]
fn groups_and_alternation() {
    let d = || by_type(&["a", "b", "c"]);
    let s = |pat: &str, input: &str| run(pat, d(), opts(Strict, SkipPastLastRow, None), input);
    assert_eq!(s("(a b)+ c", "a b a b c"), ["a b a b c"]);
    assert!(s("(a b)+ c", "a b b c").is_empty());
    assert_eq!(s("a (b | c) a", "a c a a b a"), ["a c a", "a b a"]);
    assert_eq!(s("(a | b){2} c", "b a c"), ["b a c"]);
    assert_eq!(s("a | b c", "b c a"), ["b c", "a"]);
}

#[test]
fn eager_emission_for_trailing_quantifier() {
    let d = by_type(&["a", "b"]);
    // Emitted at the first b (streaming); MATCH_RECOGNIZE would wait for "a b b b".
    assert_eq!(run("a b+", d.clone(), opts(SkipTillNext, SkipPastLastRow, None), "a b b b"), ["a b"]);
    // NoSkip keeps extending, like Flink NO_SKIP.
    assert_eq!(run("a b+", d, opts(SkipTillNext, NoSkip, None), "a b b b"), ["a b", "a b b", "a b b b"]);
}

// ------------------------------------------------------ contiguity & skipping

#[test]
fn contiguity_modes() {
    let d = || by_type(&["a", "b"]);
    let r = |c, input| run("a b", d(), opts(c, NoSkip, None), input);
    assert!(r(Strict, "a x b").is_empty());
    assert_eq!(r(Strict, "a b"), ["a b"]);
    assert_eq!(r(SkipTillNext, "a x b b"), ["a b"]);
    assert_eq!(r(SkipTillAny, "a x b1 b2"), ["a b1", "a b2"]);
}

#[test]
fn overlapping_matches_and_skip_strategies() {
    let d = || by_type(&["a", "b"]);
    let r = |am, input| run("a b", d(), opts(SkipTillNext, am, None), input);
    // Two runs (a1, a2) complete on b1.
    assert_eq!(r(SkipPastLastRow, "a1 a2 b1 b2"), ["a1 b1"]);
    assert_eq!(r(SkipToNextRow, "a1 a2 b1 b2"), ["a1 b1", "a2 b1"]);
    assert_eq!(r(NoSkip, "a1 a2 b1 b2"), ["a1 b1", "a2 b1"]);
    // Past last row: no new run starts at a matched row, later ones do.
    let d2 = by_type(&["a"]);
    assert_eq!(run("a a", d2.clone(), opts(Strict, SkipPastLastRow, None), "a1 a2 a3 a4 a5"), ["a1 a2", "a3 a4"]);
    assert_eq!(run("a a", d2, opts(Strict, SkipToNextRow, None), "a1 a2 a3 a4"), ["a1 a2", "a2 a3", "a3 a4"]);
}

#[test]
fn skip_to_next_row_keeps_other_runs_going() {
    // Run from a1 waits for c; run from a2 matches "a b" first... same start rule only.
    let d = by_type(&["a", "b", "c"]);
    let got = run("a (b | c c)", d, opts(SkipTillNext, SkipToNextRow, None), "a1 c1 a2 b1 c2");
    assert_eq!(got, ["a2 b1", "a1 c1 c2"]);
}

// ------------------------------------------------------------------ within

#[test]
fn within_edges_inclusive() {
    let p = compile("a b", &by_type(&["a", "b"]), opts(SkipTillNext, SkipPastLastRow, Some(10))).unwrap();
    let a = ev(&p, 1, 100, &[("t", text("a"))]);
    let ok = ev(&p, 2, 110, &[("t", text("b"))]);
    let late = ev(&p, 2, 111, &[("t", text("b"))]);
    assert_eq!(ids(&match_all(&p, &[a.clone(), ok])), vec![vec![1, 2]]);
    assert!(match_all(&p, &[a.clone(), late]).is_empty());
    let mut st = p.new_state();
    let mut out = vec![];
    p.advance(&mut st, &a, &mut out);
    assert_eq!(p.next_deadline(&st), Some(111));
    p.expire(&mut st, 110, &mut out);
    assert_eq!(st.len(), 1);
    p.expire(&mut st, 111, &mut out);
    assert!(st.is_empty() && out.is_empty());
    assert_eq!(p.next_deadline(&st), None);
}

#[test]
fn equal_timestamps_follow_feed_order() {
    let p = compile("a b", &by_type(&["a", "b"]), opts(Strict, SkipPastLastRow, Some(5))).unwrap();
    let a = ev(&p, 1, 50, &[("t", text("a"))]);
    let b = ev(&p, 2, 50, &[("t", text("b"))]);
    assert_eq!(ids(&match_all(&p, &[a.clone(), b.clone()])), vec![vec![1, 2]]);
    assert!(match_all(&p, &[b, a]).is_empty());
}

// ---------------------------------------------------------------- absences

#[test]
fn absence_in_the_middle() {
    let d = || by_type(&["a", "x", "c"]);
    let r = |c, input| run("a !x c", d(), opts(c, SkipPastLastRow, None), input);
    assert_eq!(r(SkipTillNext, "a d c"), ["a c"]);
    assert!(r(SkipTillNext, "a x c").is_empty());
    assert_eq!(r(SkipTillNext, "a1 x a2 c"), ["a2 c"]);
    assert!(r(SkipTillAny, "a d x c").is_empty());
    assert_eq!(r(Strict, "a c"), ["a c"]);
    // The absence resets when the run binds a new row.
    let d2 = by_type(&["a", "x", "c"]);
    assert_eq!(run("a+ !x c", d2, opts(SkipTillNext, SkipPastLastRow, None), "a1 x a2 c"), ["a1 a2 c"]);
}

#[test]
fn absence_at_end_completes_on_expire() {
    let p = compile("a !x", &by_type(&["a", "x"]), opts(SkipTillNext, SkipPastLastRow, Some(10))).unwrap();
    let mut st = p.new_state();
    let mut out = vec![];
    p.advance(&mut st, &ev(&p, 1, 100, &[("t", text("a"))]), &mut out);
    p.advance(&mut st, &ev(&p, 2, 105, &[("t", text("d"))]), &mut out);
    assert_eq!(p.next_deadline(&st), Some(111));
    p.expire(&mut st, 110, &mut out);
    assert!(out.is_empty(), "an x could still arrive at ts 110");
    p.expire(&mut st, 111, &mut out);
    assert_eq!(out, vec![Match { start: 100, end: 110, rows: vec![(0, 1)], dropped_partials: false, ..Match::default() }]);
    assert!(st.is_empty());
}

#[test]
fn absence_at_end_violated_at_the_edge() {
    let p = compile("a !x", &by_type(&["a", "x"]), opts(SkipTillNext, SkipPastLastRow, Some(10))).unwrap();
    let events = [ev(&p, 1, 100, &[("t", text("a"))]), ev(&p, 2, 110, &[("t", text("x"))])];
    assert!(match_all(&p, &events).is_empty());
}

#[test]
fn absence_at_end_completed_by_late_event() {
    let p = compile("a !x", &by_type(&["a", "x"]), opts(Strict, SkipPastLastRow, Some(10))).unwrap();
    let mut st = p.new_state();
    let mut out = vec![];
    p.advance(&mut st, &ev(&p, 1, 100, &[("t", text("a"))]), &mut out);
    // Strict: the gap event does not kill a run that only waits for the deadline.
    p.advance(&mut st, &ev(&p, 2, 104, &[("t", text("d"))]), &mut out);
    // Late event: the pending match comes out before the event's own match.
    p.advance(&mut st, &ev(&p, 3, 200, &[("t", text("a"))]), &mut out);
    assert_eq!(out, vec![Match { start: 100, end: 110, rows: vec![(0, 1)], dropped_partials: false, ..Match::default() }]);
    assert_eq!(st.len(), 1);
    p.expire(&mut st, i64::MAX, &mut out);
    assert_eq!(ids(&out), vec![vec![1], vec![3]]);
}

#[test]
fn absence_at_end_with_optional_rows() {
    let d = by_type(&["a", "b", "x"]);
    let p = compile("a b* !x", &d, opts(SkipTillNext, SkipPastLastRow, Some(100))).unwrap();
    let (labels, events) = stream(&p, "a b1 b2 d");
    assert_eq!(show(&p, &labels, &match_all(&p, &events), &[]), ["a b1 b2"]);
    let (labels, events) = stream(&p, "a b1 x");
    assert!(show(&p, &labels, &match_all(&p, &events), &[]).is_empty());
}

// ------------------------------------------------------------------ errors

fn err(pattern: &str, define: serde_json::Value, o: PatternOptions) -> PatternError {
    compile(pattern, &define, o).unwrap_err()
}

#[test]
fn syntax_errors_point_at_the_token() {
    let e = err("login ( browse)+)", json!({}), PatternOptions::default());
    assert_eq!(e.kind, PatternErrorKind::Syntax);
    assert_eq!(e.position, Some(16));
    assert_eq!(e.to_string(), r#"pattern: unexpected ')' at position 16: "login ( browse)+)""#);
    let cases: &[(&str, usize, &str)] = &[
        ("a (b", 4, "unexpected end of pattern"),
        ("a b{3,1}", 3, "invalid quantifier '{3,1}'"),
        ("a b{2", 3, "unterminated '{'"),
        ("a b++", 4, "a quantifier cannot follow a quantifier"),
        ("!a b", 0, "cannot start with an absence"),
        ("a (!b c)", 3, "only allowed at the top level"),
        ("a !b+ c", 4, "an absence cannot be quantified"),
        ("a !b | c", 2, "inside an alternation"),
        ("a # b", 2, "unexpected '#'"),
        ("", 0, "unexpected end of pattern"),
        ("a ( | b)", 4, "unexpected '|'"),
        ("a{200}", 1, "exceeds the limit of 100"),
        ("{- a b", 6, "unexpected end of pattern"),
        ("a, b", 1, "unexpected ','"),
        ("PERMUTE(a b", 11, "unexpected end of pattern"),
    ];
    for (pat, pos, msg) in cases {
        let e = err(pat, json!({}), opts(SkipTillNext, SkipPastLastRow, Some(1)));
        assert_eq!(e.kind, PatternErrorKind::Syntax, "{pat}");
        assert_eq!(e.position, Some(*pos), "{pat}: {e}");
        assert!(e.message.contains(msg), "{pat}: {e}");
    }
}

#[test]
fn define_errors() {
    let o = PatternOptions::default;
    let e = err("big", json!({"big": {"amount": {"=>": 5}}}), o());
    assert_eq!(e.kind, PatternErrorKind::BadPredicate);
    assert_eq!(e.message, r#"define.big.amount: operator "=>" is not one of =, <>, <, <=, >, >=, in, like, ~, is_null"#);
    let e = err("a", json!({"a": {}, "zzz": {"t": 1}}), o());
    assert_eq!(e.kind, PatternErrorKind::UnusedDefine);
    assert!(e.message.starts_with("define.zzz: symbol \"zzz\" is defined but not used"), "{e}");
    let e = err("a", json!({"big amount": {"t": 1}}), o());
    assert_eq!(e.kind, PatternErrorKind::UnknownSymbol);
    assert!(e.message.contains("\"big amount\" is not a valid symbol name"), "{e}");
    let bad: &[(serde_json::Value, &str)] = &[
        (json!({"a": {"name": {"~": "("}}}), "define.a.name.~: invalid regular expression"),
        (json!({"a": {"x": {">": "PREV.1x"}}}), "define.a.x.>: \"PREV.1x\" looks like a reference"),
        (json!({"a": {"x": {"in": 3}}}), "define.a.x.in: expected an array"),
        (json!({"a": {"x": {"is_null": 1}}}), "define.a.x.is_null: expected true or false"),
        (json!({"a": {"x": {"=": null}}}), "define.a.x.=: comparison with null"),
        (json!({"a": {"x": {"like": 3}}}), "define.a.x.like: expected a string"),
        (json!({"a": 3}), "define.a: expected an object"),
        (json!({"a": {}}), "define.a: empty condition object"),
        (json!({"a": {"or": {}}}), "define.a.or: expected an array"),
        (json!({"a": {"x": [1]}}), "define.a.x: expected a literal"),
        (json!([1]), "define: expected a JSON object"),
    ];
    for (d, msg) in bad {
        let e = err("a", d.clone(), o());
        assert_eq!(e.kind, PatternErrorKind::BadPredicate, "{d}");
        assert!(e.message.starts_with(msg), "{d}: {e}");
    }
}

#[test]
fn option_errors() {
    let e = "sometimes".parse::<Contiguity>().unwrap_err();
    assert_eq!(e.kind, PatternErrorKind::BadOption);
    assert_eq!(e.message, r#"contiguity: "sometimes" is not one of strict, skip_till_next, skip_till_any"#);
    assert_eq!("skip_till_any".parse::<Contiguity>().unwrap(), SkipTillAny);
    assert_eq!("strict".parse::<Contiguity>().unwrap(), Strict);
    assert_eq!("to_next_row".parse::<AfterMatch>().unwrap(), SkipToNextRow);
    assert_eq!("past_last_row".parse::<AfterMatch>().unwrap(), SkipPastLastRow);
    assert!("x".parse::<AfterMatch>().unwrap_err().message.starts_with("after_match: \"x\""));
    let e = err("a !b", json!({}), opts(SkipTillNext, SkipPastLastRow, None));
    assert_eq!(e.kind, PatternErrorKind::BadOption);
    assert!(e.message.starts_with("within: a pattern ending in an absence"), "{e}");
    let e = err("a", json!({}), opts(SkipTillNext, SkipPastLastRow, Some(0)));
    assert_eq!(e.kind, PatternErrorKind::BadOption);
    let e = err("a", json!({}), PatternOptions { max_partials: 0, ..Default::default() });
    assert_eq!(e.kind, PatternErrorKind::BadOption);
}

// ------------------------------------------------------- state & memory

#[test]
fn serde_round_trip_mid_match() {
    let define = json!({
        "a": {"t": "a"},
        "b": {"t": "b", "amount": {">=": "PREV.amount"}},
        "c": {"t": "c"},
        "x": {"t": "x"},
    });
    let p = compile("a b+ !x c", &define, opts(SkipTillAny, SkipToNextRow, Some(1000))).unwrap();
    let e = |id: i64, t: &str, amount: i64| ev(&p, id, id * 10, &[("t", text(t)), ("amount", Value::Int(amount))]);
    let events = vec![e(1, "a", 1), e(2, "b", 2), e(3, "b", 1), e(4, "d", 0), e(5, "b", 5), e(6, "c", 0), e(7, "c", 0)];
    let want = match_all(&p, &events);
    assert!(!want.is_empty());
    for cut in 1..events.len() {
        let mut st = p.new_state();
        let mut out = vec![];
        for ev in &events[..cut] {
            p.advance(&mut st, ev, &mut out);
        }
        let json = serde_json::to_string(&st).unwrap();
        let mut st2: KeyState = serde_json::from_str(&json).unwrap();
        assert_eq!(st, st2);
        for ev in &events[cut..] {
            p.advance(&mut st2, ev, &mut out);
        }
        p.expire(&mut st2, i64::MAX, &mut out);
        assert_eq!(out, want, "cut at {cut}");
    }
}

#[test]
fn max_partials_drops_oldest() {
    let p = compile(
        "a b+ c",
        &by_type(&["a", "b", "c"]),
        PatternOptions { contiguity: SkipTillAny, after_match: NoSkip, within: None, max_partials: 5, emit: Emit::Eager },
    )
    .unwrap();
    let (labels, events) = stream(&p, "a1 a2 a3 a4 a5 a6 a7 b c");
    let mut st = p.new_state();
    let mut out = vec![];
    for e in &events {
        p.advance(&mut st, e, &mut out);
        assert!(st.len() <= 5);
    }
    assert!(st.dropped() > 0);
    // The newest runs survive.
    let got = show(&p, &labels, &out, &[]);
    assert!(got.contains(&"a7 b c".to_string()), "{got:?}");
    assert!(!got.iter().any(|m| m.starts_with("a1 ")), "{got:?}");
    // Every match emitted after the drop says so; once the key has nothing pending, its next
    // matches are clean again.
    assert!(out.iter().all(|m| m.dropped_partials), "{out:?}");
    let next = compile(
        "a b",
        &by_type(&["a", "b"]),
        PatternOptions { contiguity: SkipTillNext, after_match: SkipPastLastRow, within: None, max_partials: 1, emit: Emit::Eager },
    )
    .unwrap();
    let (_, events) = stream(&next, "a a b x a b");
    let (mut st, mut out) = (next.new_state(), vec![]);
    for e in &events {
        next.advance(&mut st, e, &mut out);
    }
    assert_eq!(out.iter().map(|m| m.dropped_partials).collect::<Vec<_>>(), [true, false], "{out:?}");
    // The same with emit => 'final': a forced decision flags its match.
    let final_ = compile(
        "a b*",
        &by_type(&["a", "b"]),
        PatternOptions { contiguity: Strict, after_match: SkipPastLastRow, within: None, max_partials: 3, emit: Emit::Final },
    )
    .unwrap();
    let (_, events) = stream(&final_, "a b b b x a b x");
    let (mut st, mut out) = (final_.new_state(), vec![]);
    for e in &events {
        final_.advance(&mut st, e, &mut out);
    }
    assert!(st.dropped() > 0);
    assert_eq!(out.iter().map(|m| (m.rows.len(), m.dropped_partials)).collect::<Vec<_>>(), [(4, true), (2, false)], "{out:?}");
}

// ------------------------------------------------ login -> browse -> purchase

#[test]
fn login_browse_purchase_two_users() {
    const MIN: i64 = 60_000_000;
    let define = json!({
        "login": {"event_type": "login"},
        "browse": {"event_type": "browse"},
        "purchase": {"event_type": "purchase"},
    });
    let p = compile("login browse+ purchase", &define, opts(SkipTillNext, SkipPastLastRow, Some(30 * MIN))).unwrap();
    assert_eq!(p.columns(), ["event_type"]);
    // (user, minute, type); ids are the index.
    let feed = [
        ("ann", 0, "login"),
        ("bob", 1, "login"),
        ("ann", 2, "browse"),
        ("bob", 3, "browse"),
        ("ann", 5, "browse"),
        ("bob", 4, "browse"),
        ("ann", 9, "purchase"),
        ("bob", 45, "purchase"), // too late: bob's run expired at minute 31
    ];
    let mut states: HashMap<&str, KeyState> = HashMap::new();
    let mut got: Vec<(&str, Match)> = vec![];
    for (i, (user, minute, t)) in feed.iter().enumerate() {
        let st = states.entry(user).or_insert_with(|| p.new_state());
        let mut out = vec![];
        p.advance(st, &ev(&p, i as i64, minute * MIN, &[("event_type", text(t))]), &mut out);
        got.extend(out.into_iter().map(|m| (*user, m)));
        if st.is_empty() {
            states.remove(user);
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "ann");
    assert_eq!(got[0].1, Match { start: 0, end: 9 * MIN, rows: vec![(0, 0), (1, 2), (1, 4), (2, 6)], dropped_partials: false, ..Match::default() });
    // Bob's partial run was dropped on his late purchase; the state is gone.
    assert!(!states.contains_key("bob"));
    assert!(states.is_empty());
}

// ------------------------------------------------------- property test

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn streaming_with_serde_round_trips_equals_match_all() {
    let define = json!({
        "a": {"t": "a"},
        "b": {"t": "b", "v": {">=": "PREV.v"}},
        "c": {"or": [{"t": "c"}, {"v": {">": 8}}]},
        "x": {"t": "x"},
    });
    let patterns = ["a b+ c", "a b* c", "a !x c", "a b? c !x", "(a | b){2,3} c", "a (b c)+", "a !x b{1,2} c"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for pat in patterns {
        for c in [Strict, SkipTillNext, SkipTillAny] {
            for am in [SkipPastLastRow, SkipToNextRow, NoSkip] {
                let o = PatternOptions { contiguity: c, after_match: am.clone(), within: Some(40), max_partials: 50, emit: Emit::Eager };
                let mut d = define.clone();
                d.as_object_mut().unwrap().retain(|k, _| pat.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == k));
                let p = compile(pat, &d, o).unwrap();
                for _ in 0..20 {
                    let n = 5 + rng.below(40) as i64;
                    let mut ts = 0;
                    let events: Vec<Event> = (0..n)
                        .map(|id| {
                            ts += rng.below(8) as i64;
                            let t = ["a", "b", "c", "x", "d"][rng.below(5) as usize];
                            ev(&p, id, ts, &[("t", text(t)), ("v", Value::Int(rng.below(10) as i64))])
                        })
                        .collect();
                    let want = match_all(&p, &events);
                    let mut st = p.new_state();
                    let mut out = vec![];
                    for (i, e) in events.iter().enumerate() {
                        p.advance(&mut st, e, &mut out);
                        let json = serde_json::to_string(&st).unwrap();
                        st = serde_json::from_str(&json).unwrap();
                        // A timer firing before the next event must not change results.
                        if let (Some(d), Some(next)) = (p.next_deadline(&st), events.get(i + 1)) {
                            if d <= next.ts {
                                p.expire(&mut st, d, &mut out);
                            }
                        }
                        if st.is_empty() && rng.below(2) == 0 {
                            st = p.new_state(); // caller deleted the empty state
                        }
                    }
                    p.expire(&mut st, i64::MAX, &mut out);
                    assert_eq!(out, want, "{pat} {c:?} {am:?} {events:?}");
                }
            }
        }
    }
}

#[test]
fn absence_matches_respect_skip_strategies() {
    // Run from a1 completes at its deadline; a2 started after a1's last row,
    // so it survives past-last-row and completes at its own deadline.
    for am in [SkipPastLastRow, SkipToNextRow, NoSkip] {
        let p = compile("a !x", &by_type(&["a", "x"]), opts(SkipTillNext, am.clone(), Some(10))).unwrap();
        let mut st = p.new_state();
        let mut out = vec![];
        p.advance(&mut st, &ev(&p, 1, 0, &[("t", text("a"))]), &mut out);
        p.advance(&mut st, &ev(&p, 2, 5, &[("t", text("a"))]), &mut out);
        assert_eq!(p.next_deadline(&st), Some(11));
        p.expire(&mut st, 11, &mut out);
        assert_eq!(ids(&out), vec![vec![1]], "{am:?}");
        assert_eq!(p.next_deadline(&st), Some(16));
        p.expire(&mut st, 16, &mut out);
        assert_eq!(out[1], Match { start: 5, end: 15, rows: vec![(0, 2)], dropped_partials: false, ..Match::default() }, "{am:?}");
    }
}

#[test]
fn key_state_json_is_compact() {
    let p = compile("a b+ c", &by_type(&["a", "b", "c"]), PatternOptions::default()).unwrap();
    let (_, events) = stream(&p, "a b");
    let mut st = p.new_state();
    let mut out = vec![];
    for e in &events {
        p.advance(&mut st, e, &mut out);
    }
    // Rows 0 (symbol a) and 1 (b): symbols run-length encoded, ids as differences.
    assert_eq!(serde_json::to_string(&st).unwrap(), r#"{"r":[{"p":1,"t":0,"s":1,"l":2,"w":[[0,1,1,1],[0,1]]}],"s":2,"d":0}"#);
    let busy = r#"{"r":[{"p":1,"t":0,"s":1,"l":4,"w":[[0,1,1,3],[100,5,2,13]]}],"s":4,"d":0}"#;
    let st: KeyState = serde_json::from_str(busy).unwrap();
    assert_eq!(serde_json::to_string(&st).unwrap(), busy, "rows 100 (a), 105, 107, 120 (b) round-trip");
    for bad in [r#"[[0,1,1],[100,5]]"#, r#"[[0,2],[100]]"#, r#"[[0,1],[100,5]]"#] {
        let text = busy.replace("[[0,1,1,3],[100,5,2,13]]", bad);
        assert!(serde_json::from_str::<KeyState>(&text).is_err(), "{bad} is refused");
    }
}

#[test]
fn nan_values_survive_json_state() {
    let v: Value = serde_json::from_str(&serde_json::to_string(&Value::Float(f64::NAN)).unwrap()).unwrap();
    assert!(matches!(v, Value::Float(f) if f.is_nan()));
}

/// The trigger skips events that cannot change anything; skipping them must not change a match.
#[test]
fn skipping_events_that_cannot_affect_gives_the_same_matches() {
    let define = serde_json::json!({"a": {"t": "login"}, "b": {"t": "browse"}, "c": {"t": "buy"}});
    let kinds = ["login", "browse", "noise", "buy", "noise", "other"];
    for contiguity in [Contiguity::SkipTillNext, Contiguity::SkipTillAny, Contiguity::Strict] {
        let options = PatternOptions { contiguity, within: Some(1_000), ..Default::default() };
        let p = compile("a b+ c", &define, options).unwrap();
        let events: Vec<Event> = (0..200)
            .map(|i| Event { id: i, ts: i * 7, values: vec![Value::Text(kinds[(i as usize * 7 + i as usize / 3) % kinds.len()].into())] })
            .collect();
        let all = match_all(&p, &events);
        let kept: Vec<Event> = events.iter().filter(|e| p.can_affect(&e.values)).cloned().collect();
        assert_eq!(match_all(&p, &kept), all, "{contiguity:?}");
        if contiguity != Contiguity::Strict {
            assert!(kept.len() < events.len());
        } else {
            assert_eq!(kept.len(), events.len(), "strict contiguity needs every row");
        }
    }
}

#[test]
fn oversized_patterns_are_refused_before_they_cost_stack_memory_or_time() {
    let too_complex = |pattern: &str, define: serde_json::Value, what: &str| {
        let started = std::time::Instant::now();
        let e = err(pattern, define, PatternOptions::default());
        assert_eq!(e.kind, PatternErrorKind::TooComplex, "{what}: {e}");
        assert!(e.message.len() <= crate::MAX_MESSAGE_BYTES, "{what}: {} bytes", e.message.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{what}: {:?}", started.elapsed());
        e
    };
    // 20,000 levels would overflow the stack; 33 is one over the limit, in a short text.
    let deep = format!("{}a{}", "(".repeat(33), ")".repeat(33));
    let e = too_complex(&deep, json!({}), "nesting");
    assert!(e.message.contains("nested deeper than 32 levels"), "{e}");
    let shallow = format!("{}a{}", "(".repeat(32), ")".repeat(32));
    assert!(compile(&shallow, &json!({}), PatternOptions::default()).is_ok());
    let e = too_complex(&format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000)), json!({}), "20,000 deep");
    assert!(e.message.contains("longer than the limit of 10000"), "{e}");
    too_complex(&"a ".repeat(5_000_000), json!({}), "10 MB");
    // Every last position links to every first one: (a|b|...)* over 400 symbols' occurrences.
    let many = format!("x ({})+", vec!["a"; 400].join(" | "));
    let e = too_complex(&many, json!({}), "transitions");
    assert!(e.message.contains("too many transitions"), "{e}");
    too_complex(&format!("{}a", "a|".repeat(4_999)), json!({}), "alternatives");
    // Conditions: nesting and count.
    let mut nested = json!({"v": 1});
    for _ in 0..40 {
        nested = json!({ "not": nested });
    }
    let e = too_complex("a", json!({ "a": nested }), "condition depth");
    assert!(e.message.contains("nested deeper than 32"), "{e}");
    let values: Vec<i64> = (0..20_000).collect();
    let e = too_complex("a", json!({ "a": { "v": { "in": values } } }), "condition size");
    assert!(e.message.contains("more than 10000 conditions"), "{e}");
}

// ---------------------------------------------------------------- SQL expressions in DEFINE and MEASURES

fn standard(after: AfterMatch) -> PatternOptions {
    PatternOptions { contiguity: Contiguity::Strict, after_match: after, within: None, max_partials: 1000, emit: Emit::Final }
}

fn expression_error(pattern: &str, define: serde_json::Value, clauses: Clauses, options: PatternOptions) -> PatternError {
    compile_clauses(pattern, &define, &clauses, options).expect_err("refused")
}

#[test]
fn expression_errors_name_the_expression_and_the_position() {
    let e = expression_error("a b", json!({"b": "price < PREV(price"}), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
    assert_eq!(e.kind, PatternErrorKind::BadPredicate);
    assert_eq!(e.position, Some(18), "{}", e.message);
    assert!(e.message.starts_with("define.b: unexpected end of expression at position 18"), "{}", e.message);

    let e = expression_error("a b", json!({"b": "LAST(x.price) > 1"}), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
    assert!(e.message.contains("\"x\" is not a pattern variable (variables: a, b)") && e.position == Some(5), "{}", e.message);

    let e = expression_error("a b", json!({"b": "frobnicate(price)"}), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
    assert!(e.message.contains("function \"FROBNICATE\" is not one of PREV, NEXT"), "{}", e.message);

    let e = expression_error("a b", json!({"b": "price = 'open"}), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
    assert!(e.message.contains("unterminated string at position 8"), "{}", e.message);

    // An aggregate's argument is one row of one variable (or of the match): not of two.
    let e = expression_error("a b", json!({"b": "SUM(a.price + b.price) > 1"}), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
    assert_eq!((e.kind, e.position), (PatternErrorKind::BadPredicate, Some(4)), "{}", e.message);
    assert!(e.message.contains("an aggregate's argument reads one variable's rows (or the match's), not several"), "{}", e.message);

    let measures = Clauses { measures: json!({"n": 3}), subset: serde_json::Value::Null };
    let e = expression_error("a b", json!({}), measures, standard(AfterMatch::SkipPastLastRow));
    assert!(e.message.starts_with("measures.n: expected an expression as a string"), "{}", e.message);
}

#[test]
fn what_the_standard_has_and_pg_cep_does_not_is_refused_as_unsupported_with_its_position() {
    for (define, what, at) in [
        ("PREV(price * 2) > 1", "PREV of an expression", 5),
        ("MATCH_NUMBER() = 1", "MATCH_NUMBER() in DEFINE", 0),
        ("SUM(DISTINCT price) > 1", "SUM(DISTINCT ...)", 0),
        ("price IN (SELECT 1)", "a subquery", 10),
        ("FINAL LAST(price) > 1", "FINAL in DEFINE", 0),
        ("PREV(price, n) > 1", "a navigation offset other than a non-negative integer literal", 12),
        ("CAST(price AS money) > 1", "type MONEY", 14),
        ("SUM(PREV(price)) > 1", "PREV inside an aggregate", 4),
        ("SUM(AVG(price)) > 1", "AVG inside an aggregate", 4),
        ("ARRAY_AGG(price) IS NULL", "ARRAY_AGG in DEFINE (it is for MEASURES)", 0),
    ] {
        let e = expression_error("a b", json!({ "b": define }), Clauses::default(), standard(AfterMatch::SkipPastLastRow));
        assert_eq!(e.kind, PatternErrorKind::Unsupported, "{define}: {}", e.message);
        assert!(e.message.contains(what) && e.position == Some(at), "{define}: {} at {:?}", e.message, e.position);
    }
}

#[test]
fn navigating_expressions_need_the_standards_matching_and_row_expressions_run_anywhere() {
    let eager = opts(Contiguity::SkipTillNext, AfterMatch::SkipPastLastRow, None);
    let e = expression_error("a b", json!({"b": "price > PREV(price)"}), Clauses::default(), eager.clone());
    assert_eq!(e.kind, PatternErrorKind::Unsupported);
    assert!(e.message.contains("DEFINE expressions that read other rows"), "{}", e.message);

    // An expression over the row alone is a condition like any other, in every mode.
    let p = compile("a b", &json!({"a": "t = 'a' AND amount * 2 > 10", "b": "upper(t) = 'B'"}), eager).unwrap();
    let events = [
        ev(&p, 1, 10, &[("t", text("a")), ("amount", Value::Int(3))]),
        ev(&p, 2, 20, &[("t", text("a")), ("amount", Value::Int(6))]),
        ev(&p, 3, 30, &[("t", text("b"))]),
    ];
    let found = match_all(&p, &events);
    assert_eq!(found.iter().map(|m| m.rows.clone()).collect::<Vec<_>>(), vec![vec![(0, 2), (1, 3)]]);
}

#[test]
fn expressions_never_fail_at_run_time_they_give_null() {
    let p = compile(
        "a",
        &json!({"a": "amount / divisor > 0 OR amount * 9223372036854775807 > 0 OR t + 1 > 0 OR CAST(t AS int) > 0 OR sqrt(amount - 100) > 0"}),
        standard(AfterMatch::SkipPastLastRow),
    )
    .unwrap();
    let events = [ev(&p, 1, 1, &[("amount", Value::Int(5)), ("divisor", Value::Int(0)), ("t", text("x"))])];
    assert_eq!(p.preferred_matches(&events).unwrap(), vec![]);
}

#[test]
fn measures_report_each_match_and_each_row() {
    let clauses = Clauses {
        measures: json!({"n": "MATCH_NUMBER()", "low": "LAST(down.price)", "avg": "AVG(both.price)", "rows": "COUNT(*)", "last": "CLASSIFIER()", "top": "FINAL MAX(price)"}),
        subset: json!({"both": ["strt", "down"]}),
    };
    let p = compile_clauses(
        "strt down+ up",
        &json!({"down": "price < PREV(price)", "up": "price > PREV(price)"}),
        &clauses,
        standard(AfterMatch::SkipPastLastRow),
    )
    .unwrap();
    let events: Vec<Event> =
        [10, 8, 6, 9, 7, 5, 12].iter().enumerate().map(|(i, p_)| ev(&p, i as i64, i as i64, &[("price", Value::Int(*p_))])).collect();
    let found = p.preferred_matches(&events).unwrap();
    assert_eq!(found.len(), 2);
    let names: Vec<&str> = p.measure_names().collect();
    assert_eq!(names, ["avg", "last", "low", "n", "rows", "top"]);
    let one = p.measure(&events, &found, false);
    assert_eq!(one[0][0], vec![Value::Float(8.0), text("up"), Value::Int(6), Value::Int(1), Value::Int(4), Value::Int(10)]);
    assert_eq!(one[1][0], vec![Value::Float(6.0), text("up"), Value::Int(5), Value::Int(2), Value::Int(3), Value::Int(12)]);
    // ALL ROWS PER MATCH: running, except FINAL.
    let all = p.measure(&events, &found, true);
    assert_eq!(all[1].iter().map(|r| r[1].clone()).collect::<Vec<_>>(), vec![text("strt"), text("down"), text("up")]);
    assert_eq!(all[1].iter().map(|r| r[4].clone()).collect::<Vec<_>>(), vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
    assert!(all[1].iter().all(|r| r[5] == Value::Int(12)));
}

#[test]
fn subsets_are_checked_when_written() {
    for (subset, says) in [
        (json!({"u": ["a", "zz"]}), "subset.u: \"zz\" is not a pattern variable (symbols: a, b)"),
        (json!({"a": ["b"]}), "is a pattern variable already"),
        (json!({"u": []}), "subset.u: empty"),
        (json!(["a"]), "subset: expected a JSON object"),
    ] {
        let e = expression_error("a b", json!({}), Clauses { measures: serde_json::Value::Null, subset }, standard(AfterMatch::SkipPastLastRow));
        assert_eq!(e.kind, PatternErrorKind::BadOption);
        assert!(e.message.contains(says), "{}", e.message);
    }
}

#[test]
fn a_key_state_stored_before_prev_could_reach_further_back_still_loads() {
    let state: KeyState = serde_json::from_str(r#"{"q":[{"id":1,"ts":1,"values":[]}],"b":true}"#).unwrap();
    assert_eq!(state.behind, 1);
    let state: KeyState = serde_json::from_str(r#"{"q":[],"b":3}"#).unwrap();
    assert_eq!(state.behind, 3);
}

#[test]
fn measures_of_an_eager_match_read_its_own_rows() {
    let clauses = Clauses { measures: json!({"n": "COUNT(*)", "first": "FIRST(v)", "prev": "PREV(v)"}), subset: serde_json::Value::Null };
    let p = compile_clauses(
        "a b",
        &json!({"a": {"t": "a"}, "b": {"t": "b"}}),
        &clauses,
        opts(Contiguity::SkipTillNext, AfterMatch::SkipPastLastRow, None),
    )
    .unwrap();
    let events: Vec<Event> =
        ["a", "x", "b"].iter().enumerate().map(|(i, t)| ev(&p, i as i64, i as i64, &[("t", text(t)), ("v", Value::Int(i as i64 + 1))])).collect();
    let found = match_all(&p, &events);
    assert_eq!(found.iter().map(|m| m.rows.clone()).collect::<Vec<_>>(), vec![vec![(0, 0), (1, 2)]]);
    // Names sort as first, n, prev; PREV is the match's previous row (1), not the skipped row (2).
    assert_eq!(p.measure(&events, &found, false), vec![vec![vec![Value::Int(1), Value::Int(2), Value::Int(1)]]]);
}

/// PERMUTE, anchors, exclusions and empty matches: the standard's, so refused where the pattern
/// would run eagerly, and (anchors, empty matches) named by `history_only` for live patterns.
#[test]
fn permute_anchors_exclusions_and_empty_matches() {
    let standard = PatternOptions { contiguity: Contiguity::Strict, emit: Emit::Final, ..PatternOptions::default() };
    let eager = opts(Contiguity::Strict, AfterMatch::SkipPastLastRow, None);
    let used = |pattern: &str| by_type(&["a", "b", "c"].into_iter().filter(|s| pattern.contains(s)).collect::<Vec<_>>());
    for (pattern, what) in [("a* b?", "empty sequence of rows"), ("^ a", "anchors (^ $)"), ("a {- b -}", "exclusions ({- -})")] {
        let e = err(pattern, used(pattern), eager.clone());
        assert_eq!(e.kind, PatternErrorKind::Unsupported, "{pattern}");
        assert!(e.message.contains(what) && e.message.contains("emit => 'final'"), "{pattern}: {e}");
    }
    let e = err("a \"b\"+", json!({}), standard.clone());
    assert_eq!((e.kind, e.position), (PatternErrorKind::Unsupported, Some(2)), "{e}");
    assert!(e.message.contains("quoted pattern variables"), "{e}");
    let e = err("PERMUTE(a, b, c, d, e, f)", json!({}), standard.clone());
    assert_eq!((e.kind, e.position), (PatternErrorKind::TooComplex, Some(0)), "{e}");

    let matches = |pattern: &str, input: &str| {
        let p = compile(pattern, &used(pattern), standard.clone()).unwrap();
        let (_, events) = stream(&p, input);
        let found = p.preferred_matches(&events).unwrap();
        (p, found.into_iter().map(|m| (m.rows.iter().map(|r| r.1).collect::<Vec<_>>(), m.empty_at, m.excluded)).collect::<Vec<_>>())
    };
    // PERMUTE(a, b) is (a b | b a): the first ordering that matches.
    let (p, found) = matches("PERMUTE(a, b) c", "b a c a b c");
    assert_eq!(found, vec![(vec![0, 1, 2], None, vec![]), (vec![3, 4, 5], None, vec![])]);
    assert_eq!(p.history_only(), None);
    // `^` only at the partition's first row, `$` only after its last.
    let (p, found) = matches("^ a", "a a a");
    assert_eq!(found, vec![(vec![0], None, vec![])]);
    assert_eq!(p.history_only(), Some("anchors (^ $)"));
    assert_eq!(matches("a $", "a a a").1, vec![(vec![2], None, vec![])]);
    assert_eq!(matches("a ^", "a a a").1, vec![]);
    // An empty match at each row `a*` cannot take; the search then moves one row on.
    let (p, found) = matches("a*", "b a a b");
    assert_eq!(found, vec![(vec![], Some(0), vec![]), (vec![1, 2], None, vec![]), (vec![], Some(3), vec![])]);
    assert_eq!(p.history_only(), Some("empty matches (its pattern can match no row)"));
    // Excluded rows are matched and named, and the match keeps them.
    let (p, found) = matches("a {- b+ -} c", "a b b c");
    assert_eq!(found, vec![(vec![0, 1, 2, 3], None, vec![1, 2])]);
    assert_eq!(p.history_only(), None);
}
