//! Monthly partition planning: month arithmetic, partition names, and what maintenance should do
//! to bring a table to its desired state. Months are counted as `year * 12 + month0`, so that
//! "the month after" is `+ 1` and comparisons need no calendar.

use std::fmt;

/// Postgres truncates identifiers at NAMEDATALEN - 1 bytes; a longer name would silently become
/// another table's name, so it is refused instead.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(pub i32);

impl Month {
    pub fn new(year: i32, month: u32) -> Month {
        Month(year * 12 + month as i32 - 1)
    }

    pub fn year(self) -> i32 {
        self.0.div_euclid(12)
    }

    /// 1 to 12.
    pub fn month(self) -> u32 {
        self.0.rem_euclid(12) as u32 + 1
    }

    pub fn next(self) -> Month {
        Month(self.0 + 1)
    }

    /// The first day, as an ISO date literal: `2026-01-01`.
    pub fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year(), self.month())
    }

    /// The seed's suffix: `_YYYY_MM`.
    pub fn suffix(self) -> String {
        format!("_{:04}_{:02}", self.year(), self.month())
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition name \"{name}\" is {bytes} bytes; Postgres allows {MAX_IDENTIFIER_BYTES} (rename the parent, or create the partition by hand)")]
pub struct NameTooLong {
    pub name: String,
    pub bytes: usize,
}

/// `<parent>_YYYY_MM`, as the seed's `create_monthly_partition` names it.
pub fn partition_name(parent: &str, month: Month) -> Result<String, NameTooLong> {
    let name = format!("{parent}{}", month.suffix());
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(NameTooLong { bytes: name.len(), name });
    }
    Ok(name)
}

/// An existing partition, its bounds rounded out to whole months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    /// The month holding the lower bound; `None` for MINVALUE.
    pub from: Option<Month>,
    /// The first month entirely above the upper bound; `None` for MAXVALUE.
    pub to: Option<Month>,
    /// Bounds are exactly the first of a month and of the next one.
    pub exact_month: Option<Month>,
}

impl Existing {
    pub fn overlaps(&self, month: Month) -> bool {
        self.from.is_none_or(|f| f <= month) && self.to.is_none_or(|t| t > month)
    }
}

/// What a table registered with `cep.manage_partitions` should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Future months kept ready beyond the current one.
    pub premake: u32,
    /// Months whose whole range lies before this month are retired.
    pub retain_from: Option<Month>,
    /// Months whose range reaches into this month or later are never retired: rows there are
    /// still inside the widest window of an active rule.
    pub protect_from: Option<Month>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the month's partition; `drain` when the DEFAULT partition holds rows for it.
    Create { month: Month, drain: bool },
    /// Detach or drop a whole month older than the retention.
    Retire { name: String, month: Month },
    /// Retention would retire it, but an active rule's window still reads its rows.
    Protected { name: String, month: Month },
    /// The month is (partly) covered by a partition with other bounds.
    Conflict { month: Month, with: String },
}

/// Everything maintenance should do, in the order to do it: creations oldest first (so rows
/// drained from DEFAULT land before newer months), then retirements oldest first.
pub fn plan(existing: &[Existing], current: Month, default_months: &[Month], policy: &Policy) -> Vec<Action> {
    let retired = |m: Month| policy.retain_from.is_some_and(|r| m.next() <= r);
    let protected = |m: Month| policy.protect_from.is_some_and(|p| m.next() > p);
    let earliest_exact = existing.iter().filter_map(|e| e.exact_month).min();
    let earliest_default = default_months.iter().copied().min();
    let first = [Some(current), earliest_exact, earliest_default].into_iter().flatten().min().unwrap_or(current);
    // Rows already waiting in DEFAULT for later months get their months too.
    let latest_default = default_months.iter().copied().max();
    let last = [Some(Month(current.0 + policy.premake as i32)), latest_default].into_iter().flatten().max().unwrap_or(current);

    let mut actions = Vec::new();
    let mut month = first;
    while month <= last {
        let drain = default_months.contains(&month);
        // A month that retention would remove at once is not created, unless rows wait for it.
        if !retired(month) || protected(month) || drain {
            match existing.iter().find(|e| e.overlaps(month)) {
                Some(e) if e.exact_month == Some(month) => {}
                Some(e) => actions.push(Action::Conflict { month, with: e.name.clone() }),
                None => actions.push(Action::Create { month, drain }),
            }
        }
        month = month.next();
    }
    let mut old: Vec<&Existing> = existing.iter().filter(|e| e.exact_month.is_some_and(retired)).collect();
    old.sort_by_key(|e| e.exact_month);
    for e in old {
        let month = e.exact_month.expect("filtered on exact months");
        if protected(month) {
            actions.push(Action::Protected { name: e.name.clone(), month });
        } else {
            actions.push(Action::Retire { name: e.name.clone(), month });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monthly(name: &str, m: Month) -> Existing {
        Existing { name: name.into(), from: Some(m), to: Some(m.next()), exact_month: Some(m) }
    }

    const NO_RETENTION: Policy = Policy { premake: 2, retain_from: None, protect_from: None };

    #[test]
    fn months_count_across_years() {
        let dec = Month::new(2025, 12);
        assert_eq!(dec.next(), Month::new(2026, 1));
        assert_eq!(dec.next().first_day(), "2026-01-01");
        assert_eq!(dec.suffix(), "_2025_12");
        assert_eq!(Month::new(-1, 1).year(), -1);
        assert_eq!(Month::new(2026, 11).to_string(), "2026-11");
    }

    #[test]
    fn names_longer_than_postgres_allows_are_refused() {
        assert_eq!(partition_name("tx", Month::new(2026, 3)).unwrap(), "tx_2026_03");
        let parent = "t".repeat(55);
        assert_eq!(partition_name(&parent, Month::new(2026, 3)).unwrap().len(), 63);
        let err = partition_name(&"t".repeat(56), Month::new(2026, 3)).unwrap_err();
        assert_eq!(err.bytes, 64);
        assert!(err.to_string().contains("Postgres allows 63"), "{err}");
        // Bytes, not characters: a multibyte name reaches the limit sooner.
        assert!(partition_name(&"é".repeat(28), Month::new(2026, 3)).is_err());
    }

    #[test]
    fn an_empty_table_gets_the_current_month_and_premake() {
        let now = Month::new(2026, 11);
        let actions = plan(&[], now, &[], &NO_RETENTION);
        let months: Vec<_> = actions
            .iter()
            .map(|a| match a {
                Action::Create { month, drain: false } => month.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(months, ["2026-11", "2026-12", "2027-01"]);
    }

    #[test]
    fn existing_months_are_kept_and_gaps_filled() {
        let now = Month::new(2026, 11);
        let existing = [monthly("t_2026_08", Month::new(2026, 8)), monthly("t_2026_11", now)];
        let actions = plan(&existing, now, &[], &NO_RETENTION);
        assert_eq!(
            actions,
            [9, 10, 12]
                .map(|m| Action::Create { month: Month::new(2026, m), drain: false })
                .into_iter()
                .chain([Action::Create { month: Month::new(2027, 1), drain: false }])
                .collect::<Vec<_>>()
        );
        // Once everything exists, there is nothing to do: maintenance is idempotent.
        let all: Vec<Existing> = (8..=12).map(|m| monthly("x", Month::new(2026, m))).chain([monthly("y", Month::new(2027, 1))]).collect();
        assert!(plan(&all, now, &[], &NO_RETENTION).is_empty());
    }

    #[test]
    fn default_rows_make_their_months_with_a_drain() {
        let now = Month::new(2026, 11);
        let actions = plan(&[monthly("t_2026_11", now)], now, &[Month::new(2026, 6), now], &Policy { premake: 0, ..NO_RETENTION });
        assert_eq!(actions[0], Action::Create { month: Month::new(2026, 6), drain: true });
        assert_eq!(actions.len(), 5, "{actions:?}"); // 6, 7, 8, 9, 10; 11 exists
        assert!(actions[1..].iter().all(|a| matches!(a, Action::Create { drain: false, .. })));
    }

    #[test]
    fn default_rows_beyond_premake_get_their_months() {
        let now = Month::new(2026, 11);
        let actions = plan(&[monthly("t_2026_11", now)], now, &[Month::new(2027, 4)], &Policy { premake: 1, ..NO_RETENTION });
        assert_eq!(actions.len(), 5, "{actions:?}"); // 2026-12 .. 2027-04
        assert_eq!(actions.last(), Some(&Action::Create { month: Month::new(2027, 4), drain: true }));
    }

    #[test]
    fn a_foreign_partition_is_a_conflict_not_an_overlap() {
        let now = Month::new(2026, 11);
        // A quarterly partition by hand covers November and December.
        let q = Existing { name: "t_q4".into(), from: Some(Month::new(2026, 10)), to: Some(Month::new(2027, 1)), exact_month: None };
        let actions = plan(&[q], now, &[], &Policy { premake: 2, ..NO_RETENTION });
        assert_eq!(actions[0], Action::Conflict { month: now, with: "t_q4".into() });
        assert_eq!(actions[1], Action::Conflict { month: Month::new(2026, 12), with: "t_q4".into() });
        assert_eq!(actions[2], Action::Create { month: Month::new(2027, 1), drain: false });
        // MINVALUE .. MAXVALUE covers everything.
        let all = Existing { name: "t_all".into(), from: None, to: None, exact_month: None };
        assert!(all.overlaps(Month::new(1, 1)) && all.overlaps(Month::new(9999, 12)));
    }

    #[test]
    fn retention_retires_whole_old_months_oldest_first() {
        let now = Month::new(2026, 11);
        let existing: Vec<Existing> = (7..=12).rev().map(|m| monthly(&format!("t_2026_{m:02}"), Month::new(2026, m))).collect();
        // Keep from September: July and August go.
        let policy = Policy { premake: 1, retain_from: Some(Month::new(2026, 9)), protect_from: None };
        let actions = plan(&existing, now, &[], &policy);
        assert_eq!(
            actions,
            [
                Action::Retire { name: "t_2026_07".into(), month: Month::new(2026, 7) },
                Action::Retire { name: "t_2026_08".into(), month: Month::new(2026, 8) },
            ]
        );
    }

    #[test]
    fn rule_windows_protect_months_from_retention() {
        let now = Month::new(2026, 11);
        let existing: Vec<Existing> = (7..=12).map(|m| monthly(&format!("t_2026_{m:02}"), Month::new(2026, m))).collect();
        // A 90-day rule window reaches back into August: August stays, July goes.
        let policy = Policy { premake: 1, retain_from: Some(Month::new(2026, 10)), protect_from: Some(Month::new(2026, 8)) };
        let actions = plan(&existing, now, &[], &policy);
        assert_eq!(
            actions,
            [
                Action::Retire { name: "t_2026_07".into(), month: Month::new(2026, 7) },
                Action::Protected { name: "t_2026_08".into(), month: Month::new(2026, 8) },
                Action::Protected { name: "t_2026_09".into(), month: Month::new(2026, 9) },
            ]
        );
    }

    #[test]
    fn months_past_retention_are_not_created_unless_rows_wait_for_them() {
        let now = Month::new(2026, 11);
        let existing = [monthly("t_2026_01", Month::new(2026, 1))];
        let policy = Policy { premake: 0, retain_from: Some(Month::new(2026, 10)), protect_from: None };
        let actions = plan(&existing, now, &[Month::new(2026, 3)], &policy);
        assert!(actions.contains(&Action::Create { month: Month::new(2026, 3), drain: true }));
        assert!(!actions.iter().any(|a| matches!(a, Action::Create { month, .. } if *month == Month::new(2026, 4))));
        assert!(actions.contains(&Action::Create { month: Month::new(2026, 10), drain: false }));
        assert!(actions.contains(&Action::Retire { name: "t_2026_01".into(), month: Month::new(2026, 1) }));
    }
}
