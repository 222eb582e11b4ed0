//! `agent-supervisor scan`: read every source once, print a table, exit with
//! a Nagios-style code. Usable from cron, CI, PM2 or a monitoring check.
//!
//! Exit codes: 0 every agent healthy and every source readable; 2 some agent
//! stale, failing or missing; 3 no agent alerting, but a source could not be
//! read or some agent is unknown.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::app::{Polled, source_kinds};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::snapshot::{SourceStatus, age_seconds};
use crate::core::{
    ErrorKind, Observation, Snapshot, SourceFailure, SourceId, SourceKind, State, Supervisor,
};
use crate::liveness::Liveness;
use crate::sources::{PollSource, SourceCtx, scan_once};
use crate::telemetry::metrics::Metrics;

pub const EXIT_OK: i32 = 0;
pub const EXIT_CRITICAL: i32 = 2;
pub const EXIT_UNKNOWN: i32 = 3;

/// Read each polled source once (each bounded by `timeout`) and return the
/// resulting snapshot. A push source cannot be read from here: it is left
/// out, so an expected agent no polled source has is `missing`, not
/// `unknown` waiting for pushes that will never come to this process.
pub async fn scan(config: &Config, timeout: Duration) -> anyhow::Result<Snapshot> {
    let clock = Clock::System;
    let metrics = std::sync::Arc::new(Metrics::new(0)?);
    let polled = source_kinds(config)
        .into_iter()
        .filter(|(_, kind, _)| *kind == SourceKind::Polled);
    let mut sup = Supervisor::new(config.policy(), polled, clock.now());
    let (tx, mut rx) = mpsc::channel::<Observation>(64);
    let mut reads = Vec::new();
    for s in &config.sources {
        let Some(src) = Polled::build(&s.name, &s.kind, &clock, &metrics)? else {
            continue;
        };
        let ctx = SourceCtx {
            id: s.name.clone(),
            tx: tx.clone(),
            urgent: tx.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            liveness: Liveness::default(),
        };
        reads.push(async move {
            let read = async {
                src.connect();
                let out = scan_once(&src, &ctx).await;
                src.disconnect().await;
                out
            };
            if tokio::time::timeout(timeout, read).await.is_err() {
                let system = src.system();
                let _ = ctx
                    .tx
                    .send(Observation::SourceError {
                        source: ctx.id.clone(),
                        error: SourceFailure {
                            kind: ErrorKind::Timeout,
                            message: format!("{system}: no answer within {timeout:?}"),
                        },
                    })
                    .await;
            }
        });
    }
    drop(tx);
    let all = futures::future::join_all(reads);
    let collect = async {
        while let Some(obs) = rx.recv().await {
            sup.observe(obs, clock.now());
        }
    };
    tokio::join!(all, collect);
    Ok(sup.snapshot(clock.now()))
}

/// Exit code for a snapshot (see the module doc).
pub fn exit_code(snap: &Snapshot) -> i32 {
    if snap.views().any(|a| a.state.is_alerting()) {
        EXIT_CRITICAL
    } else if snap.views().any(|a| a.state == State::Unknown)
        || snap.sources.iter().any(|s| s.status == SourceStatus::Down)
    {
        EXIT_UNKNOWN
    } else {
        EXIT_OK
    }
}

/// `1 agent`, `2 agents`.
fn agents(n: usize) -> String {
    if n == 1 {
        "1 agent".into()
    } else {
        format!("{n} agents")
    }
}

/// The table printed by `scan`; `push` names the push sources, which it
/// does not read.
pub fn render_table(snap: &Snapshot, push: &[SourceId]) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 6]> = snap
        .iter()
        .map(|a| {
            let worst = a.checks().max_by_key(|(c, _)| c.state.severity());
            [
                a.id.to_string(),
                a.state.to_string(),
                worst
                    .and_then(|(_, t)| age_seconds(t, snap.taken_at))
                    .map(|s| format!("{s:.1}s"))
                    .unwrap_or_else(|| "-".into()),
                worst
                    .map(|(c, _)| format!("{}s", c.threshold_seconds))
                    .unwrap_or_else(|| "-".into()),
                a.checks
                    .iter()
                    .map(|c| c.source.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                a.reason.to_string(),
            ]
        })
        .collect();
    let head = ["AGENT", "STATE", "AGE", "THRESHOLD", "SOURCES", "REASON"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&head));
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no agents found)");
    }
    let _ = writeln!(out);
    for s in &snap.sources {
        let status = match (s.status, &s.error) {
            (_, Some(e)) => e.message.clone(),
            (SourceStatus::Up, None) => format!("{}: ok, {}", s.kind, agents(s.checks)),
            (st, None) => format!("{}: {st:?}", s.kind),
        };
        let _ = writeln!(out, "source {}: {status}", s.name);
    }
    for name in push {
        let _ = writeln!(
            out,
            "source {name}: push: agents push to the running sidecar; not read by scan"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::core::snapshot::{AgentView, SourceView};
    use crate::core::{Labels, SourceId};

    fn snap(states: &[State], source_down: bool) -> Snapshot {
        snap_with_checks(states, source_down, 0)
    }

    fn snap_with_checks(states: &[State], source_down: bool, checks: usize) -> Snapshot {
        let now = Utc::now();
        let agents = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let view = AgentView {
                    id: format!("a{i}").as_str().into(),
                    state: *s,
                    since: now,
                    reason: "".into(),
                    expected: false,
                    labels: Arc::new(Labels::new()),
                    checks: vec![],
                    history: None,
                };
                (view, vec![])
            })
            .collect();
        Snapshot::of(now, agents).with_sources(vec![SourceView {
            name: SourceId::from("redis"),
            kind: "redis".into(),
            status: if source_down {
                SourceStatus::Down
            } else {
                SourceStatus::Up
            },
            since: now,
            last_success: None,
            last_scan_started: None,
            error: source_down.then(|| SourceFailure {
                kind: ErrorKind::ConnectionRefused,
                message: "redis: connection refused (redis://127.0.0.1:6379)".into(),
            }),
            checks,
        }])
    }

    #[test]
    fn exit_codes_follow_the_worst_agent_then_sources() {
        assert_eq!(exit_code(&snap(&[State::Healthy], false)), EXIT_OK);
        assert_eq!(
            exit_code(&snap(&[State::Healthy, State::Stale], false)),
            EXIT_CRITICAL
        );
        assert_eq!(exit_code(&snap(&[State::Unknown], false)), EXIT_UNKNOWN);
        assert_eq!(exit_code(&snap(&[], true)), EXIT_UNKNOWN);
        assert_eq!(exit_code(&snap(&[State::Missing], true)), EXIT_CRITICAL);
    }

    #[test]
    fn table_names_a_down_source_with_its_error() {
        let t = render_table(&snap(&[], true), &[]);
        assert!(t.contains("(no agents found)"));
        assert!(t.contains("source redis: redis: connection refused"), "{t}");
    }

    #[test]
    fn source_lines_count_agents_in_the_singular_and_plural() {
        let one = render_table(&snap_with_checks(&[State::Healthy], false, 1), &[]);
        assert!(one.contains("source redis: redis: ok, 1 agent\n"), "{one}");
        let two = render_table(&snap_with_checks(&[State::Healthy], false, 2), &[]);
        assert!(two.contains("source redis: redis: ok, 2 agents\n"), "{two}");
    }
}
