//! Sources read external systems and translate what they find into
//! [`Observation`]s. They never decide state. One module per system (a
//! folder with one file per job when it has several: `redis/`,
//! `postgres/`); what they share (the healthy words, error classification,
//! skip logging, clock offsets) is in [`common`].
//!
//! A polled source implements [`PollSource`] (a full scan, and a point read
//! of a few agents); [`run_polled`] drives it: one scan per interval, point
//! reads on demand from the core, one log line per change of health rather
//! than one per interval.

pub mod common;
pub mod http;
pub mod postgres;
pub mod push;
pub mod redis;
mod run;

pub use run::{HealthLog, confirm_once, run_polled, scan_once};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::core::{
    AgentFilter, AgentId, ErrorKind, Observation, Reading, SourceFailure, SourceId, Timestamp,
};
use crate::liveness::Liveness;
use crate::secret::scrub_secrets;
use crate::telemetry::metrics::Metrics;

/// A failed read. `system` names the datastore (`redis`), the message never
/// holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{system}: {message}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub system: &'static str,
    pub message: String,
}

impl SourceError {
    pub fn new(kind: ErrorKind, system: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            system,
            message: message.into(),
        }
    }

    /// An error whose message has `secrets` (a URL's password) scrubbed
    /// out, as a last line of defence.
    pub fn scrubbed(
        kind: ErrorKind,
        system: &'static str,
        secrets: &[SecretString],
        message: String,
    ) -> Self {
        Self::new(kind, system, scrub_secrets(secrets, message))
    }

    pub fn failure(&self) -> SourceFailure {
        SourceFailure {
            kind: self.kind,
            message: self.to_string(),
        }
    }
}

/// Where a scan delivers its readings, page by page.
pub struct ScanSink {
    source: SourceId,
    started_at: Timestamp,
    tx: mpsc::Sender<Observation>,
    sent: usize,
}

impl ScanSink {
    pub fn new(source: SourceId, started_at: Timestamp, tx: mpsc::Sender<Observation>) -> Self {
        Self {
            source,
            started_at,
            tx,
            sent: 0,
        }
    }

    /// Send one page. Waits when the core is busy (back-pressure on the
    /// scan, never a dropped reading). Returns false when the core is gone.
    pub async fn send(&mut self, readings: Vec<Reading>) -> bool {
        if readings.is_empty() {
            return true;
        }
        self.sent += readings.len();
        self.tx
            .send(Observation::Batch {
                source: self.source.clone(),
                started_at: self.started_at,
                readings,
            })
            .await
            .is_ok()
    }

    /// Part of the source cannot be read: the agents `affected` selects
    /// are unreadable (see [`Observation::PartlyDown`]). Returns false when
    /// the core is gone.
    pub async fn partly_down(&mut self, error: SourceFailure, affected: AgentFilter) -> bool {
        self.tx
            .send(Observation::PartlyDown {
                source: self.source.clone(),
                error,
                affected,
            })
            .await
            .is_ok()
    }

    pub fn sent(&self) -> usize {
        self.sent
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }
}

/// A source read periodically.
pub trait PollSource: Send + Sync + 'static {
    /// The datastore's name for messages (`redis`).
    fn system(&self) -> &'static str;

    fn interval(&self) -> Duration;

    /// Read everything, page by page into `sink`. Readings carry `last_seen`
    /// on the local clock (the source corrects for the datastore's clock).
    fn scan(&self, sink: &mut ScanSink) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Re-read these agents now: exactly one reading per agent, `Absent`
    /// when nothing is stored for it.
    fn point_read(
        &self,
        agents: &[AgentId],
    ) -> impl Future<Output = Result<Vec<Reading>, SourceError>> + Send;

    /// Start connecting in the background, if the source keeps a
    /// connection. Never blocks and never fails because the datastore is
    /// down.
    fn connect(&self) {}

    /// Close what [`Self::connect`] or the reads opened, bounded by the
    /// source's timeout. A later read opens it again.
    fn disconnect(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Offset of the datastore's clock from ours (remote - local), in
    /// seconds, as of the last read.
    fn clock_offset_seconds(&self) -> Option<f64> {
        None
    }
}

/// Everything a source task needs from the app.
#[derive(Clone)]
pub struct SourceCtx {
    pub id: SourceId,
    /// Scan pages and what ends a scan.
    pub tx: mpsc::Sender<Observation>,
    /// Point-read answers, which the core takes before scan pages.
    pub urgent: mpsc::Sender<Observation>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
}
