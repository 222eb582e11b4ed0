//! A private `redis-server`, or the shared one (`REDIS_URL` or started on
//! first use).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    DeathSignal, PortTaken, find_on_path, kill_and_reap, lock, log_tail, next_counter,
    on_a_free_port, random_u32, redirect_output, spawn_tied_to_test_process, temp_dir,
    wait_port_closed,
};
use super::wait::POLL_INTERVAL;
use super::{env_url, register_exit_cleanup};

/// How long a freshly started Redis may take to answer.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to a Redis the harness checks.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on one read or write of such a check.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis key prefix no other test (in this or another test process) uses:
/// `t:{test}:{pid}:{counter}:{random}:`.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "t:{test}:{}:{}:{:08x}:",
        std::process::id(),
        next_counter(),
        random_u32()
    )
}

/// A private `redis-server` on 127.0.0.1, with its own temporary directory.
/// Stopped (SIGKILL) when dropped.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    binary: PathBuf,
    /// Arguments given on top of the usual ones, kept for a restart.
    extra: Vec<String>,
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// [`Self::start`] with more arguments (`--replicaof host port`...).
    pub fn start_with(extra: &[String]) -> RedisServer {
        let binary = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH: the integration tests start their own Redis. \
                 Install it (Debian/Ubuntu: `apt-get install redis-server`)"
            )
        });
        let dir = temp_dir("redis");
        let log = dir.path().join("redis.log");
        let (port, child) = on_a_free_port("redis-server", &log, |port| {
            launch_redis_with(&binary, dir.path(), &log, port, extra)
        });
        RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            binary,
            extra: extra.to_vec(),
            dir,
            log,
            child: Some(child),
        }
    }

    /// Kills the server (SIGKILL), waits for it, and waits until its port
    /// refuses connections. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child, None);
        }
        wait_port_closed("redis-server", self.port);
    }

    /// Starts the server again on the same port, with the same (now empty)
    /// data. Stops it first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        match launch_redis_with(
            &self.binary,
            self.dir.path(),
            &self.log,
            self.port,
            &self.extra,
        ) {
            Ok(child) => self.child = Some(child),
            Err(PortTaken) => panic!(
                "cannot restart redis-server on port {}: another process has bound it since; \
                 log {}:\n{}",
                self.port,
                self.log.display(),
                log_tail(&self.log)
            ),
        }
    }

    /// Pid of the running server process, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child, None);
        }
    }
}

/// Spawns a `redis-server` on `port` and waits until *that* process answers
/// (the pid reported by `INFO server` is checked, so another server that took
/// the port cannot pass for ours). Panics with the log tail on any failure
/// other than the port being taken.
/// Spawns a `redis-server` on `port` with the usual arguments (no
/// persistence, bound to 127.0.0.1) and `extra` (`--cluster-enabled yes`,
/// `--replicaof host port`...), and waits until it answers (see [`launch`]).
pub(super) fn launch_redis_with(
    binary: &Path,
    dir: &Path,
    log: &Path,
    port: u16,
    extra: &[String],
) -> Result<Child, PortTaken> {
    let mut cmd = Command::new(binary);
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--notify-keyspace-events", ""])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null());
    launch("redis-server", cmd, log, port)
}

/// Spawns `cmd` (a server of the Redis family, `what`, to listen on
/// `port`) and waits until *that* process answers `INFO server`. Panics
/// with the log tail on any failure other than the port being taken.
pub(super) fn launch(
    what: &str,
    mut cmd: Command,
    log: &Path,
    port: u16,
) -> Result<Child, PortTaken> {
    redirect_output(&mut cmd, log, &format!("{what} on port {port}"));
    let program = cmd.get_program().to_owned();
    let mut child = spawn_tied_to_test_process(cmd, DeathSignal::Kill)
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", Path::new(&program).display()));
    let pid = child.id();
    let deadline = Instant::now() + REDIS_START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let tail = log_tail(log);
            if tail.contains("Address already in use") {
                return Err(PortTaken);
            }
            panic!(
                "{what} on port {port} exited during startup ({status}); log {}:\n{tail}",
                log.display()
            );
        }
        if redis_server_pid(port) == Some(pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            kill_and_reap(child, None);
            panic!(
                "{what} on port {port} did not answer within {REDIS_START_TIMEOUT:?}; \
                 log {}:\n{}",
                log.display(),
                log_tail(log)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The pid a Redis on 127.0.0.1:`port` reports, if one answers right now.
fn redis_server_pid(port: u16) -> Option<u32> {
    let mut conn = connect(&format!("redis://127.0.0.1:{port}")).ok()?;
    let info: String = ::redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Sends PING to the Redis at `url` (`redis://[user[:password]@]host[:port][/db]`,
/// authenticating first if the URL has a password) and checks for PONG.
pub fn redis_ping(url: &str) -> Result<(), String> {
    let mut conn = connect(url)?;
    let pong: String = ::redis::cmd("PING")
        .query(&mut conn)
        .map_err(|e| format!("PING failed: {e}"))?;
    match pong.as_str() {
        "PONG" => Ok(()),
        other => Err(format!("PING answered {other:?}")),
    }
}

/// A connection to `url` whose connect, reads and writes are bounded.
pub(super) fn connect(url: &str) -> Result<::redis::Connection, String> {
    let client = ::redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
    let conn = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("cannot set socket timeouts: {e}"))?;
    Ok(conn)
}

/// The URL of a Redis shared by the whole test process: `REDIS_URL` if set,
/// otherwise a private server started on first use and stopped at exit. Tests
/// sharing it keep apart by key prefix ([`unique_prefix`]).
pub fn shared_redis_url() -> String {
    if let Some(url) = env_url("REDIS_URL") {
        return url;
    }
    let server = SHARED_REDIS.get_or_init(|| {
        register_exit_cleanup();
        Mutex::new(RedisServer::start())
    });
    lock(server).url.clone()
}

static SHARED_REDIS: OnceLock<Mutex<RedisServer>> = OnceLock::new();

/// Stops the shared server and deletes its directory, at process exit
/// (statics are never dropped). Never blocks on a held lock.
pub(super) fn stop_shared() {
    let Some(redis) = SHARED_REDIS.get() else {
        return;
    };
    let server = match redis.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    if let Some(mut server) = server {
        if let Some(child) = server.child.take() {
            kill_and_reap(child, None);
        }
        let _ = fs::remove_dir_all(server.dir.path());
    }
}
