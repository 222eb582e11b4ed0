//! The task supervisor: every long-lived task is spawned by name; one that
//! ends before shutdown (returns or panics) is reported by name and stops
//! the others (the process then exits non-zero); at shutdown each is joined
//! by a deadline, and one that does not stop in time is named and
//! abandoned. A task that can be run again (a source) is wrapped in
//! [`restarting`]: a run that panics or ends is logged, counted and started
//! again after a backoff, and only that task's agents are affected.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::telemetry::metrics::Metrics;

/// How a restarted task waits before its next run: doubling from `first`
/// to `max`, and back to `first` after a run that lasted `max` or more.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub(super) const SOURCE: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };
}

/// Run `run(state)` until `cancel`. A run that panics, or ends before
/// `cancel`, is logged with the task's name, counted
/// (`task_restarts_total{task}`), reported to `failed` with what happened
/// and the wait before the next run (the caller tells the core, so the
/// task's agents are `unknown` meanwhile), and started again after a
/// backoff. `state` (a source's point-read queue) survives the runs.
pub(super) async fn restarting<T: Send>(
    name: &str,
    state: &mut T,
    cancel: &CancellationToken,
    backoff: Backoff,
    metrics: &Metrics,
    mut run: impl for<'a> FnMut(&'a mut T) -> BoxFuture<'a, ()>,
    mut failed: impl FnMut(String, Duration) -> BoxFuture<'static, ()>,
) {
    let mut wait = backoff.first;
    loop {
        let began = Instant::now();
        let outcome = AssertUnwindSafe(run(state)).catch_unwind().await;
        if cancel.is_cancelled() {
            return;
        }
        if began.elapsed() >= backoff.max {
            wait = backoff.first;
        }
        let what = match outcome {
            Ok(()) => "ended".to_string(),
            Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
        };
        error!(task = %name, what = %what, retry_in = ?wait, "Task failed; restarting it.");
        metrics.task_restarted(name);
        failed(what, wait).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        info!(task = %name, "Task restarted.");
        wait = (wait * 2).min(backoff.max);
    }
}

/// The text of a panic, as `panic!` was given it.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

pub(super) struct Tasks {
    /// Cancelled when a task ends before shutdown.
    cancel: CancellationToken,
    running: Vec<(String, JoinHandle<()>)>,
    /// The first task that ended before shutdown.
    ended_early: Arc<Mutex<Option<String>>>,
}

/// Stops everything when its task ends, by returning or by panicking,
/// before shutdown began.
struct ExitGuard {
    name: String,
    cancel: CancellationToken,
    ended_early: Arc<Mutex<Option<String>>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.cancel.is_cancelled() {
            let panicked = std::thread::panicking();
            error!(task = %self.name, panicked, "Task exited before shutdown; stopping.");
            self.ended_early
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert_with(|| self.name.clone());
            self.cancel.cancel();
        }
    }
}

impl Tasks {
    pub(super) fn new(cancel: CancellationToken) -> Self {
        Self {
            cancel,
            running: Vec::new(),
            ended_early: Arc::default(),
        }
    }

    // Boxed first and not inlined: a task's future (the alert engine's and
    // the HA lease's are over 20 KiB) was moved several times on the way
    // into tokio's task cell, and with a dozen call sites inlined into
    // `App::run` those copies made its stack frame 270 KiB, pages the main
    // thread then keeps resident.
    #[inline(never)]
    pub(super) fn spawn(&mut self, name: String, task: impl Future<Output = ()> + Send + 'static) {
        let task = Box::pin(task);
        let guard = ExitGuard {
            name: name.clone(),
            cancel: self.cancel.clone(),
            ended_early: self.ended_early.clone(),
        };
        let handle = tokio::spawn(
            async move {
                let _guard = guard;
                task.await;
            }
            .instrument(info_span!("task", name = %name)),
        );
        self.running.push((name, handle));
    }

    /// Join the tasks `pick` selects, in the order they were spawned, each
    /// by `deadline`; the others keep running.
    pub(super) async fn join(&mut self, pick: impl Fn(&str) -> bool, deadline: Instant) {
        let (picked, rest) = std::mem::take(&mut self.running)
            .into_iter()
            .partition::<Vec<_>, _>(|(name, _)| pick(name));
        self.running = rest;
        for (name, handle) in picked {
            join_by(&name, handle, deadline).await;
        }
    }

    /// The first task that ended before shutdown, if any.
    pub(super) fn ended_early(&self) -> Option<String> {
        self.ended_early
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn join_by(name: &str, mut handle: JoinHandle<()>, deadline: Instant) {
    match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(task = %name, error = %e, "Task panicked."),
        Err(_) => {
            warn!(task = %name, "Task did not stop within shutdown_timeout; abandoning it.");
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_stops_the_others() {
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::new(cancel.clone());
        tasks.spawn("boom".into(), async { panic!("boom") });
        let stopped = tokio::time::timeout(Duration::from_secs(5), cancel.cancelled()).await;
        assert!(stopped.is_ok(), "a panicked task went unnoticed");
        assert_eq!(tasks.ended_early().as_deref(), Some("boom"));
        tasks
            .join(|_| true, Instant::now() + Duration::from_secs(5))
            .await;
    }

    /// The first run panics, the second ends, the third runs until
    /// cancelled: two restarts, counted, reported, with a doubling wait,
    /// and the state kept across runs.
    #[tokio::test(start_paused = true)]
    async fn a_restarting_task_is_run_again_after_a_panic_or_an_end() {
        let metrics = Metrics::new(0).unwrap();
        let cancel = CancellationToken::new();
        let mut runs = 0u32;
        let reports = Arc::new(Mutex::new(Vec::new()));
        let began = Instant::now();
        let c = cancel.clone();
        let seen = reports.clone();
        restarting(
            "source:redis",
            &mut runs,
            &cancel,
            Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            &metrics,
            |runs: &mut u32| {
                let c = c.clone();
                Box::pin(async move {
                    *runs += 1;
                    match *runs {
                        1 => panic!("infinity is not a time"),
                        2 => {}
                        _ => c.cancel(),
                    }
                })
            },
            move |what, wait| {
                seen.lock().unwrap().push((what, wait));
                Box::pin(async {})
            },
        )
        .await;
        assert_eq!(runs, 3);
        assert_eq!(
            *reports.lock().unwrap(),
            vec![
                (
                    "panicked: infinity is not a time".to_string(),
                    Duration::from_secs(1)
                ),
                ("ended".to_string(), Duration::from_secs(2)),
            ]
        );
        assert_eq!(began.elapsed(), Duration::from_secs(3));
        let mut text = String::new();
        metrics.encode_registry(&mut text);
        assert!(
            text.contains(r#"agent_supervisor_task_restarts_total{task="source:redis"} 2"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_does_not_stop_is_abandoned_at_the_deadline() {
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::new(cancel.clone());
        tasks.spawn("stuck".into(), std::future::pending());
        cancel.cancel();
        let began = Instant::now();
        tasks
            .join(|n| n == "stuck", began + Duration::from_secs(3))
            .await;
        assert_eq!(began.elapsed(), Duration::from_secs(3));
        assert!(tasks.running.is_empty());
    }
}
