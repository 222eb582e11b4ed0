//! The status page: `GET /` (agents by state, sources, firing alerts,
//! silences; search and filters as query parameters) and `GET /agents/{id}`
//! (one agent, its checks and its last transitions), server-rendered from
//! the latest snapshot; the stylesheet, the script that keeps it live and
//! the icon are in the binary (`/static/*`), so it works with no internet.
//!
//! Read-only, on both listeners, behind the same read protection as the
//! JSON API. Every answer carries a Content-Security-Policy that allows
//! only the page's own script and stylesheet (no inline script, no other
//! origin), so even an unescaped string could not run; and a
//! `Server-Timing` header with the time it took to render.

mod filter;
mod fmt;
mod render;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;
use tokio::sync::watch;

use crate::alerts::engine::AlertsView;
use crate::core::Snapshot;
use crate::core::remedy::RemedyView;

use filter::{Filter, RawQuery};
use render::StatusPage;

pub use render::{ATTENTION_PAGE, HEALTHY_PAGE};

/// What the page reads: the latest of each published view.
#[derive(Clone)]
pub struct PageState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub alerts: watch::Receiver<Arc<AlertsView>>,
    pub remedy: watch::Receiver<Arc<RemedyView>>,
}

/// `/`, `/agents/{id}` and the assets.
pub fn routes(state: PageState) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/agents/{id}", get(agent))
        .route("/static/status.css", get(css))
        .route("/static/status.js", get(js))
        .route("/static/favicon.svg", get(icon))
        .with_state(state)
}

const CSS: &str = include_str!("assets/status.css");
const JS: &str = include_str!("assets/status.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// Only the page's own files; scripts and styles never inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// The latest of each view, taken once: the page is rendered from these
/// alone, never from the core.
fn views(s: &PageState) -> (Arc<Snapshot>, Arc<AlertsView>, Arc<RemedyView>) {
    (
        s.snapshot.borrow().clone(),
        s.alerts.borrow().clone(),
        s.remedy.borrow().clone(),
    )
}

/// An HTML answer with the page's headers, and how long it took.
fn page(code: StatusCode, markup: Markup, started: Instant) -> Response {
    let took = started.elapsed().as_secs_f64() * 1e3;
    let timing = HeaderValue::from_str(&format!("render;dur={took:.2}"))
        .unwrap_or(HeaderValue::from_static("render"));
    (
        code,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (HeaderName::from_static("server-timing"), timing),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A query that cannot be read at all (bad percent-encoding, a field
/// given twice) shows the whole page and says so, rather than a 400.
async fn status(
    State(s): State<PageState>,
    raw: Result<Query<RawQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let (snap, alerts, remedy) = views(&s);
    let (filter, pages) = match raw {
        Ok(Query(raw)) => Filter::parse(&raw),
        Err(e) => {
            let (mut f, pages) = Filter::parse(&RawQuery::default());
            f.problems
                .push(format!("The query was not understood: {e}"));
            (f, pages)
        }
    };
    let markup = StatusPage {
        snap: &snap,
        alerts: &alerts,
        remedy: &remedy,
        filter: &filter,
        pages,
    }
    .render();
    page(StatusCode::OK, markup, started)
}

async fn agent(State(s): State<PageState>, Path(id): Path<String>) -> Response {
    let started = Instant::now();
    let (snap, alerts, remedy) = views(&s);
    match snap.agent(&id) {
        Some(a) => page(
            StatusCode::OK,
            render::agent_page(&a, snap.taken_at, &alerts, &remedy),
            started,
        ),
        None => page(StatusCode::NOT_FOUND, render::unknown_agent(&id), started),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Links carry the version: a new binary is a new URL.
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}
