//! `type: push`: agents `POST /api/v1/heartbeats/{agent}`.

use secrecy::SecretString;

use crate::config::walk::{Obj, Problems};

/// `type: push`: agents `POST /api/v1/heartbeats/{agent}`.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Required bearer token, if set.
    pub token: Option<SecretString>,
    /// A push for a new agent id is refused (429) while the sidecar already
    /// knows this many agents, so a client cannot grow its memory without
    /// bound.
    pub max_agents: usize,
}

/// Fits the shipped Kubernetes memory limit (256 Mi) with room to spare:
/// 100,000 pushing agents measured at 101 MiB (docs/benchmarks.md).
pub const DEFAULT_MAX_AGENTS: u64 = 100_000;

pub(super) fn parse(o: &mut Obj<'_>, p: &mut Problems) -> PushConfig {
    let token = o
        .string("token", p)
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let max_agents = o
        .integer("max_agents", 1..=10_000_000, p)
        .unwrap_or(DEFAULT_MAX_AGENTS) as usize;
    PushConfig { token, max_agents }
}
