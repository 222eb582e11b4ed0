//! Wiring: [`App::build`] binds and connects (port 0 works; [`App::port`]
//! tells which), [`App::run`] runs every task until cancelled, then drains
//! them within `shutdown_timeout`, naming any that did not stop.

mod alerts;
mod polled;
mod state;
mod tasks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::actions::api::ActionsApi;
use crate::actions::{ActionsCtx, ActionsHandle, ActionsTask};
use crate::alerts::api::AlertsApi;
use crate::auth::ReadAccess;
use crate::clock::{Clock, instant_after};
use crate::config::{Config, SourceKindConfig};
use crate::core::remedy::RemedyView;
use crate::core::{
    AgentId, ErrorKind, Observation, Snapshot, SourceFailure, SourceId, SourceKind, Supervisor,
};
use crate::driver::{
    CONFIRM_CAPACITY, Driver, OBSERVATION_CAPACITY, StateHandoff, URGENT_CAPACITY, handoff,
};
use crate::ha::{Leadership, LeaseClient, LeaseTask};
use crate::http::{HttpState, Routers, ServerLimits, routers};
use crate::liveness::Liveness;
use crate::sinks::state::{FileStore, StateFile};
use crate::sources::push::PushState;
use crate::sources::{PollSource, SourceCtx, run_polled};
use crate::telemetry::metrics::Metrics;

use alerts::AlertParts;
pub use polled::Polled;
use state::write_state;
use tasks::{Backoff, Tasks, restarting};

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
    admin: Option<(TcpListener, SocketAddr)>,
    metrics: Arc<Metrics>,
    liveness: Liveness,
    clock: Clock,
    obs_tx: mpsc::Sender<Observation>,
    urgent_tx: mpsc::Sender<Observation>,
    driver: Driver,
    polled: Vec<(SourceId, Polled, mpsc::Receiver<Vec<AgentId>>)>,
    push: Option<PushState>,
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    store: Option<(FileStore, watch::Receiver<StateHandoff>)>,
    alerts: AlertParts,
    lease: Option<LeaseTask>,
    /// Remediation, when `actions:` are configured.
    actions: Option<(ActionsTask, ActionsHandle)>,
    /// The remediation view (the actions task's, or a fixed empty one).
    remedy: (
        watch::Sender<Arc<RemedyView>>,
        watch::Receiver<Arc<RemedyView>>,
    ),
}

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
                for file in [
                    StateFile::State,
                    StateFile::Alerts,
                    StateFile::Outbox,
                    StateFile::Actions,
                ] {
                    metrics.register_state_file(file);
                }
                if let Some(saved) = alerts::loaded(store.load(), StateFile::State, &metrics) {
                    let n = saved.checks.len();
                    sup.restore(saved, now);
                    if n > 0 {
                        info!(checks = n, path = %store.path().display(), "Restored state.");
                    }
                }
                let (tx, rx) = watch::channel(handoff(None));
                (Some((store, rx)), Some(tx))
            }
            None => (None, None),
        };

        let (obs_tx, obs_rx) = mpsc::channel(OBSERVATION_CAPACITY);
        let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_CAPACITY);
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
                    tx: urgent_tx.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    snapshot: snapshot_rx.clone(),
                    max_agents: p.max_agents,
                    max_clock_skew: config.defaults.max_clock_skew,
                    admitted: Default::default(),
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
            urgent: urgent_rx,
            confirm_txs,
            snapshot_tx,
            persist_tx,
            persist_every: config.state.flush_interval,
            metrics: metrics.clone(),
            clock: clock.clone(),
            liveness: liveness.clone(),
        };

        let (leadership, lease, shared) = match &config.ha {
            None => (Leadership::alone(), None, None),
            Some(ha) => {
                metrics
                    .register_ha()
                    .context("registering the ha metrics")?;
                let leadership = LeaseTask::leadership();
                let client = Arc::new(LeaseClient::new(ha).context("the ha lease store")?);
                let task = LeaseTask {
                    client: client.clone(),
                    cfg: ha.clone(),
                    leadership: leadership.clone(),
                    metrics: metrics.clone(),
                };
                (leadership, Some(task), Some(client))
            }
        };
        let (remedy_tx, remedy_rx) =
            watch::channel(Arc::new(crate::actions::initial_view(&config.remediation)));
        let alerts = AlertParts::build(
            &config,
            store.as_ref().map(|(s, _)| s),
            alerts::Inputs {
                snapshots: snapshot_rx.clone(),
                remedy: remedy_rx.clone(),
            },
            &metrics,
            &clock,
            &liveness,
            alerts::Replicas {
                leadership: leadership.clone(),
                shared,
            },
        )?;
        let actions = if config.remediation.actions.is_empty() {
            None
        } else {
            Some(crate::actions::build(
                &config.remediation,
                ActionsCtx {
                    policy: config.policy(),
                    snapshots: snapshot_rx.clone(),
                    alerts: alerts.handle.view.clone(),
                    leadership,
                    view: remedy_tx.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    liveness: liveness.clone(),
                    store: store.as_ref().map(|(s, _)| {
                        let saved = crate::actions::load(s.dir());
                        (
                            s.dir().to_path_buf(),
                            alerts::loaded(saved, StateFile::Actions, &metrics).flatten(),
                        )
                    }),
                },
            )?)
        };

        let (listener, addr) = bind(config.listeners.listen).await?;
        let admin = match config.listeners.admin_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        Ok(App {
            config,
            listener,
            addr,
            admin,
            metrics,
            liveness,
            clock,
            obs_tx,
            urgent_tx,
            driver,
            polled,
            push,
            snapshot_rx,
            store,
            alerts,
            lease,
            actions,
            remedy: (remedy_tx, remedy_rx),
        })
    }

    /// The port of `listen`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of `admin_listen`, if there is one.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, a)| a.port())
    }

    /// Run until `cancel`, then drain every task within `shutdown_timeout`.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let App {
            config,
            listener,
            addr,
            admin,
            metrics,
            liveness,
            clock,
            obs_tx,
            urgent_tx,
            driver,
            polled,
            push,
            snapshot_rx,
            store,
            alerts,
            lease,
            actions,
            remedy: (_remedy_tx, remedy_rx),
        } = self;
        let mut tasks = Tasks::new(cancel.clone());

        // Sources stop first so the core can drain what they sent.
        let sources_cancel = cancel.child_token();
        for (id, src, confirms) in polled {
            let ctx = SourceCtx {
                id: id.clone(),
                tx: obs_tx.clone(),
                urgent: urgent_tx.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
                liveness: liveness.clone(),
            };
            let allowance = src.interval() * 3 + Duration::from_secs(30);
            liveness.register(id.as_str(), allowance);
            let name = format!("source:{id}");
            metrics.register_task(&name);
            let cancel = sources_cancel.clone();
            let src = Arc::new(src);
            tasks.spawn(name.clone(), async move {
                let mut confirms = confirms;
                let metrics = ctx.metrics.clone();
                let report = (ctx.id.clone(), ctx.tx.clone());
                restarting(
                    &name,
                    &mut confirms,
                    &cancel,
                    Backoff::SOURCE,
                    &metrics,
                    |confirms| {
                        Box::pin(run_polled(
                            src.clone(),
                            ctx.clone(),
                            confirms,
                            cancel.clone(),
                        ))
                    },
                    // Its agents are `unknown` until it reads again.
                    |what, wait| {
                        let (source, tx) = report.clone();
                        Box::pin(async move {
                            let error = SourceFailure {
                                kind: ErrorKind::Other,
                                message: format!(
                                    "source task {what}; restarting in {}",
                                    humantime::format_duration(wait)
                                ),
                            };
                            let _ = tx.send(Observation::SourceError { source, error }).await;
                        })
                    },
                )
                .await;
            });
        }
        drop(obs_tx);
        drop(urgent_tx);

        let core_cancel = CancellationToken::new();
        {
            let cc = core_cancel.clone();
            tasks.spawn("core".into(), driver.run(cc));
        }
        if let Some((store, rx)) = store {
            tasks.spawn(
                "state".into(),
                write_state(store, rx, config.state.flush_interval, metrics.clone()),
            );
        }
        let http_state = HttpState {
            snapshot: snapshot_rx,
            metrics: metrics.clone(),
            liveness: liveness.clone(),
            remedy: remedy_rx,
        };
        // Alerts stop with the core: after the sources, so the last snapshot
        // is judged and the outbox saved.
        for w in alerts.workers {
            let cc = core_cancel.clone();
            tasks.spawn(format!("notify:{}", w.name), w.run(cc));
        }
        {
            let cc = core_cancel.clone();
            tasks.spawn("alerts".into(), alerts.engine.run(cc));
        }
        // Released at shutdown, with the alerts: another replica takes the
        // lease at once instead of after its ttl.
        if let Some(lease) = lease {
            let cc = core_cancel.clone();
            tasks.spawn("ha-lease".into(), lease.run(cc));
        }
        // Actions stop with the alerts (they read the same snapshots).
        let actions_handle = match actions {
            Some((task, handle)) => {
                let cc = core_cancel.clone();
                tasks.spawn("actions".into(), task.run(cc));
                Some(handle)
            }
            None => None,
        };
        let api_token = config.alerting.api_token.clone().map(Arc::new);
        let actions_api = ActionsApi {
            handle: actions_handle,
            token: api_token.clone(),
        };
        let alerts_api = AlertsApi {
            handle: alerts.handle,
            token: api_token.clone(),
            clock: clock.clone(),
        };
        let read = ReadAccess {
            read_token: config.listeners.read_token.clone().map(Arc::new),
            api_token,
        };
        let Routers {
            public,
            admin: admin_routes,
        } = routers(http_state, push, alerts_api, actions_api, read);
        let limits = ServerLimits::for_this_process(1 + usize::from(admin.is_some()));
        let hc = cancel.clone();
        tasks.spawn("http".into(), async move {
            fail::fail_point!("http-serve", |_| ());
            crate::http::serve(listener, public, limits, hc).await;
        });
        let admin_addr = match admin {
            Some((admin_listener, admin_addr)) => {
                let hc = cancel.clone();
                tasks.spawn("http-admin".into(), async move {
                    crate::http::serve(admin_listener, admin_routes, limits, hc).await;
                });
                admin_addr.to_string()
            }
            None => "off".into(),
        };
        info!(
            listen = %addr,
            admin_listen = %admin_addr,
            sources = config.sources.len(),
            "agent-supervisor started."
        );

        cancel.cancelled().await;
        info!("Shutting down.");
        let deadline = instant_after(tokio::time::Instant::now(), config.shutdown_timeout);
        sources_cancel.cancel();
        // Let sources finish first, then stop the core, which saves state.
        tasks
            .join(|name| name.starts_with("source:"), deadline)
            .await;
        core_cancel.cancel();
        tasks.join(|_| true, deadline).await;
        info!("Stopped.");
        match tasks.ended_early() {
            Some(name) => Err(anyhow::anyhow!("task {name} exited before shutdown")),
            None => Ok(()),
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    Ok((listener, bound))
}
