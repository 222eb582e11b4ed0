//! Rows as readings: the agent id, the heartbeat time in any of the types
//! PostgreSQL may hold it in, the optional status and details, and the
//! binary `numeric`, `uuid` and `json`/`jsonb` decoders they need.

use std::borrow::Cow;

use chrono::{DateTime, TimeDelta};
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::core::is_healthy_word;
use crate::core::timestamp::{from_epoch, parse_text};
use crate::core::{AgentId, Reading, Status, Timestamp};
use crate::sources::common::{to_local, truncate};

use super::copy::{KEPT, Values};

/// Longest status detail kept (a details column may hold a large JSON).
const MAX_DETAIL: usize = 512;

/// How each column of a statement's rows is read, worked out once from the
/// column types (the same for every row of a statement) rather than per row.
pub(super) struct Columns {
    /// How many columns the rows have.
    count: usize,
    id: IdType,
    time: TimeType,
    /// Absent when the rows have two columns.
    status: Option<StatusType>,
    /// Absent when the rows have fewer than four columns.
    detail: Option<DetailType>,
}

#[derive(Clone, Copy)]
enum IdType {
    Text,
    Int2,
    Int4,
    Int8,
    Uuid,
}

enum TimeType {
    Timestamp,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Json,
    Jsonb,
    /// Every row's time is unreadable, with this reason.
    Unsupported(String),
}

enum StatusType {
    Bool,
    Text,
    /// Every row's status is unreadable, with this reason.
    Unsupported(String),
}

#[derive(Clone, Copy)]
enum DetailType {
    Text,
    Json,
    Jsonb,
    Ignored,
}

fn is_text(ty: &str) -> bool {
    matches!(
        ty,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN"
    )
}

impl Columns {
    /// The plan for rows like `row` (whose values are not read: a scan
    /// learns its columns from a described row of NULLs). Errors (fewer than
    /// two columns, an id type that cannot name an agent) concern every row
    /// of the statement.
    pub(super) fn of(row: &PgRow) -> Result<Self, String> {
        let types: Vec<&str> = row.columns().iter().map(|c| c.type_info().name()).collect();
        let [id, time, rest @ ..] = types.as_slice() else {
            return Err(format!(
                "the query returns {} column(s); it must return the agent id, then the \
                 heartbeat time",
                types.len()
            ));
        };
        let id = match *id {
            t if is_text(t) => IdType::Text,
            "INT2" => IdType::Int2,
            "INT4" => IdType::Int4,
            "INT8" => IdType::Int8,
            "UUID" => IdType::Uuid,
            other => {
                return Err(format!(
                    "first column (agent id): a {other} cannot name an agent; cast it to text \
                     in the query (`::text`)"
                ));
            }
        };
        let time = match *time {
            // Decoded here rather than by sqlx's chrono support, whose
            // unchecked arithmetic panics on 'infinity' and far-off years.
            "TIMESTAMPTZ" | "TIMESTAMP" => TimeType::Timestamp,
            "INT2" => TimeType::Int2,
            "INT4" => TimeType::Int4,
            "INT8" => TimeType::Int8,
            "FLOAT4" => TimeType::Float4,
            "FLOAT8" => TimeType::Float8,
            "NUMERIC" => TimeType::Numeric,
            "JSON" => TimeType::Json,
            "JSONB" => TimeType::Jsonb,
            t if is_text(t) => TimeType::Text,
            other => TimeType::Unsupported(format!(
                "a {other} is not a heartbeat time; use timestamptz, an epoch number or text"
            )),
        };
        let status = rest.first().map(|ty| match *ty {
            "BOOL" => StatusType::Bool,
            t if is_text(t) => StatusType::Text,
            other => StatusType::Unsupported(format!(
                "a {other} status cannot be read; use text or boolean (cast with `::text`)"
            )),
        });
        let detail = rest.get(1).map(|ty| match *ty {
            "JSON" => DetailType::Json,
            "JSONB" => DetailType::Jsonb,
            t if is_text(t) => DetailType::Text,
            _ => DetailType::Ignored,
        });
        Ok(Self {
            count: types.len(),
            id,
            time,
            status,
            detail,
        })
    }

    /// How many columns the rows have.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The agent id of a row; `None` for NULL or empty. Text is borrowed
    /// from the row.
    pub(super) fn agent_id<'r>(&self, row: &Values<'r>) -> Result<Option<Cow<'r, str>>, String> {
        let Some(b) = row[0] else {
            return Ok(None);
        };
        let id: Cow<'r, str> = match self.id {
            IdType::Text => Cow::Borrowed(utf8(b)?),
            IdType::Int2 => Cow::Owned(i16::from_be_bytes(fixed(b, "INT2")?).to_string()),
            IdType::Int4 => Cow::Owned(i32::from_be_bytes(fixed(b, "INT4")?).to_string()),
            IdType::Int8 => Cow::Owned(i64::from_be_bytes(fixed(b, "INT8")?).to_string()),
            IdType::Uuid => Cow::Owned(uuid_text(b).ok_or("not a valid uuid")?),
        };
        Ok((!id.is_empty()).then_some(id))
    }

    /// A row as a reading of `agent`, its time moved onto the local clock.
    pub(super) fn reading(&self, row: &Values<'_>, agent: AgentId, offset: TimeDelta) -> Reading {
        let last_seen = match self.timestamp(row).and_then(|t| to_local(t, offset)) {
            Ok(t) => t,
            Err(reason) => return Reading::Invalid { agent, reason },
        };
        match self.status(row) {
            Ok(status) => Reading::Heartbeat {
                agent,
                last_seen,
                status,
            },
            Err(reason) => Reading::Invalid { agent, reason },
        }
    }

    /// The heartbeat time (column 1), on the database's clock.
    fn timestamp(&self, row: &Values<'_>) -> Result<Timestamp, String> {
        let Some(b) = row[1] else {
            return Err("no heartbeat time (NULL)".into());
        };
        let epoch = |f: f64| from_epoch(f).map_err(|e| e.to_string());
        let text = |s: &str| parse_text(s, None).map_err(|e| e.to_string());
        match &self.time {
            TimeType::Timestamp => pg_timestamp(b),
            TimeType::Int2 => epoch_int(i16::from_be_bytes(fixed(b, "INT2")?).into()),
            TimeType::Int4 => epoch_int(i32::from_be_bytes(fixed(b, "INT4")?).into()),
            TimeType::Int8 => epoch_int(i64::from_be_bytes(fixed(b, "INT8")?)),
            TimeType::Float4 => epoch(f32::from_be_bytes(fixed(b, "FLOAT4")?).into()),
            TimeType::Float8 => epoch(f64::from_be_bytes(fixed(b, "FLOAT8")?)),
            TimeType::Numeric => epoch(numeric_f64(b).ok_or("not a finite number")?),
            TimeType::Text => text(utf8(b)?),
            TimeType::Json => text(utf8(b)?),
            TimeType::Jsonb => text(jsonb_text(b)?),
            TimeType::Unsupported(reason) => Err(reason.clone()),
        }
    }

    /// The optional status (column 2) and details (column 3).
    fn status(&self, row: &Values<'_>) -> Result<Option<Status>, String> {
        let Some(ty) = &self.status else {
            return Ok(None);
        };
        let Some(b) = row[2] else {
            return Ok(None);
        };
        let (healthy, word) = match ty {
            StatusType::Bool => {
                let b = b.first().is_some_and(|&v| v != 0);
                (b, b.to_string())
            }
            StatusType::Text => {
                let s = utf8(b)?;
                (is_healthy_word(s), s.to_string())
            }
            StatusType::Unsupported(reason) => return Err(reason.clone()),
        };
        let detail = match self.detail {
            Some(ty) => row[3].and_then(|b| match ty {
                DetailType::Text | DetailType::Json => utf8(b).ok(),
                DetailType::Jsonb => jsonb_text(b).ok(),
                DetailType::Ignored => None,
            }),
            None => None,
        };
        let detail = match detail.filter(|d| !d.is_empty()) {
            Some(d) => format!("{word}: {}", truncate(d, MAX_DETAIL)),
            None => word,
        };
        Ok(Some(Status::reported(healthy, detail)))
    }
}

/// Every decoder on `row` (the fuzz target of `COPY` data): each id, time,
/// status and details type at least once. Must not panic.
pub(super) fn decode_every_way(row: &Values<'_>) {
    let ids = [
        IdType::Text,
        IdType::Int2,
        IdType::Int4,
        IdType::Int8,
        IdType::Uuid,
    ];
    let times = || {
        [
            TimeType::Timestamp,
            TimeType::Int2,
            TimeType::Int4,
            TimeType::Int8,
            TimeType::Float4,
            TimeType::Float8,
            TimeType::Numeric,
            TimeType::Text,
            TimeType::Json,
            TimeType::Jsonb,
        ]
    };
    let details = [
        DetailType::Text,
        DetailType::Json,
        DetailType::Jsonb,
        DetailType::Ignored,
    ];
    for (k, time) in times().into_iter().enumerate() {
        let columns = Columns {
            count: KEPT,
            id: ids[k % ids.len()],
            time,
            status: Some(if k % 2 == 0 {
                StatusType::Bool
            } else {
                StatusType::Text
            }),
            detail: Some(details[k % details.len()]),
        };
        let _ = columns.agent_id(row);
        let _ = columns.reading(row, AgentId::new("a"), TimeDelta::seconds(k as i64 - 5));
    }
}

/// The values of a query result's row (binary, as every extended-protocol
/// result is).
pub(super) fn values(row: &PgRow) -> Result<Values<'_>, String> {
    let mut values: Values<'_> = [None; KEPT];
    for (i, v) in values.iter_mut().enumerate().take(row.len()) {
        *v = raw(row, i)?;
    }
    Ok(values)
}

/// The raw binary value of column `i`; `None` for NULL.
fn raw(row: &PgRow, i: usize) -> Result<Option<&[u8]>, String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Ok(None);
    }
    if v.format() != PgValueFormat::Binary {
        return Err("unexpected text-format value".into());
    }
    v.as_bytes().map(Some).map_err(|e| e.to_string())
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "not valid UTF-8".into())
}

/// A fixed-size binary value of type `ty`.
fn fixed<const N: usize>(b: &[u8], ty: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("a {ty} of {} bytes, not {N}", b.len()))
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

/// A binary `timestamp`/`timestamptz`: microseconds since 2000-01-01 UTC
/// (a `timestamp` without time zone is taken as UTC). `infinity`,
/// `-infinity` and times chrono cannot hold are unreadable, not a panic.
fn pg_timestamp(b: &[u8]) -> Result<Timestamp, String> {
    let micros = i64::from_be_bytes(fixed(b, "timestamp")?);
    match micros {
        i64::MAX => return Err("timestamp is 'infinity'".into()),
        i64::MIN => return Err("timestamp is '-infinity'".into()),
        _ => {}
    }
    micros
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| format!("timestamp {micros} µs from 2000-01-01 is out of range"))
}

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in µs from the Unix epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Integer epochs, s/ms/µs by magnitude (exactly, not through a float).
fn epoch_int(n: i64) -> Result<Timestamp, String> {
    parse_text(&n.to_string(), None).map_err(|e| e.to_string())
}

/// A binary `jsonb` value: version byte 1, then the text.
fn jsonb_text(b: &[u8]) -> Result<&str, String> {
    match b.split_first() {
        Some((1, rest)) => utf8(rest),
        _ => Err("unsupported jsonb format".into()),
    }
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
    use chrono::{TimeZone, Utc};

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
