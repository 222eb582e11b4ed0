//! The HTTP API and the push source, end to end through a running app.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::wait_until;
use crate::support::{TestApp, sample, spawn_app, spawn_app_in};

const PUSH_ONLY: &str = r#"
startup_grace: 1s
sources:
  - {name: push, type: push, token: "${NONE:-}"}
agents:
  - {match: "fast_*", stale_after: 1s, labels: {team: trading, severity: critical}}
  - {match: expected_one, expected: true}
"#;

#[tokio::test]
async fn pushed_heartbeat_shows_in_api_and_metrics() {
    let app = spawn_app(PUSH_ONLY).await;
    let (code, body) = app.push("worker_1", None, None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let a = app
        .wait_for_state("worker_1", "healthy", Duration::from_secs(5))
        .await;
    assert_eq!(a["checks"][0]["source"], "push");
    assert_eq!(a["checks"][0]["threshold_seconds"], 60.0);
    let (_, list) = app.get_json("/api/v1/agents?state=healthy").await;
    assert_eq!(list["agents"].as_array().map(Vec::len), Some(1));
    let m = app.scrape().await;
    assert_eq!(
        sample(&m, r#"agent_supervisor_agent_up{agent="worker_1"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_agent_state{agent="worker_1",state="healthy"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            r#"agent_supervisor_agent_last_seen_timestamp_seconds{agent="worker_1",source="push"}"#
        )
        .is_some()
    );
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_pushed_heartbeats_total{result="accepted"}"#
        ),
        Some(1.0)
    );
    // A push source can only have a clock-skewed time: no series for kinds
    // (timeouts, refused connections...) it can never report.
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_source_errors_total{kind="clock_skew",source="push"}"#
        ),
        Some(0.0)
    );
    assert!(
        !m.contains(r#"source_errors_total{kind="timeout",source="push"}"#),
        "{m}"
    );
    // The standard process families.
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            sample(&m, family).is_some_and(|v| v > 0.0),
            "{family} missing:\n{m}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn pushed_agent_goes_stale_within_a_second_of_its_deadline() {
    let app = spawn_app(PUSH_ONLY).await;
    let (code, body) = app.push("fast_1", None, None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let last_seen: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(body["last_seen"].clone()).unwrap();
    app.wait_for_state("fast_1", "stale", Duration::from_secs(5))
        .await;
    let late = chrono::Utc::now() - (last_seen + chrono::TimeDelta::seconds(1));
    assert!(
        late < chrono::TimeDelta::milliseconds(1000),
        "reported {late} after the deadline"
    );
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_transitions_total{from="healthy",to="stale"}"#
        ),
        Some(1.0)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn error_status_is_failing_with_its_detail() {
    let app = spawn_app(PUSH_ONLY).await;
    app.push(
        "w",
        Some(json!({"status": "error", "detail": "db pool exhausted"})),
        None,
    )
    .await;
    let a = app
        .wait_for_state("w", "failing", Duration::from_secs(5))
        .await;
    assert!(
        a["reason"].as_str().unwrap().contains("db pool exhausted"),
        "{a}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_push_requests_are_rejected_with_a_reason_and_counted() {
    let app = spawn_app(PUSH_ONLY).await;
    let (code, body) = app
        .push("w", Some(json!({"timestamp": "soon"})), None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("timestamp"),
        "{body}"
    );
    let r = app
        .client
        .post(app.admin_url("/api/v1/heartbeats/w"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_pushed_heartbeats_total{result="invalid"}"#
        ),
        Some(2.0)
    );
    assert!(app.agent("w").await.is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn past_max_agents_new_ids_are_refused_and_known_ones_still_accepted() {
    let app = spawn_app("sources: [{name: push, type: push, max_agents: 2}]").await;
    for a in ["a", "b"] {
        assert_eq!(app.push(a, None, None).await.0, StatusCode::ACCEPTED);
    }
    app.wait_for_state("b", "healthy", Duration::from_secs(5))
        .await;
    let (code, body) = app.push("c", None, None).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_agents"));
    assert_eq!(app.push("a", None, None).await.0, StatusCode::ACCEPTED);
    assert!(app.agent("c").await.is_none());
    assert_eq!(
        sample(
            &app.scrape().await,
            r#"agent_supervisor_pushed_heartbeats_total{result="too_many_agents"}"#
        ),
        Some(1.0)
    );
    app.shutdown().await;
}

/// A burst of new ids, all sent before any snapshot could count them: no
/// more than `max_agents` are admitted.
#[tokio::test]
async fn max_agents_holds_against_a_burst_of_new_ids() {
    let app = spawn_app("sources: [{name: push, type: push, max_agents: 5}]").await;
    let pushes = (0..60).map(|i| {
        let app = &app;
        async move { app.push(&format!("burst-{i}"), None, None).await.0 }
    });
    let codes = futures::future::join_all(pushes).await;
    let accepted = codes.iter().filter(|c| **c == StatusCode::ACCEPTED).count();
    let refused = codes
        .iter()
        .filter(|c| **c == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (5, 55), "{codes:?}");
    app.shutdown().await;
}

/// Push answers: the token is checked before the body is read, an
/// oversize body is a JSON 413, a long detail and status are cut and
/// marked, and a heartbeat an hour ahead is answered with what is stored.
#[tokio::test]
async fn push_bounds_what_it_keeps_and_says_what_it_stored() {
    let app = spawn_app("sources: [{name: push, type: push, token: s3cret}]").await;
    let big = vec![b' '; 70 * 1024];
    let post = |body: Vec<u8>, token: bool| {
        app.post_raw("/api/v1/heartbeats/w", body, token.then_some("s3cret"))
    };
    assert_eq!(post(big.clone(), false).await.status(), 401);
    let r = post(big, true).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("65536"), "{v}");

    let detail = "d".repeat(2000);
    let word = "w".repeat(100);
    let (code, _) = app
        .push(
            "w",
            Some(json!({"status": word, "detail": detail})),
            Some("s3cret"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let a = app
        .wait_for_state("w", "failing", Duration::from_secs(5))
        .await;
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{}…: ", "w".repeat(61))),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("{}…", "d".repeat(509))),
        "{reason}"
    );
    assert!(!reason.contains(&"d".repeat(510)), "{reason}");

    let ahead = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let (code, v) = app
        .push(
            "w",
            Some(json!({"timestamp": ahead.to_rfc3339()})),
            Some("s3cret"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let stored: chrono::DateTime<chrono::Utc> = v["last_seen"].as_str().unwrap().parse().unwrap();
    assert!(stored < ahead - chrono::TimeDelta::minutes(59), "{v}");
    assert!(v["note"].as_str().unwrap().contains("in the future"), "{v}");
    app.shutdown().await;
}

#[tokio::test]
async fn push_token_is_enforced() {
    let app = spawn_app("sources: [{name: push, type: push, token: s3cret}]").await;
    assert_eq!(app.push("w", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.push("w", None, Some("nope")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.push("w", None, Some("s3cret")).await.0,
        StatusCode::ACCEPTED
    );
    app.shutdown().await;
}

#[tokio::test]
async fn probes_and_sources_endpoints_answer() {
    let app = spawn_app(PUSH_ONLY).await;
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
    let s = app.source("push").await;
    assert_eq!(s["type"], "push");
    assert_eq!(s["status"], "up");
    let (code, v) = app.get_json("/api/v1/agents/nobody").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nobody"));
    app.shutdown().await;
}

#[tokio::test]
async fn expected_agent_goes_missing_after_startup_grace() {
    let app = spawn_app(PUSH_ONLY).await;
    let a = app
        .wait_for_state("expected_one", "missing", Duration::from_secs(5))
        .await;
    assert_eq!(a["expected"], true);
    app.shutdown().await;
}

/// The scrape passes `promtool check metrics` with agents in several states.
#[tokio::test]
async fn scrape_passes_promtool_check_metrics() {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!("promtool not found: install the Debian package `prometheus` (.ci/run does)")
    });
    // With an action configured (never called: its rule waits an hour),
    // so the action families are checked too.
    let config = format!(
        "{PUSH_ONLY}actions: [{{name: restart_agent, url: 'http://127.0.0.1:9/{{agent}}'}}]\n\
         remediation: {{max_agents: 5}}\n"
    )
    .replace(
        "labels: {team: trading, severity: critical}}",
        "labels: {team: trading, severity: critical}, \
         remediate: {action: restart_agent, after: 1h}}",
    );
    let app = spawn_app(&config).await;
    app.push("fast_stale", None, None).await;
    app.push("ok_1", None, None).await;
    app.push("bad_1", Some(json!({"status": "down"})), None)
        .await;
    app.push("quote\"agent", None, None).await;
    app.wait_for_state("fast_stale", "stale", Duration::from_secs(5))
        .await;
    app.wait_for_state("bad_1", "failing", Duration::from_secs(5))
        .await;
    let body = app.scrape().await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {text}\n---\n{body}");
    assert!(text.trim().is_empty(), "promtool warnings: {text}");
    for series in [
        r#"agent_supervisor_actions_total{action="restart_agent",result="timeout"}"#,
        "agent_supervisor_remediation_breaker_open",
    ] {
        assert_eq!(sample(&body, series), Some(0.0), "{series}\n{body}");
    }
    app.shutdown().await;
}

/// Wait until `agent` (a `fast_*` one) is stale and that is in `state.json`;
/// its view.
async fn stale_and_saved(app: &TestApp, agent: &str) -> serde_json::Value {
    let view = app
        .wait_for_state(agent, "stale", Duration::from_secs(5))
        .await;
    let state_file = app.state_dir_path().join("state.json");
    wait_until("state to be saved", Duration::from_secs(5), || async {
        std::fs::read_to_string(&state_file)
            .map(|s| s.contains("stale"))
            .unwrap_or(false)
    })
    .await;
    view
}

#[tokio::test]
async fn restart_keeps_states_since_and_transitions_without_fresh_ones() {
    let app = spawn_app(PUSH_ONLY).await;
    app.push("fast_1", None, None).await;
    app.push("slow_1", None, None).await;
    let before = stale_and_saved(&app, "fast_1").await;
    let dir = app.shutdown().await;

    let app = spawn_app_in(PUSH_ONLY, dir).await;
    let after = app.agent("fast_1").await.expect("restored");
    assert_eq!(after["state"], "stale");
    assert_eq!(after["since"], before["since"]);
    // Its transitions too (healthy, then stale), from the state file; an
    // agent that never changed has none.
    let states: Vec<&str> = before["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(states, ["healthy", "stale"], "{before}");
    assert_eq!(after["history"], before["history"]);
    let slow = app.agent("slow_1").await.expect("restored");
    assert_eq!(slow["state"], "healthy");
    assert_eq!(slow["history"], json!([]));
    let m = app.scrape().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("agent_supervisor_transitions_total{")),
        "no transitions after a restart: {m}"
    );
    app.shutdown().await;
}

/// A corrupt state file does not stop the sidecar and is not overwritten:
/// it is renamed aside, counted, and the other files still load.
#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_and_the_others_still_load() {
    let app = spawn_app(PUSH_ONLY).await;
    app.push("fast_1", None, None).await;
    stale_and_saved(&app, "fast_1").await;
    let dir = app.shutdown().await;
    let torn = br#"{"version":1,"data":{"active":{"#;
    std::fs::write(dir.path().join("alerts.json"), torn).unwrap();

    let app = spawn_app_in(PUSH_ONLY, dir).await;
    // state.json still loaded: the agent is restored as it was.
    let after = app.agent("fast_1").await.expect("restored");
    assert_eq!(after["state"], "stale");
    let aside: Vec<std::path::PathBuf> = std::fs::read_dir(app.state_dir_path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("alerts.json.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), torn);
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_state_files_set_aside_total{file="alerts.json"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_state_files_set_aside_total{file="state.json"}"#
        ),
        Some(0.0)
    );
    app.shutdown().await;
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// `/api/v1/agents` a page at a time: `limit` from after `after`, `next`
/// the cursor of the following page (absent on the last), with `state`.
#[tokio::test]
async fn agents_are_listed_a_page_at_a_time() {
    let app = spawn_app(PUSH_ONLY).await;
    for i in 0..25 {
        assert_eq!(
            app.push(&format!("p{i:02}"), None, None).await.0,
            StatusCode::ACCEPTED
        );
    }
    app.wait_for_state("p24", "healthy", Duration::from_secs(5))
        .await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/agents?limit=10".to_string();
    let mut pages = 0;
    loop {
        let (code, v) = app.get_json(&path).await;
        assert_eq!(code, StatusCode::OK);
        pages += 1;
        let ids: Vec<String> = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .filter(|id| id.starts_with('p'))
            .collect();
        seen.extend(ids);
        match v["next"].as_str() {
            Some(next) => path = format!("/api/v1/agents?limit=10&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 3, "{pages} pages");
    let (_, v) = app
        .get_json("/api/v1/agents?state=healthy&limit=2&after=p10")
        .await;
    let ids: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p11", "p12"]);
    assert_eq!(v["next"], "p12");
    app.shutdown().await;
}

/// The read listener serves reads only: a push or a silence sent there is
/// refused (403, JSON) and changes nothing; the admin listener serves the
/// same reads and takes the writes.
#[tokio::test]
async fn the_read_listener_refuses_every_write_and_the_admin_listener_takes_them() {
    let app = spawn_app(PUSH_ONLY).await;
    let silence = json!({"matchers": {"agent": "*"}, "duration": "1h", "comment": "all"});
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/v1/heartbeats/intruder",
            json!({}),
        ),
        (reqwest::Method::POST, "/api/v1/silences", silence.clone()),
        (reqwest::Method::DELETE, "/api/v1/silences/x", json!({})),
        (reqwest::Method::PUT, "/api/v1/agents", json!({})),
    ] {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("admin_listen"),
            "{v}"
        );
    }
    assert!(app.agent("intruder").await.is_none());
    let (_, s) = app.get_json("/api/v1/silences").await;
    assert_eq!(s["silences"], json!([]));

    // The admin listener: writes and reads.
    let (code, _) = app.push("worker", None, None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let r = app
        .client
        .post(app.admin_url("/api/v1/silences"))
        .json(&silence)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for path in ["/api/v1/agents", "/api/v1/silences", "/metrics", "/healthz"] {
        let r = app.client.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} on the admin listener");
    }
    let (_, s) = app.get_json("/api/v1/silences").await;
    assert_eq!(s["silences"].as_array().map(Vec::len), Some(1));
}

/// With `read_token`, `GET /api/v1/*` needs it (or `api_token`) on both
/// listeners; `/metrics` and the probes stay open for Prometheus and the
/// kubelet.
#[tokio::test]
async fn a_read_token_guards_the_read_api_but_not_metrics_and_probes() {
    let app = spawn_app(
        r#"
read_token: reader
api_token: admin
sources: [{name: push, type: push}]
"#,
    )
    .await;
    let get = |base: String, path: &'static str, token: Option<&'static str>| {
        let client = app.client.clone();
        async move {
            let mut r = client.get(format!("{base}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status()
        }
    };
    for base in [app.base.clone(), app.admin.clone()] {
        for path in [
            "/api/v1/agents",
            "/api/v1/agents/x",
            "/api/v1/sources",
            "/api/v1/alerts",
            "/api/v1/silences",
        ] {
            assert_eq!(
                get(base.clone(), path, None).await,
                StatusCode::UNAUTHORIZED,
                "{base}{path}"
            );
            assert_eq!(
                get(base.clone(), path, Some("wrong")).await,
                StatusCode::UNAUTHORIZED,
                "{base}{path}"
            );
            for token in ["reader", "admin"] {
                let code = get(base.clone(), path, Some(token)).await;
                assert!(
                    code == StatusCode::OK
                        || (path.ends_with("/x") && code == StatusCode::NOT_FOUND),
                    "{base}{path} with {token}: {code}"
                );
            }
        }
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(
                get(base.clone(), path, None).await,
                StatusCode::OK,
                "{path}"
            );
        }
    }
    // The read token does not open the writes.
    let r = app
        .client
        .post(app.admin_url("/api/v1/silences"))
        .bearer_auth("reader")
        .json(&json!({"matchers": {"agent": "*"}, "duration": "1h", "comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
