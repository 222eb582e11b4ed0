//! The alert book: which alerts fire, which are silenced, how they are
//! grouped per receiver, and when each group is notified next. Pure: every
//! method takes `now`; the engine (`alerts::engine`) persists the book and
//! delivers what [`Book::flush`] returns.
//!
//! Semantics, as Alertmanager's (so on-call engineers know them already):
//! - an alert is routed (first matching route, or further ones with
//!   `continue`) to receivers; alerts of one route and receiver with the same
//!   `group_by` values form a group;
//! - a new group is notified `group_wait` after its first alert, so alerts
//!   that start together go out as one message;
//! - later changes (an alert added or resolved) wait until `group_interval`
//!   after the group's last message;
//! - a group still firing is notified again every `repeat_interval`;
//! - resolved alerts are sent (when the receiver wants them) only to
//!   receivers that were told they fired; a silenced alert leaves its groups
//!   quietly (silencing is not resolving).
//!
//! Rule 1 of DESIGN §2 lives in [`Book::reconcile`]: an agent whose state is
//! `unknown` (its source cannot be read) keeps its alerts exactly as they
//! were; a source that is pending again after a restart keeps its
//! `source_down` alert until it is read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::alert::{Alert, AlertKind, AlertStatus, Notification, Silence};
use crate::core::remedy::RemediationNote;
use crate::core::snapshot::{AgentView, Entry, SourceStatus, SourceView};
use crate::core::time::after;
use crate::core::{AgentId, Policy, Snapshot, State, Timestamp};

/// An alert that fires, with what the book decided about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Active {
    pub alert: Arc<Alert>,
    /// Ids of the silences that mute it now.
    #[serde(default)]
    pub silenced_by: Vec<String>,
    /// Keys of the groups it is in (empty while silenced).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One group: a receiver's view of some alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub receiver: String,
    pub route: usize,
    pub labels: BTreeMap<String, String>,
    /// Fingerprints of the group's firing, unsilenced alerts.
    pub firing: BTreeSet<String>,
    /// Fingerprints of the alerts the receiver was last told fire.
    pub notified: BTreeSet<String>,
    /// Alerts told as firing that have resolved since, to be told.
    pub resolved: BTreeMap<String, Alert>,
    /// When the group was last notified.
    pub last_flush: Option<Timestamp>,
    /// When it is notified next, if anything is due.
    pub next_flush: Option<Timestamp>,
}

impl Group {
    fn changed(&self) -> bool {
        !self.resolved.is_empty() || self.firing.iter().any(|f| !self.notified.contains(f))
    }
}

/// The whole alert state; what the state store keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub active: BTreeMap<String, Active>,
    pub groups: BTreeMap<String, Group>,
    /// Silences made through the API (config silences come from config on
    /// every start and are not stored).
    pub silences: Vec<Silence>,
    /// Sequence of the next notification: ids are `<group hash>-<seq>`,
    /// never reused (at least the time in ms, so a book lost with its
    /// state still numbers on from where it was), and the same on every
    /// replica that goes on from a shared book.
    #[serde(default)]
    pub next_notification: u64,
    #[serde(skip)]
    config_silences: Vec<Silence>,
    /// Alerts silenced at the last full pass over silences (`usize::MAX`:
    /// unknown, do a full pass).
    #[serde(skip, default = "unknown_count")]
    muted: usize,
    /// The earliest end of a `for:` hold of an alert not fired yet.
    #[serde(skip)]
    pending_until: Option<Timestamp>,
}

fn unknown_count() -> usize {
    usize::MAX
}

impl Default for Book {
    fn default() -> Self {
        Self {
            active: BTreeMap::new(),
            groups: BTreeMap::new(),
            silences: Vec::new(),
            next_notification: 0,
            config_silences: Vec::new(),
            muted: usize::MAX,
            pending_until: None,
        }
    }
}

/// How long an alert's condition must last before it fires: the `for:` of
/// an agent's rule (or a service check's default), a source's `down_after`;
/// and what remediation adds: a page that waits for it, its note on the
/// alert, the action an agent recovered after.
pub trait Holds {
    fn agent(&self, agent: &str) -> Duration;
    fn source(&self, source: &str) -> Duration;

    /// When an agent's alert may fire: its `for:` after it entered its
    /// state, or later while remediation runs.
    fn agent_due(&self, agent: &AgentView) -> Timestamp {
        after(agent.since, self.agent(agent.id.as_str()))
    }

    /// What remediation says about an agent's incident since `since`.
    fn remediation(&self, _agent: &AgentId, _since: Timestamp) -> Option<RemediationNote> {
        None
    }

    /// The action an agent was called with at or after `since`.
    fn acted_since(&self, _agent: &AgentId, _since: Timestamp) -> Option<String> {
        None
    }
}

impl Holds for Policy {
    fn agent(&self, agent: &str) -> Duration {
        self.alert_for(agent)
    }

    fn source(&self, source: &str) -> Duration {
        self.down_after(source)
    }
}

/// No holds: every alert fires as soon as its condition is seen.
pub struct NoHolds;

impl Holds for NoHolds {
    fn agent(&self, _: &str) -> Duration {
        Duration::ZERO
    }

    fn source(&self, _: &str) -> Duration {
        Duration::ZERO
    }
}

/// What a reconciliation changed, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub fired: usize,
    pub resolved: usize,
}

impl Book {
    /// Bring the book in line with a snapshot. `gate_open` is false during
    /// start-up (sources not all read and `startup_grace` not over): then no
    /// agent alert fires or resolves.
    pub fn reconcile(
        &mut self,
        snap: &Snapshot,
        routing: &Routing,
        gate_open: bool,
        now: Timestamp,
    ) -> Changes {
        self.reconcile_with_holds(snap, routing, gate_open, &NoHolds, now)
    }

    /// [`Book::reconcile`], where an alert fires only once its condition has
    /// lasted its hold: an agent in its state for `holds.agent(id)`, a
    /// source down for `holds.source(name)`.
    pub fn reconcile_with_holds(
        &mut self,
        snap: &Snapshot,
        routing: &Routing,
        gate_open: bool,
        holds: &dyn Holds,
        now: Timestamp,
    ) -> Changes {
        let mut changes = Changes::default();
        // What the snapshot says, by subject. Alerts of subjects that cannot
        // be judged (unknown agents, pending sources, everything before the
        // gate opens) are held: neither fired nor resolved.
        let mut agents: HashMap<&str, (AlertKind, Entry<'_>)> = HashMap::new();
        let mut held_agents: HashSet<&str> = HashSet::new();
        for agent in snap.iter() {
            if agent.state == State::Unknown || !gate_open {
                held_agents.insert(agent.view.id.as_str());
            } else if let Some(kind) = AlertKind::for_state(agent.state) {
                agents.insert(agent.view.id.as_str(), (kind, agent));
            }
        }
        let mut sources: HashMap<&str, &SourceView> = HashMap::new();
        let mut held_sources: HashSet<&str> = HashSet::new();
        for source in &snap.sources {
            match source.status {
                SourceStatus::Pending => {
                    held_sources.insert(source.name.as_str());
                }
                SourceStatus::Down => {
                    sources.insert(source.name.as_str(), source);
                }
                SourceStatus::Up => {}
            }
        }
        // Active alerts: still firing (their subject is covered), held, or
        // resolved. Their content stays as it was when they fired; the age
        // is brought up to date when they are told (`Alert::refreshed`).
        let mut covered_agents: HashSet<&str> = HashSet::new();
        let mut covered_sources: HashSet<&str> = HashSet::new();
        let mut gone = Vec::new();
        let mut annotate = Vec::new();
        for (fp, a) in &self.active {
            let keep = match (&a.alert.agent, &a.alert.source) {
                (Some(agent), _) => {
                    let id = agent.as_str();
                    if let Some((key, (kind, view))) = agents.get_key_value(id)
                        && *kind == a.alert.kind
                    {
                        covered_agents.insert(*key);
                        let note = holds.remediation(agent, view.since);
                        if note.is_some() && note != a.alert.remediation {
                            annotate.push((fp.clone(), note));
                        }
                        true
                    } else {
                        held_agents.contains(id) || !gate_open
                    }
                }
                (None, Some(source)) => {
                    let id = source.as_str();
                    if let Some((key, _)) = sources.get_key_value(id) {
                        covered_sources.insert(*key);
                        true
                    } else {
                        held_sources.contains(id)
                    }
                }
                (None, None) => false,
            };
            if !keep {
                gone.push(fp.clone());
            }
        }
        // A note from remediation on an alert that fired already (`page:
        // at_once`): the API and its next notification show it.
        for (fp, note) in annotate {
            if let Some(a) = self.active.get_mut(&fp) {
                let mut alert = (*a.alert).clone();
                alert.remediation = note;
                a.alert = Arc::new(alert);
            }
        }
        for fp in gone {
            if let Some(a) = self.active.remove(&fp) {
                changes.resolved += 1;
                // Stale, then failing: the stale alert ends, the agent did
                // not recover.
                let next = a
                    .alert
                    .agent
                    .as_ref()
                    .and_then(|id| agents.get(id.as_str()))
                    .map(|(kind, _)| *kind)
                    .filter(|kind| *kind != a.alert.kind);
                let resolved = match next {
                    Some(kind) => (*a.alert).clone().superseded(now, kind),
                    None => {
                        let mut alert = (*a.alert).clone();
                        if let Some(agent) = &alert.agent
                            && let Some(action) = holds.acted_since(agent, alert.starts_at)
                        {
                            alert.remediation.get_or_insert_default().recovered_after =
                                Some(action);
                        }
                        alert.resolved(now)
                    }
                };
                self.leave_groups(&a.groups, &resolved, routing, true, now);
            }
        }
        // New alerts, those still within their `for:` hold excepted.
        let mut fresh = Vec::new();
        self.pending_until = None;
        for (id, (_, agent)) in &agents {
            if covered_agents.contains(id) {
                continue;
            }
            let due = holds.agent_due(agent);
            if due > now {
                self.pending_until = Some(self.pending_until.map_or(due, |t| t.min(due)));
                continue;
            }
            if let Some(mut a) = Alert::for_agent(*agent, now) {
                a.remediation = holds.remediation(&agent.id, agent.since);
                fresh.push(a);
            }
        }
        for (id, source) in &sources {
            if covered_sources.contains(id) {
                continue;
            }
            let due = after(source.since, holds.source(id));
            if due > now {
                self.pending_until = Some(self.pending_until.map_or(due, |t| t.min(due)));
                continue;
            }
            if let Some(a) = Alert::for_source(source) {
                fresh.push(a);
            }
        }
        fresh.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        for alert in fresh {
            let fp = alert.fingerprint.clone();
            changes.fired += 1;
            self.active.insert(
                fp.clone(),
                Active {
                    alert: Arc::new(alert),
                    silenced_by: Vec::new(),
                    groups: Vec::new(),
                },
            );
            self.place(&fp, routing, now);
        }
        self.apply_silences(routing, now);
        changes
    }

    /// Put an unsilenced active alert into its groups.
    fn place(&mut self, fp: &str, routing: &Routing, now: Timestamp) {
        let Some(active) = self.active.get(fp) else {
            return;
        };
        if !active.silenced_by.is_empty() {
            return;
        }
        let alert = active.alert.clone();
        let mut keys = Vec::new();
        for (route, receiver) in routing.destinations(&alert) {
            let group_by = &routing.routes[route].group_by;
            let labels: BTreeMap<String, String> = group_by
                .iter()
                .map(|l| (l.clone(), alert.label(l).unwrap_or_default()))
                .collect();
            let key = group_key(route, &receiver, &labels);
            let timing = routing.timing(route, &receiver);
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                receiver: receiver.clone(),
                route,
                labels,
                firing: BTreeSet::new(),
                notified: BTreeSet::new(),
                resolved: BTreeMap::new(),
                last_flush: None,
                next_flush: None,
            });
            g.firing.insert(fp.to_string());
            if !g.notified.contains(fp) {
                schedule(g, &timing, now);
            }
            keys.push(key);
        }
        if let Some(a) = self.active.get_mut(fp) {
            a.groups = keys;
        }
    }

    /// Take an alert out of its groups: resolved (tell those who were told
    /// it fired) or silenced (quietly).
    fn leave_groups(
        &mut self,
        keys: &[String],
        alert: &Alert,
        routing: &Routing,
        resolved: bool,
        now: Timestamp,
    ) {
        for key in keys {
            let Some(g) = self.groups.get_mut(key) else {
                continue;
            };
            g.firing.remove(&alert.fingerprint);
            if g.notified.remove(&alert.fingerprint)
                && resolved
                && routing.send_resolved(&g.receiver)
            {
                g.resolved.insert(alert.fingerprint.clone(), alert.clone());
                let timing = routing.timing(g.route, &g.receiver);
                schedule(g, &timing, now);
            }
        }
    }

    /// Re-evaluate silences whose window opened or closed.
    pub fn tick(&mut self, routing: &Routing, now: Timestamp) {
        self.apply_silences(routing, now);
    }

    /// When something is due next: a group's flush or a silence boundary.
    pub fn next_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        let flush = self.groups.values().filter_map(|g| g.next_flush).min();
        let silence = self
            .all_silences()
            .flat_map(|s| [s.starts_at, s.ends_at])
            .filter(|t| *t > now)
            .min();
        [flush, silence, self.pending_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a `for:` hold has ended: the snapshot must be looked at again.
    pub fn hold_ended(&self, now: Timestamp) -> bool {
        self.pending_until.is_some_and(|t| t <= now)
    }

    /// The notifications due at `now`. The book records them as sent: the
    /// caller must make them durable (the outbox) before acting on them.
    pub fn flush(&mut self, routing: &Routing, now: Timestamp) -> Vec<Notification> {
        self.flush_with_news(routing, now)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// Forget what receivers were told: a replica that stops leading no
    /// longer knows what the leader tells them. Should it lead again (with
    /// no shared book to go on from), every group still firing is told
    /// afresh, at once: a page twice rather than none.
    pub fn forget_told(&mut self, now: Timestamp) {
        self.groups.retain(|_, g| !g.firing.is_empty());
        for g in self.groups.values_mut() {
            g.notified.clear();
            g.resolved.clear();
            g.last_flush = None;
            g.next_flush = Some(now);
        }
    }

    /// [`Book::flush`], with each notification's `starts_at` of the alerts
    /// its receiver hears of for the first time.
    pub fn flush_with_news(
        &mut self,
        routing: &Routing,
        now: Timestamp,
    ) -> Vec<(Notification, Vec<Timestamp>)> {
        let mut out = Vec::new();
        let mut empty = Vec::new();
        for (key, g) in self.groups.iter_mut() {
            if g.next_flush.is_none_or(|t| t > now) {
                continue;
            }
            let timing = routing.timing(g.route, &g.receiver);
            let repeat_due = g
                .last_flush
                .is_some_and(|t| now >= after(t, timing.repeat_interval));
            if g.changed() || (repeat_due && !g.firing.is_empty()) {
                let mut alerts: Vec<Alert> = g
                    .firing
                    .iter()
                    .filter_map(|fp| self.active.get(fp).map(|a| a.alert.refreshed(now)))
                    .collect();
                let news: Vec<Timestamp> = alerts
                    .iter()
                    .filter(|a| !g.notified.contains(&a.fingerprint))
                    .map(|a| a.starts_at)
                    .collect();
                alerts.extend(g.resolved.values().cloned());
                let status = if g.firing.is_empty() {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                };
                let seq = self
                    .next_notification
                    .max(u64::try_from(now.timestamp_millis()).unwrap_or(0));
                self.next_notification = seq.saturating_add(1);
                out.push((
                    Notification {
                        id: format!("{}-{seq}", short_hash(key)),
                        receiver: g.receiver.clone(),
                        group_key: key.clone(),
                        group_labels: g.labels.clone(),
                        status,
                        alerts,
                        created_at: now,
                    },
                    news,
                ));
                g.notified = g.firing.clone();
                g.resolved.clear();
                g.last_flush = Some(now);
            }
            g.next_flush = if g.firing.is_empty() {
                None
            } else {
                g.last_flush.map(|t| after(t, timing.repeat_interval))
            };
            if g.firing.is_empty() && g.resolved.is_empty() {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.groups.remove(&key);
        }
        out
    }

    /// Drop groups of receivers or routes no longer in the config (after a
    /// restart with a changed config) and re-place every alert, so the book
    /// follows the routing it runs with.
    pub fn adopt(&mut self, routing: &Routing, now: Timestamp) {
        self.groups.retain(|_, g| {
            routing.receivers.contains_key(&g.receiver)
                && routing
                    .routes
                    .get(g.route)
                    .is_some_and(|r| r.receivers.contains(&g.receiver))
        });
        let fps: Vec<String> = self.active.keys().cloned().collect();
        for fp in &fps {
            if let Some(a) = self.active.get_mut(fp) {
                a.groups.clear();
            }
        }
        for g in self.groups.values_mut() {
            g.firing.clear();
        }
        for fp in fps {
            self.place(&fp, routing, now);
        }
        self.muted = usize::MAX;
        self.apply_silences(routing, now);
        // What a group was told fires and is no longer active cannot be
        // here: an alert leaves `notified` in the same step that removes it
        // from `active`, and both are saved in one file.
        for g in self.groups.values_mut() {
            let active = &self.active;
            g.notified.retain(|fp| active.contains_key(fp));
        }
        self.groups.retain(|_, g| {
            !g.firing.is_empty() || !g.resolved.is_empty() || !g.notified.is_empty()
        });
    }

    /// Number of firing alerts by kind, split into (unsilenced, silenced).
    pub fn counts(&self) -> BTreeMap<AlertKind, (usize, usize)> {
        let mut m: BTreeMap<AlertKind, (usize, usize)> =
            AlertKind::ALL.iter().map(|k| (*k, (0, 0))).collect();
        for a in self.active.values() {
            let e = m.entry(a.alert.kind).or_default();
            if a.silenced_by.is_empty() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        m
    }
}

/// A group's next flush after a change: `group_wait` after its start, or
/// `group_interval` after its last message (never later than already set).
fn schedule(g: &mut Group, timing: &Timing, now: Timestamp) {
    let at = match g.last_flush {
        None => after(now, timing.group_wait),
        Some(last) => after(last, timing.group_interval).max(now),
    };
    g.next_flush = Some(g.next_flush.map_or(at, |t| t.min(at)));
}

fn group_key(route: usize, receiver: &str, labels: &BTreeMap<String, String>) -> String {
    let mut k = format!("{route}/{receiver}/{{");
    let parts: Vec<String> = labels.iter().map(|(a, b)| format!("{a}={b:?}")).collect();
    k.push_str(&parts.join(","));
    k.push('}');
    k
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

mod routing;
mod silences;
pub use silences::MAX_API_SILENCES;

pub use routing::{ReceiverPolicy, Route, Routing, Timing};

#[cfg(test)]
mod tests;
