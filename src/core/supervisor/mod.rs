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

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use smallvec::SmallVec;

use super::model::{
    AgentId, CheckKey, ConfirmRequest, ErrorKind, Event, Observation, Reading, SourceFailure,
    SourceId, State, Status, Text, Timestamp,
};
use super::policy::{Labels, Policy};
use super::snapshot::{
    AgentView, CheckView, History, PersistView, Persisted, PersistedAgent, PersistedCheck,
    Snapshot, SourceStatus, SourceView, Transition, record_transition,
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

impl SourceKind {
    /// The error kinds a source of this kind can report: a pushed heartbeat
    /// is parsed by the endpoint (a bad one is refused there), so only its
    /// time can be wrong.
    pub fn error_kinds(self) -> &'static [ErrorKind] {
        match self {
            SourceKind::Polled => &ErrorKind::ALL,
            SourceKind::Push => &[ErrorKind::ClockSkew],
        }
    }
}

/// The core's maps by check: every reading looks its check up a few times,
/// and SipHash (std's default) was a sixth of the sidecar's CPU at 10,000
/// agents. foldhash (hashbrown's own default) is several times faster on
/// short strings and still seeded per map, so ids chosen to collide cannot
/// be precomputed.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How often checks are swept for `forget_after`.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

use super::time::{after, delta, plus};

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
    scan_gen: u32,
    /// Whether data has been read since start or since the last outage.
    evaluable: bool,
    /// While the check this source's agents depend on is not healthy: why
    /// its checks are held `unknown` (their deadlines frozen).
    held: Option<Text>,
    /// Whether the dependency was seen unhealthy during the current hold
    /// (not merely not probed yet): only then does its recovery give the
    /// agents time to beat again.
    held_after_failure: bool,
    /// When its data became trustworthy again (back from an outage, or its
    /// dependency healthy again) and what happened: a heartbeat older than
    /// that gets `stale_after` from then before it counts as stale.
    resumed: Option<(Timestamp, String)>,
    /// Its stale and missing checks, re-read every `recheck_every`, round
    /// robin from `recheck_from`.
    rechecking: BTreeSet<AgentId>,
    recheck_from: Option<AgentId>,
}

#[derive(Debug)]
struct Check {
    state: State,
    since: Timestamp,
    reason: Text,
    /// Effective last heartbeat, on the local clock.
    last_seen: Option<Timestamp>,
    /// The value as the source reported it (differs when clock skew was
    /// corrected).
    raw_last_seen: Option<Timestamp>,
    status: Option<Status>,
    /// The last point read found no value.
    absent: bool,
    /// A bad value or a source's verdict, rare: boxed, so that the
    /// healthy majority pays a pointer for it.
    overrides: Option<Box<Overrides>>,
    stale_after: TimeDelta,
    /// When a confirm was requested and not yet answered.
    confirming: Option<Timestamp>,
    /// The wake-up currently queued for this check.
    queued: Option<Timestamp>,
    /// The scan generation that last saw it (see `SourceEntry::scan_gen`;
    /// compared for equality only, so wrapping is harmless).
    seen_gen: u32,
    /// Last time any reading arrived (for `forget_after`).
    observed_at: Timestamp,
    /// Its position among all checks of the last snapshot (see
    /// [`Published`]); `u32::MAX` before it is in one.
    /// (A `Cell`: set while a snapshot is built from shared references.)
    beat: Cell<u32>,
}

impl Check {
    fn new(state: State, since: Timestamp, stale_after: TimeDelta, now: Timestamp) -> Self {
        Check {
            state,
            since,
            reason: shared!(""),
            last_seen: None,
            raw_last_seen: None,
            status: None,
            absent: false,
            overrides: None,
            stale_after,
            confirming: None,
            queued: None,
            seen_gen: u32::MAX,
            observed_at: now,
            beat: Cell::new(u32::MAX),
        }
    }

    /// The last value could not be parsed: why.
    fn invalid(&self) -> Option<&String> {
        self.overrides.as_ref().and_then(|o| o.invalid.as_ref())
    }

    /// A state the source decided, with its reason.
    fn held(&self) -> Option<&(State, Text)> {
        self.overrides.as_ref().and_then(|o| o.held.as_ref())
    }

    fn set_invalid(&mut self, invalid: Option<String>) {
        self.set_overrides(|o| o.invalid = invalid);
    }

    fn set_held(&mut self, held: Option<(State, Text)>) {
        self.set_overrides(|o| o.held = held);
    }

    /// Held `unknown` because its data cannot be read (see
    /// [`Reading::Unreadable`]).
    fn set_unreadable(&mut self, reason: Text) {
        self.set_overrides(|o| {
            o.held = Some((State::Unknown, reason));
            o.unreadable = true;
        });
    }

    /// When its data became readable again after it was unreadable alone
    /// (see [`Reading::Unreadable`]), while no heartbeat has come since.
    fn resumed(&self) -> Option<Timestamp> {
        self.overrides.as_ref().and_then(|o| o.resumed)
    }

    fn set_overrides(&mut self, change: impl FnOnce(&mut Overrides)) {
        let mut o = self.overrides.take().unwrap_or_default();
        change(&mut o);
        if o.invalid.is_some() || o.held.is_some() || o.resumed.is_some() {
            self.overrides = Some(o);
        }
    }

    /// A normal reading arrived at `now`: what the source decided and any
    /// bad value are over. A check whose data could not be read remembers
    /// when it could again, so that a heartbeat from before then gets
    /// `stale_after` from then (its writes may have failed as well);
    /// `last_seen`, once the reading is applied, ends that. A hold for a
    /// failing dependency gives nothing: the heartbeat the service reports
    /// is its agent's own.
    fn read_again(&mut self, now: Timestamp) {
        let unreadable = self
            .overrides
            .as_ref()
            .is_some_and(|o| o.unreadable && o.held.is_some());
        let resumed = if unreadable {
            Some(now)
        } else {
            self.resumed()
        };
        self.overrides = None;
        if let Some(at) = resumed
            && self.last_seen.is_none_or(|t| t < at)
        {
            self.set_overrides(|o| o.resumed = Some(at));
        }
    }
}

#[derive(Debug, Default)]
struct Overrides {
    /// The last value could not be parsed.
    invalid: Option<String>,
    /// A state the source decided (`missing`: absent where expected;
    /// `unknown`: a dependency is failing) with its reason. While set, the
    /// check's deadline is frozen; the next normal reading clears it.
    held: Option<(State, Text)>,
    /// `held` is for data that cannot be read (see [`Reading::Unreadable`]).
    unreadable: bool,
    /// When data that could not be read could be again (see
    /// [`Check::read_again`]).
    resumed: Option<Timestamp>,
}

#[derive(Debug)]
struct Agent {
    state: State,
    since: Timestamp,
    reason: Text,
    labels: Arc<Labels>,
    expected: bool,
    /// The sources of its checks, sorted: one or two in practice, so a
    /// small vector holding one in place (no allocation) rather than a tree
    /// (a node of ~200 bytes).
    sources: SmallVec<[SourceId; 1]>,
    /// Its view in the last snapshot, handed out again while it is still
    /// what the agent and its checks say (see [`Supervisor::snapshot`]). A
    /// cache, filled while taking a snapshot (which only reads the state).
    view: ViewCache,
    /// Its last transitions, shared with its views: nothing until it
    /// changes state after its first verdict (see `refresh_agent`).
    history: Option<History>,
    /// Its position in the last snapshot (see [`Published`]); `u32::MAX`
    /// before it is in one.
    slot: Cell<u32>,
}

/// An agent's last view: a `Cell`, taken and put back (no borrow flag to
/// pay for, as a `RefCell` would).
#[derive(Default)]
struct ViewCache(Cell<Option<Arc<AgentView>>>);

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewCache")
    }
}

impl Agent {
    fn add_source(&mut self, source: &SourceId) {
        if let Err(at) = self.sources.binary_search(source) {
            self.sources.insert(at, source.clone());
        }
    }

    fn remove_source(&mut self, source: &SourceId) {
        if let Ok(at) = self.sources.binary_search(source) {
            self.sources.remove(at);
        }
    }
}

/// The core. See the module doc.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    started_at: Timestamp,
    grace_over: bool,
    next_sweep: Timestamp,
    sources: Vec<(SourceId, SourceEntry)>,
    checks: FastMap<CheckKey, Check>,
    /// By id, in order: a snapshot lists them without sorting.
    agents: BTreeMap<AgentId, Agent>,
    wakeups: BinaryHeap<Reverse<(Timestamp, CheckKey)>>,
    events: Vec<Event>,
    confirms: BTreeMap<SourceId, Vec<AgentId>>,
    /// Set when an agent or check changed state since the last `take_dirty`.
    transitions: bool,
    /// Set when any data changed since the last `take_dirty`.
    data: bool,
    /// The sources that depend on each check (`depends_on`).
    dependents: FastMap<CheckKey, Vec<SourceId>>,
    /// When stale and missing checks are next re-read.
    next_recheck: Timestamp,
    /// The last snapshot, and what changed since.
    published: Published,
}

/// The last snapshot taken, and what changed since, so that the next one is
/// the last one patched (see [`Supervisor::snapshot`]): a snapshot costs
/// what changed, not the fleet.
#[derive(Debug)]
struct Published {
    last: Option<Snapshot>,
    /// An agent or a check came or went, or there is no last snapshot: the
    /// next snapshot is built whole (agents' positions moved), and nothing
    /// is recorded until then.
    reshaped: bool,
    /// Positions of the agents whose view may have changed (an agent's
    /// state, reason or history, or a check's state, reason or status).
    views: Vec<u32>,
    /// Checks whose heartbeat changed: position, new value.
    beats: Vec<(u32, Option<Timestamp>)>,
    /// Checks of each source (in config order) in the last snapshot.
    checks_per_source: Vec<usize>,
    /// Past this many changes recorded, the next snapshot is built whole
    /// instead (cheaper than patching every place, and the records stay
    /// bounded however long no snapshot is taken).
    most: usize,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            last: None,
            reshaped: true,
            views: Vec::new(),
            beats: Vec::new(),
            checks_per_source: Vec::new(),
            most: 0,
        }
    }
}

impl Published {
    /// The agent at `slot` may look different now.
    fn view_changed(&mut self, slot: u32) {
        if !self.reshaped && slot != u32::MAX {
            self.views.push(slot);
            if self.views.len() > self.most {
                self.reshape();
            }
        }
    }

    /// The check at position `beat` was last seen at `last_seen` now.
    fn beat_changed(&mut self, beat: u32, last_seen: Option<Timestamp>) {
        if !self.reshaped && beat != u32::MAX {
            self.beats.push((beat, last_seen));
            if self.beats.len() > self.most {
                self.reshape();
            }
        }
    }

    /// Agents or checks came or went.
    fn reshape(&mut self) {
        self.reshaped = true;
        self.views = Vec::new();
        self.beats = Vec::new();
    }
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
                        held: None,
                        held_after_failure: false,
                        resumed: None,
                        rechecking: BTreeSet::new(),
                        recheck_from: None,
                    },
                )
            })
            .collect();
        let mut sup = Self {
            started_at: now,
            grace_over: false,
            next_sweep: after(now, SWEEP_EVERY),
            sources,
            checks: FastMap::default(),
            agents: BTreeMap::new(),
            wakeups: BinaryHeap::new(),
            events: Vec::new(),
            confirms: BTreeMap::new(),
            transitions: false,
            data: false,
            dependents: FastMap::default(),
            next_recheck: now,
            published: Published::default(),
            policy,
        };
        for id in sup.policy.expected_agents() {
            sup.ensure_agent(&id, now);
        }
        let depends_on = sup.policy.depends_on.clone();
        for (source, dependency) in depends_on {
            sup.dependents
                .entry(dependency.clone())
                .or_default()
                .push(source.clone());
            // Nothing is known of the dependency yet.
            sup.hold(&source, &dependency.agent, State::Unknown, now);
        }
        sup
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
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
            Observation::PartlyDown {
                source,
                error,
                affected,
            } => {
                if !self.source_ok(&source, now) {
                    return;
                }
                for key in self.keys_of(&source) {
                    if affected.matches(&key.agent) {
                        let reading = Reading::Unreadable {
                            agent: key.agent.clone(),
                            reason: error.message.clone(),
                        };
                        self.apply(&source, reading, now, now, None);
                    }
                }
            }
        }
        self.check_grace(now);
    }

    /// Handle every wake-up due at `now`. Those due are taken first: one a
    /// wake-up queues again at or before `now` (a deadline saturated at the
    /// end of time, with the clock there too) waits for the next tick
    /// instead of looping here.
    pub fn tick(&mut self, now: Timestamp) {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse(entry)) = self.wakeups.pop() else {
                break;
            };
            due.push(entry);
        }
        for (at, key) in due {
            self.wake(key, at, now);
        }
        self.recheck(now);
        self.check_grace(now);
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = after(now, SWEEP_EVERY);
        }
    }

    /// When [`Supervisor::tick`] must next be called.
    pub fn next_wakeup(&self) -> Timestamp {
        let mut next = self.next_sweep;
        if let Some(Reverse((at, _))) = self.wakeups.peek() {
            next = next.min(*at);
        }
        if !self.grace_over {
            next = next.min(after(self.started_at, self.policy.startup_grace));
        }
        if self.sources.iter().any(|(_, s)| s.wants_recheck()) {
            next = next.min(self.next_recheck);
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

mod agents;
mod checks;
mod holds;
mod persist;
mod rechecks;
mod sources;
mod view;

#[cfg(test)]
mod tests;
