//! `/metrics`: the sidecar's own metrics from a private `prometheus`
//! registry, and the per-agent families rendered straight from the
//! [`Snapshot`] by a small text encoder (the crate's `gather()` is two orders
//! of magnitude slower at 100k series).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::core::snapshot::SourceStatus;
use crate::core::{ErrorKind, Snapshot, SourceId, State, Timestamp};

const NS: &str = "agent_supervisor";

/// The sidecar's own metrics. Each instance owns its registry.
pub struct Metrics {
    registry: Registry,
    source_up: IntGaugeVec,
    scan_duration: HistogramVec,
    last_success: GaugeVec,
    source_errors: IntCounterVec,
    clock_offset: GaugeVec,
    transitions: IntCounterVec,
    events_dropped: IntCounterVec,
    heartbeats: IntCounterVec,
    http_status: IntGaugeVec,
    notifications: IntCounterVec,
    outbox_pending: IntGaugeVec,
    notification_latency: HistogramVec,
    alerts: IntGaugeVec,
    max_agent_series: usize,
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
        let events_dropped = IntCounterVec::new(
            opts(
                "events_dropped_total",
                "Events a full sink channel could not take.",
            ),
            &["sink"],
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
            Box::new(events_dropped.clone()),
            Box::new(heartbeats.clone()),
            Box::new(http_status.clone()),
            Box::new(notifications.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(notification_latency.clone()),
            Box::new(alerts.clone()),
            Box::new(build_info),
        ] {
            registry.register(c)?;
        }
        Ok(Self {
            registry,
            source_up,
            scan_duration,
            last_success,
            source_errors,
            clock_offset,
            transitions,
            events_dropped,
            heartbeats,
            http_status,
            notifications,
            outbox_pending,
            notification_latency,
            alerts,
            max_agent_series,
        })
    }

    /// Create the per-source series up front, so a source that never
    /// succeeds still shows `source_up 0` and zero error counters.
    pub fn register_source(&self, source: &SourceId, up: bool) {
        let s = source.as_str();
        self.source_up.with_label_values(&[s]).set(i64::from(up));
        for kind in ErrorKind::ALL {
            self.source_errors.with_label_values(&[s, kind.as_str()]);
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
            .with_label_values(&[source.as_str(), kind.as_str()])
            .inc();
    }

    pub fn source_up(&self, source: &SourceId, up: bool) {
        self.source_up
            .with_label_values(&[source.as_str()])
            .set(i64::from(up));
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
        for result in ["success", "failure", "dropped"] {
            self.notifications.with_label_values(&[receiver, result]);
        }
        self.outbox_pending.with_label_values(&[receiver]).set(0);
        self.notification_latency.with_label_values(&[receiver]);
    }

    /// One delivery attempt (`success`, `failure`) or a notification given
    /// up (`dropped`).
    pub fn notification(&self, receiver: &str, result: &str) {
        self.notifications
            .with_label_values(&[receiver, result])
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
    pub fn alerts(&self, kind: &str, firing: usize, silenced: usize) {
        self.alerts
            .with_label_values(&[kind, "false"])
            .set(firing as i64);
        self.alerts
            .with_label_values(&[kind, "true"])
            .set(silenced as i64);
    }

    pub fn transition(&self, from: State, to: State) {
        self.transitions
            .with_label_values(&[from.as_str(), to.as_str()])
            .inc();
    }

    pub fn event_dropped(&self, sink: &str) {
        self.events_dropped.with_label_values(&[sink]).inc();
    }

    /// `result`: `accepted`, `unauthorized`, `invalid`, `overloaded`.
    pub fn heartbeat_pushed(&self, result: &'static str) {
        self.heartbeats.with_label_values(&[result]).inc();
    }

    /// The whole `/metrics` body.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(4096 + snap.agents.len() * 900);
        let mut buf = Vec::new();
        // The text encoder only fails on a broken writer; a Vec is not one.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        render_agents(snap, self.max_agent_series, &mut out);
        out
    }

    /// Up/down of every source as the core sees it, from a snapshot.
    pub fn sync_sources(&self, snap: &Snapshot) {
        for s in &snap.sources {
            self.source_up(&s.name, s.status == SourceStatus::Up);
        }
    }
}

/// Escape a label value per the text exposition format.
fn escape(v: &str, out: &mut String) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {NS}_{name} {help}");
    let _ = writeln!(out, "# TYPE {NS}_{name} gauge");
}

fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(NS);
    out.push('_');
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push_str("} ");
    if value == 0.0 {
        out.push_str("0\n");
    } else if value == 1.0 {
        out.push_str("1\n");
    } else {
        let _ = writeln!(out, "{value}");
    }
}

/// A sample value, written without the float formatter where it can be
/// (`0`, `1`, integers, Unix times in microseconds): at 100k agents the
/// per-agent families are ~900k lines.
#[derive(Clone, Copy)]
enum Val {
    Int(i64),
    /// Microseconds, written as seconds with up to six decimals.
    Micros(i64),
    Float(f64),
}

impl Val {
    fn of(v: f64) -> Val {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            Val::Int(v as i64)
        } else {
            Val::Float(v)
        }
    }

    fn write(self, out: &mut String) {
        let mut b = itoa::Buffer::new();
        match self {
            Val::Int(i) => out.push_str(b.format(i)),
            Val::Micros(us) => {
                if us < 0 {
                    out.push('-');
                }
                let us = us.unsigned_abs();
                out.push_str(b.format(us / 1_000_000));
                let mut frac = us % 1_000_000;
                if frac != 0 {
                    let mut digits = [b'0'; 6];
                    for d in digits.iter_mut().rev() {
                        *d = b'0' + (frac % 10) as u8;
                        frac /= 10;
                    }
                    let len = 6 - digits.iter().rev().take_while(|&&d| d == b'0').count();
                    out.push('.');
                    for &d in &digits[..len] {
                        out.push(char::from(d));
                    }
                }
            }
            Val::Float(f) => {
                let _ = write!(out, "{f}");
            }
        }
        out.push('\n');
    }
}

/// One per-agent line: `{head}{agent id, escaped}{tail}{value}`, where
/// `head` is `agent_supervisor_<family>{agent="` and `tail` closes the
/// agent label, adds the others and the `} `.
fn agent_line(out: &mut String, head: &str, id: &str, tail: &str, v: Val) {
    out.push_str(head);
    escape(id, out);
    out.push_str(tail);
    v.write(out);
}

/// Per-agent families, for at most `max` agents (non-healthy first).
pub fn render_agents(snap: &Snapshot, max: usize, out: &mut String) {
    header(out, "agents", "Number of agents in each state.");
    for (state, n) in snap.counts() {
        series(out, "agents", &[("state", state.as_str())], n as f64);
    }

    let chosen: Vec<usize> = if snap.agents.len() <= max {
        (0..snap.agents.len()).collect()
    } else {
        let mut idx: Vec<usize> = (0..snap.agents.len())
            .filter(|&i| snap.agents[i].state != State::Healthy)
            .take(max)
            .collect();
        let room = max - idx.len();
        idx.extend(
            (0..snap.agents.len())
                .filter(|&i| snap.agents[i].state == State::Healthy)
                .take(room),
        );
        idx.sort_unstable();
        idx
    };
    out.reserve(chosen.len() * 700);
    header(
        out,
        "agent_series_omitted",
        "Agents left out of the per-agent series by metrics.max_agent_series.",
    );
    let _ = writeln!(
        out,
        "{NS}_agent_series_omitted {}",
        snap.agents.len() - chosen.len()
    );

    header(
        out,
        "agent_state",
        "Current state of each agent: 1 for its state, 0 for the others.",
    );
    const STATE_HEAD: &str = "agent_supervisor_agent_state{agent=\"";
    let state_tails = State::ALL.map(|s| (s, format!("\",state=\"{}\"}} ", s.as_str())));
    for &i in &chosen {
        let a = &snap.agents[i];
        for (s, tail) in &state_tails {
            let v = Val::Int(i64::from(*s == a.state));
            agent_line(out, STATE_HEAD, a.id.as_str(), tail, v);
        }
    }
    header(out, "agent_up", "1 when the agent is healthy, else 0.");
    for &i in &chosen {
        let a = &snap.agents[i];
        let up = Val::Int(i64::from(a.state == State::Healthy));
        agent_line(
            out,
            "agent_supervisor_agent_up{agent=\"",
            a.id.as_str(),
            "\"} ",
            up,
        );
    }
    // Per check: the tail names the source; most checks share a few
    // sources, so the escaped tail is rebuilt only when the source changes.
    let mut tails = TailCache::default();
    header(
        out,
        "agent_last_seen_timestamp_seconds",
        "Last heartbeat of each check, as a Unix timestamp.",
    );
    for &i in &chosen {
        let a = &snap.agents[i];
        for c in &a.checks {
            if let Some(t) = c.last_seen {
                agent_line(
                    out,
                    "agent_supervisor_agent_last_seen_timestamp_seconds{agent=\"",
                    a.id.as_str(),
                    tails.get(c.source.as_str()),
                    Val::Micros(t.timestamp_micros()),
                );
            }
        }
    }
    header(
        out,
        "agent_stale_after_seconds",
        "Threshold after which each check's heartbeat is stale.",
    );
    for &i in &chosen {
        let a = &snap.agents[i];
        for c in &a.checks {
            agent_line(
                out,
                "agent_supervisor_agent_stale_after_seconds{agent=\"",
                a.id.as_str(),
                tails.get(c.source.as_str()),
                Val::of(c.threshold_seconds),
            );
        }
    }
    header(
        out,
        "agent_info",
        "Labels of each agent from config; always 1.",
    );
    // Agents of one rule share its labels (one Arc): their tail is built
    // once.
    let mut info_tail = String::new();
    let mut info_of: Option<&Arc<crate::core::Labels>> = None;
    for &i in &chosen {
        let a = &snap.agents[i];
        if !info_of.is_some_and(|l| Arc::ptr_eq(l, &a.labels)) {
            info_tail.clear();
            info_tail.push('"');
            for (k, v) in a.labels.iter() {
                info_tail.push(',');
                info_tail.push_str(k);
                info_tail.push_str("=\"");
                escape(v, &mut info_tail);
                info_tail.push('"');
            }
            info_tail.push_str("} ");
            info_of = Some(&a.labels);
        }
        agent_line(
            out,
            "agent_supervisor_agent_info{agent=\"",
            a.id.as_str(),
            &info_tail,
            Val::Int(1),
        );
    }
}

/// `",source="<escaped>"} ` for the last source asked for.
#[derive(Default)]
struct TailCache {
    source: String,
    tail: String,
}

impl TailCache {
    fn get(&mut self, source: &str) -> &str {
        if self.tail.is_empty() || self.source != source {
            self.source.clear();
            self.source.push_str(source);
            self.tail.clear();
            self.tail.push_str("\",source=\"");
            escape(source, &mut self.tail);
            self.tail.push_str("\"} ");
        }
        &self.tail
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::core::snapshot::{AgentView, CheckView};
    use crate::core::{AgentId, Labels};

    fn agent(id: &str, state: State) -> AgentView {
        let now = Utc::now();
        AgentView {
            id: AgentId::from(id),
            state,
            since: now,
            reason: String::new(),
            expected: false,
            labels: Arc::new(Labels::from([("team".to_string(), "x\"y".to_string())])),
            checks: vec![CheckView {
                source: "redis".into(),
                state,
                since: now,
                reason: String::new(),
                last_seen: Some(now),
                age_seconds: Some(0.0),
                threshold_seconds: 30.0,
                status: None,
            }],
        }
    }

    /// The per-agent lines of every agent, written the straightforward way
    /// (generic `series()`, float formatter): what the fast renderer must
    /// agree with.
    fn reference_render(snap: &Snapshot, out: &mut String) {
        for a in &snap.agents {
            let id = a.id.as_str();
            for s in State::ALL {
                let v = if s == a.state { 1.0 } else { 0.0 };
                series(
                    out,
                    "agent_state",
                    &[("agent", id), ("state", s.as_str())],
                    v,
                );
            }
            let up = if a.state == State::Healthy { 1.0 } else { 0.0 };
            series(out, "agent_up", &[("agent", id)], up);
            for c in &a.checks {
                let labels = [("agent", id), ("source", c.source.as_str())];
                if let Some(t) = c.last_seen {
                    let secs = t.timestamp_micros() as f64 / 1e6;
                    series(out, "agent_last_seen_timestamp_seconds", &labels, secs);
                }
                series(
                    out,
                    "agent_stale_after_seconds",
                    &labels,
                    c.threshold_seconds,
                );
            }
            let mut labels: Vec<(&str, &str)> = vec![("agent", id)];
            labels.extend(a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            series(out, "agent_info", &labels, 1.0);
        }
    }

    /// `series{labels} value` lines as a map, for comparing renderings.
    fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.parse::<f64>().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_fast_renderer_says_what_the_straightforward_one_says() {
        let mut snap = Snapshot::empty(Utc::now());
        let mut odd = agent("we\\ird\"id\nx", State::Failing);
        odd.checks[0].source = "so\"urce".into();
        odd.checks[0].threshold_seconds = 2.5;
        odd.checks[0].last_seen = Some(
            chrono::DateTime::parse_from_rfc3339("1969-12-31T23:59:58.250001Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let mut never = agent("never", State::Missing);
        never.checks[0].last_seen = None;
        snap.agents = vec![
            agent("a", State::Healthy),
            agent("b", State::Stale),
            never,
            odd,
        ];
        let (mut fast, mut slow) = (String::new(), String::new());
        render_agents(&snap, 10, &mut fast);
        reference_render(&snap, &mut slow);
        let mut f = samples(&fast);
        f.retain(|k, _| {
            k.starts_with("agent_supervisor_agent_")
                && !k.starts_with("agent_supervisor_agent_series_omitted")
        });
        let s = samples(&slow);
        assert_eq!(f.keys().collect::<Vec<_>>(), s.keys().collect::<Vec<_>>());
        for (k, v) in &f {
            assert!((v - s[k]).abs() < 1e-6, "{k}: {v} vs {}", s[k]);
        }
        assert!(fast.contains("-1.749999\n"), "{fast}");
        assert!(fast.contains("} 2.5\n"));
        assert!(fast.contains("} 30\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape("a\\b\"c\nd", &mut s);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn cardinality_bound_keeps_non_healthy_agents_first() {
        let mut snap = Snapshot::empty(Utc::now());
        snap.agents = vec![
            agent("a", State::Healthy),
            agent("b", State::Healthy),
            agent("c", State::Stale),
        ];
        let mut out = String::new();
        render_agents(&snap, 2, &mut out);
        assert!(out.contains("agent_supervisor_agent_series_omitted 1"));
        assert!(out.contains(r#"agent_supervisor_agent_up{agent="c"} 0"#));
        assert!(out.contains(r#"agent_supervisor_agent_up{agent="a"} 1"#));
        assert!(!out.contains(r#"agent_up{agent="b"}"#));
        assert!(out.contains(r#"agent_supervisor_agents{state="healthy"} 2"#));
        assert!(out.contains(r#"team="x\"y""#));
    }
}
