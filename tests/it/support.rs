//! `spawn_app` and typed helpers: each test gets its own port and state
//! directory (and its own Redis key prefix where it uses Redis).

use std::path::Path;
use std::time::Duration;

use agent_supervisor::app::{App, AppOptions};
use agent_supervisor::config;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_supervisor::clock::Clock;
use agent_supervisor::core::{AgentFilter, Observation, Reading, SourceFailure, SourceId};
use agent_supervisor::liveness::Liveness;
use agent_supervisor::sources::{PollSource, SourceCtx, SourceError, scan_once};
use agent_supervisor::telemetry::metrics::Metrics;
use tokio::sync::mpsc;

use crate::harness::wait_until;

pub struct TestApp {
    /// `http://` and the address of `listen` (reads).
    pub base: String,
    /// `http://` and the address of `admin_listen` (pushes, silences).
    pub admin: String,
    state_dir: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    cancel: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Build the config from a YAML body (sources, agents...), listening on
/// 127.0.0.1:0 with a fresh state directory.
pub async fn spawn_app(yaml: &str) -> TestApp {
    spawn_app_in(yaml, tempfile::tempdir().expect("tempdir")).await
}

/// The same with a given state directory (to test restarts).
pub async fn spawn_app_in(yaml: &str, state_dir: tempfile::TempDir) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nstate: {{path: \"{}\", flush_interval: 100ms}}\nshutdown_timeout: 5s\n{yaml}",
        state_dir.path().display()
    );
    let config = config::parse(&text, Path::new("test.yaml"), &|_| None)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    let app = App::build(config, AppOptions::default())
        .await
        .expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!(
        "http://127.0.0.1:{}",
        app.admin_port().expect("an admin listener")
    );
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(app.run(cancel.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    TestApp {
        base,
        admin,
        state_dir: Some(state_dir),
        client,
        cancel,
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn state_dir_path(&self) -> std::path::PathBuf {
        self.state_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// `path` on the read listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let code = r.status();
        (code, r.text().await.expect("body"))
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (code, body) = self.get(path).await;
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (code, v)
    }

    /// POST a heartbeat; returns the status code and JSON body.
    pub async fn push(
        &self,
        agent: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.admin_url(&format!("/api/v1/heartbeats/{agent}")));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("push");
        let code = r.status();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON content type and these bytes, with a bearer
    /// token if given.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .post(self.admin_url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("POST")
    }

    pub async fn agent(&self, id: &str) -> Option<Value> {
        let (code, v) = self.get_json(&format!("/api/v1/agents/{id}")).await;
        (code == StatusCode::OK).then(|| v["agent"].clone())
    }

    pub async fn state_of(&self, id: &str) -> Option<String> {
        self.agent(id)
            .await
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// Poll until `id` is in `state`; returns the agent's JSON.
    pub async fn wait_for_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        wait_until(&format!("agent {id} to be {state}"), timeout, || async {
            self.state_of(id).await.as_deref() == Some(state)
        })
        .await;
        self.agent(id).await.expect("agent")
    }

    pub async fn source(&self, name: &str) -> Value {
        let (_, v) = self.get_json("/api/v1/sources").await;
        v["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no source {name} in {v}"))
    }

    pub async fn scrape(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, StatusCode::OK);
        body
    }

    /// Stop like SIGTERM would, and wait for the drain.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("app drains within 10s")
                .expect("app task")
                .expect("app run");
        }
        self.state_dir.take().expect("state dir")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The value of one sample in a scrape, by its exact series text.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// How many errors of `kind` `source` has counted, in a scrape (0 while the
/// series does not exist).
pub fn source_errors(scrape: &str, source: &str, kind: &str) -> f64 {
    sample(
        scrape,
        &format!(r#"agent_supervisor_source_errors_total{{kind="{kind}",source="{source}"}}"#),
    )
    .unwrap_or(0.0)
}

/// A context for driving a source directly, as source `id`.
pub fn source_ctx(id: &str, tx: mpsc::Sender<Observation>) -> SourceCtx {
    SourceCtx {
        id: SourceId::from(id),
        tx: tx.clone(),
        urgent: tx,
        metrics: Arc::new(Metrics::new(0).expect("metrics")),
        clock: Clock::System,
        liveness: Liveness::default(),
    }
}

/// What one `scan_once` delivered.
#[derive(Debug)]
pub struct Scanned {
    pub readings: Vec<Reading>,
    pub batches: usize,
    /// The most readings in one batch.
    pub largest_batch: usize,
    /// Parts of the source that could not be read.
    pub partly_down: Vec<(SourceFailure, AgentFilter)>,
}

impl Scanned {
    /// Readings by agent id; an agent delivered twice fails the test.
    pub fn by_agent(&self) -> BTreeMap<String, Reading> {
        let mut out = BTreeMap::new();
        for r in &self.readings {
            let prev = out.insert(r.agent().to_string(), r.clone());
            assert!(prev.is_none(), "agent {} delivered twice", r.agent());
        }
        out
    }
}

/// One full scan through `scan_once`, the channel (small, so back-pressure
/// is exercised) drained concurrently. Checks that what `scan_once` returns
/// agrees with what it sent.
pub async fn scan_source<S: PollSource>(src: &S, id: &str) -> Result<Scanned, SourceError> {
    let (tx, mut rx) = mpsc::channel(4);
    let ctx = source_ctx(id, tx);
    let collect = async {
        let mut readings = Vec::new();
        let mut batches = 0;
        let mut largest_batch = 0;
        let mut partly_down = Vec::new();
        loop {
            match rx
                .recv()
                .await
                .expect("scan_once ends with ScanComplete or SourceError")
            {
                Observation::Batch { readings: r, .. } => {
                    batches += 1;
                    largest_batch = largest_batch.max(r.len());
                    readings.extend(r);
                }
                Observation::PartlyDown {
                    error, affected, ..
                } => partly_down.push((error, affected)),
                Observation::ScanComplete { .. } => {
                    return Ok(Scanned {
                        readings,
                        batches,
                        largest_batch,
                        partly_down,
                    });
                }
                Observation::SourceError { error, .. } => return Err(error),
                other => panic!("unexpected observation {other:?}"),
            }
        }
    };
    let (result, observed) = tokio::join!(scan_once(src, &ctx), collect);
    match (result, observed) {
        (Ok(n), Ok(scanned)) => {
            assert_eq!(n, scanned.readings.len());
            Ok(scanned)
        }
        (Err(e), Err(failure)) => {
            assert_eq!(failure.kind, e.kind);
            assert_eq!(failure.message, e.to_string());
            Err(e)
        }
        (r, o) => panic!("scan_once returned {r:?} but sent {o:?}"),
    }
}

/// Run SQL (several statements allowed) on a connection of its own.
pub async fn exec(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// A fred client connected to `url`.
pub async fn redis_client(url: &str) -> fred::clients::Client {
    use fred::prelude::*;
    let c = Builder::from_config(Config::from_url(url).expect("url"))
        .build()
        .expect("client");
    c.init().await.expect("redis connects");
    c
}

/// Write a heartbeat (epoch seconds with microseconds) to a string key.
pub async fn redis_beat(c: &fred::clients::Client, key: &str, at: chrono::DateTime<chrono::Utc>) {
    use fred::prelude::*;
    let v = format!("{:.6}", at.timestamp_micros() as f64 / 1e6);
    c.set::<(), _, _>(key, v, None, None, false)
        .await
        .expect("SET");
}
