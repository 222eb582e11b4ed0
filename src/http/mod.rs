//! The sidecar's own HTTP servers: `/metrics`, `/healthz`, `/readyz`, the
//! JSON API and the status page (`page`) on `listen`; the same plus the
//! push endpoint and silence writes on `admin_listen` (see
//! [`crate::config::listeners`]). Handlers read the latest snapshot; none
//! of them waits on the core or on a datastore.

pub mod page;
mod serve;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::actions::api::{self as actions_api, ActionsApi};
use crate::alerts::api::{self as alerts_api, AlertsApi};
use crate::auth;
use crate::core::remedy::RemedyView;
use crate::core::snapshot::{AgentAt, Entry};
use crate::core::{Snapshot, State as AgentState};
use crate::liveness::Liveness;
use crate::sources::push::{self, PushState};
use crate::telemetry::metrics::Metrics;

pub use serve::{ServerLimits, serve};

#[derive(Clone)]
pub struct HttpState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub liveness: Liveness,
    /// Remediation: an agent's open case and last report.
    pub remedy: watch::Receiver<Arc<RemedyView>>,
}

/// What the two listeners serve: `public` (on `listen`) only reads;
/// `admin` (on `admin_listen`) reads and takes writes.
pub struct Routers {
    pub public: Router,
    pub admin: Router,
}

/// The routes of both listeners. Every read but `/metrics` and the probes
/// (`GET /api/v1/*`, the status page) needs `read_token` when one is set;
/// pushes and silence writes check their own tokens, before
/// the body is read, and exist only on the admin listener (the public one
/// answers any other method than GET or HEAD with 403).
pub fn routers(
    state: HttpState,
    push: Option<PushState>,
    alerts: AlertsApi,
    actions: ActionsApi,
    read: auth::ReadAccess,
) -> Routers {
    let page = page::PageState {
        snapshot: state.snapshot.clone(),
        alerts: alerts.handle.view.clone(),
        remedy: state.remedy.clone(),
    };
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}", get(agent))
        .route("/api/v1/sources", get(sources))
        .with_state(state)
        .merge(alerts_api::reads(alerts.clone()))
        .merge(actions_api::reads(actions.clone()))
        .merge(page::routes(page));
    let writes = Router::new()
        .route("/api/v1/heartbeats/{agent}", post(push::receive))
        .layer(DefaultBodyLimit::max(push::MAX_BODY))
        .with_state(push)
        .merge(alerts_api::writes(alerts))
        .merge(actions_api::writes(actions));
    let guard = |read_only| Guard {
        read: read.clone(),
        read_only,
    };
    Routers {
        public: reads
            .clone()
            .layer(middleware::from_fn_with_state(guard(true), guarded)),
        admin: reads
            .merge(writes)
            .layer(middleware::from_fn_with_state(guard(false), guarded)),
    }
}

#[derive(Clone)]
struct Guard {
    read: auth::ReadAccess,
    /// Only GET and HEAD are served.
    read_only: bool,
}

/// Before any route: the read token on every read but `/metrics` and the
/// probes; on the public listener, 403 for anything but a read.
async fn guarded(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if g.read_only && !reading {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "this listener only serves reads; pushes, silence changes and \
                          actions go to admin_listen"
            })),
        )
            .into_response();
    }
    let path = req.uri().path();
    if reading && !open_to_all(path) && !g.read.allows(req.headers()) {
        // A browser asks for the token itself on a Basic challenge; API
        // clients get the Bearer one they always did.
        return if path.starts_with("/api/") {
            auth::unauthorized()
        } else {
            auth::unauthorized_page()
        };
    }
    next.run(req).await
}

/// What Prometheus and the kubelet read without a token.
fn open_to_all(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz")
}

fn latest(s: &HttpState) -> Arc<Snapshot> {
    s.snapshot.borrow().clone()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let body = crate::sinks::metrics::stream(&s.metrics, latest(&s))
        .map(|part| Ok::<_, std::convert::Infallible>(Bytes::from(part)));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from_stream(body),
    )
        .into_response()
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let stalled = s.liveness.stalled();
    if stalled.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: {}\n", stalled.join(", ")),
        )
            .into_response()
    }
}

/// Ready once the config is loaded and the server listens: never tied to a
/// datastore (see DESIGN §6).
async fn readyz() -> &'static str {
    "ready\n"
}

#[derive(Deserialize)]
struct AgentsQuery {
    /// Only agents in this state.
    state: Option<AgentState>,
    /// At most this many agents (default and most: [`PAGE_MAX`]).
    limit: Option<usize>,
    /// Only agents whose id sorts after this one: the `next` of the
    /// previous page.
    after: Option<String>,
}

/// Most agents in one `/api/v1/agents` answer.
const PAGE_MAX: usize = 1000;

/// Agents by id, a page at a time: `limit` (at most [`PAGE_MAX`]) from
/// after `after`; `next` is the cursor of the following page, absent on the
/// last one. Ids are the keys, so a page is stable while agents change.
async fn agents(State(s): State<HttpState>, Query(q): Query<AgentsQuery>) -> Response {
    let snap = latest(&s);
    let limit = q.limit.unwrap_or(PAGE_MAX).clamp(1, PAGE_MAX);
    let start = q.after.as_deref().map_or(0, |after| snap.after(after));
    let mut matching: Box<dyn Iterator<Item = Entry<'_>>> = match q.state {
        // Only the chunks of the snapshot holding an agent in that state.
        Some(st) => Box::new(snap.in_state(st, start).map(|(_, e)| e)),
        None => Box::new(snap.iter().skip(start)),
    };
    let list: Vec<AgentAt<'_>> = matching
        .by_ref()
        .take(limit)
        .map(|agent| AgentAt {
            agent,
            at: snap.taken_at,
        })
        .collect();
    let next = match (list.last(), matching.next()) {
        (Some(last), Some(_)) => Some(last.agent.id.as_str().to_string()),
        _ => None,
    };
    let counts: serde_json::Map<String, serde_json::Value> = snap
        .counts()
        .iter()
        .map(|(st, n)| (st.as_str().to_string(), json!(n)))
        .collect();
    let mut answer = json!({
        "taken_at": snap.taken_at,
        "counts": counts,
        "agents": list,
    });
    if let Some(next) = next {
        answer["next"] = json!(next);
    }
    Json(answer).into_response()
}

async fn agent(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    let snap = latest(&s);
    match snap.agent(&id) {
        Some(a) => {
            let remedy = s.remedy.borrow().clone();
            let view = AgentAt {
                agent: a,
                at: snap.taken_at,
            };
            let mut answer = json!({ "taken_at": snap.taken_at, "agent": view });
            // What remediation does about it, and what the service itself
            // last said about it (the report).
            if let Some(case) = remedy.cases.get(&a.id) {
                answer["remediation"] = json!(case);
            }
            if let Some(report) = remedy.reports.get(&a.id) {
                answer["report"] = json!(report);
            }
            Json(answer).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no agent `{id}`") })),
        )
            .into_response(),
    }
}

async fn sources(State(s): State<HttpState>) -> Response {
    let snap = latest(&s);
    Json(json!({ "taken_at": snap.taken_at, "sources": snap.sources })).into_response()
}
