//! End-to-end scenarios that are the same for every polled source: the
//! source-specific tests set up the store and the app, and pass in how an
//! agent writes its heartbeat there.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::harness::{holds_for, wait_until};
use crate::support::{TestApp, sample, source_errors};

/// The config of an end-to-end test: one polled source, `name` of type
/// `kind`, reading `url` every `interval` (1 s timeout) with `read` (its
/// layout or query, as YAML flow-mapping entries); every agent stale after
/// `stale_after`; 1 s start-up grace.
pub fn polled_source_config(
    name: &str,
    kind: &str,
    url: &str,
    interval: &str,
    read: &str,
    stale_after: &str,
) -> String {
    format!(
        r#"
startup_grace: 1s
sources:
  - {{name: {name}, type: {kind}, url: "{url}", interval: {interval}, timeout: 1s,
      {read}}}
agents:
  - {{match: "*", stale_after: {stale_after}}}
"#
    )
}

/// The `stale_after` the [`stopped_agent_is_stale_within_a_second_of_its_deadline`]
/// scenario expects of its app.
pub const STOPPER_STALE_AFTER: &str = "3s";

/// An agent that beats, then stops, is stale within 1 s of
/// `last_seen + 3 s`, and not before, even with a scan interval (5 s in the
/// callers) longer than that.
///
/// `agent` beats (through `beat`) every 500 ms until `app` reports it
/// healthy, then four more times 700 ms apart (newer than what the last scan
/// saw), then stops. It must then be found by the next scan or, if that comes
/// after the deadline, by the deadline's point read. `early` is how much
/// before the deadline being stale is tolerated (a source that moves
/// heartbeats onto the local clock by a measured offset needs a few
/// milliseconds).
pub async fn stopped_agent_is_stale_within_a_second_of_its_deadline<F, Fut>(
    app: &TestApp,
    agent: &str,
    beat: F,
    early: TimeDelta,
) where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: Future<Output = ()>,
{
    let stale_after = TimeDelta::seconds(3);
    let beat = &beat;
    // The agent beats every 500 ms until the supervisor knows it...
    let last_seen = &Cell::new(Utc::now());
    beat(last_seen.get()).await;
    wait_until(
        &format!("{agent} is seen healthy"),
        Duration::from_secs(15),
        || async move {
            if app.state_of(agent).await.as_deref() == Some("healthy") {
                return true;
            }
            if Utc::now() - last_seen.get() > TimeDelta::milliseconds(500) {
                last_seen.set(Utc::now());
                beat(last_seen.get()).await;
            }
            false
        },
    )
    .await;
    // ...keeps beating for a while...
    let mut every = tokio::time::interval(Duration::from_millis(700));
    for _ in 0..4 {
        every.tick().await;
        last_seen.set(Utc::now());
        beat(last_seen.get()).await;
    }
    // ...and stops.
    let deadline = last_seen.get() + stale_after;
    let late = TimeDelta::milliseconds(1000);
    let time_left = (deadline + late - Utc::now()).to_std().unwrap_or_default();
    wait_until(
        &format!("{agent} is stale, at most {late} after its deadline"),
        time_left,
        || async move {
            match app.state_of(agent).await.as_deref() {
                Some("stale") => true,
                Some("healthy" | "unknown") | None => false,
                Some(other) => panic!("{agent}: unexpected state {other}"),
            }
        },
    )
    .await;
    let now = Utc::now();
    assert!(
        now >= deadline - early,
        "stale {} before its deadline",
        deadline - now
    );
    assert!(
        now - deadline < late,
        "stale {} after its deadline",
        now - deadline
    );
    let view = app.agent(agent).await.expect("agent known");
    let age = view["checks"][0]["age_seconds"].as_f64().expect("age");
    assert!((3.0..4.5).contains(&age), "age {age}");
}

/// Polls `app` for `period`: none of `agents` is ever reported stale.
pub async fn never_stale_for(app: &TestApp, agents: &[&str], period: Duration) {
    holds_for(&format!("none of {agents:?} is stale"), period, || async {
        for agent in agents {
            if app.state_of(agent).await.as_deref() == Some("stale") {
                return false;
            }
        }
        true
    })
    .await;
}

/// Waits until `source`, whose server was just stopped, is reported down by
/// the API, for a refused connection.
pub async fn wait_source_refused(app: &TestApp, source: &str) {
    wait_until(
        &format!("source {source} is down"),
        Duration::from_secs(10),
        || async { app.source(source).await["status"] == "down" },
    )
    .await;
    let view = app.source(source).await;
    assert!(
        view["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("connection refused"),
        "{view}"
    );
}

/// `source` is still down, in the API and in `/metrics` (`source_up 0`, a
/// refused connection counted); returns the scrape.
pub async fn assert_source_still_down(app: &TestApp, source: &str) -> String {
    assert_eq!(app.source(source).await["status"], "down", "{source}");
    let m = app.scrape().await;
    let up = format!(r#"agent_supervisor_source_up{{source="{source}"}}"#);
    assert_eq!(sample(&m, &up), Some(0.0), "{m}");
    assert!(
        source_errors(&m, source, "connection_refused") >= 1.0,
        "{m}"
    );
    m
}
