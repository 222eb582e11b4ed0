//! The alert engine and its receivers' workers, built from the config with
//! the alert state restored from the store.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::alerts::deliver::{Queue, Worker, WorkerCtx};
use crate::alerts::engine::{
    AlertsHandle, AlertsView, COMMAND_CAPACITY, Engine, OUTCOME_CAPACITY, routing as alert_routing,
};
use crate::alerts::store::{AlertState, AlertStore};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::Snapshot;
use crate::core::remedy::RemedyView;
use crate::ha::{Leadership, LeaseClient};
use crate::liveness::Liveness;
use crate::sinks::state::{FileStore, StateError, StateFile};
use crate::telemetry::metrics::{LabelValue, Metrics};

/// Who notifies: this replica alone, or the leader of several sharing
/// their alert state through the lease's store.
pub(super) struct Replicas {
    pub(super) leadership: Leadership,
    pub(super) shared: Option<Arc<LeaseClient>>,
}

/// What the engine follows: the core's snapshots, and remediation's view
/// (pages it holds, its notes).
pub(super) struct Inputs {
    pub(super) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(super) remedy: watch::Receiver<Arc<RemedyView>>,
}

/// The alert engine, its receivers' workers and the API's handle.
pub(super) struct AlertParts {
    pub(super) engine: Engine,
    pub(super) workers: Vec<Worker>,
    pub(super) handle: AlertsHandle,
}

impl AlertParts {
    pub(super) fn build(
        config: &Config,
        store: Option<&FileStore>,
        inputs: Inputs,
        metrics: &Arc<Metrics>,
        clock: &Clock,
        liveness: &Liveness,
        replicas: Replicas,
    ) -> anyhow::Result<Self> {
        let Replicas { leadership, shared } = replicas;
        let Inputs { snapshots, remedy } = inputs;
        let cfg = &config.alerting;
        let now = clock.now();
        // With a shared store, the alert state lives there, not in files.
        let store = store
            .filter(|_| shared.is_none())
            .map(|s| AlertStore::new(s.dir()));
        let mut state = match &store {
            Some(st) => {
                // Each file on its own: a lost book does not lose the outbox.
                let book = loaded(st.load_book(), StateFile::Alerts, metrics).unwrap_or_default();
                let (outbox, next_seq) =
                    loaded(st.load_outbox(), StateFile::Outbox, metrics).unwrap_or_default();
                if !book.active.is_empty() || !outbox.is_empty() {
                    info!(firing = book.active.len(), pending = outbox.len(),
                        path = %st.book_path().display(), "Restored alert state.");
                }
                AlertState {
                    book,
                    outbox,
                    next_seq,
                }
            }
            None => AlertState::default(),
        };
        state.book.set_config_silences(cfg.silences.clone());
        let (outcomes_tx, outcomes_rx) = mpsc::channel(OUTCOME_CAPACITY);
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for r in &cfg.receivers {
            metrics.register_receiver(&r.name);
            let queue = Arc::new(Queue::new(cfg.delivery.max_pending));
            queues.insert(r.name.clone(), queue.clone());
            workers.push(Worker::new(
                r,
                &cfg.delivery,
                WorkerCtx {
                    queue,
                    outcomes: outcomes_tx.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    external_url: cfg.external_url.clone(),
                    leadership: leadership.clone(),
                },
            )?);
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (view_tx, view_rx) = watch::channel(Arc::new(AlertsView::default()));
        let engine = Engine {
            state,
            routing: alert_routing(cfg),
            store,
            queues,
            snapshots,
            commands: commands_rx,
            outcomes: outcomes_rx,
            view: view_tx,
            metrics: metrics.clone(),
            clock: clock.clone(),
            liveness: liveness.clone(),
            startup_grace: config.startup_grace,
            started_at: now,
            policy: config.policy(),
            leadership: leadership.clone(),
            shared,
            loaded: None,
            awaiting: Vec::new(),
            remedy,
        };
        Ok(Self {
            engine,
            workers,
            handle: AlertsHandle {
                view: view_rx,
                commands: commands_tx,
            },
        })
    }
}

/// A state file's content, or `None` (logged at error and counted) when it
/// could not be read: the sidecar starts without it.
pub(super) fn loaded<T>(
    result: Result<T, StateError>,
    file: StateFile,
    metrics: &Metrics,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            if matches!(e, StateError::Corrupt { .. }) {
                metrics.state_file_set_aside(file);
            }
            error!(error = %e, file = file.label(),
                "Could not restore a state file; starting without it.");
            None
        }
    }
}
