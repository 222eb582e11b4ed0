//! Driving a polled source: one scan per interval, point reads on demand
//! from the core, and one log line per change of health rather than one per
//! interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::{AgentId, ErrorKind, Observation, SourceId};

use super::{PollSource, ScanSink, SourceCtx, SourceError};

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
            ctx.metrics
                .scan_succeeded(&ctx.id, elapsed, ctx.clock.now());
            if let Some(off) = src.clock_offset_seconds() {
                ctx.metrics.clock_offset(&ctx.id, off);
            }
            let _ = ctx
                .tx
                .send(Observation::ScanComplete {
                    source: ctx.id.clone(),
                    started_at,
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
    let _ = ctx.urgent.send(obs).await;
    result.map(|_| ())
}

/// How soon a source that could not be read is scanned again.
pub const DOWN_RETRY: Duration = Duration::from_millis(500);

/// Drive a polled source until cancelled: connect, a scan every interval
/// (every [`DOWN_RETRY`] while it cannot be read) and point reads as the
/// core asks for them (concurrently with a running scan), then disconnect.
pub async fn run_polled<S: PollSource>(
    src: Arc<S>,
    ctx: SourceCtx,
    confirms: &mut mpsc::Receiver<Vec<AgentId>>,
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
            fail::fail_point!("source-scan");
            let r = tokio::select! {
                _ = cancel.cancelled() => break,
                r = scan_once(&*src, &ctx) => r,
            };
            if r.is_err() {
                // Down: try again soon rather than a whole interval on, so a
                // recovery is seen (and its agents given their time) within
                // about DOWN_RETRY of it.
                ticker.reset_after(src.interval().min(DOWN_RETRY));
            }
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
    src.connect();
    tokio::join!(scans, points);
    src.disconnect().await;
}
