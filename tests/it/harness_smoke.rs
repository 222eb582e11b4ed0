//! Proves the harness gives real, working, isolated servers.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sqlx::Connection as _;

use crate::harness::{
    AlertmanagerServer, NextLine, OwnedChild, PipeLines, PostgresServer, RedisServer, free_port,
    holds_for, poll_until, redis_ping, shared_postgres, shared_redis_url, unique_prefix,
    wait_until, wait_until_sync,
};

fn connect_error(port: u16) -> Option<io::ErrorKind> {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .err()
    .map(|e| e.kind())
}

#[test]
fn private_redis_starts_stops_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url, format!("redis://127.0.0.1:{}", redis.port));
    redis_ping(&redis.url).expect("a freshly started Redis answers PING");

    redis.stop();
    assert_eq!(
        connect_error(redis.port),
        Some(io::ErrorKind::ConnectionRefused),
        "a stopped Redis refuses connections"
    );
    assert!(redis_ping(&redis.url).is_err());

    let port = redis.port;
    redis.restart();
    assert_eq!(redis.port, port, "restart keeps the port");
    redis_ping(&redis.url).expect("a restarted Redis answers PING");
}

#[test]
fn dropping_a_private_redis_stops_it() {
    let redis = RedisServer::start();
    let port = redis.port;
    redis_ping(&redis.url).expect("Redis answers PING");
    drop(redis);
    wait_until_sync(
        "a dropped Redis refuses connections",
        Duration::from_secs(10),
        || connect_error(port) == Some(io::ErrorKind::ConnectionRefused),
    );
}

#[test]
fn shared_redis_answers_ping() {
    let url = shared_redis_url();
    redis_ping(&url).unwrap_or_else(|e| panic!("shared Redis at {url}: {e}"));
    assert_eq!(shared_redis_url(), url, "one shared Redis per test process");
}

#[test]
fn unique_prefixes_differ() {
    let a = unique_prefix("smoke");
    let b = unique_prefix("smoke");
    assert_ne!(a, b);
    assert!(a.starts_with("t:smoke:") && a.ends_with(':'), "{a}");
}

#[test]
fn free_ports_are_not_handed_out_twice() {
    let ports: std::collections::HashSet<u16> = (0..20).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 20);
}

async fn current_database(url: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("select current_database()");
    conn.close().await.expect("close");
    name
}

#[tokio::test]
async fn shared_postgres_gives_each_test_its_own_database() {
    let pg = shared_postgres();
    let first = pg.create_database("smoke").await;
    let second = pg.create_database("smoke").await;
    assert_ne!(first, second);

    let first_name = current_database(&first).await;
    let second_name = current_database(&second).await;
    assert_ne!(first_name, second_name);
    assert!(
        first.ends_with(&format!("/{first_name}")),
        "{first} vs {first_name}"
    );
    assert!(
        second.ends_with(&format!("/{second_name}")),
        "{second} vs {second_name}"
    );
}

#[tokio::test]
async fn private_postgres_stops_and_restarts_on_the_same_port() {
    let mut pg = PostgresServer::start();
    let url = pg.create_database("restart").await;
    let name = current_database(&url).await;

    pg.stop();
    assert_eq!(
        connect_error(pg.port),
        Some(io::ErrorKind::ConnectionRefused),
        "a stopped PostgreSQL refuses connections"
    );

    pg.restart();
    assert_eq!(
        current_database(&url).await,
        name,
        "the database survives a restart"
    );
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let mut calls = 0;
    wait_until("the third check", Duration::from_secs(5), || {
        calls += 1;
        let done = calls >= 3;
        async move { done }
    })
    .await;
    assert_eq!(calls, 3);
}

#[tokio::test]
#[should_panic(expected = "waiting until pigs fly")]
async fn wait_until_panics_naming_what_it_waited_for() {
    wait_until("pigs fly", Duration::from_millis(100), || async { false }).await;
}

#[tokio::test]
async fn poll_until_says_whether_the_condition_held_in_time() {
    let interval = Duration::from_millis(10);
    assert!(!poll_until(Duration::from_millis(100), interval, || async { false }).await);
    let mut calls = 0;
    let held = poll_until(Duration::from_secs(5), interval, || {
        calls += 1;
        let done = calls >= 2;
        async move { done }
    })
    .await;
    assert!(held);
}

#[tokio::test]
#[should_panic(expected = "pigs stay grounded stopped holding at check #3")]
async fn holds_for_panics_the_first_time_the_condition_fails() {
    let mut calls = 0;
    holds_for("pigs stay grounded", Duration::from_secs(5), || {
        calls += 1;
        let grounded = calls < 3;
        async move { grounded }
    })
    .await;
}

#[test]
#[should_panic(expected = "waiting until pigs fly")]
fn wait_until_sync_panics_naming_what_it_waited_for() {
    wait_until_sync("pigs fly", Duration::from_millis(100), || false);
}

/// A child that neither writes nor exits: reading a line and waiting for
/// its exit time out instead of blocking, and dropping it kills it.
#[test]
fn an_owned_child_that_hangs_times_out_and_is_killed_when_dropped() {
    let mut child = OwnedChild::new(
        std::process::Command::new("sleep")
            .arg("60")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sleep"),
        "sleep 60",
    );
    let pid = child.id() as libc::pid_t;
    let lines = PipeLines::read(child.child().stdout.take().expect("stdout"));
    let deadline = std::time::Instant::now() + Duration::from_millis(100);
    assert!(matches!(lines.next_by(deadline), NextLine::TimedOut));
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        child.wait_exit(Duration::from_millis(100))
    }));
    let message = waited.expect_err("sleep 60 does not exit within 100 ms");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("waiting until sleep 60 exits"),
        "{message}"
    );
    drop(child);
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "sleep 60 still runs");
    assert!(matches!(
        lines.next_by(std::time::Instant::now() + Duration::from_secs(5)),
        NextLine::Closed
    ));
}

/// The alerts in `alerts` (a `GET /api/v2/alerts` answer) named `Smoke`.
fn smoke_alerts(alerts: &serde_json::Value) -> Vec<serde_json::Value> {
    alerts
        .as_array()
        .unwrap_or_else(|| panic!("GET /api/v2/alerts is not an array: {alerts}"))
        .iter()
        .filter(|a| a["labels"]["alertname"] == "Smoke")
        .cloned()
        .collect()
}

#[tokio::test]
async fn alertmanager_receives_and_resolves_an_alert() {
    let am = AlertmanagerServer::start().await;
    assert_eq!(am.url(), format!("http://127.0.0.1:{}", am.port));
    assert_eq!(
        am.alerts().await,
        serde_json::json!([]),
        "a fresh Alertmanager holds no alerts"
    );

    let alert = serde_json::json!({
        "labels": {"alertname": "Smoke", "agent": "a"},
        "annotations": {"summary": "s"},
    });
    am.post_alerts(&serde_json::json!([alert])).await;
    wait_until(
        "Alertmanager shows the Smoke alert as active",
        Duration::from_secs(10),
        || async {
            let alerts = am.get_json("/api/v2/alerts?active=true").await;
            matches!(
                smoke_alerts(&alerts).as_slice(),
                [a] if a["labels"] == serde_json::json!({"alertname": "Smoke", "agent": "a"})
                    && a["annotations"]["summary"] == "s"
                    && a["status"]["state"] == "active"
            )
        },
    )
    .await;
    assert_eq!(smoke_alerts(&am.alerts().await).len(), 1);

    let mut resolved = alert.clone();
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    resolved["endsAt"] =
        serde_json::json!(past.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    am.post_alerts(&serde_json::json!([resolved])).await;
    // Resolved alerts (endsAt in the past) are left out of every listing.
    wait_until(
        "Alertmanager no longer lists the resolved Smoke alert",
        Duration::from_secs(10),
        || async {
            smoke_alerts(&am.get_json("/api/v2/alerts?active=true").await).is_empty()
                && smoke_alerts(&am.alerts().await).is_empty()
        },
    )
    .await;
}
