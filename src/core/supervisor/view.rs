//! The published view of everything the supervisor knows.

use super::*;

impl Supervisor {
    pub fn snapshot(&self, now: Timestamp) -> Snapshot {
        let mut by_agent: HashMap<&AgentId, Vec<CheckView>> = HashMap::new();
        for (k, c) in &self.checks {
            by_agent.entry(&k.agent).or_default().push(CheckView {
                source: k.source.clone(),
                state: c.state,
                since: c.since,
                reason: c.reason.clone(),
                last_seen: c.last_seen,
                age_seconds: c
                    .last_seen
                    .map(|t| (now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6),
                threshold_seconds: c.stale_after.num_milliseconds() as f64 / 1e3,
                status: c.status.clone(),
                depends_on: self
                    .policy
                    .depends_on
                    .get(&k.source)
                    .map(|d| d.agent.clone()),
            });
        }
        let mut agents: Vec<AgentView> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let mut checks = by_agent.remove(id).unwrap_or_default();
                checks.sort_by(|x, y| x.source.cmp(&y.source));
                AgentView {
                    id: id.clone(),
                    state: a.state,
                    since: a.since,
                    reason: a.reason.clone(),
                    expected: a.expected,
                    labels: a.labels.clone(),
                    checks,
                }
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let sources = self
            .sources
            .iter()
            .map(|(id, s)| SourceView {
                name: id.clone(),
                kind: s.type_name.clone(),
                status: s.status,
                since: s.since,
                last_success: s.last_success,
                last_scan_started: s.last_scan_started,
                error: s.error.clone(),
                checks: self.checks.keys().filter(|k| &k.source == id).count(),
            })
            .collect();
        Snapshot {
            taken_at: now,
            agents,
            sources,
        }
    }
}
