//! The sidecar's own metrics: a private `prometheus` registry behind domain
//! methods. Sources, the core's driver and the alert workers record into it;
//! the `/metrics` sink ([`crate::sinks::metrics`]) only reads it.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::snapshot::SourceStatus;
use crate::core::{ErrorKind, Snapshot, SourceId, SourceKind, State, Timestamp};

/// The prefix of every metric name.
pub const NS: &str = "agent_supervisor";

/// A label value from a closed set: what the registry accepts as a label,
/// apart from the names of sources, receivers and agents.
pub trait LabelValue: Copy {
    fn label(self) -> &'static str;
}

impl LabelValue for ErrorKind {
    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl LabelValue for State {
    fn label(self) -> &'static str {
        self.as_str()
    }
}

/// The result of one notification delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver took it.
    Success,
    /// This attempt failed; it will be retried.
    Failure,
    /// Given up: past `give_up_after`, or pushed out of a full outbox.
    Dropped,
    /// Refused for good, not retried: the receiver answered a 4xx other
    /// than 408, 425 and 429, or the body could not be rendered.
    Rejected,
}

impl Delivery {
    pub const ALL: [Delivery; 4] = [
        Delivery::Success,
        Delivery::Failure,
        Delivery::Dropped,
        Delivery::Rejected,
    ];
}

impl LabelValue for Delivery {
    fn label(self) -> &'static str {
        match self {
            Delivery::Success => "success",
            Delivery::Failure => "failure",
            Delivery::Dropped => "dropped",
            Delivery::Rejected => "rejected",
        }
    }
}

/// What became of a heartbeat pushed to `/api/v1/heartbeats/{agent}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    Unauthorized,
    Invalid,
    /// A new agent id past the push source's `max_agents`.
    TooManyAgents,
    /// The core's queue was full.
    Overloaded,
}

impl LabelValue for Pushed {
    fn label(self) -> &'static str {
        match self {
            Pushed::Accepted => "accepted",
            Pushed::Unauthorized => "unauthorized",
            Pushed::Invalid => "invalid",
            Pushed::TooManyAgents => "too_many_agents",
            Pushed::Overloaded => "overloaded",
        }
    }
}

/// The sidecar's own metrics. Each instance owns its registry.
pub struct Metrics {
    registry: Registry,
    source_up: IntGaugeVec,
    scan_duration: HistogramVec,
    last_success: GaugeVec,
    source_errors: IntCounterVec,
    clock_offset: GaugeVec,
    transitions: IntCounterVec,
    point_reads_dropped: IntCounterVec,
    heartbeats: IntCounterVec,
    http_status: IntGaugeVec,
    notifications: IntCounterVec,
    outbox_pending: IntGaugeVec,
    notification_latency: HistogramVec,
    alerts: IntGaugeVec,
    task_restarts: IntCounterVec,
    state_set_aside: IntCounterVec,
    state_save_errors: IntCounterVec,
    ha: HaMetrics,
    actions: ActionMetrics,
    max_agent_series: usize,
}

/// Results of an action call (`actions_total{result}`): a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionResult {
    /// Answered with an expected status.
    Success,
    /// An unexpected status, or no answer.
    Failure,
    /// No answer within the action's timeout.
    Timeout,
    /// `dry_run`: not sent.
    DryRun,
}

impl ActionResult {
    pub const ALL: [ActionResult; 4] = [
        ActionResult::Success,
        ActionResult::Failure,
        ActionResult::Timeout,
        ActionResult::DryRun,
    ];
}

impl LabelValue for ActionResult {
    fn label(self) -> &'static str {
        match self {
            ActionResult::Success => "success",
            ActionResult::Failure => "failure",
            ActionResult::Timeout => "timeout",
            ActionResult::DryRun => "dry_run",
        }
    }
}

struct ActionMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
    breaker_open: IntGauge,
}

impl ActionMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            calls: IntCounterVec::new(
                opts(
                    "actions_total",
                    "Calls of an action (remediation, reports, by hand) by result: success, failure, timeout, dry_run.",
                ),
                &["action", "result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "action_duration_seconds",
                    "Duration of each action call, until its answer or its timeout.",
                )
                .namespace(NS)
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0]),
                &["action"],
            )?,
            breaker_open: IntGauge::with_opts(opts(
                "remediation_breaker_open",
                "1 while more agents need an action at once than remediation.max_agents: none is acted on.",
            ))?,
        })
    }
}

/// The `ha_*` families, registered only when `ha:` is configured (a
/// sidecar alone has no leader to report).
struct HaMetrics {
    leader: IntGauge,
    epoch: IntGauge,
    fail_open: IntGauge,
    lease_errors: IntCounter,
}

impl HaMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            leader: IntGauge::with_opts(opts(
                "ha_leader",
                "1 while this replica holds the leader lease (it alone notifies); 0 otherwise.",
            ))?,
            epoch: IntGauge::with_opts(opts(
                "ha_epoch",
                "Epoch (fencing token) of the lease this replica last held or saw taken.",
            ))?,
            fail_open: IntGauge::with_opts(opts(
                "ha_fail_open",
                "1 while the lease store has been unreachable past ha.fail_open_after: every replica notifies on its own.",
            ))?,
            lease_errors: IntCounter::with_opts(opts(
                "ha_lease_errors_total",
                "Calls to the lease store that failed (unreachable, timed out, refused).",
            ))?,
        })
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    /// `max_agent_series` bounds the per-agent series (see the config).
    pub fn new(max_agent_series: usize) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let source_up = IntGaugeVec::new(
            opts("source_up", "1 when the last read of the source succeeded."),
            &["source"],
        )?;
        let scan_duration = HistogramVec::new(
            HistogramOpts::new(
                "source_scan_duration_seconds",
                "Duration of each full scan of a source.",
            )
            .namespace(NS)
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["source"],
        )?;
        let last_success = GaugeVec::new(
            opts(
                "source_last_success_timestamp_seconds",
                "Time of the last successful read of the source.",
            ),
            &["source"],
        )?;
        let source_errors = IntCounterVec::new(
            opts(
                "source_errors_total",
                "Failed reads and unusable values, by kind.",
            ),
            &["source", "kind"],
        )?;
        let clock_offset = GaugeVec::new(
            opts(
                "source_clock_offset_seconds",
                "Offset of the datastore's clock from the sidecar's (remote minus local).",
            ),
            &["source"],
        )?;
        let transitions = IntCounterVec::new(
            opts("transitions_total", "Agent state transitions."),
            &["from", "to"],
        )?;
        let point_reads_dropped = IntCounterVec::new(
            opts(
                "point_reads_dropped_total",
                "Agents whose point read was not requested because the source's queue was full (the next scan reads them).",
            ),
            &["source"],
        )?;
        let heartbeats = IntCounterVec::new(
            opts(
                "pushed_heartbeats_total",
                "Heartbeats received on the push endpoint, by result.",
            ),
            &["result"],
        )?;
        let http_status = IntGaugeVec::new(
            opts(
                "http_last_status_code",
                "HTTP status code of the last probe of an http source (0: no answer).",
            ),
            &["source"],
        )?;
        let notifications = IntCounterVec::new(
            opts(
                "notifications_total",
                "Notification delivery attempts by result: success, failure (retried), dropped (given up).",
            ),
            &["receiver", "result"],
        )?;
        let outbox_pending = IntGaugeVec::new(
            opts(
                "outbox_pending",
                "Notifications written to the outbox and not yet delivered.",
            ),
            &["receiver"],
        )?;
        let notification_latency = HistogramVec::new(
            HistogramOpts::new(
                "notification_latency_seconds",
                "Time from an alert starting to its first successful delivery to a receiver.",
            )
            .namespace(NS)
            .buckets(vec![
                1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
            ]),
            &["receiver"],
        )?;
        let alerts = IntGaugeVec::new(
            opts(
                "alerts",
                "Firing alerts by kind; silenced ones separately (silenced=\"true\").",
            ),
            &["kind", "silenced"],
        )?;
        let task_restarts = IntCounterVec::new(
            opts(
                "task_restarts_total",
                "Runs of a long-lived task (a source) that panicked or ended and were started again.",
            ),
            &["task"],
        )?;
        let state_set_aside = IntCounterVec::new(
            opts(
                "state_files_set_aside_total",
                "State files that could not be read at start and were renamed aside (<name>.corrupt-<time>).",
            ),
            &["file"],
        )?;
        let state_save_errors = IntCounterVec::new(
            opts(
                "state_save_errors_total",
                "Failed writes of a state file (full disk, permissions); the previous file is kept.",
            ),
            &["file"],
        )?;
        let build_info = IntGaugeVec::new(
            opts("build_info", "Always 1; the version is a label."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(source_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(scan_duration.clone()),
            Box::new(last_success.clone()),
            Box::new(source_errors.clone()),
            Box::new(clock_offset.clone()),
            Box::new(transitions.clone()),
            Box::new(point_reads_dropped.clone()),
            Box::new(heartbeats.clone()),
            Box::new(http_status.clone()),
            Box::new(notifications.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(notification_latency.clone()),
            Box::new(alerts.clone()),
            Box::new(task_restarts.clone()),
            Box::new(state_set_aside.clone()),
            Box::new(state_save_errors.clone()),
            Box::new(build_info),
        ] {
            registry.register(c)?;
        }
        // The standard process_* families (CPU, memory, file descriptors,
        // start time), without our prefix, as every exporter names them.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            source_up,
            scan_duration,
            last_success,
            source_errors,
            clock_offset,
            transitions,
            point_reads_dropped,
            heartbeats,
            http_status,
            notifications,
            outbox_pending,
            notification_latency,
            alerts,
            task_restarts,
            state_set_aside,
            state_save_errors,
            ha: HaMetrics::new()?,
            actions: ActionMetrics::new()?,
            max_agent_series,
        })
    }

    /// Register the `ha_*` families (once, when `ha:` is configured).
    pub fn register_ha(&self) -> Result<(), prometheus::Error> {
        for c in [
            Box::new(self.ha.leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.ha.epoch.clone()),
            Box::new(self.ha.fail_open.clone()),
            Box::new(self.ha.lease_errors.clone()),
        ] {
            self.registry.register(c)?;
        }
        Ok(())
    }

    /// This replica's role in the lease.
    pub fn ha_role(&self, leader: bool, epoch: u64, fail_open: bool) {
        self.ha.leader.set(i64::from(leader));
        self.ha.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        self.ha.fail_open.set(i64::from(fail_open));
    }

    pub fn ha_lease_error(&self) {
        self.ha.lease_errors.inc();
    }

    /// Register the action families (once, when `actions:` is configured),
    /// with a zero series for every action and result.
    pub fn register_actions<'a>(
        &self,
        actions: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), prometheus::Error> {
        for c in [
            Box::new(self.actions.calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.actions.duration.clone()),
            Box::new(self.actions.breaker_open.clone()),
        ] {
            self.registry.register(c)?;
        }
        for a in actions {
            for r in ActionResult::ALL {
                self.actions.calls.with_label_values(&[a, r.label()]);
            }
        }
        Ok(())
    }

    /// One action call and how long it took.
    pub fn action_called(&self, action: &str, result: ActionResult, took: Duration) {
        self.actions
            .calls
            .with_label_values(&[action, result.label()])
            .inc();
        if result != ActionResult::DryRun {
            self.actions
                .duration
                .with_label_values(&[action])
                .observe(took.as_secs_f64());
        }
    }

    pub fn remediation_breaker(&self, open: bool) {
        self.actions.breaker_open.set(i64::from(open));
    }

    /// Create the per-source series up front, so a source that never
    /// succeeds still shows `source_up 0` and zero counters for the error
    /// kinds it can have.
    pub fn register_source(&self, source: &SourceId, kind: SourceKind) {
        let s = source.as_str();
        self.source_up
            .with_label_values(&[s])
            .set(i64::from(kind == SourceKind::Push));
        for error in kind.error_kinds() {
            self.source_errors.with_label_values(&[s, error.label()]);
        }
    }

    pub fn scan_succeeded(&self, source: &SourceId, took: Duration, at: Timestamp) {
        let s = source.as_str();
        self.scan_duration
            .with_label_values(&[s])
            .observe(took.as_secs_f64());
        self.last_success
            .with_label_values(&[s])
            .set(at.timestamp_micros() as f64 / 1e6);
    }

    pub fn scan_failed(&self, source: &SourceId, kind: ErrorKind, took: Duration) {
        let s = source.as_str();
        if !took.is_zero() {
            self.scan_duration
                .with_label_values(&[s])
                .observe(took.as_secs_f64());
        }
        self.source_error(source, kind);
    }

    pub fn source_error(&self, source: &SourceId, kind: ErrorKind) {
        self.source_errors
            .with_label_values(&[source.as_str(), kind.label()])
            .inc();
    }

    pub fn clock_offset(&self, source: &SourceId, seconds: f64) {
        self.clock_offset
            .with_label_values(&[source.as_str()])
            .set(seconds);
    }

    /// Status code of an http source's last probe (0 when nothing answered).
    pub fn http_status(&self, source: &SourceId, code: u16) {
        self.http_status
            .with_label_values(&[source.as_str()])
            .set(i64::from(code));
    }

    /// Create a receiver's series up front, so dashboards and rules see
    /// zeros rather than nothing.
    pub fn register_receiver(&self, receiver: &str) {
        for result in Delivery::ALL {
            self.notifications
                .with_label_values(&[receiver, result.label()]);
        }
        self.outbox_pending.with_label_values(&[receiver]).set(0);
        self.notification_latency.with_label_values(&[receiver]);
    }

    /// One delivery attempt (`success`, `failure`) or a notification given
    /// up (`dropped`).
    pub fn notification(&self, receiver: &str, result: Delivery) {
        self.notifications
            .with_label_values(&[receiver, result.label()])
            .inc();
    }

    pub fn outbox_pending(&self, receiver: &str, n: usize) {
        self.outbox_pending
            .with_label_values(&[receiver])
            .set(n as i64);
    }

    pub fn notification_latency(&self, receiver: &str, seconds: f64) {
        self.notification_latency
            .with_label_values(&[receiver])
            .observe(seconds.max(0.0));
    }

    /// Firing alerts of a kind: (unsilenced, silenced).
    pub fn alerts(&self, kind: impl LabelValue, firing: usize, silenced: usize) {
        self.alerts
            .with_label_values(&[kind.label(), "false"])
            .set(firing as i64);
        self.alerts
            .with_label_values(&[kind.label(), "true"])
            .set(silenced as i64);
    }

    pub fn transition(&self, from: State, to: State) {
        self.transitions
            .with_label_values(&[from.label(), to.label()])
            .inc();
    }

    /// `agents` point reads of `source` not requested: its queue was full.
    pub fn point_reads_dropped(&self, source: &SourceId, agents: usize) {
        self.point_reads_dropped
            .with_label_values(&[source.as_str()])
            .inc_by(agents as u64);
    }

    /// Create a state file's series up front (zeros).
    pub fn register_state_file(&self, file: impl LabelValue) {
        self.state_set_aside.with_label_values(&[file.label()]);
        self.state_save_errors.with_label_values(&[file.label()]);
    }

    /// A state file could not be read at start and was set aside.
    pub fn state_file_set_aside(&self, file: impl LabelValue) {
        self.state_set_aside
            .with_label_values(&[file.label()])
            .inc();
    }

    /// A write of a state file failed.
    pub fn state_save_failed(&self, file: impl LabelValue) {
        self.state_save_errors
            .with_label_values(&[file.label()])
            .inc();
    }

    /// Create a restartable task's series up front (zero restarts).
    pub fn register_task(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]);
    }

    /// A run of `task` failed and it is started again.
    pub fn task_restarted(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]).inc();
    }

    pub fn heartbeat_pushed(&self, result: Pushed) {
        self.heartbeats.with_label_values(&[result.label()]).inc();
    }

    /// The registry's own families in the text format.
    pub fn encode_registry(&self, out: &mut String) {
        let mut buf = Vec::new();
        // The text encoder only fails on a broken writer; a Vec is not one.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
    }

    /// The bound on agents with per-agent series (`metrics.max_agent_series`).
    pub fn max_agent_series(&self) -> usize {
        self.max_agent_series
    }

    /// Up/down of every source as the core sees it, from a snapshot.
    pub fn sync_sources(&self, snap: &Snapshot) {
        for s in &snap.sources {
            self.source_up
                .with_label_values(&[s.name.as_str()])
                .set(i64::from(s.status == SourceStatus::Up));
        }
    }
}
