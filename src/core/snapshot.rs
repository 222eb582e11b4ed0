//! Read-only views of the core's state: for the API, `/metrics`, the `scan`
//! table, and the state store.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::model::{AgentId, SourceFailure, SourceId, State, Status, Timestamp};
use super::policy::Labels;

/// Everything the core knows, as of `taken_at`.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub taken_at: Timestamp,
    /// Sorted by id.
    pub agents: Vec<AgentView>,
    /// In config order.
    pub sources: Vec<SourceView>,
}

impl Snapshot {
    pub fn empty(taken_at: Timestamp) -> Self {
        Self {
            taken_at,
            agents: Vec::new(),
            sources: Vec::new(),
        }
    }

    pub fn agent(&self, id: &str) -> Option<&AgentView> {
        self.agents
            .binary_search_by(|a| a.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.agents[i])
    }

    /// Number of agents in each state, in [`State::ALL`] order.
    pub fn counts(&self) -> [(State, usize); 5] {
        let mut counts = State::ALL.map(|s| (s, 0));
        for a in &self.agents {
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == a.state) {
                c.1 += 1;
            }
        }
        counts
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AgentView {
    pub id: AgentId,
    pub state: State,
    pub since: Timestamp,
    /// Why the agent is in this state (the worst check's reason).
    pub reason: String,
    pub expected: bool,
    pub labels: Arc<Labels>,
    pub checks: Vec<CheckView>,
}

impl AgentView {
    /// An agent with one check, of `source`, seen at `now` under a 30 s
    /// threshold, labelled `team`: what the `/metrics` tests and fuzz
    /// target render.
    pub fn with_one_check(
        id: &str,
        state: State,
        source: &str,
        team: &str,
        now: Timestamp,
    ) -> AgentView {
        AgentView {
            id: AgentId::from(id),
            state,
            since: now,
            reason: String::new(),
            expected: false,
            labels: Arc::new(Labels::from([("team".to_string(), team.to_string())])),
            checks: vec![CheckView {
                source: source.into(),
                state,
                since: now,
                reason: String::new(),
                last_seen: Some(now),
                age_seconds: Some(0.0),
                threshold_seconds: 30.0,
                status: None,
                depends_on: None,
            }],
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckView {
    pub source: SourceId,
    pub state: State,
    pub since: Timestamp,
    pub reason: String,
    pub last_seen: Option<Timestamp>,
    /// `taken_at - last_seen`, in seconds.
    pub age_seconds: Option<f64>,
    pub threshold_seconds: f64,
    pub status: Option<Status>,
    /// The check this one depends on (its source's `depends_on`: the
    /// service's own check), by agent id: while that is not healthy, this
    /// one is held `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<AgentId>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceView {
    pub name: SourceId,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending` until the first read, then `up` or `down`.
    pub status: SourceStatus,
    pub since: Timestamp,
    pub last_success: Option<Timestamp>,
    pub last_scan_started: Option<Timestamp>,
    pub error: Option<SourceFailure>,
    pub checks: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    Pending,
    Up,
    Down,
}

/// What the state store keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub checks: Vec<PersistedCheck>,
    pub agents: Vec<PersistedAgent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedCheck {
    pub agent: AgentId,
    pub source: SourceId,
    pub state: State,
    pub since: Timestamp,
    #[serde(default)]
    pub reason: String,
    pub last_seen: Option<Timestamp>,
    pub raw_last_seen: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedAgent {
    pub agent: AgentId,
    pub state: State,
    pub since: Timestamp,
    #[serde(default)]
    pub reason: String,
}
