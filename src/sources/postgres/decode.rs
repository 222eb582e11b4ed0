//! Rows as readings: the agent id, the heartbeat time in any of the types
//! PostgreSQL may hold it in, the optional status and details, and the
//! binary `numeric`, `uuid` and `json`/`jsonb` decoders they need.

use std::borrow::Cow;

use chrono::{TimeDelta, TimeZone, Utc};
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::core::is_healthy_word;
use crate::core::timestamp::{from_epoch, parse_text};
use crate::core::{AgentId, Reading, Status, Timestamp};
use crate::sources::common::{to_local, truncate};

/// Longest status detail kept (a details column may hold a large JSON).
const MAX_DETAIL: usize = 512;

fn type_name(row: &PgRow, i: usize) -> &str {
    row.columns()
        .get(i)
        .map(|c| c.type_info().name())
        .unwrap_or_default()
}

fn is_null(row: &PgRow, i: usize) -> bool {
    row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true)
}

fn is_text(ty: &str) -> bool {
    matches!(
        ty,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN"
    )
}

/// The raw binary value of column `i`.
fn raw_bytes(row: &PgRow, i: usize) -> Result<&[u8], String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.format() != PgValueFormat::Binary {
        return Err("unexpected text-format value".into());
    }
    v.as_bytes().map_err(|e| e.to_string())
}

/// The agent id in column 0; `None` for NULL or empty. Text is borrowed
/// from the row.
pub(super) fn agent_id(row: &PgRow) -> Result<Option<Cow<'_, str>>, String> {
    if is_null(row, 0) {
        return Ok(None);
    }
    let ty = type_name(row, 0);
    let id: Cow<'_, str> = match ty {
        t if is_text(t) => Cow::Borrowed(
            row.try_get_unchecked::<&str, _>(0)
                .map_err(|e| e.to_string())?,
        ),
        "INT2" => Cow::Owned(
            row.try_get::<i16, _>(0)
                .map_err(|e| e.to_string())?
                .to_string(),
        ),
        "INT4" => Cow::Owned(
            row.try_get::<i32, _>(0)
                .map_err(|e| e.to_string())?
                .to_string(),
        ),
        "INT8" => Cow::Owned(
            row.try_get::<i64, _>(0)
                .map_err(|e| e.to_string())?
                .to_string(),
        ),
        "UUID" => Cow::Owned(uuid_text(raw_bytes(row, 0)?).ok_or("not a valid uuid")?),
        other => {
            return Err(format!(
                "a {other} cannot name an agent; cast it to text in the query (`::text`)"
            ));
        }
    };
    Ok((!id.is_empty()).then_some(id))
}

fn uuid_text(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// One row as a reading.
pub(super) fn reading(row: &PgRow, agent: AgentId, offset: TimeDelta) -> Reading {
    let last_seen = match timestamp(row, 1).and_then(|t| to_local(t, offset)) {
        Ok(t) => t,
        Err(reason) => return Reading::Invalid { agent, reason },
    };
    match status(row) {
        Ok(status) => Reading::Heartbeat {
            agent,
            last_seen,
            status,
        },
        Err(reason) => Reading::Invalid { agent, reason },
    }
}

/// The heartbeat time in column `i`, on the database's clock.
fn timestamp(row: &PgRow, i: usize) -> Result<Timestamp, String> {
    if is_null(row, i) {
        return Err("no heartbeat time (NULL)".into());
    }
    let e = |e: sqlx::Error| e.to_string();
    let ty = type_name(row, i);
    match ty {
        // Decoded here rather than by sqlx's chrono support, whose
        // unchecked arithmetic panics on 'infinity' and far-off years.
        "TIMESTAMPTZ" | "TIMESTAMP" => pg_timestamp(raw_bytes(row, i)?),
        "INT2" => epoch_int(i64::from(row.try_get::<i16, _>(i).map_err(e)?)),
        "INT4" => epoch_int(i64::from(row.try_get::<i32, _>(i).map_err(e)?)),
        "INT8" => epoch_int(row.try_get::<i64, _>(i).map_err(e)?),
        "FLOAT4" => {
            from_epoch(f64::from(row.try_get::<f32, _>(i).map_err(e)?)).map_err(|e| e.to_string())
        }
        "FLOAT8" => from_epoch(row.try_get::<f64, _>(i).map_err(e)?).map_err(|e| e.to_string()),
        "NUMERIC" => {
            let f = numeric_f64(raw_bytes(row, i)?).ok_or("not a finite number")?;
            from_epoch(f).map_err(|e| e.to_string())
        }
        t if is_text(t) => {
            let s = row.try_get_unchecked::<String, _>(i).map_err(e)?;
            parse_text(&s, None).map_err(|e| e.to_string())
        }
        "JSON" | "JSONB" => {
            let s = json_text(raw_bytes(row, i)?, ty)?;
            parse_text(&s, None).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "a {other} is not a heartbeat time; use timestamptz, an epoch number or text"
        )),
    }
}

/// A binary `timestamp`/`timestamptz`: microseconds since 2000-01-01 UTC
/// (a `timestamp` without time zone is taken as UTC). `infinity`,
/// `-infinity` and times chrono cannot hold are unreadable, not a panic.
fn pg_timestamp(b: &[u8]) -> Result<Timestamp, String> {
    let micros = i64::from_be_bytes(
        b.try_into()
            .map_err(|_| format!("a timestamp of {} bytes, not 8", b.len()))?,
    );
    match micros {
        i64::MAX => return Err("timestamp is 'infinity'".into()),
        i64::MIN => return Err("timestamp is '-infinity'".into()),
        _ => {}
    }
    let pg_epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    pg_epoch
        .and_then(|e| e.checked_add_signed(TimeDelta::microseconds(micros)))
        .ok_or_else(|| format!("timestamp {micros} µs from 2000-01-01 is out of range"))
}

/// Integer epochs, s/ms/µs by magnitude (exactly, not through a float).
fn epoch_int(n: i64) -> Result<Timestamp, String> {
    parse_text(&n.to_string(), None).map_err(|e| e.to_string())
}

/// The optional status (column 2) and details (column 3).
fn status(row: &PgRow) -> Result<Option<Status>, String> {
    let n = row.columns().len();
    if n < 3 || is_null(row, 2) {
        return Ok(None);
    }
    let ty = type_name(row, 2);
    let (healthy, word) = match ty {
        "BOOL" => {
            let b = row.try_get::<bool, _>(2).map_err(|e| e.to_string())?;
            (b, b.to_string())
        }
        t if is_text(t) => {
            let s = row
                .try_get_unchecked::<String, _>(2)
                .map_err(|e| e.to_string())?;
            (is_healthy_word(&s), s)
        }
        other => {
            return Err(format!(
                "a {other} status cannot be read; use text or boolean (cast with `::text`)"
            ));
        }
    };
    let detail = if n >= 4 && !is_null(row, 3) {
        let ty = type_name(row, 3);
        match ty {
            t if is_text(t) => row.try_get_unchecked::<String, _>(3).ok(),
            "JSON" | "JSONB" => raw_bytes(row, 3).ok().and_then(|b| json_text(b, ty).ok()),
            _ => None,
        }
    } else {
        None
    };
    let detail = match detail.filter(|d| !d.is_empty()) {
        Some(d) => format!("{word}: {}", truncate(&d, MAX_DETAIL)),
        None => word,
    };
    Ok(Some(Status::reported(healthy, detail)))
}

/// A binary `json` (text) or `jsonb` (version byte 1, then text) value.
fn json_text(b: &[u8], ty: &str) -> Result<String, String> {
    let b = if ty == "JSONB" {
        match b.split_first() {
            Some((1, rest)) => rest,
            _ => return Err("unsupported jsonb format".into()),
        }
    } else {
        b
    };
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| "json is not valid UTF-8".into())
}

/// A binary `numeric` as a float: `ndigits, weight, sign, dscale` then
/// base-10000 digits. `None` for NaN, infinities and malformed values.
fn numeric_f64(b: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(2 * i)?, *b.get(2 * i + 1)?]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return None,
    };
    let mut value = 0f64;
    for k in 0..ndigits {
        let digit = f64::from(word(4 + k)?);
        let power = weight - i32::try_from(k).ok()?;
        value += digit * 10_000f64.powi(power);
    }
    value
        .is_finite()
        .then_some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_timestamps_are_checked() {
        let at = |micros: i64| pg_timestamp(&micros.to_be_bytes());
        assert_eq!(
            at(0).unwrap(),
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            at(-1_000_000).unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap()
        );
        assert!(at(i64::MAX).unwrap_err().contains("'infinity'"));
        assert!(at(i64::MIN).unwrap_err().contains("'-infinity'"));
        assert!(at(i64::MAX - 1).unwrap_err().contains("out of range"));
        assert!(pg_timestamp(&[0; 4]).unwrap_err().contains("4 bytes"));
    }

    #[test]
    fn numeric_binary_values_are_decoded() {
        // 1795813200.25: digits 17 9581 3200 . 2500, weight 2.
        let mut b = Vec::new();
        for w in [4u16, 2, 0, 2, 17, 9581, 3200, 2500] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_f64(&b), Some(1_795_813_200.25));
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(numeric_f64(&nan), None);
        assert_eq!(numeric_f64(&[0, 1]), None);
    }

    #[test]
    fn uuids_are_formatted_like_postgres_does() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            uuid_text(&b).unwrap(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
