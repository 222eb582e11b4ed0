//! Sources read external systems and translate what they find into
//! [`Observation`]s. They never decide state. One file per system.
//!
//! A polled source implements [`PollSource`] (a full scan, and a point read
//! of a few agents); [`run_polled`] drives it: one scan per interval, point
//! reads on demand from the core, one log line per change of health rather
//! than one per interval.

pub mod http;
pub mod postgres;
pub mod push;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::core::{AgentId, ErrorKind, Observation, Reading, SourceFailure, SourceId, Timestamp};
use crate::liveness::Liveness;
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
    pub tx: mpsc::Sender<Observation>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub liveness: Liveness,
}

/// Logs a source's health once per change, not once per interval.
#[derive(Default)]
pub struct HealthLog {
    last: Option<Option<ErrorKind>>,
}

impl HealthLog {
    pub fn ok(&mut self, source: &SourceId) {
        if self.last != Some(None) {
            if self.last.is_some() {
                info!(source = %source, "Source is readable again.");
            } else {
                info!(source = %source, "Source read successfully.");
            }
            self.last = Some(None);
        }
    }

    pub fn err(&mut self, source: &SourceId, e: &SourceError) {
        if self.last != Some(Some(e.kind)) {
            warn!(source = %source, kind = %e.kind, error = %e, "Source cannot be read; its agents are unknown until it can.");
            self.last = Some(Some(e.kind));
        }
    }
}

/// One full scan: readings, then `ScanComplete` or `SourceError`.
/// Returns the error, if any, for the caller's logging.
pub async fn scan_once<S: PollSource>(src: &S, ctx: &SourceCtx) -> Result<usize, SourceError> {
    let started_at = ctx.clock.now();
    let began = Instant::now();
    let mut sink = ScanSink::new(ctx.id.clone(), started_at, ctx.tx.clone());
    let result = src.scan(&mut sink).await;
    let elapsed = began.elapsed();
    match result {
        Ok(()) => {
            let n = sink.sent();
            ctx.metrics.scan_succeeded(&ctx.id, elapsed, Utc::now());
            if let Some(off) = src.clock_offset_seconds() {
                ctx.metrics.clock_offset(&ctx.id, off);
            }
            let _ = ctx
                .tx
                .send(Observation::ScanComplete {
                    source: ctx.id.clone(),
                    started_at,
                    checks_seen: n,
                })
                .await;
            Ok(n)
        }
        Err(e) => {
            ctx.metrics.scan_failed(&ctx.id, e.kind, elapsed);
            let _ = ctx
                .tx
                .send(Observation::SourceError {
                    source: ctx.id.clone(),
                    error: e.failure(),
                })
                .await;
            Err(e)
        }
    }
}

/// Point-read `agents` and report the result.
pub async fn confirm_once<S: PollSource>(
    src: &S,
    ctx: &SourceCtx,
    agents: &[AgentId],
) -> Result<(), SourceError> {
    let read_at = ctx.clock.now();
    let result = src.point_read(agents).await;
    let obs = match &result {
        Ok(readings) => Observation::Confirmed {
            source: ctx.id.clone(),
            read_at,
            readings: readings.clone(),
        },
        Err(e) => {
            ctx.metrics.scan_failed(&ctx.id, e.kind, Duration::ZERO);
            Observation::SourceError {
                source: ctx.id.clone(),
                error: e.failure(),
            }
        }
    };
    let _ = ctx.tx.send(obs).await;
    result.map(|_| ())
}

/// Drive a polled source until cancelled: a scan every interval, and point
/// reads as the core asks for them (concurrently with a running scan).
pub async fn run_polled<S: PollSource>(
    src: Arc<S>,
    ctx: SourceCtx,
    mut confirms: mpsc::Receiver<Vec<AgentId>>,
    cancel: CancellationToken,
) {
    let health = std::sync::Mutex::new(HealthLog::default());
    let note = |r: &Result<usize, SourceError>| {
        if let Ok(mut h) = health.lock() {
            match r {
                Ok(_) => h.ok(&ctx.id),
                Err(e) => h.err(&ctx.id, e),
            }
        }
    };
    let scans = async {
        let mut ticker = tokio::time::interval(src.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            ctx.liveness.tick(ctx.id.as_str());
            let r = tokio::select! {
                _ = cancel.cancelled() => break,
                r = scan_once(&*src, &ctx) => r,
            };
            note(&r);
        }
    };
    let points = async {
        loop {
            let agents = tokio::select! {
                _ = cancel.cancelled() => break,
                a = confirms.recv() => match a {
                    Some(a) => a,
                    None => break,
                },
            };
            let r = tokio::select! {
                _ = cancel.cancelled() => break,
                r = confirm_once(&*src, &ctx, &agents) => r,
            };
            if let Err(e) = r {
                note(&Err(e));
            }
        }
    };
    tokio::join!(scans, points);
}
