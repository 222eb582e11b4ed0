//! `/metrics` rendering for a large fleet: the hand-written per-agent
//! encoder against the `prometheus` crate's registry + `gather()` encoding
//! the same per-agent series (the baseline, measured in the same run).
//!
//! Run: `cargo bench --bench metrics_render`

use std::hint::black_box;
use std::sync::Arc;

use agent_supervisor::core::snapshot::{AgentView, CheckView};
use agent_supervisor::core::{AgentId, Labels, Snapshot, State};
use agent_supervisor::sinks::metrics::render_agents;
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

fn fleet(n: usize) -> Snapshot {
    let now = Utc::now();
    let labels = Arc::new(Labels::from([
        ("team".to_string(), "trading".to_string()),
        ("severity".to_string(), "critical".to_string()),
    ]));
    let agents: Vec<(AgentView, Vec<Option<chrono::DateTime<Utc>>>)> = (0..n)
        .map(|i| {
            let state = if i % 100 == 0 {
                State::Stale
            } else {
                State::Healthy
            };
            let view = AgentView {
                id: AgentId::new(format!("agent_{i:07}").as_str()),
                state,
                since: now,
                reason: "".into(),
                expected: false,
                labels: labels.clone(),
                checks: vec![CheckView {
                    source: "redis".into(),
                    state,
                    since: now,
                    reason: "".into(),
                    threshold_seconds: 30.0,
                    status: None,
                    depends_on: None,
                }],
                history: None,
            };
            (view, vec![Some(now)])
        })
        .collect();
    Snapshot::of(now, agents)
}

/// The same families through the crate's registry.
fn crate_registry(snap: &Snapshot) -> Registry {
    let r = Registry::new();
    let state = GaugeVec::new(
        Opts::new("agent_supervisor_agent_state", "h"),
        &["agent", "state"],
    )
    .unwrap();
    let up = GaugeVec::new(Opts::new("agent_supervisor_agent_up", "h"), &["agent"]).unwrap();
    let seen = GaugeVec::new(
        Opts::new("agent_supervisor_agent_last_seen_timestamp_seconds", "h"),
        &["agent", "source"],
    )
    .unwrap();
    let thr = GaugeVec::new(
        Opts::new("agent_supervisor_agent_stale_after_seconds", "h"),
        &["agent", "source"],
    )
    .unwrap();
    let info = GaugeVec::new(
        Opts::new("agent_supervisor_agent_info", "h"),
        &["agent", "team", "severity"],
    )
    .unwrap();
    for a in snap.views() {
        let id = a.id.as_str();
        for s in State::ALL {
            state
                .with_label_values(&[id, s.as_str()])
                .set(f64::from(u8::from(s == a.state)));
        }
        up.with_label_values(&[id]).set(1.0);
        seen.with_label_values(&[id, "redis"]).set(1.7e9);
        thr.with_label_values(&[id, "redis"]).set(30.0);
        info.with_label_values(&[id, "trading", "critical"])
            .set(1.0);
    }
    for c in [state, up, seen, thr, info] {
        r.register(Box::new(c)).unwrap();
    }
    r
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_render");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let snap = fleet(n);
        let mut sized = String::new();
        render_agents(&snap, usize::MAX, &mut sized);
        eprintln!("{n} agents: {} bytes of per-agent series", sized.len());
        g.bench_function(format!("agent_supervisor_{n}"), |b| {
            b.iter(|| {
                let mut out = String::with_capacity(n * 900);
                render_agents(black_box(&snap), usize::MAX, &mut out);
                out.len()
            })
        });
        let reg = crate_registry(&snap);
        g.bench_function(format!("prometheus_crate_gather_{n}"), |b| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(n * 400);
                TextEncoder::new().encode(&reg.gather(), &mut buf).unwrap();
                buf.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
