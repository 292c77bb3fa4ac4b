//! NOTIFY payloads: small JSON that always fits under Postgres' 8000-byte limit.
//!
//! A payload carries ids, not rows: a consumer fetches the whole alert with `alert_id`. When a
//! payload would be too long, the rule list is cut first, then long strings, and `"truncated":
//! true` says so; `alert_id` is always kept. Each builder takes the most bytes it may use
//! ([`MAX_PAYLOAD_BYTES`] for NOTIFY), and fits any budget down to a few hundred bytes.

use serde_json::{json, Value};

/// NOTIFY refuses payloads of 8000 bytes or more.
pub const MAX_PAYLOAD_BYTES: usize = 7999;

pub struct AlertNotice<'a> {
    pub alert_id: i64,
    pub table: &'a str,
    pub key: &'a str,
    pub row: Option<&'a str>,
    pub score: f64,
    pub level: &'a str,
    /// "alert", or "blocked" for a row the monitor dropped.
    pub action: &'a str,
    pub rules: &'a [i32],
    pub ts: &'a str,
}

/// At most `limit` bytes of `s`, cut at a character boundary.
fn cut(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// An alert's payload, as `json!` would print it (keys in sorted order), without building a JSON
/// tree first: every alerting row of a storm sends one.
#[derive(serde::Serialize)]
struct AlertPayload<'a> {
    action: &'a str,
    alert_id: i64,
    key: &'a str,
    level: &'a str,
    row: Option<&'a str>,
    rules: &'a [i32],
    score: f64,
    table: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    ts: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The alert's payload in at most `max` bytes (at least `notice_queue::PAYLOAD_BYTES`): the last
/// form, with no rules and 8 bytes of each string (48 escaped), always fits.
pub fn alert_payload(n: &AlertNotice, max: usize) -> String {
    let build = |rules: &[i32], limit: usize, truncated: bool| -> String {
        let (table, key, row) = (cut(n.table, limit), cut(n.key, limit), n.row.map(|r| cut(r, limit)));
        let payload = AlertPayload {
            action: n.action,
            alert_id: n.alert_id,
            key: &key,
            level: n.level,
            row: row.as_deref(),
            rules,
            score: n.score,
            table: &table,
            truncated,
            ts: n.ts,
            kind: "risk_alert",
        };
        serde_json::to_string(&payload).unwrap_or_default()
    };
    let forms = [(n.rules, usize::MAX, false), (&n.rules[..n.rules.len().min(50)], 1000, true), (&[], 200, true)];
    forms.iter().map(|&(rules, limit, truncated)| build(rules, limit, truncated)).find(|p| p.len() <= max).unwrap_or_else(|| build(&[], 8, true))
}

/// A transaction's captured changes, sent once per channel at commit: ids, never rows. Written
/// by hand (keys in the order `json!` sorts them) because every captured commit builds one. At
/// most 20 tables, each cut to 200 bytes, and only as many as fit escaped (a quote prints as 2
/// bytes, a control character as 6); `"truncated": true` when any is left out or cut, and the
/// ids still find them all in `cep.change_log`.
pub fn changes(correlation_id: u64, first_id: i64, last_id: i64, count: i64, tables: &[String], max: usize) -> String {
    const TRUNCATED_END: &str = r#"],"truncated":true,"type":"changes"}"#;
    let mut out = format!(r#"{{"correlation_id":"{correlation_id}","count":{count},"first_id":{first_id},"last_id":{last_id},"tables":["#);
    let mut truncated = tables.len() > 20;
    for (i, table) in tables.iter().take(20).enumerate() {
        let name = Value::from(cut(table, 200)).to_string();
        if out.len() + 1 + name.len() + TRUNCATED_END.len() > max {
            truncated = true;
            break;
        }
        truncated |= table.len() > 200;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&name);
    }
    out.push_str(if truncated { TRUNCATED_END } else { r#"],"type":"changes"}"# });
    out
}

/// An anomaly on a captured table; the evidence is in `cep.alerts` under `alert_id`. In at most
/// `max` bytes: table and key are cut until it fits (a key is row data, and escapes up to 6 times).
#[allow(clippy::too_many_arguments)]
pub fn anomaly(alert_id: i64, table: &str, key: Option<&str>, anomaly: &str, count: i64, threshold: i64, window: &str, max: usize) -> String {
    let build = |limit: usize| {
        let truncated = table.len() > limit || key.is_some_and(|k| k.len() > limit) || window.len() > 100;
        let mut v = json!({"type": "anomaly_alert", "alert_id": alert_id, "table": cut(table, limit), "key": key.map(|k| cut(k, limit)),
                           "anomaly": anomaly, "count": count, "threshold": threshold, "window": cut(window, 100)});
        if truncated {
            v["truncated"] = json!(true);
        }
        v.to_string()
    };
    [1000, 200].into_iter().map(build).find(|p| p.len() <= max).unwrap_or_else(|| build(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_and_anomaly_payloads_stay_small() {
        let tables: Vec<String> = (0..100).map(|i| format!("{}{i}", "t".repeat(300))).collect();
        let p = changes(u64::MAX, 1, 2, 3, &tables, MAX_PAYLOAD_BYTES);
        assert!(p.len() <= MAX_PAYLOAD_BYTES, "{}", p.len());
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["correlation_id"], u64::MAX.to_string());
        let tables = ["public.\"odd \\ name\"".to_string(), "graph.nodes".to_string()];
        let expected = json!({"type": "changes", "correlation_id": "7", "first_id": -1, "last_id": 2, "count": 3, "tables": tables});
        assert_eq!(changes(7, -1, 2, 3, &tables, MAX_PAYLOAD_BYTES), expected.to_string(), "the same text json! writes");
        assert_eq!(
            changes(7, 1, 1, 1, &[], MAX_PAYLOAD_BYTES),
            r#"{"correlation_id":"7","count":1,"first_id":1,"last_id":1,"tables":[],"type":"changes"}"#
        );
        let a = anomaly(5, &"x".repeat(9000), Some(&"k".repeat(9000)), "mass_deletion", 10_000, 20, "00:01:00", MAX_PAYLOAD_BYTES);
        assert!(a.len() <= MAX_PAYLOAD_BYTES, "{}", a.len());
    }

    /// Names are `%I.%I` text: JSON escapes `"` to 2 bytes and a control character to 6, so a name
    /// cut to 200 bytes can still print as 1200.
    fn assert_changes_fit(name: &str) {
        let tables: Vec<String> = (0..20).map(|i| format!("{name}{i}")).collect();
        let p = changes(u64::MAX, i64::MIN, i64::MAX, i64::MAX, &tables, MAX_PAYLOAD_BYTES);
        assert!(p.len() <= MAX_PAYLOAD_BYTES, "{}", p.len());
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["last_id"], i64::MAX);
        assert!(!v["tables"].as_array().unwrap().is_empty());
    }

    #[test]
    fn changes_of_quoted_names_fit() {
        assert_changes_fit(&format!("\"{0}\".\"{0}\"", "\"".repeat(126)));
    }

    #[test]
    fn changes_of_control_character_names_fit() {
        assert_changes_fit(&"\u{1}".repeat(200));
    }

    #[test]
    fn changes_say_when_tables_are_left_out() {
        let tables: Vec<String> = (0..21).map(|i| format!("public.t{i}")).collect();
        let v: Value = serde_json::from_str(&changes(1, 1, 21, 21, &tables, MAX_PAYLOAD_BYTES)).unwrap();
        assert_eq!(v["tables"].as_array().unwrap().len(), 20);
        assert_eq!(v["truncated"], true);
        let v: Value = serde_json::from_str(&changes(1, 1, 20, 20, &tables[..20], MAX_PAYLOAD_BYTES)).unwrap();
        assert_eq!(v["tables"].as_array().unwrap().len(), 20);
        assert!(v.get("truncated").is_none());
        let v: Value = serde_json::from_str(&changes(1, 1, 1, 1, &["t".repeat(201)], MAX_PAYLOAD_BYTES)).unwrap();
        assert_eq!(v["tables"][0].as_str().unwrap().len(), 200);
        assert_eq!(v["truncated"], true);
    }

    fn notice<'a>(key: &'a str, rules: &'a [i32]) -> AlertNotice<'a> {
        AlertNotice {
            alert_id: 42,
            table: "public.transactions",
            key,
            row: Some("7"),
            score: 1.5,
            level: "high",
            action: "alert",
            rules,
            ts: "2026-01-15 12:00:00+00",
        }
    }

    /// The payload reads as the JSON tree it replaced printed it (sorted keys, null row, no
    /// `truncated` unless cut), for every score a rule can give.
    #[test]
    fn alert_payload_prints_as_the_json_tree_did() {
        for (row, score, rules) in [(Some("42"), 0.8, vec![1, 3]), (None, 1.5000000000000002, vec![]), (Some("é\"\n"), f64::NAN, vec![7])] {
            let n = AlertNotice {
                alert_id: 9,
                table: "public.tx",
                key: "k\u{1}",
                row,
                score,
                level: "high",
                action: "alert",
                rules: &rules,
                ts: "2026-01-01 00:00:00+00",
            };
            let tree = json!({"type": "risk_alert", "alert_id": 9, "table": "public.tx", "key": "k\u{1}", "row": row,
                              "score": score, "level": "high", "action": "alert", "rules": rules, "ts": n.ts});
            assert_eq!(alert_payload(&n, MAX_PAYLOAD_BYTES), tree.to_string());
        }
    }

    #[test]
    fn small_payload_is_complete() {
        let p: Value = serde_json::from_str(&alert_payload(&notice("u1", &[1, 2]), MAX_PAYLOAD_BYTES)).unwrap();
        assert_eq!(p["alert_id"], 42);
        assert_eq!(p["rules"], json!([1, 2]));
        assert_eq!(p["type"], "risk_alert");
        assert!(p.get("truncated").is_none());
    }

    #[test]
    fn huge_inputs_are_trimmed_below_the_limit_and_keep_the_id() {
        let key = "é".repeat(10_000);
        let rules: Vec<i32> = (0..5_000).collect();
        for (k, r) in [(key.as_str(), &rules[..3]), ("u", &rules[..]), (key.as_str(), &rules[..])] {
            let text = alert_payload(&notice(k, r), MAX_PAYLOAD_BYTES);
            assert!(text.len() <= MAX_PAYLOAD_BYTES, "{}", text.len());
            let p: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(p["alert_id"], 42);
            assert_eq!(p["truncated"], true);
        }
    }

    /// Every payload has a form that fits a budget as small as the sender's slot, whatever its
    /// strings escape to, and keeps the id a consumer fetches the rest by.
    #[test]
    fn every_payload_fits_a_slot_sized_budget() {
        use crate::notice_queue::PAYLOAD_BYTES;
        let worst = "\u{1}".repeat(10_000);
        let rules: Vec<i32> = (0..5_000).collect();
        let mut n = notice(&worst, &rules);
        (n.table, n.row, n.action, n.score, n.alert_id) = (&worst, Some(worst.as_str()), "blocked", -f64::MAX, i64::MIN);
        n.ts = "Mon Dec 07 21:56:12.744738 2026 America/Argentina/ComodRivadavia";
        let alert = alert_payload(&n, PAYLOAD_BYTES);
        assert!(alert.len() <= PAYLOAD_BYTES, "{alert}");
        let alert: Value = serde_json::from_str(&alert).unwrap();
        assert_eq!((alert["alert_id"].as_i64(), &alert["truncated"]), (Some(i64::MIN), &json!(true)));
        let tables: Vec<String> = (0..20).map(|i| format!("{worst}{i}")).collect();
        let changed = changes(u64::MAX, i64::MIN, i64::MAX, i64::MIN, &tables, PAYLOAD_BYTES);
        assert!(changed.len() <= PAYLOAD_BYTES, "{changed}");
        assert_eq!(serde_json::from_str::<Value>(&changed).unwrap()["last_id"], i64::MAX);
        let a = anomaly(i64::MIN, &worst, Some(&worst), "high_frequency", i64::MIN, i64::MIN, &"9".repeat(300), PAYLOAD_BYTES);
        assert!(a.len() <= PAYLOAD_BYTES, "{a}");
        let a: Value = serde_json::from_str(&a).unwrap();
        assert_eq!((a["alert_id"].as_i64(), &a["truncated"]), (Some(i64::MIN), &json!(true)));
        // Under NOTIFY's limit, the anomaly of a control-character key escaped past it before.
        let a = anomaly(1, &worst, Some(&worst), "high_frequency", 1, 1, "00:01:00", MAX_PAYLOAD_BYTES);
        assert!(a.len() <= MAX_PAYLOAD_BYTES, "{}", a.len());
        // A payload that fits is the same at either size.
        let small = notice("u1", &[1, 2]);
        assert_eq!(alert_payload(&small, PAYLOAD_BYTES), alert_payload(&small, MAX_PAYLOAD_BYTES));
    }
}
