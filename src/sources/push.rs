//! The push source: `POST /api/v1/heartbeats/{agent}`.
//!
//! Body (optional, JSON): `{"timestamp": <epoch or ISO 8601>, "status":
//! "ok" | "error" | ..., "detail": "..."}`. Without a timestamp the time of
//! arrival is the heartbeat. A status other than a healthy word
//! ([`HEALTHY_WORDS`](crate::core::HEALTHY_WORDS): `ok`, `healthy`,
//! `active`, `up`, `running`, `true`, `pass`) makes the check `failing`.
//!
//! Overflow policy: the handler never waits for the core. When the core's
//! channel is full it answers 503 with `Retry-After: 1` and counts it, so a
//! slow core cannot pile up requests.
//!
//! Bounds: a heartbeat for an agent id the sidecar does not know yet is
//! refused with 429 while it knows `max_agents` agents (counted as
//! `pushed_heartbeats_total{result="too_many_agents"}`); known agents are
//! always accepted. The count is the latest snapshot's agents plus the new
//! ids admitted since, under one lock, so a burst cannot pass it. The body
//! is read only once the token is checked, and at most [`MAX_BODY`]; a
//! status word is kept to 64 bytes and a detail to 512 (cut, marked `…`).
//! Every refusal is JSON `{"error": ...}`: 400 (bad id or body), 401
//! (token), 404 (no push source), 413 (body), 429 (`max_agents`), 503
//! (busy or stopping, with `Retry-After`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::auth;
use crate::clock::Clock;
use crate::core::timestamp::parse_json_value;
use crate::core::{AgentId, Observation, Reading, Snapshot, SourceId, Status, Timestamp};
use crate::telemetry::metrics::{Metrics, Pushed};

/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest accepted agent id.
pub const MAX_AGENT_ID: usize = 256;

/// Shared by the push handler.
#[derive(Clone)]
pub struct PushState {
    pub source: SourceId,
    pub token: Option<SecretString>,
    pub tx: mpsc::Sender<Observation>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub max_agents: usize,
    /// A heartbeat further ahead than this is stored as of its arrival
    /// (`defaults.max_clock_skew`); the answer says so.
    pub max_clock_skew: Duration,
    pub admitted: Arc<Mutex<Admitted>>,
}

/// New agent ids admitted since the snapshot they are not yet in.
#[derive(Default)]
pub struct Admitted {
    ids: HashSet<AgentId>,
    /// The snapshot `ids` were last pruned against (weak: an old snapshot
    /// is not kept alive for it).
    seen: Weak<Snapshot>,
}

impl Admitted {
    /// Whether `agent` may be heard of: known (in `snap` or admitted), or
    /// new while fewer than `max` agents are known (it is admitted then).
    fn admit(&mut self, snap: &Arc<Snapshot>, agent: &str, max: usize) -> bool {
        if !Weak::ptr_eq(&self.seen, &Arc::downgrade(snap)) {
            self.ids.retain(|id| snap.agent(id.as_str()).is_none());
            self.seen = Arc::downgrade(snap);
        }
        if snap.agent(agent).is_some() || self.ids.contains(agent) {
            return true;
        }
        if snap.len() + self.ids.len() >= max {
            return false;
        }
        self.ids.insert(AgentId::new(agent));
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    timestamp: Option<serde_json::Value>,
    status: Option<serde_json::Value>,
    detail: Option<String>,
}

/// A push body: empty (a heartbeat now) or `{"timestamp", "status",
/// "detail"}`, as the heartbeat's time and status, or why it is refused.
pub fn read_body(body: &[u8], now: Timestamp) -> Result<(Timestamp, Option<Status>), String> {
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body {
            timestamp: None,
            status: None,
            detail: None,
        }
    } else {
        serde_json::from_slice(body).map_err(|e| {
            format!("body must be JSON like {{\"timestamp\": ..., \"status\": \"ok\"}}: {e}")
        })?
    };
    let last_seen = match &body.timestamp {
        None | Some(serde_json::Value::Null) => now,
        Some(v) => parse_json_value(v).map_err(|e| format!("timestamp: {e}"))?,
    };
    let status = match &body.status {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            Status::of_json(v, body.detail.as_deref())
                .ok_or("status must be a string or a boolean")?,
        ),
    };
    Ok((last_seen, status))
}

fn problem(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// Whether an agent id is acceptable from the outside.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_AGENT_ID && !id.chars().any(char::is_control)
}

/// `POST /api/v1/heartbeats/{agent}`.
pub async fn receive(
    State(state): State<Option<PushState>>,
    Path(agent): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    let Some(state) = state else {
        return problem(
            StatusCode::NOT_FOUND,
            "no push source is configured (add `type: push` to sources)",
        );
    };
    if !auth::allowed(state.token.as_ref(), headers) {
        state.metrics.heartbeat_pushed(Pushed::Unauthorized);
        return auth::unauthorized();
    }
    if !valid_agent_id(&agent) {
        state.metrics.heartbeat_pushed(Pushed::Invalid);
        return problem(
            StatusCode::BAD_REQUEST,
            format!("agent id must be 1 to {MAX_AGENT_ID} characters without control characters"),
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            state.metrics.heartbeat_pushed(Pushed::Invalid);
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            );
        }
    };
    {
        let snap = state.snapshot.borrow().clone();
        let admitted =
            crate::sources::common::lock(&state.admitted).admit(&snap, &agent, state.max_agents);
        if !admitted {
            state.metrics.heartbeat_pushed(Pushed::TooManyAgents);
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the sidecar already watches {} agents (max_agents of the push source); \
                     heartbeats of known agents are still accepted",
                    state.max_agents
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
            return r;
        }
    }
    let (last_seen, status) = match read_body(&body, state.clock.now()) {
        Ok(r) => r,
        Err(message) => {
            state.metrics.heartbeat_pushed(Pushed::Invalid);
            return problem(StatusCode::BAD_REQUEST, message);
        }
    };
    // As the core will store it: a time too far ahead is taken as now.
    let now = state.clock.now();
    let skew = crate::core::time::after(now, state.max_clock_skew);
    let (stored, note) = if last_seen > skew {
        let ahead = (last_seen - now).num_milliseconds() as f64 / 1e3;
        (
            now,
            Some(format!(
                "timestamp {} is {ahead:.1}s in the future, past max_clock_skew; stored as the time it arrived",
                last_seen.to_rfc3339()
            )),
        )
    } else {
        (last_seen, None)
    };
    let obs = Observation::Pushed {
        source: state.source.clone(),
        reading: Reading::Heartbeat {
            agent: AgentId::new(agent.as_str()),
            last_seen,
            status,
        },
    };
    match state.tx.try_send(obs) {
        Ok(()) => {
            state.metrics.heartbeat_pushed(Pushed::Accepted);
            let mut answer = json!({ "agent": agent, "last_seen": stored });
            if let Some(note) = note {
                answer["note"] = json!(note);
            }
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            state.metrics.heartbeat_pushed(Pushed::Overloaded);
            let mut r = problem(StatusCode::SERVICE_UNAVAILABLE, "busy; retry in a second");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_words_and_booleans_map_to_status() {
        assert!(Status::of_json(&json!("OK"), None).unwrap().healthy);
        assert!(Status::of_json(&json!(true), None).unwrap().healthy);
        let s = Status::of_json(&json!("error"), Some("db down")).unwrap();
        assert!(!s.healthy);
        assert_eq!(&*s.detail, "error: db down");
        assert!(Status::of_json(&json!(3), None).is_none());
    }

    #[test]
    fn agent_ids_are_bounded_and_printable() {
        assert!(valid_agent_id("market_analyst:42"));
        assert!(!valid_agent_id(""));
        assert!(!valid_agent_id("a\nb"));
        assert!(!valid_agent_id(&"x".repeat(300)));
    }
}
