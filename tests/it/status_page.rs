//! The status page, in a real headless Chromium driven over WebDriver
//! (chromedriver, fantoccini), against the real binary with agents in every
//! state; and over plain HTTP for its protection and escaping.
//!
//! Chromium and chromedriver are the Debian packages `chromium` and
//! `chromium-driver` (`.ci/run` installs them): a missing one fails the
//! test, saying so; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::harness::{
    OwnedChild, free_port, poll_until, shared_redis_url, spawn_child, tail_of_log, unique_prefix,
    wait_for, wait_until,
};
use crate::sidecar::Sidecar;
use crate::support::{redis_beat, redis_client, spawn_app};

/// Bound on chromedriver's start and on the browser's session start.
const START: Duration = Duration::from_secs(30);
/// Bound on anything the page is waited for.
const PAGE: Duration = Duration::from_secs(10);

const SCRIPT_ID: &str = "<script>alert(1)</script>";
const SCRIPT_DETAIL: &str = "<img src=x onerror=alert(2)> & \"quoted\"";

/// `name` on the PATH, or a loud failure naming the package.
fn program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the status page tests need the Debian \
                 package `{package}` (bash .ci/run installs it)"
            )
        })
}

/// A headless Chromium under a chromedriver of its own, on a free port,
/// with a private profile; both stop when it is dropped.
struct Browser {
    client: Client,
    _driver: OwnedChild,
    _profile: TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let chromium = program("chromium", "chromium");
        let chromedriver = program("chromedriver", "chromium-driver");
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null());
        let child = spawn_child(cmd, &log, "chromedriver").expect("spawn chromedriver");
        let driver = OwnedChild::new(child, "chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let ready = poll_until(START, Duration::from_millis(50), || {
            let status = http.get(format!("{url}/status")).send();
            async move {
                match status.await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(
            ready,
            "chromedriver did not answer within {START:?}; log:\n{}",
            tail_of_log(&log)
        );
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // The tests run as root, where the sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    "--force-color-profile=srgb",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        // The browser console, read back with `console_errors`.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = tokio::time::timeout(
            START,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url),
        )
        .await
        .unwrap_or_else(|_| panic!("no browser session within {START:?}"))
        .unwrap_or_else(|e| panic!("browser session: {e}; log:\n{}", tail_of_log(&log)));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Click what `locator` finds, then wait until the browser is at a URL
    /// that `arrived` accepts (`what` says which).
    async fn click_to(
        &self,
        locator: Locator<'_>,
        what: &str,
        arrived: impl Fn(&url::Url) -> bool,
    ) {
        let found = self
            .client
            .find(locator)
            .await
            .unwrap_or_else(|e| panic!("find {locator:?}: {e}"));
        found
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {locator:?}: {e}"));
        wait_until(what, PAGE, || async {
            self.client.current_url().await.is_ok_and(|u| arrived(&u))
        })
        .await;
    }

    /// A key pressed on whatever has the focus.
    async fn press(&self, key: Key) {
        self.client
            .active_element()
            .await
            .expect("focused element")
            .send_keys(&key)
            .await
            .unwrap_or_else(|e| panic!("press {key:?}: {e}"));
    }

    /// A property of the focused element (`id`, `className`...).
    async fn focused(&self, property: &str) -> String {
        self.client
            .active_element()
            .await
            .expect("focused element")
            .prop(property)
            .await
            .unwrap_or_else(|e| panic!("{property} of the focused element: {e}"))
            .unwrap_or_default()
    }

    /// The text of every element `css` selects.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
        {
            out.push(e.text().await.unwrap_or_default());
        }
        out
    }

    /// The agent ids listed in the table of `section` (`attention`,
    /// `healthy`).
    async fn listed(&self, section: &str) -> Vec<String> {
        self.texts(&format!("#{section} tbody th a")).await
    }

    /// What the console got at level SEVERE (errors, failed loads, CSP
    /// violations) since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let v = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("read the browser console: {e}"));
        v.as_array()
            .unwrap_or_else(|| panic!("the browser log is not a list: {v}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// A screenshot of the page, `width` wide and as tall as the page (at
    /// most `max_height`).
    async fn screenshot(&self, path: &Path, width: u32, max_height: u32) {
        // The window is the viewport plus the browser's own frame.
        self.client
            .set_window_size(width, 800)
            .await
            .expect("window size");
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollHeight, \
                 window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .expect("page height");
        let page = sizes[0].as_u64().expect("height") as u32;
        let frame = sizes[1].as_u64().unwrap_or(0) as u32;
        self.client
            .set_window_size(width, page.min(max_height) + frame)
            .await
            .expect("window size");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// chromedriver's console log (`POST /session/{id}/se/log`, the log Selenium
/// reads as `get_log("browser")`): not in the W3C protocol, so not in
/// fantoccini either.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.into()),
        )
    }
}

/// Where the screenshots go: `target/tmp/status-page/`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// `path`'s segment for an agent id.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn push(s: &Sidecar, agent: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/heartbeats/{}", s.admin, segment(agent)))
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .await
        .expect("push");
    assert!(r.status().is_success(), "push {agent}: {}", r.status());
}

async fn wait_state(s: &Sidecar, agent: &str, state: &str) -> Value {
    wait_for(&format!("{agent} to be {state}"), PAGE, || async {
        s.agent(&segment(agent))
            .await
            .filter(|a| a["state"] == state)
    })
    .await
}

/// The whole page in a browser: every state listed where it belongs, a
/// stale agent shown within 2 s without a reload, filters and search,
/// transitions on an agent's page, `<script>` shown as text, no console
/// error, and screenshots at desktop and phone width.
#[tokio::test]
async fn the_status_page_in_a_browser() {
    let url = shared_redis_url();
    let prefix = unique_prefix("status_page");
    let redis = redis_client(&url).await;
    let now = chrono::Utc::now();
    redis_beat(&redis, &format!("{prefix}market_analyst"), now).await;
    use fred::interfaces::KeysInterface as _;
    redis
        .set::<(), _, _>(
            format!("{prefix}sentiment_agent"),
            "not a time",
            None,
            None,
            false,
        )
        .await
        .expect("SET");
    let s = Sidecar::start(&format!(
        r#"
startup_grace: 2s
sources:
  - {{name: redis, type: redis, url: "{url}", interval: 500ms, layout: keys, pattern: "{prefix}{{agent}}"}}
  - {{name: push, type: push}}
agents:
  - {{match: "trading_coordinator", stale_after: 3s, labels: {{team: trading, severity: critical}}}}
  - {{match: "portfolio_optimizer", expected: true, labels: {{team: trading}}}}
  - {{match: "*", stale_after: 1h, labels: {{team: research}}}}
"#
    ))
    .await;

    // healthy (Redis and push), failing with a detail, missing (expected,
    // never seen), unknown (a value that is not a time), and the flapping
    // trading_coordinator: healthy, stale, healthy again.
    for agent in ["risk_manager", "execution_agent", "news_scanner"] {
        push(&s, agent, json!({"status": "ok"})).await;
    }
    push(
        &s,
        "order_router",
        json!({"status": "error", "detail": "db pool exhausted"}),
    )
    .await;
    push(
        &s,
        SCRIPT_ID,
        json!({"status": "error", "detail": SCRIPT_DETAIL}),
    )
    .await;
    push(&s, "trading_coordinator", json!({})).await;
    wait_state(&s, "trading_coordinator", "stale").await;
    push(&s, "trading_coordinator", json!({})).await;
    wait_state(&s, "trading_coordinator", "healthy").await;
    wait_state(&s, "market_analyst", "healthy").await;
    wait_state(&s, "order_router", "failing").await;
    wait_state(&s, SCRIPT_ID, "failing").await;
    wait_state(&s, "portfolio_optimizer", "missing").await;
    wait_state(&s, "sentiment_agent", "unknown").await;
    // The JSON API has the transitions too.
    let api = s.agent("trading_coordinator").await.expect("agent");
    let states: Vec<&str> = api["history"]
        .as_array()
        .expect("history in the API")
        .iter()
        .map(|t| t["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["healthy", "stale", "healthy"], "{api}");

    // A silence, shown with its comment.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/silences", s.admin))
        .timeout(Duration::from_secs(5))
        .json(
            &json!({"matchers": {"agent": "order_router"}, "duration": "2h",
                      "comment": "Database migration, back by 14:00", "created_by": "alice"}),
        )
        .send()
        .await
        .expect("silence");
    assert!(r.status().is_success(), "silence: {}", r.status());

    let b = Browser::start(1280, 1100).await;
    // A beat now: the page opens while trading_coordinator is healthy, and
    // watches it go stale 3 s later (opened again after a new beat if the
    // machine was so slow that it went stale before the page showed it).
    let mut seen_healthy = Vec::new();
    for _ in 0..3 {
        push(&s, "trading_coordinator", json!({})).await;
        wait_state(&s, "trading_coordinator", "healthy").await;
        b.goto(&format!("{}/", s.base)).await;
        seen_healthy = b.listed("healthy").await;
        if seen_healthy.iter().any(|a| a == "trading_coordinator") {
            break;
        }
    }
    for agent in ["risk_manager", "market_analyst", "trading_coordinator"] {
        assert!(
            seen_healthy.iter().any(|a| a == agent),
            "{agent} not in {seen_healthy:?}"
        );
    }
    let attention = b.listed("attention").await;
    for agent in [
        "order_router",
        "portfolio_optimizer",
        "sentiment_agent",
        SCRIPT_ID,
    ] {
        assert!(
            attention.iter().any(|a| a == agent),
            "{agent} not in {attention:?}"
        );
    }
    // Worst first.
    assert_eq!(
        attention.first().map(String::as_str),
        Some(SCRIPT_ID),
        "{attention:?}"
    );

    // `<script>` is text: the link says it, no script of it ran (no
    // dialog), the page has its one script only, and the pushed detail is
    // shown as written.
    assert!(
        b.client.get_alert_text().await.is_err(),
        "a dialog opened: an id or a detail ran as script"
    );
    let scripts = b
        .client
        .execute("return document.scripts.length", vec![])
        .await
        .expect("execute");
    assert_eq!(scripts, json!(1));
    let reasons = b.texts("#attention td.reason").await;
    assert!(
        reasons.iter().any(|r| r.contains(SCRIPT_DETAIL)),
        "{reasons:?}"
    );
    assert!(b.client.find(Locator::Css("#attention img")).await.is_err());

    // trading_coordinator stopped beating: listed as needing attention
    // within 2 s of going stale, by the page's own live update (no reload).
    let went = wait_state(&s, "trading_coordinator", "stale").await;
    let since: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(went["since"].clone()).expect("since");
    let shown = poll_until(PAGE, Duration::from_millis(25), || async {
        b.listed("attention")
            .await
            .iter()
            .any(|a| a == "trading_coordinator")
    })
    .await;
    let after = chrono::Utc::now() - since;
    assert!(shown, "the stale agent never appeared on the page");
    assert!(
        after < chrono::TimeDelta::seconds(2),
        "the stale agent appeared {after} after it went stale"
    );
    // Desktop screenshot, taken once the page shows every state.
    let dir = screenshot_dir();
    b.screenshot(&dir.join("desktop.png"), 1280, 2400).await;

    // Filter by state: only failing agents.
    b.goto(&format!("{}/?state=failing", s.base)).await;
    let mut failing = b.listed("attention").await;
    failing.sort();
    assert_eq!(failing, [SCRIPT_ID, "order_router"]);
    assert!(b.listed("healthy").await.is_empty());
    // By keyboard: the first Tab reaches the skip link, Enter moves to the
    // content, the next Tab to the first count by state.
    b.goto(&format!("{}/", s.base)).await;
    b.press(Key::Tab).await;
    assert_eq!(b.focused("innerText").await, "Skip to content");
    b.press(Key::Enter).await;
    assert_eq!(b.focused("id").await, "main");
    b.press(Key::Tab).await;
    assert!(b.focused("className").await.contains("count"));
    // Search with the form: typed, submitted, a link to share.
    b.goto(&format!("{}/", s.base)).await;
    let q = b.client.find(Locator::Id("q")).await.expect("search box");
    q.send_keys("TRADING").await.expect("type");
    b.click_to(
        Locator::Css("form.filters button[type=submit]"),
        "the search to be in the URL",
        |u| u.query().is_some_and(|q| q.contains("q=TRADING")),
    )
    .await;
    assert_eq!(b.listed("attention").await, ["trading_coordinator"]);
    assert!(b.listed("healthy").await.is_empty());
    // By label, from a label chip; by source, from the sources table.
    b.goto(&format!("{}/?label=team%3Dresearch&state=healthy", s.base))
        .await;
    let mut research = b.listed("healthy").await;
    research.sort();
    assert_eq!(
        research,
        [
            "execution_agent",
            "market_analyst",
            "news_scanner",
            "risk_manager"
        ]
    );
    b.goto(&format!("{}/?source=redis", s.base)).await;
    let mut from_redis = b.listed("attention").await;
    from_redis.extend(b.listed("healthy").await);
    from_redis.sort();
    assert_eq!(from_redis, ["market_analyst", "sentiment_agent"]);

    // An agent's page: its transitions, oldest first.
    b.goto(&format!("{}/", s.base)).await;
    b.click_to(
        Locator::LinkText("trading_coordinator"),
        "the agent page to open",
        |u| u.path() == "/agents/trading_coordinator",
    )
    .await;
    // healthy, stale, healthy, stale at least (more if the browser took
    // longer than 3 s to start, between two beats), as the API has them.
    let history = b.texts("ol.history li").await;
    let api = s.agent("trading_coordinator").await.expect("agent");
    assert_eq!(
        Some(history.len()),
        api["history"].as_array().map(Vec::len),
        "{history:?} {api}"
    );
    assert!(history.len() >= 4, "{history:?}");
    let alternating = ["healthy", "stale"].iter().cycle();
    for (entry, state) in history.iter().zip(alternating) {
        assert!(
            entry.contains(state),
            "{entry} should be {state}: {history:?}"
        );
        assert!(entry.contains('Z') && entry.contains("ago"), "{entry}");
    }
    b.screenshot(&dir.join("agent.png"), 1280, 2400).await;
    // The agent with `<script>` in its id has a page of its own too.
    b.goto(&format!("{}/agents/{}", s.base, segment(SCRIPT_ID)))
        .await;
    assert_eq!(b.texts("h1 .id").await, [SCRIPT_ID]);

    // Phone width: the same page, legible, and nothing wider than the
    // screen.
    b.goto(&format!("{}/", s.base)).await;
    b.screenshot(&dir.join("phone.png"), 390, 1800).await;
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await
        .expect("execute");
    assert_eq!(
        overflow,
        json!(false),
        "the page scrolls sideways on a phone"
    );

    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    // And the console is really read: an error written now is there.
    b.client
        .execute("console.error('written by the test')", vec![])
        .await
        .expect("execute");
    let written = b.console_errors().await;
    assert!(
        written.iter().any(|e| e.contains("written by the test")),
        "{written:?}"
    );
    b.close().await;
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
    // A query that cannot be read shows the page, saying so.
    let r = app
        .client
        .get(app.url("/?state=stale&state=failing&q=%ZZ"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("The query was not understood")
    );
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
