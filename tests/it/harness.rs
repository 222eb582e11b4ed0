//! Real servers for the integration tests.
//!
//! Rules this module follows, and that tests built on it should follow too:
//!
//! * Real servers only, no mocks: a private `redis-server` and a private
//!   PostgreSQL cluster (and, on request, a private Alertmanager) are started
//!   from the binaries installed on the machine.
//! * A missing server binary fails the test loudly, saying what to install; it
//!   never skips.
//! * Nothing synchronises with a bare sleep: every wait is a bounded poll with a
//!   deadline that panics with a message saying what it was waiting for.
//!
//! Environment:
//!
//! * `REDIS_URL` set: [`shared_redis_url`] returns it instead of starting a
//!   private server.
//! * `DATABASE_URL` set: [`shared_postgres`] uses it as the admin URL instead of
//!   starting a private cluster.
//!
//! Lifetime of the servers:
//!
//! * Every server process is spawned from one long-lived helper thread with
//!   `PR_SET_PDEATHSIG` set in the child (SIGKILL for Redis, SIGQUIT, i.e.
//!   PostgreSQL's "immediate shutdown", for the postmaster). The kernel sends
//!   that signal when the *thread* that forked the child exits, which is why
//!   the spawning is not done from the (short-lived) test threads. So a test
//!   process that dies, however it dies, takes its servers with it.
//! * [`RedisServer`], [`PostgresServer`] and [`AlertmanagerServer`] values
//!   stop their server on drop.
//! * The shared servers live in statics that are never dropped; an `atexit`
//!   handler stops them and deletes their temporary directories when the test
//!   process exits normally (which is also what it does after a failed test).
//!
//! PostgreSQL refuses to run as root. When the tests run as uid 0, `initdb` and
//! `postgres` run as the `postgres` OS user (or `nobody` where that user does
//! not exist), switched to in the child with `setgid`/`setuid`, and the
//! cluster's temporary directory is handed to that user.
// Not every test binary uses every helper.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError, TryLockError, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Interval between two checks of a bounded poll.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long a freshly started Redis may take to answer.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a freshly started postmaster may take to accept connections.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to exit and release its port.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports to try when another process takes ours first.
const PORT_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `f` every 25 ms until it returns `true`; panics naming `what` if that
/// has not happened within `timeout`.
///
/// The deadline is measured on the real clock. Each check is also bounded by the
/// time left (with `tokio::time::timeout`), so a check that hangs fails the wait
/// instead of hanging the test.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut checks = 0u64;
    loop {
        checks += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, f()).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => panic!(
                "timed out after {timeout:?} waiting until {what} \
                 (check #{checks} was still running at the deadline)"
            ),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out after {timeout:?} waiting until {what} ({checks} checks, all false)");
        }
        tokio::time::sleep(POLL_INTERVAL.min(left)).await;
    }
}

/// Blocking variant of [`wait_until`]. The check itself must be bounded: it is
/// not interrupted at the deadline.
#[track_caller]
pub fn wait_until_sync<F>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut checks = 0u64;
    loop {
        checks += 1;
        if f() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out after {timeout:?} waiting until {what} ({checks} checks, all false)");
        }
        std::thread::sleep(POLL_INTERVAL.min(left));
    }
}

// ---------------------------------------------------------------------------
// Ports, names
// ---------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 that was free a moment ago (found by binding port 0).
/// Never returns the same port twice within one test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("cannot bind a TCP port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the address of a bound socket: {e}"))
            .port();
        drop(listener);
        if lock(&HANDED_OUT).insert(port) {
            return port;
        }
    }
    panic!("could not find a free TCP port on 127.0.0.1 that was not already handed out");
}

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

fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn random_u32() -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u64(next_counter());
    hasher.finish() as u32
}

/// Reads an environment variable holding a URL; unset and empty are the same.
fn env_url(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

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

/// The port a server was asked to listen on was bound by someone else first.
struct PortTaken;

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

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// A PostgreSQL server to create per-test databases in: either a private
/// cluster started by the harness, or the server at `DATABASE_URL`.
pub struct PostgresServer {
    /// URL of a superuser connection to the server's maintenance database.
    pub admin_url: String,
    pub port: u16,
    /// `None` when the server is the one at `DATABASE_URL`.
    cluster: Option<Cluster>,
}

/// A private cluster: its directory, and its postmaster while running.
struct Cluster {
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: TempDir,
    data: PathBuf,
    log: PathBuf,
    /// Extra `-c name=value` settings.
    settings: Vec<String>,
    postmaster: Mutex<Option<Child>>,
}

/// What [`PostgresServer::start_with`] changes in a private cluster.
#[derive(Default, Clone)]
pub struct PostgresSetup {
    /// `name=value` server settings (`ssl=on`).
    pub settings: Vec<String>,
    /// The whole `pg_hba.conf`, replacing initdb's (trust for everyone).
    pub hba: Option<String>,
    /// Files written into the data directory: name, contents, mode.
    pub files: Vec<(String, Vec<u8>, u32)>,
}

/// The PostgreSQL server shared by the whole test process: the one at
/// `DATABASE_URL` if set, otherwise a private cluster started on first use and
/// stopped at exit. Tests keep apart by database
/// ([`PostgresServer::create_database`]).
pub fn shared_postgres() -> &'static PostgresServer {
    SHARED_POSTGRES.get_or_init(|| match env_url("DATABASE_URL") {
        Some(url) => PostgresServer::external(url),
        None => {
            register_exit_cleanup();
            PostgresServer::start()
        }
    })
}

static SHARED_POSTGRES: OnceLock<PostgresServer> = OnceLock::new();

impl PostgresServer {
    /// Uses an existing server; `admin_url` must allow `CREATE DATABASE`.
    pub fn external(admin_url: String) -> PostgresServer {
        let port = split_url(&admin_url)
            .and_then(|p| parse_authority(p.authority).port)
            .unwrap_or(5432);
        PostgresServer {
            admin_url,
            port,
            cluster: None,
        }
    }

    /// Creates a private cluster with `initdb` in a temporary directory and
    /// starts a postmaster for it on a free 127.0.0.1 port (trust auth,
    /// superuser `postgres`, fsync off). The cluster is deleted on drop.
    pub fn start() -> PostgresServer {
        PostgresServer::start_with(&PostgresSetup::default())
    }

    /// Like [`PostgresServer::start`], with extra server settings, a
    /// `pg_hba.conf` of its own and files placed in the data directory (owned
    /// by the server's OS user, e.g. a TLS key), all before the first start.
    pub fn start_with(setup: &PostgresSetup) -> PostgresServer {
        let bin_dir = postgres_bin_dir();
        let run_as = postgres_os_user();
        let dir = temp_dir("pg");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "cannot hand {} to uid {uid} for PostgreSQL: {e}",
                    dir.path().display()
                )
            });
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        run_initdb(&bin_dir, run_as, dir.path(), &data);
        let mut files: Vec<(&str, &[u8], u32)> = setup
            .files
            .iter()
            .map(|(n, b, m)| (n.as_str(), b.as_slice(), *m))
            .collect();
        if let Some(hba) = &setup.hba {
            files.push(("pg_hba.conf", hba.as_bytes(), 0o600));
        }
        for (name, bytes, mode) in files {
            use std::os::unix::fs::PermissionsExt as _;
            let path = data.join(name);
            fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
            }
        }
        let cluster = Cluster {
            bin_dir,
            run_as,
            dir,
            data,
            log,
            settings: setup.settings.clone(),
            postmaster: Mutex::new(None),
        };
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match cluster.launch(port) {
                Ok(child) => {
                    *lock(&cluster.postmaster) = Some(child);
                    return PostgresServer {
                        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        port,
                        cluster: Some(cluster),
                    };
                }
                Err(PortTaken) => taken.push(port),
            }
        }
        panic!(
            "postgres could not bind any of the ports {taken:?} (another process took each one \
             first); log {}:\n{}",
            cluster.log.display(),
            log_tail(&cluster.log)
        );
    }

    /// Stops the private cluster's postmaster (immediate shutdown) and waits
    /// until its port refuses connections. Panics for a server at
    /// `DATABASE_URL`, which the harness does not control.
    pub fn stop(&mut self) {
        let port = self.port;
        self.private_cluster("stop").shutdown();
        wait_port_closed("postgres", port);
    }

    /// Starts the private cluster again on the same port, with its data.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        let cluster = self.private_cluster("restart");
        match cluster.launch(port) {
            Ok(child) => *lock(&cluster.postmaster) = Some(child),
            Err(PortTaken) => panic!(
                "cannot restart postgres on port {port}: another process has bound it since; \
                 log {}:\n{}",
                cluster.log.display(),
                log_tail(&cluster.log)
            ),
        }
    }

    fn private_cluster(&self, action: &str) -> &Cluster {
        self.cluster.as_ref().unwrap_or_else(|| {
            panic!(
                "cannot {action} the PostgreSQL server at DATABASE_URL: the harness only controls \
                 servers it started (use PostgresServer::start())"
            )
        })
    }

    /// Creates a fresh, uniquely named database for `test` and returns its URL.
    pub async fn create_database(&self, test: &str) -> String {
        use sqlx::Connection as _;

        let name = unique_database_name(test);
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to PostgreSQL at {} to create a test database: {e}",
                    self.admin_url
                )
            });
        // `name` is made of [a-z0-9_] only, see unique_database_name.
        let sql = format!("CREATE DATABASE \"{name}\"");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                // 55006 object_in_use: someone is connected to the template
                // database right now; that passes.
                Err(e) if sqlstate(&e).as_deref() == Some("55006") && Instant::now() < deadline => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(e) => panic!("{sql} failed on {}: {e}", self.admin_url),
            }
        }
        let _ = conn.close().await;
        let parts = split_url(&self.admin_url)
            .unwrap_or_else(|| panic!("admin URL is not a URL: {}", self.admin_url));
        format!(
            "{}://{}/{name}{}",
            parts.scheme, parts.authority, parts.rest
        )
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            cluster.shutdown();
        }
    }
}

impl Cluster {
    /// Spawns the postmaster on `port` and waits until it accepts connections.
    fn launch(&self, port: u16) -> Result<Child, PortTaken> {
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        as_user(&mut cmd, self.run_as);
        redirect_output(&mut cmd, &self.log, &format!("postgres on port {port}"));
        let mut child = spawn_tied_to_test_process(cmd, DeathSignal::Quit)
            .unwrap_or_else(|e| panic!("cannot spawn {}/postgres: {e}", self.bin_dir.display()));
        let pid = child.id();
        let deadline = Instant::now() + POSTGRES_START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                let tail = log_tail(&self.log);
                if tail.contains("could not bind") || tail.contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "postgres on port {port} exited during startup ({status}); log {}:\n{tail}",
                    self.log.display()
                );
            }
            if postmaster_ready(&self.data, pid)
                && TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(500),
                )
                .is_ok()
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child, None);
                panic!(
                    "postgres on port {port} was not ready within {POSTGRES_START_TIMEOUT:?}; \
                     log {}:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Immediate shutdown (SIGQUIT), SIGKILL if that takes too long.
    fn shutdown(&self) {
        let child = match self.postmaster.try_lock() {
            Ok(mut guard) => guard.take(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(child) = child {
            kill_and_reap(child, Some(libc::SIGQUIT));
        }
    }
}

/// `postmaster.pid` names `pid` and says "ready" (its 8th line, the same file
/// `pg_ctl start -w` watches).
fn postmaster_ready(data: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

fn run_initdb(bin_dir: &Path, run_as: Option<(u32, u32)>, dir: &Path, data: &Path) {
    let log = dir.join("initdb.log");
    let mut cmd = Command::new(bin_dir.join("initdb"));
    cmd.arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync"])
        .args(["-E", "UTF8", "--locale=C"])
        .current_dir(dir)
        .stdin(Stdio::null());
    as_user(&mut cmd, run_as);
    redirect_output(&mut cmd, &log, "initdb");
    let mut child = spawn_tied_to_test_process(cmd, DeathSignal::Kill)
        .unwrap_or_else(|e| panic!("cannot spawn {}/initdb: {e}", bin_dir.display()));
    let deadline = Instant::now() + INITDB_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => panic!(
                "initdb failed ({status}); log {}:\n{}",
                log.display(),
                log_tail(&log)
            ),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for initdb: {e}"),
        }
        if Instant::now() >= deadline {
            kill_and_reap(child, None);
            panic!(
                "initdb did not finish within {INITDB_TIMEOUT:?}; log {}:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The directory holding `initdb` and `postgres`: the highest version under
/// `/usr/lib/postgresql/*/bin` (Debian's layout), else wherever `initdb` on
/// PATH lives.
fn postgres_bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Some(bin) = find_on_path("initdb")
        .and_then(|p| fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|dir| has_server(dir))
    {
        return bin;
    }
    panic!(
        "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin \
         or on PATH: the integration tests start their own PostgreSQL. Install them \
         (Debian/Ubuntu: `apt-get install postgresql`)"
    );
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user,
/// or as `nobody` where there is no such user. `None`: run as ourselves.
fn postgres_os_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = lookup_user("postgres")
        .or_else(|| lookup_user("nobody"))
        .unwrap_or_else(|| {
            panic!(
                "running as root, and neither a `postgres` nor a `nobody` OS user exists to run \
                 PostgreSQL as (it refuses to run as root); install the postgresql package, \
                 which creates the `postgres` user"
            )
        });
    Some(user)
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value to
    // be overwritten by getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf.len() is its size.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

fn as_user(cmd: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        // std drops the supplementary groups too when it switches from root.
        cmd.gid(gid).uid(uid);
    }
}

/// A database name of [a-z0-9_] only, at most 63 bytes, unique across test
/// processes: `t_{test}_{pid}_{counter}_{random}`.
fn unique_database_name(test: &str) -> String {
    let test: String = test
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .take(30)
        .collect();
    format!(
        "t_{test}_{}_{}_{:08x}",
        std::process::id(),
        next_counter(),
        random_u32()
    )
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

// ---------------------------------------------------------------------------
// Alertmanager
// ---------------------------------------------------------------------------

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
        let binary = alertmanager_binary();
        // reqwest is built without a default rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(ALERTMANAGER_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client for Alertmanager: {e}"));
        let dir = temp_dir("alertmanager");
        let config = dir.path().join("alertmanager.yml");
        fs::write(&config, ALERTMANAGER_CONFIG)
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

// ---------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------

struct UrlParts<'a> {
    scheme: &'a str,
    authority: &'a str,
    /// Without the leading '/'.
    path: &'a str,
    /// `?query#fragment`, or "".
    rest: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let (path, rest) = match tail.find(['?', '#']) {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    Some(UrlParts {
        scheme,
        authority,
        path: path.trim_start_matches('/'),
        rest,
    })
}

struct Authority {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
}

fn parse_authority(authority: &str) -> Authority {
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':')) {
        Some(Some((u, p))) => (Some(percent_decode(u)), Some(percent_decode(p))),
        Some(None) => (userinfo.map(percent_decode), None),
        None => (None, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (v6, None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    Authority {
        user,
        password,
        host: if host.is_empty() { "127.0.0.1" } else { host }.to_owned(),
        port: port.and_then(|p| p.parse().ok()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' {
            s.get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            None
        };
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Signal the kernel sends a server when the test process dies.
#[derive(Clone, Copy)]
enum DeathSignal {
    Kill,
    /// PostgreSQL's immediate shutdown: the postmaster stops its backends
    /// and removes its shared memory before exiting.
    Quit,
}

/// Spawns `cmd` so that its process gets `signal` when the test process dies.
///
/// `PR_SET_PDEATHSIG` fires when the thread that forked the child exits, not
/// the process, so the fork happens on a dedicated thread that lives as long as
/// the test process (test threads and tokio's blocking threads come and go).
fn spawn_tied_to_test_process(mut cmd: Command, signal: DeathSignal) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        let signal = match signal {
            DeathSignal::Kill => libc::SIGKILL,
            DeathSignal::Quit => libc::SIGQUIT,
        };
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                // Runs after std's setgid/setuid, which would clear it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The test process may have died before the prctl.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = signal;

    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("test-server-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the thread that spawns test servers");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("the thread that spawns test servers is gone");
    reply_rx
        .recv()
        .expect("the thread that spawns test servers is gone")
}

/// A server a test module runs itself (e.g. Prometheus in `deploy.rs`),
/// started like the harness's own: it gets SIGKILL if the test process dies,
/// and its stdout and stderr go to `log` after a `header` line. Stop it with
/// [`stop_child`].
pub fn spawn_child(mut cmd: Command, log: &Path, header: &str) -> io::Result<Child> {
    redirect_output(&mut cmd, log, header);
    spawn_tied_to_test_process(cmd, DeathSignal::Kill)
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s; reaps it. Never
/// panics (for `Drop`).
pub fn stop_child(child: Child) {
    kill_and_reap(child, Some(libc::SIGTERM));
}

/// The last 40 lines of a log file, for panic messages.
pub fn tail_of_log(path: &Path) -> String {
    log_tail(path)
}

/// Sends `signal` (SIGKILL if `None`) and reaps the process; escalates to
/// SIGKILL if it has not exited within [`STOP_TIMEOUT`]. Never panics (it runs
/// in `Drop` and at exit).
fn kill_and_reap(mut child: Child, signal: Option<libc::c_int>) {
    match signal {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own
        // unreaped child, so it cannot have been reused.
        Some(sig) => unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        },
        None => {
            let _ = child.kill();
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

#[track_caller]
fn wait_port_closed(what: &str, port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_sync(
        &format!("{what} on port {port} refuses connections"),
        STOP_TIMEOUT,
        || {
            matches!(
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
            )
        },
    );
}

/// Appends the child's stdout and stderr to `log`, after a header line.
fn redirect_output(cmd: &mut Command, log: &Path, header: &str) {
    let open = || -> io::Result<(File, File)> {
        let mut file = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(file, "----- {header} -----")?;
        let err = file.try_clone()?;
        Ok((file, err))
    };
    let (out, err) =
        open().unwrap_or_else(|e| panic!("cannot open log file {}: {e}", log.display()));
    cmd.stdout(out).stderr(err);
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    const LINES: usize = 40;
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = String::new();
            for line in &lines[lines.len().saturating_sub(LINES)..] {
                let _ = writeln!(tail, "    {line}");
            }
            tail
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn temp_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("agent-supervisor-test-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory for {what}: {e}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Exit
// ---------------------------------------------------------------------------

/// Registers (once) the `atexit` handler that stops the shared servers.
fn register_exit_cleanup() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: stop_shared_servers is an `extern "C" fn()` that does not
        // unwind.
        let rc = unsafe { libc::atexit(stop_shared_servers) };
        assert_eq!(rc, 0, "atexit failed to register the shared-server cleanup");
    });
}

/// Runs at process exit: stops the shared servers and deletes their
/// directories (statics are never dropped). Must not unwind.
extern "C" fn stop_shared_servers() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(redis) = SHARED_REDIS.get() {
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
        if let Some(cluster) = SHARED_POSTGRES.get().and_then(|pg| pg.cluster.as_ref()) {
            cluster.shutdown();
            let _ = fs::remove_dir_all(cluster.dir.path());
        }
    });
}
