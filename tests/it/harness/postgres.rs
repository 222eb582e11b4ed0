//! A private PostgreSQL cluster, or the shared server (`DATABASE_URL` or a
//! cluster started on first use), and per-test databases in it.

use std::ffi::CString;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use url::Url;

use super::process::{
    DeathSignal, PortTaken, find_on_path, kill_and_reap, lock, log_tail, next_counter,
    on_a_free_port, random_u32, redirect_output, spawn_tied_to_test_process, temp_dir,
    wait_port_closed,
};
use super::wait::POLL_INTERVAL;
use super::{env_url, register_exit_cleanup};

/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a freshly started postmaster may take to accept connections.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(30);

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
        let port = Url::parse(&admin_url)
            .ok()
            .and_then(|u| u.port())
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
        let log = cluster.log.clone();
        let (port, child) = on_a_free_port("postgres", &log, |port| cluster.launch(port));
        *lock(&cluster.postmaster) = Some(child);
        PostgresServer {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            cluster: Some(cluster),
        }
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

    /// The private cluster's postmaster pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let cluster = self.private_cluster("signal");
        lock(&cluster.postmaster)
            .as_ref()
            .map(std::process::Child::id)
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
        let mut url = Url::parse(&self.admin_url)
            .unwrap_or_else(|e| panic!("admin URL {} is not a URL: {e}", self.admin_url));
        url.set_path(&name);
        url.into()
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

/// Stops the shared cluster and deletes its directory, at process exit
/// (statics are never dropped).
pub(super) fn stop_shared() {
    if let Some(cluster) = SHARED_POSTGRES.get().and_then(|pg| pg.cluster.as_ref()) {
        cluster.shutdown();
        let _ = fs::remove_dir_all(cluster.dir.path());
    }
}
