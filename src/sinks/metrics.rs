//! `/metrics`: the registry's families ([`Metrics`]) followed by the
//! per-agent families rendered straight from the [`Snapshot`] by a small
//! text encoder (the crate's `gather()` is two orders of magnitude slower at
//! 100k series).

use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use crate::core::{Snapshot, State};
use crate::telemetry::metrics::{Metrics, NS};

/// The whole `/metrics` body.
pub fn render(metrics: &Metrics, snap: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + text_capacity(metrics, snap));
    metrics.encode_registry(&mut out);
    render_agents(snap, metrics.max_agent_series(), &mut out);
    out
}

/// The per-agent families of the latest snapshot, rendered once per
/// snapshot and shared by every scrape of it (concurrent scrapers wait for
/// the one render instead of each doing it); the registry's own families,
/// small and always current, are written per scrape. The snapshot is known
/// by a weak reference: the text does not keep an old snapshot alive.
#[derive(Default)]
pub struct Rendered {
    last: std::sync::Mutex<Option<(Weak<Snapshot>, Arc<String>)>>,
}

impl Rendered {
    /// The two parts of the `/metrics` body for `snap`: the registry's
    /// families, and the per-agent text shared by every scrape of `snap`
    /// (served as it is, not copied into one string).
    pub fn parts(&self, metrics: &Metrics, snap: &Arc<Snapshot>) -> (String, Arc<String>) {
        let agents = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match &*last {
                Some((s, text)) if Weak::ptr_eq(s, &Arc::downgrade(snap)) => text.clone(),
                _ => {
                    // The old text first: it is not needed any more.
                    *last = None;
                    let mut text = String::with_capacity(text_capacity(metrics, snap));
                    render_agents(snap, metrics.max_agent_series(), &mut text);
                    text.shrink_to_fit();
                    let text = Arc::new(text);
                    *last = Some((Arc::downgrade(snap), text.clone()));
                    text
                }
            }
        };
        let mut registry = String::with_capacity(16 * 1024);
        metrics.encode_registry(&mut registry);
        (registry, agents)
    }

    /// The whole `/metrics` body for `snap`, as one string.
    pub fn body(&self, metrics: &Metrics, snap: &Arc<Snapshot>) -> String {
        let (mut out, agents) = self.parts(metrics, snap);
        out.push_str(&agents);
        out
    }

    /// Whether the per-agent text of `snap` is the one kept.
    #[cfg(test)]
    fn holds(&self, snap: &Arc<Snapshot>) -> Option<Arc<String>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(s, _)| Weak::ptr_eq(s, &Arc::downgrade(snap)))
            .map(|(_, t)| t.clone())
    }
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
    header(out, "agents", "Number of agents in each state.");
    for (state, n) in snap.counts() {
        series(out, "agents", &[("state", state.as_str())], n as f64);
    }

    let chosen: Vec<usize> = if snap.len() <= max {
        (0..snap.len()).collect()
    } else {
        // Configured or polled agents before agents only pushes created
        // (anyone who may push must not crowd real agents out), the ones
        // not healthy first within each.
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
        let mut idx: Vec<usize> = Vec::with_capacity(max);
        for (pushed, healthy) in [(false, false), (false, true), (true, false), (true, true)] {
            let room = max - idx.len();
            idx.extend(
                (0..snap.len())
                    .filter(|&i| {
                        snap.view(i).is_some_and(|a| {
                            pushed_only(a) == pushed && (a.state == State::Healthy) == healthy
                        })
                    })
                    .take(room),
            );
        }
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
        snap.len() - chosen.len()
    );

    header(
        out,
        "agent_state",
        "Current state of each agent: 1 for its state, 0 for the others.",
    );
    const STATE_HEAD: &str = "agent_supervisor_agent_state{agent=\"";
    let state_tails = State::ALL.map(|s| (s, format!("\",state=\"{}\"}} ", s.as_str())));
    for &i in &chosen {
        let Some(a) = snap.view(i) else {
            continue;
        };
        for (s, tail) in &state_tails {
            let v = Val::Int(i64::from(*s == a.state));
            agent_line(out, STATE_HEAD, a.id.as_str(), tail, v);
        }
    }
    header(out, "agent_up", "1 when the agent is healthy, else 0.");
    for &i in &chosen {
        let Some(a) = snap.view(i) else {
            continue;
        };
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
        let Some(a) = snap.get(i) else {
            continue;
        };
        for (c, last_seen) in a.checks() {
            if let Some(t) = last_seen {
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
        let Some(a) = snap.view(i) else {
            continue;
        };
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
        let Some(a) = snap.view(i) else {
            continue;
        };
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

    /// One render per snapshot: a second scrape of the same snapshot gets
    /// the same text (the same allocation), a new snapshot a new render.
    #[test]
    fn the_agent_families_are_rendered_once_per_snapshot() {
        let metrics = Metrics::new(10).unwrap();
        let cache = Rendered::default();
        let mut snap = Snapshot::empty(Utc::now());
        snap = with_agents(snap, vec![agent("a", State::Stale)]);
        let snap = Arc::new(snap);
        // The registry's part (process_* included) is read each time; the
        // agent families after it are the cached text.
        let agents_part = |body: &str| {
            let at = body.find("# HELP agent_supervisor_agents ").unwrap();
            body[at..].to_string()
        };
        let first = cache.body(&metrics, &snap);
        let kept = cache.holds(&snap).unwrap();
        assert_eq!(
            agents_part(&first),
            agents_part(&cache.body(&metrics, &snap))
        );
        assert!(Arc::ptr_eq(&kept, &cache.holds(&snap).unwrap()));
        assert!(first.contains("agent_supervisor_agent_up{agent=\"a\"} 0"));
        let mut next = Snapshot::empty(Utc::now());
        next = with_agents(next, vec![agent("b", State::Healthy)]);
        let next = Arc::new(next);
        assert!(cache.body(&metrics, &next).contains("agent=\"b\""));
        assert!(cache.holds(&snap).is_none());
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
