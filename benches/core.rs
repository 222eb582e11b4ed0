//! The core's own cost in a large fleet: a page of readings observed, and a
//! snapshot taken after it (what the driver does about once a second while
//! a scan runs), against the baseline of the same run: a snapshot taken
//! when nothing changed.
//!
//! Also a snapshot built whole, after a new agent came (as while a first
//! scan discovers the fleet).
//!
//! Run: `cargo bench --bench core` (`CORE_AGENTS=1000000` for a million).

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_supervisor::core::{
    AgentId, Defaults, Observation, Policy, Reading, SourceId, SourceKind, Supervisor, Timestamp,
};
use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

const PAGE: usize = 1000;

fn policy() -> Policy {
    Policy {
        defaults: Defaults {
            stale_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(3600),
            max_clock_skew: Duration::from_secs(5),
        },
        startup_grace: Duration::from_secs(0),
        ..Policy::default()
    }
}

fn ids(n: usize) -> Vec<AgentId> {
    (0..n)
        .map(|i| AgentId::new(format!("agent_{i:07}").as_str()))
        .collect()
}

fn page(source: &SourceId, ids: &[AgentId], seen: Timestamp, at: Timestamp) -> Observation {
    Observation::Batch {
        source: source.clone(),
        started_at: at,
        readings: ids
            .iter()
            .map(|agent| Reading::Heartbeat {
                agent: agent.clone(),
                last_seen: seen,
                status: None,
            })
            .collect(),
    }
}

/// A supervisor that has seen every agent healthy in one full scan.
fn fleet(source: &SourceId, ids: &[AgentId], t0: Timestamp) -> Supervisor {
    let mut sup = Supervisor::new(
        policy(),
        [(source.clone(), SourceKind::Polled, "redis".to_string())],
        t0,
    );
    for chunk in ids.chunks(PAGE) {
        sup.observe(page(source, chunk, t0, t0), t0);
    }
    sup.observe(
        Observation::ScanComplete {
            source: source.clone(),
            started_at: t0,
        },
        t0,
    );
    sup.tick(t0);
    sup.take_events();
    sup.take_dirty();
    sup
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("CORE_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let source = SourceId::from("redis");
    let ids = ids(n);
    let t0 = Utc::now();
    let mut sup = fleet(&source, &ids, t0);
    let mut g = c.benchmark_group(format!("core_{n}"));
    g.sample_size(10);

    // The baseline: nothing changed since the last snapshot.
    let _ = sup.snapshot(t0);
    g.bench_function("snapshot, nothing changed", |b| {
        b.iter(|| black_box(sup.snapshot(t0)))
    });

    // A page of fresh heartbeats.
    let mut k = 0usize;
    let mut t = t0;
    let mut next_page = |sup: &mut Supervisor| {
        t += TimeDelta::milliseconds(1);
        let start = (k * PAGE) % n;
        k += 1;
        let obs = page(&source, &ids[start..(start + PAGE).min(n)], t, t);
        let begun = Instant::now();
        sup.observe(obs, t);
        (begun.elapsed(), t)
    };
    g.bench_function("observe a page", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| next_page(&mut sup).0).sum())
    });

    // What the driver does while a scan runs: a second's worth of pages
    // (a full scan of the fleet over five seconds), then a snapshot.
    let per_second = (n / PAGE / 5).max(1);
    g.bench_function("snapshot after a second of scan", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let mut t = t0;
                for _ in 0..per_second {
                    t = next_page(&mut sup).1;
                }
                let begun = Instant::now();
                black_box(sup.snapshot(t));
                spent += begun.elapsed();
            }
            spent
        })
    });
    // A new agent: the snapshot after it is built whole (agents' places
    // moved), as while a first scan discovers the fleet.
    let mut new_agents = 0usize;
    g.bench_function("snapshot after a new agent", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                new_agents += 1;
                let id = AgentId::new(format!("new_{new_agents:07}").as_str());
                sup.observe(page(&source, &[id], t0, t0), t0);
                let begun = Instant::now();
                black_box(sup.snapshot(t0));
                spent += begun.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
