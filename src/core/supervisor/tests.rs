use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::core::AgentFilter;
use crate::core::policy::{AgentRule, Defaults};
use crate::core::snapshot::{HISTORY_MAX, age_seconds};

fn t0() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(secs: f64) -> Timestamp {
    t0() + TimeDelta::microseconds((secs * 1e6) as i64)
}

fn redis() -> SourceId {
    SourceId::from("redis")
}

fn push() -> SourceId {
    SourceId::from("push")
}

fn policy() -> Policy {
    Policy {
        defaults: Defaults {
            stale_after: Duration::from_secs(10),
            forget_after: Duration::from_secs(3600),
            max_clock_skew: Duration::from_secs(5),
        },
        startup_grace: Duration::from_secs(30),
        confirm_timeout: Duration::from_secs(2),
        rules: vec![
            AgentRule::new("expected_one", None, Labels::new(), true).unwrap(),
            AgentRule::new(
                "slow_*",
                Some(Duration::from_secs(100)),
                Labels::new(),
                false,
            )
            .unwrap(),
        ],
        source_stale_after: Default::default(),
        ..Policy::default()
    }
}

fn sup() -> Supervisor {
    Supervisor::new(
        policy(),
        [
            (redis(), SourceKind::Polled, "redis".to_string()),
            (push(), SourceKind::Push, "push".to_string()),
        ],
        t0(),
    )
}

fn hb(agent: &str, last_seen: Timestamp) -> Reading {
    Reading::Heartbeat {
        agent: agent.into(),
        last_seen,
        status: None,
    }
}

/// Deliver one complete scan of `redis` that started at `started`.
fn scan(s: &mut Supervisor, started: Timestamp, now: Timestamp, readings: Vec<Reading>) {
    s.observe(
        Observation::Batch {
            source: redis(),
            started_at: started,
            readings,
        },
        now,
    );
    s.observe(
        Observation::ScanComplete {
            source: redis(),
            started_at: started,
        },
        now,
    );
}

/// Deliver a point read of `redis` made at `now`.
fn confirm(s: &mut Supervisor, now: Timestamp, readings: Vec<Reading>) {
    s.observe(
        Observation::Confirmed {
            source: redis(),
            read_at: now,
            readings,
        },
        now,
    );
}

fn state(s: &mut Supervisor, agent: &str, now: Timestamp) -> State {
    s.snapshot(now)
        .agent(agent)
        .map(|a| a.state)
        .unwrap_or_else(|| panic!("no agent {agent}"))
}

/// Whether an agent turned stale since the events were last taken.
fn anyone_became_stale(s: &mut Supervisor) -> bool {
    s.take_events().iter().any(|e| {
        matches!(
            e,
            Event::AgentChanged {
                to: State::Stale,
                ..
            }
        )
    })
}

fn down(kind: ErrorKind) -> Observation {
    Observation::SourceError {
        source: redis(),
        error: SourceFailure {
            kind,
            message: "connection refused".into(),
        },
    }
}

#[test]
fn fresh_heartbeat_is_healthy_and_wakes_at_its_deadline() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.1), vec![hb("a", at(-1.0))]);
    assert_eq!(state(&mut s, "a", at(0.1)), State::Healthy);
    // deadline = -1 + 10 = 9s, woken just after it.
    let wake = s.next_wakeup();
    assert!(wake > at(9.0) && wake < at(9.001), "{wake}");
}

#[test]
fn heartbeat_exactly_at_threshold_is_healthy() {
    let mut s = sup();
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: hb("a", at(0.0)),
        },
        at(0.0),
    );
    s.tick(at(10.0));
    assert_eq!(state(&mut s, "a", at(10.0)), State::Healthy);
    s.tick(at(10.001));
    assert_eq!(state(&mut s, "a", at(10.001)), State::Stale);
}

#[test]
fn polled_deadline_is_confirmed_with_a_point_read_before_stale() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.tick(at(10.5));
    assert_eq!(
        state(&mut s, "a", at(10.5)),
        State::Healthy,
        "not stale before the point read"
    );
    let confirms = s.take_confirms();
    assert_eq!(
        confirms,
        vec![ConfirmRequest {
            source: redis(),
            agents: vec!["a".into()]
        }]
    );
    // The point read finds the same old value: now it is stale.
    s.observe(
        Observation::Confirmed {
            source: redis(),
            read_at: at(10.51),
            readings: vec![hb("a", at(0.0))],
        },
        at(10.52),
    );
    assert_eq!(state(&mut s, "a", at(10.52)), State::Stale);
    let snap = s.snapshot(at(10.52));
    let reason = &snap.agent("a").unwrap().reason;
    assert!(reason.contains("no heartbeat for 10.5s"), "{reason}");
}

#[test]
fn heartbeat_that_arrived_between_scans_is_not_a_false_alarm() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.tick(at(10.5));
    let _ = s.take_confirms();
    s.observe(
        Observation::Confirmed {
            source: redis(),
            read_at: at(10.51),
            readings: vec![hb("a", at(8.0))],
        },
        at(10.52),
    );
    assert_eq!(state(&mut s, "a", at(10.52)), State::Healthy);
    assert!(s.take_events().iter().all(|e| !matches!(
        e,
        Event::AgentChanged {
            to: State::Stale,
            ..
        }
    )));
    // Re-armed at the new deadline: nothing more happens before it.
    s.tick(at(17.9));
    assert!(s.take_confirms().is_empty());
    assert!(s.next_wakeup() > at(18.0) && s.next_wakeup() < at(18.001));
}

#[test]
fn unanswered_confirm_is_asked_again_after_the_confirm_timeout() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.tick(at(10.5));
    assert_eq!(s.take_confirms().len(), 1);
    s.tick(at(11.0));
    assert!(s.take_confirms().is_empty());
    s.tick(at(12.6));
    assert_eq!(s.take_confirms().len(), 1);
}

#[test]
fn point_read_that_finds_nothing_makes_the_check_missing() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.tick(at(10.5));
    let _ = s.take_confirms();
    s.observe(
        Observation::Confirmed {
            source: redis(),
            read_at: at(10.51),
            readings: vec![Reading::Absent { agent: "a".into() }],
        },
        at(10.52),
    );
    assert_eq!(state(&mut s, "a", at(10.52)), State::Missing);
}

#[test]
fn scan_that_reads_an_old_value_marks_it_stale_without_confirming() {
    let mut s = sup();
    scan(&mut s, at(100.0), at(100.2), vec![hb("a", at(50.0))]);
    assert_eq!(state(&mut s, "a", at(100.2)), State::Stale);
    assert!(s.take_confirms().is_empty());
}

#[test]
fn push_deadline_is_final_without_confirm() {
    let mut s = sup();
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: hb("p", at(0.0)),
        },
        at(0.0),
    );
    s.tick(at(10.1));
    assert_eq!(state(&mut s, "p", at(10.1)), State::Stale);
    assert!(s.take_confirms().is_empty());
}

#[test]
fn source_down_makes_checks_unknown_and_freezes_deadlines() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.observe(down(ErrorKind::ConnectionRefused), at(1.0));
    assert_eq!(state(&mut s, "a", at(1.0)), State::Unknown);
    for i in 2..200 {
        s.tick(at(i as f64));
    }
    assert_eq!(state(&mut s, "a", at(200.0)), State::Unknown);
    assert!(s.take_confirms().is_empty(), "no point reads while down");
    let events = s.take_events();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::AgentChanged {
                to: State::Stale,
                ..
            }
        )),
        "no stale storm while the source is down"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::SourceChanged { up: false, .. }))
            .count(),
        1
    );
}

#[test]
fn source_recovery_gives_stale_after_from_the_recovery_then_reports_true_age() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![hb("a", at(0.0)), hb("b", at(0.0))],
    );
    s.observe(down(ErrorKind::ConnectionRefused), at(1.0));
    // Back at 60s: a kept writing, b's last beat predates the outage (its
    // writes may have been blocked): not stale yet, given 10s from 60.1.
    scan(
        &mut s,
        at(60.0),
        at(60.1),
        vec![hb("a", at(59.0)), hb("b", at(0.0))],
    );
    assert_eq!(state(&mut s, "a", at(60.1)), State::Healthy);
    assert_eq!(state(&mut s, "b", at(60.1)), State::Unknown);
    let reason = s.snapshot(at(60.1)).agent("b").unwrap().reason.clone();
    assert!(
        reason.contains("waiting for a heartbeat after redis came back"),
        "{reason}"
    );
    assert!(!anyone_became_stale(&mut s), "nobody stale at the recovery");
    // At 70.1 the time given is over: a point read, not the next scan.
    s.take_confirms();
    s.tick(at(70.2));
    let confirms = s.take_confirms();
    assert_eq!(confirms.len(), 1);
    assert!(confirms[0].agents.contains(&AgentId::from("b")));
    confirm(&mut s, at(70.2), vec![hb("b", at(0.0))]);
    assert_eq!(state(&mut s, "b", at(70.2)), State::Stale);
    let snap = s.snapshot(at(70.2));
    let b = snap.agent("b").unwrap();
    let age = age_seconds(b.last_seen(0), snap.taken_at).unwrap();
    assert!((age - 70.2).abs() < 0.01, "{age}");
    assert!(b.reason.contains("1m 10s"), "{}", b.reason);
    assert!(
        b.reason
            .contains("none in the 10.0s after redis came back from"),
        "{}",
        b.reason
    );
}

#[test]
fn agent_stale_before_an_outage_stays_stale_through_it_without_a_new_transition() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("gone", at(-20.0))]);
    assert_eq!(state(&mut s, "gone", at(0.0)), State::Stale);
    s.take_events();
    s.observe(down(ErrorKind::Timeout), at(1.0));
    assert_eq!(state(&mut s, "gone", at(1.0)), State::Stale);
    scan(&mut s, at(30.0), at(30.0), vec![hb("gone", at(-20.0))]);
    assert_eq!(state(&mut s, "gone", at(30.0)), State::Stale);
    let events = s.take_events();
    assert!(
        !events.iter().any(
            |e| matches!(e, Event::AgentChanged { agent, .. } if agent.as_str() == "gone")
                || matches!(e, Event::CheckChanged { key, .. } if key.agent.as_str() == "gone")
        ),
        "no transition for an agent already stale: {events:?}"
    );
}

#[test]
fn check_missing_from_a_recovery_scan_is_confirmed_not_assumed_gone() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.observe(down(ErrorKind::Timeout), at(1.0));
    scan(&mut s, at(5.0), at(5.0), vec![]);
    assert_eq!(state(&mut s, "a", at(5.0)), State::Unknown);
    assert_eq!(s.take_confirms().len(), 1);
}

#[test]
fn agent_state_is_the_worst_of_its_checks() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: Reading::Heartbeat {
                agent: "a".into(),
                last_seen: at(0.0),
                status: Some(Status::reported(false, "db pool exhausted")),
            },
        },
        at(0.0),
    );
    let snap = s.snapshot(at(0.0));
    let a = snap.agent("a").unwrap();
    assert_eq!(a.state, State::Failing);
    assert!(a.reason.contains("db pool exhausted"));
    assert_eq!(a.checks.len(), 2);
}

#[test]
fn expected_agent_goes_missing_after_grace_only_when_sources_are_readable() {
    let mut s = sup();
    assert_eq!(state(&mut s, "expected_one", at(0.0)), State::Unknown);
    s.observe(down(ErrorKind::ConnectionRefused), at(1.0));
    s.tick(at(31.0));
    assert_eq!(state(&mut s, "expected_one", at(31.0)), State::Unknown);
    scan(&mut s, at(40.0), at(40.0), vec![]);
    assert_eq!(state(&mut s, "expected_one", at(40.0)), State::Missing);
}

#[test]
fn expected_agent_goes_missing_once_every_source_was_read_before_grace() {
    let mut s = Supervisor::new(
        policy(),
        [(redis(), SourceKind::Polled, "redis".to_string())],
        t0(),
    );
    scan(&mut s, at(1.0), at(1.0), vec![hb("other", at(1.0))]);
    assert_eq!(state(&mut s, "expected_one", at(1.0)), State::Missing);
}

#[test]
fn future_last_seen_beyond_skew_is_counted_and_taken_as_now() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(3600.0))]);
    let problems: Vec<_> = s
        .take_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::SourceProblem {
                    kind: ErrorKind::ClockSkew,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(problems.len(), 1);
    // The same future value keeps coming: it is not a fresh heartbeat.
    scan(&mut s, at(11.0), at(11.0), vec![hb("a", at(3600.0))]);
    assert_eq!(state(&mut s, "a", at(11.0)), State::Stale);
    assert!(s.take_events().iter().all(|e| !matches!(
        e,
        Event::SourceProblem {
            kind: ErrorKind::ClockSkew,
            ..
        }
    )));
}

#[test]
fn small_future_skew_is_accepted_as_is() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(3.0))]);
    assert_eq!(state(&mut s, "a", at(0.0)), State::Healthy);
    assert!(s.next_wakeup() > at(13.0));
}

#[test]
fn unreadable_value_is_unknown_and_reported_once() {
    let mut s = sup();
    let bad = || Reading::Invalid {
        agent: "a".into(),
        reason: "not a timestamp: \"soon\"".into(),
    };
    scan(&mut s, at(0.0), at(0.0), vec![bad(), hb("b", at(0.0))]);
    scan(&mut s, at(5.0), at(5.0), vec![bad(), hb("b", at(5.0))]);
    assert_eq!(state(&mut s, "a", at(5.0)), State::Unknown);
    assert_eq!(state(&mut s, "b", at(5.0)), State::Healthy);
    let n = s
        .take_events()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::SourceProblem {
                    kind: ErrorKind::BadValue,
                    ..
                }
            )
        })
        .count();
    assert_eq!(n, 1);
}

#[test]
fn restart_with_restored_state_is_not_a_wave_of_transitions() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![hb("a", at(0.0)), hb("old", at(-100.0))],
    );
    assert_eq!(state(&mut s, "old", at(0.0)), State::Stale);
    let saved = s.persist();
    let since_old = s.snapshot(at(0.0)).agent("old").unwrap().since;

    let mut s2 = Supervisor::new(
        policy(),
        [
            (redis(), SourceKind::Polled, "redis".to_string()),
            (push(), SourceKind::Push, "push".to_string()),
        ],
        at(5.0),
    );
    s2.restore(saved, at(5.0));
    assert_eq!(state(&mut s2, "old", at(5.0)), State::Stale);
    scan(
        &mut s2,
        at(6.0),
        at(6.0),
        vec![hb("a", at(5.5)), hb("old", at(-100.0))],
    );
    let transitions: Vec<_> = s2
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::AgentChanged { .. }))
        .collect();
    assert!(transitions.is_empty(), "{transitions:?}");
    assert_eq!(s2.snapshot(at(6.0)).agent("old").unwrap().since, since_old);
}

#[test]
fn restored_checks_are_frozen_until_their_source_is_read() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    let saved = s.persist();
    let mut s2 = Supervisor::new(
        policy(),
        [(redis(), SourceKind::Polled, "redis".to_string())],
        at(100.0),
    );
    s2.restore(saved, at(100.0));
    s2.tick(at(100.0));
    assert_eq!(state(&mut s2, "a", at(100.0)), State::Healthy);
    assert!(s2.take_confirms().is_empty());
}

#[test]
fn forgotten_after_forget_after_without_data() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    scan(&mut s, at(4000.0), at(4000.0), vec![]);
    s.tick(at(4000.0));
    assert!(s.snapshot(at(4000.0)).agent("a").is_none());
    assert!(
        s.take_events()
            .iter()
            .any(|e| matches!(e, Event::AgentForgotten { .. }))
    );
}

#[test]
fn rule_threshold_applies_to_matching_agents() {
    let mut s = sup();
    scan(&mut s, at(50.0), at(50.0), vec![hb("slow_1", at(0.0))]);
    assert_eq!(state(&mut s, "slow_1", at(50.0)), State::Healthy);
    let snap = s.snapshot(at(50.0));
    assert_eq!(
        snap.agent("slow_1").unwrap().checks[0].threshold_seconds,
        100.0
    );
}

#[test]
fn transitions_are_emitted_once_per_change() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    scan(&mut s, at(1.0), at(1.0), vec![hb("a", at(1.0))]);
    let changes: Vec<_> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AgentChanged {
                agent, from, to, ..
            } if agent.as_str() == "a" => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec![(Some(State::Unknown), State::Healthy)]);
}

#[test]
fn restored_push_check_still_goes_stale_when_its_deadline_passes() {
    let mut s = sup();
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: hb("p", at(0.0)),
        },
        at(0.0),
    );
    let saved = s.persist();
    let mut s2 = sup();
    s2.restore(saved, at(5.0));
    s2.tick(at(9.0));
    assert_eq!(state(&mut s2, "p", at(9.0)), State::Healthy);
    s2.tick(at(10.1));
    assert_eq!(state(&mut s2, "p", at(10.1)), State::Stale);
}

#[test]
fn with_a_push_source_expected_agents_get_the_whole_grace_period() {
    let mut s = sup();
    scan(&mut s, at(1.0), at(1.0), vec![]);
    s.tick(at(29.0));
    assert_eq!(state(&mut s, "expected_one", at(29.0)), State::Unknown);
    s.tick(at(30.0));
    assert_eq!(state(&mut s, "expected_one", at(30.0)), State::Missing);
}

fn status(agent: &str, healthy: bool, detail: &str) -> Reading {
    Reading::Status {
        agent: agent.into(),
        status: Status::reported(healthy, detail),
    }
}

fn suppressed(agent: &str) -> Reading {
    Reading::Unknown {
        agent: agent.into(),
        reason: "service check failing: HTTP 500".into(),
    }
}

#[test]
fn suppressed_check_is_unknown_with_its_reason_and_counts_nothing() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![
            status("svc", true, "HTTP 200"),
            status("comp", true, "active"),
        ],
    );
    assert_eq!(state(&mut s, "comp", at(0.0)), State::Healthy);
    let _ = s.take_events();
    scan(
        &mut s,
        at(1.0),
        at(1.0),
        vec![status("svc", false, "HTTP 500"), suppressed("comp")],
    );
    let snap = s.snapshot(at(1.0));
    let comp = snap.agent("comp").unwrap();
    assert_eq!(comp.state, State::Unknown);
    assert_eq!(&*comp.checks[0].reason, "service check failing: HTTP 500");
    assert_eq!(snap.agent("svc").unwrap().state, State::Failing);
    let events = s.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SourceProblem { .. })),
        "{events:?}"
    );
    // Exactly one alerting agent: the service.
    let alerting: Vec<_> = snap
        .views()
        .filter(|a| a.state.is_alerting())
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(alerting, vec!["svc".to_string()]);
    // A normal reading re-evaluates it.
    scan(
        &mut s,
        at(2.0),
        at(2.0),
        vec![
            status("svc", true, "HTTP 200"),
            status("comp", false, "error"),
        ],
    );
    assert_eq!(state(&mut s, "comp", at(2.0)), State::Failing);
}

#[test]
fn suppressed_heartbeat_check_never_goes_stale_until_a_normal_reading() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("comp", at(0.0))]);
    assert_eq!(state(&mut s, "comp", at(0.0)), State::Healthy);
    scan(&mut s, at(1.0), at(1.0), vec![suppressed("comp")]);
    assert_eq!(state(&mut s, "comp", at(1.0)), State::Unknown);
    // Well past the 10 s deadline: frozen, no confirm, no stale.
    s.tick(at(10.5));
    s.tick(at(30.0));
    assert_eq!(state(&mut s, "comp", at(30.0)), State::Unknown);
    assert!(s.take_confirms().is_empty());
    scan(&mut s, at(31.0), at(31.0), vec![suppressed("comp")]);
    s.tick(at(40.0));
    assert_eq!(state(&mut s, "comp", at(40.0)), State::Unknown);
    // The service is back and the body's last_seen is old: stale at once,
    // with its true age.
    scan(&mut s, at(41.0), at(41.0), vec![hb("comp", at(0.0))]);
    let snap = s.snapshot(at(41.0));
    let comp = snap.agent("comp").unwrap();
    assert_eq!(comp.state, State::Stale);
    assert!(comp.reason.contains("41.0s"), "{}", comp.reason);
    // A fresh one instead is healthy and re-armed.
    scan(&mut s, at(42.0), at(42.0), vec![hb("comp", at(42.0))]);
    assert_eq!(state(&mut s, "comp", at(42.0)), State::Healthy);
    s.tick(at(52.1));
    assert_eq!(s.take_confirms().len(), 1, "deadline re-armed");
}

#[test]
fn first_reading_may_be_a_suppression() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![suppressed("comp")]);
    let snap = s.snapshot(at(0.0));
    let comp = snap.agent("comp").unwrap();
    assert_eq!(comp.state, State::Unknown);
    assert_eq!(&*comp.reason, "service check failing: HTTP 500");
}

#[test]
fn component_absent_from_the_body_is_missing_even_if_never_seen() {
    let mut s = sup();
    let gone = || Reading::Missing {
        agent: "comp".into(),
        reason: "/comp_status absent from the body".into(),
    };
    scan(&mut s, at(0.0), at(0.0), vec![gone()]);
    let snap = s.snapshot(at(0.0));
    let comp = snap.agent("comp").unwrap();
    assert_eq!(comp.state, State::Missing);
    assert_eq!(&*comp.reason, "/comp_status absent from the body");
    assert!(
        s.take_events()
            .iter()
            .all(|e| !matches!(e, Event::SourceProblem { .. }))
    );
    // A status that was healthy and then vanishes is missing, not healthy.
    scan(
        &mut s,
        at(1.0),
        at(1.0),
        vec![status("comp", true, "active")],
    );
    assert_eq!(state(&mut s, "comp", at(1.0)), State::Healthy);
    scan(&mut s, at(2.0), at(2.0), vec![gone()]);
    assert_eq!(state(&mut s, "comp", at(2.0)), State::Missing);
    // Whereas Absent (a point read finding nothing) never creates a check.
    scan(
        &mut s,
        at(3.0),
        at(3.0),
        vec![Reading::Absent {
            agent: "other".into(),
        }],
    );
    assert!(s.snapshot(at(3.0)).agent("other").is_none());
}

// ---- dependencies, outages and re-reads (DESIGN §2, rules 8 and 9) ----

fn svc() -> SourceId {
    SourceId::from("svc")
}

/// `redis` agents live in the service probed by `svc` (its check is agent
/// `svc` of source `svc`).
fn sup_with_service() -> Supervisor {
    let mut p = policy();
    p.depends_on = [(
        redis(),
        CheckKey {
            agent: "svc".into(),
            source: svc(),
        },
    )]
    .into();
    Supervisor::new(
        p,
        [
            (redis(), SourceKind::Polled, "redis".to_string()),
            (svc(), SourceKind::Polled, "http".to_string()),
        ],
        t0(),
    )
}

/// One probe of the service: its own check healthy or failing.
fn probe(s: &mut Supervisor, now: Timestamp, healthy: bool) {
    let detail = if healthy {
        ""
    } else {
        "not reachable: connection refused"
    };
    s.observe(
        Observation::Batch {
            source: svc(),
            started_at: now,
            readings: vec![status("svc", healthy, detail)],
        },
        now,
    );
    s.observe(
        Observation::ScanComplete {
            source: svc(),
            started_at: now,
        },
        now,
    );
}

fn agent_events(events: &[Event], to: State) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AgentChanged { agent, to: t, .. } if *t == to => Some(agent.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn dependents_are_held_unknown_until_the_service_is_first_healthy() {
    let mut s = sup_with_service();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(0.0))]);
    assert_eq!(state(&mut s, "a", at(0.0)), State::Unknown);
    let reason = s.snapshot(at(0.0)).agent("a").unwrap().reason.clone();
    assert_eq!(&*reason, "held: svc is unknown");
    probe(&mut s, at(0.5), true);
    assert_eq!(state(&mut s, "a", at(0.5)), State::Healthy);
}

#[test]
fn a_stopped_service_is_one_incident_and_its_agents_get_stale_after_from_its_recovery() {
    let mut s = sup_with_service();
    probe(&mut s, at(0.0), true);
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![hb("a", at(0.0)), hb("b", at(0.0))],
    );
    assert_eq!(state(&mut s, "a", at(0.0)), State::Healthy);
    s.take_events();
    // The service stops at 5s: its agents stop beating with it.
    probe(&mut s, at(5.0), false);
    for a in ["a", "b"] {
        assert_eq!(state(&mut s, a, at(5.0)), State::Unknown);
        let reason = s.snapshot(at(5.0)).agent(a).unwrap().reason.clone();
        assert_eq!(&*reason, "held: svc is failing");
    }
    let mut t = 5.0;
    while t < 100.0 {
        t += 1.0;
        s.tick(at(t));
        if t as u64 % 5 == 0 {
            scan(
                &mut s,
                at(t),
                at(t),
                vec![hb("a", at(0.0)), hb("b", at(0.0))],
            );
            probe(&mut s, at(t), false);
        }
    }
    let events = s.take_events();
    assert!(agent_events(&events, State::Stale).is_empty(), "{events:?}");
    assert_eq!(
        agent_events(&events, State::Failing),
        vec!["svc".to_string()]
    );
    assert!(
        s.take_confirms().iter().all(|c| c.source != redis()),
        "no point reads of held checks"
    );
    // Back at 100.5: each agent has 10s from then to beat again.
    probe(&mut s, at(100.5), true);
    assert_eq!(state(&mut s, "a", at(100.5)), State::Unknown);
    assert!(agent_events(&s.take_events(), State::Stale).is_empty());
    scan(
        &mut s,
        at(103.0),
        at(103.0),
        vec![hb("a", at(102.0)), hb("b", at(0.0))],
    );
    assert_eq!(state(&mut s, "a", at(103.0)), State::Healthy);
    assert_eq!(state(&mut s, "b", at(103.0)), State::Unknown);
    // b stays silent: stale once its 10s are over, on a point read.
    s.take_confirms();
    s.tick(at(110.6));
    assert!(
        s.take_confirms()
            .iter()
            .any(|c| c.agents.contains(&"b".into()))
    );
    confirm(&mut s, at(110.6), vec![hb("b", at(0.0))]);
    assert_eq!(state(&mut s, "b", at(110.6)), State::Stale);
    let reason = s.snapshot(at(110.6)).agent("b").unwrap().reason.clone();
    assert!(
        reason.contains("none in the 10.0s after svc recovered at 12:01:40Z"),
        "{reason}"
    );
}

#[test]
fn an_agent_stale_before_its_service_failed_keeps_its_state_and_alert() {
    let mut s = sup_with_service();
    // Found healthy at the first probe: no time is given, `gone` is stale.
    probe(&mut s, at(0.0), true);
    scan(&mut s, at(0.0), at(0.0), vec![hb("gone", at(-30.0))]);
    assert_eq!(state(&mut s, "gone", at(0.0)), State::Stale);
    s.take_events();
    probe(&mut s, at(11.0), false);
    assert_eq!(state(&mut s, "gone", at(11.0)), State::Stale);
    probe(&mut s, at(20.0), true);
    scan(&mut s, at(21.0), at(21.0), vec![hb("gone", at(-30.0))]);
    assert_eq!(state(&mut s, "gone", at(21.0)), State::Stale);
    let events = s.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::AgentChanged { agent, .. } if agent.as_str() == "gone")),
        "{events:?}"
    );
}

#[test]
fn a_stale_agent_that_beats_again_is_seen_by_a_re_read_within_recheck_every() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(-20.0))]);
    assert_eq!(state(&mut s, "a", at(0.0)), State::Stale);
    s.take_confirms();
    // The first re-read is due half a second on, not at the next scan.
    assert!(s.next_wakeup() <= at(0.5), "{}", s.next_wakeup());
    s.tick(at(0.5));
    let confirms = s.take_confirms();
    assert_eq!(confirms.len(), 1);
    assert_eq!(confirms[0].agents, vec![AgentId::from("a")]);
    confirm(&mut s, at(0.5), vec![hb("a", at(0.4))]);
    assert_eq!(state(&mut s, "a", at(0.5)), State::Healthy);
    // Nothing stale any more: no more re-reads.
    s.tick(at(1.0));
    assert!(s.take_confirms().is_empty());
}

#[test]
fn re_reads_are_bounded_per_second_and_go_round_robin() {
    let mut p = policy();
    p.recheck_max_per_second = 4; // 2 per half-second round
    let mut s = Supervisor::new(
        p,
        [(redis(), SourceKind::Polled, "redis".to_string())],
        t0(),
    );
    let stale: Vec<Reading> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|a| hb(a, at(-20.0)))
        .collect();
    scan(&mut s, at(0.0), at(0.0), stale);
    s.take_confirms();
    let mut rounds = Vec::new();
    for i in 1..=3 {
        s.tick(at(0.5 * f64::from(i)));
        let c = s.take_confirms();
        rounds.push(
            c[0].agents
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(rounds, vec![vec!["a", "b"], vec!["c", "d"], vec!["e", "a"]]);
}

#[test]
fn pushed_checks_are_held_and_released_like_polled_ones() {
    let mut p = policy();
    p.depends_on = [(
        push(),
        CheckKey {
            agent: "svc".into(),
            source: svc(),
        },
    )]
    .into();
    let mut s = Supervisor::new(
        p,
        [
            (push(), SourceKind::Push, "push".to_string()),
            (svc(), SourceKind::Polled, "http".to_string()),
        ],
        t0(),
    );
    probe(&mut s, at(0.0), true);
    let pushed = |s: &mut Supervisor, t: f64| {
        s.observe(
            Observation::Pushed {
                source: push(),
                reading: hb("p", at(t)),
            },
            at(t),
        )
    };
    pushed(&mut s, 0.0);
    assert_eq!(state(&mut s, "p", at(0.0)), State::Healthy);
    probe(&mut s, at(1.0), false);
    assert_eq!(state(&mut s, "p", at(1.0)), State::Unknown);
    // Its deadline (10 s) passes while held: nothing fires.
    s.tick(at(30.0));
    assert_eq!(state(&mut s, "p", at(30.0)), State::Unknown);
    probe(&mut s, at(40.0), true);
    assert_eq!(state(&mut s, "p", at(40.0)), State::Unknown);
    pushed(&mut s, 41.0);
    assert_eq!(state(&mut s, "p", at(41.0)), State::Healthy);
}

#[test]
fn a_service_that_boots_slowly_gives_its_agents_stale_after_once_it_answers() {
    let mut s = sup_with_service();
    // Old heartbeats from before the deploy; the service is not up yet.
    scan(&mut s, at(0.0), at(0.0), vec![hb("a", at(-300.0))]);
    probe(&mut s, at(0.5), false);
    assert_eq!(state(&mut s, "a", at(0.5)), State::Unknown);
    probe(&mut s, at(5.0), true);
    // It restarted with the service: 10 s from 5 s to beat.
    assert_eq!(state(&mut s, "a", at(5.0)), State::Unknown);
    scan(&mut s, at(6.0), at(6.0), vec![hb("a", at(5.9))]);
    assert_eq!(state(&mut s, "a", at(6.0)), State::Healthy);
}

/// The config's bound on a duration: 100 years.
const HUNDRED_YEARS: u64 = 100 * 366 * 24 * 3600;

/// An instant from any i64 of microseconds, clamped to what chrono holds.
fn clamped(micros: i64) -> Timestamp {
    DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

proptest::proptest! {
    /// Heartbeats at any instant chrono can hold, clocks at either end of
    /// time, every duration of the policy up to the config's bound, outages
    /// and point reads: the core's time arithmetic never panics, and it
    /// always has a next wake-up.
    #[test]
    fn any_times_and_durations_never_panic(
        durations in proptest::collection::vec(0..=HUNDRED_YEARS, 6),
        start in proptest::num::i64::ANY,
        steps in proptest::collection::vec(
            (proptest::num::i64::ANY, proptest::collection::vec(proptest::num::i64::ANY, 0..4), 0u8..4),
            1..8,
        ),
    ) {
        let d = |i: usize| Duration::from_secs(durations[i]);
        let policy = Policy {
            defaults: Defaults {
                stale_after: d(0),
                forget_after: d(1),
                max_clock_skew: d(2),
            },
            startup_grace: d(3),
            confirm_timeout: d(4),
            recheck_every: d(5),
            rules: vec![AgentRule::new("slow_*", Some(d(5)), Labels::new(), true).unwrap()],
            ..Policy::default()
        };
        let mut now = clamped(start);
        let mut s = Supervisor::new(
            policy,
            [
                (redis(), SourceKind::Polled, "redis".to_string()),
                (push(), SourceKind::Push, "push".to_string()),
            ],
            now,
        );
        for (step, (jump, seen, what)) in steps.into_iter().enumerate() {
            // Mostly forward, sometimes anywhere (a clock set back).
            now = if step % 3 == 2 { clamped(jump) } else { clamped(jump / 1_000_000).max(now) };
            let readings: Vec<Reading> = seen
                .iter()
                .enumerate()
                .map(|(i, m)| hb(&format!("slow_{i}"), clamped(*m)))
                .collect();
            match what {
                0 => scan(&mut s, now, now, readings),
                1 => confirm(&mut s, now, readings),
                2 => s.observe(down(ErrorKind::Timeout), now),
                _ => s.observe(
                    Observation::Pushed {
                        source: push(),
                        reading: hb("pushed", clamped(seen.first().copied().unwrap_or(0))),
                    },
                    now,
                ),
            }
            s.tick(now);
            s.tick(s.next_wakeup());
            let _ = s.snapshot(now);
        }
        let saved = s.persist();
        let mut again = sup();
        again.restore(saved, now);
        let _ = again.snapshot(now);
    }
}

/// The state file is written from a view over the snapshot: it must say
/// exactly what the owned copy says, checks whose reported time differs
/// from the effective one (skew, an older reading) included.
#[test]
fn the_persisted_view_serializes_as_the_persisted_copy() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![
            hb("a", at(0.0)),
            hb("old", at(-100.0)),
            // 300 s ahead: taken as now, the reported value kept apart.
            hb("skewed", at(300.0)),
            Reading::Invalid {
                agent: "bad".into(),
                reason: "not a number".into(),
            },
        ],
    );
    // An older reading than the one held: last_seen keeps the newer one.
    confirm(&mut s, at(1.0), vec![hb("a", at(-1.0))]);
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: hb("a", at(1.0)),
        },
        at(1.0),
    );
    let owned = serde_json::to_value(s.persist()).unwrap();
    let snap = Arc::new(s.snapshot(at(1.0)));
    let view = s.persist_view(snap);
    assert!(!view.raw_last_seen.is_empty(), "{view:?}");
    assert_eq!(serde_json::to_value(&view).unwrap(), owned);
    assert_eq!(owned["checks"].as_array().unwrap().len(), 5, "{owned}");
}

/// Agents whose id starts with `on3` live on a Redis Cluster node that is
/// down.
fn node_down() -> Observation {
    Observation::PartlyDown {
        source: redis(),
        error: SourceFailure {
            kind: ErrorKind::ConnectionRefused,
            message:
                "redis: node 127.0.0.1:7003 (slots 10923-16383) cannot be read: connection refused"
                    .into(),
        },
        affected: AgentFilter::new(|a| a.starts_with("on3")),
    }
}

#[test]
fn agents_on_a_node_that_is_down_are_unknown_and_the_others_are_judged_as_usual() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![hb("on1", at(0.0)), hb("on3", at(0.0))],
    );
    s.take_events();
    // The next scan reads node 1 and not node 3.
    s.observe(node_down(), at(5.0));
    scan(&mut s, at(5.0), at(5.0), vec![hb("on1", at(4.0))]);
    let snap = s.snapshot(at(5.0));
    let on3 = snap.agent("on3").unwrap();
    assert_eq!(on3.state, State::Unknown);
    assert!(on3.reason.contains("node 127.0.0.1:7003"), "{}", on3.reason);
    assert_eq!(state(&mut s, "on1", at(5.0)), State::Healthy);
    // on3's deadline (10s) is frozen: no point read, never stale while its
    // node is down. on1 stops beating: stale at its own deadline.
    s.take_confirms();
    s.tick(at(14.1));
    assert!(
        s.take_confirms()
            .iter()
            .all(|c| !c.agents.contains(&AgentId::from("on3")))
    );
    confirm(&mut s, at(14.1), vec![hb("on1", at(4.0))]);
    assert_eq!(state(&mut s, "on1", at(14.1)), State::Stale);
    assert_eq!(state(&mut s, "on3", at(14.1)), State::Unknown);
    assert!(
        !s.take_events().iter().any(|e| matches!(
            e,
            Event::AgentChanged { agent, to: State::Stale, .. } if agent.as_str() == "on3"
        )),
        "on3 is never stale while unreadable"
    );
}

#[test]
fn an_agent_readable_again_gets_stale_after_from_then_before_it_is_stale() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![hb("on3", at(0.0)), hb("on3b", at(0.0))],
    );
    s.observe(node_down(), at(5.0));
    scan(&mut s, at(5.0), at(5.0), vec![]);
    // The node is back at 60s. on3 beat since; on3b's last beat is from
    // before the outage (its writes failed too): given 10s from 60.
    scan(
        &mut s,
        at(60.0),
        at(60.0),
        vec![hb("on3", at(59.5)), hb("on3b", at(0.0))],
    );
    assert_eq!(state(&mut s, "on3", at(60.0)), State::Healthy);
    assert_eq!(state(&mut s, "on3b", at(60.0)), State::Unknown);
    let reason = s.snapshot(at(60.0)).agent("on3b").unwrap().reason.clone();
    assert!(
        reason.contains("waiting for a heartbeat after its data could be read again"),
        "{reason}"
    );
    assert!(!anyone_became_stale(&mut s), "nobody stale at the recovery");
    // It beats again: healthy, judged by its own deadline from then on.
    scan(&mut s, at(65.0), at(65.0), vec![hb("on3b", at(64.0))]);
    assert_eq!(state(&mut s, "on3b", at(65.0)), State::Healthy);
    s.tick(at(74.1));
    confirm(&mut s, at(74.1), vec![hb("on3b", at(64.0))]);
    assert_eq!(state(&mut s, "on3b", at(74.1)), State::Stale);
    let reason = s.snapshot(at(74.1)).agent("on3b").unwrap().reason.clone();
    assert!(!reason.contains("after its data"), "{reason}");
}

#[test]
fn an_agent_readable_again_that_never_beats_is_stale_once_its_time_is_over() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("on3", at(0.0))]);
    s.observe(node_down(), at(5.0));
    scan(&mut s, at(60.0), at(60.0), vec![hb("on3", at(0.0))]);
    assert_eq!(state(&mut s, "on3", at(60.0)), State::Unknown);
    s.take_confirms();
    s.tick(at(70.1));
    assert_eq!(s.take_confirms().len(), 1);
    confirm(&mut s, at(70.1), vec![hb("on3", at(0.0))]);
    assert_eq!(state(&mut s, "on3", at(70.1)), State::Stale);
    let reason = s.snapshot(at(70.1)).agent("on3").unwrap().reason.clone();
    assert!(
        reason.contains("none in the 10.0s after its data could be read again"),
        "{reason}"
    );
}

#[test]
fn a_stale_agent_stays_stale_while_its_node_is_down() {
    let mut s = sup();
    scan(&mut s, at(0.0), at(0.0), vec![hb("on3", at(-20.0))]);
    assert_eq!(state(&mut s, "on3", at(0.0)), State::Stale);
    s.take_events();
    s.observe(node_down(), at(1.0));
    confirm(
        &mut s,
        at(2.0),
        vec![Reading::Unreadable {
            agent: "on3".into(),
            reason: "node down".into(),
        }],
    );
    assert_eq!(state(&mut s, "on3", at(2.0)), State::Stale);
    assert!(s.take_events().is_empty(), "no transition");
}

/// A push agent `p` that beats at `beat` and is ticked at `now`.
fn pushed(s: &mut Supervisor, agent: &str, beat: f64, now: f64) {
    s.observe(
        Observation::Pushed {
            source: push(),
            reading: hb(agent, at(beat)),
        },
        at(now),
    );
}

fn history(s: &mut Supervisor, agent: &str, now: Timestamp) -> Vec<(Timestamp, State)> {
    s.snapshot(now)
        .agent(agent)
        .unwrap_or_else(|| panic!("no agent {agent}"))
        .transitions()
        .iter()
        .map(|t| (t.at, t.state))
        .collect()
}

/// An agent without history pays a thin pointer for it, in the core and in
/// its view (the bound of bytes per agent holds for large fleets).
#[test]
fn no_history_costs_a_pointer() {
    assert_eq!(std::mem::size_of::<Option<History>>(), 8);
}

#[test]
fn an_agent_that_never_changed_after_its_first_verdict_has_no_history() {
    let mut s = sup();
    pushed(&mut s, "p", 0.0, 0.0);
    pushed(&mut s, "p", 5.0, 5.0);
    assert_eq!(state(&mut s, "p", at(5.0)), State::Healthy);
    assert!(s.snapshot(at(5.0)).agent("p").unwrap().history.is_none());
    assert!(s.persist().agents.iter().all(|a| a.history.is_empty()));
}

#[test]
fn transitions_are_kept_oldest_first_from_the_state_left() {
    let mut s = sup();
    pushed(&mut s, "p", 0.0, 0.0);
    s.tick(at(10.1));
    pushed(&mut s, "p", 12.0, 12.0);
    s.tick(at(22.1));
    assert_eq!(
        history(&mut s, "p", at(22.1)),
        vec![
            (at(0.0), State::Healthy),
            (at(10.1), State::Stale),
            (at(12.0), State::Healthy),
            (at(22.1), State::Stale),
        ]
    );
}

#[test]
fn history_is_bounded_to_the_last_transitions() {
    let mut s = sup();
    pushed(&mut s, "p", 0.0, 0.0);
    let mut now = 0.0;
    for _ in 0..30 {
        s.tick(at(now + 10.1));
        now += 11.0;
        pushed(&mut s, "p", now, now);
    }
    let h = history(&mut s, "p", at(now));
    assert_eq!(h.len(), HISTORY_MAX);
    assert_eq!(h.last(), Some(&(at(now), State::Healthy)));
    assert!(h.windows(2).all(|w| w[0].0 < w[1].0), "{h:?}");
}

#[test]
fn history_survives_a_restart() {
    let mut s = sup();
    pushed(&mut s, "p", 0.0, 0.0);
    s.tick(at(10.1));
    let before = history(&mut s, "p", at(10.1));
    assert_eq!(before.len(), 2);
    let saved = s.persist();
    let mut again = sup();
    again.restore(saved, at(11.0));
    assert_eq!(history(&mut again, "p", at(11.0)), before);
    // And it goes on from there.
    pushed(&mut again, "p", 11.0, 11.0);
    assert_eq!(history(&mut again, "p", at(11.0)).len(), 3);
}

#[test]
fn the_persisted_view_carries_the_history() {
    let mut s = sup();
    pushed(&mut s, "p", 0.0, 0.0);
    pushed(&mut s, "q", 0.0, 0.0);
    s.tick(at(10.1));
    let owned = serde_json::to_value(s.persist()).unwrap();
    let snap = Arc::new(s.snapshot(at(10.1)));
    let view = s.persist_view(snap);
    assert_eq!(serde_json::to_value(&view).unwrap(), owned);
    let p = owned["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "p")
        .unwrap();
    assert_eq!(p["history"].as_array().unwrap().len(), 2, "{owned}");
}

#[test]
fn a_status_that_changes_without_a_change_of_state_is_in_the_next_snapshot() {
    let mut s = sup();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        vec![status("svc", true, "3 workers")],
    );
    assert_eq!(state(&mut s, "svc", at(0.0)), State::Healthy);
    scan(
        &mut s,
        at(1.0),
        at(1.0),
        vec![status("svc", true, "4 workers")],
    );
    let snap = s.snapshot(at(1.0));
    let svc = snap.agent("svc").unwrap();
    assert_eq!(svc.state, State::Healthy);
    let shown = svc.checks[0]
        .status
        .as_ref()
        .map(|st| st.detail.to_string());
    assert_eq!(shown.as_deref(), Some("4 workers"));
}

#[test]
fn a_snapshot_shares_the_chunks_where_nothing_changed() {
    let mut s = sup();
    let agents: Vec<String> = (0..5000).map(|i| format!("agent_{i:05}")).collect();
    let beats = |t: f64| agents.iter().map(|a| hb(a, at(t))).collect::<Vec<_>>();
    scan(&mut s, at(0.0), at(0.0), beats(0.0));
    let first = s.snapshot(at(0.0));
    // One agent beats again: its heartbeat, and nothing else, is new.
    scan(&mut s, at(1.0), at(1.0), vec![hb("agent_04000", at(1.0))]);
    let second = s.snapshot(at(1.0));
    assert_eq!(
        second.agent("agent_04000").unwrap().last_seen(0),
        Some(at(1.0))
    );
    assert_eq!(
        second.agent("agent_00001").unwrap().last_seen(0),
        Some(at(0.0))
    );
    let same_views = first
        .views()
        .zip(second.views())
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    // 5001 agents (with `expected_one`), in five chunks: every view is
    // shared, and four chunks of heartbeats out of five.
    assert_eq!(same_views, 5001);
    assert_eq!(second.shared_chunks(&first), (5, 4));
}

#[test]
fn changes_recorded_for_the_next_snapshot_stay_bounded_without_one() {
    let mut s = sup();
    // Nothing is recorded before the first snapshot.
    for i in 0..3000 {
        scan(
            &mut s,
            at(0.0),
            at(0.0),
            vec![hb("a", at(f64::from(i) * 0.001))],
        );
    }
    assert!(s.published.beats.is_empty());
    let _ = s.snapshot(at(3.0));
    // Then at most `most` (here the floor, 1024): past it the next
    // snapshot is built whole, and right.
    for i in 0..3000 {
        scan(
            &mut s,
            at(3.0),
            at(3.0),
            vec![hb("a", at(3.0 + f64::from(i) * 0.001))],
        );
        assert!(s.published.beats.len() <= s.published.most);
    }
    assert!(s.published.reshaped);
    let snap = s.snapshot(at(6.0));
    assert_eq!(snap.agent("a").unwrap().last_seen(0), Some(at(3.0 + 2.999)));
}

#[test]
fn agents_in_one_state_are_found_by_their_chunks_from_any_start() {
    let mut s = sup();
    let agents: Vec<String> = (0..3000).map(|i| format!("agent_{i:05}")).collect();
    scan(
        &mut s,
        at(0.0),
        at(0.0),
        agents.iter().map(|a| hb(a, at(0.0))).collect(),
    );
    let _ = s.snapshot(at(0.0));
    // Three agents stop, in three chunks; the others beat on.
    let stopped = ["agent_00005", "agent_01500", "agent_02999"];
    let beating = agents
        .iter()
        .filter(|a| !stopped.contains(&a.as_str()))
        .map(|a| hb(a, at(9.0)))
        .collect();
    scan(&mut s, at(9.0), at(9.0), beating);
    s.tick(at(10.5));
    confirm(
        &mut s,
        at(10.5),
        stopped.iter().map(|a| hb(a, at(0.0))).collect(),
    );
    let snap = s.snapshot(at(10.5));
    let all: Vec<(usize, String)> = snap
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state == State::Stale)
        .map(|(i, e)| (i, e.id.to_string()))
        .collect();
    assert_eq!(all.len(), 3, "{all:?}");
    for from in [0, 5, 6, 1024, 1500, 1501, 2999, 3000, 5000] {
        let found: Vec<(usize, String)> = snap
            .in_state(State::Stale, from)
            .map(|(i, e)| (i, e.id.to_string()))
            .collect();
        let want: Vec<(usize, String)> = all.iter().filter(|(i, _)| *i >= from).cloned().collect();
        assert_eq!(found, want, "from {from}");
    }
    assert_eq!(snap.in_state(State::Healthy, 0).count(), 2997);
}
