//! Reply values: text out of a reply, the replies of `SCAN`, `MGET` and
//! `TIME`, and a stored value as a reading on the local clock.

use std::borrow::Cow;

use chrono::{TimeDelta, TimeZone, Utc};
use fred::types::Value;

use crate::core::timestamp::{from_epoch, parse_json_field, parse_text};
use crate::core::{AgentId, Reading, Status, Timestamp};
use crate::sources::common::{to_local, truncate};

use super::RedisSource;

/// What a key, field or member held.
pub(super) enum Slot {
    Value(Value),
    Missing,
    WrongType(String),
}

impl RedisSource {
    /// A stored timestamp (text or, for a sorted set, a score) as a reading
    /// on the local clock.
    pub(super) fn reading(
        &self,
        agent: AgentId,
        slot: Slot,
        offset: TimeDelta,
        score: bool,
    ) -> Reading {
        let value = match slot {
            Slot::Value(v) => v,
            Slot::Missing => return Reading::Absent { agent },
            Slot::WrongType(t) => {
                return Reading::Invalid {
                    agent,
                    reason: format!("key holds a {t}, not a string"),
                };
            }
        };
        let parsed = match value_text(&value) {
            Err(reason) => Err(reason.to_string()),
            Ok(text) if score => match text.trim().parse::<f64>() {
                Ok(f) => from_epoch(f).map(|t| (t, None)).map_err(|e| e.to_string()),
                Err(_) => Err(format!("score is not a number: {text:?}")),
            },
            Ok(text) if text.trim_start().starts_with('{') => self.json_reading(&text),
            Ok(text) => parse_text(&text, None)
                .map(|t| (t, None))
                .map_err(|e| e.to_string()),
        };
        match parsed.and_then(|(t, status)| Ok((to_local(t, offset)?, status))) {
            Ok((last_seen, status)) => Reading::Heartbeat {
                agent,
                last_seen,
                status,
            },
            Err(reason) => Reading::Invalid { agent, reason },
        }
    }

    /// A JSON value: its time (`json_field`) and, when it has one, its
    /// status (`status_field`, with `detail`).
    fn json_reading(&self, text: &str) -> Result<(Timestamp, Option<Status>), String> {
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("not valid JSON: {e}"))?;
        let t = parse_json_field(&v, &self.json_field).map_err(|e| e.to_string())?;
        let Some(word) = field(&v, &self.status_field) else {
            return Ok((t, None));
        };
        let detail = v.get("detail").and_then(serde_json::Value::as_str);
        match Status::of_json(word, detail.map(|d| truncate(d, MAX_DETAIL))) {
            Some(status) => Ok((t, Some(status))),
            None => Err(format!(
                "{} is not a status word or boolean: {word}",
                self.status_field
            )),
        }
    }
}

/// Longest detail kept from a stored value.
const MAX_DETAIL: usize = 200;

/// `value[path]`, `path` dotted.
fn field<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(value, |cur, part| cur.get(part))
}

/// A reply value as text; an error for bytes that are not UTF-8.
pub(super) fn value_text(v: &Value) -> Result<Cow<'_, str>, &'static str> {
    match v {
        Value::String(s) => Ok(Cow::Borrowed(&**s)),
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| "value is not valid UTF-8"),
        Value::Integer(i) => Ok(Cow::Owned(i.to_string())),
        Value::Double(f) => Ok(Cow::Owned(f.to_string())),
        Value::Null => Err("no value"),
        _ => Err("value is not a string"),
    }
}

/// `[cursor, [items...]]`.
pub(super) fn scan_reply(v: Value) -> Option<(String, Vec<Value>)> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let items = match parts.pop()? {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        _ => return None,
    };
    let cursor = value_text(&parts.pop()?).ok()?.to_string();
    Some((cursor, items))
}

/// An array reply of exactly `len` values.
pub(super) fn array_of(v: Value, len: usize) -> Option<Vec<Value>> {
    let values = match v {
        Value::Array(values) => values,
        // Defensive: a one-element reply unwrapped by the client.
        other if len == 1 => vec![other],
        _ => return None,
    };
    (values.len() == len).then_some(values)
}

/// `TIME`: `[seconds, microseconds]`.
pub(super) fn parse_time(v: Value) -> Option<Timestamp> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [secs, micros] = parts.as_slice() else {
        return None;
    };
    let secs: i64 = value_text(secs).ok()?.parse().ok()?;
    let micros: i64 = value_text(micros).ok()?.parse().ok()?;
    Utc.timestamp_opt(secs, u32::try_from(micros.checked_mul(1000)?).ok()?)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies_and_time_are_parsed() {
        let v = Value::Array(vec![
            Value::String("17".into()),
            Value::Array(vec![Value::String("a".into())]),
        ]);
        let (c, items) = scan_reply(v).unwrap();
        assert_eq!(c, "17");
        assert_eq!(items.len(), 1);
        let t = parse_time(Value::Array(vec![
            Value::String("1795813200".into()),
            Value::String("250000".into()),
        ]))
        .unwrap();
        assert_eq!(t.timestamp_micros(), 1_795_813_200_250_000);
        assert!(parse_time(Value::Null).is_none());
    }

    #[test]
    fn non_utf8_values_are_reported_not_panicked_on() {
        let v = Value::Bytes(vec![0xff, 0xfe].into());
        assert_eq!(value_text(&v).unwrap_err(), "value is not valid UTF-8");
    }
}
