//! The status page over plain HTTP: its protection and its escaping.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::wait_until;
use crate::support::spawn_app;

/// Bound on anything the page is waited for.
const PAGE: Duration = Duration::from_secs(10);

const SCRIPT_ID: &str = "<script>alert(1)</script>";
const SCRIPT_DETAIL: &str = "<img src=x onerror=alert(2)> & \"quoted\"";

/// `path`'s segment for an agent id.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// With `read_token`, the page and its files need it like the JSON API
/// (as a Bearer token, or as a Basic password, which a browser asks for);
/// `/metrics` and the probes do not.
#[tokio::test]
async fn the_status_page_needs_the_read_token_when_one_is_set() {
    let app = spawn_app(
        r#"
read_token: reader
sources: [{name: push, type: push}]
"#,
    )
    .await;
    for path in ["/", "/agents/x", "/static/status.css", "/?state=stale"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic "), "{path}: {challenge}");
        let r = app
            .client
            .get(app.url(path))
            .basic_auth("anyone", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        for req in [
            app.client
                .get(app.url(path))
                .basic_auth("anyone", Some("reader")),
            app.client.get(app.url(path)).bearer_auth("reader"),
        ] {
            let code = req.send().await.unwrap().status();
            assert!(
                code == StatusCode::OK || (path == "/agents/x" && code == StatusCode::NOT_FOUND),
                "{path}: {code}"
            );
        }
    }
    // The page's script polls the API with the browser's Basic credentials.
    let r = app
        .client
        .get(app.url("/api/v1/agents?limit=1"))
        .basic_auth("", Some("reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // Read-only: no form or method changes anything on this listener.
    let r = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Every string from outside is escaped: an id and a detail with markup
/// come out as text in the HTML itself, and the page allows no inline
/// script whatever it holds.
#[tokio::test]
async fn the_status_page_escapes_what_it_shows() {
    let app = spawn_app(
        r#"
sources: [{name: push, type: push}]
agents: [{match: "*", labels: {team: "<b>bold</b>"}}]
"#,
    )
    .await;
    let (code, _) = app
        .push(
            &segment(SCRIPT_ID),
            Some(json!({"status": "<i>bad</i>", "detail": SCRIPT_DETAIL})),
            None,
        )
        .await;
    assert!(code.is_success(), "{code}");
    app.wait_for_state(&segment(SCRIPT_ID), "failing", PAGE)
        .await;
    let r = app
        .post_raw(
            "/api/v1/silences",
            serde_json::to_vec(&json!({"matchers": {"agent": "<u>*"}, "duration": "1h",
                                       "comment": "<s>why</s>", "created_by": "<em>me</em>"}))
            .unwrap(),
            None,
        )
        .await;
    assert!(r.status().is_success(), "silence: {}", r.status());
    wait_until("the silence to be listed", PAGE, || async {
        app.get("/api/v1/silences").await.1.contains("<s>why</s>")
    })
    .await;
    for path in ["/".to_string(), format!("/agents/{}", segment(SCRIPT_ID))] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(r.headers().contains_key("server-timing"));
        let html = r.text().await.unwrap();
        for raw in [
            "<script>alert",
            "<img src=x",
            "<b>bold",
            "<i>bad",
            "<s>why",
            "<em>me",
            "<u>*",
        ] {
            assert!(!html.contains(raw), "{path}: {raw} unescaped");
        }
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quoted&quot;"),
            "{path}"
        );
        assert_eq!(
            html.matches("<script").count(),
            1,
            "{path}: one script, the page's own"
        );
    }
}
