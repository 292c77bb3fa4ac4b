//! Window arithmetic for `cep.tumble`, `cep.hop` and `cep.window_aggregate`.
//!
//! Times are microseconds on one absolute line (Postgres' epoch or Unix', it does not matter as
//! long as the origin uses the same). Fixed widths are plain arithmetic; month widths follow the
//! calendar in UTC, as TimescaleDB's `time_bucket` does.

use chrono::{Datelike, NaiveDate};

/// Microseconds from Postgres' epoch (2000-01-01) to TimescaleDB's default origin, Monday
/// 2000-01-03 00:00 UTC: `time_bucket` aligns weeks and smaller widths to it.
pub const DEFAULT_ORIGIN_PG: i64 = 2 * 86_400 * 1_000_000;
/// Months are aligned to 2000-01-01, as `time_bucket` does.
const MONTH_ORIGIN: (i32, u32) = (2000, 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Micros(i64),
    Months(i32),
}

impl Width {
    /// An interval's parts as Postgres stores them. Days count as 24 hours, as in
    /// `time_bucket`; months cannot be mixed with days or time.
    pub fn from_interval(months: i32, days: i32, micros: i64) -> Result<Width, String> {
        if months != 0 {
            if days != 0 || micros != 0 {
                return Err("a width cannot mix months with days or time".into());
            }
            if months < 0 {
                return Err("a width must be positive".into());
            }
            return Ok(Width::Months(months));
        }
        let total = (days as i64).checked_mul(86_400_000_000).and_then(|d| d.checked_add(micros)).ok_or("the width is too large")?;
        if total <= 0 {
            return Err("a width must be positive".into());
        }
        Ok(Width::Micros(total))
    }
}

/// Start of the bucket of `width` that holds `ts`, counted from `origin`.
pub fn tumble(ts: i64, width: Width, origin: i64) -> Option<i64> {
    match width {
        Width::Micros(w) => {
            let offset = ts.checked_sub(origin)?;
            origin.checked_add(offset.div_euclid(w).checked_mul(w)?)
        }
        Width::Months(m) => {
            let (y, mo) = ym_of(ts)?;
            let since = (y - MONTH_ORIGIN.0) * 12 + (mo as i32 - MONTH_ORIGIN.1 as i32);
            let start = since.div_euclid(m) * m;
            micros_of_month(MONTH_ORIGIN.0 + start.div_euclid(12), start.rem_euclid(12) as u32 + 1)
        }
    }
}

/// The earliest finite `timestamptz`, 4714-11-24 00:00 UTC BC, in microseconds since 2000-01-01.
pub const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;

/// Where the window `[at - width, at]` starts (microseconds since 2000-01-01), as timestamp
/// arithmetic has it: infinity minus a width is still infinity. A window reaching back before the
/// earliest timestamp starts at -infinity, where SQL would raise "timestamp out of range": a row
/// is scored, never refused, for its time.
pub fn window_from(at: i64, width: i64) -> i64 {
    if at == i64::MIN || at == i64::MAX {
        return at;
    }
    let from = at.saturating_sub(width);
    if from < MIN_TIMESTAMP {
        i64::MIN
    } else {
        from
    }
}

/// Most windows one `hop` call returns. Each is a row, and a width a million times its slide
/// (a year sliding by 30 seconds) is a mistake rather than a query.
pub const MAX_HOP_WINDOWS: i64 = 10_000;

/// The earliest of the hopping windows `[start, start + width)` that hold `ts` (windows start
/// every `slide` from `origin`), and how many there are. Arithmetic, so any ratio is cheap.
pub fn hop_span(ts: i64, width: i64, slide: i64, origin: i64) -> Option<(i64, i64)> {
    let last = tumble(ts, Width::Micros(slide), origin)?;
    // Starts `last - k * slide` for k = 0.. while they are after `ts - width`.
    let reach = (last as i128) - (ts as i128) + (width as i128);
    if reach <= 0 {
        return Some((last, 0));
    }
    let count = (reach + slide as i128 - 1) / slide as i128;
    let first = last as i128 - (count - 1) * slide as i128;
    Some((i64::try_from(first).ok()?, i64::try_from(count).ok()?))
}

/// Starts of the hopping windows `[start, start + width)` that hold `ts`; windows start every
/// `slide` from `origin`. Earliest first. `Err` holds the count when it is over `max`.
pub fn hop(ts: i64, width: i64, slide: i64, origin: i64, max: i64) -> Result<Vec<i64>, i64> {
    let Some((first, count)) = hop_span(ts, width, slide, origin) else { return Ok(Vec::new()) };
    if count > max {
        return Err(count);
    }
    Ok((0..count).map(|k| first + k * slide).collect())
}

/// Window starts, every `slide`, of the windows of `width` that overlap `[start, finish)`.
/// Bounded by `max_windows`; `None` when there would be more.
pub fn window_starts(start: i64, finish: i64, width: i64, slide: i64, origin: i64, max_windows: usize) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    if finish <= start {
        return Some(out);
    }
    let (mut s, count) = hop_span(start, width, slide, origin)?;
    if count == 0 {
        return None;
    }
    while s < finish {
        if out.len() == max_windows {
            return None;
        }
        out.push(s);
        s = s.checked_add(slide)?;
    }
    Some(out)
}

/// The seed's growth rate: percent change of a window's total against the previous window's,
/// undefined when there is no previous window or its total is zero.
pub fn growth_rate(previous: Option<f64>, current: f64) -> Option<f64> {
    previous.filter(|p| *p != 0.0).map(|p| (current - p) / p * 100.0)
}

const PG_EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};

fn ym_of(ts: i64) -> Option<(i32, u32)> {
    let days = ts.div_euclid(86_400_000_000);
    let date = PG_EPOCH.checked_add_signed(chrono::TimeDelta::try_days(days)?)?;
    Some((date.year(), date.month()))
}

fn micros_of_month(year: i32, month: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(year, month, 1)?;
    date.signed_duration_since(PG_EPOCH).num_days().checked_mul(86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn a_window_ending_at_infinity_starts_there_and_nothing_overflows() {
        assert_eq!(window_from(10 * HOUR, HOUR), 9 * HOUR);
        assert_eq!(window_from(i64::MIN, HOUR), i64::MIN);
        assert_eq!(window_from(i64::MAX, HOUR), i64::MAX);
        assert_eq!(window_from(MIN_TIMESTAMP + HOUR, HOUR), MIN_TIMESTAMP);
        assert_eq!(window_from(MIN_TIMESTAMP, HOUR), i64::MIN, "before the earliest timestamp: from -infinity");
    }

    fn at(y: i32, m: u32, d: u32, h: i64, min: i64) -> i64 {
        micros_of_month(y, m).unwrap() + (d as i64 - 1) * DAY + h * HOUR + min * MIN
    }

    #[test]
    fn fixed_buckets_align_to_the_origin() {
        let o = DEFAULT_ORIGIN_PG;
        assert_eq!(tumble(at(2026, 1, 15, 12, 34), Width::Micros(MIN), o), Some(at(2026, 1, 15, 12, 34)));
        assert_eq!(tumble(at(2026, 1, 15, 12, 34) + 59_999_999, Width::Micros(MIN), o), Some(at(2026, 1, 15, 12, 34)));
        assert_eq!(tumble(at(2026, 1, 15, 12, 34), Width::Micros(15 * MIN), o), Some(at(2026, 1, 15, 12, 30)));
        // Weeks start on Mondays: 2026-01-15 is a Thursday, its week began on Monday the 12th.
        assert_eq!(tumble(at(2026, 1, 15, 12, 0), Width::Micros(7 * DAY), o), Some(at(2026, 1, 12, 0, 0)));
        // Before the origin, buckets still floor.
        assert_eq!(tumble(at(1999, 12, 31, 23, 59), Width::Micros(HOUR), o), Some(at(1999, 12, 31, 23, 0)));
        // Across midnight: a 90-minute bucket.
        let b = tumble(at(2026, 3, 1, 0, 10), Width::Micros(90 * MIN), o).unwrap();
        assert!(b <= at(2026, 3, 1, 0, 10) && at(2026, 3, 1, 0, 10) < b + 90 * MIN);
        assert_eq!((b - o) % (90 * MIN), 0);
    }

    #[test]
    fn month_buckets_follow_the_calendar() {
        let o = DEFAULT_ORIGIN_PG;
        assert_eq!(tumble(at(2026, 2, 28, 23, 59), Width::Months(1), o), Some(at(2026, 2, 1, 0, 0)));
        assert_eq!(tumble(at(2026, 3, 1, 0, 0), Width::Months(1), o), Some(at(2026, 3, 1, 0, 0)));
        assert_eq!(tumble(at(2026, 8, 15, 0, 0), Width::Months(3), o), Some(at(2026, 7, 1, 0, 0)));
        assert_eq!(tumble(at(1999, 11, 5, 0, 0), Width::Months(12), o), Some(at(1999, 1, 1, 0, 0)));
    }

    #[test]
    fn widths_from_intervals() {
        assert_eq!(Width::from_interval(0, 1, 0), Ok(Width::Micros(DAY)));
        assert_eq!(Width::from_interval(2, 0, 0), Ok(Width::Months(2)));
        assert!(Width::from_interval(1, 1, 0).is_err());
        assert!(Width::from_interval(0, 0, 0).is_err());
        assert!(Width::from_interval(0, 0, -5).is_err());
    }

    #[test]
    fn hop_lists_every_window_holding_the_time() {
        let o = DEFAULT_ORIGIN_PG;
        let t = at(2026, 1, 15, 12, 7);
        let starts = hop(t, 10 * MIN, 5 * MIN, o, MAX_HOP_WINDOWS).unwrap();
        assert_eq!(starts, vec![at(2026, 1, 15, 12, 0), at(2026, 1, 15, 12, 5)]);
        for s in &starts {
            assert!(*s <= t && t < s + 10 * MIN);
        }
        // Tumbling is hopping with slide = width.
        assert_eq!(hop(t, 5 * MIN, 5 * MIN, o, MAX_HOP_WINDOWS).unwrap(), vec![tumble(t, Width::Micros(5 * MIN), o).unwrap()]);
        // A window's end is exclusive.
        assert_eq!(
            hop(at(2026, 1, 15, 12, 10), 10 * MIN, 5 * MIN, o, MAX_HOP_WINDOWS).unwrap(),
            vec![at(2026, 1, 15, 12, 5), at(2026, 1, 15, 12, 10)]
        );
    }

    #[test]
    fn hop_counts_without_listing_and_refuses_absurd_ratios() {
        let o = DEFAULT_ORIGIN_PG;
        let t = at(2026, 1, 15, 12, 7);
        // A year sliding by a microsecond is counted, not allocated.
        assert_eq!(hop(t, 365 * DAY, 1, o, MAX_HOP_WINDOWS), Err(365 * DAY));
        assert_eq!(hop(t, i64::MAX, 1, o, MAX_HOP_WINDOWS).map(|v| v.len()), Err(i64::MAX));
        // The arithmetic agrees with walking back one slide at a time.
        for width in 1..40 {
            for slide in 1..15 {
                for ts in -50..50 {
                    let mut walked = Vec::new();
                    let mut s = tumble(ts, Width::Micros(slide), 3).unwrap();
                    while s > ts - width {
                        walked.push(s);
                        s -= slide;
                    }
                    walked.reverse();
                    assert_eq!(hop(ts, width, slide, 3, 1_000).unwrap(), walked, "{ts} {width} {slide}");
                }
            }
        }
    }

    #[test]
    fn window_starts_cover_the_range_and_are_bounded() {
        let o = DEFAULT_ORIGIN_PG;
        let (s, f) = (at(2026, 1, 31, 23, 58), at(2026, 2, 1, 0, 3));
        let w = window_starts(s, f, MIN, MIN, o, 100).unwrap();
        assert_eq!(w.len(), 5);
        assert_eq!(w[0], s);
        assert_eq!(window_starts(f, s, MIN, MIN, o, 100), Some(vec![]));
        assert_eq!(window_starts(s, f, MIN, MIN, o, 3), None);
        let hopping = window_starts(s, f, 2 * MIN, MIN, o, 100).unwrap();
        assert_eq!(hopping[0], s - MIN, "the window that starts before the range but overlaps it");
    }

    #[test]
    fn growth_rate_is_the_seeds() {
        assert_eq!(growth_rate(Some(100.0), 150.0), Some(50.0));
        assert_eq!(growth_rate(Some(0.0), 150.0), None);
        assert_eq!(growth_rate(None, 150.0), None);
    }
}
