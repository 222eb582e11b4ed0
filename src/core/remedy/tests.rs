use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::core::AgentRule;
use crate::core::snapshot::{Entry, SourceView};

fn t0() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 30, 10, 0, 0)
        .unwrap()
}

fn at(secs: u64) -> Timestamp {
    after(t0(), Duration::from_secs(secs))
}

fn rule() -> RemedyRule {
    RemedyRule {
        action: "restart_agent".into(),
        on: vec![State::Stale],
        after: Duration::from_secs(10),
        max_attempts: 2,
        window: Duration::from_secs(3600),
        backoff: Duration::from_secs(5),
        verify_within: Duration::from_secs(20),
        page: PageMode::AfterRemediation,
        report: Some("agent_status".into()),
        hold_max: Duration::from_secs(120),
    }
}

fn remedies_with(rule: RemedyRule, limits: Limits) -> Remedies {
    let policy = Policy {
        rules: vec![
            AgentRule::new("agent_*", None, Labels::new(), false)
                .unwrap()
                .with_remediation(Some(rule)),
        ],
        ..Policy::default()
    };
    Remedies::new(policy, limits)
}

fn remedies() -> Remedies {
    remedies_with(rule(), Limits::default())
}

/// A snapshot of `agents` (id, state, since), one Redis check each, the
/// source `redis` in `source`.
fn snap_with(agents: &[(&str, State, Timestamp)], source: SourceStatus) -> Snapshot {
    let agents = agents
        .iter()
        .map(|(id, state, since)| {
            let mut a = AgentView::with_one_check(id, *state, "redis", "t", *since);
            a.since = *since;
            (a, vec![Some(*since)])
        })
        .collect();
    Snapshot::of(t0(), agents).with_sources(vec![SourceView {
        name: "redis".into(),
        kind: "redis".into(),
        status: source,
        since: t0(),
        last_success: None,
        last_scan_started: None,
        error: None,
        checks: 1,
    }])
}

fn snap(agents: &[(&str, State, Timestamp)]) -> Snapshot {
    snap_with(agents, SourceStatus::Up)
}

fn not_silenced(_: Entry<'_>) -> bool {
    false
}

fn ok() -> CallResult {
    CallResult {
        ok: true,
        status: Some(200),
        ..CallResult::default()
    }
}

fn failed(status: u16) -> CallResult {
    CallResult {
        ok: false,
        status: Some(status),
        error: Some(format!("answer {status}")),
        ..CallResult::default()
    }
}

#[test]
fn a_stuck_agent_is_called_after_the_wait_and_recovery_closes_the_case() {
    let mut r = remedies();
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    assert!(r.step(&stale, true, &not_silenced, at(9)).is_empty());
    assert_eq!(r.next_wakeup(), Some(at(10)));
    let calls = r.step(&stale, true, &not_silenced, at(10));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].action, "restart_agent");
    assert_eq!(calls[0].number, 1);
    // Nothing more while the call is in flight.
    assert!(r.step(&stale, true, &not_silenced, at(11)).is_empty());
    assert!(r.call_done(calls[0].attempt, ok(), at(11)).is_empty());
    let view = r.view(at(11));
    assert!(matches!(
        view.cases["agent_a"].phase,
        Phase::Verifying { .. }
    ));
    // The page still waits.
    let agent = stale.agent("agent_a").unwrap().view;
    assert_eq!(view.hold_until(&r.policy, agent), Some(at(120)));
    let healthy = snap(&[("agent_a", State::Healthy, at(12))]);
    assert!(r.step(&healthy, true, &not_silenced, at(12)).is_empty());
    let events = r.take_events();
    assert!(events.contains(&RemedyEvent::Recovered {
        agent: "agent_a".into(),
        action: "restart_agent".into()
    }));
    let view = r.view(at(12));
    assert!(view.cases.is_empty());
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.attempts[0].outcome, Outcome::Recovered);
    assert_eq!(
        view.acted_since(&"agent_a".into(), at(0)),
        Some("restart_agent")
    );
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn a_call_that_does_not_help_is_tried_max_attempts_times_with_backoff_then_reported() {
    let mut r = remedies();
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    let first = r.step(&stale, true, &not_silenced, at(10));
    r.call_done(first[0].attempt, ok(), at(10));
    // Verification ends at 30 s: not recovered, back off 5 s.
    assert!(r.step(&stale, true, &not_silenced, at(29)).is_empty());
    assert!(r.step(&stale, true, &not_silenced, at(30)).is_empty());
    assert_eq!(r.next_wakeup(), Some(at(35)));
    let second = r.step(&stale, true, &not_silenced, at(35));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].number, 2);
    // The second one fails outright: no third call; the report is asked.
    let report = r.call_done(second[0].attempt, failed(500), at(36));
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].action, "agent_status");
    assert_eq!(report[0].trigger, Trigger::Report);
    let view = r.view(at(36));
    let agent = stale.agent("agent_a").unwrap().view;
    // The page waits for the report.
    assert!(view.hold_until(&r.policy, agent).is_some());
    let body = CallResult {
        body: Some("{\"stuck\": true}".into()),
        ..ok()
    };
    assert!(r.call_done(report[0].attempt, body, at(37)).is_empty());
    let view = r.view(at(37));
    assert_eq!(view.hold_until(&r.policy, agent), None);
    let note = view.note(&"agent_a".into(), at(0)).unwrap();
    assert_eq!(
        note.summary,
        "remediation failed: 2 × restart_agent, last: answer 500"
    );
    assert_eq!(note.attempts.len(), 2);
    assert!(note.attempts[0].contains("not_recovered"), "{note:?}");
    assert!(note.attempts[1].contains("failed (answer 500)"), "{note:?}");
    assert_eq!(note.report.as_deref(), Some("{\"stuck\": true}"));
    // Done: no more calls, however long it stays stale.
    assert!(r.step(&stale, true, &not_silenced, at(3000)).is_empty());
    assert_eq!(r.next_wakeup(), None);
}

#[test]
fn backoff_doubles_and_is_bounded() {
    let r = rule();
    assert_eq!(r.backoff_after(1), Duration::from_secs(5));
    assert_eq!(r.backoff_after(2), Duration::from_secs(10));
    assert_eq!(r.backoff_after(3), Duration::from_secs(20));
    assert_eq!(r.backoff_after(100), Duration::from_secs(5 * 64));
}

#[test]
fn more_agents_than_max_agents_at_once_halts_every_one_of_them() {
    let mut r = remedies();
    let ids: Vec<String> = (0..6).map(|i| format!("agent_{i}")).collect();
    let agents: Vec<(&str, State, Timestamp)> = ids
        .iter()
        .map(|id| (id.as_str(), State::Stale, at(0)))
        .collect();
    let stale = snap(&agents);
    assert!(r.step(&stale, true, &not_silenced, at(10)).is_empty());
    let events = r.take_events();
    assert!(events.contains(&RemedyEvent::BreakerOpened { agents: 6, max: 5 }));
    let view = r.view(at(10));
    assert!(view.breaker_open);
    for id in &ids {
        let agent = stale.agent(id).unwrap().view;
        assert_eq!(view.hold_until(&r.policy, agent), None, "{id}");
        assert!(
            view.note(&AgentId::from(id.as_str()), at(0))
                .unwrap()
                .summary
                .contains("6 agents need an action at once")
        );
    }
    // Even once most recover, the halted ones are not acted on.
    let one = snap(&[("agent_0", State::Stale, at(0))]);
    assert!(r.step(&one, true, &not_silenced, at(100)).is_empty());
    assert!(!r.view(at(100)).breaker_open);
}

#[test]
fn five_agents_are_within_the_bound() {
    let mut r = remedies();
    let ids: Vec<String> = (0..5).map(|i| format!("agent_{i}")).collect();
    let agents: Vec<(&str, State, Timestamp)> = ids
        .iter()
        .map(|id| (id.as_str(), State::Stale, at(0)))
        .collect();
    assert_eq!(r.step(&snap(&agents), true, &not_silenced, at(10)).len(), 5);
}

#[test]
fn nothing_is_called_on_unknown_data_a_down_source_a_failing_service_silence_or_a_follower() {
    let stale = || snap(&[("agent_a", State::Stale, at(0))]);
    // Not the leader: nothing waits for what this replica will not try.
    let mut r = remedies();
    assert!(r.step(&stale(), false, &not_silenced, at(10)).is_empty());
    let view = r.view(at(10));
    assert_eq!(view.cases["agent_a"].blocked, Some(Block::NotLeader));
    assert_eq!(
        view.hold_until(&r.policy, stale().agent("agent_a").unwrap().view),
        None
    );
    // Silenced.
    let mut r = remedies();
    assert!(r.step(&stale(), true, &|_| true, at(10)).is_empty());
    assert_eq!(
        r.view(at(10)).cases["agent_a"].blocked,
        Some(Block::Silenced)
    );
    // The source is down.
    let mut r = remedies();
    let down = snap_with(&[("agent_a", State::Stale, at(0))], SourceStatus::Down);
    assert!(r.step(&down, true, &not_silenced, at(10)).is_empty());
    assert_eq!(
        r.view(at(10)).cases["agent_a"].blocked,
        Some(Block::SourceDown("redis".into()))
    );
    // The service check it depends on is failing.
    let mut r = remedies();
    let mut a = AgentView::with_one_check("agent_a", State::Stale, "redis", "t", at(0));
    a.checks[0].depends_on = Some("service".into());
    let service = AgentView::with_one_check("service", State::Failing, "redis", "t", at(0));
    let s = Snapshot::of(
        t0(),
        vec![(a, vec![Some(at(0))]), (service, vec![Some(at(0))])],
    )
    .with_sources(snap(&[]).sources);
    assert!(r.step(&s, true, &not_silenced, at(10)).is_empty());
    assert_eq!(
        r.view(at(10)).cases["agent_a"].blocked,
        Some(Block::Dependency("service".into()))
    );
    // Unknown: the case waits, and goes on once the data is back.
    let mut r = remedies();
    assert!(r.step(&stale(), true, &not_silenced, at(5)).is_empty());
    let unknown = snap(&[("agent_a", State::Unknown, at(6))]);
    assert!(r.step(&unknown, true, &not_silenced, at(20)).is_empty());
    assert_eq!(r.next_wakeup(), None);
    assert_eq!(r.step(&stale(), true, &not_silenced, at(21)).len(), 1);
}

#[test]
fn the_global_rate_limit_delays_calls_to_the_next_minute() {
    let limits = Limits {
        max_per_minute: 2,
        ..Limits::default()
    };
    let mut r = remedies_with(rule(), limits);
    let s = snap(&[
        ("agent_a", State::Stale, at(0)),
        ("agent_b", State::Stale, at(1)),
        ("agent_c", State::Stale, at(2)),
    ]);
    let calls = r.step(&s, true, &not_silenced, at(20));
    assert_eq!(calls.len(), 2);
    // Oldest incidents first.
    assert_eq!(calls[0].agent, AgentId::from("agent_a"));
    assert_eq!(calls[1].agent, AgentId::from("agent_b"));
    assert_eq!(
        r.view(at(20)).cases["agent_c"].blocked,
        Some(Block::RateLimited)
    );
    assert_eq!(r.next_wakeup(), Some(at(80)));
    assert!(r.step(&s, true, &not_silenced, at(79)).is_empty());
    let later = r.step(&s, true, &not_silenced, at(80));
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].agent, AgentId::from("agent_c"));
}

#[test]
fn dry_run_asks_for_a_call_marked_dry_and_pages_at_once() {
    let limits = Limits {
        dry_run: true,
        ..Limits::default()
    };
    let mut r = remedies_with(rule(), limits);
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    // No hold at all in a dry run.
    let view = r.view(at(0));
    assert_eq!(
        view.hold_until(&r.policy, stale.agent("agent_a").unwrap().view),
        None
    );
    let calls = r.step(&stale, true, &not_silenced, at(10));
    assert_eq!(calls.len(), 1);
    assert!(calls[0].dry_run);
    let dry = CallResult {
        dry_run: true,
        ok: true,
        ..CallResult::default()
    };
    // No report is fetched in a dry run.
    assert!(r.call_done(calls[0].attempt, dry, at(10)).is_empty());
    let view = r.view(at(10));
    assert_eq!(view.attempts[0].outcome, Outcome::DryRun);
    assert_eq!(
        view.note(&"agent_a".into(), at(0)).unwrap().summary,
        "dry run: restart_agent would have been called"
    );
    assert!(view.acted_since(&"agent_a".into(), at(0)).is_none());
}

#[test]
fn attempts_are_counted_per_window_across_incidents() {
    let mut r = remedies_with(
        RemedyRule {
            report: None,
            ..rule()
        },
        Limits::default(),
    );
    for (k, start) in [(0u64, 0u64), (1, 100)] {
        let stale = snap(&[("agent_a", State::Stale, at(start))]);
        let calls = r.step(&stale, true, &not_silenced, at(start + 10));
        assert_eq!(calls.len(), 1, "incident {k}");
        r.call_done(calls[0].attempt, ok(), at(start + 10));
        let healthy = snap(&[("agent_a", State::Healthy, at(start + 11))]);
        r.step(&healthy, true, &not_silenced, at(start + 11));
    }
    // A third incident within the hour: the budget is used; it pages.
    let stale = snap(&[("agent_a", State::Stale, at(200))]);
    assert!(r.step(&stale, true, &not_silenced, at(210)).is_empty());
    let view = r.view(at(210));
    assert!(matches!(
        view.cases["agent_a"].phase,
        Phase::Done { end: End::NoBudget }
    ));
    assert!(
        view.note(&"agent_a".into(), at(200))
            .unwrap()
            .summary
            .contains("already called 2 time(s) within 1h")
    );
    // An hour after the first, it may act again.
    let stale = snap(&[("agent_a", State::Healthy, at(3700))]);
    r.step(&stale, true, &not_silenced, at(3700));
    let stale = snap(&[("agent_a", State::Stale, at(3700))]);
    assert_eq!(r.step(&stale, true, &not_silenced, at(3710)).len(), 1);
}

#[test]
fn the_page_is_presumed_held_until_the_case_is_seen_and_a_state_not_acted_on_pages() {
    let r = remedies();
    let view = r.view(at(0));
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    assert_eq!(
        view.hold_until(&r.policy, stale.agent("agent_a").unwrap().view),
        Some(at(120))
    );
    let failing = snap(&[("agent_a", State::Failing, at(0))]);
    assert_eq!(
        view.hold_until(&r.policy, failing.agent("agent_a").unwrap().view),
        None
    );
    let other = snap(&[("other", State::Stale, at(0))]);
    assert_eq!(
        view.hold_until(&r.policy, other.agent("other").unwrap().view),
        None
    );
    let mut at_once = remedies_with(
        RemedyRule {
            page: PageMode::AtOnce,
            ..rule()
        },
        Limits::default(),
    );
    at_once.step(&stale, true, &not_silenced, at(1));
    assert_eq!(
        at_once
            .view(at(1))
            .hold_until(&at_once.policy, stale.agent("agent_a").unwrap().view),
        None
    );
}

#[test]
fn a_manual_call_is_recorded_and_does_not_touch_the_case() {
    let mut r = remedies();
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    assert!(r.manual(&stale, "nobody", "restart_agent", at(1)).is_none());
    let call = r.manual(&stale, "agent_a", "restart_agent", at(1)).unwrap();
    assert_eq!(call.trigger, Trigger::Manual);
    r.call_done(call.attempt, failed(503), at(2));
    let a = r.attempt_by_id(call.attempt).unwrap();
    assert_eq!(a.outcome, Outcome::Failed);
    assert_eq!(a.status, Some(503));
    // The automatic remediation still runs on its own schedule.
    assert_eq!(r.step(&stale, true, &not_silenced, at(10)).len(), 1);
}

#[test]
fn the_history_is_bounded() {
    let limits = Limits {
        history: 3,
        ..Limits::default()
    };
    let mut r = remedies_with(rule(), limits);
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    for i in 0..10 {
        let c = r.manual(&stale, "agent_a", "restart_agent", at(i)).unwrap();
        r.call_done(c.attempt, ok(), at(i));
    }
    let view = r.view(at(10));
    assert_eq!(view.attempts.len(), 3);
    assert!(view.attempts[0].id > view.attempts[1].id);
}

#[test]
fn attempt_lines_say_what_happened() {
    let a = Attempt {
        id: 1,
        agent: "agent_a".into(),
        action: "restart_agent".into(),
        trigger: Trigger::Auto,
        number: 2,
        at: at(61),
        outcome: Outcome::Failed,
        status: None,
        error: Some("timed out after 2s".into()),
        duration_ms: Some(2000),
        verified_at: None,
    };
    assert_eq!(
        attempt_line(&a),
        "10:01:01Z restart_agent #2: failed (timed out after 2s)"
    );
}

#[test]
fn calls_made_before_a_restart_still_count_in_the_window() {
    let mut r = remedies_with(
        RemedyRule {
            report: None,
            ..rule()
        },
        Limits::default(),
    );
    let stale = snap(&[("agent_a", State::Stale, at(0))]);
    let first = r.step(&stale, true, &not_silenced, at(10));
    let rev = r.revision();
    r.call_done(first[0].attempt, ok(), at(10));
    assert!(r.revision() > rev);
    // The process dies while verifying; what it saved before is restored.
    let saved = r.persist();
    let json = serde_json::to_string(&saved).unwrap();
    let mut again = remedies_with(
        RemedyRule {
            report: None,
            ..rule()
        },
        Limits::default(),
    );
    again.restore(serde_json::from_str(&json).unwrap(), at(40));
    // Still stale: one more call (max_attempts is 2), then it pages.
    let second = again.step(&stale, true, &not_silenced, at(50));
    assert_eq!(second.len(), 1);
    assert!(second[0].attempt > first[0].attempt, "ids are not reused");
    again.call_done(second[0].attempt, failed(500), at(50));
    assert!(again.step(&stale, true, &not_silenced, at(500)).is_empty());
    let view = again.view(at(500));
    assert!(matches!(view.cases["agent_a"].phase, Phase::Done { .. }));
    assert_eq!(
        view.acted_since(&"agent_a".into(), at(0)),
        Some("restart_agent")
    );
}
