//! The alert engine's work for a large fleet in an alert storm, against the
//! `/metrics` rendering of the same snapshot (the baseline, measured in the
//! same run: a cost every scrape already pays).
//!
//! - `reconcile_steady`: every agent already alerting, a new snapshot
//!   arrives (what the engine does at each snapshot during a storm);
//! - `storm_reconcile_and_flush`: all agents turn stale at once: alerts
//!   fire, are grouped and flushed as one notification per receiver;
//! - `save_book`: the book serialised as the state store writes it.
//!
//! Run: `cargo bench --bench alert_book`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use agent_supervisor::alerts::book::{Book, ReceiverPolicy, Route, Routing, Timing};
use agent_supervisor::core::alert::Matcher;
use agent_supervisor::core::snapshot::{AgentView, CheckView};
use agent_supervisor::core::{AgentId, Labels, Snapshot, State};
use agent_supervisor::sinks::metrics::render_agents;
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};

/// `n` agents, all stale.
fn storm(n: usize) -> Snapshot {
    let now = Utc::now();
    let labels = Arc::new(Labels::from([
        ("team".to_string(), "trading".to_string()),
        ("severity".to_string(), "critical".to_string()),
    ]));
    let beat = Some(now - chrono::TimeDelta::seconds(90));
    let agents: Vec<(AgentView, Vec<_>)> = (0..n)
        .map(|i| {
            let view = AgentView {
                id: AgentId::new(format!("agent_{i:07}").as_str()),
                state: State::Stale,
                since: now,
                reason: "no heartbeat".into(),
                expected: false,
                labels: labels.clone(),
                checks: vec![CheckView {
                    source: "redis".into(),
                    state: State::Stale,
                    since: now,
                    reason: "no heartbeat".into(),
                    threshold_seconds: 30.0,
                    status: None,
                    depends_on: None,
                }],
                history: None,
            };
            (view, vec![beat])
        })
        .collect();
    Snapshot::of(now, agents)
}

fn routing() -> Routing {
    let receivers = ["oncall", "chat"];
    Routing {
        routes: vec![Route {
            matcher: Matcher::default(),
            receivers: receivers.iter().map(|r| r.to_string()).collect(),
            continue_matching: false,
            group_by: vec![],
            timing: Timing {
                group_wait: Duration::ZERO,
                group_interval: Duration::from_secs(60),
                repeat_interval: Duration::from_secs(4 * 3600),
            },
            fallback: true,
        }],
        receivers: receivers
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    ReceiverPolicy {
                        send_resolved: true,
                        resend_interval: None,
                    },
                )
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alert_book");
    g.sample_size(10);
    let r = routing();
    for n in [10_000usize, 100_000] {
        let snap = storm(n);
        let now = snap.taken_at;
        g.bench_function(format!("metrics_render_baseline_{n}"), |b| {
            b.iter(|| {
                let mut out = String::with_capacity(n * 300);
                render_agents(black_box(&snap), n, &mut out);
                out
            })
        });
        let mut steady = Book::default();
        steady.reconcile(&snap, &r, true, now);
        steady.flush(&r, now);
        g.bench_function(format!("reconcile_steady_{n}"), |b| {
            b.iter(|| steady.reconcile(black_box(&snap), &r, true, now))
        });
        g.bench_function(format!("storm_reconcile_and_flush_{n}"), |b| {
            b.iter(|| {
                let mut book = Book::default();
                book.reconcile(black_box(&snap), &r, true, now);
                book.flush(&r, now)
            })
        });
        g.bench_function(format!("save_book_{n}"), |b| {
            b.iter(|| serde_json::to_vec(black_box(&steady)).map(|v| v.len()))
        });
        eprintln!(
            "book of {n} firing alerts, 2 receivers: {} bytes of JSON",
            serde_json::to_vec(&steady).map(|v| v.len()).unwrap_or(0)
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
