//! The `http` source against real HTTP servers on 127.0.0.1: statuses out of
//! a `/health` body, dependency suppression when the service fails, bad
//! answers of every kind, per-agent endpoints, and a zombie agent whose
//! heartbeat is stale while `/health` still says "active".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use fred::prelude::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{shared_redis_url, unique_prefix, wait_until};
use crate::support::{TestApp, sample, source_errors, spawn_app};

const WAIT: Duration = Duration::from_secs(10);

/// Serve `router` on 127.0.0.1:0; returns `http://127.0.0.1:port`.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (code, axum::Json(body)).into_response()
}

async fn check_of(app: &TestApp, agent: &str, source: &str) -> Value {
    let a = app
        .agent(agent)
        .await
        .unwrap_or_else(|| panic!("no agent {agent}"));
    a["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["source"] == source).cloned())
        .unwrap_or_else(|| panic!("no {source} check on {agent}: {a}"))
}

async fn reason_of(app: &TestApp, agent: &str) -> String {
    app.agent(agent).await.expect("agent")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn alerting(app: &TestApp) -> Vec<String> {
    let (_, v) = app.get_json("/api/v1/agents").await;
    v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| matches!(a["state"].as_str(), Some("stale" | "failing" | "missing")))
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn components_out_of_one_body_are_healthy_failing_or_missing() {
    let base = serve(Router::new().route(
        "/health",
        get(|| async {
            json_response(
                StatusCode::OK,
                json!({"status": "ok", "trading_coordinator_status": "active",
                       "market_analyst_status": "error"}),
            )
        }),
    ))
    .await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - name: svc
    type: http
    url: {base}/health
    interval: 500ms
    components:
      trading_coordinator: {{pointer: /trading_coordinator_status}}
      market_analyst: {{pointer: market_analyst_status, healthy: [active]}}
      risk_manager: {{pointer: /risk_manager_status}}
"#
    ))
    .await;
    app.wait_for_state("svc", "healthy", WAIT).await;
    app.wait_for_state("trading_coordinator", "healthy", WAIT)
        .await;
    let failing = app.wait_for_state("market_analyst", "failing", WAIT).await;
    assert_eq!(failing["reason"], "reported unhealthy: error");
    let missing = app.wait_for_state("risk_manager", "missing", WAIT).await;
    assert_eq!(
        missing["reason"], "/risk_manager_status absent from the body",
        "{missing}"
    );
    assert_eq!(app.source("svc").await["status"], "up");
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_http_last_status_code{source="svc"}"#
        ),
        Some(200.0)
    );
    assert!(
        m.contains(r#"agent_supervisor_source_scan_duration_seconds_count{source="svc"}"#),
        "probe duration histogram"
    );
    app.shutdown().await;
}

#[derive(Clone, Default)]
struct Flaky {
    broken: Arc<AtomicBool>,
    recovered: Arc<AtomicBool>,
}

#[tokio::test]
async fn global_500_makes_components_unknown_with_one_alert_and_recovery_reads_the_fresh_body() {
    let flaky = Flaky::default();
    let base = serve(
        Router::new()
            .route(
                "/health",
                get(|State(f): State<Flaky>| async move {
                    if f.broken.load(Ordering::SeqCst) {
                        // What FastAPI's global exception handler answers.
                        json_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            json!({"detail": "Internal Server Error"}),
                        )
                    } else if f.recovered.load(Ordering::SeqCst) {
                        json_response(
                            StatusCode::OK,
                            json!({"a_status": "error", "b_status": "active", "c_status": "ok"}),
                        )
                    } else {
                        json_response(
                            StatusCode::OK,
                            json!({"a_status": "active", "b_status": "active", "c_status": "up"}),
                        )
                    }
                }),
            )
            .with_state(flaky.clone()),
    )
    .await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - name: python-ai-services
    type: http
    url: {base}/health
    interval: 300ms
    id: ai_services
    components:
      a: {{pointer: /a_status}}
      b: {{pointer: /b_status}}
      c: {{pointer: /c_status}}
"#
    ))
    .await;
    for id in ["ai_services", "a", "b", "c"] {
        app.wait_for_state(id, "healthy", WAIT).await;
    }

    flaky.broken.store(true, Ordering::SeqCst);
    let svc = app.wait_for_state("ai_services", "failing", WAIT).await;
    assert_eq!(
        svc["reason"], "reported unhealthy: HTTP 500: Internal Server Error",
        "{svc}"
    );
    for id in ["a", "b", "c"] {
        app.wait_for_state(id, "unknown", WAIT).await;
        assert_eq!(
            reason_of(&app, id).await,
            "service check failing: HTTP 500: Internal Server Error"
        );
    }
    // The source itself is fine: it read the service's answer.
    assert_eq!(app.source("python-ai-services").await["status"], "up");
    assert_eq!(alerting(&app).await, vec!["ai_services".to_string()]);
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_http_last_status_code{source="python-ai-services"}"#
        ),
        Some(500.0)
    );

    flaky.recovered.store(true, Ordering::SeqCst);
    flaky.broken.store(false, Ordering::SeqCst);
    app.wait_for_state("ai_services", "healthy", WAIT).await;
    let a = app.wait_for_state("a", "failing", WAIT).await;
    assert_eq!(a["reason"], "reported unhealthy: error");
    app.wait_for_state("b", "healthy", WAIT).await;
    app.wait_for_state("c", "healthy", WAIT).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_server_that_never_answers_ends_the_probe_at_its_timeout() {
    // Accepts connections and never reads or writes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - name: hung
    type: http
    url: http://{addr}/health
    interval: 1s
    timeout: 500ms
    components:
      worker: {{pointer: /worker_status}}
"#
    ))
    .await;
    let hung = app.wait_for_state("hung", "failing", WAIT).await;
    assert_eq!(hung["reason"], "no answer within 500ms", "{hung}");
    app.wait_for_state("worker", "unknown", WAIT).await;
    assert_eq!(
        reason_of(&app, "worker").await,
        "service check failing: no answer within 500ms"
    );
    // Probes keep ending: more than one timeout is counted.
    wait_until("two timeouts counted", WAIT, || async {
        source_errors(&app.scrape().await, "hung", "timeout") >= 2.0
    })
    .await;
    let m = app.scrape().await;
    assert_eq!(
        sample(
            &m,
            r#"agent_supervisor_http_last_status_code{source="hung"}"#
        ),
        Some(0.0)
    );
    app.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn refused_connection_is_a_failing_service_not_a_down_source() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: gone, type: http, url: "http://{addr}/health", interval: 500ms,
      components: {{w: {{pointer: /w}}}}}}
"#
    ))
    .await;
    let gone = app.wait_for_state("gone", "failing", WAIT).await;
    assert_eq!(gone["reason"], "not reachable: connection refused");
    assert_eq!(
        reason_of(&app, "w").await,
        "service check failing: not reachable: connection refused"
    );
    // The API's status keeps its shape; only the words changed.
    assert_eq!(
        check_of(&app, "gone", "gone").await["status"],
        json!({"healthy": false, "detail": "not reachable: connection refused"})
    );
    app.wait_for_state("w", "unknown", WAIT).await;
    assert_eq!(app.source("gone").await["status"], "up");
    let m = app.scrape().await;
    assert!(source_errors(&m, "gone", "connection_refused") >= 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_answers_each_fail_with_a_clear_reason_and_a_counted_kind() {
    let big = "x".repeat(10_000);
    let router = Router::new()
        .route(
            "/big",
            get(move || {
                let big = big.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], big) }
            }),
        )
        .route(
            "/streamed",
            get(|| async {
                // No Content-Length: the cap applies while streaming.
                let chunks = futures::stream::iter(
                    (0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])),
                );
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(chunks))
                    .expect("response")
            }),
        )
        .route(
            "/notjson",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "OK") }),
        )
        .route(
            "/html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html>fine</html>",
                )
            }),
        )
        .route(
            "/object",
            get(|| async { json_response(StatusCode::OK, json!({"obj": {"nested": "active"}})) }),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route(
            "/slow",
            get(|| async {
                // The server's own pace, not a synchronisation in the test.
                tokio::time::sleep(Duration::from_millis(600)).await;
                json_response(StatusCode::OK, json!({"s": "active"}))
            }),
        );
    let base = serve(router).await;
    let comp = |name: &str| format!("components: {{{name}_c: {{pointer: /s}}}}");
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: big, type: http, url: "{base}/big", interval: 500ms, max_body: 1KiB, {big}}}
  - {{name: streamed, type: http, url: "{base}/streamed", interval: 500ms, max_body: 5KiB, {streamed}}}
  - {{name: notjson, type: http, url: "{base}/notjson", interval: 500ms, {notjson}}}
  - {{name: html, type: http, url: "{base}/html", interval: 500ms, {html}}}
  - {{name: object, type: http, url: "{base}/object", interval: 500ms,
      components: {{obj_c: {{pointer: /obj}}}}}}
  - {{name: loop, type: http, url: "{base}/loop", interval: 500ms}}
  - {{name: slow, type: http, url: "{base}/slow", interval: 1s, timeout: 2s,
      max_response_time: 200ms, {slow}}}
"#,
        big = comp("big"),
        streamed = comp("streamed"),
        notjson = comp("notjson"),
        html = comp("html"),
        slow = comp("slow"),
    ))
    .await;
    let cases = [
        ("big", "body too large (over 1024 bytes)", "protocol"),
        ("streamed", "body too large (over 5120 bytes)", "protocol"),
        ("notjson", "not JSON", "protocol"),
        (
            "html",
            "wrong content type: text/html; charset=utf-8 (expected application/json)",
            "protocol",
        ),
        ("loop", "too many redirects (more than 5)", "protocol"),
        ("slow", "slow: 0.", "timeout"),
    ];
    for (name, reason, kind) in cases {
        let v = app.wait_for_state(name, "failing", WAIT).await;
        let got = v["reason"].as_str().unwrap_or_default();
        assert!(got.starts_with(reason), "{name}: {got}");
        let m = app.scrape().await;
        assert!(
            source_errors(&m, name, kind) >= 1.0,
            "{name}: no {kind} error counted"
        );
        assert_eq!(app.source(name).await["status"], "up", "{name}");
    }
    assert!(reason_of(&app, "slow").await.ends_with("> 200ms"));
    // Unreadable bodies suppress their components...
    for name in ["big", "streamed", "notjson", "html"] {
        let c = format!("{name}_c");
        app.wait_for_state(&c, "unknown", WAIT).await;
        assert!(
            reason_of(&app, &c)
                .await
                .starts_with("service check failing: "),
            "{c}"
        );
    }
    // ...a slow one with a good body still feeds them.
    app.wait_for_state("slow_c", "healthy", WAIT).await;
    // A pointer on an object: that component is failing, and says why.
    app.wait_for_state("object", "healthy", WAIT).await;
    let obj = app.wait_for_state("obj_c", "failing", WAIT).await;
    assert_eq!(
        obj["reason"], "/obj holds an object, not a status value",
        "{obj}"
    );
    let m = app.scrape().await;
    assert!(source_errors(&m, "object", "bad_value") >= 1.0);
    app.shutdown().await;
}

#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

async fn counted<T>(g: &Gauge, f: impl std::future::Future<Output = T>) -> T {
    let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
    g.max.fetch_max(n, Ordering::SeqCst);
    g.total.fetch_add(1, Ordering::SeqCst);
    let out = f.await;
    g.now.fetch_sub(1, Ordering::SeqCst);
    out
}

#[tokio::test]
async fn per_agent_endpoints_are_probed_with_bounded_concurrency() {
    let gauge = Gauge::default();
    let router = Router::new()
        .route(
            "/health",
            get(|State(g): State<Gauge>| async move {
                counted(&g, async {
                    json_response(StatusCode::OK, json!({"status": "ok"}))
                })
                .await
            }),
        )
        .route(
            "/health/{agent}",
            get(
                |State(g): State<Gauge>, Path(agent): Path<String>| async move {
                    counted(&g, async move {
                        // Each answer takes a moment, so probes overlap.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        if agent == "worker 7" {
                            json_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                json!({"detail": "stuck"}),
                            )
                        } else {
                            json_response(StatusCode::OK, json!({"status": "active"}))
                        }
                    })
                    .await
                },
            ),
        )
        .with_state(gauge.clone());
    let base = serve(router).await;
    let agents: Vec<String> = (0..40).map(|i| format!("\"worker {i}\"")).collect();
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - name: svc
    type: http
    url: {base}/health
    interval: 1s
    concurrency: 4
    agents_url: "{base}/health/{{agent}}"
    agents: [{}]
"#,
        agents.join(", ")
    ))
    .await;
    let bad = app.wait_for_state("worker 7", "failing", WAIT).await;
    assert_eq!(bad["reason"], "reported unhealthy: HTTP 503: stuck");
    for i in [0, 1, 20, 39] {
        app.wait_for_state(&format!("worker {i}"), "healthy", WAIT)
            .await;
    }
    assert_eq!(alerting(&app).await, vec!["worker 7".to_string()]);
    assert!(gauge.total.load(Ordering::SeqCst) >= 41);
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max <= 4, "{max} probes in flight with concurrency 4");
    assert!(max >= 2, "probes never overlapped ({max})");
    app.shutdown().await;
}

#[tokio::test]
async fn per_agent_endpoints_are_unknown_while_the_service_fails() {
    let down = Arc::new(AtomicBool::new(true));
    let router = Router::new()
        .route(
            "/health",
            get(|State(d): State<Arc<AtomicBool>>| async move {
                if d.load(Ordering::SeqCst) {
                    json_response(StatusCode::BAD_GATEWAY, json!({"detail": "upstream"}))
                } else {
                    json_response(StatusCode::OK, json!({}))
                }
            }),
        )
        .route("/agent/{agent}", get(|| async { "ok" }))
        .with_state(down.clone());
    let base = serve(router).await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: svc, type: http, url: "{base}/health", interval: 300ms,
      agents_url: "{base}/agent/{{agent}}", agents: [alpha, beta]}}
"#
    ))
    .await;
    app.wait_for_state("svc", "failing", WAIT).await;
    for id in ["alpha", "beta"] {
        app.wait_for_state(id, "unknown", WAIT).await;
        assert_eq!(
            reason_of(&app, id).await,
            "service check failing: HTTP 502: upstream"
        );
    }
    assert_eq!(alerting(&app).await, vec!["svc".to_string()]);
    down.store(false, Ordering::SeqCst);
    for id in ["svc", "alpha", "beta"] {
        app.wait_for_state(id, "healthy", WAIT).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn zombie_agent_with_a_stale_heartbeat_and_an_active_health_status_is_stale() {
    let url = shared_redis_url();
    let prefix = unique_prefix("http_zombie");
    let r = Builder::from_config(Config::from_url(&url).expect("url"))
        .build()
        .expect("client");
    r.init().await.expect("redis connects");
    let stopped = Utc::now() - TimeDelta::seconds(20);
    r.set::<(), _, _>(
        format!("{prefix}zombie:last_seen"),
        format!("{:.6}", stopped.timestamp_micros() as f64 / 1e6),
        None,
        None,
        false,
    )
    .await
    .expect("SET");
    let base = serve(Router::new().route(
        "/health",
        get(|| async { json_response(StatusCode::OK, json!({"zombie_status": "active"})) }),
    ))
    .await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: redis, type: redis, url: "{url}", interval: 1s, timeout: 1s,
      layout: keys, pattern: "{prefix}{{agent}}:last_seen"}}
  - {{name: svc, type: http, url: "{base}/health", interval: 500ms,
      components: {{zombie: {{pointer: /zombie_status}}}}}}
agents:
  - {{match: "*", stale_after: 3s}}
"#
    ))
    .await;
    let z = app.wait_for_state("zombie", "stale", WAIT).await;
    wait_until("both checks reported", WAIT, || async {
        app.agent("zombie").await.expect("agent")["checks"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    assert!(
        z["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no heartbeat for"),
        "{z}"
    );
    let hb = check_of(&app, "zombie", "redis").await;
    assert_eq!(hb["state"], "stale", "{hb}");
    assert!(
        hb["age_seconds"].as_f64().unwrap_or_default() >= 20.0,
        "{hb}"
    );
    assert_eq!(hb["threshold_seconds"], 3.0);
    let status = check_of(&app, "zombie", "svc").await;
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["reason"], "reported healthy");
    assert_eq!(status["status"]["detail"], "active");
    let _ = r.del::<(), _>(format!("{prefix}zombie:last_seen")).await;
    app.shutdown().await;
}

/// An HTTPS endpoint whose certificate nobody trusts: the service check is
/// failing with a TLS reason and the `tls` kind is counted. The server is a
/// real TLS server (`openssl s_server`) with a self-signed certificate made
/// here.
#[tokio::test]
async fn untrusted_certificate_is_a_failing_service_with_a_tls_reason() {
    use std::process::Command;

    use crate::harness::{free_port, spawn_child, stop_child, wait_until_sync};

    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed for this test (Debian package openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-www", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    let server = spawn_child(cmd, &dir.path().join("s_server.log"), "openssl s_server")
        .expect("openssl s_server starts");
    wait_until_sync("openssl s_server to listen", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: secure, type: http, url: "https://127.0.0.1:{port}/", interval: 500ms}}
"#
    ))
    .await;
    let svc = app.wait_for_state("secure", "failing", WAIT).await;
    let reason = svc["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("not reachable: TLS: "), "{reason}");
    let m = app.scrape().await;
    assert!(
        source_errors(&m, "secure", "tls") >= 1.0,
        "tls errors not counted"
    );
    app.shutdown().await;
    stop_child(server);
}

/// Redirects: by default a probe follows one to the same host (and the
/// configured header goes along), never one to another host (127.0.0.2
/// here, which gets nothing, header included: the check fails on the
/// 302); `redirects: any` follows it, and is refused with headers.
#[tokio::test]
async fn redirects_stay_on_the_same_host_unless_told_and_headers_never_leave_it() {
    // Requests the other host got, and those that carried the header.
    let seen = Arc::new(AtomicUsize::new(0));
    let leaked = Arc::new(AtomicUsize::new(0));
    let (s, l) = (seen.clone(), leaked.clone());
    let other = Router::new().route(
        "/health",
        get(move |h: axum::http::HeaderMap| {
            s.fetch_add(1, Ordering::SeqCst);
            if h.contains_key("x-api-key") {
                l.fetch_add(1, Ordering::SeqCst);
            }
            async { json_response(StatusCode::OK, json!({"status": "ok"})) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let other_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, other).await;
    });
    let keys = Arc::new(AtomicUsize::new(0));
    let k = keys.clone();
    let away = format!("http://{other_addr}/health");
    let service = serve(
        Router::new()
            .route("/moved", get(|| async { Redirect::temporary("/health") }))
            .route(
                "/health",
                get(move |h: axum::http::HeaderMap| {
                    if h.get("x-api-key").is_some_and(|v| v == "k3y") {
                        k.fetch_add(1, Ordering::SeqCst);
                    }
                    async { json_response(StatusCode::OK, json!({"status": "ok"})) }
                }),
            )
            .route(
                "/away",
                get(move || {
                    let away = away.clone();
                    async move { Redirect::temporary(&away) }
                }),
            ),
    )
    .await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
sources:
  - {{name: same, type: http, url: "{service}/moved", interval: 500ms, headers: {{X-Api-Key: k3y}}}}
  - {{name: away, type: http, url: "{service}/away", interval: 500ms, headers: {{X-Api-Key: k3y}}}}
  - {{name: any, type: http, url: "{service}/away", interval: 500ms, redirects: any}}
"#
    ))
    .await;
    app.wait_for_state("same", "healthy", WAIT).await;
    assert!(keys.load(Ordering::SeqCst) >= 1, "the header went along");
    let v = app.wait_for_state("away", "failing", WAIT).await;
    assert!(v["reason"].as_str().unwrap().contains("307"), "{v}");
    app.wait_for_state("any", "healthy", WAIT).await;
    // Only the `any` source reached the other host, without the header.
    assert!(seen.load(Ordering::SeqCst) >= 1);
    assert_eq!(leaked.load(Ordering::SeqCst), 0);
    app.shutdown().await;

    let refused = agent_supervisor::config::parse(
        "sources:\n  - {name: a, type: http, url: \"http://h/\", redirects: any, headers: {X-Api-Key: k}}\n",
        std::path::Path::new("c.yaml"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("sources[0].redirects"), "{refused}");
}
