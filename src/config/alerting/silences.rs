//! One `silences:` entry.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::routing::matcher;
use crate::config::walk::{Obj, Problems};
use crate::core::alert::{Silence, SilenceOrigin};

/// One `silences:` entry, the `i`-th.
pub(super) fn silence(i: usize, item: &Value, path: &str, p: &mut Problems) -> Option<Silence> {
    let mut o = Obj::new(Some(item), path, p);
    let match_path = o.at("match");
    let matchers = if o.has("match") {
        matcher(o.get("match"), &match_path, p).filter(|m| {
            if m.is_empty() {
                p.add(&match_path, "a silence must match something");
            }
            !m.is_empty()
        })
    } else {
        let _ = o.get("match");
        p.add(&match_path, "required: a silence must match something");
        None
    };
    let starts_at = match o.string("starts_at", p) {
        None => Some(DateTime::<Utc>::UNIX_EPOCH),
        Some(s) => timestamp(&s, &o.at("starts_at"), p),
    };
    let ends_at = o
        .required_string("ends_at", p)
        .and_then(|s| timestamp(&s, &o.at("ends_at"), p));
    if let (Some(s), Some(e)) = (starts_at, ends_at)
        && e <= s
    {
        p.add(o.at("ends_at"), "must be after starts_at");
    }
    let comment = o.required_string("comment", p).filter(|c| {
        if c.trim().is_empty() {
            p.add(
                o.at("comment"),
                "must not be empty: say why alerts are muted",
            );
        }
        !c.trim().is_empty()
    });
    let created_by = o.string("created_by", p).unwrap_or_default();
    o.finish(p);
    Some(Silence {
        id: format!("config-{i}"),
        matchers: matchers?,
        starts_at: starts_at?,
        ends_at: ends_at?,
        comment: comment?,
        created_by,
        origin: SilenceOrigin::Config,
    })
}

/// An RFC 3339 time (`2026-11-28T10:00:00Z`).
fn timestamp(s: &str, path: &str, p: &mut Problems) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(s.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            p.add(
                path,
                format!("`{s}` is not an RFC 3339 time like 2026-11-28T10:00:00Z ({e})"),
            );
            None
        }
    }
}
