//! The state writer: saves what the core publishes for the state store.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::driver::StateHandoff;
use crate::sinks::state::{FileStore, StateFile};
use crate::telemetry::metrics::Metrics;

/// Write the latest state at most once per `every`, and the last one as
/// soon as the core stops (closes `rx`), without waiting out `every`. The
/// state is taken out of its handoff: once written, nothing holds it.
pub(super) async fn write_state(
    store: FileStore,
    mut rx: watch::Receiver<StateHandoff>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    loop {
        fail::fail_point!("state-writer");
        let closed = rx.changed().await.is_err();
        let latest = rx
            .borrow_and_update()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(value) = latest {
            let st = store.clone();
            match tokio::task::spawn_blocking(move || st.save(&value)).await {
                Ok(Ok(())) => {
                    if failing {
                        info!("State store writable again.");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    metrics.state_save_failed(StateFile::State);
                    if !failing {
                        error!(error = %e, "Could not save state; the previous file is kept and the sidecar keeps running. Retrying at every change.");
                    }
                    failing = true;
                }
                Err(e) => {
                    metrics.state_save_failed(StateFile::State);
                    error!(error = %e, "State writer panicked.");
                }
            }
        }
        if closed {
            break;
        }
        // At most one write per `every`, but the core's last state is
        // written at once: shutdown does not wait out the interval.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = closed_channel(rx.clone()) => {}
        }
    }
}

/// Until the sender is gone. Works on its own copy of the receiver, so the
/// writer's view of what it has seen is untouched.
async fn closed_channel<T>(mut rx: watch::Receiver<T>) {
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Snapshot;
    use crate::core::snapshot::PersistView;
    use crate::driver::handoff;

    #[tokio::test]
    async fn the_last_state_is_written_at_once_when_the_core_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let (tx, rx) = watch::channel(handoff(None));
        let writer = tokio::spawn(write_state(
            store.clone(),
            rx,
            Duration::from_secs(3600),
            Arc::new(Metrics::new(0).unwrap()),
        ));
        let empty = PersistView {
            snap: Arc::new(Snapshot::empty(chrono::Utc::now())),
            raw_last_seen: Vec::new(),
        };
        tx.send(handoff(Some(empty))).unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer waited out its interval")
            .unwrap();
        assert!(store.path().is_file());
    }
}
