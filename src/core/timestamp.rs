//! Turning stored heartbeat values into instants.
//!
//! Accepted everywhere: epoch seconds, milliseconds, microseconds or
//! nanoseconds (integer or float, told apart by magnitude), RFC 3339, naive
//! ISO 8601 as Python's `datetime.isoformat()` / `str(datetime)` write it
//! (taken as UTC), and JSON objects whose named field holds one of those.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::model::Timestamp;

/// Why a value is not a timestamp. The message names the problem, never the
/// whole value (which may be large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("empty value")]
    Empty,
    #[error("not a timestamp: {0}")]
    Unparseable(String),
    #[error("epoch value out of range: {0}")]
    OutOfRange(String),
    #[error("json value has no field `{0}`")]
    MissingField(String),
    #[error("json value is not valid: {0}")]
    BadJson(String),
}

/// Epoch magnitudes: anything below 1e11 is seconds (up to year 5138), below
/// 1e14 milliseconds, below 1e17 microseconds, below 1e20 nanoseconds.
pub fn from_epoch(value: f64) -> Result<Timestamp, TimestampError> {
    if !value.is_finite() || value < 0.0 {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    let micros = if value < 1e11 {
        value * 1e6
    } else if value < 1e14 {
        value * 1e3
    } else if value < 1e17 {
        value
    } else if value < 1e20 {
        value / 1e3
    } else {
        return Err(TimestampError::OutOfRange(value.to_string()));
    };
    Utc.timestamp_micros(micros.round() as i64)
        .single()
        .ok_or_else(|| TimestampError::OutOfRange(value.to_string()))
}

fn from_epoch_int(value: i64) -> Result<Timestamp, TimestampError> {
    if value < 0 {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    let micros = if value < 100_000_000_000 {
        value.checked_mul(1_000_000)
    } else if value < 100_000_000_000_000 {
        value.checked_mul(1_000)
    } else if value < 100_000_000_000_000_000 {
        Some(value)
    } else {
        Some(value / 1_000)
    };
    micros
        .and_then(|m| Utc.timestamp_micros(m).single())
        .ok_or_else(|| TimestampError::OutOfRange(value.to_string()))
}

/// Parse a textual value: an epoch number, RFC 3339, or naive ISO 8601 (UTC).
/// With `json_field`, a value that starts with `{` is parsed as a JSON object
/// and the named field is read (number or string).
pub fn parse_text(raw: &str, json_field: Option<&str>) -> Result<Timestamp, TimestampError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(TimestampError::Empty);
    }
    if s.starts_with('{') {
        let field = json_field.unwrap_or("last_seen");
        let value: serde_json::Value =
            serde_json::from_str(s).map_err(|e| TimestampError::BadJson(e.to_string()))?;
        return parse_json_field(&value, field);
    }
    if let Ok(i) = s.parse::<i64>() {
        return from_epoch_int(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        return from_epoch(f);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // Python's isoformat() with an offset but without seconds fraction rules
    // is covered above; naive forms follow (`T` or space separator).
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    // `str(datetime)` with an offset uses a space separator.
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(t.with_timezone(&Utc));
    }
    Err(TimestampError::Unparseable(preview(s)))
}

/// Read a timestamp out of `value[field]`; `field` may be a dotted path.
pub fn parse_json_field(
    value: &serde_json::Value,
    field: &str,
) -> Result<Timestamp, TimestampError> {
    let mut cur = value;
    for part in field.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| TimestampError::MissingField(field.to_string()))?;
    }
    parse_json_value(cur)
}

/// A JSON scalar as a timestamp.
pub fn parse_json_value(value: &serde_json::Value) -> Result<Timestamp, TimestampError> {
    match value {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => from_epoch_int(i),
            None => from_epoch(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => parse_text(s, None),
        other => Err(TimestampError::Unparseable(preview(&other.to_string()))),
    }
}

fn preview(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        format!("{s:?}")
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}…", &s[..end])
    }
}

/// Timestamps serialized exactly as chrono's serde support writes them
/// (RFC 3339 in UTC with `Z`, the fraction in 0, 3, 6 or 9 digits as
/// needed), but written in one piece: a fleet's state file and the API's
/// agent lists are mostly timestamps, and chrono's goes through the
/// formatter a few characters at a time (a fifth of the sidecar's CPU at
/// 10,000 agents, with the state file written every minute).
pub mod rfc3339 {
    use chrono::{Datelike, Timelike};
    use serde::Serializer;

    use super::Timestamp;

    /// `t` as chrono writes it, or `None` for the years it writes with a
    /// sign (before 0, after 9999).
    pub fn write<'a>(t: &Timestamp, buf: &'a mut [u8; 30]) -> Option<&'a str> {
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let (mut sec, mut nano) = (t.second(), t.nanosecond());
        if nano >= 1_000_000_000 {
            // A leap second.
            sec += 1;
            nano -= 1_000_000_000;
        }
        let digits = |buf: &mut [u8], mut v: u32| {
            for d in buf.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(&mut buf[0..4], year as u32);
        buf[4] = b'-';
        digits(&mut buf[5..7], t.month());
        buf[7] = b'-';
        digits(&mut buf[8..10], t.day());
        buf[10] = b'T';
        digits(&mut buf[11..13], t.hour());
        buf[13] = b':';
        digits(&mut buf[14..16], t.minute());
        buf[16] = b':';
        digits(&mut buf[17..19], sec);
        let mut end = 19;
        let (value, width) = if nano == 0 {
            (0, 0)
        } else if nano % 1_000_000 == 0 {
            (nano / 1_000_000, 3)
        } else if nano % 1_000 == 0 {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        if width > 0 {
            buf[end] = b'.';
            digits(&mut buf[end + 1..end + 1 + width], value);
            end += 1 + width;
        }
        buf[end] = b'Z';
        std::str::from_utf8(&buf[..=end]).ok()
    }

    /// For `#[serde(serialize_with)]`.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0; 30];
        match write(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => serde::Serialize::serialize(t, s),
        }
    }

    /// For `#[serde(serialize_with)]` on an `Option`.
    pub fn serialize_opt<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    /// A timestamp that serializes with [`serialize`].
    #[derive(Clone, Copy, Debug)]
    pub struct Rfc3339(pub Timestamp);

    impl serde::Serialize for Rfc3339 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(&self.0, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn epoch_seconds_millis_micros_nanos_are_told_apart_by_magnitude() {
        let want = t("2026-11-27T21:00:00Z");
        assert_eq!(parse_text("1795813200", None).unwrap(), want);
        assert_eq!(parse_text("1795813200000", None).unwrap(), want);
        assert_eq!(parse_text("1795813200000000", None).unwrap(), want);
        assert_eq!(parse_text("1795813200000000000", None).unwrap(), want);
    }

    #[test]
    fn float_epoch_seconds_keep_their_fraction() {
        let got = parse_text("1795813200.25", None).unwrap();
        assert_eq!(got, t("2026-11-27T21:00:00.25Z"));
        let got = parse_text("1795813200250.5", None).unwrap();
        assert_eq!(got.timestamp_micros(), 1_795_813_200_250_500);
    }

    #[test]
    fn rfc3339_with_offset_is_converted_to_utc() {
        assert_eq!(
            parse_text("2026-11-27T22:00:00+01:00", None).unwrap(),
            t("2026-11-27T21:00:00Z")
        );
    }

    #[test]
    fn naive_python_isoformat_is_taken_as_utc() {
        assert_eq!(
            parse_text("2026-11-27T21:00:00.123456", None).unwrap(),
            t("2026-11-27T21:00:00.123456Z")
        );
        assert_eq!(
            parse_text("2026-11-27 21:00:00", None).unwrap(),
            t("2026-11-27T21:00:00Z")
        );
        assert_eq!(
            parse_text("2026-11-27 21:00:00.5+00:00", None).unwrap(),
            t("2026-11-27T21:00:00.5Z")
        );
    }

    #[test]
    fn json_object_field_may_be_number_or_string_or_dotted() {
        assert_eq!(
            parse_text(r#"{"last_seen": 1795813200, "status": "ok"}"#, None).unwrap(),
            t("2026-11-27T21:00:00Z")
        );
        assert_eq!(
            parse_text(r#"{"ts": "2026-11-27T21:00:00Z"}"#, Some("ts")).unwrap(),
            t("2026-11-27T21:00:00Z")
        );
        assert_eq!(
            parse_text(r#"{"hb": {"at": 1795813200}}"#, Some("hb.at")).unwrap(),
            t("2026-11-27T21:00:00Z")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "  ",
            "yesterday",
            "-5",
            "NaN",
            "inf",
            "1e30",
            "{",
            r#"{"other": 1}"#,
            r#"{"last_seen": null}"#,
            "2026-13-45T99:00:00",
        ] {
            assert!(parse_text(bad, None).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn long_garbage_is_truncated_in_the_error() {
        let long = "x".repeat(10_000);
        let err = parse_text(&long, None).unwrap_err().to_string();
        assert!(err.len() < 100, "{err}");
    }

    proptest::proptest! {
        /// A time written as RFC 3339, as Python's naive `isoformat()`, as
        /// integer epoch microseconds or milliseconds reads back as the
        /// same instant (1973 to 2100, where each magnitude is told apart).
        #[test]
        fn a_time_written_then_read_is_the_same_instant(
            micros in 100_000_000_000_000i64..4_102_444_800_000_000,
        ) {
            let t = Utc.timestamp_micros(micros).unwrap();
            let rfc = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            proptest::prop_assert_eq!(parse_text(&rfc, None).unwrap(), t);
            let iso = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
            proptest::prop_assert_eq!(parse_text(&iso, None).unwrap(), t);
            proptest::prop_assert_eq!(parse_text(&micros.to_string(), None).unwrap(), t);
            let ms = t.timestamp_millis();
            proptest::prop_assert_eq!(
                parse_text(&ms.to_string(), None).unwrap(),
                Utc.timestamp_millis_opt(ms).unwrap()
            );
        }
    }

    /// Written by hand, a timestamp is what chrono's serde support writes,
    /// leap seconds, whole seconds and every fraction width included.
    mod rfc3339_like_chrono {
        use super::super::rfc3339::Rfc3339;
        use chrono::{DateTime, NaiveDate, Utc};
        use proptest::prelude::*;

        fn both(t: DateTime<Utc>) -> (String, String) {
            (
                serde_json::to_string(&Rfc3339(t)).unwrap(),
                serde_json::to_string(&t).unwrap(),
            )
        }

        #[test]
        fn edges() {
            let day = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
            for (nano, sec) in [
                (0, 59),
                (5_000_000, 0),
                (5_000, 1),
                (5, 2),
                (999_999_999, 59),
                (1_500_000_000, 59),
            ] {
                let t = day.and_hms_nano_opt(23, 59, sec, nano).unwrap().and_utc();
                let (ours, theirs) = both(t);
                assert_eq!(ours, theirs);
            }
            for year in [0, 9999, -1, 10000] {
                let t = NaiveDate::from_ymd_opt(year, 1, 2)
                    .unwrap()
                    .and_hms_opt(3, 4, 5)
                    .unwrap()
                    .and_utc();
                let (ours, theirs) = both(t);
                assert_eq!(ours, theirs);
            }
        }

        proptest! {
            #[test]
            fn any(secs in -62_000_000_000i64..300_000_000_000i64, nanos in 0u32..1_000_000_000u32, width in 0usize..4) {
                let nanos = [0, nanos / 1_000_000 * 1_000_000, nanos / 1000 * 1000, nanos][width];
                let t = DateTime::from_timestamp(secs, nanos).unwrap();
                let (ours, theirs) = both(t);
                prop_assert_eq!(ours, theirs);
            }
        }
    }
}
