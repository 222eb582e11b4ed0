//! The Python service the sidecar watches: the FastAPI app of
//! `tests/it/fastapi/app.py` under uvicorn, its agents beating into Redis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::process::{
    PORT_ATTEMPTS, PortTaken, free_port, kill_and_reap, log_tail, spawn_child, temp_dir,
    wait_port_closed,
};
use super::wait::POLL_INTERVAL;

/// How long uvicorn may take to answer `/health`, on top of the app's own
/// `STARTUP_DELAY`.
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one request to the service.
const SERVICE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The Python packages the app imports, as pip names them.
const PACKAGES: &str = "fastapi uvicorn redis";

/// What the service runs with (its environment).
#[derive(Clone, Debug)]
pub struct ServiceSetup {
    /// Agent ids, one asyncio task each.
    pub agents: Vec<String>,
    pub redis_url: String,
    /// Key prefix: the agents write `{prefix}agent:{id}:last_seen`.
    pub prefix: String,
    /// Seconds between two heartbeats of an agent.
    pub beat_every: f64,
    /// Seconds the app's start-up takes before it serves.
    pub startup_delay: f64,
}

/// What the app's `POST /admin/agents/{id}/restart` does for one agent
/// (`POST /test/agents/{id}/restart_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMode {
    /// The default: cancels the agent's task (stuck or not), writes one
    /// heartbeat, starts a fresh task; 200 with `last_seen`.
    Fix,
    /// 200 `{"status": "restarted"}`, and nothing changes.
    Noop,
    /// 500 `{"detail": "restart failed: ..."}`.
    Error,
    /// Never answers (until the client gives up).
    Hang,
}

impl RestartMode {
    fn as_str(self) -> &'static str {
        match self {
            RestartMode::Fix => "fix",
            RestartMode::Noop => "noop",
            RestartMode::Error => "error",
            RestartMode::Hang => "hang",
        }
    }
}

/// One call the app received on `/admin/...`, recorded before it did
/// anything (`GET /test/calls`).
#[derive(Clone, Debug, Deserialize)]
pub struct AdminCall {
    pub method: String,
    /// e.g. `/admin/agents/a1/restart`.
    pub path: String,
    pub agent: String,
    /// When the app received it, epoch seconds.
    pub at: f64,
    /// The request body as text (empty if none).
    pub body: String,
    /// The `Authorization` header's value.
    pub authorization: Option<String>,
}

#[derive(Deserialize)]
struct Calls {
    calls: Vec<AdminCall>,
}

/// A uvicorn process serving the app on 127.0.0.1, with its own temporary
/// directory for its log. Stopped (SIGKILL) when dropped; gets SIGKILL if the
/// test process dies. It can be stopped and started again on the same port.
pub struct PythonService {
    pub port: u16,
    setup: ServiceSetup,
    base: String,
    client: reqwest::Client,
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl PythonService {
    /// Starts the app on a free port and waits until `/health` answers.
    pub async fn start(setup: ServiceSetup) -> PythonService {
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut service = PythonService::spawn_on(setup.clone(), free_port());
            match service.wait_started().await {
                Ok(()) => return service,
                Err(PortTaken) => taken.push(service.port),
            }
        }
        panic!(
            "uvicorn could not bind any of the ports {taken:?} (another process took each one \
             first)"
        );
    }

    /// Starts the app on `port` without waiting for it (a slow boot answers
    /// `STARTUP_DELAY` later): [`PythonService::wait_ready`] waits.
    pub fn spawn_on(setup: ServiceSetup, port: u16) -> PythonService {
        require_packages();
        // reqwest is built without a default rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(SERVICE_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client for the service: {e}"));
        let dir = temp_dir("fastapi");
        let log = dir.path().join("uvicorn.log");
        let mut service = PythonService {
            port,
            setup,
            base: format!("http://127.0.0.1:{port}"),
            client,
            dir,
            log,
            child: None,
        };
        service.launch();
        service
    }

    /// Starts the app again on the same port, without waiting for it.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "the service on port {} is still running",
            self.port
        );
        self.launch();
    }

    fn launch(&mut self) {
        let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fastapi");
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "uvicorn", "app:app", "--app-dir"])
            .arg(&app_dir)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .env("AGENTS", self.setup.agents.join(","))
            .env("REDIS_URL", &self.setup.redis_url)
            .env("PREFIX", &self.setup.prefix)
            .env("BEAT_EVERY", self.setup.beat_every.to_string())
            .env("STARTUP_DELAY", self.setup.startup_delay.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        let header = format!("uvicorn on port {}", self.port);
        let child = spawn_child(cmd, &self.log, &header)
            .unwrap_or_else(|e| panic!("cannot spawn python3 (uvicorn): {e}"));
        self.child = Some(child);
    }

    /// Waits until `/health` answers 200; panics with the log tail if it has
    /// not within the start-up delay plus 30 s, or if the process exits.
    pub async fn wait_ready(&mut self) {
        if self.wait_started().await.is_err() {
            panic!(
                "uvicorn cannot bind port {}: another process has it; log {}:\n{}",
                self.port,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }

    async fn wait_started(&mut self) -> Result<(), PortTaken> {
        let timeout = SERVICE_START_TIMEOUT + Duration::from_secs_f64(self.setup.startup_delay);
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("the service was launched")
                .try_wait()
                .ok()
                .flatten();
            if let Some(status) = exited {
                self.child = None;
                let tail = log_tail(&self.log);
                if tail.contains("address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "uvicorn on port {} exited during start-up ({status}); log {}:\n{tail}",
                    self.port,
                    self.log.display()
                );
            }
            let last = match self.health().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "the service on port {} did not answer /health within {timeout:?} (last: \
                     {last}); log {}:\n{}",
                    self.port,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `GET /health`: the body of a 200 answer, or what went wrong.
    pub async fn health(&self) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .map_err(|e| format!("GET /health failed: {e}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET /health: reading the body: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("GET /health answered {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET /health: not JSON ({e}): {body}"))
    }

    /// SIGTERM (uvicorn's graceful shutdown: the agents' tasks are
    /// cancelled), then waits until it has exited and its port is closed.
    pub fn terminate(&mut self) {
        self.stop_with(Some(libc::SIGTERM));
    }

    /// SIGKILL: a crash. Waits until it is gone and its port is closed.
    pub fn kill(&mut self) {
        self.stop_with(None);
    }

    fn stop_with(&mut self, signal: Option<libc::c_int>) {
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("the service on port {} is not running", self.port));
        kill_and_reap(child, signal);
        wait_port_closed("uvicorn", self.port);
    }

    /// `POST /admin/agents/{id}/stop`: the agent's task stops beating.
    pub async fn stop_agent(&self, id: &str) {
        self.admin(id, "stop").await;
    }

    /// `POST /admin/agents/{id}/start`: the agent writes a heartbeat and
    /// beats again; returns that first heartbeat's time (epoch seconds).
    pub async fn start_agent(&self, id: &str) -> f64 {
        let body = self.admin(id, "start").await;
        body["last_seen"]
            .as_f64()
            .unwrap_or_else(|| panic!("start of {id}: no last_seen in {body}"))
    }

    async fn admin(&self, id: &str, action: &str) -> Value {
        self.test_request(
            reqwest::Method::POST,
            &format!("/admin/agents/{id}/{action}"),
            None,
        )
        .await
    }

    /// `POST /test/agents/{agent}/stick`: the agent's task stays alive but
    /// stops beating; `/health` still says "active". The agent must be
    /// running.
    pub async fn stick(&self, agent: &str) {
        self.test_request(
            reqwest::Method::POST,
            &format!("/test/agents/{agent}/stick"),
            None,
        )
        .await;
    }

    /// `POST /test/agents/{agent}/restart_mode`: what the agent's
    /// `/admin/agents/{agent}/restart` does from now on.
    pub async fn set_restart_mode(&self, agent: &str, mode: RestartMode) {
        self.test_request(
            reqwest::Method::POST,
            &format!("/test/agents/{agent}/restart_mode"),
            Some(json!({ "mode": mode.as_str() })),
        )
        .await;
    }

    /// `POST /test/agents/{agent}/report_size`: the agent's status report
    /// (`GET /admin/agents/{agent}/status`) gets a `padding` field of
    /// `bytes` characters (0: none).
    pub async fn set_report_size(&self, agent: &str, bytes: usize) {
        self.test_request(
            reqwest::Method::POST,
            &format!("/test/agents/{agent}/report_size"),
            Some(json!({ "bytes": bytes })),
        )
        .await;
    }

    /// `POST /test/health`: the top-level `"status"` of `/health` (`"ok"`,
    /// the default, or `"error"`); the status code is unchanged.
    pub async fn set_health(&self, status: &str) {
        self.test_request(
            reqwest::Method::POST,
            "/test/health",
            Some(json!({ "status": status })),
        )
        .await;
    }

    /// `POST /test/health`: the status code `/health` answers with (200 by
    /// default); its body is unchanged. Note that [`PythonService::health`]
    /// (and so the start-up wait) wants a 200.
    pub async fn set_health_http_status(&self, code: u16) {
        self.test_request(
            reqwest::Method::POST,
            "/test/health",
            Some(json!({ "http_status": code })),
        )
        .await;
    }

    /// `GET /test/calls`: every `/admin/...` call the app received since it
    /// started or since [`PythonService::clear_calls`], in order.
    pub async fn calls(&self) -> Vec<AdminCall> {
        let body = self
            .test_request(reqwest::Method::GET, "/test/calls", None)
            .await;
        serde_json::from_value::<Calls>(body.clone())
            .unwrap_or_else(|e| panic!("GET /test/calls: unexpected shape ({e}): {body}"))
            .calls
    }

    /// `DELETE /test/calls`: forgets the recorded calls.
    pub async fn clear_calls(&self) {
        self.test_request(reqwest::Method::DELETE, "/test/calls", None)
            .await;
    }

    /// A request to the service (test control or admin); panics (with the
    /// log tail) unless it answers 200 with JSON.
    async fn test_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}; log:\n{}", log_tail(&self.log)));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::OK, "{method} {url}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"))
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A URL under `/admin/`: `admin_url("agents/a1/restart")` (or
    /// `"/agents/a1/restart"`) is
    /// `http://127.0.0.1:PORT/admin/agents/a1/restart`; a template such as
    /// `"agents/{agent}/restart"` is kept as it is.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}/admin/{}", self.base, path.trim_start_matches('/'))
    }

    /// Pid of the running uvicorn process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the service's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for PythonService {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child, None);
        }
    }
}

/// Panics, saying what to install, unless python3 can import the app's
/// packages.
fn require_packages() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(check_packages);
}

fn check_packages() {
    let check = Command::new("python3")
        .args(["-c", "import fastapi, uvicorn, redis.asyncio"])
        .stdin(Stdio::null())
        .output();
    match check {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the FastAPI test service needs Python packages that python3 cannot import ({}). \
             Install them: `python3 -m pip install {PACKAGES}` (.ci/run does)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "python3 not found ({e}): the FastAPI test service needs it, with `python3 -m pip \
             install {PACKAGES}`"
        ),
    }
}
