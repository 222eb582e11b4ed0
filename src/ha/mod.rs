//! Several replicas, one leader (`ha:`): a lease on a store the replicas
//! already share (Redis or PostgreSQL). Every replica scans and evaluates;
//! only the holder of the lease notifies.
//!
//! The lease is taken with a compare-and-set that increments an **epoch**
//! (the fencing token), renewed every `renew_every` while held, and free
//! to take once not renewed for `ttl`. A leader trusts its lease only until
//! `ttl` after it *sent* its last successful renewal (less a margin for
//! clock drift), by the monotonic clock: a leader paused longer than that
//! (GC, SIGSTOP, a partition) finds its lease expired when it resumes and
//! sends nothing, before it even hears from the store.
//!
//! The store unreachable: the leader keeps leading until its lease runs out
//! locally, then steps down; once the store has been unreachable for
//! `fail_open_after`, every replica notifies on its own (**fail open**: a
//! page twice rather than none), logged, counted and exported
//! (`agent_supervisor_ha_fail_open`); they go back to the lease as soon as
//! the store answers.

mod postgres;
mod redis;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ha::{HaConfig, LeaseStore};
use crate::telemetry::metrics::Metrics;

pub use postgres::PostgresLease;
pub use redis::RedisLease;

/// What this replica may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No `ha:`: the only replica.
    Alone,
    /// Another replica holds the lease (or nobody yet, and this one has
    /// not taken it).
    Follower,
    /// This replica holds the lease, taken at this epoch.
    Leader { epoch: u64 },
    /// The store has been unreachable past `fail_open_after`.
    FailOpen,
}

/// Why a call to the lease store failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease store unreachable: {0}")]
    Unreachable(String),
    #[error("lease store call timed out after {0:?}")]
    Timeout(Duration),
    #[error("lease store answered something unexpected: {0}")]
    Unexpected(String),
}

/// Who leads, shared by the engine, the delivery workers and the lease
/// task (which alone changes it).
#[derive(Clone)]
pub struct Leadership {
    role: watch::Sender<Role>,
    /// A leader's lease is trusted until then.
    valid_until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// A replica without `ha:`: always allowed.
    pub fn alone() -> Self {
        Self::with(Role::Alone)
    }

    fn with(role: Role) -> Self {
        Self {
            role: watch::Sender::new(role),
            valid_until: Arc::new(Mutex::new(None)),
        }
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Whether a notification may be sent now: alone, failing open, or
    /// leading on a lease that has not run out by the local clock.
    pub fn may_notify(&self) -> bool {
        match self.role() {
            Role::Alone | Role::FailOpen => true,
            Role::Follower => false,
            Role::Leader { .. } => self.lease_valid(Instant::now()),
        }
    }

    /// A write as the leader of `epoch` was refused (a newer leader took
    /// over): stop leading now, before the lease task hears of it.
    pub fn fence(&self, epoch: u64) {
        if self.role() == (Role::Leader { epoch }) {
            self.set(Role::Follower, None);
        }
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    fn set(&self, role: Role, valid_until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = valid_until;
        self.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }
}

/// A client of the lease store.
pub enum LeaseClient {
    Redis(RedisLease),
    Postgres(PostgresLease),
}

impl LeaseClient {
    pub fn new(cfg: &HaConfig) -> Result<Self, LeaseError> {
        let l = &cfg.lease;
        Ok(match &l.store {
            LeaseStore::Redis { url, key } => {
                LeaseClient::Redis(RedisLease::new(url, key, l.timeout)?)
            }
            LeaseStore::Postgres {
                url,
                table,
                key,
                tls_ca_file,
            } => LeaseClient::Postgres(PostgresLease::new(
                url,
                table,
                key,
                tls_ca_file.as_deref(),
                l.timeout,
            )?),
        })
    }

    /// Take the lease if it is free: its new epoch, or `None` when another
    /// replica holds it.
    pub async fn try_acquire(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.try_acquire(holder, ttl).await,
            LeaseClient::Postgres(p) => p.try_acquire(holder, ttl).await,
        }
    }

    /// Extend the lease held at `epoch`: `false` when it is no longer ours.
    pub async fn renew(&self, holder: &str, epoch: u64, ttl: Duration) -> Result<bool, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.renew(holder, epoch, ttl).await,
            LeaseClient::Postgres(p) => p.renew(holder, epoch, ttl).await,
        }
    }

    /// Give the lease up (at shutdown), so another replica takes it at once.
    pub async fn release(&self, holder: &str, epoch: u64) -> Result<bool, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.release(holder, epoch).await,
            LeaseClient::Postgres(p) => p.release(holder, epoch).await,
        }
    }

    /// The shared alert state (JSON) the last leader saved, if any.
    pub async fn load_state(&self) -> Result<Option<String>, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.load_state().await,
            LeaseClient::Postgres(p) => p.load_state().await,
        }
    }

    /// Save the alert state as the leader of `epoch`: `false` when fenced
    /// (a newer leader took over; nothing written).
    pub async fn save_state(&self, epoch: u64, json: String) -> Result<bool, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.save_state(epoch, json).await,
            LeaseClient::Postgres(p) => p.save_state(epoch, json).await,
        }
    }

    pub async fn put_silence(&self, id: &str, json: String) -> Result<(), LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.put_silence(id, json).await,
            LeaseClient::Postgres(p) => p.put_silence(id, json).await,
        }
    }

    pub async fn delete_silence(&self, id: &str) -> Result<bool, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.delete_silence(id).await,
            LeaseClient::Postgres(p) => p.delete_silence(id).await,
        }
    }

    pub async fn silences(&self) -> Result<Vec<String>, LeaseError> {
        match self {
            LeaseClient::Redis(r) => r.silences().await,
            LeaseClient::Postgres(p) => p.silences().await,
        }
    }

    pub async fn close(&self) {
        match self {
            LeaseClient::Redis(r) => r.close().await,
            LeaseClient::Postgres(p) => p.close().await,
        }
    }
}

/// Bound on reading or writing the shared alert state, which can be much
/// larger than a lease call: the lease's timeout, at least 2 s.
fn state_timeout(lease_timeout: Duration) -> Duration {
    lease_timeout.max(Duration::from_secs(2))
}

/// The local clock may run up to this fraction faster than the store's:
/// a lease is trusted for `ttl` less this share of it (at least 100 ms).
const DRIFT_MARGIN: u32 = 20;

fn margin(ttl: Duration) -> Duration {
    (ttl / DRIFT_MARGIN).max(Duration::from_millis(100))
}

/// The task that takes, renews and releases the lease.
pub struct LeaseTask {
    pub client: Arc<LeaseClient>,
    pub cfg: HaConfig,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
}

impl LeaseTask {
    /// A follower until the first answer says otherwise.
    pub fn leadership() -> Leadership {
        Leadership::with(Role::Follower)
    }

    pub async fn run(self, cancel: CancellationToken) {
        let LeaseTask {
            client,
            cfg,
            leadership,
            metrics,
        } = self;
        let (ttl, every) = (cfg.lease.ttl, cfg.lease.renew_every);
        let me = cfg.replica_id.as_str();
        let mut held: Option<u64> = None;
        let mut last_epoch = 0;
        let mut unreachable_since: Option<Instant> = None;
        metrics.ha_role(false, 0, false);
        info!(replica = me, store = cfg.lease.store.kind(), ttl = ?ttl, "Leader election on.");
        loop {
            let sent = Instant::now();
            let answer = match held {
                Some(epoch) => client
                    .renew(me, epoch, ttl)
                    .await
                    .map(|ok| ok.then_some(epoch)),
                None => client.try_acquire(me, ttl).await,
            };
            let now = Instant::now();
            match answer {
                Ok(Some(epoch)) => {
                    if held.is_none() {
                        info!(
                            replica = me,
                            epoch, "Took the leader lease: this replica notifies."
                        );
                    }
                    if unreachable_since.take().is_some() {
                        info!("Lease store reachable again.");
                    }
                    held = Some(epoch);
                    last_epoch = epoch;
                    leadership.set(Role::Leader { epoch }, Some(sent + ttl - margin(ttl)));
                }
                Ok(None) => {
                    if let Some(epoch) = held.take() {
                        warn!(
                            replica = me,
                            epoch,
                            "Lost the leader lease (another replica took it): no longer notifying."
                        );
                    }
                    if unreachable_since.take().is_some() {
                        info!("Lease store reachable again.");
                    }
                    leadership.set(Role::Follower, None);
                }
                Err(e) => {
                    metrics.ha_lease_error();
                    let since = *unreachable_since.get_or_insert(sent);
                    warn!(error = %e, "Lease store call failed.");
                    if held.is_some() && !leadership.lease_valid(now) {
                        held = None;
                        warn!(
                            replica = me,
                            "The leader lease ran out unrenewed: no longer notifying."
                        );
                        leadership.set(Role::Follower, None);
                    }
                    if held.is_none() && now.duration_since(since) >= cfg.fail_open_after {
                        if leadership.role() != Role::FailOpen {
                            error!(unreachable_for = ?now.duration_since(since),
                                "Lease store unreachable past ha.fail_open_after: failing open, this replica notifies on its own (other replicas may too).");
                        }
                        leadership.set(Role::FailOpen, None);
                    }
                }
            }
            let role = leadership.role();
            metrics.ha_role(
                matches!(role, Role::Leader { .. }),
                last_epoch,
                role == Role::FailOpen,
            );
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(sent + every) => {}
            }
        }
        if let Some(epoch) = held {
            leadership.set(Role::Follower, None);
            match client.release(me, epoch).await {
                Ok(true) => info!(replica = me, epoch, "Released the leader lease."),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "Could not release the leader lease; it runs out after ttl.")
                }
            }
        }
        metrics.ha_role(false, last_epoch, false);
        client.close().await;
    }
}
