//! The alert engine: one task that owns the [`Book`] and the outbox. It
//! follows the core's snapshots (level-triggered: a lost event cannot lose
//! an alert), asks the book what is due, writes new notifications to
//! `alerts.json` **before** handing them to the receivers' workers, and
//! removes them when a worker reports them delivered or dropped.
//!
//! Channels: snapshots in through a `watch` (latest wins: an agent that
//! flaps faster than the snapshot is published does not page); commands
//! (silences) in through a bounded channel whose senders wait at most
//! [`COMMAND_TIMEOUT`]; worker outcomes in through a bounded channel the
//! workers wait on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::book::{Holds, MAX_API_SILENCES, ReceiverPolicy, Route, Routing, Timing};
use super::deliver::{Outcome, Queue};
use super::store::{AlertState, AlertStore, Pending};
use crate::clock::Clock;
use crate::config::alerting::{AlertingConfig, ReceiverKind};
use crate::core::alert::{Alert, AlertKind, Matcher, Silence};
use crate::core::remedy::{RemediationNote, RemedyView};
use crate::core::snapshot::{AgentView, SourceStatus};
use crate::core::time::after;
use crate::core::{AgentId, Policy, Snapshot, Timestamp};
use crate::ha::{Leadership, LeaseClient, Role};
use crate::liveness::Liveness;
use crate::sinks::state::StateFile;
use crate::telemetry::metrics::{Delivery, LabelValue, Metrics};

/// How long an API call waits for the engine to take its command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the command channel.
pub const COMMAND_CAPACITY: usize = 64;
/// Capacity of the workers' outcome channel.
pub const OUTCOME_CAPACITY: usize = 1024;
/// Book changes that need no notification yet are saved at most this often
/// (new notifications and deliveries are saved at once, always).
const BOOK_SAVE_EVERY: Duration = Duration::from_secs(1);
/// The view for the API is refreshed at least this often while alerts fire.
const VIEW_EVERY: Duration = Duration::from_secs(1);
const IDLE_TICK: Duration = Duration::from_secs(1);
/// With `ha:`, every replica reads the shared API silences this often.
const SILENCE_SYNC: Duration = Duration::from_secs(1);

/// Requests from the API.
pub enum Command {
    /// Answered `false` when the silence limit is reached.
    AddSilence(Box<Silence>, oneshot::Sender<bool>),
    RemoveSilence(String, oneshot::Sender<RemoveResult>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum RemoveResult {
    Removed,
    NotFound,
    /// Config silences are removed by editing the config.
    FromConfig,
}

/// What `/api/v1/alerts` and `/api/v1/silences` show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertsView {
    pub taken_at: Option<Timestamp>,
    pub alerts: Vec<AlertEntry>,
    pub silences: Vec<Silence>,
    /// Undelivered notifications per receiver.
    pub pending: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlertEntry {
    /// As it fired; `age_seconds` is brought up to date when served.
    #[serde(flatten)]
    pub alert: Arc<Alert>,
    pub silenced: bool,
    pub silenced_by: Vec<String>,
    /// Receivers whose groups hold it.
    pub receivers: Vec<String>,
}

/// The handle the HTTP API uses.
#[derive(Clone)]
pub struct AlertsHandle {
    pub view: watch::Receiver<Arc<AlertsView>>,
    pub commands: mpsc::Sender<Command>,
}

/// Routes and receiver policies from the config. The default route comes
/// last and takes what no other route matched.
pub fn routing(cfg: &AlertingConfig) -> Routing {
    let r = &cfg.routing;
    let base = Timing {
        group_wait: r.group_wait,
        group_interval: r.group_interval,
        repeat_interval: r.repeat_interval,
    };
    let mut routes: Vec<Route> = r
        .routes
        .iter()
        .map(|rc| Route {
            matcher: rc.matcher.clone(),
            receivers: rc.receivers.clone(),
            continue_matching: rc.continue_matching,
            group_by: rc.group_by.clone().unwrap_or_else(|| r.group_by.clone()),
            timing: Timing {
                group_wait: rc.group_wait.unwrap_or(base.group_wait),
                group_interval: rc.group_interval.unwrap_or(base.group_interval),
                repeat_interval: rc.repeat_interval.unwrap_or(base.repeat_interval),
            },
            fallback: false,
        })
        .collect();
    routes.push(Route {
        matcher: Matcher::default(),
        receivers: r.receivers.clone(),
        continue_matching: false,
        group_by: r.group_by.clone(),
        timing: base,
        fallback: true,
    });
    let receivers = cfg
        .receivers
        .iter()
        .map(|rc| {
            let resend = match &rc.kind {
                ReceiverKind::AlertmanagerApi {
                    resend_interval, ..
                } => Some(*resend_interval),
                _ => None,
            };
            (
                rc.name.clone(),
                ReceiverPolicy {
                    send_resolved: rc.send_resolved.unwrap_or(r.send_resolved),
                    resend_interval: resend,
                },
            )
        })
        .collect();
    Routing { routes, receivers }
}

impl LabelValue for AlertKind {
    fn label(self) -> &'static str {
        self.as_str()
    }
}

pub struct Engine {
    pub state: AlertState,
    pub routing: Routing,
    pub store: Option<AlertStore>,
    pub queues: HashMap<String, Arc<Queue>>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub commands: mpsc::Receiver<Command>,
    pub outcomes: mpsc::Receiver<(String, Outcome)>,
    pub view: watch::Sender<Arc<AlertsView>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
    pub startup_grace: Duration,
    pub started_at: Timestamp,
    /// For the agents' `for:` holds.
    pub policy: Policy,
    /// Only the leader notifies (always so without `ha:`).
    pub leadership: Leadership,
    /// With `ha:`: the store the alert state and the API silences are
    /// shared through (the lease's).
    pub shared: Option<Arc<LeaseClient>>,
    /// The epoch whose shared state this engine took over.
    pub loaded: Option<u64>,
    /// New notifications, in the outbox, handed to the workers once saved.
    pub awaiting: Vec<Pending>,
    /// Remediation: pages that wait for it, its notes on alerts.
    pub remedy: watch::Receiver<Arc<RemedyView>>,
}

/// The holds of [`Book::reconcile_with_holds`]: the policy's `for:` and
/// `down_after`, and remediation's (a page that waits for it, its notes).
struct EngineHolds<'a> {
    policy: &'a Policy,
    remedy: &'a RemedyView,
}

impl Holds for EngineHolds<'_> {
    fn agent(&self, agent: &str) -> Duration {
        self.policy.alert_for(agent)
    }

    fn source(&self, source: &str) -> Duration {
        self.policy.down_after(source)
    }

    fn agent_due(&self, agent: &AgentView) -> Timestamp {
        let due = after(agent.since, self.agent(agent.id.as_str()));
        match self.remedy.hold_until(self.policy, agent) {
            Some(hold) => due.max(hold),
            None => due,
        }
    }

    fn remediation(&self, agent: &AgentId, since: Timestamp) -> Option<RemediationNote> {
        self.remedy.note(agent, since)
    }

    fn acted_since(&self, agent: &AgentId, since: Timestamp) -> Option<String> {
        self.remedy.acted_since(agent, since).map(str::to_string)
    }
}

impl Engine {
    pub async fn run(mut self, cancel: CancellationToken) {
        self.liveness.register("alerts", Duration::from_secs(10));
        let now = self.clock.now();
        self.state.book.adopt(&self.routing, now);
        let mut role_rx = self.leadership.subscribe();
        if self.leadership.role() != Role::Alone {
            // One of several replicas: what this one told receivers before
            // its restart is not what the leader told them since. It
            // starts as a follower; should it lead, it tells afresh.
            self.state.book.forget_told(now);
            self.state.outbox.clear();
        }
        // Notifications left in the outbox by the previous run go first.
        let mut outbox = std::mem::take(&mut self.state.outbox);
        outbox.sort_by_key(|p| p.seq);
        for p in outbox {
            if self.queues.contains_key(&p.notification.receiver) {
                self.state.outbox.push(p.clone());
                self.hand_over(p);
            } else {
                warn!(receiver = %p.notification.receiver, notification = %p.notification.id,
                    "Pending notification for a receiver no longer configured; dropped.");
            }
        }
        if !self.state.outbox.is_empty() {
            info!(
                pending = self.state.outbox.len(),
                "Resuming delivery of notifications from before the restart."
            );
        }
        let mut gate_open = false;
        // The book changed without a notification (alerts fired and wait
        // for group_wait, silences): saved at most every BOOK_SAVE_EVERY.
        let mut book_dirty = false;
        let mut outbox_dirty = false;
        let mut last_book_save = Instant::now();
        let mut last_view = Instant::now() - VIEW_EVERY;
        let mut view_due = true;
        let mut last_sync = Instant::now() - SILENCE_SYNC;
        self.snapshots.mark_changed();
        // No notification before startup_grace has passed since start,
        // whatever the sources answered: a service that boots slowly, or an
        // alert that fires and clears within the grace, pages nobody.
        let grace_end = after(self.started_at, self.startup_grace);
        loop {
            fail::fail_point!("alerts-loop");
            let now = self.clock.now();
            let in_grace = now < grace_end;
            // A follower's groups stay due (it never flushes them): it
            // wakes on its idle tick and on a change of role instead.
            let leads = self.leadership.may_notify();
            let wake = self
                .state
                .book
                .next_wakeup(now)
                .filter(|_| leads)
                .map(|t| if in_grace { t.max(grace_end) } else { t })
                .map(|t| self.clock.instant_at(t))
                .unwrap_or_else(|| Instant::now() + IDLE_TICK)
                .min(Instant::now() + IDLE_TICK);
            let save_at = book_dirty.then(|| last_book_save + BOOK_SAVE_EVERY);
            let far = Instant::now() + Duration::from_secs(3600);
            let mut reconcile = false;
            // Outcomes and commands before snapshots: the core may publish
            // snapshots faster than they are reconciled (a storm of re-reads),
            // and deliveries must still be recorded. A snapshot waiting is
            // seen below whatever branch ran (it is a watch: latest wins).
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Ok(()) = role_rx.changed() => {
                    let role = *role_rx.borrow_and_update();
                    if role == Role::Follower {
                        self.step_down();
                        book_dirty = true;
                        outbox_dirty = true;
                    }
                    view_due = true;
                }
                Some((receiver, outcome)) = self.outcomes.recv() => {
                    self.outcome(&receiver, outcome);
                    while let Ok((receiver, outcome)) = self.outcomes.try_recv() {
                        self.outcome(&receiver, outcome);
                    }
                    outbox_dirty = true;
                    view_due = true;
                }
                Some(cmd) = self.commands.recv() => {
                    self.command(cmd).await;
                    view_due = true;
                    book_dirty = true;
                }
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    reconcile = true;
                }
                Ok(()) = self.remedy.changed() => {
                    reconcile = true;
                }
                _ = sleep_until(save_at.unwrap_or(far)), if save_at.is_some() => {}
                _ = sleep_until(wake) => {}
            }
            reconcile |= self.snapshots.has_changed().unwrap_or(false);
            self.liveness.tick("alerts");
            let now = self.clock.now();
            let snap = self.snapshots.borrow_and_update().clone();
            if !gate_open {
                gate_open = snap
                    .sources
                    .iter()
                    .all(|s| s.status != SourceStatus::Pending)
                    || now >= grace_end;
                if gate_open {
                    reconcile = true;
                    debug!("Every source read once (or startup_grace over): agent alerts enabled.");
                }
            }
            reconcile |= self.state.book.hold_ended(now);
            if reconcile {
                let remedy = self.remedy.borrow_and_update().clone();
                let holds = EngineHolds {
                    policy: &self.policy,
                    remedy: &remedy,
                };
                let c = self.state.book.reconcile_with_holds(
                    &snap,
                    &self.routing,
                    gate_open,
                    &holds,
                    now,
                );
                if c.fired > 0 || c.resolved > 0 {
                    info!(fired = c.fired, resolved = c.resolved, "Alerts changed.");
                    book_dirty = true;
                    view_due = true;
                }
            } else {
                self.state.book.tick(&self.routing, now);
            }
            if self.shared.is_some() {
                if let Role::Leader { epoch } = self.leadership.role()
                    && self.loaded != Some(epoch)
                    && self.take_over(epoch).await
                {
                    // Reconciled with the latest snapshot next pass.
                    self.snapshots.mark_changed();
                    view_due = true;
                }
                if last_sync + SILENCE_SYNC <= Instant::now() {
                    last_sync = Instant::now();
                    view_due |= self.sync_silences().await;
                }
            }
            let due = if now < grace_end || !self.may_flush() {
                Vec::new()
            } else {
                self.state.book.flush_with_news(&self.routing, now)
            };
            if !due.is_empty() {
                for (n, first_told) in due {
                    let seq = self.state.next_seq;
                    self.state.next_seq += 1;
                    debug!(receiver = %n.receiver, notification = %n.id, alerts = n.alerts.len(),
                        status = n.status.as_str(), "Notification queued.");
                    let p = Pending {
                        seq,
                        notification: n,
                        first_told,
                        parts_done: 0,
                        queued_at: now,
                    };
                    self.state.outbox.push(p.clone());
                    self.awaiting.push(p);
                }
                view_due = true;
            }
            if !self.awaiting.is_empty() {
                // Durable first (outbox, then the book that records them
                // as told), then sent: DESIGN §2 rule 3. A shared state
                // that cannot be written holds them back (a new leader
                // would not know they were sent); the next pass retries.
                if self.persist(true, true).await {
                    last_book_save = Instant::now();
                    book_dirty = false;
                    outbox_dirty = false;
                    for p in std::mem::take(&mut self.awaiting) {
                        outbox_dirty |= self.hand_over(p);
                    }
                }
            }
            // A delivery is recorded before anything else happens, so a
            // crash does not send a delivered notification again.
            if outbox_dirty && self.persist(true, false).await {
                outbox_dirty = false;
            }
            if book_dirty && last_book_save + BOOK_SAVE_EVERY <= Instant::now() {
                self.persist(false, true).await;
                last_book_save = Instant::now();
                book_dirty = false;
            }
            if view_due || (last_view + VIEW_EVERY <= Instant::now() && reconcile) {
                self.publish(now);
                last_view = Instant::now();
                view_due = false;
            }
        }
        self.persist(true, true).await;
        debug!("Alert engine stopped.");
    }

    /// This replica no longer leads: its queued notifications are left to
    /// the leader, and it forgets what it told (see [`Book::forget_told`]).
    fn step_down(&mut self) {
        let queued: usize = self.queues.values().map(|q| q.clear()).sum();
        let pending = self.state.outbox.len();
        self.state.outbox.clear();
        self.awaiting.clear();
        self.loaded = None;
        self.state.book.forget_told(self.clock.now());
        for receiver in self.queues.keys() {
            self.count_pending(receiver);
        }
        info!(
            queued,
            pending, "No longer the leader: notifications left to the leader."
        );
    }

    /// Give a notification (already in the outbox) to its receiver's
    /// worker. Returns whether the outbox changed (older queued
    /// notifications superseded or dropped).
    fn hand_over(&mut self, p: Pending) -> bool {
        let receiver = p.notification.receiver.clone();
        let Some(q) = self.queues.get(&receiver) else {
            return false;
        };
        let seq = p.seq;
        let pushed = q.push(p);
        let mut changed = false;
        if !pushed.superseded.is_empty() {
            debug!(receiver = %receiver, superseded = pushed.superseded.len(),
                "Undelivered notifications of the same group merged into the newest.");
            let gone = &pushed.superseded;
            self.state.outbox.retain(|x| !gone.contains(&x.seq));
            // The merged notification carries what they had to say.
            if let Some(merged) = pushed.merged
                && let Some(slot) = self.state.outbox.iter_mut().find(|x| x.seq == seq)
            {
                *slot = merged;
            }
            changed = true;
        }
        if let Some(old) = pushed.dropped {
            self.state.outbox.retain(|x| x.seq != old.seq);
            self.metrics.notification(&receiver, Delivery::Dropped);
            error!(receiver = %receiver, notification = %old.notification.id,
                "Outbox full for this receiver (delivery.max_pending); dropped the oldest notification.");
            changed = true;
        }
        self.count_pending(&receiver);
        changed
    }

    fn count_pending(&self, receiver: &str) {
        let n = self
            .state
            .outbox
            .iter()
            .filter(|p| p.notification.receiver == receiver)
            .count();
        self.metrics.outbox_pending(receiver, n);
    }

    fn outcome(&mut self, receiver: &str, outcome: Outcome) {
        match outcome {
            Outcome::Progress { seq, parts_done } => {
                if let Some(p) = self.state.outbox.iter_mut().find(|p| p.seq == seq) {
                    p.parts_done = parts_done;
                }
            }
            Outcome::Delivered { seq } | Outcome::Dropped { seq } | Outcome::NotLeader { seq } => {
                self.state.outbox.retain(|p| p.seq != seq);
            }
        }
        self.count_pending(receiver);
    }

    async fn command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::AddSilence(s, reply) => {
                let (id, ends_at) = (s.id.clone(), s.ends_at);
                // Quoted (newlines escaped) and cut: it is outside text.
                let comment: String = s.comment.chars().take(120).collect();
                let created_by: String = s.created_by.chars().take(64).collect();
                if let Some(shared) = &self.shared {
                    // Shared with every replica first; an unreachable store
                    // leaves the reply unsent: the API answers 503.
                    if self.state.book.api_silences_active(now) >= MAX_API_SILENCES {
                        let _ = reply.send(false);
                        return;
                    }
                    let json = serde_json::to_string(&*s).unwrap_or_default();
                    if let Err(e) = shared.put_silence(&id, json).await {
                        warn!(silence = %id, error = %e, "Cannot share the silence; not added.");
                        return;
                    }
                }
                let added = self.state.book.add_silence(*s, &self.routing, now);
                if added {
                    info!(silence = %id, comment = ?comment, created_by = ?created_by,
                        ends_at = %ends_at, "Silence added.");
                } else {
                    warn!(silence = %id, "Silence refused: the limit of active silences is reached.");
                }
                let _ = reply.send(added);
            }
            Command::RemoveSilence(id, reply) => {
                let from_config =
                    self.state.book.all_silences().any(|s| {
                        s.id == id && s.origin == crate::core::alert::SilenceOrigin::Config
                    });
                if from_config {
                    let _ = reply.send(RemoveResult::FromConfig);
                    return;
                }
                let mut shared_found = false;
                if let Some(shared) = &self.shared {
                    match shared.delete_silence(&id).await {
                        Ok(found) => shared_found = found,
                        Err(e) => {
                            warn!(silence = %id, error = %e, "Cannot remove the shared silence.");
                            return;
                        }
                    }
                }
                let result =
                    if self.state.book.remove_silence(&id, &self.routing, now) || shared_found {
                        info!(silence = %id, "Silence removed.");
                        RemoveResult::Removed
                    } else {
                        RemoveResult::NotFound
                    };
                let _ = reply.send(result);
            }
        }
    }

    /// Whether new notifications may be made now: this replica may
    /// notify, and, with a shared store, leads on the shared state (or
    /// fails open).
    fn may_flush(&self) -> bool {
        if !self.leadership.may_notify() {
            return false;
        }
        match (self.shared.is_some(), self.leadership.role()) {
            (false, _) => true,
            (true, Role::Leader { epoch }) => self.loaded == Some(epoch),
            (true, _) => true,
        }
    }

    /// The epoch to write the shared state with: leading on it.
    fn shared_epoch(&self) -> Option<u64> {
        match self.leadership.role() {
            Role::Leader { epoch } if self.shared.is_some() && self.loaded == Some(epoch) => {
                Some(epoch)
            }
            _ => None,
        }
    }

    /// Save the outbox and/or the book: to the shared store when leading
    /// on it (one fenced write of both), else to the files. `false` only
    /// when the shared state could not be written (unreachable, or fenced:
    /// a newer leader took over, and this replica steps down).
    async fn persist(&mut self, outbox: bool, book: bool) -> bool {
        if let Some(epoch) = self.shared_epoch() {
            let Some(shared) = self.shared.clone() else {
                return false;
            };
            let json = match serde_json::to_string(&self.state) {
                Ok(j) => j,
                Err(e) => {
                    error!(error = %e, "Cannot encode the alert state.");
                    return false;
                }
            };
            return match shared.save_state(epoch, json).await {
                Ok(true) => true,
                Ok(false) => {
                    error!(
                        epoch,
                        "Fenced: a newer leader took over; this replica sends and records nothing more."
                    );
                    self.step_down();
                    self.leadership.fence(epoch);
                    false
                }
                Err(e) => {
                    warn!(error = %e, "Cannot save the shared alert state; new notifications wait for it.");
                    false
                }
            };
        }
        if self.shared.is_some() {
            // A follower records nothing; failing open, nothing is shared.
            return true;
        }
        if outbox {
            self.save_outbox().await;
        }
        if book {
            self.save_book().await;
        }
        true
    }

    /// Lead on the state the previous leader saved: its book (what each
    /// receiver was told) and its outbox (what it had not delivered, sent
    /// again with the same ids). `false` when the store could not be read
    /// (tried again on the next pass; nothing is notified meanwhile).
    async fn take_over(&mut self, epoch: u64) -> bool {
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        let now = self.clock.now();
        match shared.load_state().await {
            Err(e) => {
                warn!(error = %e, "Cannot read the shared alert state; not notifying until it can.");
                return false;
            }
            Ok(None) => {
                info!(
                    epoch,
                    "Leading; no shared alert state yet: this replica's view is the first."
                );
            }
            Ok(Some(json)) => match serde_json::from_str::<AlertState>(&json) {
                Err(e) => {
                    error!(error = %e, "The shared alert state cannot be read; leading from this replica's view.");
                }
                Ok(mut state) => {
                    let config: Vec<Silence> = self
                        .state
                        .book
                        .all_silences()
                        .filter(|s| s.origin == crate::core::alert::SilenceOrigin::Config)
                        .cloned()
                        .collect();
                    state.book.set_config_silences(config);
                    state.book.adopt(&self.routing, now);
                    let mut outbox = std::mem::take(&mut state.outbox);
                    outbox.sort_by_key(|p| p.seq);
                    let (firing, pending) = (state.book.active.len(), outbox.len());
                    self.state = state;
                    for p in outbox {
                        if self.queues.contains_key(&p.notification.receiver) {
                            self.state.outbox.push(p.clone());
                            self.hand_over(p);
                        }
                    }
                    info!(
                        epoch,
                        firing, pending, "Leading: took over the shared alert state."
                    );
                }
            },
        }
        self.loaded = Some(epoch);
        true
    }

    /// Read the API silences every replica shares; the leader removes the
    /// expired ones. Whether they changed.
    async fn sync_silences(&mut self) -> bool {
        let Some(shared) = self.shared.clone() else {
            return false;
        };
        let now = self.clock.now();
        let list = match shared.silences().await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "Cannot read the shared silences.");
                return false;
            }
        };
        let mut silences = Vec::with_capacity(list.len());
        for json in list {
            match serde_json::from_str::<Silence>(&json) {
                Ok(s) => silences.push(s),
                Err(e) => warn!(error = %e, "A shared silence cannot be read; ignored."),
            }
        }
        if self.shared_epoch().is_some() {
            for s in silences.iter().filter(|s| s.is_expired(now)) {
                let _ = shared.delete_silence(&s.id).await;
            }
        }
        self.state
            .book
            .replace_api_silences(silences, &self.routing, now)
    }

    async fn save_outbox(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let pending = self.state.outbox.clone();
        let next = self.state.next_seq;
        let saved = tokio::task::spawn_blocking(move || store.save_outbox(&pending, next)).await;
        report_save(saved, StateFile::Outbox, &self.metrics);
    }

    async fn save_book(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let book = self.state.book.clone();
        let saved = tokio::task::spawn_blocking(move || store.save_book(&book)).await;
        report_save(saved, StateFile::Alerts, &self.metrics);
    }

    fn publish(&self, now: Timestamp) {
        let book = &self.state.book;
        for (kind, (firing, silenced)) in book.counts() {
            self.metrics.alerts(kind, firing, silenced);
        }
        let alerts = book
            .active
            .values()
            .map(|a| AlertEntry {
                alert: a.alert.clone(),
                silenced: !a.silenced_by.is_empty(),
                silenced_by: a.silenced_by.clone(),
                receivers: {
                    let mut r: Vec<String> = a
                        .groups
                        .iter()
                        .filter_map(|k| book.groups.get(k).map(|g| g.receiver.clone()))
                        .collect();
                    r.dedup();
                    r
                },
            })
            .collect();
        let mut pending: BTreeMap<String, usize> =
            self.queues.keys().map(|k| (k.clone(), 0)).collect();
        for p in &self.state.outbox {
            *pending.entry(p.notification.receiver.clone()).or_default() += 1;
        }
        self.view.send_replace(Arc::new(AlertsView {
            taken_at: Some(now),
            alerts,
            silences: book.all_silences().cloned().collect(),
            pending,
        }));
    }
}

fn report_save(
    saved: Result<Result<(), crate::sinks::state::StateError>, tokio::task::JoinError>,
    file: StateFile,
    metrics: &Metrics,
) {
    let what = file.label();
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics.state_save_failed(file);
            error!(error = %e, file = what,
                "Cannot save alert state; notifications may be lost or repeated after a restart.");
        }
        Err(e) => {
            metrics.state_save_failed(file);
            error!(error = %e, file = what, "Alert state save task failed.");
        }
    }
}
