//! A private Prometheus Alertmanager.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    PORT_ATTEMPTS, PortTaken, find_on_path, free_port, kill_and_reap, log_tail, spawn_child,
    stop_child, temp_dir,
};
use super::wait::POLL_INTERVAL;

/// How long a freshly started Alertmanager may take to report ready.
const ALERTMANAGER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one HTTP request to Alertmanager.
const ALERTMANAGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes every alert to the receiver `null`, which has no integrations, so
/// alerts are only stored (and shown by the API), never sent anywhere.
const ALERTMANAGER_CONFIG: &str = "\
route:
  receiver: 'null'
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: 'null'
";

/// A private Prometheus Alertmanager on 127.0.0.1 (clustering off), with its
/// own temporary directory for config, storage and log. Stopped (SIGTERM, then
/// SIGKILL) when dropped; gets SIGKILL if the test process dies.
pub struct AlertmanagerServer {
    pub port: u16,
    base: String,
    client: reqwest::Client,
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl AlertmanagerServer {
    /// Starts `prometheus-alertmanager` (Debian's name) or `alertmanager` on a
    /// free port and waits until `GET /-/ready` answers 200. Panics with the
    /// log tail if the binary is missing or the server does not come up.
    pub async fn start() -> AlertmanagerServer {
        Self::start_with(ALERTMANAGER_CONFIG).await
    }

    /// The same with this `alertmanager.yml`.
    pub async fn start_with(config_text: &str) -> AlertmanagerServer {
        let binary = alertmanager_binary();
        // reqwest is built without a default rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(ALERTMANAGER_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client for Alertmanager: {e}"));
        let dir = temp_dir("alertmanager");
        let config = dir.path().join("alertmanager.yml");
        fs::write(&config, config_text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let storage = dir.path().join("data");
        fs::create_dir(&storage)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", storage.display()));
        let log = dir.path().join("alertmanager.log");
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut cmd = Command::new(&binary);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Empty: no cluster, so no gossip port.
                .arg("--cluster.listen-address=")
                .current_dir(dir.path())
                .stdin(Stdio::null());
            let child = spawn_child(cmd, &log, &format!("alertmanager on port {port}"))
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
            let base = format!("http://127.0.0.1:{port}");
            match wait_alertmanager_ready(child, &client, &base, &log).await {
                Ok(child) => {
                    return AlertmanagerServer {
                        port,
                        base,
                        client,
                        dir,
                        log,
                        child: Some(child),
                    };
                }
                Err(PortTaken) => taken.push(port),
            }
        }
        panic!(
            "alertmanager could not bind any of the ports {taken:?} (another process took each \
             one first); log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds that are not
    /// resolved (its default filters: active, silenced, inhibited and
    /// unprocessed all included). Panics on a non-200 answer.
    pub async fn alerts(&self) -> serde_json::Value {
        self.get_json("/api/v2/alerts").await
    }

    /// `GET` of `path_and_query` (e.g. `/api/v2/alerts?active=true`) as JSON.
    /// Panics on a failed request or a non-200 answer.
    pub async fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let url = format!("{}{path_and_query}", self.base);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}; log:\n{}", log_tail(&self.log)));
        let status = response.status();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        assert_eq!(status, reqwest::StatusCode::OK, "GET {url}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
    }

    /// `POST /api/v2/alerts` with `alerts` (a JSON array of postable alerts).
    /// Panics unless Alertmanager answers 200.
    pub async fn post_alerts(&self, alerts: &serde_json::Value) {
        let url = format!("{}/api/v2/alerts", self.base);
        let response = self
            .client
            .post(&url)
            .json(alerts)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}; log:\n{}", log_tail(&self.log)));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "POST {url} {alerts}: {body}"
        );
    }

    /// Pid of the running server process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's temporary directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for AlertmanagerServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// Polls `GET {base}/-/ready` until it answers 200, watching for an early
/// exit of `child`. Panics with the log tail unless the port was taken.
async fn wait_alertmanager_ready(
    mut child: Child,
    client: &reqwest::Client,
    base: &str,
    log: &Path,
) -> Result<Child, PortTaken> {
    let ready = format!("{base}/-/ready");
    let deadline = Instant::now() + ALERTMANAGER_START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let tail = log_tail(log);
            if tail.contains("address already in use") {
                return Err(PortTaken);
            }
            panic!(
                "alertmanager at {base} exited during startup ({status}); log {}:\n{tail}",
                log.display()
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let request = client
            .get(&ready)
            .timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(2)))
            .send();
        let last = match request.await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(child),
            Ok(r) => format!("GET /-/ready answered {}", r.status()),
            Err(e) => format!("GET /-/ready failed: {e}"),
        };
        if Instant::now() >= deadline {
            kill_and_reap(child, None);
            panic!(
                "alertmanager at {base} was not ready within {ALERTMANAGER_START_TIMEOUT:?} \
                 (last: {last}); log {}:\n{}",
                log.display(),
                log_tail(log)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `prometheus-alertmanager` (Debian's name) or `alertmanager`, on PATH or in
/// /usr/bin, /usr/local/bin.
fn alertmanager_binary() -> PathBuf {
    const NAMES: [&str; 2] = ["prometheus-alertmanager", "alertmanager"];
    NAMES
        .iter()
        .find_map(|name| find_on_path(name))
        .or_else(|| {
            ["/usr/bin", "/usr/local/bin"]
                .iter()
                .flat_map(|dir| NAMES.iter().map(move |name| Path::new(dir).join(name)))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "neither prometheus-alertmanager nor alertmanager found on PATH, in /usr/bin or \
                 in /usr/local/bin: the integration tests start their own Alertmanager. Install \
                 it (Debian/Ubuntu: `apt-get install prometheus-alertmanager`; .ci/run does)"
            )
        })
}
