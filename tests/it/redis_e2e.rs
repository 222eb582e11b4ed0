//! End to end with a real redis-server: staleness decided at the deadline
//! (not at the next scan), no false alarm for a live agent, and no stale
//! storm while Redis is down.

use std::time::Duration;

use chrono::{TimeDelta, Utc};

use crate::harness::{RedisServer, shared_redis_url, unique_prefix};
use crate::scenarios::{
    STOPPER_STALE_AFTER, assert_source_still_down, never_stale_for, polled_source_config,
    stopped_agent_is_stale_within_a_second_of_its_deadline, wait_source_refused,
};
use crate::support::{redis_beat, redis_client, sample, spawn_app};

fn config(url: &str, prefix: &str, interval: &str) -> String {
    polled_source_config(
        "redis",
        "redis",
        url,
        interval,
        &format!(r#"layout: keys, pattern: "{prefix}{{agent}}:last_seen""#),
        STOPPER_STALE_AFTER,
    )
}

/// With a 5 s scan interval, an agent that stops is stale within 1 s of
/// `last_seen + stale_after`, and not before.
#[tokio::test]
async fn stopped_agent_is_stale_within_a_second_of_its_deadline_despite_a_5s_scan() {
    let url = shared_redis_url();
    let prefix = unique_prefix("e2e_stop");
    let r = redis_client(&url).await;
    let key = format!("{prefix}stopper:last_seen");
    let app = spawn_app(&config(&url, &prefix, "5s")).await;
    stopped_agent_is_stale_within_a_second_of_its_deadline(
        &app,
        "stopper",
        |at| redis_beat(&r, &key, at),
        TimeDelta::zero(),
    )
    .await;
    app.shutdown().await;
}

/// An agent writing every 2 s with a 3 s threshold is never stale over 30 s.
#[tokio::test]
async fn agent_writing_every_2s_with_3s_threshold_is_never_stale_over_30s() {
    let url = shared_redis_url();
    let prefix = unique_prefix("e2e_live");
    let r = redis_client(&url).await;
    let key = format!("{prefix}steady:last_seen");
    redis_beat(&r, &key, Utc::now()).await;
    let app = spawn_app(&config(&url, &prefix, "5s")).await;
    app.wait_for_state("steady", "healthy", Duration::from_secs(10))
        .await;
    let writer = {
        let r = r.clone();
        let key = key.clone();
        tokio::spawn(async move {
            // The agent's own rhythm: a heartbeat every 2 s.
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                redis_beat(&r, &key, Utc::now()).await;
            }
        })
    };
    never_stale_for(&app, &["steady"], Duration::from_secs(30)).await;
    writer.abort();
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_transitions_total{from="healthy",to="stale"}"#
        ),
        None,
        "a live agent was reported stale"
    );
    assert_eq!(app.state_of("steady").await.as_deref(), Some("healthy"));
    app.shutdown().await;
}

/// Redis stopped mid-test: the source is down and nobody goes stale; when it
/// returns, the agent that stopped meanwhile is stale with its true age.
#[tokio::test]
async fn redis_outage_is_unknown_not_stale_and_recovery_reports_true_age() {
    let mut server = RedisServer::start();
    let url = server.url.clone();
    let prefix = unique_prefix("e2e_outage");
    let r = redis_client(&url).await;
    let live = format!("{prefix}live:last_seen");
    let dead = format!("{prefix}dead:last_seen");
    let t0 = Utc::now();
    redis_beat(&r, &live, t0).await;
    redis_beat(&r, &dead, t0).await;
    let app = spawn_app(&config(&url, &prefix, "1s")).await;
    app.wait_for_state("live", "healthy", Duration::from_secs(10))
        .await;
    app.wait_for_state("dead", "healthy", Duration::from_secs(10))
        .await;

    server.stop();
    wait_source_refused(&app, "redis").await;
    assert_eq!(app.state_of("live").await.as_deref(), Some("unknown"));
    // Well past both thresholds, nothing goes stale while Redis is down.
    never_stale_for(&app, &["live", "dead"], Duration::from_secs(5)).await;
    assert_eq!(app.state_of("live").await.as_deref(), Some("unknown"));
    assert_source_still_down(&app, "redis").await;

    // Redis returns (with its data: an AOF-backed Redis would keep it; this
    // one is rewritten as it was, plus the live agent's fresh beat).
    // `live` beats again from then on; `dead` does not. Outage time is not
    // silence: `dead` gets stale_after from the recovery, then is stale with
    // its true age and a reason that says what it was given.
    server.restart();
    let r = redis_client(&url).await;
    redis_beat(&r, &dead, t0).await;
    let beating = {
        let (r, live) = (r.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                redis_beat(&r, &live, Utc::now()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let dead_view = app
        .wait_for_state("dead", "stale", Duration::from_secs(10))
        .await;
    let age = dead_view["checks"][0]["age_seconds"].as_f64().unwrap();
    let true_age = (Utc::now() - t0).num_milliseconds() as f64 / 1e3;
    assert!((true_age - age).abs() < 1.5, "age {age} vs true {true_age}");
    let reason = dead_view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("after redis came back from"), "{reason}");
    app.wait_for_state("live", "healthy", Duration::from_secs(10))
        .await;
    beating.abort();
    assert_eq!(app.source("redis").await["status"], "up");
    app.shutdown().await;
}
