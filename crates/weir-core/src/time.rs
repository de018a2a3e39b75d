//! Time: an injected [`Clock`] (never a global one) and duration parsing for rule options.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of processing time in epoch milliseconds; injected so tests control it.
pub trait Clock: Send + Sync {
    /// Epoch milliseconds.
    fn now_ms(&self) -> i64;

    /// Epoch nanoseconds, for latency stamps; clocks without a finer resolution scale `now_ms`.
    fn now_ns(&self) -> i64 {
        self.now_ms().saturating_mul(1_000_000)
    }
}

/// The event times weir takes: the years 1 to 9999 (UTC), in epoch milliseconds. Every time
/// and window bound within stays far from `i64`'s ends, so window arithmetic cannot overflow.
pub const EVENT_TIME_RANGE: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000..=253_402_300_799_999;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn now_ns(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(AtomicI64::new(start_ms))
    }
    /// Moves the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Milliseconds in one unit, for the unit names users write (`ms`, `s`, `second`, `minutes`, ...).
pub fn unit_millis(unit: &str) -> Option<i64> {
    let u = unit.trim().to_ascii_lowercase();
    let u = u
        .strip_suffix('s')
        .filter(|s| !s.is_empty() && *s != "m")
        .unwrap_or(&u);
    Some(match u {
        "ms" | "milli" | "millisecond" => 1,
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        _ => return None,
    })
}

/// Parses a duration such as `2 seconds`, `2s`, `500ms`, `1 minute` or a bare number of
/// milliseconds, into milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; write e.g. '2 seconds' or '500ms'"))?;
    let unit = unit.trim();
    let per = if unit.is_empty() {
        1
    } else {
        unit_millis(unit).ok_or_else(|| {
            format!("unknown time unit '{unit}' in '{text}'; use ms, second, minute, hour or day")
        })?
    };
    Ok((n * per as f64).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2 seconds"), Ok(2000));
        assert_eq!(parse_duration("2s"), Ok(2000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("1 minute"), Ok(60_000));
        assert_eq!(parse_duration("3 mins"), Ok(180_000));
        assert_eq!(parse_duration("1.5 hours"), Ok(5_400_000));
        assert_eq!(parse_duration("250"), Ok(250));
        assert!(parse_duration("2 fortnights").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        assert_eq!(c.now_ms(), 10);
        c.advance(5);
        assert_eq!(c.now_ms(), 15);
    }
}
