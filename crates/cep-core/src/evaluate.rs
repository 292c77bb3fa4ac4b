//! Scoring one transaction: which window aggregates the rules need, and what they decide.
//!
//! The rules' windows are collected into a [`WindowPlan`] so that one pass over a key's history
//! yields every aggregate at once, whatever the number of rules.

use serde_json::{json, Value};

use super::interval::{format_interval, MICROS_PER_SECOND, SECONDS_PER_DAY};
use super::rules::{AnomalyMethod, Condition, Metric, Rule};

/// The distinct history windows of a rule set, longest first, so the first one bounds the scan,
/// and for each the aggregates some rule reads: the query computes nothing else.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowPlan {
    pub windows: Vec<i64>,
    pub needs: Vec<Needs>,
    pub needs_location: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Needs {
    pub count: bool,
    pub sum: bool,
    pub max: bool,
    pub sum_sq: bool,
    /// Also reads `same_location`, so that a candidate row can be folded in.
    pub distinct_locations: bool,
    pub other_locations: bool,
}

impl Needs {
    fn of(condition: &Condition) -> Needs {
        let mut n = Needs::default();
        match condition {
            Condition::Threshold { metric, .. } => match metric {
                Metric::Amount => {}
                Metric::TransactionCount => n.count = true,
                Metric::TotalAmount => n.sum = true,
                Metric::AvgAmount => (n.count, n.sum) = (true, true),
                Metric::MaxAmount => n.max = true,
                Metric::DistinctLocations => n.distinct_locations = true,
            },
            Condition::NightTransaction { .. } => {}
            Condition::LocationChange { .. } => n.other_locations = true,
            Condition::Anomaly { .. } => (n.count, n.sum, n.sum_sq) = (true, true, true),
        }
        n
    }

    fn merge(&mut self, o: Needs) {
        self.count |= o.count;
        self.sum |= o.sum;
        self.max |= o.max;
        self.sum_sq |= o.sum_sq;
        self.distinct_locations |= o.distinct_locations;
        self.other_locations |= o.other_locations;
    }
}

impl WindowPlan {
    pub fn for_rules(rules: &[Rule]) -> WindowPlan {
        let mut windows: Vec<i64> = rules.iter().filter_map(|r| r.condition.window()).collect();
        windows.sort_unstable_by(|a, b| b.cmp(a));
        windows.dedup();
        let mut needs = vec![Needs::default(); windows.len()];
        for r in rules {
            if let Some(w) = r.condition.window() {
                let i = windows.iter().position(|x| *x == w).expect("collected above");
                needs[i].merge(Needs::of(&r.condition));
            }
        }
        WindowPlan { windows, needs, needs_location: rules.iter().any(|r| r.condition.needs_location()) }
    }

    fn index_of(&self, window: i64) -> usize {
        self.windows.iter().position(|w| *w == window).expect("window plan built from these rules")
    }
}

/// Aggregates of a key's rows in `[t - window, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    pub count: i64,
    pub sum: f64,
    pub max: Option<f64>,
    pub sum_sq: f64,
    pub distinct_locations: i64,
    /// Rows whose location is set and differs from the transaction's.
    pub other_locations: i64,
    /// Rows at the transaction's own location (read with `distinct_locations`).
    pub same_location: i64,
}

/// The transaction being scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction<'a> {
    pub amount: Option<f64>,
    pub location: Option<&'a str>,
    /// Microseconds since 1970-01-01 UTC.
    pub unix_micros: i64,
    /// UTC offset of the session's time zone at that instant, for rules that name no zone.
    pub session_utc_offset_secs: i32,
    /// True when the transaction is already among the rows the stats were read from (the monitor
    /// scores a stored row), false for a candidate that `evaluate_risk_rules` is asked about.
    pub in_history: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rule_id: i32,
    pub version: i32,
    pub score: f64,
    pub triggered: bool,
    /// The values the rule compared, so an analyst can see why it fired; null when it did not.
    pub evidence: Value,
    /// From a shadow rule: recorded, never part of the row's score.
    pub shadow: bool,
}

/// Adds a transaction that is not stored yet to the stats read for it, so that rules see the
/// window "including this row" before the row exists (the monitor's blocking mode).
pub fn include_candidate(stats: &mut [WindowStats], tx: &Transaction) {
    for s in stats {
        s.count += 1;
        if let Some(a) = tx.amount {
            s.sum += a;
            s.sum_sq += a * a;
            s.max = Some(s.max.map_or(a, |m| m.max(a)));
        }
        if tx.location.is_some() {
            if s.same_location == 0 {
                s.distinct_locations += 1;
            }
            s.same_location += 1;
        }
    }
}

/// Whether the outcomes carry the evidence of the rules that fired. Building it is most of what
/// scoring allocates; the monitor leaves it out for a row that only repeats an open alert under a
/// cooldown (nothing of it is written) and explains the rows that open one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    Explained,
    Omitted,
}

/// Scores a transaction against every rule. `stats` lines up with `plan.windows`.
pub fn evaluate(rules: &[Rule], plan: &WindowPlan, stats: &[WindowStats], tx: &Transaction, evidence: Evidence) -> Vec<Outcome> {
    rules
        .iter()
        .map(|rule| {
            let window_stats = rule.condition.window().map(|w| (w, stats[plan.index_of(w)]));
            let (triggered, evidence) = decide(&rule.condition, window_stats, tx, evidence);
            Outcome { rule_id: rule.id, version: rule.version, score: rule.score, triggered, evidence, shadow: rule.shadow }
        })
        .collect()
}

/// Whether a rule fires, and for a rule that fires, the values that made it fire. Evidence is
/// built only then: on the monitor's hot path most rules do not fire, and nobody reads it.
fn decide(condition: &Condition, window: Option<(i64, WindowStats)>, tx: &Transaction, wanted: Evidence) -> (bool, Value) {
    let (window_micros, s) = window.unwrap_or_default();
    let window_text = || format_interval(window_micros);
    let explain = |triggered: bool, evidence: &dyn Fn() -> Value| {
        (triggered, if triggered && wanted == Evidence::Explained { evidence() } else { Value::Null })
    };
    match condition {
        Condition::Threshold { metric: Metric::Amount, op, value, .. } => {
            let triggered = tx.amount.is_some_and(|a| op.holds(a, *value));
            explain(triggered, &|| json!({"metric": "amount", "observed": tx.amount, "operator": op.symbol(), "value": value}))
        }
        Condition::Threshold { metric, op, value, .. } => {
            let observed = match metric {
                Metric::TransactionCount => Some(s.count as f64),
                Metric::TotalAmount => Some(s.sum),
                Metric::AvgAmount => (s.count > 0).then(|| s.sum / s.count as f64),
                Metric::MaxAmount => s.max,
                Metric::DistinctLocations => Some(s.distinct_locations as f64),
                Metric::Amount => unreachable!("handled above"),
            };
            let triggered = observed.is_some_and(|o| op.holds(o, *value));
            explain(
                triggered,
                &|| json!({"metric": metric.name(), "observed": observed, "operator": op.symbol(), "value": value, "window": window_text()}),
            )
        }
        // An infinite time has no hour (SQL's extract gives NULL): never night.
        Condition::NightTransaction { tz, .. } if tx.unix_micros == i64::MIN || tx.unix_micros == i64::MAX => {
            explain(false, &|| json!({"local_time": null, "timezone": tz.map(|t| t.name().to_string())}))
        }
        Condition::NightTransaction { start_secs, end_secs, tz } => {
            let local = local_seconds_of_day(tx.unix_micros, *tz, tx.session_utc_offset_secs);
            let triggered = in_time_range(local, *start_secs, *end_secs);
            explain(triggered, &|| {
                let clock = format!("{:02}:{:02}:{:02}", local / 3600, local / 60 % 60, local % 60);
                json!({"local_time": clock, "timezone": tz.map(|t| t.name().to_string())})
            })
        }
        Condition::LocationChange { .. } => {
            let triggered = tx.location.is_some() && s.other_locations > 0;
            explain(triggered, &|| json!({"location": tx.location, "other_location_events": s.other_locations, "window": window_text()}))
        }
        Condition::Anomaly { method, threshold, min_samples, .. } => {
            let Some(amount) = tx.amount else {
                return (false, Value::Null);
            };
            // The history is the key's other rows: take this one out when it is stored already.
            let (n, sum, sum_sq) = if tx.in_history { (s.count - 1, s.sum - amount, s.sum_sq - amount * amount) } else { (s.count, s.sum, s.sum_sq) };
            if n < *min_samples || n <= 0 {
                return (false, Value::Null);
            }
            let mean = sum / n as f64;
            match method {
                AnomalyMethod::MeanMultiple => {
                    let triggered = amount > threshold * mean;
                    explain(triggered, &|| json!({"observed": amount, "mean": mean, "multiple": threshold, "samples": n, "window": window_text()}))
                }
                AnomalyMethod::ZScore => {
                    let variance = if n > 1 { ((sum_sq - sum * mean) / (n - 1) as f64).max(0.0) } else { 0.0 };
                    let stddev = variance.sqrt();
                    // A flat history has no spread: any amount above it is infinitely unusual.
                    let z = if stddev > 1e-9 {
                        (amount - mean) / stddev
                    } else if amount > mean + 1e-9 {
                        f64::INFINITY
                    } else {
                        0.0
                    };
                    explain(z > *threshold, &|| {
                        let z_json = if z.is_finite() { json!(z) } else { json!("Infinity") };
                        json!({"observed": amount, "mean": mean, "stddev": stddev, "zscore": z_json, "threshold": threshold, "samples": n, "window": window_text()})
                    })
                }
            }
        }
    }
}

/// Local time of day, in seconds, in the rule's zone or else the session's.
pub fn local_seconds_of_day(unix_micros: i64, tz: Option<chrono_tz::Tz>, session_offset_secs: i32) -> u32 {
    let secs = unix_micros.div_euclid(MICROS_PER_SECOND);
    let offset = match tz {
        Some(tz) => {
            use chrono::{Offset, TimeZone};
            match chrono::DateTime::from_timestamp(secs, 0) {
                Some(utc) => tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc() as i64,
                None => 0,
            }
        }
        None => session_offset_secs as i64,
    };
    (secs + offset).rem_euclid(SECONDS_PER_DAY) as u32
}

/// `[start, end)`, wrapping past midnight when `end < start`.
pub fn in_time_range(t: u32, start: u32, end: u32) -> bool {
    if start < end {
        start <= t && t < end
    } else {
        t >= start || t < end
    }
}

/// The seed's levels: high at or above `high`, medium at or above `medium`, low below.
pub fn risk_level(total: f64, high: f64, medium: f64) -> &'static str {
    if total >= high {
        "high"
    } else if total >= medium {
        "medium"
    } else {
        "low"
    }
}

/// Orders the levels `risk_level` returns; `None` for anything else.
pub fn level_rank(level: &str) -> Option<u8> {
    match level {
        "low" => Some(0),
        "medium" => Some(1),
        "high" => Some(2),
        _ => None,
    }
}

pub struct Assessment {
    pub total_score: f64,
    pub triggered: Vec<i32>,
    pub evidence: Value,
}

/// The seed's `evaluate_transaction`: the triggered scores summed, with each fired rule's evidence
/// (null when the outcomes were scored with `Evidence::Omitted`).
pub fn assess(outcomes: &[Outcome]) -> Assessment {
    let fired: Vec<&Outcome> = outcomes.iter().filter(|o| o.triggered && !o.shadow).collect();
    let explained = fired.iter().any(|o| !o.evidence.is_null());
    Assessment {
        total_score: fired.iter().fold(0.0, |sum, o| sum + o.score),
        triggered: fired.iter().map(|o| o.rule_id).collect(),
        evidence: if explained || fired.is_empty() {
            Value::Array(
                fired.iter().map(|o| json!({"rule_id": o.rule_id, "version": o.version, "score": o.score, "evidence": o.evidence})).collect(),
            )
        } else {
            Value::Null
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_condition;

    const HOUR: i64 = 3_600 * MICROS_PER_SECOND;

    fn rule(id: i32, t: &str, c: Value, score: f64) -> Rule {
        Rule::new(id, 1, score, parse_condition(t, &c).unwrap())
    }

    fn seed_rules() -> Vec<Rule> {
        vec![
            rule(1, "threshold", json!({"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}), 0.8),
            rule(2, "threshold", json!({"metric": "amount", "operator": ">", "value": 10000}), 0.6),
            rule(3, "pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}), 0.4),
            rule(4, "pattern", json!({"pattern": "location_change", "time_window": "5_minutes"}), 0.7),
        ]
    }

    /// 2026-01-15 12:00:00 UTC.
    const NOON: i64 = 1_768_478_400 * MICROS_PER_SECOND;

    fn tx(amount: f64, location: &'static str, unix_micros: i64) -> Transaction<'static> {
        Transaction { amount: Some(amount), location: Some(location), unix_micros, session_utc_offset_secs: 0, in_history: false }
    }

    #[test]
    fn plan_merges_windows_longest_first() {
        let plan = WindowPlan::for_rules(&seed_rules());
        assert_eq!(plan.windows, vec![HOUR, 5 * 60 * MICROS_PER_SECOND]);
        assert!(plan.needs_location);
        // The hour needs only a count, the five minutes only the other locations.
        assert_eq!(plan.needs, vec![Needs { count: true, ..Default::default() }, Needs { other_locations: true, ..Default::default() }]);
    }

    #[test]
    fn omitted_evidence_changes_nothing_but_the_evidence() {
        let rules = seed_rules();
        let plan = WindowPlan::for_rules(&rules);
        let busy = WindowStats { count: 11, sum: 500.0, max: Some(100.0), ..Default::default() };
        let moved = WindowStats { count: 1, other_locations: 1, ..Default::default() };
        let t = tx(20_000.0, "Paris", NOON);
        let explained = evaluate(&rules, &plan, &[busy, moved], &t, Evidence::Explained);
        let omitted = evaluate(&rules, &plan, &[busy, moved], &t, Evidence::Omitted);
        let verdict = |o: &Outcome| (o.rule_id, o.version, o.score, o.triggered, o.shadow);
        assert_eq!(explained.iter().map(verdict).collect::<Vec<_>>(), omitted.iter().map(verdict).collect::<Vec<_>>());
        assert!(explained.iter().filter(|o| o.triggered).all(|o| o.evidence.is_object()));
        assert!(omitted.iter().all(|o| o.evidence.is_null()));
        let (a, b) = (assess(&explained), assess(&omitted));
        assert_eq!((a.total_score, &a.triggered), (b.total_score, &b.triggered));
        assert_eq!(a.evidence.as_array().map(Vec::len), Some(3));
        assert!(b.evidence.is_null(), "no evidence array is built for omitted evidence");
        // Nothing fired: the same empty array either way.
        let quiet = evaluate(&rules, &plan, &[WindowStats::default(), WindowStats::default()], &tx(1.0, "Paris", NOON), Evidence::Omitted);
        assert_eq!(assess(&quiet).evidence, json!([]));
    }

    #[test]
    fn seed_rules_decide_like_the_seed() {
        let rules = seed_rules();
        let plan = WindowPlan::for_rules(&rules);
        let busy = WindowStats { count: 11, sum: 500.0, max: Some(100.0), ..Default::default() };
        let moved = WindowStats { count: 1, other_locations: 1, ..Default::default() };
        let out = evaluate(&rules, &plan, &[busy, moved], &tx(20_000.0, "Paris", NOON), Evidence::Explained);
        let fired: Vec<i32> = out.iter().filter(|o| o.triggered).map(|o| o.rule_id).collect();
        assert_eq!(fired, vec![1, 2, 4]);
        assert_eq!(out[0].evidence["observed"], json!(11.0));
        let quiet = WindowStats { count: 10, ..Default::default() };
        let out = evaluate(&rules, &plan, &[quiet, WindowStats::default()], &tx(10_000.0, "Paris", NOON), Evidence::Explained);
        assert!(out.iter().all(|o| !o.triggered), "count 10 is not > 10 and 10000 is not > 10000");
        let a = assess(&evaluate(&rules, &plan, &[busy, moved], &tx(20_000.0, "Paris", NOON), Evidence::Explained));
        assert!((a.total_score - 2.1).abs() < 1e-9);
        assert_eq!(a.triggered, vec![1, 2, 4]);
        assert_eq!(risk_level(a.total_score, 0.7, 0.4), "high");
        assert_eq!(risk_level(0.4, 0.7, 0.4), "medium");
        assert_eq!(risk_level(0.39, 0.7, 0.4), "low");
        assert!(level_rank("high") > level_rank("medium") && level_rank("medium") > level_rank("low"));
        assert_eq!(level_rank("severe"), None);
    }

    #[test]
    fn a_folded_candidate_scores_like_the_stored_row() {
        let rules = vec![
            rule(1, "threshold", json!({"metric": "transaction_count", "operator": ">", "value": 2}), 0.5),
            rule(2, "threshold", json!({"metric": "max_amount", "operator": ">=", "value": 900}), 0.5),
            rule(3, "threshold", json!({"metric": "distinct_locations", "operator": ">", "value": 1}), 0.5),
            rule(4, "anomaly", json!({"method": "mean_multiple", "threshold": 3, "min_samples": 2}), 0.5),
        ];
        let plan = WindowPlan::for_rules(&rules);
        // History: two rows of 100 in "A". The candidate: 900 in "B".
        let history =
            WindowStats { count: 2, sum: 200.0, sum_sq: 20_000.0, max: Some(100.0), distinct_locations: 1, same_location: 0, other_locations: 2 };
        let stored =
            WindowStats { count: 3, sum: 1100.0, sum_sq: 830_000.0, max: Some(900.0), distinct_locations: 2, same_location: 1, other_locations: 2 };
        let mut t = Transaction { amount: Some(900.0), location: Some("B"), unix_micros: NOON, session_utc_offset_secs: 0, in_history: true };
        let mut folded = vec![history; plan.windows.len()];
        include_candidate(&mut folded, &t);
        assert_eq!(folded[0], stored);
        let a = evaluate(&rules, &plan, &folded, &t, Evidence::Explained);
        let b = evaluate(&rules, &plan, &vec![stored; plan.windows.len()], &t, Evidence::Explained);
        assert_eq!(a, b);
        assert!(a.iter().all(|o| o.triggered));
        // At a location already in the history, the distinct count does not grow.
        t.location = Some("A");
        let mut again = vec![WindowStats { same_location: 2, ..history }];
        include_candidate(&mut again, &t);
        assert_eq!(again[0].distinct_locations, 1);
    }

    #[test]
    fn night_range_crosses_midnight() {
        let (s, e) = (22 * 3600, 6 * 3600);
        assert!(in_time_range(22 * 3600, s, e));
        assert!(in_time_range(23 * 3600 + 59 * 60, s, e));
        assert!(in_time_range(0, s, e));
        assert!(in_time_range(5 * 3600 + 3599, s, e));
        assert!(!in_time_range(6 * 3600, s, e), "the end is exclusive");
        assert!(!in_time_range(12 * 3600, s, e));
        assert!(in_time_range(9 * 3600, 9 * 3600, 17 * 3600));
        assert!(!in_time_range(17 * 3600, 9 * 3600, 17 * 3600));
    }

    #[test]
    fn night_rule_uses_rule_zone_then_session_zone() {
        let shanghai =
            rule(1, "pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "06:00"], "timezone": "Asia/Shanghai"}), 0.4);
        let session = rule(2, "pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}), 0.4);
        let rules = vec![shanghai, session];
        let plan = WindowPlan::for_rules(&rules);
        // 15:00 UTC is 23:00 in Shanghai, and 15:00 in a UTC session.
        let mut t = tx(1.0, "x", NOON + 3 * HOUR);
        let out = evaluate(&rules, &plan, &[], &t, Evidence::Explained);
        assert_eq!((out[0].triggered, out[1].triggered), (true, false));
        assert_eq!(out[0].evidence["local_time"], json!("23:00:00"));
        // A session at UTC-10 sees 05:00: night for the session rule.
        t.session_utc_offset_secs = -10 * 3600;
        let out = evaluate(&rules, &plan, &[], &t, Evidence::Explained);
        assert_eq!((out[0].triggered, out[1].triggered), (true, true));
        // New York observes daylight saving time: 12:00 UTC is 08:00 in July, 07:00 in January.
        let ny = chrono_tz::Tz::America__New_York;
        assert_eq!(local_seconds_of_day(NOON, Some(ny), 0), 7 * 3600);
        assert_eq!(local_seconds_of_day(NOON + 181 * 24 * HOUR, Some(ny), 0), 8 * 3600);
        // An infinite time has no hour: never night, in any zone.
        for infinite in [i64::MIN, i64::MAX] {
            t.unix_micros = infinite;
            let out = evaluate(&rules, &plan, &[], &t, Evidence::Explained);
            assert_eq!((out[0].triggered, out[1].triggered), (false, false));
            assert_eq!(out[0].evidence["local_time"], json!(null));
        }
    }

    #[test]
    fn location_change_needs_a_location() {
        let rules = vec![seed_rules().remove(3)];
        let plan = WindowPlan::for_rules(&rules);
        let s = WindowStats { count: 2, other_locations: 1, ..Default::default() };
        let mut t = tx(1.0, "Paris", NOON);
        assert!(evaluate(&rules, &plan, &[s], &t, Evidence::Explained)[0].triggered);
        t.location = None;
        assert!(!evaluate(&rules, &plan, &[s], &t, Evidence::Explained)[0].triggered);
    }

    #[test]
    fn every_threshold_metric() {
        let s = WindowStats { count: 4, sum: 100.0, max: Some(70.0), sum_sq: 0.0, distinct_locations: 3, other_locations: 2, same_location: 0 };
        for (metric, value, fires) in [
            ("transaction_count", 3.0, true),
            ("transaction_count", 4.0, false),
            ("total_amount", 99.0, true),
            ("total_amount", 100.0, false),
            ("avg_amount", 24.9, true),
            ("avg_amount", 25.0, false),
            ("max_amount", 69.0, true),
            ("max_amount", 70.0, false),
            ("distinct_locations", 2.0, true),
            ("distinct_locations", 3.0, false),
        ] {
            let rules = vec![rule(1, "threshold", json!({"metric": metric, "operator": ">", "value": value}), 0.5)];
            let out = evaluate(&rules, &WindowPlan::for_rules(&rules), &[s], &tx(1.0, "x", NOON), Evidence::Explained);
            assert_eq!(out[0].triggered, fires, "{metric} > {value}");
        }
        // An empty window has no average and no maximum: the rule cannot fire, whatever the operator.
        let rules = vec![rule(1, "threshold", json!({"metric": "max_amount", "operator": "<", "value": 5}), 0.5)];
        let out = evaluate(&rules, &WindowPlan::for_rules(&rules), &[WindowStats::default()], &tx(1.0, "x", NOON), Evidence::Explained);
        assert!(!out[0].triggered);
        assert_eq!(out[0].evidence["observed"], Value::Null);
    }

    fn stats_of(amounts: &[f64]) -> WindowStats {
        WindowStats {
            count: amounts.len() as i64,
            sum: amounts.iter().sum(),
            sum_sq: amounts.iter().map(|a| a * a).sum(),
            max: amounts.iter().cloned().reduce(f64::max),
            ..Default::default()
        }
    }

    #[test]
    fn anomaly_zscore_and_mean_multiple() {
        let z = vec![rule(1, "anomaly", json!({"method": "zscore", "threshold": 3, "min_samples": 5}), 0.5)];
        let history = [100.0, 110.0, 90.0, 105.0, 95.0];
        let plan = WindowPlan::for_rules(&z);
        assert!(evaluate(&z, &plan, &[stats_of(&history)], &tx(500.0, "x", NOON), Evidence::Explained)[0].triggered);
        assert!(!evaluate(&z, &plan, &[stats_of(&history)], &tx(120.0, "x", NOON), Evidence::Explained)[0].triggered);
        // Too little history: no verdict.
        assert!(!evaluate(&z, &plan, &[stats_of(&history[..4])], &tx(500.0, "x", NOON), Evidence::Explained)[0].triggered);
        // A stored row is taken out of its own history.
        let mut with_row = history.to_vec();
        with_row.push(500.0);
        let mut t = tx(500.0, "x", NOON);
        t.in_history = true;
        let out = evaluate(&z, &plan, &[stats_of(&with_row)], &t, Evidence::Explained);
        assert!(out[0].triggered);
        assert_eq!(out[0].evidence["samples"], json!(5));
        let m = vec![rule(1, "anomaly", json!({"method": "mean_multiple", "threshold": 4, "min_samples": 2}), 0.5)];
        let plan = WindowPlan::for_rules(&m);
        assert!(evaluate(&m, &plan, &[stats_of(&[10.0, 10.0])], &tx(41.0, "x", NOON), Evidence::Explained)[0].triggered);
        assert!(!evaluate(&m, &plan, &[stats_of(&[10.0, 10.0])], &tx(40.0, "x", NOON), Evidence::Explained)[0].triggered);
        // A flat history: anything above it is unusual, the same amount is not.
        let flat = stats_of(&[50.0; 6]);
        let plan = WindowPlan::for_rules(&z);
        assert!(evaluate(&z, &plan, &[flat], &tx(51.0, "x", NOON), Evidence::Explained)[0].triggered);
        assert!(!evaluate(&z, &plan, &[flat], &tx(50.0, "x", NOON), Evidence::Explained)[0].triggered);
    }
}
