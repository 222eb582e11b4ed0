//! Alert delivery end to end: real HTTP receivers on 127.0.0.1, the real
//! binary killed with SIGKILL, a real Alertmanager.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use chrono::Utc;

use crate::harness::{AlertmanagerServer, free_port, shared_redis_url, unique_prefix, wait_until};
use crate::receiver::{Receiver, Request};
use crate::support::{TestApp, redis_beat, redis_client, sample, spawn_app};

/// A Standard Webhooks secret as the libraries print it, and the same key
/// without the prefix: both forms the README documents.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PLAIN_SECRET: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn alerts_of(r: &Request) -> Vec<Value> {
    r.json()["alerts"].as_array().cloned().unwrap_or_default()
}

fn statuses(r: &Request) -> (usize, usize) {
    let a = alerts_of(r);
    let firing = a.iter().filter(|x| x["status"] == "firing").count();
    (firing, a.len() - firing)
}

async fn push_all(app: &TestApp, agents: &[String]) {
    for a in agents {
        let (code, body) = app.push(a, None, None).await;
        assert!(code.is_success(), "push {a}: {code} {body}");
    }
}

/// A sidecar with one push source, no start-up grace, and `rest` (agents,
/// receivers, routing...).
async fn push_app(stale_after: &str, rest: &str) -> TestApp {
    spawn_app(&format!(
        "startup_grace: 0s\ndefaults: {{stale_after: {stale_after}}}\nsources: [{{name: push, type: push}}]\n{rest}"
    ))
    .await
}

/// [`push_app`] with one webhook receiver, `hook`, and this `routing:`.
async fn hook_app(stale_after: &str, hook: &Receiver, routing: &str) -> TestApp {
    push_app(
        stale_after,
        &format!(
            "receivers: [{{name: hook, type: webhook, url: \"{}\"}}]\nrouting: {routing}\n",
            hook.url("/")
        ),
    )
    .await
}

/// Poll `/metrics` until `series` reads `want` (a delivery is counted once
/// its response is in, a moment after the receiver has the request).
async fn wait_metric(app: &TestApp, series: &str, want: f64) {
    wait_until(
        &format!("{series} == {want}"),
        Duration::from_secs(10),
        || async { sample(&app.scrape().await, series) == Some(want) },
    )
    .await;
}

/// Poll `/metrics` until at least `n` deliveries to `receiver` have failed.
async fn wait_failed_attempts(app: &TestApp, receiver: &str, n: u32) {
    let series = format!(
        r#"agent_supervisor_notifications_total{{receiver="{receiver}",result="failure"}}"#
    );
    wait_until(
        &format!("{n} failed attempts to {receiver}"),
        Duration::from_secs(15),
        || async { sample(&app.scrape().await, &series).is_some_and(|f| f >= f64::from(n)) },
    )
    .await;
}

/// `DELETE /api/v1/silences/{id}` without a token; the status code.
async fn delete_silence(app: &TestApp, id: &str) -> u16 {
    app.client
        .delete(app.admin_url(&format!("/api/v1/silences/{id}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn fleet(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

#[tokio::test]
async fn a_hundred_stale_agents_make_one_request_per_receiver_then_one_resolved() {
    let hook = Receiver::start().await;
    let am = Receiver::start().await;
    let app = push_app(
        "2s",
        &format!(
            r#"
receivers:
  - {{name: hook, type: webhook, url: "{}"}}
  - {{name: am, type: alertmanager, url: "{}"}}
routing: {{group_wait: 2s, group_interval: 1s, repeat_interval: 1h, receivers: [hook, am]}}
"#,
            hook.url("/hook"),
            am.url("/am")
        ),
    )
    .await;
    let agents = fleet("agent_", 100);
    push_all(&app, &agents).await;
    let first = hook.wait_requests(1, Duration::from_secs(20)).await;
    let first_am = am.wait_requests(1, Duration::from_secs(20)).await;
    assert_eq!(statuses(&first[0]), (100, 0), "all 100 in one notification");
    assert_eq!(first[0].path, "/hook");
    let body = first[0].json();
    assert_eq!(body["version"], "1");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["kind"], "agent_stale");
    assert_eq!(body["alerts"][0]["threshold_seconds"], 2.0);
    let am_body = first_am[0].json();
    assert_eq!(am_body["version"], "4");
    assert_eq!(am_body["alerts"].as_array().unwrap().len(), 100);
    assert_eq!(am_body["commonLabels"]["alertname"], "AgentStale");

    // All recover: the next request to each is the one resolved message
    // (so nothing else was sent in between).
    push_all(&app, &agents).await;
    let all = hook.wait_requests(2, Duration::from_secs(20)).await;
    assert_eq!(statuses(&all[1]), (0, 100));
    assert_eq!(all[1].json()["status"], "resolved");
    let all_am = am.wait_requests(2, Duration::from_secs(20)).await;
    assert_eq!(all_am[1].json()["status"], "resolved");
    // Each resolved alert says it recovered, when (its `ends_at`), and how
    // long it was stale; nothing of the firing text.
    let resolved = all[1].json();
    let am_resolved = all_am[1].json();
    for (a, am_a) in resolved["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(am_resolved["alerts"].as_array().unwrap())
    {
        let summary = a["summary"].as_str().unwrap();
        let clock = &a["ends_at"].as_str().unwrap()[11..19];
        let agent = a["agent"].as_str().unwrap();
        assert!(
            summary.starts_with(&format!("{agent} recovered at {clock}Z after "))
                && summary.ends_with(" stale"),
            "{summary}"
        );
        assert!(
            am_a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains(" recovered at "),
            "{am_a}"
        );
    }
    assert!(!resolved.to_string().contains("is stale"));
    assert!(!am_resolved.to_string().contains("is stale"));
    wait_metric(
        &app,
        r#"agent_supervisor_notifications_total{receiver="hook",result="success"}"#,
        2.0,
    )
    .await;
    assert!(
        sample(
            &app.scrape().await,
            r#"agent_supervisor_notification_latency_seconds_count{receiver="hook"}"#
        )
        .is_some_and(|n| n >= 100.0)
    );
    assert_eq!(hook.requests().len(), 2);
    assert_eq!(am.requests().len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_firing_group_is_repeated_every_repeat_interval() {
    let hook = Receiver::start().await;
    let app = hook_app(
        "1s",
        &hook,
        "{group_wait: 0s, group_interval: 1s, repeat_interval: 2s, receivers: [hook]}",
    )
    .await;
    push_all(&app, &["lonely".to_string()]).await;
    let got = hook.wait_requests(3, Duration::from_secs(30)).await;
    let fps: BTreeSet<String> = got
        .iter()
        .map(|r| alerts_of(r)[0]["fingerprint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fps.len(), 1, "the same alert each time");
    let ids: BTreeSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), got.len(), "each reminder is a new notification");
    let times: Vec<i64> = got
        .iter()
        .map(|r| r.header("webhook-timestamp").parse().unwrap())
        .collect();
    assert!(times[2] - times[1] >= 1, "{times:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_receiver_down_through_many_retries_gets_each_notification_once_and_the_other_is_not_delayed()
 {
    let mut flaky = Receiver::gone();
    let steady = Receiver::start().await;
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers:
  - {{name: flaky, type: webhook, url: "{}", secret: "{SECRET}"}}
  - {{name: steady, type: webhook, url: "{}"}}
routing: {{group_wait: 0s, group_interval: 1s, repeat_interval: 1h, receivers: [flaky, steady]}}
delivery: {{initial_backoff: 50ms, max_backoff: 400ms, timeout: 2s}}
"#,
            flaky.url("/"),
            steady.url("/")
        ),
    )
    .await;
    push_all(&app, &["worker".to_string()]).await;
    // The steady receiver hears at once, while the other is refusing.
    let got = steady.wait_requests(1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&got[0]), (1, 0));
    wait_failed_attempts(&app, "flaky", 2).await;
    let (_, v) = app.get_json("/api/v1/alerts").await;
    assert_eq!(v["pending_notifications"]["flaky"], 1, "{v}");
    assert_eq!(
        sample(
            &app.scrape().await,
            r#"agent_supervisor_outbox_pending{receiver="flaky"}"#
        ),
        Some(1.0)
    );
    // The outage lasts until ten attempts have failed, the last several
    // after the backoff reached its cap (50, 100, 200, then 400 ms): what a
    // long outage looks like to the outbox, in about three seconds. The
    // notification is still pending, once, and the steady receiver has had
    // nothing more.
    wait_failed_attempts(&app, "flaky", 10).await;
    let (_, v) = app.get_json("/api/v1/alerts").await;
    assert_eq!(v["pending_notifications"]["flaky"], 1, "{v}");
    assert_eq!(steady.requests().len(), 1);
    flaky.resume().await;
    let got = flaky.wait_requests(1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&got[0]), (1, 0));
    // Then the agent recovers: the next request is the resolved one, so the
    // firing one was delivered exactly once.
    push_all(&app, &["worker".to_string()]).await;
    let got = flaky.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(statuses(&got[1]), (0, 1));
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_ne!(ids[0], ids[1]);
    let steady_all = steady.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(steady_all.len(), 2);
    // Every request carries a signature an independent implementation of
    // the spec (the documented Python snippet) accepts.
    for r in &got {
        assert!(
            verify_with_python(r, SECRET),
            "signature of {:?}",
            r.headers
        );
        assert!(
            verify_with_reference_library(r, SECRET),
            "signature of {:?}",
            r.headers
        );
    }
    let mut tampered = got[0].clone();
    tampered.body.extend_from_slice(b" ");
    assert!(!verify_with_python(&tampered, SECRET));
    assert!(!verify_with_reference_library(&tampered, SECRET));
    wait_metric(
        &app,
        r#"agent_supervisor_outbox_pending{receiver="flaky"}"#,
        0.0,
    )
    .await;
    app.shutdown().await;
}

/// Verify a recorded request with the Standard Webhooks reference library
/// for Python (`standardwebhooks` on PyPI; .ci/run installs it).
fn verify_with_reference_library(r: &Request, secret: &str) -> bool {
    const SCRIPT: &str = r#"
import sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
body = open(sys.argv[1], "rb").read()
headers = {"webhook-id": sys.argv[2], "webhook-timestamp": sys.argv[3], "webhook-signature": sys.argv[4]}
try:
    Webhook(sys.argv[5]).verify(body, headers, json_parse=False)
except WebhookVerificationError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
"#;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &r.body).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&body)
        .arg(r.header("webhook-id"))
        .arg(r.header("webhook-timestamp"))
        .arg(r.header("webhook-signature"))
        .arg(secret)
        .output()
        .expect("python3 runs");
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!(
            "the standardwebhooks Python package is needed (pip install standardwebhooks; .ci/run does): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Run `docs/verify_webhook.py` on a recorded request.
fn verify_with_python(r: &Request, secret: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &r.body).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verify_webhook.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&body)
        .arg(r.header("webhook-id"))
        .arg(r.header("webhook-timestamp"))
        .arg(r.header("webhook-signature"))
        .env("WEBHOOK_SECRET", secret)
        .output()
        .expect("python3 runs");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "verify_webhook.py: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn silences_from_the_api_mute_matching_alerts_which_stay_listed() {
    let hook = Receiver::start().await;
    let app = hook_app(
        "1s",
        &hook,
        "{group_wait: 1s, group_interval: 1s, repeat_interval: 1h, receivers: [hook]}",
    )
    .await;
    let r = app
        .client
        .post(app.admin_url("/api/v1/silences"))
        .json(&json!({
            "matchers": {"agent": "quiet_*"},
            "duration": "1h",
            "comment": "migrating the quiet agents",
            "created_by": "test"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = app
        .client
        .post(app.admin_url("/api/v1/silences"))
        .json(&json!({"matchers": {}, "duration": "1h", "comment": "everything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Near the end of time: a bad request, not a panic in the server.
    let far = app
        .client
        .post(app.admin_url("/api/v1/silences"))
        .json(&json!({
            "matchers": {"agent": "quiet_*"},
            "starts_at": "+262142-12-31T00:00:00Z",
            "duration": "100000d",
            "comment": "far away"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(far.status(), 400);

    push_all(&app, &["quiet_one".to_string(), "loud_one".to_string()]).await;
    let got = hook.wait_requests(1, Duration::from_secs(10)).await;
    let agents: Vec<Value> = alerts_of(&got[0])
        .iter()
        .map(|a| a["agent"].clone())
        .collect();
    assert_eq!(agents, vec![json!("loud_one")]);
    let (_, v) = app.get_json("/api/v1/alerts?silenced=true").await;
    let listed = v["alerts"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["agent"], "quiet_one");
    assert_eq!(listed[0]["silenced_by"][0], id.as_str());
    let scrape = app.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            r#"agent_supervisor_alerts{kind="agent_stale",silenced="true"}"#
        ),
        Some(1.0)
    );
    let (_, s) = app.get_json("/api/v1/silences").await;
    assert_eq!(s["silences"][0]["comment"], "migrating the quiet agents");

    // Lift the silence: quiet_one is notified with the next group message.
    assert_eq!(delete_silence(&app, &id).await, 204);
    let got = hook.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(statuses(&got[1]), (2, 0));
    assert_eq!(delete_silence(&app, &id).await, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn alerts_pushed_to_a_real_alertmanager_appear_with_their_labels_and_resolve() {
    let am = AlertmanagerServer::start().await;
    let app = push_app(
        "1s",
        &format!(
            r#"
agents: [{{match: "trading_*", labels: {{team: trading, severity: critical}}}}]
receivers: [{{name: am, type: alertmanager_api, url: "{}"}}]
routing: {{receivers: [am]}}
"#,
            am.url()
        ),
    )
    .await;
    push_all(&app, &["trading_coordinator".to_string()]).await;
    wait_until(
        "the alert in Alertmanager",
        Duration::from_secs(20),
        || async {
            am.alerts().await.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["agent"] == "trading_coordinator")
            })
        },
    )
    .await;
    let found = am
        .alerts()
        .await
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["labels"]["agent"] == "trading_coordinator")
                .cloned()
        })
        .unwrap();
    let labels = &found["labels"];
    assert_eq!(labels["alertname"], "AgentStale");
    assert_eq!(labels["kind"], "agent_stale");
    assert_eq!(labels["source"], "push");
    assert_eq!(labels["team"], "trading");
    assert_eq!(labels["severity"], "critical");
    assert!(
        found["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("trading_coordinator"),
        "{found}"
    );
    assert_eq!(found["status"]["state"], "active");

    push_all(&app, &["trading_coordinator".to_string()]).await;
    wait_until(
        "the alert resolved in Alertmanager",
        Duration::from_secs(20),
        || async {
            let alerts = am.get_json("/api/v2/alerts?active=true").await;
            !alerts
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["labels"]["agent"] == "trading_coordinator")
        },
    )
    .await;
    app.shutdown().await;
}

// ---- the binary, killed with SIGKILL while a notification is pending ----

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agent-supervisor"));
    c.env_remove("AGENT_SUPERVISOR_CONFIG")
        .env("AGENT_SUPERVISOR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_binary(config: &std::path::Path, port: u16, log: &std::path::Path) -> Running {
    // This test's own HTTP client needs the process's rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = std::fs::File::create(log).unwrap();
    let child = bin()
        .args(["run", "--config"])
        .arg(config)
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until("the sidecar to listen", Duration::from_secs(20), || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    Running { child, base }
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn after_sigkill_a_pending_notification_is_delivered_and_nothing_delivered_is_resent() {
    let dir = tempfile::tempdir().unwrap();
    let mut down = Receiver::gone();
    let up = Receiver::start().await;
    let port = free_port();
    let admin = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin}
startup_grace: 0s
state: {{path: "{}", flush_interval: 100ms}}
defaults: {{stale_after: 1s}}
sources: [{{name: push, type: push}}]
receivers:
  - {{name: down, type: webhook, url: "{}"}}
  - {{name: up, type: webhook, url: "{}"}}
routing: {{group_wait: 0s, group_interval: 1s, repeat_interval: 1h, receivers: [down, up]}}
delivery: {{initial_backoff: 200ms, max_backoff: 1s, timeout: 2s}}
"#,
            dir.path().join("state").display(),
            down.url("/"),
            up.url("/")
        ),
    )
    .unwrap();
    let log = dir.path().join("run1.log");
    let mut first = start_binary(&config, port, &log).await;
    let client = reqwest::Client::new();
    let beat = |base: String| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("{base}/api/v1/heartbeats/payments_agent"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    let admin_base = format!("http://127.0.0.1:{admin}");
    beat(admin_base.clone()).await;
    let delivered = up.wait_requests(1, Duration::from_secs(15)).await;
    assert_eq!(statuses(&delivered[0]), (1, 0));
    let url = format!("{}/api/v1/alerts", first.base);
    // Killed once the delivery to `up` is recorded (the receiver having it
    // is not enough: a crash between its 200 and the record resends it with
    // the same webhook-id, which is at-least-once) and `down`'s is pending.
    wait_until(
        "`up` recorded, `down` pending",
        Duration::from_secs(10),
        || async {
            let pending = &get_json(&url).await["pending_notifications"];
            pending["down"] == 1 && pending["up"] == 0
        },
    )
    .await;
    // SIGKILL: no shutdown, no last save.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    down.resume().await;
    let log2 = dir.path().join("run2.log");
    let second = start_binary(&config, port, &log2).await;
    let got = down.wait_requests(1, Duration::from_secs(15)).await;
    assert_eq!(statuses(&got[0]), (1, 0));
    let pending_id = got[0].header("webhook-id").to_string();
    // Recovery: each receiver's next request is the resolved message, so
    // `up` was not sent the firing alert again, nor `down` twice.
    beat(admin_base).await;
    let up_all = up.wait_requests(2, Duration::from_secs(15)).await;
    assert_eq!(statuses(&up_all[1]), (0, 1), "{:?}", up_all[1].json());
    let down_all = down.wait_requests(2, Duration::from_secs(15)).await;
    assert_eq!(statuses(&down_all[1]), (0, 1));
    let ids: BTreeMap<String, usize> = down_all.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.header("webhook-id").to_string()).or_default() += 1;
        m
    });
    assert_eq!(ids[&pending_id], 1);
    // `up`'s firing message was not sent again. (A third request may come:
    // with a 1 s threshold the agent is stale again a second after its
    // beat, a new incident with a new id.)
    let up_ids: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    let first_id = delivered[0].header("webhook-id");
    assert_eq!(
        up_ids.iter().filter(|id| id.as_str() == first_id).count(),
        1,
        "{up_ids:?}"
    );
    drop(second);
}

#[tokio::test]
async fn with_an_api_token_silences_need_it_and_reads_do_not() {
    let app = push_app("1s", "api_token: s3cret-t0ken\n").await;
    let body = json!({"matchers": {"kind": "agent_stale"}, "duration": "10m", "comment": "deploy"});
    let post = |token: Option<&'static str>| {
        let mut r = app
            .client
            .post(app.admin_url("/api/v1/silences"))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 401);
    let created = post(Some("s3cret-t0ken")).await.unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, v) = app.get_json("/api/v1/silences").await;
    assert_eq!(code, 200);
    assert_eq!(v["silences"][0]["id"], id.as_str());
    assert_eq!(delete_silence(&app, &id).await, 401);
    app.shutdown().await;
}

/// The token is checked before the body is read (a 3 MB body without it
/// is a 401 at once), and a silence is bounded: body 16 KiB (413, JSON),
/// patterns 256 bytes, comments 1024 characters (400s that say so).
#[tokio::test]
async fn the_silence_api_checks_the_token_first_and_bounds_what_it_takes() {
    let app = push_app("1s", "api_token: s3cret-t0ken\n").await;
    let post = |body: Vec<u8>, token: bool| {
        app.post_raw("/api/v1/silences", body, token.then_some("s3cret-t0ken"))
    };
    let huge = format!(
        r#"{{"matchers": {{"agent": "{}"}}, "duration": "1h", "comment": "x"}}"#,
        "a".repeat(3 << 20)
    );
    let r = post(huge.clone().into_bytes(), false).await;
    assert_eq!(r.status(), 401);
    let r = post(huge.into_bytes(), true).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("16384"), "{v}");
    let long_pattern =
        json!({"matchers": {"agent": "*".repeat(300)}, "duration": "1h", "comment": "x"});
    let r = post(long_pattern.to_string().into_bytes(), true).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("at most 256 bytes"),
        "{v}"
    );
    let long_comment =
        json!({"matchers": {"agent": "a*"}, "duration": "1h", "comment": "c".repeat(1025)});
    let r = post(long_comment.to_string().into_bytes(), true).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("1024"), "{v}");
    let fine = json!({"matchers": {"agent": "a*"}, "duration": "1h", "comment": "deploy"});
    let r = post(fine.to_string().into_bytes(), true).await;
    assert_eq!(r.status(), 201);
    app.shutdown().await;
}

#[tokio::test]
async fn retries_after_503s_carry_the_same_webhook_id_and_a_valid_signature_each_time() {
    let hook = Receiver::start().await;
    hook.refuse_next(3);
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers: [{{name: hook, type: webhook, url: "{}", secret: "{PLAIN_SECRET}"}}]
routing: {{group_wait: 0s, receivers: [hook]}}
delivery: {{initial_backoff: 100ms, max_backoff: 500ms}}
"#,
            hook.url("/")
        ),
    )
    .await;
    push_all(&app, &["retried".to_string()]).await;
    let got = hook.wait_requests(4, Duration::from_secs(15)).await;
    let accepted: Vec<bool> = got.iter().map(|r| r.accepted).collect();
    assert_eq!(accepted, vec![false, false, false, true]);
    let ids: BTreeSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries: {ids:?}");
    assert!(got.iter().all(|r| r.body == got[0].body), "same body");
    for r in &got {
        // Configured without the prefix: either form verifies.
        for secret in [SECRET, PLAIN_SECRET] {
            assert!(verify_with_python(r, secret));
            assert!(verify_with_reference_library(r, secret));
        }
    }
    wait_metric(
        &app,
        r#"agent_supervisor_notifications_total{receiver="hook",result="success"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &app.scrape().await,
            r#"agent_supervisor_notifications_total{receiver="hook",result="failure"}"#
        ),
        Some(3.0)
    );
    app.shutdown().await;
}

/// A 400 is permanent: one attempt, counted `rejected`, and the next
/// notification for that receiver goes at once (with `initial_backoff:
/// 5s`, a retried 400 would hold it up five seconds).
#[tokio::test]
async fn a_400_costs_one_attempt_and_does_not_hold_up_the_next_notification() {
    let hook = Receiver::start().await;
    hook.answer_next(1, 400, None);
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers: [{{name: hook, type: webhook, url: "{}"}}]
routing: {{group_by: [agent], group_wait: 0s, receivers: [hook]}}
delivery: {{initial_backoff: 5s, max_backoff: 10s}}
"#,
            hook.url("/")
        ),
    )
    .await;
    push_all(&app, &["first".to_string(), "second".to_string()]).await;
    let got = hook.wait_requests(2, Duration::from_secs(10)).await;
    assert!(!got[0].accepted && got[1].accepted, "{got:?}");
    assert_ne!(
        alerts_of(&got[0])[0]["agent"],
        alerts_of(&got[1])[0]["agent"]
    );
    let gap = got[1].at - got[0].at;
    assert!(gap < Duration::from_secs(2), "held up {gap:?}");
    wait_metric(
        &app,
        r#"agent_supervisor_notifications_total{receiver="hook",result="rejected"}"#,
        1.0,
    )
    .await;
    // Never retried: still two requests well past the first retry's time.
    crate::harness::holds_for("no retry of the 400", Duration::from_secs(6), || async {
        hook.requests().len() == 2
    })
    .await;
    app.shutdown().await;
}

/// `Retry-After: 3` on a 503 is waited for, though the backoff says 100 ms.
#[tokio::test]
async fn retry_after_is_waited_for() {
    let hook = Receiver::start().await;
    hook.answer_next(1, 503, Some("3"));
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers: [{{name: hook, type: webhook, url: "{}"}}]
routing: {{group_wait: 0s, receivers: [hook]}}
delivery: {{initial_backoff: 100ms, max_backoff: 10s}}
"#,
            hook.url("/")
        ),
    )
    .await;
    push_all(&app, &["patient".to_string()]).await;
    let got = hook.wait_requests(2, Duration::from_secs(15)).await;
    assert!(!got[0].accepted && got[1].accepted, "{got:?}");
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(3) && gap < Duration::from_millis(4500),
        "retried after {gap:?}"
    );
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_notification_not_delivered_within_give_up_after_is_dropped_and_counted() {
    let gone = Receiver::gone();
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers: [{{name: gone, type: webhook, url: "{}"}}]
routing: {{group_wait: 0s, receivers: [gone]}}
delivery: {{initial_backoff: 100ms, max_backoff: 300ms, give_up_after: 2s}}
"#,
            gone.url("/")
        ),
    )
    .await;
    push_all(&app, &["unlucky".to_string()]).await;
    wait_metric(
        &app,
        r#"agent_supervisor_notifications_total{receiver="gone",result="dropped"}"#,
        1.0,
    )
    .await;
    wait_metric(
        &app,
        r#"agent_supervisor_outbox_pending{receiver="gone"}"#,
        0.0,
    )
    .await;
    let scrape = app.scrape().await;
    assert!(
        sample(
            &scrape,
            r#"agent_supervisor_notifications_total{receiver="gone",result="failure"}"#
        )
        .is_some_and(|n| n >= 3.0)
    );
    // The alert itself still fires: only its delivery was given up.
    let (_, v) = app.get_json("/api/v1/alerts").await;
    assert_eq!(v["alerts"][0]["agent"], "unlucky");
    app.shutdown().await;
}

/// Restart semantics with a Redis source: an alert that cleared while the
/// sidecar was stopped is resolved after it starts, an agent that went stale
/// meanwhile alerts, and an alert still firing is not sent again. One group
/// per agent, so each message is about one agent.
#[tokio::test]
async fn after_a_restart_cleared_alerts_resolve_new_ones_fire_and_firing_ones_stay_quiet() {
    let url = shared_redis_url();
    let prefix = unique_prefix("alerts_restart");
    let redis = redis_client(&url).await;
    let key = |agent: &str| format!("{prefix}{agent}:last_seen");
    let hook = Receiver::start().await;
    let config = format!(
        r#"
startup_grace: 10s
sources:
  - {{name: redis, type: redis, url: "{url}", interval: 500ms, timeout: 1s,
      layout: keys, pattern: "{prefix}{{agent}}:last_seen"}}
agents: [{{match: "*", stale_after: 2s}}]
receivers: [{{name: hook, type: webhook, url: "{}"}}]
routing: {{group_wait: 0s, group_interval: 500ms, repeat_interval: 1h, group_by: [agent],
  receivers: [hook]}}
"#,
        hook.url("/")
    );
    let told = |from: usize| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = hook.requests()[from..]
            .iter()
            .flat_map(alerts_of)
            .map(|a| {
                (
                    a["agent"].as_str().unwrap().to_string(),
                    a["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let pair = |a: &str, s: &str| (a.to_string(), s.to_string());
    let old = Utc::now() - chrono::TimeDelta::seconds(60);
    redis_beat(&redis, &key("recovers"), old).await;
    redis_beat(&redis, &key("still_down"), old).await;
    redis_beat(
        &redis,
        &key("dies_later"),
        Utc::now() + chrono::TimeDelta::seconds(600),
    )
    .await;
    let app = spawn_app(&config).await;
    hook.wait_requests(2, Duration::from_secs(15)).await;
    assert_eq!(
        told(0),
        [pair("recovers", "firing"), pair("still_down", "firing")]
    );
    // Stop once both deliveries are recorded (a notification the receiver
    // has but the outbox still holds is delivered again after a restart:
    // at-least-once), so that what follows tests restart semantics only.
    wait_until("deliveries recorded", Duration::from_secs(10), || async {
        sample(
            &app.scrape().await,
            r#"agent_supervisor_outbox_pending{receiver="hook"}"#,
        ) == Some(0.0)
    })
    .await;
    // Stop; while stopped, one recovers and another stops beating.
    let dir = app.shutdown().await;
    redis_beat(
        &redis,
        &key("recovers"),
        Utc::now() + chrono::TimeDelta::seconds(600),
    )
    .await;
    redis_beat(&redis, &key("dies_later"), old).await;
    let app = crate::support::spawn_app_in(&config, dir).await;
    hook.wait_requests(4, Duration::from_secs(15)).await;
    assert_eq!(
        told(2),
        [pair("dies_later", "firing"), pair("recovers", "resolved")]
    );
    // Nothing about still_down, which fired before and still does.
    assert_eq!(hook.requests().len(), 4);
    app.shutdown().await;
}

#[tokio::test]
async fn a_for_hold_delays_the_alert_by_exactly_its_length() {
    let hook = Receiver::start().await;
    let app = push_app(
        "1s",
        &format!(
            r#"
agents: [{{match: "held_*", for: 2s}}]
receivers: [{{name: hook, type: webhook, url: "{}"}}]
routing: {{group_wait: 0s, receivers: [hook]}}
"#,
            hook.url("/")
        ),
    )
    .await;
    let pushed = std::time::Instant::now();
    push_all(&app, &["held_agent".to_string()]).await;
    app.wait_for_state("held_agent", "stale", Duration::from_secs(10))
        .await;
    let (_, v) = app.get_json("/api/v1/alerts").await;
    assert_eq!(v["alerts"].as_array().unwrap().len(), 0, "held: {v}");
    let got = hook.wait_requests(1, Duration::from_secs(15)).await;
    let waited = pushed.elapsed();
    // Stale after 1 s, then held for 2 s.
    assert!(
        waited >= Duration::from_millis(2900),
        "fired after {waited:?}"
    );
    let alert = &alerts_of(&got[0])[0];
    assert_eq!(alert["agent"], "held_agent");
    let starts: chrono::DateTime<Utc> = alert["starts_at"].as_str().unwrap().parse().unwrap();
    let sent: i64 = got[0].header("webhook-timestamp").parse().unwrap();
    assert!(
        sent - starts.timestamp() >= 1,
        "starts_at is when the agent turned stale, before the hold: {alert}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_does_not_hold_up_the_others() {
    // Accepts connections and reads nothing, answers nothing.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = hang.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let fine = Receiver::start().await;
    let app = push_app(
        "1s",
        &format!(
            r#"
receivers:
  - {{name: hang, type: webhook, url: "http://127.0.0.1:{hang_port}/", timeout: 300ms}}
  - {{name: fine, type: webhook, url: "{}"}}
routing: {{group_wait: 0s, receivers: [hang, fine]}}
delivery: {{initial_backoff: 100ms, max_backoff: 200ms, give_up_after: 3s}}
"#,
            fine.url("/")
        ),
    )
    .await;
    push_all(&app, &["stuck".to_string()]).await;
    fine.wait_requests(1, Duration::from_secs(10)).await;
    wait_metric(
        &app,
        r#"agent_supervisor_notifications_total{receiver="hang",result="dropped"}"#,
        1.0,
    )
    .await;
    let failures = sample(
        &app.scrape().await,
        r#"agent_supervisor_notifications_total{receiver="hang",result="failure"}"#,
    )
    .unwrap();
    // Each attempt gave up after its 300 ms timeout: several fit in 3 s.
    assert!(failures >= 3.0, "{failures} attempts");
    assert!(held.lock().unwrap().len() >= 3);
    app.shutdown().await;
}
