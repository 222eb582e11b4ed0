//! The fault suite: the sidecar binary (the release one when
//! `AGENT_SUPERVISOR_BIN` names it, as `benches/scripts/faults.sh` does)
//! against real servers that fail the ways they fail in production, each
//! scenario one test. A fleet of live agents keeps beating; one agent, the
//! victim, stops when the fault begins (or the fault is the service itself).
//! Every scenario counts, from what a real webhook receiver got and from the
//! sidecar's log and metrics:
//!
//! * false pages: a firing alert for anything that did not fail;
//! * lost pages: a failure that never reached the receiver;
//! * duplicates: a notification delivered twice with the same `webhook-id`
//!   (the at-least-once window, which a receiver de-duplicates), and double
//!   pages: one failure notified under two ids (never acceptable);
//! * panics in the sidecar's log, and task restarts (`task_restarts_total`).
//!
//! Each test asserts 0 false pages, 0 lost, 0 double pages and 0 panics.
//! With `FAULTS_OUT` set to a file, each appends its row there as a JSON
//! line (the script prints the table from it). `FAULTS_RECEIVER_DOWN_SECS`
//! sets how long the receiver stays away (20 s by default; the script runs
//! the full 10 minutes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{FaultProxy, Mode, PostgresServer, RedisServer, poll_until, unique_prefix};
use crate::receiver::{Receiver, Request};
use crate::sidecar::{Launch, Sidecar};

/// Live agents per scenario.
const LIVE: usize = 12;
const STALE_AFTER: Duration = Duration::from_secs(3);
const BEAT_EVERY: Duration = Duration::from_millis(500);
/// How long a datastore or the service stays broken.
const FAULT: Duration = Duration::from_secs(8);
/// Bound on the wait for an expected page once the fault is over.
const PAGE_WITHIN: Duration = Duration::from_secs(30);
/// Watched after the expected pages arrived, for late false pages.
const SETTLE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The tally
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Row {
    scenario: &'static str,
    false_pages: Vec<String>,
    lost: Vec<String>,
    /// Deliveries of an already delivered `webhook-id`.
    same_id_duplicates: usize,
    /// Failures notified under more than one id, counted past the first.
    double_pages: usize,
    panics: usize,
    restarts: f64,
    note: String,
}

impl Row {
    fn check(&self) {
        self.record();
        assert!(
            self.false_pages.is_empty()
                && self.lost.is_empty()
                && self.double_pages == 0
                && self.panics == 0,
            "fault scenario {} failed: {self:#?}",
            self.scenario
        );
    }

    /// Appends the row to `$FAULTS_OUT`, when set.
    fn record(&self) {
        let Some(path) = std::env::var_os("FAULTS_OUT") else {
            return;
        };
        let line = json!({
            "scenario": self.scenario,
            "false_pages": self.false_pages.len(),
            "lost": self.lost.len(),
            "same_id_duplicates": self.same_id_duplicates,
            "double_pages": self.double_pages,
            "panics": self.panics,
            "restarts": self.restarts,
            "note": self.note,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open FAULTS_OUT");
        writeln!(f, "{line}").expect("write FAULTS_OUT");
    }
}

/// The firing alerts' subjects (`agent` of agent alerts, `source` of
/// source alerts) of an accepted request.
fn firing(r: &Request) -> Vec<String> {
    let body = r.json();
    body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["status"] == "firing")
                .map(|x| x["agent"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Counts what the receiver got against what was `expected` to page.
fn tally(
    scenario: &'static str,
    requests: &[Request],
    expected: &[&str],
    logs: &[String],
    restarts: f64,
    note: String,
) -> Row {
    let accepted: Vec<&Request> = requests.iter().filter(|r| r.accepted).collect();
    let mut ids = BTreeSet::new();
    let mut same_id_duplicates = 0;
    let mut paged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &accepted {
        let id = r.header("webhook-id").to_string();
        if !ids.insert(id.clone()) {
            same_id_duplicates += 1;
        }
        for subject in firing(r) {
            paged.entry(subject).or_default().insert(id.clone());
        }
    }
    let false_pages = paged
        .keys()
        .filter(|s| !expected.contains(&s.as_str()))
        .cloned()
        .collect();
    let lost = expected
        .iter()
        .filter(|e| !paged.contains_key(**e))
        .map(|e| e.to_string())
        .collect();
    let double_pages = paged.values().map(|ids| ids.len().saturating_sub(1)).sum();
    let panics = logs
        .iter()
        .map(|l| l.lines().filter(|l| l.contains("panicked")).count())
        .sum();
    Row {
        scenario,
        false_pages,
        lost,
        same_id_duplicates,
        double_pages,
        panics,
        restarts,
        note,
    }
}

/// Waits until every one of `expected` was paged in an accepted request
/// (or `PAGE_WITHIN` passed), then watches `SETTLE` more.
async fn collect(hook: &Receiver, expected: &[&str]) {
    poll_until(PAGE_WITHIN, Duration::from_millis(25), || {
        let got: BTreeSet<String> = hook
            .requests()
            .iter()
            .filter(|r| r.accepted)
            .flat_map(firing)
            .collect();
        std::future::ready(expected.iter().all(|e| got.contains(*e)))
    })
    .await;
    let until = Instant::now() + SETTLE;
    poll_until(
        SETTLE + Duration::from_secs(1),
        Duration::from_millis(100),
        || std::future::ready(Instant::now() >= until),
    )
    .await;
}

/// Once the fault is over: waits for the `expected` pages, stops the
/// fleet's beats and tallies.
async fn finish(
    scenario: &'static str,
    sidecar: &Sidecar,
    hook: &Receiver,
    beats: &CancellationToken,
    expected: &[&str],
    note: String,
) -> Row {
    collect(hook, expected).await;
    beats.cancel();
    tally(
        scenario,
        &hook.requests(),
        expected,
        &[sidecar.log_text()],
        restarts(sidecar).await,
        note,
    )
}

async fn restarts(sidecar: &Sidecar) -> f64 {
    sidecar
        .metric_sum("agent_supervisor_task_restarts_total", &[])
        .await
}

// ---------------------------------------------------------------------------
// The fleet: agents that beat into Redis or PostgreSQL
// ---------------------------------------------------------------------------

fn live_ids() -> Vec<String> {
    (0..LIVE).map(|i| format!("live-{i:02}")).collect()
}

const VICTIM: &str = "victim";

fn epoch_now() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

/// `MSET` of `pairs` with the `redis` crate the harness uses, on a blocking
/// thread, each step bounded by 400 ms (a hung Redis must not hold a writer).
async fn redis_mset(addr: SocketAddr, pairs: Vec<(String, String)>) -> redis::RedisResult<()> {
    let bound = Duration::from_millis(400);
    tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(format!("redis://{addr}"))?;
        let mut conn = client.get_connection_with_timeout(bound)?;
        conn.set_read_timeout(Some(bound))?;
        conn.set_write_timeout(Some(bound))?;
        redis::cmd("MSET").arg(pairs).exec(&mut conn)
    })
    .await
    .unwrap_or_else(|e| panic!("the Redis writer thread failed: {e}"))
}

/// Beats for `ids` into Redis (`{prefix}:{id}` = epoch seconds) every
/// `BEAT_EVERY` until `stop`, whatever Redis does meanwhile.
fn beat_redis(addr: SocketAddr, prefix: String, ids: Vec<String>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let now = epoch_now().to_string();
            let pairs = ids
                .iter()
                .map(|id| (format!("{prefix}:{id}"), now.clone()))
                .collect();
            let _ = redis_mset(addr, pairs).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(BEAT_EVERY) => {}
            }
        }
    });
}

/// Beats for `ids` into the `hb` table every `BEAT_EVERY` until `stop`.
fn beat_postgres(url: String, ids: Vec<String>, stop: CancellationToken) {
    use sqlx::Connection as _;
    tokio::spawn(async move {
        loop {
            let write = async {
                let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                sqlx::query(
                    "INSERT INTO hb (agent_id, last_seen) SELECT unnest($1::text[]), $2 \
                     ON CONFLICT (agent_id) DO UPDATE SET last_seen = excluded.last_seen",
                )
                .bind(&ids)
                .bind(chrono::Utc::now())
                .execute(&mut conn)
                .await
                .ok()?;
                let _ = conn.close().await;
                Some(())
            };
            let _ = tokio::time::timeout(Duration::from_millis(400), write).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(BEAT_EVERY) => {}
            }
        }
    });
}

/// Every live agent and the victim healthy in the sidecar's view.
async fn wait_fleet_healthy(sidecar: &Sidecar, ids: &[String]) {
    let ok = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let agents = sidecar.agents().await;
            ids.iter()
                .all(|id| agents.get(id).is_some_and(|a| a["state"] == "healthy"))
        },
    )
    .await;
    assert!(
        ok,
        "the fleet never became healthy: {:?}\n{}",
        sidecar.agents().await,
        sidecar.log_tail()
    );
}

fn all_ids() -> Vec<String> {
    let mut ids = live_ids();
    ids.push(VICTIM.to_string());
    ids
}

fn routing(hook: &str) -> String {
    format!(
        r#"receivers:
  - {{name: hook, type: webhook, url: "{hook}"}}
delivery: {{initial_backoff: 200ms, max_backoff: 2s, timeout: 2s}}
routing: {{group_by: [agent], group_wait: 0s, group_interval: 1s, repeat_interval: 1h, send_resolved: false, receivers: [hook]}}
"#
    )
}

/// The datastore's outage lasts less than `down_after`: no page for the
/// source itself, only for what really stopped.
fn redis_config(addr: &str, prefix: &str, hook: &str) -> String {
    format!(
        r#"startup_grace: 1s
sources:
  - name: redis
    type: redis
    url: redis://{addr}
    interval: 1s
    timeout: 500ms
    layout: keys
    pattern: "{prefix}:{{agent}}"
    down_after: 60s
agents:
  - {{match: "*", stale_after: {stale}ms}}
{routing}"#,
        stale = STALE_AFTER.as_millis(),
        routing = routing(hook)
    )
}

fn postgres_config(url: &str, hook: &str) -> String {
    format!(
        r#"startup_grace: 1s
sources:
  - name: pg
    type: postgres
    url: "{url}"
    interval: 1s
    timeout: 500ms
    query: "select agent_id, last_seen from hb"
    down_after: 60s
agents:
  - {{match: "*", stale_after: {stale}ms}}
{routing}"#,
        stale = STALE_AFTER.as_millis(),
        routing = routing(hook)
    )
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid the test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// The pids whose parent is `parent` (a postmaster's backends).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces; read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Returns once `d` has passed (a poll on the clock; the fault lasts that
/// long).
async fn hold(d: Duration) {
    let until = Instant::now() + d;
    poll_until(
        d + Duration::from_secs(1),
        Duration::from_millis(50),
        || std::future::ready(Instant::now() >= until),
    )
    .await;
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A Redis scenario: the fleet beats into `redis` directly; the sidecar
/// reads through a fault proxy; `fault` breaks something for a while and
/// returns a note.
async fn redis_scenario<F, Fut>(scenario: &'static str, fault: F) -> Row
where
    F: FnOnce(Arc<std::sync::Mutex<RedisServer>>, Arc<FaultProxy>) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let redis = RedisServer::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = Arc::new(FaultProxy::start(addr).await);
    let prefix = unique_prefix(scenario);
    let hook = Receiver::start().await;
    let stop = CancellationToken::new();
    let victim_stop = CancellationToken::new();
    beat_redis(addr, prefix.clone(), live_ids(), stop.clone());
    beat_redis(
        addr,
        prefix.clone(),
        vec![VICTIM.into()],
        victim_stop.clone(),
    );
    let sidecar = Sidecar::start(&redis_config(
        &proxy.host_port(),
        &prefix,
        &hook.url("/hook"),
    ))
    .await;
    wait_fleet_healthy(&sidecar, &all_ids()).await;
    victim_stop.cancel();
    let redis = Arc::new(std::sync::Mutex::new(redis));
    let note = fault(redis.clone(), proxy.clone()).await;
    finish(scenario, &sidecar, &hook, &stop, &[VICTIM], note).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_down() {
    redis_scenario(
        "redis down (killed, restarted empty)",
        |redis, _| async move {
            redis.lock().unwrap().stop();
            hold(FAULT).await;
            redis.lock().unwrap().restart();
            format!("down {}s; its data lost", FAULT.as_secs())
        },
    )
    .await
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_hung() {
    redis_scenario("redis hung (SIGSTOP)", |redis, _| async move {
        let pid = redis.lock().unwrap().pid().expect("running");
        signal(pid, libc::SIGSTOP);
        hold(FAULT).await;
        signal(pid, libc::SIGCONT);
        format!("stopped {}s", FAULT.as_secs())
    })
    .await
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_slow_then_reset() {
    redis_scenario("redis slow, then resets", |_, proxy| async move {
        proxy.set(Mode::Delay(Duration::from_millis(400)));
        hold(FAULT / 2).await;
        proxy.set(Mode::Reset);
        hold(FAULT / 2).await;
        proxy.set(Mode::Pass);
        format!(
            "+400 ms per read {}s, then RST {}s",
            FAULT.as_secs() / 2,
            FAULT.as_secs() / 2
        )
    })
    .await
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_redis_blackholed() {
    redis_scenario("redis unanswered (blackhole)", |_, proxy| async move {
        proxy.set(Mode::Blackhole);
        hold(FAULT).await;
        proxy.set(Mode::Pass);
        format!("no answer {}s", FAULT.as_secs())
    })
    .await
    .check();
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

const TABLE: &str = "CREATE TABLE hb (agent_id text PRIMARY KEY, last_seen timestamptz NOT NULL)";

async fn postgres_scenario<F, Fut>(scenario: &'static str, fault: F) -> Row
where
    F: FnOnce(Arc<std::sync::Mutex<PostgresServer>>) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let server = PostgresServer::start();
    let url = server.create_database("faults").await;
    crate::support::exec(&url, TABLE).await;
    let hook = Receiver::start().await;
    let stop = CancellationToken::new();
    let victim_stop = CancellationToken::new();
    beat_postgres(url.clone(), live_ids(), stop.clone());
    beat_postgres(url.clone(), vec![VICTIM.into()], victim_stop.clone());
    let sidecar = Sidecar::start(&postgres_config(&url, &hook.url("/hook"))).await;
    wait_fleet_healthy(&sidecar, &all_ids()).await;
    victim_stop.cancel();
    // What is committed survives the immediate shutdown of a restart.
    crate::support::exec(&url, "CHECKPOINT").await;
    let server = Arc::new(std::sync::Mutex::new(server));
    let note = fault(server.clone()).await;
    finish(scenario, &sidecar, &hook, &stop, &[VICTIM], note).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_down() {
    postgres_scenario("postgres down (restarted)", |server| async move {
        server.lock().unwrap().stop();
        hold(FAULT).await;
        server.lock().unwrap().restart();
        format!("down {}s", FAULT.as_secs())
    })
    .await
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_hung() {
    postgres_scenario(
        "postgres hung (postmaster and backends)",
        |server| async move {
            let pid = server.lock().unwrap().pid().expect("running");
            signal(pid, libc::SIGSTOP);
            let mut stopped = vec![pid];
            // A backend that exited meanwhile is not there to stop.
            // SAFETY: kill(2) on the postmaster's children.
            stopped.extend(
                children_of(pid)
                    .into_iter()
                    .filter(|p| unsafe { libc::kill(*p as libc::pid_t, libc::SIGSTOP) } == 0),
            );
            hold(FAULT).await;
            for p in &stopped {
                // SAFETY: kill(2) on the pids this test stopped.
                unsafe { libc::kill(*p as libc::pid_t, libc::SIGCONT) };
            }
            format!("{} processes stopped {}s", stopped.len(), FAULT.as_secs())
        },
    )
    .await
    .check();
}

// ---------------------------------------------------------------------------
// The service's /health
// ---------------------------------------------------------------------------

const OK: u8 = 0;
const HANG: u8 = 1;
const ERROR: u8 = 2;
const HUGE: u8 = 3;

async fn health(State(mode): State<Arc<AtomicU8>>) -> Response {
    match mode.load(Ordering::Relaxed) {
        HANG => std::future::pending::<Response>().await,
        ERROR => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        HUGE => {
            let filler = "x".repeat(10 * 1024 * 1024);
            axum::Json(json!({"status": "ok", "filler": filler})).into_response()
        }
        _ => axum::Json(json!({"status": "ok"})).into_response(),
    }
}

/// The service's `/health` broken `FAULT` long, the way `mode` says; its
/// agents keep beating into Redis. One page: the service.
async fn health_scenario(scenario: &'static str, mode: u8) -> Row {
    let state = Arc::new(AtomicU8::new(OK));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/health", get(health))
        .with_state(state.clone());
    let server_stop = CancellationToken::new();
    let s = server_stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    let redis = RedisServer::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let prefix = unique_prefix(scenario);
    let hook = Receiver::start().await;
    let stop = CancellationToken::new();
    beat_redis(addr, prefix.clone(), all_ids(), stop.clone());
    let config = format!(
        r#"startup_grace: 1s
sources:
  - name: svc
    type: http
    url: http://127.0.0.1:{port}/health
    interval: 1s
    timeout: 1s
    for: 2s
  - name: redis
    type: redis
    url: {url}
    interval: 1s
    timeout: 500ms
    layout: keys
    pattern: "{prefix}:{{agent}}"
    depends_on: svc
agents:
  - {{match: "*", stale_after: {stale}ms}}
{routing}"#,
        url = redis.url,
        stale = STALE_AFTER.as_millis(),
        routing = routing(&hook.url("/hook"))
    );
    let sidecar = Sidecar::start(&config).await;
    wait_fleet_healthy(&sidecar, &all_ids()).await;
    state.store(mode, Ordering::Relaxed);
    hold(FAULT).await;
    state.store(OK, Ordering::Relaxed);
    let note = format!("{}s; agents depend on it", FAULT.as_secs());
    let row = finish(scenario, &sidecar, &hook, &stop, &["svc"], note).await;
    server_stop.cancel();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_health_hangs() {
    health_scenario("/health hangs", HANG).await.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_health_500() {
    health_scenario("/health answers 500", ERROR).await.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_health_10mb() {
    health_scenario("/health answers 10 MB", HUGE).await.check();
}

// ---------------------------------------------------------------------------
// Delivery: the receiver away, the sidecar killed mid-delivery, a full disk
// ---------------------------------------------------------------------------

/// The sidecar and a Redis fleet whose victim stops at once.
async fn delivery_stack(
    dir: &Path,
    hook_url: &str,
    launch: Launch,
) -> (Sidecar, RedisServer, String, CancellationToken) {
    let redis = RedisServer::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let prefix = unique_prefix("delivery");
    let stop = CancellationToken::new();
    let victim_stop = CancellationToken::new();
    beat_redis(addr, prefix.clone(), live_ids(), stop.clone());
    beat_redis(
        addr,
        prefix.clone(),
        vec![VICTIM.into()],
        victim_stop.clone(),
    );
    let config = redis_config(&addr.to_string(), &prefix, hook_url);
    let sidecar = Sidecar::start_in(dir, "sidecar", &config, launch).await;
    wait_fleet_healthy(&sidecar, &all_ids()).await;
    victim_stop.cancel();
    (sidecar, redis, config, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_receiver_away() {
    let away = std::env::var("FAULTS_RECEIVER_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(20), Duration::from_secs);
    let dir = tempfile::tempdir().unwrap();
    let mut hook = Receiver::gone();
    let (sidecar, _redis, _, stop) =
        delivery_stack(dir.path(), &hook.url("/hook"), Launch::default()).await;
    // The victim is stale while nobody listens; the page waits.
    hold(away).await;
    let failed_attempts = sidecar
        .metric_sum(
            "agent_supervisor_notifications_total",
            &["result=\"failure\""],
        )
        .await;
    hook.resume().await;
    let note = format!(
        "away {}s: {failed_attempts} failed attempts, then delivered",
        away.as_secs()
    );
    finish(
        "webhook receiver away",
        &sidecar,
        &hook,
        &stop,
        &[VICTIM],
        note,
    )
    .await
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sidecar_killed_mid_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let hook_addr: SocketAddr = format!("127.0.0.1:{}", hook.port).parse().unwrap();
    // The receiver gets the request; its answer is held.
    let proxy = FaultProxy::start(hook_addr).await;
    proxy.set(Mode::HoldReplies);
    let hook_url = format!("http://{}/hook", proxy.host_port());
    let (first, _redis, config, stop) =
        delivery_stack(dir.path(), &hook_url, Launch::default()).await;
    hook.wait_requests(1, PAGE_WITHIN).await;
    let first_log = first.log_text();
    first.kill();
    proxy.set(Mode::Pass);
    let second = Sidecar::start_in(dir.path(), "restarted", &config, Launch::default()).await;
    // The same notification again: the first answer never reached the
    // sidecar that was killed.
    hook.wait_requests(2, PAGE_WITHIN).await;
    collect(&hook, &[VICTIM]).await;
    stop.cancel();
    let row = tally(
        "sidecar SIGKILLed mid-delivery",
        &hook.requests(),
        &[VICTIM],
        &[first_log, second.log_text()],
        restarts(&second).await,
        "re-sent after restart with the same webhook-id".into(),
    );
    assert_eq!(row.same_id_duplicates, 1, "{row:#?}");
    row.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    // 2 KiB: the state file of 13 agents does not fit, and neither does
    // the sidecar's log (on the same full disk), which is cut short.
    let launch = Launch {
        file_size_limit: Some(2048),
        ..Launch::default()
    };
    let (mut sidecar, _redis, _, stop) =
        delivery_stack(dir.path(), &hook.url("/hook"), launch).await;
    let mut row = finish(
        "state directory full",
        &sidecar,
        &hook,
        &stop,
        &[VICTIM],
        String::new(),
    )
    .await;
    let save_errors = sidecar
        .metric_sum("agent_supervisor_state_save_errors_total", &[])
        .await;
    assert!(save_errors > 0.0, "no save failed: {}", sidecar.log_tail());
    assert!(sidecar.running(), "{}", sidecar.log_tail());
    row.note = format!("{save_errors} failed saves; kept running, its log cut short");
    row.check();
}
