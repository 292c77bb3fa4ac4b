//! The risk-rule language: what a row of `cep.risk_rules` may say, checked when it is written.
//!
//! A rule is refused here, with the field and what was expected, rather than failing on every
//! INSERT later. Parsing yields a [`Condition`] that evaluation uses directly, so stored JSON is
//! read once per backend, not once per row.

use serde_json::{Map, Value};

use super::interval::{format_interval, parse_clock, parse_interval, MICROS_PER_SECOND};

/// What went wrong, so the SQL boundary can give each kind its own SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// An unknown rule type, metric, operator, pattern, method or field.
    UnknownName,
    /// A required field is absent or null.
    Missing,
    /// A value that had to be a number is not one.
    NotANumber,
    /// A window that is not an interval.
    BadInterval,
    /// A time of day that is not `HH:MM[:SS]`.
    BadTime,
    /// An unknown IANA time zone.
    BadTimeZone,
    /// A number outside its allowed range (`risk_score` outside [0, 1], for example).
    OutOfRange,
    /// The JSON has the wrong shape (an array where an object belongs, for example).
    WrongShape,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub kind: RuleErrorKind,
    /// Path of the offending field, such as `rule_condition.window`.
    pub field: String,
    pub message: String,
}

impl RuleError {
    /// Field and message are bounded here, the one place every rule error is made.
    fn new(kind: RuleErrorKind, field: &str, message: impl Into<String>) -> Self {
        let field = if field.len() > 200 { super::excerpt(field) } else { field.to_string() };
        // Display prints "{field}: {message}": the two together stay within the bound.
        let message = super::bounded_message(format!("{field}: {}", message.into()))[field.len() + 2..].to_string();
        RuleError { kind, field, message }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// This transaction's amount; needs no window.
    Amount,
    TransactionCount,
    TotalAmount,
    AvgAmount,
    MaxAmount,
    DistinctLocations,
}

impl Metric {
    pub const NAMES: &'static str = "amount, transaction_count, total_amount, avg_amount, max_amount, distinct_locations";

    fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "amount" => Metric::Amount,
            "transaction_count" => Metric::TransactionCount,
            "total_amount" => Metric::TotalAmount,
            "avg_amount" => Metric::AvgAmount,
            "max_amount" => Metric::MaxAmount,
            "distinct_locations" => Metric::DistinctLocations,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Amount => "amount",
            Metric::TransactionCount => "transaction_count",
            Metric::TotalAmount => "total_amount",
            Metric::AvgAmount => "avg_amount",
            Metric::MaxAmount => "max_amount",
            Metric::DistinctLocations => "distinct_locations",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    fn parse(text: &str) -> Option<CmpOp> {
        Some(match text {
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            "=" | "==" => CmpOp::Eq,
            "!=" | "<>" => CmpOp::Ne,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
        }
    }

    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyMethod {
    /// The amount lies more than `threshold` sample standard deviations above the key's mean.
    ZScore,
    /// The amount is more than `threshold` times the key's mean.
    MeanMultiple,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Threshold {
        metric: Metric,
        op: CmpOp,
        value: f64,
        window: Option<i64>,
    },
    /// Local time of day in `[start, end)`; the range may cross midnight.
    NightTransaction {
        start_secs: u32,
        end_secs: u32,
        tz: Option<chrono_tz::Tz>,
    },
    /// Another location was used by the same key inside the window.
    LocationChange {
        window: i64,
    },
    Anomaly {
        method: AnomalyMethod,
        threshold: f64,
        window: i64,
        min_samples: i64,
    },
}

impl Condition {
    /// The history window this condition reads, in microseconds, if any.
    pub fn window(&self) -> Option<i64> {
        match self {
            Condition::Threshold { window, .. } => *window,
            Condition::NightTransaction { .. } => None,
            Condition::LocationChange { window } => Some(*window),
            Condition::Anomaly { window, .. } => Some(*window),
        }
    }

    /// Whether the rule reads the amount column (so it cannot run once that column is gone).
    pub fn needs_amount(&self) -> bool {
        match self {
            Condition::Threshold { metric, .. } => !matches!(metric, Metric::TransactionCount | Metric::DistinctLocations),
            Condition::NightTransaction { .. } | Condition::LocationChange { .. } => false,
            Condition::Anomaly { .. } => true,
        }
    }

    pub fn needs_location(&self) -> bool {
        matches!(self, Condition::LocationChange { .. } | Condition::Threshold { metric: Metric::DistinctLocations, .. })
    }

    /// The canonical JSON of the condition: what `cep.validate_rule` shows a user.
    pub fn to_json(&self) -> Value {
        let window = |w: &i64| Value::String(format_interval(*w));
        match self {
            Condition::Threshold { metric, op, value, window: w } => {
                let mut m = Map::new();
                m.insert("metric".into(), metric.name().into());
                m.insert("operator".into(), op.symbol().into());
                m.insert("value".into(), (*value).into());
                if let Some(w) = w {
                    m.insert("window".into(), window(w));
                }
                Value::Object(m)
            }
            Condition::NightTransaction { start_secs, end_secs, tz } => {
                let clock = |s: &u32| format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
                serde_json::json!({
                    "pattern": "night_transaction",
                    "time_range": [clock(start_secs), clock(end_secs)],
                    "timezone": tz.map(|t| t.name().to_string()),
                })
            }
            Condition::LocationChange { window: w } => {
                serde_json::json!({"pattern": "location_change", "time_window": window(w)})
            }
            Condition::Anomaly { method, threshold, window: w, min_samples } => serde_json::json!({
                "metric": "amount",
                "method": match method { AnomalyMethod::ZScore => "zscore", AnomalyMethod::MeanMultiple => "mean_multiple" },
                "threshold": threshold,
                "window": window(w),
                "min_samples": min_samples,
            }),
        }
    }
}

/// A stored rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i32,
    pub version: i32,
    pub score: f64,
    pub condition: Condition,
    /// Where it applies: `None` for every watched table, or these tables (by oid) only.
    pub tables: Option<Vec<u32>>,
    /// Tables it is turned off on.
    pub except_tables: Vec<u32>,
    /// A shadow rule is scored and recorded, but adds nothing to a row's score: it neither alerts
    /// nor blocks (a new rule is tried on live traffic before it goes live).
    pub shadow: bool,
}

impl Rule {
    /// A live rule on every table, as rules were before they could be scoped.
    pub fn new(id: i32, version: i32, score: f64, condition: Condition) -> Rule {
        Rule { id, version, score, condition, tables: None, except_tables: Vec::new(), shadow: false }
    }

    /// Whether the rule runs on the watched table `relid`.
    pub fn applies_to(&self, relid: u32) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(&relid)) && !self.except_tables.contains(&relid)
    }
}

/// Windows a rule gets when it names none: the seed's monitor looks back one hour.
pub const DEFAULT_WINDOW: i64 = 3_600 * MICROS_PER_SECOND;
/// An anomaly is judged against a day of the key's history unless the rule says otherwise.
pub const DEFAULT_ANOMALY_WINDOW: i64 = 24 * 3_600 * MICROS_PER_SECOND;
pub const DEFAULT_MIN_SAMPLES: i64 = 5;

pub const RULE_TYPES: &str = "threshold, pattern, anomaly";

/// Checks a whole rule, as `{"rule_type": .., "rule_condition": {..}, "risk_score": ..}`.
pub fn validate_rule(rule: &Value) -> Result<Condition, RuleError> {
    let obj = rule
        .as_object()
        .ok_or_else(|| RuleError::new(RuleErrorKind::WrongShape, "rule", "must be a JSON object with rule_type, rule_condition and risk_score"))?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "rule_type" | "rule_condition" | "risk_score" | "rule_name" | "rule_id" | "is_active") {
            return Err(RuleError::new(RuleErrorKind::UnknownName, key, "is not a field of a rule (expected rule_type, rule_condition, risk_score)"));
        }
    }
    let rule_type = match obj.get("rule_type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Null) | None => return Err(RuleError::new(RuleErrorKind::Missing, "rule_type", format!("is required (one of {RULE_TYPES})"))),
        Some(other) => return Err(RuleError::new(RuleErrorKind::WrongShape, "rule_type", format!("must be a string, not {other}"))),
    };
    match obj.get("risk_score") {
        None | Some(Value::Null) => return Err(RuleError::new(RuleErrorKind::Missing, "risk_score", "is required (a number from 0 to 1)")),
        Some(v) => check_risk_score(number(v, "risk_score")?)?,
    }
    let condition = obj.get("rule_condition").unwrap_or(&Value::Null);
    parse_condition(rule_type, condition)
}

pub fn check_risk_score(score: f64) -> Result<(), RuleError> {
    if (0.0..=1.0).contains(&score) {
        Ok(())
    } else {
        Err(RuleError::new(RuleErrorKind::OutOfRange, "risk_score", format!("{score} is outside [0, 1]")))
    }
}

/// Parses one rule's condition; `rule_type` selects the grammar.
pub fn parse_condition(rule_type: &str, condition: &Value) -> Result<Condition, RuleError> {
    let c = match condition {
        Value::Object(map) => map,
        Value::Null => return Err(RuleError::new(RuleErrorKind::Missing, "rule_condition", "is required (a JSON object)")),
        other => return Err(RuleError::new(RuleErrorKind::WrongShape, "rule_condition", format!("must be a JSON object, not {other}"))),
    };
    match rule_type {
        "threshold" => parse_threshold(c),
        "pattern" => parse_pattern(c),
        "anomaly" => parse_anomaly(c),
        other => Err(RuleError::new(RuleErrorKind::UnknownName, "rule_type", format!("{other:?} is not a rule type (expected one of {RULE_TYPES})"))),
    }
}

fn field_path(name: &str) -> String {
    format!("rule_condition.{name}")
}

fn only_fields(c: &Map<String, Value>, allowed: &[&str], rule: &str) -> Result<(), RuleError> {
    for key in c.keys() {
        if !allowed.contains(&key.as_str()) && key != "description" {
            return Err(RuleError::new(
                RuleErrorKind::UnknownName,
                &field_path(key),
                format!("is not a field of a {rule} rule (expected {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn number(v: &Value, field: &str) -> Result<f64, RuleError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(RuleError::new(RuleErrorKind::NotANumber, field, format!("{v} is not a number"))),
    }
}

fn required<'a>(c: &'a Map<String, Value>, name: &str, expected: &str) -> Result<&'a Value, RuleError> {
    match c.get(name) {
        None | Some(Value::Null) => Err(RuleError::new(RuleErrorKind::Missing, &field_path(name), format!("is required ({expected})"))),
        Some(v) => Ok(v),
    }
}

fn string<'a>(v: &'a Value, field: &str, expected: &str) -> Result<&'a str, RuleError> {
    v.as_str().ok_or_else(|| RuleError::new(RuleErrorKind::WrongShape, field, format!("{v} is not a string ({expected})")))
}

fn window(c: &Map<String, Value>, names: &[&str], default: i64) -> Result<i64, RuleError> {
    let mut found = None;
    for name in names {
        if let Some(v) = c.get(*name).filter(|v| !v.is_null()) {
            if found.is_some() {
                return Err(RuleError::new(
                    RuleErrorKind::WrongShape,
                    &field_path(name),
                    format!("repeats the window; give only one of {}", names.join(", ")),
                ));
            }
            found = Some((*name, v));
        }
    }
    let Some((name, v)) = found else { return Ok(default) };
    let field = field_path(name);
    let text = string(v, &field, "an interval such as \"1_hour\" or \"90 minutes\"")?;
    parse_interval(text).map_err(|why| {
        RuleError::new(
            RuleErrorKind::BadInterval,
            &field,
            format!("{} is not an interval: it {why} (use \"1_hour\" or '90 minutes')", super::excerpt(text)),
        )
    })
}

fn parse_threshold(c: &Map<String, Value>) -> Result<Condition, RuleError> {
    only_fields(c, &["metric", "operator", "value", "window"], "threshold")?;
    let name = string(required(c, "metric", Metric::NAMES)?, "rule_condition.metric", Metric::NAMES)?;
    let metric = Metric::parse(name).ok_or_else(|| {
        RuleError::new(RuleErrorKind::UnknownName, "rule_condition.metric", format!("{name:?} is not a metric (expected one of {})", Metric::NAMES))
    })?;
    let op_text = match c.get("operator") {
        None | Some(Value::Null) => ">",
        Some(v) => string(v, "rule_condition.operator", "one of > >= < <= = !=")?,
    };
    let op = CmpOp::parse(op_text).ok_or_else(|| {
        RuleError::new(
            RuleErrorKind::UnknownName,
            "rule_condition.operator",
            format!("{op_text:?} is not an operator (expected one of > >= < <= = !=)"),
        )
    })?;
    let value = number(required(c, "value", "a number")?, "rule_condition.value")?;
    let window = if metric == Metric::Amount {
        if c.get("window").is_some_and(|v| !v.is_null()) {
            return Err(RuleError::new(
                RuleErrorKind::WrongShape,
                "rule_condition.window",
                "metric \"amount\" is this transaction's amount and takes no window (use max_amount or total_amount)",
            ));
        }
        None
    } else {
        Some(window(c, &["window"], DEFAULT_WINDOW)?)
    };
    Ok(Condition::Threshold { metric, op, value, window })
}

fn parse_pattern(c: &Map<String, Value>) -> Result<Condition, RuleError> {
    const PATTERNS: &str = "night_transaction, location_change";
    let name = string(required(c, "pattern", PATTERNS)?, "rule_condition.pattern", PATTERNS)?;
    match name {
        "night_transaction" => {
            only_fields(c, &["pattern", "time_range", "timezone"], "night_transaction")?;
            let expected = "two times of day such as [\"22:00\", \"06:00\"]";
            let range = required(c, "time_range", expected)?;
            let items = match range.as_array() {
                Some(items) if items.len() == 2 => items,
                _ => return Err(RuleError::new(RuleErrorKind::WrongShape, "rule_condition.time_range", format!("{range} is not {expected}"))),
            };
            let mut bounds = [0u32; 2];
            for (i, item) in items.iter().enumerate() {
                let field = format!("rule_condition.time_range[{i}]");
                let text = string(item, &field, "HH:MM")?;
                bounds[i] = parse_clock(text, true).ok_or_else(|| {
                    RuleError::new(
                        RuleErrorKind::BadTime,
                        &field,
                        format!("{text:?} is not a time of day (expected HH:MM or HH:MM:SS, 00:00 to 23:59:59)"),
                    )
                })?;
            }
            if bounds[0] == bounds[1] {
                return Err(RuleError::new(
                    RuleErrorKind::OutOfRange,
                    "rule_condition.time_range",
                    "starts and ends at the same time, so it is empty",
                ));
            }
            let tz = match c.get("timezone") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let text = string(v, "rule_condition.timezone", "an IANA zone such as \"Asia/Shanghai\"")?;
                    Some(text.parse::<chrono_tz::Tz>().map_err(|_| {
                        RuleError::new(
                            RuleErrorKind::BadTimeZone,
                            "rule_condition.timezone",
                            format!("{text:?} is not an IANA time zone (such as \"Asia/Shanghai\" or \"UTC\")"),
                        )
                    })?)
                }
            };
            Ok(Condition::NightTransaction { start_secs: bounds[0], end_secs: bounds[1], tz })
        }
        "location_change" => {
            only_fields(c, &["pattern", "time_window", "window"], "location_change")?;
            Ok(Condition::LocationChange { window: window(c, &["time_window", "window"], 5 * 60 * MICROS_PER_SECOND)? })
        }
        other => Err(RuleError::new(
            RuleErrorKind::UnknownName,
            "rule_condition.pattern",
            format!("{other:?} is not a pattern (expected one of {PATTERNS})"),
        )),
    }
}

fn parse_anomaly(c: &Map<String, Value>) -> Result<Condition, RuleError> {
    const METHODS: &str = "zscore, mean_multiple";
    only_fields(c, &["metric", "method", "threshold", "window", "min_samples"], "anomaly")?;
    if let Some(v) = c.get("metric").filter(|v| !v.is_null()) {
        if v.as_str() != Some("amount") {
            return Err(RuleError::new(
                RuleErrorKind::UnknownName,
                "rule_condition.metric",
                format!("{v} is not supported by anomaly rules (expected \"amount\")"),
            ));
        }
    }
    let method = match c.get("method") {
        None | Some(Value::Null) => AnomalyMethod::ZScore,
        Some(v) => match string(v, "rule_condition.method", METHODS)? {
            "zscore" => AnomalyMethod::ZScore,
            "mean_multiple" => AnomalyMethod::MeanMultiple,
            other => {
                return Err(RuleError::new(
                    RuleErrorKind::UnknownName,
                    "rule_condition.method",
                    format!("{other:?} is not a method (expected one of {METHODS})"),
                ))
            }
        },
    };
    let threshold =
        number(required(c, "threshold", "a number: standard deviations for zscore, a factor for mean_multiple")?, "rule_condition.threshold")?;
    if threshold <= 0.0 {
        return Err(RuleError::new(RuleErrorKind::OutOfRange, "rule_condition.threshold", format!("{threshold} must be above zero")));
    }
    let min_samples = match c.get("min_samples") {
        None | Some(Value::Null) => DEFAULT_MIN_SAMPLES,
        Some(v) => {
            let n = number(v, "rule_condition.min_samples")?;
            if n < 1.0 || n.fract() != 0.0 || n > 1e9 {
                return Err(RuleError::new(
                    RuleErrorKind::OutOfRange,
                    "rule_condition.min_samples",
                    format!("{n} must be a whole number of at least 1"),
                ));
            }
            n as i64
        }
    };
    Ok(Condition::Anomaly { method, threshold, window: window(c, &["window"], DEFAULT_ANOMALY_WINDOW)?, min_samples })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(rule_type: &str, condition: Value) -> Value {
        json!({"rule_type": rule_type, "rule_condition": condition, "risk_score": 0.5})
    }

    fn err(rule_type: &str, condition: Value) -> RuleError {
        validate_rule(&rule(rule_type, condition)).unwrap_err()
    }

    #[test]
    fn seed_rules_verbatim() {
        let seed = [
            ("threshold", r#"{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}"#),
            ("threshold", r#"{"metric": "amount", "operator": ">", "value": 10000}"#),
            ("pattern", r#"{"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}"#),
            ("pattern", r#"{"pattern": "location_change", "time_window": "5_minutes"}"#),
        ];
        let parsed: Vec<Condition> = seed.iter().map(|(t, c)| parse_condition(t, &serde_json::from_str(c).unwrap()).unwrap()).collect();
        assert_eq!(parsed[0], Condition::Threshold { metric: Metric::TransactionCount, op: CmpOp::Gt, value: 10.0, window: Some(DEFAULT_WINDOW) });
        assert_eq!(parsed[1], Condition::Threshold { metric: Metric::Amount, op: CmpOp::Gt, value: 10000.0, window: None });
        assert_eq!(parsed[2], Condition::NightTransaction { start_secs: 22 * 3600, end_secs: 6 * 3600, tz: None });
        assert_eq!(parsed[3], Condition::LocationChange { window: 300 * MICROS_PER_SECOND });
    }

    #[test]
    fn every_threshold_metric_and_operator() {
        for m in ["transaction_count", "total_amount", "avg_amount", "max_amount", "distinct_locations"] {
            for op in [">", ">=", "<", "<=", "=", "!="] {
                let c = validate_rule(&rule("threshold", json!({"metric": m, "operator": op, "value": "3", "window": "90 minutes"}))).unwrap();
                assert_eq!(c.window(), Some(90 * 60 * MICROS_PER_SECOND));
            }
        }
    }

    #[test]
    fn anomaly_and_timezone() {
        let c = validate_rule(&rule("anomaly", json!({"method": "mean_multiple", "threshold": 5, "window": "7 days", "min_samples": 3}))).unwrap();
        assert_eq!(
            c,
            Condition::Anomaly { method: AnomalyMethod::MeanMultiple, threshold: 5.0, window: 7 * 86_400 * MICROS_PER_SECOND, min_samples: 3 }
        );
        let c =
            validate_rule(&rule("pattern", json!({"pattern": "night_transaction", "time_range": ["23:30", "05:00"], "timezone": "Asia/Shanghai"})))
                .unwrap();
        assert!(matches!(c, Condition::NightTransaction { tz: Some(chrono_tz::Tz::Asia__Shanghai), .. }));
    }

    #[test]
    fn every_validation_error() {
        let cases: Vec<(Value, RuleErrorKind, &str)> = vec![
            (rule("thresh", json!({})), RuleErrorKind::UnknownName, "rule_type"),
            (json!({"rule_condition": {}, "risk_score": 0.5}), RuleErrorKind::Missing, "rule_type"),
            (json!([1]), RuleErrorKind::WrongShape, "rule"),
            (
                json!({"rule_type": "threshold", "rule_condition": {"metric": "amount", "value": 1}, "risk_score": 1.5}),
                RuleErrorKind::OutOfRange,
                "risk_score",
            ),
            (
                json!({"rule_type": "threshold", "rule_condition": {"metric": "amount", "value": 1}, "risk_score": -0.1}),
                RuleErrorKind::OutOfRange,
                "risk_score",
            ),
            (
                json!({"rule_type": "threshold", "rule_condition": {"metric": "amount", "value": 1}, "risk_score": "high"}),
                RuleErrorKind::NotANumber,
                "risk_score",
            ),
            (json!({"rule_type": "threshold", "rule_condition": {"metric": "amount", "value": 1}}), RuleErrorKind::Missing, "risk_score"),
            (json!({"rule_type": "threshold", "risk_score": 0.5}), RuleErrorKind::Missing, "rule_condition"),
            (rule("threshold", json!([])), RuleErrorKind::WrongShape, "rule_condition"),
            (rule("threshold", json!({"metric": "velocity", "value": 1})), RuleErrorKind::UnknownName, "rule_condition.metric"),
            (rule("threshold", json!({"metric": "amount", "operator": "=>", "value": 1})), RuleErrorKind::UnknownName, "rule_condition.operator"),
            (rule("threshold", json!({"metric": "amount", "value": "ten"})), RuleErrorKind::NotANumber, "rule_condition.value"),
            (rule("threshold", json!({"metric": "amount", "value": true})), RuleErrorKind::NotANumber, "rule_condition.value"),
            (rule("threshold", json!({"metric": "amount"})), RuleErrorKind::Missing, "rule_condition.value"),
            (rule("threshold", json!({"metric": "amount", "value": 1, "window": "1_hour"})), RuleErrorKind::WrongShape, "rule_condition.window"),
            (
                rule("threshold", json!({"metric": "total_amount", "value": 1, "window": "1_hourz"})),
                RuleErrorKind::BadInterval,
                "rule_condition.window",
            ),
            (rule("threshold", json!({"metric": "total_amount", "value": 1, "window": 60})), RuleErrorKind::WrongShape, "rule_condition.window"),
            (rule("threshold", json!({"metric": "total_amount", "value": 1, "windw": "1_hour"})), RuleErrorKind::UnknownName, "rule_condition.windw"),
            (rule("pattern", json!({"pattern": "teleport"})), RuleErrorKind::UnknownName, "rule_condition.pattern"),
            (
                rule("pattern", json!({"pattern": "night_transaction", "time_range": ["25:00", "06:00"]})),
                RuleErrorKind::BadTime,
                "rule_condition.time_range[0]",
            ),
            (
                rule("pattern", json!({"pattern": "night_transaction", "time_range": ["22:00"]})),
                RuleErrorKind::WrongShape,
                "rule_condition.time_range",
            ),
            (
                rule("pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "22:00"]})),
                RuleErrorKind::OutOfRange,
                "rule_condition.time_range",
            ),
            (
                rule("pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "06:00"], "timezone": "Mars/Olympus"})),
                RuleErrorKind::BadTimeZone,
                "rule_condition.timezone",
            ),
            (
                rule("pattern", json!({"pattern": "location_change", "time_window": "5 fortnights"})),
                RuleErrorKind::BadInterval,
                "rule_condition.time_window",
            ),
            (
                rule("pattern", json!({"pattern": "location_change", "time_window": "5 minutes", "window": "1 hour"})),
                RuleErrorKind::WrongShape,
                "rule_condition.window",
            ),
            (rule("anomaly", json!({"method": "zscore"})), RuleErrorKind::Missing, "rule_condition.threshold"),
            (rule("anomaly", json!({"method": "iforest", "threshold": 3})), RuleErrorKind::UnknownName, "rule_condition.method"),
            (rule("anomaly", json!({"threshold": -3})), RuleErrorKind::OutOfRange, "rule_condition.threshold"),
            (rule("anomaly", json!({"threshold": 3, "min_samples": 0.5})), RuleErrorKind::OutOfRange, "rule_condition.min_samples"),
            (rule("anomaly", json!({"threshold": 3, "metric": "count"})), RuleErrorKind::UnknownName, "rule_condition.metric"),
        ];
        for (input, kind, field) in cases {
            let e = validate_rule(&input).expect_err(&input.to_string());
            assert_eq!((e.kind, e.field.as_str()), (kind, field), "{input}: {e}");
        }
    }

    #[test]
    fn error_messages_name_field_value_and_expectation() {
        let e = err("threshold", json!({"metric": "total_amount", "value": 1, "window": "1_hourz"}));
        assert_eq!(
            e.to_string(),
            "rule_condition.window: \"1_hourz\" is not an interval: it has the unknown unit \"hourz\" (use \"1_hour\" or '90 minutes')"
        );
    }

    #[test]
    fn canonical_json_round_trips() {
        for (t, c) in [
            ("threshold", json!({"metric": "avg_amount", "operator": "<=", "value": 3.5, "window": "2 hours"})),
            ("pattern", json!({"pattern": "night_transaction", "time_range": ["22:00", "06:00"], "timezone": "UTC"})),
            ("anomaly", json!({"threshold": 3})),
        ] {
            let first = parse_condition(t, &c).unwrap();
            assert_eq!(parse_condition(t, &first.to_json()).unwrap(), first);
        }
    }
}
