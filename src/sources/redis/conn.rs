//! The connection state machine: a fred client ([`Conn`]: one per source,
//! or one per primary of a Redis Cluster), started without waiting for
//! Redis, its connection events followed so that a read fails with the
//! reason of the last connection attempt, and fred's errors classified into
//! the source's error kinds.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::Builder;
use fred::types::config::Server;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::clock::instant_after;
use crate::core::ErrorKind;
use crate::sources::SourceError;
use crate::sources::common::{classify_io, is_tls_failure, lock, no_connection};

use super::RedisSource;

/// How often a read waiting for the connection re-checks the client's state
/// (connection events wake it earlier).
const READY_POLL: Duration = Duration::from_millis(10);

/// What the listener task knows about the connection; `epoch` counts the
/// events seen.
#[derive(Clone, Debug)]
pub(super) struct LinkState {
    epoch: u64,
    link: Link,
}

#[derive(Clone, Debug)]
pub(super) enum Link {
    /// Connecting for the first time; no attempt has finished yet.
    Connecting,
    /// A connection was established.
    Up,
    /// An established connection broke; a reconnection is pending.
    Broken(FredError),
    /// The last connection attempt failed with this error.
    Failed(FredError),
}

/// Why a read stopped.
pub(super) enum Stop {
    /// The connection broke under a command: what the reconnection attempt
    /// finds explains it (see [`RedisSource::explain`]).
    Lost(FredError),
    Failed(SourceError),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Failed(e)
    }
}

/// One fred client to one server (or to a primary found through
/// Sentinel), started on first use.
pub(super) struct Conn {
    /// `host:port` of the server, for messages.
    pub(super) endpoint: Arc<str>,
    builder: Builder,
    running: Mutex<Option<Running>>,
}

impl Conn {
    pub(super) fn new(endpoint: impl Into<Arc<str>>, builder: Builder) -> Self {
        Self {
            endpoint: endpoint.into(),
            builder,
            running: Mutex::new(None),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The client is never used again: its tasks may be aborted.
        if let Some(r) = lock(&self.running).take() {
            r.conn.abort();
            r.listener.abort();
        }
    }
}

/// A started client.
struct Running {
    client: Client,
    link: watch::Receiver<LinkState>,
    conn: JoinHandle<Result<(), FredError>>,
    listener: JoinHandle<()>,
}

/// What a read needs from the running client (cheap clones).
pub(super) struct Handle {
    pub(super) client: WithOptions<Client>,
    link: watch::Receiver<LinkState>,
    pub(super) endpoint: Arc<str>,
}

impl RedisSource {
    /// Start connecting in the background. Never blocks and never fails
    /// because Redis is down; does nothing if already started. Must be called
    /// from within a tokio runtime (reads also start the client if needed).
    pub(super) fn start_client(&self, conn: &Conn) {
        if let Err(e) = self.handle(conn) {
            warn!(source = %self.id, error = %e, "Cannot start the Redis client.");
        }
    }

    /// Close the connection (QUIT when connected) and stop the client's
    /// tasks. Bounded by the source's timeout. A later read or `connect`
    /// starts a new client.
    pub(super) async fn close_client(&self, conn: &Conn) {
        let running = lock(&conn.running).take();
        let Some(r) = running else {
            return;
        };
        // The client's state lags a broken connection: trust it only with
        // the link's.
        let up = r.client.is_connected() && matches!(r.link.borrow().link, Link::Up);
        if up {
            if let Err(e) = tokio::time::timeout(self.timeout, r.client.quit()).await {
                debug!(source = %self.id, error = %e, "QUIT got no answer in time.");
            }
        } else {
            // Not connected: the connection task is sleeping before its next
            // attempt, or attempting; nothing to close gracefully.
            r.conn.abort();
        }
        let mut conn = r.conn;
        if tokio::time::timeout(self.timeout, &mut conn).await.is_err() {
            conn.abort();
        }
        r.listener.abort();
    }

    /// The running client of `conn`, started if needed.
    pub(super) fn handle(&self, conn: &Conn) -> Result<Handle, SourceError> {
        let mut running = lock(&conn.running);
        if let Some(r) = running.as_ref() {
            return Ok(Handle {
                client: r.client.with_options(&self.options),
                link: r.link.clone(),
                endpoint: conn.endpoint.clone(),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(self.error(
                ErrorKind::Other,
                "the Redis client must be started from within a tokio runtime".into(),
            ));
        }
        let client = conn
            .builder
            .build()
            .map_err(|e| self.fred_error(&conn.endpoint, &e))?;
        // Subscribe before connecting, so that the first events are seen.
        let errors = client.error_rx();
        let reconnects = client.reconnect_rx();
        let (tx, rx) = watch::channel(LinkState {
            epoch: 0,
            link: Link::Connecting,
        });
        let listener = tokio::spawn(follow_link(errors, reconnects, tx));
        let task = client.connect();
        let handle = Handle {
            client: client.with_options(&self.options),
            link: rx.clone(),
            endpoint: conn.endpoint.clone(),
        };
        *running = Some(Running {
            client,
            link: rx,
            conn: task,
            listener,
        });
        Ok(handle)
    }

    /// Wait (at most `timeout`) until the client is connected; returns the
    /// link's generation then. Returns the last connection attempt's error as
    /// soon as one has failed. A client that has not tried yet is waited for
    /// its first attempt's delay on top (the reconnect policy delays even the
    /// first attempt, by up to `first_attempt`).
    ///
    /// The client's own state is not enough: it still says "connected" for
    /// a while after the connection broke (until the first reconnection
    /// attempt), so the link must say `Up` too.
    pub(super) async fn ready(&self, h: &Handle) -> Result<u64, SourceError> {
        let mut rx = h.link.clone();
        let fresh = matches!(rx.borrow().link, Link::Connecting);
        let wait = if fresh {
            self.timeout.saturating_add(self.first_attempt)
        } else {
            self.timeout
        };
        let deadline = instant_after(tokio::time::Instant::now(), wait);
        loop {
            let s = rx.borrow_and_update().clone();
            match &s.link {
                Link::Up if h.client.is_connected() => return Ok(s.epoch),
                Link::Failed(e) => return Err(self.fred_error(&h.endpoint, e)),
                Link::Up | Link::Connecting | Link::Broken(_) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(match &s.link {
                    Link::Broken(e) => self.fred_error(&h.endpoint, e),
                    _ => self.error(ErrorKind::Timeout, no_connection(&h.endpoint, self.timeout)),
                });
            }
            wait_change(&mut rx, left.min(READY_POLL)).await;
        }
    }

    /// The error a read reports. A connection that broke under a command
    /// (known at generation `epoch`) is explained by the next connection
    /// attempt (`connection refused`, ...), waited for at most `timeout`.
    pub(super) async fn explain(&self, h: &Handle, epoch: u64, stop: Stop) -> SourceError {
        let lost = match stop {
            Stop::Failed(e) => return e,
            Stop::Lost(e) => e,
        };
        let deadline = instant_after(tokio::time::Instant::now(), self.timeout);
        let mut rx = h.link.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            if s.epoch > epoch {
                match &s.link {
                    Link::Failed(e) => return self.fred_error(&h.endpoint, e),
                    Link::Up if h.client.is_connected() => {
                        return self.error(
                            ErrorKind::Other,
                            format!(
                                "connection to {} lost during the read (reconnected since)",
                                h.endpoint
                            ),
                        );
                    }
                    Link::Up | Link::Connecting | Link::Broken(_) => {}
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return match &s.link {
                    Link::Broken(e) if s.epoch > epoch => self.fred_error(&h.endpoint, e),
                    _ => self.fred_error(&h.endpoint, &lost),
                };
            }
            wait_change(&mut rx, left.min(READY_POLL)).await;
        }
    }

    /// A failed command. I/O errors and fail-fast cancellations mean the
    /// connection is gone: [`Self::explain`] finds out why.
    pub(super) fn command_error(&self, h: &Handle, e: FredError) -> Stop {
        match e.kind() {
            FredKind::IO | FredKind::Canceled => Stop::Lost(e),
            _ => Stop::Failed(self.fred_error(&h.endpoint, &e)),
        }
    }

    /// A failed command on `key`: WRONGTYPE means the configured key holds
    /// another type.
    pub(super) fn key_error(&self, h: &Handle, key: &str, want: &str, e: FredError) -> Stop {
        if e.details().starts_with("WRONGTYPE") {
            return Stop::Failed(self.error(
                ErrorKind::BadValue,
                format!("key {key:?} does not hold a {want} (WRONGTYPE)"),
            ));
        }
        self.command_error(h, e)
    }

    /// A reply that is not what `command` answers.
    pub(super) fn bad_reply(&self, h: &Handle, command: &str) -> SourceError {
        self.error(
            ErrorKind::Protocol,
            format!("unexpected reply to {command} ({})", h.endpoint),
        )
    }

    pub(super) fn fred_error(&self, ep: &str, e: &FredError) -> SourceError {
        let d = e.details();
        let (kind, message) = match e.kind() {
            FredKind::Timeout => (
                ErrorKind::Timeout,
                format!(
                    "no answer within {} ({ep})",
                    humantime::format_duration(self.timeout)
                ),
            ),
            FredKind::Auth => (
                ErrorKind::Auth,
                format!("authentication failed ({ep}): {d}"),
            ),
            FredKind::Tls => (ErrorKind::Tls, format!("TLS failure ({ep}): {d}")),
            FredKind::IO => self.io_error(ep, d),
            FredKind::Protocol | FredKind::Parse => {
                (ErrorKind::Protocol, format!("protocol error ({ep}): {d}"))
            }
            FredKind::Canceled => (ErrorKind::Other, format!("connection to {ep} closed")),
            _ if is_auth_reply(d) => (
                ErrorKind::Auth,
                format!("authentication failed ({ep}): {d}"),
            ),
            _ => (ErrorKind::Other, format!("{d} ({ep})")),
        };
        self.error(kind, message)
    }

    fn io_error(&self, ep: &str, d: &str) -> (ErrorKind, String) {
        let detail = io_detail(d);
        classify_io(None, &detail, self.uses_tls && is_tls_failure(d), ep)
    }
}

/// Follow the client's connection events into `link`.
fn follow_link(
    mut errors: broadcast::Receiver<(FredError, Option<Server>)>,
    mut reconnects: broadcast::Receiver<Server>,
    link: watch::Sender<LinkState>,
) -> impl Future<Output = ()> + Send + 'static {
    let set = move |l: Link| {
        link.send_modify(|s| {
            s.epoch += 1;
            s.link = l;
        })
    };
    use broadcast::error::RecvError;
    async move {
        loop {
            tokio::select! {
                biased;
                e = errors.recv() => match e {
                    // A failed connection attempt.
                    Ok((e, None)) => set(Link::Failed(e)),
                    // An established connection broke.
                    Ok((e, Some(_))) => set(Link::Broken(e)),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                r = reconnects.recv() => match r {
                    Ok(_) => set(Link::Up),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
        }
    }
}

/// Until `rx` changes or `max` passes (polling alone if the listener is
/// gone).
async fn wait_change(rx: &mut watch::Receiver<LinkState>, max: Duration) {
    let changed = async {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = changed => {}
        _ = tokio::time::sleep(max) => {}
    }
}

fn is_auth_reply(d: &str) -> bool {
    d.starts_with("NOAUTH")
        || d.starts_with("WRONGPASS")
        || d.contains("called without any password configured")
        || d.contains("invalid password")
}

/// The useful part of fred's rendering of an `io::Error` (`Os { code: 111,
/// kind: ConnectionRefused, message: "Connection refused" }`, `Custom { kind:
/// InvalidData, error: InvalidCertificate(UnknownIssuer) }`).
fn io_detail(d: &str) -> String {
    let inner = |marker: &str| {
        let start = d.find(marker)? + marker.len();
        let rest = d[start..].trim_end().strip_suffix('}')?.trim_end();
        Some(rest.trim_matches('"').to_string())
    };
    if d.starts_with("Custom {") {
        if let Some(e) = inner("error: ") {
            return e;
        }
    }
    if d.starts_with("Os {") {
        if let Some(m) = inner("message: ") {
            return m;
        }
    }
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_shown_without_their_debug_wrapping() {
        assert_eq!(
            io_detail(
                r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#
            ),
            "Connection refused"
        );
        assert_eq!(
            io_detail("Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }"),
            "InvalidCertificate(UnknownIssuer)"
        );
        assert_eq!(io_detail("Connection closed."), "Connection closed.");
    }
}
