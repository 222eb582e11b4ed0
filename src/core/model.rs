//! The vocabulary shared by sources, the core and sinks.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Wall-clock instant. Every `last_seen` the core sees is already expressed on
/// the local clock (sources correct for their datastore's offset).
pub type Timestamp = DateTime<Utc>;

/// Text shared rather than copied: a check's or an agent's reason, a
/// status detail. Every snapshot and state file carries it; cloning it bumps
/// a count instead of allocating, so a fleet's reasons are held once.
pub type Text = Arc<str>;

/// A logical agent's id (`trading_coordinator`, `market_analyst:42`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(Arc<str>);

/// A source's configured name (`redis`, `push`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceId(Arc<str>);

macro_rules! string_id {
    ($t:ident) => {
        impl $t {
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
string_id!(AgentId);
string_id!(SourceId);

/// One signal about one agent from one source.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CheckKey {
    pub agent: AgentId,
    pub source: SourceId,
}

/// State of a check, and of an agent (the worst of its checks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Healthy,
    Stale,
    Failing,
    Missing,
    Unknown,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Healthy,
        State::Stale,
        State::Failing,
        State::Missing,
        State::Unknown,
    ];

    /// Severity rank: `failing > stale > missing > unknown > healthy`.
    pub fn severity(self) -> u8 {
        match self {
            State::Healthy => 0,
            State::Unknown => 1,
            State::Missing => 2,
            State::Stale => 3,
            State::Failing => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Stale => "stale",
            State::Failing => "failing",
            State::Missing => "missing",
            State::Unknown => "unknown",
        }
    }

    /// Whether this state is an alert condition.
    pub fn is_alerting(self) -> bool {
        matches!(self, State::Stale | State::Failing | State::Missing)
    }

    /// The worse of two states.
    pub fn worst(self, other: State) -> State {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a read failed. A closed set: it is a metric label.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ConnectionRefused,
    Timeout,
    Auth,
    Tls,
    Dns,
    Protocol,
    BadValue,
    ClockSkew,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::ConnectionRefused,
        ErrorKind::Timeout,
        ErrorKind::Auth,
        ErrorKind::Tls,
        ErrorKind::Dns,
        ErrorKind::Protocol,
        ErrorKind::BadValue,
        ErrorKind::ClockSkew,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Dns => "dns",
            ErrorKind::Protocol => "protocol",
            ErrorKind::BadValue => "bad_value",
            ErrorKind::ClockSkew => "clock_skew",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source-level failure as the core sees it: a kind and a human message
/// (which never carries a secret).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SourceFailure {
    pub kind: ErrorKind,
    pub message: String,
}

/// Status words that mean healthy (compared case-insensitively, surrounding
/// blanks ignored); any other status is failing. The one list for every
/// source that reads a status word: push, postgres, and http components
/// unless they name their own `healthy` values.
pub const HEALTHY_WORDS: [&str; 7] = ["ok", "healthy", "active", "up", "running", "true", "pass"];

/// Whether a reported status word means healthy (see [`HEALTHY_WORDS`]).
pub fn is_healthy_word(word: &str) -> bool {
    let word = word.trim();
    HEALTHY_WORDS.iter().any(|h| h.eq_ignore_ascii_case(word))
}

/// A check's status: what a push body, a row or a `/health` answer
/// reported, or what a probe found when no usable answer came.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Status {
    pub healthy: bool,
    /// For a reported status, what was reported (`error: db pool
    /// exhausted`, `HTTP 500`); otherwise the whole story in a few words
    /// (`not reachable: connection refused`, `no answer within 2s`).
    pub detail: Text,
    /// Whether something answered. Not part of the API (the check's reason
    /// says it); absent from older data, where it means reported.
    #[serde(default, skip_serializing)]
    pub origin: StatusOrigin,
}

/// Where a status comes from: something that answered, or a probe that had
/// no usable answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusOrigin {
    /// The service, a pushed body or a row said so.
    #[default]
    Reported,
    /// Nothing answered: connection refused, DNS, TLS, no answer in time.
    NoAnswer,
    /// An answer came that could not be used: too large, not JSON, the
    /// wrong content type, too slow, not a status value.
    BadAnswer,
}

/// Longest status word kept, in bytes.
pub const MAX_STATUS_WORD: usize = 64;
/// Longest status detail kept, in bytes.
pub const MAX_STATUS_DETAIL: usize = 512;

/// `s` cut to at most `max` bytes on a character boundary, `…` (3 bytes,
/// within the bound) marking the cut.
pub fn cut_marked(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Status {
    /// A reported status word (`"ok"`, `"error"`: see [`HEALTHY_WORDS`]) or
    /// boolean out of a JSON value, with an optional detail; `None` for
    /// any other JSON.
    /// Bounded: the word is cut to [`MAX_STATUS_WORD`] bytes and the
    /// detail to [`MAX_STATUS_DETAIL`], each marked `…` where cut, so
    /// outside text cannot grow every snapshot and state file.
    pub fn of_json(v: &serde_json::Value, detail: Option<&str>) -> Option<Self> {
        let (healthy, word) = match v {
            serde_json::Value::Bool(b) => (*b, b.to_string()),
            serde_json::Value::String(s) => (is_healthy_word(s), cut_marked(s, MAX_STATUS_WORD)),
            _ => return None,
        };
        Some(Status::reported(
            healthy,
            match detail {
                Some(d) if !d.is_empty() => format!("{word}: {}", cut_marked(d, MAX_STATUS_DETAIL)),
                _ => word,
            },
        ))
    }

    /// A status the service, a pushed body or a row reported.
    pub fn reported(healthy: bool, detail: impl Into<Text>) -> Self {
        Self {
            healthy,
            detail: detail.into(),
            origin: StatusOrigin::Reported,
        }
    }

    /// A failing status from a probe that had no usable answer; `detail`
    /// says it all (`not reachable: connection refused`).
    pub fn unanswered(origin: StatusOrigin, detail: impl Into<Text>) -> Self {
        Self {
            healthy: false,
            detail: detail.into(),
            origin,
        }
    }

    /// The reason of a check failing with this status: `reported unhealthy:
    /// HTTP 500` only when something reported it, the probe's own words
    /// (`not reachable: connection refused`) when nothing did.
    pub fn failing_reason(&self) -> Text {
        match (self.origin, self.detail.is_empty()) {
            (StatusOrigin::Reported, true) => shared!("reported unhealthy"),
            (StatusOrigin::Reported, false) => {
                format!("reported unhealthy: {}", self.detail).into()
            }
            (StatusOrigin::NoAnswer, true) => shared!("no answer"),
            (StatusOrigin::BadAnswer, true) => shared!("unusable answer"),
            (StatusOrigin::NoAnswer | StatusOrigin::BadAnswer, false) => self.detail.clone(),
        }
    }
}

/// What a source found about one agent.
#[derive(Clone, PartialEq, Debug)]
pub enum Reading {
    /// A heartbeat time, already on the local clock, plus an optional status
    /// reported alongside it.
    Heartbeat {
        agent: AgentId,
        last_seen: Timestamp,
        status: Option<Status>,
    },
    /// A status with no timestamp (a `/health` component).
    Status { agent: AgentId, status: Status },
    /// A point read found no value for this agent (key or row gone).
    Absent { agent: AgentId },
    /// A value was there but could not be understood.
    Invalid { agent: AgentId, reason: String },
    /// The source looked where this agent reports and found nothing, where
    /// something is expected (a `/health` component key absent from the
    /// body): the check is `missing` with this reason, even if it never had
    /// data. Unlike [`Reading::Absent`] (a point read that found no value,
    /// judged against the remembered `last_seen`), this is a verdict.
    Missing { agent: AgentId, reason: String },
    /// Nothing trustworthy can be said about this agent because something it
    /// depends on is failing (the service whose `/health` body carries its
    /// status): the check is `unknown` with this reason and its deadline is
    /// frozen until a normal reading arrives. Not a bad value: nothing is
    /// counted.
    Unknown { agent: AgentId, reason: String },
    /// This agent's data cannot be read now, though the rest of the source
    /// can (the Redis Cluster node that holds its key is down): as a source
    /// outage, for this agent alone. A check that is not stale, missing or
    /// failing becomes `unknown` with this reason, its deadline frozen; an
    /// alerting one keeps its state. When its data can be read again, a
    /// heartbeat older than that gets `stale_after` from then.
    Unreadable { agent: AgentId, reason: String },
}

impl Reading {
    pub fn agent(&self) -> &AgentId {
        match self {
            Reading::Heartbeat { agent, .. }
            | Reading::Status { agent, .. }
            | Reading::Absent { agent }
            | Reading::Invalid { agent, .. }
            | Reading::Missing { agent, .. }
            | Reading::Unknown { agent, .. }
            | Reading::Unreadable { agent, .. } => agent,
        }
    }
}

/// Messages from sources to the core.
#[derive(Clone, Debug)]
pub enum Observation {
    /// Part of a full scan. A scan is a sequence of batches closed by
    /// [`Observation::ScanComplete`]; `started_at` is the time (local clock)
    /// as of which the data was read.
    Batch {
        source: SourceId,
        started_at: Timestamp,
        readings: Vec<Reading>,
    },
    /// A full scan finished successfully.
    ScanComplete {
        source: SourceId,
        started_at: Timestamp,
    },
    /// Answer to a confirm request (a point read of a few checks).
    Confirmed {
        source: SourceId,
        read_at: Timestamp,
        readings: Vec<Reading>,
    },
    /// Pushed heartbeats: current as of their arrival.
    Pushed { source: SourceId, reading: Reading },
    /// The source could not be read.
    SourceError {
        source: SourceId,
        error: SourceFailure,
    },
    /// Part of the source could not be read (a Redis Cluster node is down):
    /// the agents `affected` selects are [`Reading::Unreadable`] with the
    /// error's message. Sent during a scan, before its `ScanComplete`.
    PartlyDown {
        source: SourceId,
        error: SourceFailure,
        affected: AgentFilter,
    },
}

/// Which agents of a source something applies to (those whose key hashes
/// to a slot of a node that is down).
#[derive(Clone)]
pub struct AgentFilter(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl AgentFilter {
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn matches(&self, agent: &AgentId) -> bool {
        (self.0)(agent.as_str())
    }
}

impl fmt::Debug for AgentFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentFilter(..)")
    }
}

/// A request from the core to a source: re-read these agents now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmRequest {
    pub source: SourceId,
    pub agents: Vec<AgentId>,
}

/// What the core tells sinks.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An agent's state changed (`from` is `None` for a new agent).
    AgentChanged {
        agent: AgentId,
        from: Option<State>,
        to: State,
        at: Timestamp,
        /// Shared with the agent's view: no copy per transition.
        reason: Text,
    },
    /// A check's state changed.
    CheckChanged {
        key: CheckKey,
        from: Option<State>,
        to: State,
        at: Timestamp,
        reason: Text,
    },
    /// A source went up or down.
    SourceChanged {
        source: SourceId,
        up: bool,
        at: Timestamp,
        error: Option<SourceFailure>,
    },
    /// An agent was dropped after `forget_after` without data.
    AgentForgotten { agent: AgentId, at: Timestamp },
    /// Counted runtime trouble the core noticed (bad values, clock skew).
    SourceProblem {
        source: SourceId,
        agent: AgentId,
        kind: ErrorKind,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marked_keeps_within_the_bound_on_a_character_boundary() {
        assert_eq!(cut_marked("short", 10), "short");
        let cut = cut_marked(&"é".repeat(100), 64);
        assert!(cut.len() <= 64 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut_marked("abcdef", 5), "ab…");
        let s =
            Status::of_json(&serde_json::json!("x".repeat(100)), Some(&"d".repeat(600))).unwrap();
        assert!(
            s.detail.len() <= MAX_STATUS_WORD + 2 + MAX_STATUS_DETAIL,
            "{}",
            s.detail.len()
        );
    }

    #[test]
    fn one_list_of_healthy_words_for_every_source() {
        for w in [
            "ok",
            "OK",
            " healthy ",
            "Active",
            "up",
            "running",
            "true",
            "pass",
        ] {
            assert!(is_healthy_word(w), "{w}");
        }
        for w in ["error", "down", "false", "", "degraded"] {
            assert!(!is_healthy_word(w), "{w}");
        }
    }

    #[test]
    fn reported_unhealthy_only_when_something_reported() {
        let r = Status::reported(false, "error: db pool exhausted");
        assert_eq!(
            &*r.failing_reason(),
            "reported unhealthy: error: db pool exhausted"
        );
        assert_eq!(
            &*Status::reported(false, "").failing_reason(),
            "reported unhealthy"
        );
        let refused =
            Status::unanswered(StatusOrigin::NoAnswer, "not reachable: connection refused");
        assert_eq!(
            &*refused.failing_reason(),
            "not reachable: connection refused"
        );
        let hung = Status::unanswered(StatusOrigin::NoAnswer, "no answer within 2s");
        assert_eq!(&*hung.failing_reason(), "no answer within 2s");
        let big = Status::unanswered(StatusOrigin::BadAnswer, "body too large");
        assert_eq!(&*big.failing_reason(), "body too large");
    }

    #[test]
    fn status_origin_is_read_when_absent_and_kept_out_of_the_api() {
        let s: Status = serde_json::from_str(r#"{"healthy": false, "detail": "x"}"#).unwrap();
        assert_eq!(s.origin, StatusOrigin::Reported);
        let v = serde_json::to_value(Status::unanswered(StatusOrigin::NoAnswer, "y")).unwrap();
        assert_eq!(v, serde_json::json!({"healthy": false, "detail": "y"}));
    }
}
