//! The real sidecar binary as the end-to-end tests run it: a config file in
//! a directory of the test's, its JSON log in a file of its own, its API on
//! the port its start line names. `AGENT_SUPERVISOR_BIN` names another
//! build of it (the fault suite runs the release binary that way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::harness::{OwnedChild, poll_until, spawn_child, tail_of_log};

/// Bound on the sidecar's start-up.
const START: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn binary() -> PathBuf {
    match std::env::var_os("AGENT_SUPERVISOR_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_agent-supervisor")),
    }
}

/// How to run it, beyond the config.
#[derive(Default)]
pub struct Launch {
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
    /// RLIMIT_FSIZE: the largest file it may write (a disk that fills up).
    pub file_size_limit: Option<u64>,
    /// RLIMIT_NOFILE (soft and hard): file descriptors it may open.
    pub open_files_limit: Option<u64>,
}

pub struct Sidecar {
    /// `http://` and the address of `listen`.
    pub base: String,
    /// `http://` and the address of `admin_listen` (empty when it is off).
    pub admin: String,
    client: reqwest::Client,
    /// When its start line was seen (its start-up grace runs from a moment
    /// before).
    pub started: Instant,
    log: PathBuf,
    child: OwnedChild,
    _dir: Option<TempDir>,
}

impl Sidecar {
    /// Started in a directory of its own, its state in `state/` there.
    pub async fn start(config: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sidecar::start_in(dir.path(), "sidecar", config, Launch::default()).await;
        s._dir = Some(dir);
        s
    }

    /// Started with its config, log (`<name>.log`) and state (`state/`) in
    /// `dir`, which outlives it: a second run in the same `dir` finds the
    /// first one's state.
    pub async fn start_in(dir: &Path, name: &str, config: &str, launch: Launch) -> Sidecar {
        let cfg = dir.join(format!("{name}.yaml"));
        // Both listeners on ports of their own unless the config says.
        let mut text = String::new();
        for key in ["listen", "admin_listen"] {
            if !config.lines().any(|l| l.starts_with(&format!("{key}:"))) {
                text.push_str(&format!("{key}: 127.0.0.1:0\n"));
            }
        }
        text.push_str(&format!(
            "state: {{path: \"{}\"}}\n{config}",
            dir.join("state").display()
        ));
        std::fs::write(&cfg, &text).expect("write the config");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(binary());
        cmd.env_remove("AGENT_SUPERVISOR_CONFIG")
            .env_remove("REDIS_URL")
            .env_remove("FAILPOINTS")
            .env("AGENT_SUPERVISOR_LOG", "info")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null());
        if let Some(limit) = launch.file_size_limit {
            limit_file_size(&mut cmd, limit);
        }
        if let Some(limit) = launch.open_files_limit {
            set_rlimit(&mut cmd, libc::RLIMIT_NOFILE, limit);
        }
        let child = spawn_child(cmd, &log, "agent-supervisor").expect("spawn the sidecar");
        let mut child = OwnedChild::new(child, "agent-supervisor");
        let mut listen = None;
        let started = poll_until(START, Duration::from_millis(10), || {
            if let Some(status) = child.child().try_wait().expect("try_wait") {
                panic!(
                    "the sidecar exited at start-up ({status}); config:\n{text}\nlog:\n{}",
                    tail_of_log(&log)
                );
            }
            listen = start_line_listen(&log);
            std::future::ready(listen.is_some())
        })
        .await;
        assert!(
            started,
            "no start line within {START:?}; log:\n{}",
            tail_of_log(&log)
        );
        // reqwest is built without a default rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        Sidecar {
            base: format!("http://{}", listen.as_ref().expect("seen").0),
            admin: match listen.expect("seen").1 {
                Some(a) => format!("http://{a}"),
                None => String::new(),
            },
            client,
            started: Instant::now(),
            log,
            child,
            _dir: None,
        }
    }

    pub async fn get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        let r = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}; log:\n{}", self.log_tail()));
        let code = r.status();
        let body = r.text().await.expect("body");
        assert!(code.is_success(), "GET {url}: {code}: {body}");
        body
    }

    /// Every agent's view (`/api/v1/agents`), by id.
    pub async fn agents(&self) -> BTreeMap<String, Value> {
        let body = self.get("/api/v1/agents").await;
        let v: Value = serde_json::from_str(&body).expect("agents JSON");
        v["agents"]
            .as_array()
            .unwrap_or_else(|| panic!("no agents list in {v}"))
            .iter()
            .map(|a| (a["id"].as_str().expect("id").to_string(), a.clone()))
            .collect()
    }

    /// `GET /api/v1/agents/{id}`: the agent, or `None` while it is unknown
    /// to the sidecar.
    pub async fn agent(&self, id: &str) -> Option<Value> {
        let url = format!("{}/api/v1/agents/{id}", self.base);
        let r = self.client.get(&url).send().await.expect("GET agent");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let v: Value = r.json().await.expect("agent JSON");
        Some(v["agent"].clone())
    }

    /// `GET /api/v1/sources`: the source named `name`.
    pub async fn source(&self, name: &str) -> Value {
        let body = self.get("/api/v1/sources").await;
        let v: Value = serde_json::from_str(&body).expect("sources JSON");
        v["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no source {name} in {v}"))
    }

    /// The sum of the samples of `family` whose labels contain each of
    /// `labels` (`name="value"`).
    pub async fn metric_sum(&self, family: &str, labels: &[&str]) -> f64 {
        let metrics = self.get("/metrics").await;
        metrics
            .lines()
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                    && labels.iter().all(|w| l.contains(w))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// How many times any agent has turned `state` (`transitions_total`).
    pub async fn transitions_to(&self, state: &str) -> f64 {
        self.metric_sum(
            "agent_supervisor_transitions_total",
            &[&format!("to=\"{state}\"")],
        )
        .await
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        tail_of_log(&self.log)
    }

    /// Its resident memory, from /proc.
    pub fn rss_bytes(&mut self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.child().try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL, and reaped.
    /// Its process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        let _ = self.child.child().kill();
        let _ = self.child.child().wait();
    }
}

/// Runs `cmd` with RLIMIT_FSIZE `limit`: no file it writes grows past
/// `limit` bytes (a disk that fills up).
pub fn limit_file_size(cmd: &mut Command, limit: u64) {
    set_rlimit(cmd, libc::RLIMIT_FSIZE, limit);
}

/// Runs `cmd` with `resource` limited to `limit` (soft and hard).
fn set_rlimit(cmd: &mut Command, resource: libc::__rlimit_resource_t, limit: u64) {
    use std::os::unix::process::CommandExt as _;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(resource, &rlimit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The `listen` and `admin_listen` fields of the sidecar's start line,
/// once it is logged (`None` for an admin listener that is off).
fn start_line_listen(log: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        if v["message"] != "agent-supervisor started." {
            return None;
        }
        let listen = v["listen"].as_str()?.to_string();
        let admin = v["admin_listen"]
            .as_str()
            .filter(|a| *a != "off")
            .map(str::to_string);
        Some((listen, admin))
    })
}
