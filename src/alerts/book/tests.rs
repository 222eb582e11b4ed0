use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::core::alert::{Matcher, Pattern, SilenceOrigin};
use crate::core::snapshot::{AgentView, CheckView, SourceView};
use crate::core::{AgentId, Labels, SourceId};

fn t0() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(secs: i64) -> Timestamp {
    t0() + chrono::Duration::seconds(secs)
}

fn agent(id: &str, state: State, since: Timestamp, labels: &[(&str, &str)]) -> AgentView {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AgentView {
        id: AgentId::from(id),
        state,
        since,
        reason: "why".into(),
        expected: false,
        labels: Arc::new(labels),
        checks: vec![CheckView {
            source: SourceId::from("redis"),
            state,
            since,
            reason: "why".into(),
            threshold_seconds: 30.0,
            status: None,
            depends_on: None,
        }],
        history: None,
    }
}

fn source(name: &str, status: SourceStatus) -> SourceView {
    SourceView {
        name: SourceId::from(name),
        kind: "redis".into(),
        status,
        since: t0(),
        last_success: None,
        last_scan_started: None,
        error: None,
        checks: 0,
    }
}

/// A snapshot of `agents`, each last seen 30 s before its `since`.
fn snap(agents: Vec<AgentView>, up: bool) -> Snapshot {
    let agents = agents
        .into_iter()
        .map(|a| {
            let beat = a.since - chrono::Duration::seconds(30);
            (a, vec![Some(beat)])
        })
        .collect();
    Snapshot::of(t0(), agents).with_sources(vec![source(
        "redis",
        if up {
            SourceStatus::Up
        } else {
            SourceStatus::Down
        },
    )])
}

fn timing(wait: u64, interval: u64, repeat: u64) -> Timing {
    Timing {
        group_wait: Duration::from_secs(wait),
        group_interval: Duration::from_secs(interval),
        repeat_interval: Duration::from_secs(repeat),
    }
}

fn route(matcher: Matcher, receivers: &[&str], group_by: &[&str], fallback: bool) -> Route {
    Route {
        matcher,
        receivers: receivers.iter().map(|s| s.to_string()).collect(),
        continue_matching: false,
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        timing: timing(10, 60, 3600),
        fallback,
    }
}

fn routing(receivers: &[&str]) -> Routing {
    Routing {
        routes: vec![route(Matcher::default(), receivers, &[], true)],
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

fn stale_fleet(n: usize, since: Timestamp) -> Vec<AgentView> {
    (0..n)
        .map(|i| agent(&format!("a{i:03}"), State::Stale, since, &[]))
        .collect()
}

/// An API silence of the agents matching `glob` from `from` to `to`.
fn silence(id: &str, glob: &str, from: i64, to: i64) -> Silence {
    Silence {
        id: id.into(),
        matchers: Matcher {
            agent: Some(Pattern::new(glob).unwrap()),
            ..Matcher::default()
        },
        starts_at: at(from),
        ends_at: at(to),
        comment: "maintenance".into(),
        created_by: "alice".into(),
        origin: SilenceOrigin::Api,
    }
}

/// A book with `n` agents stale since t=0, told to `oncall` at t=10.
fn notified(n: usize) -> (Routing, Book) {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(n, at(0)), 0);
    assert_eq!(run(&mut book, &r, 0, 10).len(), 1);
    (r, book)
}

/// Reconcile with these agents (source up, gate open) at `secs`.
fn see(book: &mut Book, r: &Routing, agents: Vec<AgentView>, secs: i64) -> Changes {
    book.reconcile(&snap(agents, true), r, true, at(secs))
}

/// Run the book from `from` to `to` one second at a time, collecting what
/// it sends.
fn run(book: &mut Book, r: &Routing, from: i64, to: i64) -> Vec<(i64, Notification)> {
    let mut out = Vec::new();
    for s in from..=to {
        book.tick(r, at(s));
        for n in book.flush(r, at(s)) {
            out.push((s, n));
        }
    }
    out
}

#[test]
fn a_hundred_agents_stale_within_group_wait_make_one_notification_per_receiver() {
    let r = routing(&["oncall", "chat"]);
    let mut book = Book::default();
    // Half go stale at t=0, the other half 5 s later (within group_wait).
    let mut agents = stale_fleet(50, at(0));
    see(&mut book, &r, agents.clone(), 0);
    agents.extend((50..100).map(|i| agent(&format!("a{i:03}"), State::Stale, at(5), &[])));
    let c = see(&mut book, &r, agents, 5);
    assert_eq!(c.fired, 50);
    let sent = run(&mut book, &r, 0, 30);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (when, n) in &sent {
        assert_eq!(*when, 10, "group_wait counts from the group's first alert");
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.alerts.len(), 100);
    }
    let receivers: BTreeSet<&str> = sent.iter().map(|(_, n)| n.receiver.as_str()).collect();
    assert_eq!(receivers, ["chat", "oncall"].into());
}

#[test]
fn resolution_is_sent_after_group_interval_to_those_told_it_fired() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(2, at(0)), 0);
    assert_eq!(run(&mut book, &r, 0, 10).len(), 1);
    // a000 recovers at t=20; next message at last flush (10) + 60.
    let mut agents = stale_fleet(2, at(0));
    agents[0] = agent("a000", State::Healthy, at(20), &[]);
    let c = see(&mut book, &r, agents, 20);
    assert_eq!(c.resolved, 1);
    let sent = run(&mut book, &r, 11, 100);
    assert_eq!(sent.len(), 1);
    let (when, n) = &sent[0];
    assert_eq!(*when, 70);
    assert_eq!(n.firing().count(), 1);
    let resolved: Vec<&Alert> = n.resolved().collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].agent.as_ref().unwrap().as_str(), "a000");
    assert_eq!(resolved[0].ends_at, Some(at(20)));
}

#[test]
fn a_group_whose_last_alert_resolves_sends_resolved_and_closes() {
    let (r, mut book) = notified(1);
    see(
        &mut book,
        &r,
        vec![agent("a000", State::Healthy, at(15), &[])],
        15,
    );
    let sent = run(&mut book, &r, 11, 200);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status, AlertStatus::Resolved);
    assert!(book.groups.is_empty());
    assert!(book.active.is_empty());
}

#[test]
fn still_firing_groups_repeat_every_repeat_interval_and_only_then() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(3, at(0)), 0);
    let sent = run(&mut book, &r, 0, 7300);
    let times: Vec<i64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![10, 3610, 7210]);
    assert!(sent.iter().all(|(_, n)| n.alerts.len() == 3));
}

#[test]
fn an_alert_that_resolves_before_group_wait_is_never_sent() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(1, at(0)), 0);
    see(
        &mut book,
        &r,
        vec![agent("a000", State::Healthy, at(3), &[])],
        3,
    );
    assert!(run(&mut book, &r, 0, 100).is_empty());
    assert!(book.groups.is_empty());
}

#[test]
fn unknown_holds_a_firing_alert_neither_resolved_nor_refired() {
    let (r, mut book) = notified(1);
    // The source goes down: the agent is unknown, the source alert fires.
    let c = book.reconcile(
        &snap(vec![agent("a000", State::Unknown, at(20), &[])], false),
        &r,
        true,
        at(20),
    );
    assert_eq!((c.fired, c.resolved), (1, 0));
    let sent = run(&mut book, &r, 11, 100);
    assert_eq!(sent.len(), 1);
    let kinds: Vec<AlertKind> = sent[0].1.alerts.iter().map(|a| a.kind).collect();
    assert!(kinds.contains(&AlertKind::SourceDown));
    assert!(sent[0].1.resolved().next().is_none(), "nothing resolved");
    // Back, and still stale: nothing new about the agent.
    let c = see(&mut book, &r, stale_fleet(1, at(0)), 120);
    assert_eq!((c.fired, c.resolved), (0, 1));
    let sent = run(&mut book, &r, 101, 200);
    assert_eq!(sent.len(), 1);
    let resolved: Vec<AlertKind> = sent[0].1.resolved().map(|a| a.kind).collect();
    assert_eq!(resolved, vec![AlertKind::SourceDown]);
}

#[test]
fn nothing_fires_or_resolves_before_the_gate_opens() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    let c = book.reconcile(&snap(stale_fleet(5, at(0)), true), &r, false, at(0));
    assert_eq!(c, Changes::default());
    assert!(book.active.is_empty());
    let c = see(&mut book, &r, stale_fleet(5, at(0)), 1);
    assert_eq!(c.fired, 5);
}

#[test]
fn silenced_alerts_stay_listed_but_are_not_sent_and_unsilencing_sends_them() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    book.add_silence(silence("s1", "a00[01]", 0, 100), &r, at(0));
    see(&mut book, &r, stale_fleet(3, at(0)), 0);
    assert_eq!(book.active.len(), 3);
    assert_eq!(book.counts()[&AlertKind::AgentStale], (1, 2));
    let sent = run(&mut book, &r, 0, 50);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.alerts.len(), 1);
    assert_eq!(book.next_wakeup(at(50)), Some(at(100)));
    // The silence ends: the two join the group and are sent.
    let sent = run(&mut book, &r, 51, 200);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 100);
    assert_eq!(sent[0].1.alerts.len(), 3);
    assert!(book.silences.is_empty(), "expired silences are dropped");
}

#[test]
fn silencing_a_notified_alert_does_not_resolve_it() {
    let (r, mut book) = notified(2);
    book.add_silence(silence("s", "a000", 0, 100_000), &r, at(20));
    let sent = run(&mut book, &r, 11, 3700);
    // Only the repeat, with the one unsilenced alert; no resolved message.
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 3610);
    assert_eq!(sent[0].1.alerts.len(), 1);
    assert!(sent[0].1.resolved().next().is_none());
}

#[test]
fn routes_match_in_order_and_the_default_takes_the_rest() {
    let mut r = routing(&["oncall"]);
    r.receivers.insert(
        "trading-pager".into(),
        ReceiverPolicy {
            send_resolved: true,
            resend_interval: None,
        },
    );
    let mut trading = route(
        Matcher {
            labels: [("team".to_string(), Pattern::new("trading").unwrap())].into(),
            ..Matcher::default()
        },
        &["trading-pager"],
        &["agent"],
        false,
    );
    trading.timing = timing(0, 60, 3600);
    r.routes.insert(0, trading);
    let mut book = Book::default();
    book.reconcile(
        &snap(
            vec![
                agent("trading_a", State::Stale, at(0), &[("team", "trading")]),
                agent("trading_b", State::Failing, at(0), &[("team", "trading")]),
                agent("other", State::Stale, at(0), &[]),
            ],
            true,
        ),
        &r,
        true,
        at(0),
    );
    let sent = run(&mut book, &r, 0, 20);
    let mut got: Vec<(i64, String, usize)> = sent
        .iter()
        .map(|(t, n)| (*t, n.receiver.clone(), n.alerts.len()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, "trading-pager".into(), 1),
            (0, "trading-pager".into(), 1),
            (10, "oncall".into(), 1),
        ]
    );
    // Grouped by agent: each trading group names its agent.
    let labels: BTreeSet<String> = sent
        .iter()
        .filter(|(_, n)| n.receiver == "trading-pager")
        .map(|(_, n)| n.group_labels["agent"].clone())
        .collect();
    assert_eq!(
        labels,
        ["trading_a".to_string(), "trading_b".to_string()].into()
    );
}

#[test]
fn send_resolved_off_means_no_resolved_message() {
    let mut r = routing(&["oncall"]);
    r.receivers.get_mut("oncall").unwrap().send_resolved = false;
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(1, at(0)), 0);
    run(&mut book, &r, 0, 10);
    see(
        &mut book,
        &r,
        vec![agent("a000", State::Healthy, at(15), &[])],
        15,
    );
    assert!(run(&mut book, &r, 11, 5000).is_empty());
    assert!(book.groups.is_empty());
}

#[test]
fn alertmanager_api_receivers_get_changes_at_once_and_resends_while_firing() {
    let mut r = routing(&["am"]);
    r.receivers.get_mut("am").unwrap().resend_interval = Some(Duration::from_secs(60));
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(1, at(0)), 0);
    let sent = run(&mut book, &r, 0, 130);
    let times: Vec<i64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![0, 60, 120]);
    see(
        &mut book,
        &r,
        vec![agent("a000", State::Healthy, at(125), &[])],
        125,
    );
    let sent = run(&mut book, &r, 125, 130);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 125);
    assert_eq!(sent[0].1.status, AlertStatus::Resolved);
}

#[test]
fn a_restored_book_sends_nothing_for_alerts_still_firing_and_resolves_the_cleared() {
    let (r, book) = notified(2);
    // Saved and loaded, as across a restart.
    let text = serde_json::to_string(&book).unwrap();
    let mut book: Book = serde_json::from_str(&text).unwrap();
    book.adopt(&r, at(500));
    // During start-up the restored snapshot holds everything.
    book.reconcile(&snap(stale_fleet(2, at(0)), true), &r, false, at(500));
    assert!(run(&mut book, &r, 500, 520).is_empty());
    // First scan: a000 still stale, a001 recovered while we were down.
    let mut agents = stale_fleet(2, at(0));
    agents[1] = agent("a001", State::Healthy, at(400), &[]);
    let c = see(&mut book, &r, agents, 521);
    assert_eq!((c.fired, c.resolved), (0, 1));
    let sent = run(&mut book, &r, 521, 600);
    assert_eq!(sent.len(), 1);
    let n = &sent[0].1;
    assert_eq!(n.resolved().count(), 1);
    assert_eq!(n.firing().count(), 1);
}

#[test]
fn a_forgotten_agent_resolves_its_alert() {
    let (r, mut book) = notified(1);
    see(&mut book, &r, vec![], 20);
    let sent = run(&mut book, &r, 11, 100);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status, AlertStatus::Resolved);
}

#[test]
fn a_kind_change_resolves_the_old_alert_and_fires_the_new() {
    let (r, mut book) = notified(1);
    let c = see(
        &mut book,
        &r,
        vec![agent("a000", State::Failing, at(20), &[])],
        20,
    );
    assert_eq!((c.fired, c.resolved), (1, 1));
    let sent = run(&mut book, &r, 11, 100);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1.firing().next().unwrap().kind,
        AlertKind::AgentFailing
    );
    assert_eq!(
        sent[0].1.resolved().next().unwrap().kind,
        AlertKind::AgentStale
    );
}

#[test]
fn each_message_tells_the_age_as_of_its_sending() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    see(&mut book, &r, stale_fleet(1, at(0)), 0);
    let sent = run(&mut book, &r, 0, 3610);
    assert_eq!(sent.len(), 2);
    // last_seen is 30 s before the agent turned stale at t=0.
    assert_eq!(sent[0].1.alerts[0].age_seconds, Some(40.0));
    assert_eq!(sent[1].1.alerts[0].age_seconds, Some(3640.0));
    assert!(
        sent[1].1.alerts[0].summary.contains("1h 0m ago"),
        "{}",
        sent[1].1.alerts[0].summary
    );
}

#[test]
fn a_restored_silenced_alert_whose_silence_is_gone_is_told_again() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    book.set_config_silences(vec![silence("cfg", "a000", 0, 100_000)]);
    see(&mut book, &r, stale_fleet(1, at(0)), 0);
    assert!(run(&mut book, &r, 0, 20).is_empty());
    let text = serde_json::to_string(&book).unwrap();
    // Restarted with the config silence removed.
    let mut book: Book = serde_json::from_str(&text).unwrap();
    book.adopt(&r, at(30));
    let sent = run(&mut book, &r, 30, 50);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.firing().count(), 1);
}

#[test]
fn an_alert_with_a_for_hold_fires_only_once_the_state_has_lasted_that_long() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    struct A000Waits;
    impl Holds for A000Waits {
        fn agent(&self, agent: &str) -> Duration {
            if agent.starts_with("a000") {
                Duration::from_secs(120)
            } else {
                Duration::ZERO
            }
        }
        fn source(&self, _: &str) -> Duration {
            Duration::ZERO
        }
    }
    let hold = A000Waits;
    let c = book.reconcile_with_holds(&snap(stale_fleet(2, at(0)), true), &r, true, &hold, at(0));
    assert_eq!((c.fired, c.resolved), (1, 0), "a001 fires, a000 waits");
    assert_eq!(book.next_wakeup(at(0)), Some(at(10)));
    assert!(!book.hold_ended(at(119)));
    assert!(book.hold_ended(at(120)));
    let c = book.reconcile_with_holds(&snap(stale_fleet(2, at(0)), true), &r, true, &hold, at(120));
    assert_eq!((c.fired, c.resolved), (1, 0));
    assert!(!book.hold_ended(at(500)));
    // A flap shorter than the hold never fires.
    let mut book = Book::default();
    let agents = vec![agent("a000_flappy", State::Failing, at(0), &[])];
    book.reconcile_with_holds(&snap(agents, true), &r, true, &hold, at(0));
    let agents = vec![agent("a000_flappy", State::Healthy, at(60), &[])];
    book.reconcile_with_holds(&snap(agents, true), &r, true, &hold, at(60));
    assert!(book.active.is_empty());
    assert!(!book.hold_ended(at(200)));
    assert!(run(&mut book, &r, 0, 300).is_empty());
}

#[test]
fn a_source_outage_shorter_than_down_after_never_fires() {
    let r = routing(&["oncall"]);
    let policy = Policy {
        source_down_after: [(SourceId::from("redis"), Duration::from_secs(10))].into(),
        ..Policy::default()
    };
    let mut book = Book::default();
    // Down since t0 (the helper's `since`): held for 10 s.
    let c = book.reconcile_with_holds(&snap(Vec::new(), false), &r, true, &policy, at(2));
    assert_eq!((c.fired, c.resolved), (0, 0));
    assert_eq!(book.next_wakeup(at(2)), Some(at(10)));
    // Back up at 5 s: a blip, nothing ever fires.
    book.reconcile_with_holds(&snap(Vec::new(), true), &r, true, &policy, at(5));
    assert!(book.active.is_empty());
    assert!(run(&mut book, &r, 5, 100).is_empty());
    // Down for longer than that: it fires once the hold is over.
    let mut book = Book::default();
    book.reconcile_with_holds(&snap(Vec::new(), false), &r, true, &policy, at(9));
    assert!(book.active.is_empty());
    assert!(book.hold_ended(at(10)));
    let c = book.reconcile_with_holds(&snap(Vec::new(), false), &r, true, &policy, at(10));
    assert_eq!(c.fired, 1);
    assert_eq!(
        book.active.values().next().map(|a| a.alert.kind),
        Some(AlertKind::SourceDown)
    );
}

#[test]
fn a_stale_agent_that_turns_failing_is_not_told_as_recovered() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    let stale = vec![agent("a", State::Stale, at(0), &[])];
    book.reconcile(&snap(stale, true), &r, true, at(0));
    assert_eq!(run(&mut book, &r, 0, 30).len(), 1);
    let failing = vec![agent("a", State::Failing, at(100), &[])];
    book.reconcile(&snap(failing, true), &r, true, at(100));
    let sent = run(&mut book, &r, 100, 200);
    let resolved: Vec<String> = sent
        .iter()
        .flat_map(|(_, n)| n.resolved().map(|a| a.text().into_owned()))
        .collect();
    assert_eq!(
        resolved,
        vec!["a is no longer stale at 12:01:40Z after 1m 40s: now failing".to_string()]
    );
}

/// At most MAX_API_SILENCES active: one more is refused and nothing is
/// added; an expired one no longer counts.
#[test]
fn api_silences_are_bounded_and_expired_ones_make_room() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    book.add_silence(silence("short", "a*", 0, 10), &r, at(0));
    for i in 1..MAX_API_SILENCES {
        assert!(book.add_silence(silence(&format!("s{i}"), "a*", 0, 100), &r, at(0)));
    }
    assert!(!book.add_silence(silence("one-too-many", "a*", 0, 100), &r, at(0)));
    assert_eq!(book.silences.len(), MAX_API_SILENCES);
    assert!(book.add_silence(silence("after-expiry", "a*", 20, 100), &r, at(20)));
    assert!(book.silences.iter().all(|s| s.id != "short"));
}

#[test]
fn notification_ids_are_never_reused_and_go_on_from_a_saved_book() {
    let r = routing(&["oncall"]);
    let mut book = Book::default();
    let mut ids = BTreeSet::new();
    let mut take = |sent: Vec<(i64, Notification)>| {
        for (_, n) in sent {
            assert!(ids.insert(n.id.clone()), "reused {}", n.id);
        }
    };
    // The first message and its reminders (same content): ids of their own.
    see(&mut book, &r, stale_fleet(3, at(0)), 0);
    take(run(&mut book, &r, 0, 3 * 3600 + 20));
    // The incident ends; the same agents fail again: a new group, new ids,
    // even from a book saved and loaded in between.
    see(&mut book, &r, vec![], 4 * 3600);
    take(run(&mut book, &r, 4 * 3600, 4 * 3600 + 100));
    let saved = serde_json::to_string(&book).unwrap();
    let mut book: Book = serde_json::from_str(&saved).unwrap();
    see(&mut book, &r, stale_fleet(3, at(5 * 3600)), 5 * 3600);
    let again = run(&mut book, &r, 5 * 3600, 5 * 3600 + 20);
    assert_eq!(again.len(), 1);
    let id = again[0].1.id.clone();
    take(again);
    assert!(ids.len() >= 5, "{ids:?}");
    // A book going on from the same saved one numbers the same way: the
    // ids are the same on every replica that shares it.
    let mut twin: Book = serde_json::from_str(&saved).unwrap();
    see(&mut twin, &r, stale_fleet(3, at(5 * 3600)), 5 * 3600);
    let twin_again = run(&mut twin, &r, 5 * 3600, 5 * 3600 + 20);
    assert_eq!(twin_again[0].1.id, id);
}

#[test]
fn a_replica_that_stops_leading_tells_what_fires_afresh_if_it_leads_again() {
    let (r, mut book) = notified(3);
    book.forget_told(at(100));
    let sent = run(&mut book, &r, 100, 101);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, 100, "at once, no group_wait again");
    assert_eq!(sent[0].1.firing().count(), 3);
    // A group with nothing firing is gone.
    see(&mut book, &r, vec![], 200);
    book.forget_told(at(201));
    assert!(book.groups.is_empty());
}
