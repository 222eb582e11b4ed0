//! Times and durations as the status page shows them: UTC wall time
//! (`12:00:03Z`, with the date when it is not the snapshot's day) and
//! relative (`3m 20s ago`). The page's script formats relative times the
//! same way when it brings them up to date.

use chrono::SecondsFormat;

use crate::core::Timestamp;

/// `b - a` in whole seconds (negative when `b` is earlier).
pub fn seconds_between(a: Timestamp, b: Timestamp) -> i64 {
    (b - a).num_seconds()
}

/// For a `datetime` attribute.
pub fn iso(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `12:00:03Z` on `now`'s day, else `2026-11-29 12:00:03Z`.
pub fn utc(t: Timestamp, now: Timestamp) -> String {
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%SZ").to_string()
    }
}

/// `2026-11-29 12:00:03.250 UTC`: the whole of it, for a tooltip.
pub fn full(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// `42s`, `3m 20s`, `2h 5m`, `3d 4h`: two units at most.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// `3m 20s ago`, or `in 3m 20s` for a time ahead.
pub fn relative(secs: i64) -> String {
    if secs < 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(secs))
    }
}

/// A threshold in seconds (`30s`, `1m 30s`, `0.5s`).
pub fn threshold(secs: f64) -> String {
    if secs < 10.0 && secs.fract() != 0.0 {
        format!("{secs:.1}s")
    } else {
        span(secs.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_keep_two_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(42), "42s");
        assert_eq!(span(60), "1m");
        assert_eq!(span(200), "3m 20s");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(7500), "2h 5m");
        assert_eq!(span(86_400 * 3 + 3600 * 4 + 59), "3d 4h");
        assert_eq!(span(86_400 * 2 + 60), "2d");
    }

    #[test]
    fn relative_times_say_which_way() {
        assert_eq!(relative(200), "3m 20s ago");
        assert_eq!(relative(-7200), "in 2h");
    }

    #[test]
    fn wall_time_shows_the_date_only_on_another_day() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let t: Timestamp = "2026-11-30T10:41:02.5Z".parse().unwrap();
        assert_eq!(utc(t, now), "10:41:02Z");
        let y: Timestamp = "2026-11-29T23:59:59Z".parse().unwrap();
        assert_eq!(utc(y, now), "2026-11-29 23:59:59Z");
        assert_eq!(iso(t), "2026-11-30T10:41:02Z");
    }

    #[test]
    fn thresholds_keep_tenths_when_short() {
        assert_eq!(threshold(0.5), "0.5s");
        assert_eq!(threshold(30.0), "30s");
        assert_eq!(threshold(90.0), "1m 30s");
    }
}
