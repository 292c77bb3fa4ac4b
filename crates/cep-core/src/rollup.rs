//! Per-minute rollups of a watched table: what the monitor adds for one statement, summed per
//! minute and per (minute, key) before it touches a table, so a 10,000-row COPY is a handful of
//! upserts.

use std::collections::BTreeMap;

pub const MINUTE: i64 = 60_000_000;

/// Count, sum, min and max of the amounts of some rows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Agg {
    pub count: i64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Agg {
    /// A row counts even without an amount; its amount goes into sum, min and max when present.
    pub fn add(&mut self, amount: Option<f64>) {
        self.count += 1;
        if let Some(a) = amount.filter(|a| a.is_finite()) {
            self.sum += a;
            self.min = Some(self.min.map_or(a, |m| m.min(a)));
            self.max = Some(self.max.map_or(a, |m| m.max(a)));
        }
    }
}

/// The start of the minute holding `at` (microseconds, any epoch that starts on a minute).
pub fn minute_of(at: i64) -> i64 {
    // Saturating: '-infinity' is i64::MIN.
    at.saturating_sub(at.rem_euclid(MINUTE))
}

#[derive(Debug, Default)]
pub struct Rollup {
    pub minutes: BTreeMap<i64, Agg>,
    pub keys: BTreeMap<(i64, String), Agg>,
}

impl Rollup {
    pub fn add(&mut self, at: i64, key: &str, amount: Option<f64>) {
        let minute = minute_of(at);
        self.minutes.entry(minute).or_default().add(amount);
        self.keys.entry((minute, key.to_string())).or_default().add(amount);
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fold_into_their_minutes_and_keys() {
        let mut r = Rollup::default();
        r.add(MINUTE * 10 + 5, "u1", Some(10.0));
        r.add(MINUTE * 10 + 59_999_999, "u1", Some(30.0));
        r.add(MINUTE * 11, "u2", None);
        r.add(-1, "u3", Some(-5.0)); // before the epoch: still the minute that holds it
        assert_eq!(r.minutes.len(), 3);
        assert_eq!(r.minutes[&(MINUTE * 10)], Agg { count: 2, sum: 40.0, min: Some(10.0), max: Some(30.0) });
        assert_eq!(r.minutes[&(MINUTE * 11)], Agg { count: 1, sum: 0.0, min: None, max: None });
        assert_eq!(r.minutes[&-MINUTE].count, 1);
        assert_eq!(r.keys[&(MINUTE * 10, "u1".to_string())].count, 2);
        assert_eq!(r.keys.len(), 3);
    }

    #[test]
    fn non_finite_amounts_count_but_do_not_poison_the_sums() {
        let mut a = Agg::default();
        a.add(Some(f64::NAN));
        a.add(Some(2.0));
        assert_eq!(a, Agg { count: 2, sum: 2.0, min: Some(2.0), max: Some(2.0) });
    }
}
