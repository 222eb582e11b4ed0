//! Child processes (spawned tied to the test process, reaped, logged),
//! ports, temporary directories.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
#[cfg(target_os = "linux")]
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::wait::{POLL_INTERVAL, wait_until_sync};

/// How long a stopped server may take to exit and release its port.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports to try when another process takes ours first.
pub(super) const PORT_ATTEMPTS: usize = 5;

/// Runs `launch` on fresh ports until one was not taken first by another
/// process, and returns that port with what `launch` gave. Panics after
/// [`PORT_ATTEMPTS`] ports, naming `what`, the ports tried and the tail of
/// `log`.
pub(super) fn on_a_free_port<T>(
    what: &str,
    log: &Path,
    mut launch: impl FnMut(u16) -> Result<T, PortTaken>,
) -> (u16, T) {
    let mut taken = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        match launch(port) {
            Ok(started) => return (port, started),
            Err(PortTaken) => taken.push(port),
        }
    }
    panic!(
        "{what} could not bind any of the ports {taken:?} (another process took each one \
         first); log {}:\n{}",
        log.display(),
        log_tail(log)
    );
}

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

pub(super) fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub(super) fn random_u32() -> u32 {
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

/// The port a server was asked to listen on was bound by someone else first.
pub(super) struct PortTaken;

/// Signal the kernel sends a server when the test process dies.
#[derive(Clone, Copy)]
pub(super) enum DeathSignal {
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
pub(super) fn spawn_tied_to_test_process(
    mut cmd: Command,
    signal: DeathSignal,
) -> io::Result<Child> {
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
pub(super) fn kill_and_reap(mut child: Child, signal: Option<libc::c_int>) {
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
pub(super) fn wait_port_closed(what: &str, port: u16) {
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
pub(super) fn redirect_output(cmd: &mut Command, log: &Path, header: &str) {
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
pub(super) fn log_tail(path: &Path) -> String {
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

pub(super) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub(super) fn temp_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("agent-supervisor-test-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory for {what}: {e}"))
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A child process a test drives itself (e.g. the binary under test), named
/// `what` in failure messages. Killed (SIGKILL) and reaped when dropped, so a
/// failing test does not leave it running.
pub struct OwnedChild {
    child: Option<Child>,
    what: String,
}

impl OwnedChild {
    pub fn new(child: Child, what: &str) -> OwnedChild {
        OwnedChild {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("an OwnedChild holds its child until dropped")
    }

    /// The child, e.g. to take its pipes.
    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("an OwnedChild holds its child until dropped")
    }

    /// Waits until the child has exited and returns how; panics naming the
    /// child if it has not exited within `timeout` (it is then killed when
    /// dropped).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} exits", self.what);
        let child = self.child();
        let mut status = None;
        wait_until_sync(&what, timeout, || {
            status = child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot wait for the child: {e}"));
            status.is_some()
        });
        status.expect("wait_until_sync returns once the child has exited")
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child, None);
        }
    }
}

/// The lines a child writes to a pipe, read on a thread of their own so that
/// a test waits for each with a deadline instead of blocking on the pipe. The
/// thread keeps draining the pipe, so the child never blocks writing to it.
pub struct PipeLines {
    lines: mpsc::Receiver<io::Result<String>>,
}

/// What [`PipeLines::next_by`] got.
#[derive(Debug)]
pub enum NextLine {
    Line(String),
    /// The pipe is closed (the child has exited) or failed.
    Closed,
    TimedOut,
}

impl PipeLines {
    pub fn read(pipe: impl Read + Send + 'static) -> PipeLines {
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("child-pipe-reader".into())
            .spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            })
            .expect("cannot start a thread to read a child's pipe");
        PipeLines { lines }
    }

    /// The next line, if one comes by `deadline`.
    pub fn next_by(&self, deadline: Instant) -> NextLine {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(Ok(line)) => NextLine::Line(line),
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => NextLine::Closed,
            Err(mpsc::RecvTimeoutError::Timeout) => NextLine::TimedOut,
        }
    }
}
