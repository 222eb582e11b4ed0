//! End to end with a real PostgreSQL and the app built from a YAML config:
//! staleness decided at the deadline (not at the next scan), and no stale
//! storm while PostgreSQL is down, with true ages once it is back.
//!
//! Each test works in a database of its own; the outage test stops and
//! restarts a private cluster.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Connection as _;

use crate::harness::{PostgresServer, shared_postgres};
use crate::scenarios::{
    STOPPER_STALE_AFTER, assert_source_still_down, never_stale_for, polled_source_config,
    stopped_agent_is_stale_within_a_second_of_its_deadline, wait_source_refused,
};
use crate::support::{exec, sample, spawn_app};

const TABLE: &str = "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz NOT NULL)";

/// The agent's heartbeat upsert, as an agent would write it, with the
/// given time (from the test's clock, so the true age is known).
async fn beat(url: &str, agent: &str, at: DateTime<Utc>) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    sqlx::query(
        "INSERT INTO hb (agent_id, last_seen) VALUES ($1, $2) \
         ON CONFLICT (agent_id) DO UPDATE SET last_seen = excluded.last_seen",
    )
    .bind(agent)
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("heartbeat of {agent}: {e}"));
    let _ = conn.close().await;
}

/// `read` is the YAML of the read (`query: ...` or `table: ...`).
fn config(url: &str, interval: &str, stale_after: &str, read: &str) -> String {
    polled_source_config("pg", "postgres", url, interval, read, stale_after)
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// PostgreSQL stopped mid-test: the source is down, its agents are
/// `unknown` and none goes stale, well past the thresholds; when it
/// returns, the agent that stopped meanwhile is stale with its true age and
/// the one that writes again is healthy.
#[tokio::test]
async fn postgres_outage_is_unknown_not_stale_and_recovery_reports_true_age() {
    let mut server = PostgresServer::start();
    let url = server.create_database("pg_e2e_outage").await;
    exec(&url, TABLE).await;
    let stale_after = TimeDelta::seconds(4);
    let t0 = Utc::now();
    beat(&url, "live", t0).await;
    beat(&url, "dead", t0).await;
    let app = spawn_app(&config(
        &url,
        "1s",
        "4s",
        "query: \"select agent_id, last_seen from hb\"",
    ))
    .await;
    app.wait_for_state("live", "healthy", Duration::from_secs(10))
        .await;
    app.wait_for_state("dead", "healthy", Duration::from_secs(10))
        .await;

    // `live` beats once more; `dead` has stopped at t0. CHECKPOINT: the
    // harness runs with synchronous_commit off, and the immediate shutdown
    // below would otherwise lose the rows.
    let t1 = Utc::now();
    beat(&url, "live", t1).await;
    exec(&url, "CHECKPOINT").await;
    assert!(
        Utc::now() < t0 + stale_after - TimeDelta::milliseconds(500),
        "setup took too long: `dead` would be stale before the outage begins"
    );
    server.stop();
    wait_source_refused(&app, "pg").await;
    assert_eq!(app.state_of("live").await.as_deref(), Some("unknown"));
    assert_eq!(app.state_of("dead").await.as_deref(), Some("unknown"));
    // Both thresholds pass while PostgreSQL is down (dead's at t0 + 4 s,
    // live's at t1 + 4 s); observe 3 s beyond the later one.
    let later_deadline = t1 + stale_after + TimeDelta::seconds(3);
    let observe = Duration::from_millis(
        u64::try_from((later_deadline - Utc::now()).num_milliseconds()).unwrap_or(0),
    );
    assert!(observe >= Duration::from_secs(3), "{observe:?}");
    never_stale_for(&app, &["live", "dead"], observe).await;
    assert_eq!(app.state_of("live").await.as_deref(), Some("unknown"));
    assert_eq!(app.state_of("dead").await.as_deref(), Some("unknown"));
    let m = assert_source_still_down(&app, "pg").await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_transitions_total{from="healthy",to="stale"}"#
        ),
        None,
        "an agent went stale during the outage"
    );

    // PostgreSQL returns with its data; `live` writes again from then on.
    // `dead` gets stale_after from the recovery, then is stale with its
    // true age.
    server.restart();
    let beating = {
        let url = url.clone();
        tokio::spawn(async move {
            loop {
                beat(&url, "live", Utc::now()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let dead_view = app
        .wait_for_state("dead", "stale", Duration::from_secs(15))
        .await;
    let age = dead_view["checks"][0]["age_seconds"].as_f64().unwrap();
    let true_age = seconds(Utc::now() - t0);
    assert!((true_age - age).abs() < 1.5, "age {age} vs true {true_age}");
    assert!(age > seconds(stale_after) + 3.0, "age {age}");
    let reason = dead_view["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("after pg came back from"), "{reason}");
    let live_view = app
        .wait_for_state("live", "healthy", Duration::from_secs(10))
        .await;
    let live_age = live_view["checks"][0]["age_seconds"].as_f64().unwrap();
    assert!(live_age < 2.0, "live age {live_age}");
    beating.abort();
    assert_eq!(app.source("pg").await["status"], "up");
    app.shutdown().await;
}

/// With a 5 s scan interval, a postgres agent that stops is stale within
/// 1 s of `last_seen + stale_after`, and not before (table form).
#[tokio::test]
async fn stopped_postgres_agent_is_stale_within_a_second_of_its_deadline_despite_a_5s_scan() {
    let url = shared_postgres().create_database("pg_e2e_stop").await;
    exec(&url, TABLE).await;
    let app = spawn_app(&config(
        &url,
        "5s",
        STOPPER_STALE_AFTER,
        "table: hb, id_column: agent_id, timestamp_column: last_seen",
    ))
    .await;
    // The heartbeat is moved onto the local clock by the offset measured
    // against PostgreSQL's clock (a round trip's midpoint): allow that
    // measurement a few milliseconds.
    stopped_agent_is_stale_within_a_second_of_its_deadline(
        &app,
        "stopper",
        |at| beat(&url, "stopper", at),
        TimeDelta::milliseconds(5),
    )
    .await;
    app.shutdown().await;
}
