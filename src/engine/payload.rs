//! NOTIFY payloads: small JSON that always fits under Postgres' 8000-byte limit.
//!
//! A payload carries ids, not rows: a consumer fetches the whole alert with `alert_id`. When a
//! payload would be too long, the rule list is cut first, then long strings, and `"truncated":
//! true` says so; `alert_id` is always kept.

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

pub fn alert_payload(n: &AlertNotice) -> String {
    let build = |rules: &[i32], limit: usize, truncated: bool| -> String {
        let cut = |s: &str| -> String {
            if s.len() <= limit {
                s.to_string()
            } else {
                let mut end = limit;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            }
        };
        let mut v = json!({
            "type": "risk_alert", "alert_id": n.alert_id, "table": cut(n.table), "key": cut(n.key),
            "row": n.row.map(cut), "score": n.score, "level": n.level, "action": n.action, "rules": rules, "ts": n.ts,
        });
        if truncated {
            v["truncated"] = Value::Bool(true);
        }
        v.to_string()
    };
    let full = build(n.rules, usize::MAX, false);
    if full.len() <= MAX_PAYLOAD_BYTES {
        return full;
    }
    let short = build(&n.rules[..n.rules.len().min(50)], 1000, true);
    if short.len() <= MAX_PAYLOAD_BYTES {
        return short;
    }
    build(&[], 200, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice<'a>(key: &'a str, rules: &'a [i32]) -> AlertNotice<'a> {
        AlertNotice { alert_id: 42, table: "public.transactions", key, row: Some("7"), score: 1.5, level: "high", action: "alert", rules, ts: "2026-01-15 12:00:00+00" }
    }

    #[test]
    fn small_payload_is_complete() {
        let p: Value = serde_json::from_str(&alert_payload(&notice("u1", &[1, 2]))).unwrap();
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
            let text = alert_payload(&notice(k, r));
            assert!(text.len() <= MAX_PAYLOAD_BYTES, "{}", text.len());
            let p: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(p["alert_id"], 42);
            assert_eq!(p["truncated"], true);
        }
    }
}
