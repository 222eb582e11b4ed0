//! `/metrics`: the registry's families ([`Metrics`]) followed by the
//! per-agent families rendered straight from the [`Snapshot`] by a small
//! text encoder (the crate's `gather()` is two orders of magnitude slower at
//! 100k series).

use std::fmt::Write as _;
use std::sync::Arc;

use futures::StreamExt;

use crate::core::{Snapshot, State};
use crate::telemetry::metrics::{Metrics, NS};

/// The whole `/metrics` body.
pub fn render(metrics: &Metrics, snap: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + text_capacity(metrics, snap));
    metrics.encode_registry(&mut out);
    render_agents(snap, metrics.max_agent_series(), &mut out);
    out
}

/// Parts of a streamed `/metrics` body are about this size.
const PART: usize = 64 * 1024;

/// The whole `/metrics` body for `snap` as it is sent: the registry's
/// families (small, always current), then the per-agent families written
/// a part of about [`PART`] bytes at a time as the client takes them, so a
/// scrape holds one part, not the text of the fleet.
pub fn stream(
    metrics: &Metrics,
    snap: Arc<Snapshot>,
) -> impl futures::Stream<Item = String> + Send + 'static {
    let mut registry = String::with_capacity(16 * 1024);
    metrics.encode_registry(&mut registry);
    let agents = AgentText::new(snap, metrics.max_agent_series());
    futures::stream::once(async move { registry }).chain(futures::stream::unfold(
        Some(agents),
        |text| async move {
            let mut text = text?;
            let mut out = String::with_capacity(PART + 4096);
            let more = text.write_next(&mut out, PART);
            Some((out, more.then_some(text)))
        },
    ))
}

/// About the size of the per-agent text: the agents rendered (at most
/// `max_agent_series`) at ~640 bytes each (~615 with one label and a
/// 10-character id), so that the text is written without growing.
fn text_capacity(metrics: &Metrics, snap: &Snapshot) -> usize {
    snap.len().min(metrics.max_agent_series()) * 640
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
    let mut text = AgentText::new(snap, max);
    while text.write_next(out, usize::MAX) {}
}

/// The per-agent families of a snapshot, written a part at a time (so a
/// scrape of a large fleet is sent as it is written, never held whole).
pub struct AgentText<S> {
    snap: S,
    /// The agents rendered, by index, in order; `None`: all of them.
    chosen: Option<Vec<usize>>,
    /// The family being written (see [`AgentText::write_next`]) and the
    /// next agent of it, by position in `chosen`.
    family: usize,
    at: usize,
    /// Per check: the tail names the source; most checks share a few
    /// sources, so the escaped tail is rebuilt only when the source changes.
    tails: TailCache,
    /// Agents of one rule share its labels (one Arc): their `agent_info`
    /// tail is built once.
    info_tail: String,
    info_of: Option<Arc<crate::core::Labels>>,
    /// `",state="<state>"} ` for each state.
    state_tails: [(State, String); 5],
}

/// Families written after `agents` and `agent_series_omitted`, in order.
const AGENT_FAMILIES: usize = 5;

impl<S: std::ops::Deref<Target = Snapshot>> AgentText<S> {
    pub fn new(snap: S, max: usize) -> Self {
        let chosen = (snap.len() > max).then(|| choose(&snap, max));
        AgentText {
            snap,
            chosen,
            family: 0,
            at: 0,
            tails: TailCache::default(),
            info_tail: String::new(),
            info_of: None,
            state_tails: State::ALL.map(|s| (s, format!("\",state=\"{}\"}} ", s.as_str()))),
        }
    }

    fn rendered(&self) -> usize {
        self.chosen.as_ref().map_or(self.snap.len(), Vec::len)
    }

    /// Write the next part, stopping once `out` has grown by `budget`
    /// bytes or more; false once everything is written.
    pub fn write_next(&mut self, out: &mut String, budget: usize) -> bool {
        let start = out.len();
        let full = |out: &String| out.len() - start >= budget;
        if self.family == 0 {
            header(out, "agents", "Number of agents in each state.");
            for (state, n) in self.snap.counts() {
                series(out, "agents", &[("state", state.as_str())], n as f64);
            }
            header(
                out,
                "agent_series_omitted",
                "Agents left out of the per-agent series by metrics.max_agent_series.",
            );
            let _ = writeln!(
                out,
                "{NS}_agent_series_omitted {}",
                self.snap.len() - self.rendered()
            );
            self.family = 1;
            self.at = 0;
        }
        while self.family <= AGENT_FAMILIES {
            if self.at == 0 {
                self.family_header(out);
            }
            while self.at < self.rendered() {
                let i = match &self.chosen {
                    Some(c) => c.get(self.at).copied().unwrap_or(usize::MAX),
                    None => self.at,
                };
                self.at += 1;
                self.agent_lines(i, out);
                if full(out) {
                    return true;
                }
            }
            self.family += 1;
            self.at = 0;
        }
        false
    }

    fn family_header(&self, out: &mut String) {
        match self.family {
            1 => header(
                out,
                "agent_state",
                "Current state of each agent: 1 for its state, 0 for the others.",
            ),
            2 => header(out, "agent_up", "1 when the agent is healthy, else 0."),
            3 => header(
                out,
                "agent_last_seen_timestamp_seconds",
                "Last heartbeat of each check, as a Unix timestamp.",
            ),
            4 => header(
                out,
                "agent_stale_after_seconds",
                "Threshold after which each check's heartbeat is stale.",
            ),
            _ => header(
                out,
                "agent_info",
                "Labels of each agent from config; always 1.",
            ),
        }
    }

    /// The lines of agent `i` in the current family.
    fn agent_lines(&mut self, i: usize, out: &mut String) {
        let Some(a) = self.snap.get(i) else {
            return;
        };
        let id = a.id.as_str();
        match self.family {
            1 => {
                const STATE_HEAD: &str = "agent_supervisor_agent_state{agent=\"";
                for (s, tail) in &self.state_tails {
                    let v = Val::Int(i64::from(*s == a.state));
                    agent_line(out, STATE_HEAD, id, tail, v);
                }
            }
            2 => {
                let up = Val::Int(i64::from(a.state == State::Healthy));
                agent_line(out, "agent_supervisor_agent_up{agent=\"", id, "\"} ", up);
            }
            3 => {
                for (c, last_seen) in a.checks() {
                    if let Some(t) = last_seen {
                        agent_line(
                            out,
                            "agent_supervisor_agent_last_seen_timestamp_seconds{agent=\"",
                            id,
                            self.tails.get(c.source.as_str()),
                            Val::Micros(t.timestamp_micros()),
                        );
                    }
                }
            }
            4 => {
                for c in &a.checks {
                    agent_line(
                        out,
                        "agent_supervisor_agent_stale_after_seconds{agent=\"",
                        id,
                        self.tails.get(c.source.as_str()),
                        Val::of(c.threshold_seconds),
                    );
                }
            }
            _ => {
                if !self
                    .info_of
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &a.labels))
                {
                    self.info_tail.clear();
                    self.info_tail.push('"');
                    for (k, v) in a.labels.iter() {
                        self.info_tail.push(',');
                        self.info_tail.push_str(k);
                        self.info_tail.push_str("=\"");
                        escape(v, &mut self.info_tail);
                        self.info_tail.push('"');
                    }
                    self.info_tail.push_str("} ");
                    self.info_of = Some(a.labels.clone());
                }
                agent_line(
                    out,
                    "agent_supervisor_agent_info{agent=\"",
                    id,
                    &self.info_tail,
                    Val::Int(1),
                );
            }
        }
    }
}

/// The `max` agents rendered when there are more, by index, in order:
/// configured or polled agents before agents only pushes created (anyone
/// who may push must not crowd real agents out), the ones not healthy
/// first within each. The agents not healthy are found by the snapshot's
/// chunks that hold some, and healthy ones are taken from the start until
/// there is room for no more: a scrape of a large fleet visits about `max`
/// agents, not the fleet.
fn choose(snap: &Snapshot, max: usize) -> Vec<usize> {
    let push: Vec<&str> = snap
        .sources
        .iter()
        .filter(|s| s.kind == "push")
        .map(|s| s.name.as_str())
        .collect();
    let pushed_only = |a: &crate::core::snapshot::AgentView| {
        !a.expected
            && !a.checks.is_empty()
            && a.checks.iter().all(|c| push.contains(&c.source.as_str()))
    };
    let not_healthy: Vec<State> = State::ALL
        .into_iter()
        .filter(|s| *s != State::Healthy)
        .collect();
    let mut idx: Vec<usize> = Vec::with_capacity(max);
    for (pushed, healthy) in [(false, false), (false, true), (true, false), (true, true)] {
        let states: &[State] = if healthy {
            &[State::Healthy]
        } else {
            &not_healthy
        };
        for &state in states {
            let room = max - idx.len();
            idx.extend(
                snap.in_state(state, 0)
                    .filter(|(_, a)| pushed_only(a) == pushed)
                    .map(|(i, _)| i)
                    .take(room),
            );
        }
    }
    idx.sort_unstable();
    idx
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
    use crate::core::Labels;
    use crate::core::snapshot::AgentView;

    fn agent(id: &str, state: State) -> AgentView {
        AgentView::with_one_check(id, state, "redis", "x\"y", Utc::now())
    }

    /// The per-agent lines of every agent, written the straightforward way
    /// (generic `series()`, float formatter): what the fast renderer must
    /// agree with.
    fn reference_render(snap: &Snapshot, out: &mut String) {
        for a in snap.iter() {
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
            for (c, last_seen) in a.checks() {
                let labels = [("agent", id), ("source", c.source.as_str())];
                if let Some(t) = last_seen {
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
        let odd_seen = chrono::DateTime::parse_from_rfc3339("1969-12-31T23:59:58.250001Z")
            .unwrap()
            .with_timezone(&Utc);
        let now = snap.taken_at;
        snap = with_beats(
            snap,
            vec![
                (agent("a", State::Healthy), Some(now)),
                (agent("b", State::Stale), Some(now)),
                (agent("never", State::Missing), None),
                (odd, Some(odd_seen)),
            ],
        );
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

    /// Written a part at a time, whatever the size of the parts, the text
    /// is the text written at once, for every agent or past the bound.
    #[test]
    fn the_text_written_in_parts_is_the_text_written_at_once() {
        let now = Utc::now();
        let agents = (0..300)
            .map(|i| {
                let state = if i % 7 == 0 {
                    State::Stale
                } else {
                    State::Healthy
                };
                agent(&format!("agent_{i:03}"), state)
            })
            .collect();
        let snap = with_agents(Snapshot::empty(now), agents);
        for max in [1000, 120] {
            let mut whole = String::new();
            render_agents(&snap, max, &mut whole);
            for budget in [1, 100, 4096, usize::MAX] {
                let mut text = AgentText::new(&snap, max);
                let (mut parts, mut out) = (0, String::new());
                loop {
                    let mut part = String::new();
                    let more = text.write_next(&mut part, budget);
                    parts += 1;
                    out.push_str(&part);
                    if !more {
                        break;
                    }
                }
                assert_eq!(out, whole, "max {max}, parts of {budget} bytes");
                if budget == 1 {
                    assert!(parts > 300, "{parts} parts");
                }
            }
        }
    }

    /// The streamed body: the registry's families, then the agents'.
    #[tokio::test]
    async fn the_streamed_body_is_the_whole_body() {
        let metrics = Metrics::new(10).unwrap();
        let snap = with_agents(Snapshot::empty(Utc::now()), vec![agent("a", State::Stale)]);
        let body: String = stream(&metrics, Arc::new(snap.clone()))
            .collect::<Vec<_>>()
            .await
            .concat();
        assert!(body.contains("agent_supervisor_agent_up{agent=\"a\"} 0"));
        let agents_part = |body: &str| {
            let at = body.find("# HELP agent_supervisor_agents ").unwrap();
            body[at..].to_string()
        };
        assert_eq!(agents_part(&body), agents_part(&render(&metrics, &snap)));
    }

    /// Past the series bound, agents only pushes created come after the
    /// polled ones, even stale ones that sort first: a client that may
    /// push cannot crowd real agents out of /metrics.
    #[test]
    fn pushed_agents_never_displace_polled_ones_past_the_bound() {
        use crate::core::snapshot::{SourceStatus, SourceView};
        let now = Utc::now();
        let mut snap = Snapshot::empty(now);
        let source = |name: &str, kind: &str| SourceView {
            name: name.into(),
            kind: kind.into(),
            status: SourceStatus::Up,
            since: now,
            last_success: None,
            last_scan_started: None,
            error: None,
            checks: 0,
        };
        snap.sources = vec![source("redis", "redis"), source("push", "push")];
        let pushed = |id: &str| AgentView::with_one_check(id, State::Stale, "push", "t", now);
        snap = with_agents(
            snap,
            vec![
                pushed("aaa-fake-1"),
                pushed("aaa-fake-2"),
                agent("real-healthy", State::Healthy),
                agent("real-stale", State::Stale),
            ],
        );
        let mut out = String::new();
        render_agents(&snap, 2, &mut out);
        assert!(out.contains("agent_up{agent=\"real-stale\"}"), "{out}");
        assert!(out.contains("agent_up{agent=\"real-healthy\"}"), "{out}");
        assert!(!out.contains("aaa-fake"), "{out}");
    }

    /// `snap` with `agents`, each last seen when `snap` was taken.
    fn with_agents(snap: Snapshot, agents: Vec<AgentView>) -> Snapshot {
        let now = snap.taken_at;
        with_beats(snap, agents.into_iter().map(|a| (a, Some(now))).collect())
    }

    /// `snap` with `agents`, each with its one check's last heartbeat.
    fn with_beats(
        snap: Snapshot,
        agents: Vec<(AgentView, Option<crate::core::Timestamp>)>,
    ) -> Snapshot {
        let agents = agents.into_iter().map(|(a, t)| (a, vec![t])).collect();
        Snapshot::of(snap.taken_at, agents).with_sources(snap.sources)
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
        snap = with_agents(
            snap,
            vec![
                agent("a", State::Healthy),
                agent("b", State::Healthy),
                agent("c", State::Stale),
            ],
        );
        let mut out = String::new();
        render_agents(&snap, 2, &mut out);
        assert!(out.contains("agent_supervisor_agent_series_omitted 1"));
        assert!(out.contains(r#"agent_supervisor_agent_up{agent="c"} 0"#));
        assert!(out.contains(r#"agent_supervisor_agent_up{agent="a"} 1"#));
        assert!(!out.contains(r#"agent_up{agent="b"}"#));
        assert!(out.contains(r#"agent_supervisor_agents{state="healthy"} 2"#));
        assert!(out.contains(r#"team="x\"y""#));
    }

    /// A label value as the text format reads it back; `None` for an
    /// escape it does not know or a bare quote.
    fn unescape(v: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'n' => out.push('\n'),
                    _ => return None,
                },
                '"' | '\n' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest::proptest! {
        /// Any agent id, escaped as a label value, reads back as itself
        /// and never ends the line or the value early.
        #[test]
        fn any_label_value_escapes_and_reads_back(v in "(?s).{0,40}") {
            let mut out = String::new();
            escape(&v, &mut out);
            proptest::prop_assert_eq!(unescape(&out), Some(v));
        }

        /// Whatever the agent ids, sources, label values and times, the
        /// per-agent families parse with an independent Prometheus text
        /// parser, and the agent label reads back as the agent's id. (That
        /// parser refuses `label=""` and raw control characters other than
        /// the escaped newline, which Prometheus itself accepts, so the
        /// values here have neither.)
        #[test]
        fn rendered_agent_families_always_parse(
            ids in proptest::collection::btree_set("([^\\p{Cc}]|\n){1,24}", 1..6),
            source in "([^\\p{Cc}]|\n){1,12}",
            team in "([^\\p{Cc}]|\n){1,12}",
            micros in proptest::num::i64::ANY,
            threshold in proptest::num::f64::POSITIVE,
            max in 1usize..8,
        ) {
            let mut agents = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let mut a = agent(id, State::ALL[i % State::ALL.len()]);
                a.labels = Arc::new(Labels::from([("team".to_string(), team.clone())]));
                a.checks[0].source = source.as_str().into();
                a.checks[0].threshold_seconds = threshold;
                agents.push((a, chrono::DateTime::from_timestamp_micros(micros)));
            }
            let snap = with_beats(Snapshot::empty(Utc::now()), agents);
            let mut out = String::new();
            render_agents(&snap, max, &mut out);
            let parsed = openmetrics_parser::prometheus::parse_prometheus(&out);
            proptest::prop_assert!(parsed.is_ok(), "{:?}\n{out}", parsed.err());
            let parsed = parsed.unwrap();
            let family = &parsed.families["agent_supervisor_agent_up"];
            for sample in family.iter_samples() {
                let agent = sample.get_labelset().unwrap().get_label_value("agent").unwrap().to_string();
                proptest::prop_assert!(ids.contains(&agent), "{agent:?} not an id");
            }
        }
    }
}
