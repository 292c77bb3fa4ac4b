//! Durations and times of day as rules spell them.
//!
//! Seed 003 writes windows as `"1_hour"` and `"5_minutes"`; users also write Postgres interval text
//! (`'90 minutes'`, `'1 hour 30 minutes'`, `'00:05:00'`). Both parse here, without a server, so a rule
//! is checked the moment it is written. Months and years are refused: their length varies, and a
//! risk window must mean the same span every time.

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Parses a window length into microseconds. The result is always positive.
pub fn parse_interval(text: &str) -> Result<i64, String> {
    let cleaned = text.trim().replace('_', " ");
    if cleaned.is_empty() {
        return Err("is empty".into());
    }
    if cleaned.contains(':') && !cleaned.contains(' ') {
        return positive(parse_span(&cleaned).ok_or("is not a valid HH:MM[:SS[.ffffff]] span")?);
    }
    let tokens: Vec<&str> = cleaned.split_whitespace().collect();
    let mut total: i64 = 0;
    let mut i = 0;
    while i < tokens.len() {
        // "90min" and "90 min" are both fine.
        let (number, unit) = split_number_unit(tokens[i]);
        let (number, unit) = if unit.is_empty() {
            let unit = tokens.get(i + 1).ok_or("has a number without a unit")?;
            i += 1;
            (number, *unit)
        } else {
            (number, unit)
        };
        let value: f64 = number.parse().map_err(|_| format!("has {} where a number was expected", super::excerpt(number)))?;
        let unit_micros = unit_micros(unit)?;
        let add = value * unit_micros as f64;
        if !add.is_finite() || add.abs() > 1e17 {
            return Err("is too long".into());
        }
        total = total.saturating_add(add.round() as i64);
        i += 1;
    }
    positive(total)
}

fn positive(micros: i64) -> Result<i64, String> {
    if micros <= 0 {
        Err("must be longer than zero".into())
    } else {
        Ok(micros)
    }
}

fn split_number_unit(token: &str) -> (&str, &str) {
    let at = token.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(token.len());
    token.split_at(at)
}

fn unit_micros(unit: &str) -> Result<i64, String> {
    let s = MICROS_PER_SECOND;
    Ok(match unit.to_ascii_lowercase().as_str() {
        "us" | "usec" | "usecs" | "microsecond" | "microseconds" => 1,
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1_000,
        "s" | "sec" | "secs" | "second" | "seconds" => s,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * s,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * s,
        "d" | "day" | "days" => SECONDS_PER_DAY * s,
        "w" | "week" | "weeks" => 7 * SECONDS_PER_DAY * s,
        "mon" | "mons" | "month" | "months" | "y" | "year" | "years" => {
            return Err(format!("uses {unit:?}, whose length varies; give days or hours instead"))
        }
        other => return Err(format!("has the unknown unit {}", super::excerpt(other))),
    })
}

/// Parses a span `H:MM`, `H:MM:SS` or `H:MM:SS.ffffff` (any number of hours) into microseconds,
/// so that every window [`format_interval`] writes reads back. `None` past what i64 holds.
fn parse_span(text: &str) -> Option<i64> {
    let (clock, fraction) = match text.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => (c, Some(f)),
        Some(_) => return None,
        None => (text, None),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 || (fraction.is_some() && parts.len() != 3) {
        return None;
    }
    let field = |s: &str, most: usize| -> Option<i64> {
        if s.is_empty() || s.len() > most || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let h = field(parts[0], 15)?;
    let m = field(parts[1], 2)?;
    let sec = if parts.len() == 3 { field(parts[2], 2)? } else { 0 };
    if m > 59 || sec > 59 {
        return None;
    }
    let micros = fraction.map_or(0, |f| f.parse::<i64>().unwrap_or(0) * 10i64.pow(6 - f.len() as u32));
    h.checked_mul(3600)?.checked_add(m * 60 + sec)?.checked_mul(MICROS_PER_SECOND)?.checked_add(micros)
}

/// Parses `HH:MM` or `HH:MM:SS` into seconds. With `time_of_day`, 24:00 and later are refused.
pub fn parse_clock(text: &str, time_of_day: bool) -> Option<u32> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let field = |s: &str| -> Option<u32> {
        if s.is_empty() || s.len() > 2 && time_of_day || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let h = field(parts[0])?;
    let m = field(parts[1])?;
    let sec = if parts.len() == 3 { field(parts[2])? } else { 0 };
    if m > 59 || sec > 59 || (time_of_day && h > 23) {
        return None;
    }
    // A span such as "1193047:00" is more seconds than u32 holds: refused, not wrapped.
    h.checked_mul(3600)?.checked_add(m * 60 + sec)
}

/// Formats microseconds the way Postgres prints an interval of hours, minutes and seconds.
pub fn format_interval(micros: i64) -> String {
    let secs = micros / MICROS_PER_SECOND;
    let frac = micros % MICROS_PER_SECOND;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if frac == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{frac:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: i64 = 3_600 * MICROS_PER_SECOND;
    const M: i64 = 60 * MICROS_PER_SECOND;

    #[test]
    fn seed_spellings() {
        assert_eq!(parse_interval("1_hour"), Ok(H));
        assert_eq!(parse_interval("5_minutes"), Ok(5 * M));
    }

    #[test]
    fn postgres_spellings() {
        assert_eq!(parse_interval("90 minutes"), Ok(90 * M));
        assert_eq!(parse_interval("1 hour 30 minutes"), Ok(90 * M));
        assert_eq!(parse_interval("00:05:00"), Ok(5 * M));
        assert_eq!(parse_interval("1:30"), Ok(90 * M));
        assert_eq!(parse_interval("2 days"), Ok(48 * H));
        assert_eq!(parse_interval("1.5 hours"), Ok(90 * M));
        assert_eq!(parse_interval("30s"), Ok(30 * MICROS_PER_SECOND));
        assert_eq!(parse_interval(" 1 HOUR "), Ok(H));
    }

    #[test]
    fn refusals() {
        assert!(parse_interval("1_hourz").unwrap_err().contains("unknown unit"));
        assert!(parse_interval("").is_err());
        assert!(parse_interval("hour").is_err());
        assert!(parse_interval("5").unwrap_err().contains("without a unit"));
        assert!(parse_interval("1 month").unwrap_err().contains("varies"));
        assert!(parse_interval("0 minutes").unwrap_err().contains("longer than zero"));
        assert!(parse_interval("-5 minutes").is_err());
        assert!(parse_interval("1e300 hours").is_err());
    }

    #[test]
    fn clock_spans_too_long_for_u32_are_refused() {
        assert_eq!(parse_clock("1193046:00", false), Some(1193046 * 3600));
        assert_eq!(parse_clock("1193047:00", false), None);
        // Spans are not times of day: any hours, and fractions, as format_interval writes them.
        assert_eq!(parse_interval("1193047:00"), Ok(1193047 * H));
        for micros in [1, 500_000, 1_500_000, 1193047 * H, 90 * M + 7] {
            assert_eq!(parse_interval(&format_interval(micros)), Ok(micros), "{}", format_interval(micros));
        }
        assert!(parse_interval("1:00:00.1234567").is_err() && parse_interval("1:00.5").is_err());
        assert!(parse_interval("99999999999999999:00").is_err());
    }

    #[test]
    fn clock() {
        assert_eq!(parse_clock("22:00", true), Some(22 * 3600));
        assert_eq!(parse_clock("06:00:30", true), Some(6 * 3600 + 30));
        assert_eq!(parse_clock("24:00", true), None);
        assert_eq!(parse_clock("7", true), None);
        assert_eq!(parse_clock("07:60", true), None);
        assert_eq!(parse_clock("ab:00", true), None);
        assert_eq!(format_interval(90 * M), "01:30:00");
    }
}
