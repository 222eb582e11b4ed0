//! Restoring what the state store kept, and what it should keep.

use super::*;
use crate::core::snapshot::HISTORY_MAX;

impl Supervisor {
    /// Put back what the state store kept. Call before any observation.
    /// Restored checks keep their state and `since` until their source has
    /// been read again, so a restart is not a wave of fresh transitions.
    pub fn restore(&mut self, persisted: Persisted, now: Timestamp) {
        for pc in persisted.checks {
            if self.source(&pc.source).is_none() {
                continue;
            }
            let key = CheckKey {
                agent: pc.agent.clone(),
                source: pc.source.clone(),
            };
            self.ensure_agent(&pc.agent, now);
            let stale_after = delta(self.policy.stale_after(&pc.agent, &pc.source));
            self.checks.insert(
                key.clone(),
                Check {
                    reason: pc.reason,
                    last_seen: pc.last_seen,
                    raw_last_seen: pc.raw_last_seen,
                    ..Check::new(pc.state, pc.since, stale_after, now)
                },
            );
            self.published.reshape();
            if let Some(agent) = self.agents.get_mut(&pc.agent) {
                agent.add_source(&pc.source);
            }
            self.track_recheck(&key_of(&pc.agent, &pc.source), pc.state, now);
            // Push checks are evaluable at once: arm their deadlines now.
            // Polled checks wait for their source's first scan.
            let push = self
                .source(&pc.source)
                .is_some_and(|s| s.kind == SourceKind::Push);
            if push && let Some(t) = pc.last_seen {
                self.queue(&key_of(&pc.agent, &pc.source), plus(t, stale_after));
            }
        }
        for pa in persisted.agents {
            if let Some(agent) = self.agents.get_mut(&pa.agent) {
                agent.state = pa.state;
                agent.since = pa.since;
                agent.reason = pa.reason;
                // Bounded here too: the file may have been edited.
                let keep = pa.history.len().min(HISTORY_MAX);
                agent.history =
                    (keep > 0).then(|| Arc::new(pa.history[pa.history.len() - keep..].to_vec()));
                self.published.view_changed(agent.slot.get());
            }
        }
        self.data = true;
    }

    /// What the state store should keep, as a view over `snap`, which must
    /// be this supervisor's latest snapshot (taken since the last change):
    /// the fleet is not copied again for the state file.
    pub fn persist_view(&self, snap: Arc<Snapshot>) -> PersistView {
        // Each check knows its position in the latest snapshot: the few
        // whose reported value differs are found without a lookup per agent.
        let mut raw_last_seen: Vec<(u32, Option<Timestamp>)> = self
            .checks
            .values()
            .filter(|c| c.raw_last_seen != c.last_seen && c.beat.get() != u32::MAX)
            .map(|c| (c.beat.get(), c.raw_last_seen))
            .collect();
        raw_last_seen.sort_unstable_by_key(|(beat, _)| *beat);
        PersistView {
            snap,
            raw_last_seen,
        }
    }

    /// What the state store should keep, as an owned copy (what a load
    /// gives back; see [`Supervisor::persist_view`] for saving).
    pub fn persist(&self) -> Persisted {
        let mut checks: Vec<PersistedCheck> = self
            .checks
            .iter()
            .map(|(k, c)| PersistedCheck {
                agent: k.agent.clone(),
                source: k.source.clone(),
                state: c.state,
                since: c.since,
                reason: c.reason.clone(),
                last_seen: c.last_seen,
                raw_last_seen: c.raw_last_seen,
            })
            .collect();
        checks.sort_unstable_by(|a, b| (&a.agent, &a.source).cmp(&(&b.agent, &b.source)));
        let mut agents: Vec<PersistedAgent> = self
            .agents
            .iter()
            .map(|(id, a)| PersistedAgent {
                agent: id.clone(),
                state: a.state,
                since: a.since,
                reason: a.reason.clone(),
                history: a.history.as_deref().cloned().unwrap_or_default(),
            })
            .collect();
        agents.sort_unstable_by(|a, b| a.agent.cmp(&b.agent));
        Persisted { checks, agents }
    }
}
