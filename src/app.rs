//! Wiring: [`App::build`] binds and connects (port 0 works; [`App::port`]
//! tells which), [`App::run`] runs every task until cancelled, then drains
//! them within `shutdown_timeout`, naming any that did not stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::alerts::api::AlertsApi;
use crate::alerts::deliver::{Queue, Worker, WorkerCtx};
use crate::alerts::engine::{
    AlertsHandle, AlertsView, COMMAND_CAPACITY, Engine, OUTCOME_CAPACITY, routing as alert_routing,
};
use crate::alerts::store::{AlertState, AlertStore};
use crate::clock::Clock;
use crate::config::{Config, SourceKindConfig};
use crate::core::{Persisted, Snapshot, SourceId, SourceKind, Supervisor};
use crate::driver::{CONFIRM_CAPACITY, Driver, OBSERVATION_CAPACITY};
use crate::http::{HttpState, router};
use crate::liveness::Liveness;
use crate::sinks::state::FileStore;
use crate::sources::http::HttpSource;
use crate::sources::postgres::PostgresSource;
use crate::sources::push::PushState;
use crate::sources::redis::RedisSource;
use crate::sources::{SourceCtx, run_polled};
use crate::telemetry::metrics::Metrics;

/// Options that tests change.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub clock: Clock,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            clock: Clock::System,
        }
    }
}

/// A source read periodically, by system.
pub enum Polled {
    Redis(Arc<RedisSource>),
    Postgres(Arc<PostgresSource>),
    Http(Arc<HttpSource>),
}

impl Polled {
    /// Build the client for a polled source; `None` for the push source.
    pub fn build(
        id: &SourceId,
        kind: &SourceKindConfig,
        clock: &Clock,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        Ok(match kind {
            SourceKindConfig::Redis(c) => Some(Polled::Redis(Arc::new(
                RedisSource::new(id.clone(), c, clock.clone())
                    .with_context(|| format!("source {id}"))?,
            ))),
            SourceKindConfig::Postgres(c) => Some(Polled::Postgres(Arc::new(
                PostgresSource::new(id.clone(), c, clock.clone())
                    .with_context(|| format!("source {id}"))?,
            ))),
            SourceKindConfig::Http(c) => Some(Polled::Http(Arc::new(
                HttpSource::new(id.clone(), c, metrics.clone())
                    .with_context(|| format!("source {id}"))?,
            ))),
            SourceKindConfig::Push(_) => None,
        })
    }

    pub fn interval(&self) -> Duration {
        use crate::sources::PollSource;
        match self {
            Polled::Redis(s) => s.interval(),
            Polled::Postgres(s) => s.interval(),
            Polled::Http(s) => s.interval(),
        }
    }
}

/// Supervisor source list from the config.
pub fn source_kinds(config: &Config) -> Vec<(SourceId, SourceKind, String)> {
    config
        .sources
        .iter()
        .map(|s| {
            let kind = match s.kind {
                SourceKindConfig::Push(_) => SourceKind::Push,
                _ => SourceKind::Polled,
            };
            (s.name.clone(), kind, s.kind.type_name().to_string())
        })
        .collect()
}

pub struct App {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    liveness: Liveness,
    clock: Clock,
    obs_tx: mpsc::Sender<Observation>,
    driver: Driver,
    polled: Vec<(SourceId, Polled, mpsc::Receiver<Vec<crate::core::AgentId>>)>,
    push: Option<PushState>,
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    store: Option<(FileStore, watch::Receiver<Arc<Persisted>>)>,
    alerts: AlertParts,
}

/// The alert engine, its receivers' workers and the API's handle.
struct AlertParts {
    engine: Engine,
    workers: Vec<Worker>,
    handle: AlertsHandle,
}

impl AlertParts {
    fn build(
        config: &Config,
        store: Option<&FileStore>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        metrics: &Arc<Metrics>,
        clock: &Clock,
        liveness: &Liveness,
    ) -> anyhow::Result<Self> {
        let cfg = &config.alerting;
        let now = clock.now();
        let store = store.map(|s| AlertStore::new(s.dir()));
        let mut state = match &store {
            Some(st) => match st.load() {
                Ok(saved) => {
                    if !saved.book.active.is_empty() || !saved.outbox.is_empty() {
                        info!(firing = saved.book.active.len(), pending = saved.outbox.len(),
                            path = %st.book_path().display(), "Restored alert state.");
                    }
                    saved
                }
                Err(e) => {
                    error!(error = %e, "Could not restore alert state; firing alerts will be notified again.");
                    AlertState::default()
                }
            },
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

use crate::core::Observation;

impl App {
    /// Bind the listener, open the state store, restore state and build the
    /// source clients. Does not wait for any datastore.
    pub async fn build(config: Config, opts: AppOptions) -> anyhow::Result<App> {
        let clock = opts.clock;
        let metrics =
            Arc::new(Metrics::new(config.metrics.max_agent_series).context("registering metrics")?);
        let liveness = Liveness::default();
        let now = clock.now();
        let mut sup = Supervisor::new(config.policy(), source_kinds(&config), now);

        let (store, persist_tx) = match &config.state.path {
            Some(dir) => {
                let store = FileStore::open(dir).context("opening the state store")?;
                match store.load() {
                    Ok(saved) => {
                        let n = saved.checks.len();
                        sup.restore(saved.clone(), now);
                        if n > 0 {
                            info!(checks = n, path = %store.path().display(), "Restored state.");
                        }
                    }
                    Err(e) => warn!(error = %e, "Could not restore state."),
                }
                let (tx, rx) = watch::channel(Arc::new(sup.persist()));
                (Some((store, rx)), Some(tx))
            }
            None => (None, None),
        };

        let (obs_tx, obs_rx) = mpsc::channel(OBSERVATION_CAPACITY);
        let mut polled = Vec::new();
        let mut confirm_txs = HashMap::new();
        let mut push = None;
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(sup.snapshot(now)));
        for (name, kind, _) in source_kinds(&config) {
            metrics.register_source(&name, kind);
        }
        for s in &config.sources {
            if let SourceKindConfig::Push(p) = &s.kind {
                push = Some(PushState {
                    source: s.name.clone(),
                    token: p.token.clone(),
                    tx: obs_tx.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    snapshot: snapshot_rx.clone(),
                    max_agents: p.max_agents,
                });
            }
            if let Some(src) = Polled::build(&s.name, &s.kind, &clock, &metrics)? {
                let (tx, rx) = mpsc::channel(CONFIRM_CAPACITY);
                confirm_txs.insert(s.name.clone(), tx);
                polled.push((s.name.clone(), src, rx));
            }
        }

        let driver = Driver {
            sup,
            rx: obs_rx,
            confirm_txs,
            snapshot_tx,
            persist_tx,
            persist_every: config.state.flush_interval,
            metrics: metrics.clone(),
            clock: clock.clone(),
            liveness: liveness.clone(),
        };

        let alerts = AlertParts::build(
            &config,
            store.as_ref().map(|(s, _)| s),
            snapshot_rx.clone(),
            &metrics,
            &clock,
            &liveness,
        )?;

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        Ok(App {
            config,
            listener,
            addr,
            metrics,
            liveness,
            clock,
            obs_tx,
            driver,
            polled,
            push,
            snapshot_rx,
            store,
            alerts,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The latest snapshot, as the API serves it.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot_rx.clone()
    }

    /// Run until `cancel`, then drain every task within `shutdown_timeout`.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let App {
            config,
            listener,
            addr,
            metrics,
            liveness,
            clock,
            obs_tx,
            driver,
            polled,
            push,
            snapshot_rx,
            store,
            alerts,
        } = self;
        let mut tasks: Vec<(String, JoinHandle<()>)> = Vec::new();
        let mut spawn = |name: String, fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
            let c = cancel.clone();
            let n = name.clone();
            let handle = tokio::spawn(
                async move {
                    fut.await;
                    if !c.is_cancelled() {
                        error!(task = %n, "Task exited before shutdown; stopping.");
                        c.cancel();
                    }
                }
                .instrument(info_span!("task", name = %name)),
            );
            tasks.push((name, handle));
        };

        // Sources stop first so the core can drain what they sent.
        let sources_cancel = cancel.child_token();
        for (id, src, confirms) in polled {
            let ctx = SourceCtx {
                id: id.clone(),
                tx: obs_tx.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
                liveness: liveness.clone(),
            };
            let allowance = src.interval() * 3 + Duration::from_secs(30);
            liveness.register(id.as_str(), allowance);
            let c = sources_cancel.clone();
            match src {
                Polled::Redis(r) => {
                    r.connect();
                    let r2 = r.clone();
                    spawn(
                        format!("source:{id}"),
                        Box::pin(async move {
                            run_polled(r, ctx, confirms, c).await;
                            r2.disconnect().await;
                        }),
                    );
                }
                Polled::Postgres(p) => {
                    p.connect();
                    let p2 = p.clone();
                    spawn(
                        format!("source:{id}"),
                        Box::pin(async move {
                            run_polled(p, ctx, confirms, c).await;
                            p2.disconnect().await;
                        }),
                    );
                }
                Polled::Http(h) => {
                    spawn(
                        format!("source:{id}"),
                        Box::pin(run_polled(h, ctx, confirms, c)),
                    );
                }
            }
        }
        drop(obs_tx);

        let core_cancel = CancellationToken::new();
        {
            let cc = core_cancel.clone();
            spawn("core".into(), Box::pin(driver.run(cc)));
        }
        if let Some((store, rx)) = store {
            spawn(
                "state".into(),
                Box::pin(write_state(store, rx, config.state.flush_interval)),
            );
        }
        let http_state = HttpState {
            snapshot: snapshot_rx,
            metrics: metrics.clone(),
            liveness: liveness.clone(),
        };
        // Alerts stop with the core: after the sources, so the last snapshot
        // is judged and the outbox saved.
        for w in alerts.workers {
            let cc = core_cancel.clone();
            spawn(format!("notify:{}", w.name), Box::pin(w.run(cc)));
        }
        {
            let cc = core_cancel.clone();
            spawn("alerts".into(), Box::pin(alerts.engine.run(cc)));
        }
        let alerts_api = AlertsApi {
            handle: alerts.handle,
            token: config.alerting.api_token.clone().map(Arc::new),
            clock: clock.clone(),
        };
        let app = router(http_state, push).merge(crate::alerts::api::router(alerts_api));
        let hc = cancel.clone();
        spawn(
            "http".into(),
            Box::pin(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { hc.cancelled().await })
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "HTTP server failed.");
                }
            }),
        );
        info!(listen = %addr, sources = config.sources.len(), "agent-supervisor started.");

        cancel.cancelled().await;
        info!("Shutting down.");
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        sources_cancel.cancel();
        // Let sources finish first, then stop the core, which saves state.
        let mut rest = Vec::new();
        for (name, handle) in tasks {
            if name.starts_with("source:") {
                join_by(&name, handle, deadline).await;
            } else {
                rest.push((name, handle));
            }
        }
        core_cancel.cancel();
        for (name, handle) in rest {
            join_by(&name, handle, deadline).await;
        }
        info!("Stopped.");
        Ok(())
    }
}

async fn join_by(name: &str, mut handle: JoinHandle<()>, deadline: tokio::time::Instant) {
    match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(task = %name, error = %e, "Task panicked."),
        Err(_) => {
            warn!(task = %name, "Task did not stop within shutdown_timeout; abandoning it.");
            handle.abort();
        }
    }
}

/// Write the latest state at most once per `every`, and the last one when
/// the core stops.
async fn write_state(store: FileStore, mut rx: watch::Receiver<Arc<Persisted>>, every: Duration) {
    let mut saved: Option<Arc<Persisted>> = None;
    let mut failing = false;
    loop {
        let closed = rx.changed().await.is_err();
        let latest = rx.borrow_and_update().clone();
        if saved.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &latest)) {
            let st = store.clone();
            let value = latest.clone();
            match tokio::task::spawn_blocking(move || st.save(&value)).await {
                Ok(Ok(())) => {
                    if failing {
                        info!("State store writable again.");
                    }
                    failing = false;
                    saved = Some(latest);
                }
                Ok(Err(e)) => {
                    if !failing {
                        error!(error = %e, "Could not save state; alert state may be lost on restart.");
                    }
                    failing = true;
                }
                Err(e) => error!(error = %e, "State writer panicked."),
            }
        }
        if closed {
            break;
        }
        tokio::time::sleep(every).await;
    }
}
