//! The actions task: the one owner of [`Remedies`] (the pure remediation
//! state, `crate::core::remedy`). It follows the core's snapshots and the
//! alert engine's silences, makes the HTTP calls the state asks for (each
//! bounded by its action's timeout), feeds their results back, answers
//! manual calls from the API, and publishes a [`RemedyView`] that the alert
//! engine (page holds, notes on alerts) and the API read.
//!
//! Channels: snapshots, silences and the leader role in through `watch`es
//! (latest wins: remediation judges the current state, not every step on
//! the way); manual calls through a bounded channel whose senders wait at
//! most [`MANUAL_QUEUE_TIMEOUT`] (then 503); calls in flight in a
//! `JoinSet`, at most [`MAX_IN_FLIGHT`] (the global rate limit keeps them
//! far below; a manual call past it is refused with 503).

pub mod api;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alerts::engine::AlertsView;
use crate::clock::Clock;
use crate::config::actions::{ActionConfig, RemediationConfig, body_context, render_body};
use crate::core::alert::Alert;
use crate::core::model::cut_marked;
use crate::core::remedy::{
    Attempt, CallResult, CallSpec, PersistedRemedies, Remedies, RemedyEvent, RemedyView, Trigger,
};
use crate::core::snapshot::Entry;
use crate::core::{Policy, Snapshot};
use crate::ha::{Leadership, Role};
use crate::liveness::Liveness;
use crate::sinks::state::{StateError, StateFile, read_json, write_json};
use crate::telemetry::metrics::{ActionResult, Metrics};

/// Capacity of the manual-call channel.
pub const MANUAL_CAPACITY: usize = 16;
/// How long the API waits for the task to take a manual call.
pub const MANUAL_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// Calls in flight at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// The most of an answer kept: a report, or the start of an error answer.
pub const MAX_REPORT: usize = 4096;
/// The most of an unexpected answer quoted in an attempt's error.
const MAX_ERROR_ANSWER: usize = 200;
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A call asked for through the API.
pub struct ManualCall {
    pub agent: String,
    pub action: String,
    pub reply: oneshot::Sender<ManualAnswer>,
}

#[derive(Debug)]
pub enum ManualAnswer {
    /// No such agent in the latest snapshot.
    UnknownAgent,
    /// Too many calls in flight.
    Busy,
    /// The call was made (or logged, in a dry run): its record, and the
    /// answer's body (bounded).
    Done(Box<Attempt>, Option<String>),
}

/// What the API holds: the view and the way to ask for a manual call.
#[derive(Clone)]
pub struct ActionsHandle {
    pub view: watch::Receiver<Arc<RemedyView>>,
    pub manual: mpsc::Sender<ManualCall>,
    pub config: Arc<RemediationConfig>,
}

pub struct ActionsTask {
    /// The state directory (`actions.json`), if state is kept.
    pub dir: Option<PathBuf>,
    pub remedies: Remedies,
    pub config: Arc<RemediationConfig>,
    pub client: reqwest::Client,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub alerts: watch::Receiver<Arc<AlertsView>>,
    pub leadership: Leadership,
    pub view: watch::Sender<Arc<RemedyView>>,
    pub manual: mpsc::Receiver<ManualCall>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
}

/// The first view, before the task has run: says whether this is a dry
/// run (the alert engine holds no page then).
pub fn initial_view(config: &RemediationConfig) -> RemedyView {
    RemedyView {
        dry_run: config.limits.dry_run,
        ..RemedyView::default()
    }
}

/// What the task is built from besides the config.
pub struct ActionsCtx {
    pub policy: Policy,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub alerts: watch::Receiver<Arc<AlertsView>>,
    pub leadership: Leadership,
    pub view: watch::Sender<Arc<RemedyView>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
    /// The state directory, and what a previous run saved there.
    pub store: Option<(PathBuf, Option<PersistedRemedies>)>,
}

/// The remediation state file in the state directory.
pub const STATE_FILE: &str = "actions.json";
const STATE_VERSION: u32 = 1;
/// Changes to the saved remediation state are written at most this often
/// (and once at shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct OnDisk<'a> {
    version: u32,
    remedies: &'a PersistedRemedies,
}

/// What a previous run saved in `dir`, if anything (blocking).
pub fn load(dir: &Path) -> Result<Option<PersistedRemedies>, StateError> {
    read_json(&dir.join(STATE_FILE), STATE_VERSION, Some("remedies"))
}

/// Build the task and the API's handle.
pub fn build(
    config: &RemediationConfig,
    ctx: ActionsCtx,
) -> anyhow::Result<(ActionsTask, ActionsHandle)> {
    let config = Arc::new(config.clone());
    let client = reqwest::Client::builder()
        .connect_timeout(crate::config::actions::MAX_ACTION_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agent-supervisor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("actions: http client: {e}"))?;
    ctx.metrics
        .register_actions(config.actions.iter().map(|a| a.name.as_str()))
        .map_err(|e| anyhow::anyhow!("registering the action metrics: {e}"))?;
    let mut remedies = Remedies::new(ctx.policy, config.limits.clone());
    let (dir, restored) = match ctx.store {
        Some((dir, restored)) => (Some(dir), restored),
        None => (None, None),
    };
    if let Some(saved) = restored {
        info!(
            attempts = saved.attempts.len(),
            "Restored the remediation state."
        );
        remedies.restore(saved, ctx.clock.now());
    }
    let (manual_tx, manual_rx) = mpsc::channel(MANUAL_CAPACITY);
    let handle = ActionsHandle {
        view: ctx.view.subscribe(),
        manual: manual_tx,
        config: config.clone(),
    };
    let task = ActionsTask {
        remedies,
        config,
        client,
        snapshots: ctx.snapshots,
        alerts: ctx.alerts,
        leadership: ctx.leadership,
        view: ctx.view,
        manual: manual_rx,
        metrics: ctx.metrics,
        clock: ctx.clock,
        liveness: ctx.liveness,
        dir,
    };
    Ok((task, handle))
}

impl ActionsTask {
    pub async fn run(mut self, cancel: CancellationToken) {
        self.liveness.register("actions", Duration::from_secs(10));
        let mut inflight: JoinSet<(u64, CallResult)> = JoinSet::new();
        // The attempt each call task makes.
        let mut tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
        let mut waiting: HashMap<u64, oneshot::Sender<ManualAnswer>> = HashMap::new();
        let mut role = self.leadership.subscribe();
        let mut breaker_open = false;
        let mut saved = self.remedies.revision();
        let mut last_save = Instant::now() - SAVE_EVERY;
        self.snapshots.mark_changed();
        loop {
            let wake = self
                .remedies
                .next_wakeup()
                .map(|t| self.clock.instant_at(t))
                .unwrap_or_else(|| Instant::now() + IDLE_TICK)
                .min(Instant::now() + IDLE_TICK);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(joined) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    // A call task that panicked is a failed call, not an
                    // attempt left open for ever.
                    let done = match joined {
                        Ok((id, done)) => {
                            tasks.remove(&id);
                            Some(done)
                        }
                        Err(e) => {
                            error!(error = %e, "An action call task failed.");
                            tasks.remove(&e.id()).map(|attempt| (attempt, CallResult {
                                error: Some(format!("the call failed inside the sidecar: {e}")),
                                ..CallResult::default()
                            }))
                        }
                    };
                    if let Some((attempt, result)) = done {
                        let body = result.body.clone();
                        let now = self.clock.now();
                        let more = self.remedies.call_done(attempt, result, now);
                        self.start(more, &mut inflight, &mut tasks);
                        if let Some(reply) = waiting.remove(&attempt)
                            && let Some(a) = self.remedies.attempt_by_id(attempt)
                        {
                            let _ = reply.send(ManualAnswer::Done(Box::new(a.clone()), body));
                        }
                    }
                }
                Some(call) = self.manual.recv() => {
                    let snap = self.snapshots.borrow().clone();
                    let now = self.clock.now();
                    if inflight.len() >= MAX_IN_FLIGHT {
                        let _ = call.reply.send(ManualAnswer::Busy);
                    } else {
                        match self.remedies.manual(&snap, &call.agent, &call.action, now) {
                            None => {
                                let _ = call.reply.send(ManualAnswer::UnknownAgent);
                            }
                            Some(spec) => {
                                waiting.insert(spec.attempt, call.reply);
                                self.start(vec![spec], &mut inflight, &mut tasks);
                            }
                        }
                    }
                }
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Ok(()) = self.alerts.changed() => {}
                Ok(()) = role.changed() => {}
                _ = sleep_until(wake) => {}
            }
            self.liveness.tick("actions");
            let now = self.clock.now();
            let snap = self.snapshots.borrow_and_update().clone();
            let silences = self.alerts.borrow_and_update().silences.clone();
            let _ = role.borrow_and_update();
            // Only the leader acts; failing open is not leading: several
            // replicas would each restart the agent.
            let may_act = self.leadership.may_notify()
                && matches!(self.leadership.role(), Role::Alone | Role::Leader { .. });
            let silenced = |agent: Entry<'_>| {
                let Some(alert) = Alert::for_agent(agent, now) else {
                    return false;
                };
                silences
                    .iter()
                    .any(|s| s.is_active(now) && s.matchers.matches(&alert))
            };
            let calls = self.remedies.step(&snap, may_act, &silenced, now);
            if !calls.is_empty() && self.remedies.revision() != saved {
                // Durable before acted on (DESIGN §2 rule 3): a crash right
                // after cannot make these calls a second time.
                saved = self.remedies.revision();
                last_save = Instant::now();
                self.save().await;
            }
            self.start(calls, &mut inflight, &mut tasks);
            for event in self.remedies.take_events() {
                log_event(&event);
                match event {
                    RemedyEvent::BreakerOpened { .. } => breaker_open = true,
                    RemedyEvent::BreakerClosed => breaker_open = false,
                    _ => {}
                }
            }
            self.metrics.remediation_breaker(breaker_open);
            let view = self.remedies.view(now);
            self.view.send_if_modified(|old| {
                let changed = !same_view(old, &view);
                if changed {
                    *old = Arc::new(view);
                }
                changed
            });
            if self.remedies.revision() != saved && last_save + SAVE_EVERY <= Instant::now() {
                saved = self.remedies.revision();
                last_save = Instant::now();
                self.save().await;
            }
        }
        inflight.abort_all();
        if self.remedies.revision() != saved {
            self.save().await;
        }
    }

    /// Write `actions.json` (atomically; a failure keeps the previous
    /// file, is logged and counted).
    async fn save(&self) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let state = self.remedies.persist();
        let written = tokio::task::spawn_blocking(move || {
            write_json(
                &dir,
                STATE_FILE,
                &OnDisk {
                    version: STATE_VERSION,
                    remedies: &state,
                },
            )
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.metrics.state_save_failed(StateFile::Actions);
        error!(error = %error, file = STATE_FILE,
            "Cannot save the remediation state; calls made may be made again after a restart.");
    }

    /// Spawn `calls` (each bounded by its action's timeout).
    fn start(
        &self,
        calls: Vec<CallSpec>,
        inflight: &mut JoinSet<(u64, CallResult)>,
        tasks: &mut HashMap<tokio::task::Id, u64>,
    ) {
        for spec in calls {
            let Some(action) = self.config.action(&spec.action).cloned() else {
                // Checked when the config loads; a manual call names one
                // the API found.
                warn!(action = %spec.action, "No such action.");
                continue;
            };
            let client = self.client.clone();
            let metrics = self.metrics.clone();
            let attempt = spec.attempt;
            let handle = inflight.spawn(async move {
                let result = call(&client, &action, &spec).await;
                let label = if result.dry_run {
                    ActionResult::DryRun
                } else if result.ok {
                    ActionResult::Success
                } else if result
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("timed out"))
                {
                    ActionResult::Timeout
                } else {
                    ActionResult::Failure
                };
                metrics.action_called(&action.name, label, result.duration);
                (spec.attempt, result)
            });
            tasks.insert(handle.id(), attempt);
        }
    }
}

/// The view without its time: published only when something changed.
fn same_view(a: &RemedyView, b: &RemedyView) -> bool {
    a.breaker_open == b.breaker_open
        && a.cases == b.cases
        && a.attempts == b.attempts
        && a.reports == b.reports
        && a.last_action == b.last_action
        && a.dry_run == b.dry_run
        && a.taken_at.is_some() == b.taken_at.is_some()
}

fn log_event(event: &RemedyEvent) {
    match event {
        RemedyEvent::BreakerOpened { agents, max } => error!(
            agents,
            max,
            "Remediation circuit breaker open: more agents need an action at once than \
             remediation.max_agents; acting on none, their alerts fire."
        ),
        RemedyEvent::BreakerClosed => info!("Remediation circuit breaker closed."),
        RemedyEvent::Blocked { agent, block } => info!(
            agent = %agent,
            reason = %block.describe(),
            "Remediation waits."
        ),
        RemedyEvent::Recovered { agent, action } => info!(
            agent = %agent,
            action = %action,
            "Agent recovered after remediation."
        ),
        RemedyEvent::GaveUp { agent, end, note } => warn!(
            agent = %agent,
            end = ?end,
            note = %note,
            "Remediation gave up; the alert fires."
        ),
    }
}

/// Make one call; never longer than the action's timeout.
async fn call(client: &reqwest::Client, action: &ActionConfig, spec: &CallSpec) -> CallResult {
    let started = Instant::now();
    let ctx = body_context(
        spec.agent.as_str(),
        &spec.labels,
        spec.state.as_str(),
        &spec.reason,
        &spec
            .since
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        &action.name,
        spec.number,
    );
    // The URL (an id that cannot be a path segment) or the body (a value a
    // strict template cannot render) may not be made for this agent.
    let request = action
        .url
        .fill(spec.agent.as_str(), &spec.labels)
        .and_then(|url| Ok((url, render_body(action, &ctx)?)));
    let (url, body) = match request {
        Ok(r) => r,
        Err(e) => {
            warn!(agent = %spec.agent, action = %action.name, error = %e,
                "Action not called: its request cannot be made for this agent.");
            return CallResult {
                error: Some(e),
                ..CallResult::default()
            };
        }
    };
    let trigger = match spec.trigger {
        Trigger::Auto => "remediation",
        Trigger::Manual => "manual",
        Trigger::Report => "report",
    };
    if spec.dry_run {
        info!(agent = %spec.agent, action = %action.name, trigger, attempt = spec.number,
            method = %action.method, url = %action.url.redacted(),
            "Dry run: the action would be called.");
        return CallResult {
            ok: true,
            dry_run: true,
            ..CallResult::default()
        };
    }
    let mut req = client
        .request(action.method.clone(), &url)
        .timeout(action.timeout);
    let mut has_type = false;
    for (k, v) in &action.headers {
        has_type |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k, secrecy::ExposeSecret::expose_secret(v));
    }
    if let Some(b) = body {
        if !has_type {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        req = req.body(b);
    }
    let sent = tokio::time::timeout(action.timeout, async {
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let mut buf: Vec<u8> = Vec::new();
        // Bounded: the rest of a large answer is not read.
        while buf.len() < MAX_REPORT {
            match resp.chunk().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => break,
            }
        }
        let cut = buf.len() > MAX_REPORT;
        buf.truncate(MAX_REPORT);
        Ok::<_, reqwest::Error>((status, buf, cut))
    })
    .await;
    let duration = started.elapsed();
    let result = match sent {
        Err(_) => CallResult {
            error: Some(format!(
                "timed out after {}",
                humantime::format_duration(action.timeout)
            )),
            duration,
            ..CallResult::default()
        },
        Ok(Err(e)) => CallResult {
            error: Some(if e.is_timeout() {
                format!(
                    "timed out after {}",
                    humantime::format_duration(action.timeout)
                )
            } else {
                format!("no answer: {}", crate::sources::http::chain(&e))
            }),
            duration,
            ..CallResult::default()
        },
        Ok(Ok((status, buf, cut))) => {
            let ok = action.expects(status);
            let text = readable(&buf, cut);
            CallResult {
                ok,
                status: Some(status),
                error: (!ok).then(|| {
                    // The answer as sent, on one line.
                    let raw: String = String::from_utf8_lossy(&buf)
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    let quoted = cut_marked(raw.trim(), MAX_ERROR_ANSWER);
                    if quoted.is_empty() {
                        format!("answer {status}")
                    } else {
                        format!("answer {status}: {quoted}")
                    }
                }),
                duration,
                body: Some(text),
                dry_run: false,
            }
        }
    };
    let outcome = if result.ok { "success" } else { "failure" };
    info!(agent = %spec.agent, action = %action.name, trigger, attempt = spec.number,
        status = result.status, error = result.error.as_deref(),
        took_ms = duration.as_millis() as u64, outcome, "Action called.");
    result
}

/// An answer as people read it: JSON pretty-printed, other text as is
/// (control characters but newlines and tabs dropped), at most
/// [`MAX_REPORT`] bytes, marked where cut.
pub fn readable(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !cut && let Ok(v) = serde_json::from_str::<Value>(&text) {
        let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
        return cut_marked(&pretty, MAX_REPORT);
    }
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect();
    if cut {
        let mut s = cut_marked(&clean, MAX_REPORT.saturating_sub(4));
        if !s.ends_with('…') {
            s.push('…');
        }
        s
    } else {
        cut_marked(&clean, MAX_REPORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_made_readable_and_bounded() {
        assert_eq!(readable(br#"{"a":1}"#, false), "{\n  \"a\": 1\n}");
        assert_eq!(readable(b"plain\x07 text\n", false), "plain text\n");
        let big = vec![b'x'; MAX_REPORT];
        let r = readable(&big, true);
        assert!(r.len() <= MAX_REPORT, "{}", r.len());
        assert!(r.ends_with('…'));
        // Pretty-printing may grow JSON past the bound: cut too.
        let wide = format!("[{}]", vec!["1"; 3000].join(","));
        assert!(readable(wide.as_bytes(), false).len() <= MAX_REPORT);
    }
}
