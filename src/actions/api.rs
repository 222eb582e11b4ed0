//! `GET /api/v1/actions` (recent attempts, open cases, the circuit breaker)
//! and `POST /api/v1/agents/{id}/actions/{name}` (run an action by hand:
//! on the admin listener only, with `api_token` when one is set, checked
//! before anything else).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::oneshot;

use super::{ActionsHandle, MANUAL_QUEUE_TIMEOUT, ManualAnswer, ManualCall};
use crate::auth;
use crate::config::actions::MAX_ACTION_TIMEOUT;

#[derive(Clone)]
pub struct ActionsApi {
    /// `None` when no action is configured.
    pub handle: Option<ActionsHandle>,
    /// Bearer token a manual call needs, if set (`api_token`).
    pub token: Option<Arc<SecretString>>,
}

/// `GET /api/v1/actions`.
pub fn reads(api: ActionsApi) -> Router {
    Router::new()
        .route("/api/v1/actions", get(list))
        .with_state(api)
}

/// `POST /api/v1/agents/{id}/actions/{name}`.
pub fn writes(api: ActionsApi) -> Router {
    Router::new()
        .route("/api/v1/agents/{id}/actions/{name}", post(run))
        .with_state(api)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn list(State(api): State<ActionsApi>) -> Response {
    let Some(h) = &api.handle else {
        return Json(json!({ "actions": [], "attempts": [], "cases": {} })).into_response();
    };
    let view = h.view.borrow().clone();
    Json(json!({
        "taken_at": view.taken_at,
        "actions": h.config.actions.iter().map(|a| json!({
            "name": a.name,
            "method": a.method.as_str(),
            "url": a.url.redacted(),
        })).collect::<Vec<_>>(),
        "dry_run": view.dry_run,
        "breaker_open": view.breaker_open,
        "cases": view.cases,
        "attempts": view.attempts,
    }))
    .into_response()
}

async fn run(
    State(api): State<ActionsApi>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    if !auth::allowed(api.token.as_deref(), &headers) {
        return auth::unauthorized();
    }
    let Some(h) = &api.handle else {
        return error(StatusCode::NOT_FOUND, "no action is configured");
    };
    if h.config.action(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no action `{name}`"));
    }
    let (tx, rx) = oneshot::channel();
    let call = ManualCall {
        agent: id.clone(),
        action: name,
        reply: tx,
    };
    if h.manual
        .send_timeout(call, MANUAL_QUEUE_TIMEOUT)
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the actions task is busy; try again",
        );
    }
    // The call is bounded by its action's timeout (at most
    // MAX_ACTION_TIMEOUT); the margin covers the queue.
    let answer = tokio::time::timeout(MAX_ACTION_TIMEOUT + MANUAL_QUEUE_TIMEOUT, rx).await;
    match answer {
        Ok(Ok(ManualAnswer::Done(attempt, body))) => {
            Json(json!({ "attempt": attempt, "answer": body })).into_response()
        }
        Ok(Ok(ManualAnswer::UnknownAgent)) => {
            error(StatusCode::NOT_FOUND, format!("no agent `{id}`"))
        }
        Ok(Ok(ManualAnswer::Busy)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many action calls in flight; try again",
        ),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the call did not finish in time; see GET /api/v1/actions",
        ),
    }
}
