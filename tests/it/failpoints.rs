//! A panic injected into each kind of task of the real binary, through the
//! failpoints test builds compile in (`FAILPOINTS=name=actions`, the `fail`
//! crate's syntax; release builds have none): a source task is restarted
//! and its agents come back, every other task takes the process down with
//! a non-zero exit, its name in the log, so Kubernetes or PM2 restart it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    OwnedChild, RedisServer, poll_until, spawn_child, tail_of_log, unique_prefix,
};
use crate::receiver::Receiver;
use crate::sidecar::{Launch, Sidecar, binary};

fn config(redis: &str, prefix: &str, hook: &str) -> String {
    format!(
        r#"startup_grace: 0s
sources:
  - name: redis
    type: redis
    url: {redis}
    interval: 1s
    timeout: 500ms
    layout: keys
    pattern: "{prefix}:{{agent}}"
agents:
  - {{match: "*", stale_after: 1h}}
receivers:
  - {{name: hook, type: webhook, url: "{hook}"}}
routing: {{receivers: [hook]}}
"#
    )
}

async fn beat(redis: &RedisServer, key: &str) {
    let client = crate::support::redis_client(&redis.url).await;
    crate::support::redis_beat(&client, key, chrono::Utc::now()).await;
}

/// The second scan panics; the source is restarted after its backoff, the
/// agent is `unknown` meanwhile with the reason saying so, then healthy
/// again; the process keeps running.
#[tokio::test]
async fn a_source_task_that_panics_is_restarted_and_its_agents_read_again() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("failpoint_source");
    beat(&redis, &format!("{prefix}:a1")).await;
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let launch = Launch {
        env: vec![(
            "FAILPOINTS".into(),
            "source-scan=1*off->1*panic(injected)".into(),
        )],
        ..Launch::default()
    };
    let mut sidecar = Sidecar::start_in(
        dir.path(),
        "sidecar",
        &config(&redis.url, &prefix, &hook.url("/")),
        launch,
    )
    .await;
    let state = |v: Option<Value>| v.map(|a| (a["state"].clone(), a["reason"].clone()));
    let seen_unknown = std::cell::RefCell::new(None);
    let restarted = poll_until(Duration::from_secs(15), Duration::from_millis(20), || {
        let sidecar = &sidecar;
        let seen = &seen_unknown;
        async move {
            let (s, reason) = state(sidecar.agent("a1").await).unwrap_or_default();
            if s == "unknown" {
                *seen.borrow_mut() = Some(reason.to_string());
            }
            seen.borrow().is_some() && s == "healthy"
        }
    })
    .await;
    let seen_unknown = seen_unknown.into_inner();
    assert!(
        restarted,
        "a1 never went unknown then healthy again ({seen_unknown:?}); log:\n{}",
        sidecar.log_tail()
    );
    let reason = seen_unknown.unwrap();
    assert!(
        reason.contains("source task panicked: injected; restarting in 1s"),
        "{reason}"
    );
    let restarts = sidecar
        .metric_sum(
            "agent_supervisor_task_restarts_total",
            &["task=\"source:redis\""],
        )
        .await;
    assert_eq!(restarts, 1.0);
    assert!(sidecar.running());
    let log = sidecar.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("Task failed; restarting it.")
                && l.contains("source:redis")
                && l.contains("panicked: injected")),
        "{log}"
    );
}

/// A panic in the core, the alert engine, a notifier, the state writer, or
/// the HTTP server ending: the process exits non-zero within seconds,
/// naming the task.
#[tokio::test]
async fn any_other_task_that_panics_or_ends_stops_the_process_with_an_error() {
    let redis = RedisServer::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let prefix = unique_prefix("failpoint_exit");
    let hook = Receiver::start().await;
    let cases = [
        ("core-loop=panic(injected)", "core"),
        ("alerts-loop=panic(injected)", "alerts"),
        ("notify-worker=panic(injected)", "notify:hook"),
        ("state-writer=panic(injected)", "state"),
        ("http-serve=panic(injected)", "http"),
        // The server returning (as if its listener failed), no panic.
        ("http-serve=return", "http"),
    ];
    for (failpoints, task) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:0\nstate: {{path: \"{}\"}}\n{}",
                dir.path().join("state").display(),
                config(&format!("redis://{addr}"), &prefix, &hook.url("/"))
            ),
        )
        .unwrap();
        let log = dir.path().join("sidecar.log");
        let mut cmd = Command::new(binary());
        cmd.env("FAILPOINTS", failpoints)
            .env("AGENT_SUPERVISOR_LOG", "info")
            .args(["--log-format", "json", "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null());
        let mut child = OwnedChild::new(spawn_child(cmd, &log, "agent-supervisor").unwrap(), task);
        let status = child.wait_exit(Duration::from_secs(15));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !status.success() && status.code().is_some(),
            "{failpoints}: {status}; log:\n{}",
            tail_of_log(&log)
        );
        assert!(
            text.lines()
                .any(|l| l.contains("Task exited before shutdown")
                    && l.contains(&format!("\"task\":\"{task}\""))),
            "{failpoints}: the log does not name {task}:\n{text}"
        );
    }
}
