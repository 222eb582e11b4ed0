//! One incident, one page: checks held while what they depend on is not
//! healthy, and time given back after an outage or a dependency's recovery
//! (DESIGN §2, rules 8 and 9).
//!
//! - A source with `depends_on` (its agents live in a service) has its
//!   checks held `unknown`, deadlines frozen, while the service's check is
//!   anything but healthy: one alert fires, the service's.
//! - When the service is healthy again after failing, or a source comes
//!   back from an outage, a heartbeat older than that moment gets
//!   `stale_after` from it to be renewed: the agents restarted with the
//!   service, or their writes were blocked by the outage. One that stays
//!   silent is reported then, with its true age and what it was given. A
//!   service found healthy at its first probe gives no such time.
//! - Checks already stale, missing or failing keep their state through a
//!   hold or an outage: no new transition, no new notification.

use super::*;

/// `held: python-ai-services is failing`.
pub(super) fn held_reason(dependency: &AgentId, state: State) -> Text {
    format!("held: {dependency} is {state}").into()
}

/// `12:41:02Z`: a moment in a reason.
pub(super) fn clock_time(t: Timestamp) -> String {
    t.format("%H:%M:%SZ").to_string()
}

impl Supervisor {
    /// A check changed state: hold or release the sources depending on it.
    pub(super) fn dependency_changed(&mut self, key: &CheckKey, state: State, now: Timestamp) {
        let Some(sources) = self.dependents.get(key).cloned() else {
            return;
        };
        for source in sources {
            if state == State::Healthy {
                self.release(&source, &key.agent, now);
            } else {
                self.hold(&source, &key.agent, state, now);
            }
        }
    }

    /// Hold every check of `source` that is not already alerting, its
    /// dependency being in `state`.
    pub(super) fn hold(
        &mut self,
        source: &SourceId,
        dependency: &AgentId,
        state: State,
        now: Timestamp,
    ) {
        let Some(src) = self.source_mut(source) else {
            return;
        };
        let reason = held_reason(dependency, state);
        src.held = Some(reason.clone());
        // Not probed yet (start-up) is not a failure: the first healthy
        // probe then gives no extra time, and a stale agent is stale at once.
        src.held_after_failure |= state != State::Unknown;
        for key in self.keys_of(source) {
            let Some(c) = self.checks.get_mut(&key) else {
                continue;
            };
            c.confirming = None;
            if !c.state.is_alerting() {
                self.set_check_state(&key, State::Unknown, reason.clone(), now);
            }
        }
        self.data = true;
    }

    /// The dependency of `source` is healthy again: re-evaluate its checks,
    /// each given `stale_after` from now if the dependency had failed.
    fn release(&mut self, source: &SourceId, dependency: &AgentId, now: Timestamp) {
        let Some(src) = self.source_mut(source) else {
            return;
        };
        if src.held.take().is_none() {
            return;
        }
        if std::mem::take(&mut src.held_after_failure) {
            src.resumed = Some((now, format!("{dependency} recovered")));
        }
        for key in self.keys_of(source) {
            self.evaluate(&key, now, now);
        }
        self.data = true;
    }

    /// Why the checks of `source` are held, if they are.
    pub(super) fn held_by(&self, source: &SourceId) -> Option<&Text> {
        self.source(source).and_then(|s| s.held.as_ref())
    }

    /// Until when a heartbeat at `last_seen` may go unrenewed on `source`
    /// because of an outage or a hold that ended after it, and why; `None`
    /// when it is judged by its own deadline alone.
    pub(super) fn given_until(
        &self,
        key: &CheckKey,
        last_seen: Timestamp,
        stale_after: TimeDelta,
    ) -> Option<(Timestamp, String)> {
        let source = self
            .source(&key.source)
            .and_then(|s| s.resumed.as_ref())
            .map(|(at, why)| (*at, why.as_str()));
        let own = self
            .checks
            .get(key)
            .and_then(Check::resumed)
            .map(|at| (at, "its data could be read again"));
        let (at, why) = [source, own]
            .into_iter()
            .flatten()
            .filter(|(at, _)| last_seen < *at)
            .max_by_key(|(at, _)| *at)?;
        Some((
            plus(at, stale_after),
            format!("{why} at {}", clock_time(at)),
        ))
    }

    pub(super) fn keys_of(&self, source: &SourceId) -> Vec<CheckKey> {
        self.checks
            .keys()
            .filter(|k| &k.source == source)
            .cloned()
            .collect()
    }
}
