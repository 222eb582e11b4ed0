//! Secure by default, tried from the outside: the real binary, and a client
//! in a network namespace of its own (another pod, another machine) that
//! reaches it over a veth pair from a non-loopback address.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::NetNs;
use crate::sidecar::Sidecar;

/// `curl` run inside `ns`: the status code (`000`: no connection) and body.
async fn curl(
    ns: &NetNs,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (String, String) {
    let mut c = ns.command("curl");
    c.args([
        "-s",
        "-m",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
    ])
    .args([
        "-H",
        "content-type: application/json",
        "--data-binary",
        body,
    ]);
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    let out = tokio::time::timeout(Duration::from_secs(10), c.stdin(Stdio::null()).output())
        .await
        .expect("curl within 10 s")
        .expect("run curl in the namespace (is curl installed?)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().to_string(), body.to_string())
}

fn port(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

const SILENCE: &str =
    r#"{"matchers": {"agent": "*"}, "duration": "24h", "comment": "mute everything"}"#;

/// The shipped layout (`listen` on every address, `admin_listen` on
/// loopback, no token anywhere): from another address, the metrics and the
/// probes answer, and nobody can push, add a silence or even reach the
/// admin listener.
#[tokio::test]
async fn from_another_address_the_defaults_refuse_every_write() {
    let ns = NetNs::new();
    let sidecar = Sidecar::start("listen: 0.0.0.0:0\nsources: [{name: push, type: push}]\n").await;
    let public = format!("http://{}:{}", ns.host, port(&sidecar.base));
    let admin = format!("http://{}:{}", ns.host, port(&sidecar.admin));
    assert!(
        sidecar.admin.starts_with("http://127.0.0.1:"),
        "{}",
        sidecar.admin
    );

    for path in ["/metrics", "/healthz", "/readyz", "/api/v1/agents"] {
        let (code, _) = curl(&ns, "GET", &format!("{public}{path}"), None, "").await;
        assert_eq!(code, "200", "GET {path} from {}", ns.peer);
    }
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/heartbeats/intruder",
            r#"{"status": "error"}"#,
        ),
        ("POST", "/api/v1/silences", SILENCE),
        ("DELETE", "/api/v1/silences/config-0", ""),
    ] {
        let (code, answer) = curl(&ns, method, &format!("{public}{path}"), None, body).await;
        assert_eq!(code, "403", "{method} {path}: {answer}");
        // The admin port is not even open on that address.
        let (code, _) = curl(&ns, method, &format!("{admin}{path}"), None, body).await;
        assert_eq!(code, "000", "{method} {path} reached the admin listener");
    }
    let agents: Value = serde_json::from_str(&sidecar.get("/api/v1/agents").await).unwrap();
    assert_eq!(agents["agents"], serde_json::json!([]), "{agents}");
    let silences: Value = serde_json::from_str(&sidecar.get("/api/v1/silences").await).unwrap();
    assert_eq!(silences["silences"], serde_json::json!([]), "{silences}");
}

/// An admin listener opened to the network takes writes only with their
/// tokens: without (or with a wrong one, or the other one) 401 and nothing
/// changes; with them, the push and the silence are taken.
#[tokio::test]
async fn an_admin_listener_on_the_network_takes_writes_only_with_their_tokens() {
    let ns = NetNs::new();
    let sidecar = Sidecar::start(
        "listen: 0.0.0.0:0\nadmin_listen: 0.0.0.0:0\napi_token: silence-key\n\
         sources: [{name: push, type: push, token: push-key}]\n",
    )
    .await;
    let admin = format!("http://{}:{}", ns.host, port(&sidecar.admin));
    let push = format!("{admin}/api/v1/heartbeats/worker");
    let silences = format!("{admin}/api/v1/silences");
    for token in [None, Some("wrong"), Some("silence-key")] {
        let (code, body) = curl(&ns, "POST", &push, token, r#"{"status": "error"}"#).await;
        assert_eq!(code, "401", "push with {token:?}: {body}");
    }
    for token in [None, Some("wrong"), Some("push-key")] {
        let (code, body) = curl(&ns, "POST", &silences, token, SILENCE).await;
        assert_eq!(code, "401", "silence with {token:?}: {body}");
    }
    let agents: Value = serde_json::from_str(&sidecar.get("/api/v1/agents").await).unwrap();
    assert_eq!(agents["agents"], serde_json::json!([]), "{agents}");

    let (code, body) = curl(&ns, "POST", &push, Some("push-key"), "{}").await;
    assert_eq!(code, "202", "{body}");
    let (code, body) = curl(&ns, "POST", &silences, Some("silence-key"), SILENCE).await;
    assert_eq!(code, "201", "{body}");
    let listed: Value = serde_json::from_str(&sidecar.get("/api/v1/silences").await).unwrap();
    assert_eq!(
        listed["silences"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// An admin listener off loopback without its tokens is not started at
/// all: `check-config` and `run` exit 64 naming each missing token, before
/// anything binds.
#[test]
fn an_exposed_admin_listener_without_tokens_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 0.0.0.0:{port}\nstate: {{path: false}}\n\
             sources: [{{name: push, type: push}}]\n"
        ),
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let out = std::process::Command::new(crate::sidecar::binary())
            .env_remove("AGENT_SUPERVISOR_CONFIG")
            .args([command, "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {err}");
        assert!(
            err.contains("sources[0].token: required"),
            "{command}: {err}"
        );
        assert!(err.contains("api_token: required"), "{command}: {err}");
        // Nothing was bound.
        assert!(
            std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "{command}"
        );
    }
    // `check-config` of a good config says who can reach what.
    std::fs::write(
        &cfg,
        "state: {path: false}\nsources: [{name: push, type: push}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::sidecar::binary())
        .env_remove("AGENT_SUPERVISOR_CONFIG")
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("listen 0.0.0.0:9464 (reachable from the network)"),
        "{text}"
    );
    assert!(
        text.contains("admin_listen 127.0.0.1:9465 (loopback: this host or pod only): push to `push` (no token), silence writes (no token)"),
        "{text}"
    );
}
