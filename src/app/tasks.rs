//! The task supervisor: every long-lived task is spawned by name; one that
//! ends before shutdown (returns or panics) is reported by name and stops
//! the others; at shutdown each is joined by a deadline, and one that does
//! not stop in time is named and abandoned.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

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

    pub(super) fn spawn(&mut self, name: String, task: impl Future<Output = ()> + Send + 'static) {
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
