//! Readings applied to checks, check states decided, deadlines queued and
//! confirmed by point reads.

use super::*;

impl Supervisor {
    pub(super) fn apply(
        &mut self,
        source: &SourceId,
        reading: Reading,
        as_of: Timestamp,
        now: Timestamp,
        generation: Option<u32>,
    ) {
        let key = CheckKey {
            agent: reading.agent().clone(),
            source: source.clone(),
        };
        if !self.checks.contains_key(&key) {
            if matches!(reading, Reading::Absent { .. } | Reading::Unreadable { .. }) {
                return;
            }
            self.ensure_agent(&key.agent, now);
            let stale_after = delta(self.policy.stale_after(&key.agent, source));
            self.checks.insert(
                key.clone(),
                Check::new(State::Unknown, now, stale_after, now),
            );
            self.published.reshape();
            if let Some(agent) = self.agents.get_mut(&key.agent) {
                agent.add_source(source);
            }
        }
        let skew = delta(self.policy.defaults.max_clock_skew);
        let mut problem = None;
        let Some(c) = self.checks.get_mut(&key) else {
            return;
        };
        if let Some(g) = generation {
            c.seen_gen = g;
        }
        c.confirming = None;
        let last_seen_was = c.last_seen;
        // Compared where a reading sets it, not cloned up front.
        let mut status_changed = false;
        match reading {
            Reading::Heartbeat {
                last_seen, status, ..
            } => {
                c.observed_at = now;
                c.absent = false;
                c.read_again(now);
                status_changed = c.status != status;
                c.status = status;
                let effective = if last_seen > plus(now, skew) {
                    if c.raw_last_seen == Some(last_seen) {
                        // Same future value again: keep the time we first saw it.
                        c.last_seen.unwrap_or(now)
                    } else {
                        problem = Some((
                            ErrorKind::ClockSkew,
                            format!(
                                "last_seen {} is {:.1}s in the future; taken as now",
                                last_seen.to_rfc3339(),
                                (last_seen - now).num_milliseconds() as f64 / 1e3
                            ),
                        ));
                        now
                    }
                } else {
                    last_seen
                };
                c.raw_last_seen = Some(last_seen);
                // Never move backwards: an older reading (a scan that started
                // before a point read) does not undo a newer one.
                c.last_seen = Some(c.last_seen.map_or(effective, |t| t.max(effective)));
                if c.resumed().is_some_and(|at| effective >= at) {
                    // A heartbeat since the data came back: judged by its
                    // own deadline again.
                    c.set_overrides(|o| o.resumed = None);
                }
            }
            Reading::Status { status, .. } => {
                c.observed_at = now;
                c.absent = false;
                c.read_again(now);
                let status = Some(status);
                status_changed = c.status != status;
                c.status = status;
            }
            Reading::Absent { .. } => {
                c.absent = true;
            }
            Reading::Invalid { reason, .. } => {
                c.observed_at = now;
                if c.invalid() != Some(&reason) {
                    problem = Some((ErrorKind::BadValue, reason.clone()));
                }
                c.set_invalid(Some(reason));
                c.set_held(None);
            }
            Reading::Missing { reason, .. } => {
                c.observed_at = now;
                c.set_held(Some((State::Missing, reason.into())));
            }
            Reading::Unknown { reason, .. } => {
                c.observed_at = now;
                c.set_held(Some((State::Unknown, reason.into())));
            }
            Reading::Unreadable { reason, .. } => {
                // Not data, but no reason to forget the agent either.
                c.observed_at = now;
                if c.state.is_alerting() {
                    // What was stale, missing or failing stays so: no new
                    // transition, no new notification.
                    return;
                }
                c.set_unreadable(reason.into());
            }
        }
        if c.last_seen != last_seen_was {
            self.published.beat_changed(c.beat.get(), c.last_seen);
        }
        self.data = true;
        if status_changed {
            // Shown in the agent's view (the state it may imply is
            // decided below).
            if let Some(a) = self.agents.get(&key.agent) {
                self.published.view_changed(a.slot.get());
            }
        }
        if let Some((kind, detail)) = problem {
            self.events.push(Event::SourceProblem {
                source: source.clone(),
                agent: key.agent.clone(),
                kind,
                detail,
            });
        }
        self.evaluate(&key, as_of, now);
    }

    /// Decide a check's state from its data, `as_of` being when the data was
    /// read and `now` the present.
    pub(super) fn evaluate(&mut self, key: &CheckKey, as_of: Timestamp, now: Timestamp) {
        let push = self
            .source(&key.source)
            .is_some_and(|s| s.kind == SourceKind::Push);
        let Some(c) = self.checks.get(key) else {
            return;
        };
        if let Some((state, reason)) = c.held() {
            // Decided by the source; the deadline stays frozen (no wake-up
            // is queued) until a normal reading re-evaluates the check.
            let (state, reason) = (*state, reason.clone());
            self.set_check_state(key, state, reason, now);
            return;
        }
        if let Some(reason) = self.held_by(&key.source) {
            // What it depends on is not healthy: nothing can be concluded
            // from this check's data, and an alerting state is kept.
            if !c.state.is_alerting() {
                let reason = reason.clone();
                self.set_check_state(key, State::Unknown, reason, now);
            }
            return;
        }
        if let Some(reason) = c.invalid() {
            let reason = format!("unreadable value: {reason}");
            self.set_check_state(key, State::Unknown, reason.into(), now);
            return;
        }
        if let Some(status) = &c.status
            && !status.healthy
        {
            let reason = status.failing_reason();
            self.set_check_state(key, State::Failing, reason, now);
            return;
        }
        let Some(last_seen) = c.last_seen else {
            if c.status.is_some() {
                self.set_check_state(key, State::Healthy, "reported healthy".into(), now);
            }
            return;
        };
        let deadline = plus(last_seen, c.stale_after);
        let threshold = c.stale_after;
        let absent = c.absent;
        let passed = |d: Timestamp| as_of > d || (push && now > d);
        // Time given back by an outage or a hold that ended after the last
        // heartbeat; an alerting check keeps its state instead.
        let given = if c.state.is_alerting() {
            None
        } else {
            self.given_until(key, last_seen, threshold)
        };
        if passed(deadline) {
            let age = now - last_seen;
            if let Some((until, why)) = &given {
                if !passed(*until) {
                    let reason = format!(
                        "waiting for a heartbeat after {why}; last one {} ago",
                        fmt_delta(age)
                    );
                    self.set_check_state(key, State::Unknown, reason.into(), now);
                    self.queue(key, *until);
                    return;
                }
            }
            let after = given
                .map(|(_, why)| format!(", none in the {} after {why}", fmt_delta(threshold)))
                .unwrap_or_default();
            let (state, reason) = if absent {
                (
                    State::Missing,
                    format!(
                        "heartbeat gone; last seen {} ago (threshold {}){after}",
                        fmt_delta(age),
                        fmt_delta(threshold)
                    ),
                )
            } else {
                (
                    State::Stale,
                    format!(
                        "no heartbeat for {} (threshold {}){after}",
                        fmt_delta(age),
                        fmt_delta(threshold)
                    ),
                )
            };
            self.set_check_state(key, state, reason.into(), now);
        } else if now > deadline {
            // The deadline passed after the data was read: confirm first.
            self.request_confirm(key, now);
        } else {
            self.set_check_state(
                key,
                State::Healthy,
                shared!("heartbeat within threshold"),
                now,
            );
            self.queue(key, deadline);
        }
    }

    pub(super) fn request_confirm(&mut self, key: &CheckKey, now: Timestamp) {
        let timeout = delta(self.policy.confirm_timeout);
        if let Some(c) = self.checks.get_mut(key) {
            c.confirming = Some(now);
        }
        self.confirms
            .entry(key.source.clone())
            .or_default()
            .push(key.agent.clone());
        self.queue(key, plus(now, timeout));
    }

    pub(super) fn queue(&mut self, key: &CheckKey, at: Timestamp) {
        // One microsecond past the deadline: stale means strictly older.
        let at = plus(at, TimeDelta::microseconds(1));
        if let Some(c) = self.checks.get_mut(key) {
            if c.queued.is_some_and(|q| q <= at) {
                // An earlier wake-up is queued; it re-queues when it fires.
                return;
            }
            c.queued = Some(at);
            self.wakeups.push(Reverse((at, key.clone())));
        }
    }

    pub(super) fn wake(&mut self, key: CheckKey, at: Timestamp, now: Timestamp) {
        let (evaluable, kind, held) = match self.source(&key.source) {
            Some(s) => (s.evaluable, s.kind, s.held.is_some()),
            None => return,
        };
        let timeout = delta(self.policy.confirm_timeout);
        let Some(c) = self.checks.get_mut(&key) else {
            return;
        };
        if c.queued != Some(at) {
            return; // superseded entry
        }
        c.queued = None;
        if !evaluable || c.held().is_some() || held {
            return; // frozen: the next read (or the release) re-arms it
        }
        if let Some(asked) = c.confirming {
            if now >= plus(asked, timeout) {
                // The point read never came back: ask again.
                self.request_confirm(&key, now);
            } else {
                self.queue(&key, plus(asked, timeout));
            }
            return;
        }
        let Some(last_seen) = c.last_seen else {
            return;
        };
        let deadline = plus(last_seen, c.stale_after);
        if now <= deadline {
            self.queue(&key, deadline);
            return;
        }
        if c.state.is_alerting() {
            return;
        }
        match kind {
            SourceKind::Push => self.evaluate(&key, now, now),
            SourceKind::Polled => self.request_confirm(&key, now),
        }
    }

    // ---- state ---------------------------------------------------------

    /// Record a change of state (an agent's or a check's, or an agent
    /// forgotten): an event for the caller, and dirty for the snapshot and
    /// the state store.
    pub(super) fn transition(&mut self, event: Event) {
        self.events.push(event);
        self.transitions = true;
        self.data = true;
    }

    pub(super) fn set_check_state(
        &mut self,
        key: &CheckKey,
        state: State,
        reason: Text,
        now: Timestamp,
    ) {
        let Some(c) = self.checks.get_mut(key) else {
            return;
        };
        if c.state == state {
            if c.reason != reason {
                c.reason = reason;
                // The agent shows the reason of its worst check.
                self.refresh_agent(&key.agent, now);
            }
            return;
        }
        let from = c.state;
        c.state = state;
        c.since = now;
        c.reason = reason.clone();
        self.transition(Event::CheckChanged {
            key: key.clone(),
            from: Some(from),
            to: state,
            at: now,
            reason,
        });
        self.refresh_agent(&key.agent, now);
        self.track_recheck(key, state, now);
        self.dependency_changed(key, state, now);
    }
}
