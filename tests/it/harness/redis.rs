//! A private `redis-server`, or the shared one (`REDIS_URL` or started on
//! first use).

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    DeathSignal, PORT_ATTEMPTS, PortTaken, find_on_path, free_port, kill_and_reap, lock, log_tail,
    next_counter, random_u32, redirect_output, spawn_tied_to_test_process, temp_dir,
    wait_port_closed,
};
use super::wait::POLL_INTERVAL;
use super::{env_url, parse_authority, register_exit_cleanup, split_url};

/// How long a freshly started Redis may take to answer.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

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
    dir: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let binary = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH: the integration tests start their own Redis. \
                 Install it (Debian/Ubuntu: `apt-get install redis-server`)"
            )
        });
        let dir = temp_dir("redis");
        let log = dir.path().join("redis.log");
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match launch_redis(&binary, dir.path(), &log, port) {
                Ok(child) => {
                    return RedisServer {
                        url: format!("redis://127.0.0.1:{port}"),
                        port,
                        binary,
                        dir,
                        log,
                        child: Some(child),
                    };
                }
                Err(PortTaken) => taken.push(port),
            }
        }
        panic!(
            "redis-server could not bind any of the ports {taken:?} (another process took each \
             one first); log {}:\n{}",
            log.display(),
            log_tail(&log)
        );
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
        match launch_redis(&self.binary, self.dir.path(), &self.log, self.port) {
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
fn launch_redis(binary: &Path, dir: &Path, log: &Path, port: u16) -> Result<Child, PortTaken> {
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
        .current_dir(dir)
        .stdin(Stdio::null());
    redirect_output(&mut cmd, log, &format!("redis-server on port {port}"));
    let mut child = spawn_tied_to_test_process(cmd, DeathSignal::Kill)
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
    let pid = child.id();
    let deadline = Instant::now() + REDIS_START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let tail = log_tail(log);
            if tail.contains("Address already in use") {
                return Err(PortTaken);
            }
            panic!(
                "redis-server on port {port} exited during startup ({status}); log {}:\n{tail}",
                log.display()
            );
        }
        if redis_server_pid(port) == Some(pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            kill_and_reap(child, None);
            panic!(
                "redis-server on port {port} did not answer PING within {REDIS_START_TIMEOUT:?}; \
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
    let mut conn = RespConnection::connect(&SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
    match conn.command(&[b"PING"]).ok()? {
        Reply::Simple(s) if s == "PONG" => {}
        _ => return None,
    }
    let Reply::Bulk(Some(info)) = conn.command(&[b"INFO", b"server"]).ok()? else {
        return None;
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Sends PING to the Redis at `url` (`redis://[user[:password]@]host[:port][/db]`,
/// authenticating first if the URL has a password) and checks for PONG.
pub fn redis_ping(url: &str) -> Result<(), String> {
    let parts = split_url(url).ok_or_else(|| format!("not a URL: {url}"))?;
    if parts.scheme != "redis" {
        return Err(format!(
            "only redis:// URLs can be pinged by the harness, not {url}"
        ));
    }
    let auth = parse_authority(parts.authority);
    let port = auth.port.unwrap_or(6379);
    let addrs: Vec<SocketAddr> = (auth.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}:{port}: {e}", auth.host))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{}:{port} resolves to no address", auth.host))?;
    let mut conn =
        RespConnection::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if let Some(password) = &auth.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = auth.user.as_ref().filter(|u| !u.is_empty()) {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        match conn.command(&args) {
            Ok(Reply::Simple(_)) => {}
            Ok(other) => return Err(format!("AUTH to {addr} answered {other:?}")),
            Err(e) => return Err(format!("AUTH to {addr} failed: {e}")),
        }
    }
    match conn.command(&[b"PING"]) {
        Ok(Reply::Simple(s)) if s == "PONG" => Ok(()),
        Ok(other) => Err(format!("PING to {addr} answered {other:?}")),
        Err(e) => Err(format!("PING to {addr} failed: {e}")),
    }
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

/// A minimal RESP client, enough for PING, AUTH and INFO, so the harness
/// needs no Redis client crate.
struct RespConnection {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

impl RespConnection {
    fn connect(addr: &SocketAddr) -> io::Result<RespConnection> {
        let stream = TcpStream::connect_timeout(addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(RespConnection {
            reader: BufReader::new(stream),
        })
    }

    fn command(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => rest.parse().map(Reply::Integer).map_err(invalid),
            "$" => {
                let len: i64 = rest.parse().map_err(invalid)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut data = vec![0u8; len as usize + 2];
                io::Read::read_exact(&mut self.reader, &mut data)?;
                data.truncate(len as usize);
                Ok(Reply::Bulk(Some(data)))
            }
            _ => Err(invalid(format!("unexpected RESP reply {line:?}"))),
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

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
