//! The `Supervisor`: sole owner of agent, check and source state.
//!
//! It is driven from outside with `now` passed in: [`Supervisor::observe`] for
//! what sources found, [`Supervisor::tick`] when [`Supervisor::next_wakeup`]
//! is reached. It answers with [`Event`]s and [`ConfirmRequest`]s, drained by
//! the caller. Nothing here does I/O or reads a clock.
//!
//! The rules it enforces (DESIGN §2):
//! - every heartbeat check has a deadline (`last_seen + stale_after`) and the
//!   caller is woken at the earliest one, not at the next scan;
//! - a deadline that passes after the data was read is confirmed with a
//!   point read of that one check before the check goes `stale`;
//! - a source that cannot be read makes its checks `unknown` and freezes
//!   them: no deadline fires for it until a fresh read;
//! - a check the source holds `unknown` because something it depends on is
//!   failing ([`Reading::Unknown`]: a component of a `/health` body whose
//!   service is down) is frozen the same way, alone; a check the source
//!   reports absent where expected ([`Reading::Missing`]) is `missing`;
//! - a `last_seen` too far in the future is counted and taken as "now" the
//!   first time it is seen, so a skewed writer still goes stale.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use super::model::{
    AgentId, CheckKey, ConfirmRequest, ErrorKind, Event, Observation, Reading, SourceFailure,
    SourceId, State, Status, Timestamp,
};
use super::policy::{Labels, Policy};
use super::snapshot::{
    AgentView, CheckView, Persisted, PersistedAgent, PersistedCheck, Snapshot, SourceStatus,
    SourceView,
};

/// How a source delivers data, which decides how a passed deadline is
/// handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Read periodically; a passed deadline is confirmed with a point read.
    Polled,
    /// Data arrives as it happens; a passed deadline is final.
    Push,
}

/// How often checks are swept for `forget_after`.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[derive(Debug)]
struct SourceEntry {
    kind: SourceKind,
    type_name: String,
    status: SourceStatus,
    since: Timestamp,
    error: Option<SourceFailure>,
    last_success: Option<Timestamp>,
    /// Start time of the last complete scan.
    last_scan_started: Option<Timestamp>,
    /// Generation of the scan in progress; checks seen in it carry it.
    scan_gen: u64,
    /// Whether data has been read since start or since the last outage.
    evaluable: bool,
}

#[derive(Debug)]
struct Check {
    state: State,
    since: Timestamp,
    reason: String,
    /// Effective last heartbeat, on the local clock.
    last_seen: Option<Timestamp>,
    /// The value as the source reported it (differs when clock skew was
    /// corrected).
    raw_last_seen: Option<Timestamp>,
    status: Option<Status>,
    /// The last point read found no value.
    absent: bool,
    /// The last value could not be parsed.
    invalid: Option<String>,
    /// A state the source decided (`missing`: absent where expected;
    /// `unknown`: a dependency is failing) with its reason. While set, the
    /// check's deadline is frozen; the next normal reading clears it.
    held: Option<(State, String)>,
    stale_after: TimeDelta,
    /// When a confirm was requested and not yet answered.
    confirming: Option<Timestamp>,
    /// The wake-up currently queued for this check.
    queued: Option<Timestamp>,
    seen_gen: u64,
    /// Last time any reading arrived (for `forget_after`).
    observed_at: Timestamp,
}

impl Check {
    fn new(state: State, since: Timestamp, stale_after: TimeDelta, now: Timestamp) -> Self {
        Check {
            state,
            since,
            reason: String::new(),
            last_seen: None,
            raw_last_seen: None,
            status: None,
            absent: false,
            invalid: None,
            held: None,
            stale_after,
            confirming: None,
            queued: None,
            seen_gen: u64::MAX,
            observed_at: now,
        }
    }
}

#[derive(Debug)]
struct Agent {
    state: State,
    since: Timestamp,
    reason: String,
    labels: Arc<Labels>,
    expected: bool,
    sources: BTreeSet<SourceId>,
}

/// The core. See the module doc.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    started_at: Timestamp,
    grace_over: bool,
    next_sweep: Timestamp,
    sources: Vec<(SourceId, SourceEntry)>,
    checks: HashMap<CheckKey, Check>,
    agents: HashMap<AgentId, Agent>,
    wakeups: BinaryHeap<Reverse<(Timestamp, CheckKey)>>,
    events: Vec<Event>,
    confirms: BTreeMap<SourceId, Vec<AgentId>>,
    /// Set when an agent or check changed state since the last `take_dirty`.
    transitions: bool,
    /// Set when any data changed since the last `take_dirty`.
    data: bool,
}

/// What changed since the caller last asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub transitions: bool,
    pub data: bool,
}

impl Supervisor {
    /// `sources` in config order: name, kind and type name (`redis`, `push`).
    pub fn new(
        policy: Policy,
        sources: impl IntoIterator<Item = (SourceId, SourceKind, String)>,
        now: Timestamp,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|(id, kind, type_name)| {
                let push = kind == SourceKind::Push;
                (
                    id,
                    SourceEntry {
                        kind,
                        type_name,
                        status: if push {
                            SourceStatus::Up
                        } else {
                            SourceStatus::Pending
                        },
                        since: now,
                        error: None,
                        last_success: if push { Some(now) } else { None },
                        last_scan_started: None,
                        scan_gen: 0,
                        evaluable: push,
                    },
                )
            })
            .collect();
        let mut sup = Self {
            started_at: now,
            grace_over: false,
            next_sweep: now + delta(SWEEP_EVERY),
            sources,
            checks: HashMap::new(),
            agents: HashMap::new(),
            wakeups: BinaryHeap::new(),
            events: Vec::new(),
            confirms: BTreeMap::new(),
            transitions: false,
            data: false,
            policy,
        };
        for id in sup.policy.expected_agents() {
            sup.ensure_agent(&id, now);
        }
        sup
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

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
                key,
                Check {
                    reason: pc.reason,
                    last_seen: pc.last_seen,
                    raw_last_seen: pc.raw_last_seen,
                    ..Check::new(pc.state, pc.since, stale_after, now)
                },
            );
            if let Some(agent) = self.agents.get_mut(&pc.agent) {
                agent.sources.insert(pc.source.clone());
            }
            // Push checks are evaluable at once: arm their deadlines now.
            // Polled checks wait for their source's first scan.
            let push = self
                .source(&pc.source)
                .is_some_and(|s| s.kind == SourceKind::Push);
            if push && let Some(t) = pc.last_seen {
                self.queue(&key_of(&pc.agent, &pc.source), t + stale_after);
            }
        }
        for pa in persisted.agents {
            if let Some(agent) = self.agents.get_mut(&pa.agent) {
                agent.state = pa.state;
                agent.since = pa.since;
                agent.reason = pa.reason;
            }
        }
        self.data = true;
    }

    /// What the state store should keep.
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
        checks.sort_by(|a, b| (&a.agent, &a.source).cmp(&(&b.agent, &b.source)));
        let mut agents: Vec<PersistedAgent> = self
            .agents
            .iter()
            .map(|(id, a)| PersistedAgent {
                agent: id.clone(),
                state: a.state,
                since: a.since,
                reason: a.reason.clone(),
            })
            .collect();
        agents.sort_by(|a, b| a.agent.cmp(&b.agent));
        Persisted { checks, agents }
    }

    /// Feed one message from a source.
    pub fn observe(&mut self, obs: Observation, now: Timestamp) {
        match obs {
            Observation::Batch {
                source,
                started_at,
                readings,
            } => {
                if !self.source_ok(&source, now) {
                    return;
                }
                let generation = self.source(&source).map(|s| s.scan_gen).unwrap_or(0);
                for r in readings {
                    self.apply(&source, r, started_at, now, Some(generation));
                }
            }
            Observation::ScanComplete { source, started_at } => {
                if !self.source_ok(&source, now) {
                    return;
                }
                self.finish_scan(&source, started_at, now);
            }
            Observation::Confirmed {
                source,
                read_at,
                readings,
            } => {
                if !self.source_ok(&source, now) {
                    return;
                }
                for r in readings {
                    self.apply(&source, r, read_at, now, None);
                }
            }
            Observation::Pushed { source, reading } => {
                if self.source(&source).is_none() {
                    return;
                }
                self.apply(&source, reading, now, now, None);
            }
            Observation::SourceError { source, error } => self.source_down(&source, error, now),
        }
        self.check_grace(now);
    }

    /// Handle every wake-up due at `now`.
    pub fn tick(&mut self, now: Timestamp) {
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.wakeups.pop() else {
                break;
            };
            self.wake(key, at, now);
        }
        self.check_grace(now);
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + delta(SWEEP_EVERY);
        }
    }

    /// When [`Supervisor::tick`] must next be called.
    pub fn next_wakeup(&self) -> Timestamp {
        let mut next = self.next_sweep;
        if let Some(Reverse((at, _))) = self.wakeups.peek() {
            next = next.min(*at);
        }
        if !self.grace_over {
            next = next.min(self.started_at + delta(self.policy.startup_grace));
        }
        next
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn take_confirms(&mut self) -> Vec<ConfirmRequest> {
        std::mem::take(&mut self.confirms)
            .into_iter()
            .map(|(source, agents)| ConfirmRequest { source, agents })
            .collect()
    }

    pub fn take_dirty(&mut self) -> Dirty {
        let d = Dirty {
            transitions: self.transitions,
            data: self.data,
        };
        self.transitions = false;
        self.data = false;
        d
    }

    /// Whether the startup grace can end before its time: every polled
    /// source has been read once and no push source waits for its agents'
    /// first heartbeats.
    pub fn all_sources_read(&self) -> bool {
        self.sources
            .iter()
            .all(|(_, s)| s.kind == SourceKind::Polled && s.status != SourceStatus::Pending)
    }

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

    // ---- sources -------------------------------------------------------

    fn source(&self, id: &SourceId) -> Option<&SourceEntry> {
        self.sources.iter().find(|(s, _)| s == id).map(|(_, e)| e)
    }

    fn source_mut(&mut self, id: &SourceId) -> Option<&mut SourceEntry> {
        self.sources
            .iter_mut()
            .find(|(s, _)| s == id)
            .map(|(_, e)| e)
    }

    /// Data arrived from `id`: mark it up. Returns false for an unknown source.
    fn source_ok(&mut self, id: &SourceId, now: Timestamp) -> bool {
        let Some(src) = self.source_mut(id) else {
            return false;
        };
        src.last_success = Some(now);
        if src.status != SourceStatus::Up {
            src.status = SourceStatus::Up;
            src.since = now;
            src.error = None;
            src.evaluable = true;
            self.events.push(Event::SourceChanged {
                source: id.clone(),
                up: true,
                at: now,
                error: None,
            });
            self.data = true;
            self.refresh_expected(now);
        }
        true
    }

    fn source_down(&mut self, id: &SourceId, error: SourceFailure, now: Timestamp) {
        let Some(src) = self.source_mut(id) else {
            return;
        };
        let was = src.status;
        let changed_error = src.error.as_ref().map(|e| e.kind) != Some(error.kind);
        src.evaluable = false;
        if was != SourceStatus::Down || changed_error {
            src.status = SourceStatus::Down;
            src.since = if was == SourceStatus::Down {
                src.since
            } else {
                now
            };
            src.error = Some(error.clone());
            self.events.push(Event::SourceChanged {
                source: id.clone(),
                up: false,
                at: now,
                error: Some(error.clone()),
            });
        } else {
            src.error = Some(error.clone());
        }
        let reason = format!("source {id} is down: {}", error.message);
        let keys: Vec<CheckKey> = self
            .checks
            .keys()
            .filter(|k| &k.source == id)
            .cloned()
            .collect();
        for key in keys {
            if let Some(c) = self.checks.get_mut(&key) {
                c.confirming = None;
            }
            self.set_check_state(&key, State::Unknown, reason.clone(), now);
        }
        self.refresh_expected(now);
        self.data = true;
    }

    fn finish_scan(&mut self, id: &SourceId, started_at: Timestamp, now: Timestamp) {
        let Some(src) = self.source_mut(id) else {
            return;
        };
        let generation = src.scan_gen;
        src.scan_gen += 1;
        src.last_scan_started = Some(started_at);
        // Checks this scan did not see: absence from one scan is no proof of
        // deletion, so a check whose deadline has passed (or which lost its
        // data to an outage) is confirmed with a point read.
        let unseen: Vec<CheckKey> = self
            .checks
            .iter()
            .filter(|(k, c)| &k.source == id && c.seen_gen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in unseen {
            let Some(c) = self.checks.get(&key) else {
                continue;
            };
            match c.last_seen {
                Some(t) if c.state != State::Unknown && now <= t + c.stale_after => {
                    let deadline = t + c.stale_after;
                    self.queue(&key, deadline);
                }
                _ if c.state.is_alerting() => {} // nothing new to learn
                _ => self.request_confirm(&key, now),
            }
        }
        self.check_grace(now);
    }

    // ---- readings ------------------------------------------------------

    fn apply(
        &mut self,
        source: &SourceId,
        reading: Reading,
        as_of: Timestamp,
        now: Timestamp,
        generation: Option<u64>,
    ) {
        let key = CheckKey {
            agent: reading.agent().clone(),
            source: source.clone(),
        };
        if !self.checks.contains_key(&key) {
            if matches!(reading, Reading::Absent { .. }) {
                return;
            }
            self.ensure_agent(&key.agent, now);
            let stale_after = delta(self.policy.stale_after(&key.agent, source));
            self.checks.insert(
                key.clone(),
                Check::new(State::Unknown, now, stale_after, now),
            );
            if let Some(agent) = self.agents.get_mut(&key.agent) {
                agent.sources.insert(source.clone());
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
        match reading {
            Reading::Heartbeat {
                last_seen, status, ..
            } => {
                c.observed_at = now;
                c.absent = false;
                c.invalid = None;
                c.held = None;
                c.status = status;
                let effective = if last_seen > now + skew {
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
            }
            Reading::Status { status, .. } => {
                c.observed_at = now;
                c.absent = false;
                c.invalid = None;
                c.held = None;
                c.status = Some(status);
            }
            Reading::Absent { .. } => {
                c.absent = true;
            }
            Reading::Invalid { reason, .. } => {
                c.observed_at = now;
                if c.invalid.as_deref() != Some(reason.as_str()) {
                    problem = Some((ErrorKind::BadValue, reason.clone()));
                }
                c.invalid = Some(reason);
                c.held = None;
            }
            Reading::Missing { reason, .. } => {
                c.observed_at = now;
                c.held = Some((State::Missing, reason));
            }
            Reading::Unknown { reason, .. } => {
                c.observed_at = now;
                c.held = Some((State::Unknown, reason));
            }
        }
        self.data = true;
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
    fn evaluate(&mut self, key: &CheckKey, as_of: Timestamp, now: Timestamp) {
        let push = self
            .source(&key.source)
            .is_some_and(|s| s.kind == SourceKind::Push);
        let Some(c) = self.checks.get(key) else {
            return;
        };
        if let Some((state, reason)) = &c.held {
            // Decided by the source; the deadline stays frozen (no wake-up
            // is queued) until a normal reading re-evaluates the check.
            let (state, reason) = (*state, reason.clone());
            self.set_check_state(key, state, reason, now);
            return;
        }
        if let Some(reason) = &c.invalid {
            let reason = format!("unreadable value: {reason}");
            self.set_check_state(key, State::Unknown, reason, now);
            return;
        }
        if let Some(status) = &c.status
            && !status.healthy
        {
            let reason = if status.detail.is_empty() {
                "reported unhealthy".to_string()
            } else {
                format!("reported unhealthy: {}", status.detail)
            };
            self.set_check_state(key, State::Failing, reason, now);
            return;
        }
        let Some(last_seen) = c.last_seen else {
            if c.status.is_some() {
                self.set_check_state(key, State::Healthy, "reported healthy".into(), now);
            }
            return;
        };
        let deadline = last_seen + c.stale_after;
        let threshold = c.stale_after;
        let absent = c.absent;
        if as_of > deadline || (push && now > deadline) {
            let age = now - last_seen;
            let (state, reason) = if absent {
                (
                    State::Missing,
                    format!(
                        "heartbeat gone; last seen {} ago (threshold {})",
                        fmt_delta(age),
                        fmt_delta(threshold)
                    ),
                )
            } else {
                (
                    State::Stale,
                    format!(
                        "no heartbeat for {} (threshold {})",
                        fmt_delta(age),
                        fmt_delta(threshold)
                    ),
                )
            };
            self.set_check_state(key, state, reason, now);
        } else if now > deadline {
            // The deadline passed after the data was read: confirm first.
            self.request_confirm(key, now);
        } else {
            self.set_check_state(
                key,
                State::Healthy,
                "heartbeat within threshold".into(),
                now,
            );
            self.queue(key, deadline);
        }
    }

    fn request_confirm(&mut self, key: &CheckKey, now: Timestamp) {
        let timeout = delta(self.policy.confirm_timeout);
        if let Some(c) = self.checks.get_mut(key) {
            c.confirming = Some(now);
        }
        self.confirms
            .entry(key.source.clone())
            .or_default()
            .push(key.agent.clone());
        self.queue(key, now + timeout);
    }

    fn queue(&mut self, key: &CheckKey, at: Timestamp) {
        // One microsecond past the deadline: stale means strictly older.
        let at = at + TimeDelta::microseconds(1);
        if let Some(c) = self.checks.get_mut(key) {
            if c.queued.is_some_and(|q| q <= at) {
                // An earlier wake-up is queued; it re-queues when it fires.
                return;
            }
            c.queued = Some(at);
            self.wakeups.push(Reverse((at, key.clone())));
        }
    }

    fn wake(&mut self, key: CheckKey, at: Timestamp, now: Timestamp) {
        let (evaluable, kind) = match self.source(&key.source) {
            Some(s) => (s.evaluable, s.kind),
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
        if !evaluable || c.held.is_some() {
            return; // frozen: the next read re-arms it
        }
        if let Some(asked) = c.confirming {
            if now >= asked + timeout {
                // The point read never came back: ask again.
                self.request_confirm(&key, now);
            } else {
                self.queue(&key, asked + timeout);
            }
            return;
        }
        let Some(last_seen) = c.last_seen else {
            return;
        };
        let deadline = last_seen + c.stale_after;
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

    fn set_check_state(&mut self, key: &CheckKey, state: State, reason: String, now: Timestamp) {
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
        self.events.push(Event::CheckChanged {
            key: key.clone(),
            from: Some(from),
            to: state,
            at: now,
            reason,
        });
        self.transitions = true;
        self.data = true;
        self.refresh_agent(&key.agent, now);
    }

    fn ensure_agent(&mut self, id: &AgentId, now: Timestamp) {
        if self.agents.contains_key(id) {
            return;
        }
        let resolved = self.policy.resolve(id);
        self.agents.insert(
            id.clone(),
            Agent {
                state: State::Unknown,
                since: now,
                reason: "not seen yet".into(),
                labels: resolved.labels,
                expected: resolved.expected,
                sources: BTreeSet::new(),
            },
        );
        self.data = true;
    }

    /// Recompute an agent's state as the worst of its checks.
    fn refresh_agent(&mut self, id: &AgentId, now: Timestamp) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let (state, reason) = if agent.sources.is_empty() {
            self.expected_state(agent)
        } else {
            let mut worst: Option<(State, &str)> = None;
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
                Some((s, r)) => (s, r.to_string()),
                None => self.expected_state(agent),
            }
        };
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.reason = reason.clone();
        if agent.state != state {
            let from = agent.state;
            agent.state = state;
            agent.since = now;
            self.events.push(Event::AgentChanged {
                agent: id.clone(),
                from: Some(from),
                to: state,
                at: now,
                reason,
            });
            self.transitions = true;
            self.data = true;
        }
    }

    /// State of an agent with no checks: `missing` once the grace period is
    /// over for an expected agent, unless a source is down (then nobody can
    /// tell).
    fn expected_state(&self, agent: &Agent) -> (State, String) {
        if !agent.expected {
            return (State::Unknown, "not seen yet".into());
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
            (State::Missing, "expected agent never seen".into())
        } else {
            (
                State::Unknown,
                format!(
                    "expected agent not seen; not all sources readable: {}",
                    down.join(", ")
                ),
            )
        }
    }

    fn refresh_expected(&mut self, now: Timestamp) {
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

    fn check_grace(&mut self, now: Timestamp) {
        if self.grace_over {
            return;
        }
        if now >= self.started_at + delta(self.policy.startup_grace) || self.all_sources_read() {
            self.grace_over = true;
            self.refresh_expected(now);
        }
    }

    /// Drop checks with no data for `forget_after` (their source being up),
    /// then agents left with no checks that are not expected.
    fn sweep(&mut self, now: Timestamp) {
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
                    && c.last_seen.unwrap_or(c.observed_at).max(c.observed_at) + forget < now
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            self.checks.remove(&key);
            let empty = match self.agents.get_mut(&key.agent) {
                Some(a) => {
                    a.sources.remove(&key.source);
                    a.sources.is_empty() && !a.expected
                }
                None => false,
            };
            if empty {
                self.agents.remove(&key.agent);
                self.events.push(Event::AgentForgotten {
                    agent: key.agent.clone(),
                    at: now,
                });
                self.transitions = true;
            } else {
                self.refresh_agent(&key.agent, now);
            }
            self.data = true;
        }
    }
}

fn key_of(agent: &AgentId, source: &SourceId) -> CheckKey {
    CheckKey {
        agent: agent.clone(),
        source: source.clone(),
    }
}

/// `4.2s`, `1m 30s`: compact, for reasons shown to people.
pub fn fmt_delta(d: TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1e3)
    } else {
        humantime::format_duration(Duration::from_secs((ms / 1000) as u64)).to_string()
    }
}

#[cfg(test)]
mod tests;
