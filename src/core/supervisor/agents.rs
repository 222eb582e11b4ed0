//! Agents: created with their rule, their state the worst of their
//! checks, expected agents, the start-up grace, and forgetting.

use super::*;

impl Supervisor {
    pub(super) fn ensure_agent(&mut self, id: &AgentId, now: Timestamp) {
        if self.agents.contains_key(id) {
            return;
        }
        let resolved = self.policy.resolve(id);
        self.agents.insert(
            id.clone(),
            Agent {
                state: State::Unknown,
                since: now,
                reason: shared!("not seen yet"),
                labels: resolved.labels,
                expected: resolved.expected,
                sources: SmallVec::new(),
                view: ViewCache::default(),
                history: None,
                slot: Cell::new(u32::MAX),
            },
        );
        self.published.reshape();
        self.data = true;
    }

    /// Recompute an agent's state as the worst of its checks.
    pub(super) fn refresh_agent(&mut self, id: &AgentId, now: Timestamp) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let (state, reason) = if agent.sources.is_empty() {
            self.expected_state(agent)
        } else {
            let mut worst: Option<(State, &Text)> = None;
            for src in &agent.sources {
                let key = CheckKey {
                    agent: id.clone(),
                    source: src.clone(),
                };
                if let Some(c) = self.checks.get(&key) {
                    let better = worst.is_none_or(|(s, _)| c.state.severity() > s.severity());
                    if better {
                        worst = Some((c.state, &c.reason));
                    }
                }
            }
            match worst {
                Some((s, r)) => (s, r.clone()),
                None => self.expected_state(agent),
            }
        };
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        self.published.view_changed(agent.slot.get());
        agent.reason = reason.clone();
        if agent.state != state {
            let from = agent.state;
            // History starts at the first change out of a verdict: an
            // agent's first one (out of `unknown`, "not seen yet") is not
            // a transition worth keeping, and keeping it would allocate for
            // every agent of a fleet at start.
            if from != State::Unknown || agent.history.is_some() {
                agent.history = Some(record_transition(
                    agent.history.as_deref().map(Vec::as_slice),
                    Transition {
                        at: agent.since,
                        state: from,
                    },
                    Transition { at: now, state },
                ));
            }
            agent.state = state;
            agent.since = now;
            self.transition(Event::AgentChanged {
                agent: id.clone(),
                from: Some(from),
                to: state,
                at: now,
                reason,
            });
        }
    }

    /// State of an agent with no checks: `missing` once the grace period is
    /// over for an expected agent, unless a source is down (then nobody can
    /// tell).
    pub(super) fn expected_state(&self, agent: &Agent) -> (State, Text) {
        if !agent.expected {
            return (State::Unknown, shared!("not seen yet"));
        }
        if !self.grace_over {
            // Keep what we had (a restored state, or "not seen yet").
            return (agent.state, agent.reason.clone());
        }
        let down: Vec<&str> = self
            .sources
            .iter()
            .filter(|(_, s)| s.status != SourceStatus::Up)
            .map(|(id, _)| id.as_str())
            .collect();
        if down.is_empty() {
            (State::Missing, shared!("expected agent never seen"))
        } else {
            (
                State::Unknown,
                format!(
                    "expected agent not seen; not all sources readable: {}",
                    down.join(", ")
                )
                .into(),
            )
        }
    }

    pub(super) fn refresh_expected(&mut self, now: Timestamp) {
        let ids: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.expected && a.sources.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.refresh_agent(&id, now);
        }
    }

    pub(super) fn check_grace(&mut self, now: Timestamp) {
        if self.grace_over {
            return;
        }
        if now >= after(self.started_at, self.policy.startup_grace) || self.all_sources_read() {
            self.grace_over = true;
            self.refresh_expected(now);
        }
    }

    /// Drop checks with no data for `forget_after` (their source being up),
    /// then agents left with no checks that are not expected.
    pub(super) fn sweep(&mut self, now: Timestamp) {
        let forget = delta(self.policy.defaults.forget_after);
        let up: BTreeSet<SourceId> = self
            .sources
            .iter()
            .filter(|(_, s)| s.evaluable)
            .map(|(id, _)| id.clone())
            .collect();
        let old: Vec<CheckKey> = self
            .checks
            .iter()
            .filter(|(k, c)| {
                up.contains(&k.source)
                    && plus(
                        c.last_seen.unwrap_or(c.observed_at).max(c.observed_at),
                        forget,
                    ) < now
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            self.checks.remove(&key);
            self.published.reshape();
            if let Some(src) = self.source_mut(&key.source) {
                src.rechecking.remove(&key.agent);
            }
            let empty = match self.agents.get_mut(&key.agent) {
                Some(a) => {
                    a.remove_source(&key.source);
                    a.sources.is_empty() && !a.expected
                }
                None => false,
            };
            if empty {
                self.agents.remove(&key.agent);
                self.transition(Event::AgentForgotten {
                    agent: key.agent.clone(),
                    at: now,
                });
            } else {
                self.refresh_agent(&key.agent, now);
            }
            self.data = true;
        }
    }
}
