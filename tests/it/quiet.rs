//! Quiet by design, end to end: the real sidecar binary watches a real
//! FastAPI service (`tests/it/fastapi/app.py` under uvicorn, its agents
//! asyncio tasks beating into a real Redis) and pages a real webhook
//! receiver. One incident is one page: a stopped service is one alert, a
//! crash-restart, a paused Redis or a slow boot is none, and a stale agent
//! that beats again is healthy within a second.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{
    PythonService, RedisServer, ServiceSetup, free_port, holds_for, poll_until, tail_of_log,
    unique_prefix,
};
use crate::receiver::Receiver;
use crate::sidecar::Sidecar;

/// The service check's agent id: the http source's name.
const SERVICE: &str = "python-ai-services";
/// Agent ids as python-ai-services names them.
const AGENT_IDS: [&str; 12] = [
    "trading_coordinator",
    "market_analyst",
    "risk_manager",
    "portfolio_optimizer",
    "sentiment_analyst",
    "execution_agent",
    "news_monitor",
    "strategy_backtester",
    "compliance_agent",
    "order_router",
    "volatility_watcher",
    "rebalancer",
];
/// Bound on every wait for the sidecar to see something.
const SEE: Duration = Duration::from_secs(15);

/// How a test's stack is set up.
#[derive(Clone, Copy)]
struct Options {
    /// How many of [`AGENT_IDS`] the service hosts.
    agents: usize,
    stale_after: Duration,
    /// Seconds between two heartbeats.
    beat_every: f64,
    startup_grace: Duration,
    /// Whether the http source reads each agent's status out of `/health`.
    components: bool,
    /// Seconds the service's start-up takes; when non-zero, the sidecar is
    /// started first and the service right after it (a slow boot).
    startup_delay: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: 8,
            stale_after: Duration::from_secs(3),
            beat_every: 0.5,
            startup_grace: Duration::from_secs(2),
            components: false,
            startup_delay: 0.0,
        }
    }
}

/// The service check's `for:` and the Redis source's `down_after:`.
const SERVICE_FOR: Duration = Duration::from_secs(3);
const DOWN_AFTER: Duration = Duration::from_secs(10);

/// The config under test (the contract of issue 10's keys).
fn sidecar_config(o: &Options, service_port: u16, redis: &str, prefix: &str, hook: &str) -> String {
    let components = if o.components {
        let entries: Vec<String> = AGENT_IDS[..o.agents]
            .iter()
            .map(|a| format!("      {a}: {{pointer: /agents/{a}/status}}\n"))
            .collect();
        format!("    components:\n{}", entries.concat())
    } else {
        String::new()
    };
    format!(
        r#"startup_grace: {grace}ms
recheck: {{every: 500ms, max_per_second: 1000}}
sources:
  - name: {SERVICE}
    type: http
    url: http://127.0.0.1:{service_port}/health
    interval: 1s
    timeout: 1s
    for: {for_}ms
{components}  - name: redis
    type: redis
    url: {redis}
    interval: 5s
    timeout: 1s
    layout: keys
    pattern: "{prefix}agent:{{agent}}:last_seen"
    depends_on: {SERVICE}
    down_after: {down_after}ms
agents:
  - {{match: "*", stale_after: {stale}ms}}
receivers:
  - {{name: hook, type: webhook, url: "{hook}"}}
routing: {{group_wait: 1s, group_interval: 2s, repeat_interval: 1h, send_resolved: true, receivers: [hook]}}
"#,
        grace = o.startup_grace.as_millis(),
        for_ = SERVICE_FOR.as_millis(),
        down_after = DOWN_AFTER.as_millis(),
        stale = o.stale_after.as_millis(),
    )
}

// ---------------------------------------------------------------------------
// The stack: Redis, the service, the sidecar, a webhook receiver
// ---------------------------------------------------------------------------

struct Stack {
    redis: RedisServer,
    service: PythonService,
    sidecar: Sidecar,
    hook: Receiver,
    /// The agents the service hosts.
    agents: Vec<String>,
    opts: Options,
}

impl Stack {
    /// Starts everything; with a start-up delay the sidecar comes first and
    /// the service is spawned right after it, not waited for.
    async fn start(opts: Options) -> Stack {
        let redis = RedisServer::start();
        let hook = Receiver::start().await;
        let agents: Vec<String> = AGENT_IDS[..opts.agents]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let setup = ServiceSetup {
            agents: agents.clone(),
            redis_url: redis.url.clone(),
            prefix: unique_prefix("quiet"),
            beat_every: opts.beat_every,
            startup_delay: opts.startup_delay,
        };
        let prefix = setup.prefix.clone();
        let config = |port| sidecar_config(&opts, port, &redis.url, &prefix, &hook.url("/hook"));
        let (service, sidecar) = if opts.startup_delay > 0.0 {
            let port = free_port();
            let sidecar = Sidecar::start(&config(port)).await;
            (PythonService::spawn_on(setup, port), sidecar)
        } else {
            let service = PythonService::start(setup).await;
            let sidecar = Sidecar::start(&config(service.port)).await;
            (service, sidecar)
        };
        Stack {
            redis,
            service,
            sidecar,
            hook,
            agents,
            opts,
        }
    }

    /// What a failure message needs: the sidecar's and the service's logs.
    fn logs(&self) -> String {
        format!(
            "sidecar log:\n{}\nservice log:\n{}",
            self.sidecar.log_tail(),
            tail_of_log(self.service.log_path())
        )
    }

    /// Waits until every one of `ids` satisfies `ok`; panics with their last
    /// views otherwise.
    async fn wait_agents(
        &self,
        what: &str,
        ids: &[String],
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) {
        let last = RefCell::new(BTreeMap::new());
        let held = poll_until(timeout, Duration::from_millis(10), || {
            let (last, ok) = (&last, &ok);
            async move {
                let agents = self.sidecar.agents().await;
                let all = ids.iter().all(|id| agents.get(id).is_some_and(ok));
                *last.borrow_mut() = agents;
                all
            }
        })
        .await;
        if !held {
            let last = last.borrow();
            let views: Vec<String> = ids
                .iter()
                .map(|id| match last.get(id) {
                    Some(v) => format!("  {id}: {} ({})", v["state"], v["reason"]),
                    None => format!("  {id}: not known"),
                })
                .collect();
            panic!(
                "timed out after {timeout:?} waiting until {what}; last seen:\n{}\n{}",
                views.join("\n"),
                self.logs()
            );
        }
    }

    /// Checks every 25 ms for `period` that every one of `ids` satisfies
    /// `ok`; panics naming the first that does not.
    async fn hold_agents(
        &self,
        what: &str,
        ids: &[String],
        period: Duration,
        ok: impl Fn(&Value) -> bool,
    ) {
        let ok = &ok;
        holds_for(what, period, || async move {
            let agents = self.sidecar.agents().await;
            for id in ids {
                match agents.get(id) {
                    Some(v) if ok(v) => {}
                    other => panic!(
                        "{what} stopped holding: {id} is {}\n{}",
                        other.map_or("not known".to_string(), |v| format!(
                            "{} ({})",
                            v["state"], v["reason"]
                        )),
                        self.logs()
                    ),
                }
            }
            true
        })
        .await;
    }

    /// Waits until the service check is healthy, and every agent of the
    /// service too, its heartbeat read from Redis (its `/health` component
    /// alone can make it healthy before the first Redis scan).
    async fn wait_all_healthy(&self, timeout: Duration) {
        let service = [SERVICE.to_string()];
        self.wait_agents("the service is healthy", &service, timeout, |v| {
            v["state"] == "healthy"
        })
        .await;
        self.wait_agents(
            "every agent is healthy, its Redis heartbeat read",
            &self.agents,
            timeout,
            |v| {
                v["state"] == "healthy"
                    && check(v, "redis").is_some_and(|c| c["state"] == "healthy")
            },
        )
        .await;
    }

    /// Waits until the start-up grace has passed.
    async fn wait_grace_over(&self) {
        at(self.sidecar.started + self.opts.startup_grace).await;
    }

    /// The notifications the receiver got: `(status, [(kind, agent, status)])`.
    fn notifications(&self) -> Vec<Notification> {
        self.hook.requests().iter().map(Notification::of).collect()
    }

    /// Checks for `period` that the receiver has had exactly `n`
    /// notifications.
    async fn hold_notifications(&self, n: usize, period: Duration) {
        holds_for(
            &format!("exactly {n} notification(s) received"),
            period,
            || async move {
                let got = self.notifications();
                assert!(
                    got.len() == n,
                    "expected exactly {n} notification(s), got {got:#?}\n{}",
                    self.logs()
                );
                true
            },
        )
        .await;
    }

    /// Waits until the receiver has had `n` notifications; returns them.
    async fn wait_notifications(&self, n: usize, timeout: Duration) -> Vec<Notification> {
        let arrived = poll_until(timeout, Duration::from_millis(25), || {
            std::future::ready(self.hook.requests().len() >= n)
        })
        .await;
        let got = self.notifications();
        assert!(
            arrived,
            "expected {n} notification(s) within {timeout:?}, got {got:#?}\n{}",
            self.logs()
        );
        got
    }
}

/// One webhook notification, as much of it as these tests look at.
#[derive(Debug)]
struct Notification {
    status: String,
    /// `(kind, agent, status, summary)` of each alert.
    alerts: Vec<(String, String, String, String)>,
}

impl Notification {
    fn of(r: &crate::receiver::Request) -> Notification {
        let body = r.json();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Notification {
            status: text(&body["status"]),
            alerts: body["alerts"]
                .as_array()
                .unwrap_or_else(|| panic!("no alerts in {body}"))
                .iter()
                .map(|a| {
                    (
                        text(&a["kind"]),
                        text(&a["agent"]),
                        text(&a["status"]),
                        text(&a["summary"]),
                    )
                })
                .collect(),
        }
    }

    /// Whether it is one alert, of `kind` for `agent`, with `status`.
    fn is_one(&self, kind: &str, agent: &str, status: &str) -> bool {
        self.status == status
            && matches!(&self.alerts[..], [(k, a, s, _)] if k == kind && a == agent && s == status)
    }
}

/// The check of `source` in an agent's view.
fn check<'a>(agent: &'a Value, source: &str) -> Option<&'a Value> {
    agent["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["source"] == source))
}

/// Held by the service: unknown, its Redis check saying it waits for it.
fn held_by_the_service(agent: &Value) -> bool {
    agent["state"] == "unknown"
        && check(agent, "redis")
            .and_then(|c| c["reason"].as_str())
            .is_some_and(|r| r.starts_with(&format!("held: {SERVICE} is ")))
}

/// Returns at `when` (a poll on the clock: what happens next is due then).
async fn at(when: Instant) {
    let left = when.saturating_duration_since(Instant::now());
    poll_until(left + SEE, Duration::from_millis(10), || {
        std::future::ready(Instant::now() >= when)
    })
    .await;
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a child
    // the harness has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_is_one_page_and_its_restart_one_resolve() {
    let mut stack = Stack::start(Options {
        agents: 12,
        components: true,
        ..Options::default()
    })
    .await;
    stack.wait_all_healthy(SEE).await;
    stack.wait_grace_over().await;

    // Down for longer than every threshold: the service check's `for`, the
    // agents' stale_after, with group_wait on top.
    let down_for = Duration::from_secs(8);
    let stopped = Instant::now();
    stack.service.terminate();
    stack
        .wait_agents(
            "every agent is held by the service",
            &stack.agents,
            Duration::from_secs(5),
            held_by_the_service,
        )
        .await;
    stack
        .hold_agents(
            "every agent held by the service",
            &stack.agents,
            down_for.saturating_sub(stopped.elapsed()),
            held_by_the_service,
        )
        .await;
    let got = stack.wait_notifications(1, SEE).await;
    assert!(
        got.len() == 1 && got[0].is_one("agent_failing", SERVICE, "firing"),
        "one page, for the service: {got:#?}"
    );

    stack.service.restart();
    stack.service.wait_ready().await;
    let got = stack.wait_notifications(2, SEE).await;
    assert!(
        got[1].is_one("agent_failing", SERVICE, "resolved"),
        "one resolve, for the service: {got:#?}"
    );
    stack.wait_all_healthy(SEE).await;
    // Past every agent's stale_after from the service's recovery: still
    // healthy, nothing more sent.
    tokio::join!(
        stack.hold_agents(
            "every agent healthy after the restart",
            &stack.agents,
            stack.opts.stale_after + Duration::from_secs(2),
            |v| v["state"] == "healthy",
        ),
        stack.hold_notifications(2, stack.opts.stale_after + Duration::from_secs(2)),
    );
    assert_eq!(
        stack.sidecar.transitions_to("stale").await,
        0.0,
        "no agent went stale\n{}",
        stack.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restart_in_two_seconds_pages_nobody() {
    let mut stack = Stack::start(Options {
        components: true,
        ..Options::default()
    })
    .await;
    stack.wait_all_healthy(SEE).await;
    stack.wait_grace_over().await;

    let crashed = Instant::now();
    stack.service.kill();
    // Started again once the sidecar has seen it fail (its probe runs every
    // second), as a supervisor restarts it.
    stack
        .wait_agents(
            "the sidecar sees the service failing",
            &[SERVICE.to_string()],
            Duration::from_secs(2),
            |v| v["state"] == "failing",
        )
        .await;
    stack.service.restart();
    let restarted = crashed.elapsed();
    stack.service.wait_ready().await;
    let answered = crashed.elapsed();
    eprintln!(
        "crash-restart: started again {:.2}s after the SIGKILL, answering /health after {:.2}s",
        restarted.as_secs_f64(),
        answered.as_secs_f64()
    );
    assert!(
        restarted < Duration::from_secs(2),
        "the restart took {restarted:?}"
    );
    stack.wait_all_healthy(SEE).await;
    // Past the service check's `for`, the agents' stale_after and group_wait,
    // counted from the crash.
    let quiet_until = SERVICE_FOR + stack.opts.stale_after + Duration::from_secs(3);
    stack
        .hold_notifications(0, quiet_until.saturating_sub(crashed.elapsed()))
        .await;
    stack.wait_all_healthy(Duration::from_secs(1)).await;
    assert_eq!(stack.sidecar.transitions_to("stale").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_makes_no_live_agent_stale_and_a_stopped_one_is_reported_after_recovery() {
    let stack = Stack::start(Options::default()).await;
    stack.wait_all_healthy(SEE).await;
    stack.wait_grace_over().await;
    let stopped_agent = stack.agents[0].clone();
    let live: Vec<String> = stack.agents[1..].to_vec();
    let redis_pid = stack.redis.pid().expect("redis runs");

    // Longer than stale_after, shorter than down_after.
    let pause = Duration::from_secs(6);
    let paused = Instant::now();
    signal(redis_pid, libc::SIGSTOP);
    tokio::join!(
        stack.hold_agents(
            "no agent stale while Redis is paused",
            &stack.agents,
            pause,
            |v| v["state"] != "stale",
        ),
        async {
            // The agent stops during the pause, its last writes blocked.
            at(paused + Duration::from_secs(1)).await;
            stack.service.stop_agent(&stopped_agent).await;
        },
    );
    signal(redis_pid, libc::SIGCONT);
    let resumed = Instant::now();
    let resumed_epoch = now_epoch();

    // The stopped agent is reported within stale_after + 1 s of the
    // recovery; no live agent goes stale meanwhile.
    let stale = RefCell::new(None);
    let reported = poll_until(
        stack.opts.stale_after + Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            let (stale, live, stack, id) = (&stale, &live, &stack, &stopped_agent);
            async move {
                let agents = stack.sidecar.agents().await;
                for l in live {
                    assert!(
                        agents.get(l).is_some_and(|v| v["state"] != "stale"),
                        "{l} went stale after the recovery: {:?}\n{}",
                        agents.get(l),
                        stack.logs()
                    );
                }
                let found = agents.get(id).filter(|v| v["state"] == "stale").cloned();
                let is_stale = found.is_some();
                *stale.borrow_mut() = found;
                is_stale
            }
        },
    )
    .await;
    let after = resumed.elapsed();
    assert!(
        reported,
        "{stopped_agent} never went stale\n{}",
        stack.logs()
    );
    let stale = stale.into_inner().expect("reported");
    // When the sidecar saw Redis up again: its `since`, once it is up.
    let redis = stack.sidecar.source("redis").await;
    let seen_up = redis["since"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros() as f64 / 1e6 - resumed_epoch);
    eprintln!(
        "paused Redis: the sidecar saw it up {} after SIGCONT; {stopped_agent} stale {:.2}s after \
         SIGCONT: {}",
        seen_up.map_or(format!("? ({redis})"), |s| format!("{s:.2}s")),
        after.as_secs_f64(),
        stale["reason"]
    );
    // The threshold runs from when the sidecar saw Redis again (its next
    // read, within the source's retry period), and the agent is reported
    // within a second of it running out.
    let seen_up = seen_up.expect("the source's `since` once it is up");
    assert!(
        seen_up < 2.0,
        "the sidecar saw Redis up {seen_up:.2}s after SIGCONT\n{}",
        stack.logs()
    );
    assert!(
        after.as_secs_f64()
            < seen_up + (stack.opts.stale_after + Duration::from_secs(1)).as_secs_f64(),
        "{stopped_agent} went stale {after:?} after Redis came back (SIGCONT), past stale_after \
         + 1 s after the sidecar saw it up ({seen_up:.2}s after SIGCONT): {stale}\n{}",
        stack.logs()
    );
    let reason = check(&stale, "redis")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_else(|| panic!("no reason on the redis check of {stale}"));
    assert!(
        reason.starts_with("no heartbeat for ") && reason.contains("came back from"),
        "the reason says how old the heartbeat is and names the outage: {reason}"
    );

    stack
        .hold_agents(
            "every live agent healthy after the recovery",
            &live,
            stack.opts.stale_after + Duration::from_secs(1),
            |v| v["state"] == "healthy",
        )
        .await;
    assert_eq!(
        stack.sidecar.transitions_to("stale").await,
        1.0,
        "only the stopped agent went stale\n{}",
        stack.logs()
    );
    let got = stack.wait_notifications(1, SEE).await;
    assert!(
        got[0].is_one("agent_stale", &stopped_agent, "firing"),
        "one page, for the stopped agent: {got:#?}"
    );
    stack.hold_notifications(1, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_boot_within_the_grace_pages_nobody() {
    let mut stack = Stack::start(Options {
        startup_grace: Duration::from_secs(10),
        startup_delay: 5.0,
        components: true,
        ..Options::default()
    })
    .await;
    stack.service.wait_ready().await;
    let answered = stack.sidecar.started.elapsed();
    eprintln!(
        "slow boot: the service answered {:.2}s after the sidecar started",
        answered.as_secs_f64()
    );
    assert!(
        answered < stack.opts.startup_grace,
        "the service took {answered:?} to answer, past the grace: the test proves nothing"
    );
    stack.wait_all_healthy(SEE).await;
    let quiet_until = stack.opts.startup_grace + Duration::from_secs(5);
    stack
        .hold_notifications(
            0,
            quiet_until.saturating_sub(stack.sidecar.started.elapsed()),
        )
        .await;
    stack.wait_all_healthy(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_agent_that_beats_again_is_healthy_within_a_second() {
    let stack = Stack::start(Options {
        agents: 4,
        stale_after: Duration::from_secs(1),
        beat_every: 0.2,
        ..Options::default()
    })
    .await;
    stack.wait_all_healthy(SEE).await;
    const ROUNDS: usize = 20;
    let mut latencies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let id = &stack.agents[round % stack.agents.len()];
        stack.service.stop_agent(id).await;
        stack
            .wait_agents(
                &format!("{id} is stale (round {round})"),
                std::slice::from_ref(id),
                Duration::from_secs(5),
                |v| v["state"] == "stale",
            )
            .await;
        let beat = stack.service.start_agent(id).await;
        let healthy = poll_until(Duration::from_secs(5), Duration::from_millis(5), || async {
            stack
                .sidecar
                .agent(id)
                .await
                .is_some_and(|v| v["state"] == "healthy")
        })
        .await;
        let latency = now_epoch() - beat;
        assert!(
            healthy,
            "{id} not healthy within 5 s of its heartbeat (round {round})\n{}",
            stack.logs()
        );
        latencies.push(latency);
    }
    latencies.sort_by(f64::total_cmp);
    let (min, median, max) = (latencies[0], latencies[ROUNDS / 2], latencies[ROUNDS - 1]);
    eprintln!(
        "recovery latency over {ROUNDS} stale agents beating again (fresh heartbeat -> API \
         healthy): min {:.0} ms, median {:.0} ms, max {:.0} ms",
        min * 1000.0,
        median * 1000.0,
        max * 1000.0
    );
    assert!(
        max < 1.0,
        "a stale agent that beats again is healthy within 1 s: {latencies:?}"
    );
}
