//! `GET /api/v1/alerts`, `GET|POST /api/v1/silences`,
//! `DELETE /api/v1/silences/{id}`. Reads come from the engine's latest view;
//! writes are commands to the engine, answered within
//! [`COMMAND_TIMEOUT`](super::engine::COMMAND_TIMEOUT) or 503.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::engine::{AlertsHandle, COMMAND_TIMEOUT, Command, RemoveResult};
use crate::auth;
use crate::clock::Clock;
use crate::core::alert::{AlertKind, Matcher, Silence, SilenceOrigin};

/// Longest silence the API accepts.
const MAX_SILENCE: chrono::Duration = chrono::Duration::days(365);
/// Largest `POST /api/v1/silences` body read (after the token is checked).
const MAX_BODY: usize = 16 * 1024;
/// Longest `comment` (characters).
const MAX_COMMENT: usize = 1024;
/// Longest `created_by` (characters).
const MAX_CREATED_BY: usize = 128;

#[derive(Clone)]
pub struct AlertsApi {
    pub handle: AlertsHandle,
    /// Bearer token required by `POST` and `DELETE`, if set.
    pub token: Option<Arc<SecretString>>,
    pub clock: Clock,
}

/// `GET /api/v1/alerts` and `GET /api/v1/silences`.
pub fn reads(api: AlertsApi) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/silences", get(silences))
        .with_state(api)
}

/// `POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`.
pub fn writes(api: AlertsApi) -> Router {
    Router::new()
        .route("/api/v1/silences", post(create))
        .route("/api/v1/silences/{id}", delete(remove))
        .with_state(api)
}

#[derive(Deserialize)]
struct AlertsQuery {
    kind: Option<AlertKind>,
    silenced: Option<bool>,
}

async fn alerts(State(api): State<AlertsApi>, Query(q): Query<AlertsQuery>) -> Response {
    let view = api.handle.view.borrow().clone();
    let now = api.clock.now();
    let list: Vec<Value> = view
        .alerts
        .iter()
        .filter(|a| q.kind.is_none_or(|k| a.alert.kind == k))
        .filter(|a| q.silenced.is_none_or(|s| a.silenced == s))
        .map(|a| {
            let mut v = serde_json::to_value(a.alert.refreshed(now)).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("silenced".into(), json!(a.silenced));
                m.insert("silenced_by".into(), json!(a.silenced_by));
                m.insert("receivers".into(), json!(a.receivers));
            }
            v
        })
        .collect();
    Json(json!({
        "taken_at": now,
        "alerts": list,
        "pending_notifications": view.pending,
    }))
    .into_response()
}

async fn silences(State(api): State<AlertsApi>) -> Response {
    let view = api.handle.view.borrow().clone();
    Json(json!({ "silences": view.silences })).into_response()
}

/// Body of `POST /api/v1/silences`: `ends_at` or `duration` (`2h`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSilence {
    matchers: Matcher,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    duration: Option<String>,
    comment: String,
    #[serde(default)]
    created_by: String,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// `None` when allowed, else the 401 to answer.
fn unauthorized(api: &AlertsApi, headers: &HeaderMap) -> Option<Response> {
    (!auth::allowed(api.token.as_deref(), headers)).then(auth::unauthorized)
}

/// The token is checked before a byte of the body is read; the body is
/// read up to [`MAX_BODY`], then parsed (globs compiled) and bounded.
async fn create(State(api): State<AlertsApi>, req: axum::extract::Request) -> Response {
    if let Some(r) = unauthorized(&api, req.headers()) {
        return r;
    }
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            );
        }
    };
    let b: NewSilence = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a silence: {e}")),
    };
    if b.comment.chars().count() > MAX_COMMENT {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`comment` is at most {MAX_COMMENT} characters"),
        );
    }
    if b.created_by.chars().count() > MAX_CREATED_BY {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`created_by` is at most {MAX_CREATED_BY} characters"),
        );
    }
    let now = api.clock.now();
    let starts_at = b.starts_at.unwrap_or(now);
    let ends_at = match (b.ends_at, b.duration.as_deref()) {
        (Some(t), None) => t,
        (None, Some(d)) => match humantime::parse_duration(d) {
            Ok(d) => {
                // Checked: a `starts_at` near the end of time plus any
                // duration must be a bad request, not a panic.
                let d = chrono::Duration::from_std(d)
                    .unwrap_or(MAX_SILENCE)
                    .min(MAX_SILENCE + chrono::Duration::seconds(1));
                match starts_at.checked_add_signed(d) {
                    Some(t) => t,
                    None => {
                        return error(StatusCode::BAD_REQUEST, "`starts_at` is too far ahead");
                    }
                }
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("duration: {e}")),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of `ends_at` and `duration`",
            );
        }
    };
    if ends_at <= starts_at.max(now) {
        return error(
            StatusCode::BAD_REQUEST,
            "`ends_at` must be in the future and after `starts_at`",
        );
    }
    if ends_at - starts_at > MAX_SILENCE {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence may last at most 365 days",
        );
    }
    if b.matchers.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "`matchers` must set at least one of kind, agent, source, labels",
        );
    }
    if b.comment.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "`comment` must say why");
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let silence = Silence {
        id: id.clone(),
        matchers: b.matchers,
        starts_at,
        ends_at,
        comment: b.comment,
        created_by: b.created_by,
        origin: SilenceOrigin::Api,
    };
    let (tx, rx) = oneshot::channel();
    if !send(&api, Command::AddSilence(Box::new(silence.clone()), tx)).await {
        return busy();
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(true)) => (
            StatusCode::CREATED,
            Json(json!({ "id": id, "silence": silence })),
        )
            .into_response(),
        Ok(Ok(false)) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "at most {} silences may be active; expire some first",
                super::book::MAX_API_SILENCES
            ),
        ),
        _ => busy(),
    }
}

async fn remove(
    State(api): State<AlertsApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(&api, &headers) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if !send(&api, Command::RemoveSilence(id.clone(), tx)).await {
        return busy();
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(RemoveResult::Removed)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(RemoveResult::NotFound)) => {
            error(StatusCode::NOT_FOUND, format!("no silence `{id}`"))
        }
        Ok(Ok(RemoveResult::FromConfig)) => error(
            StatusCode::CONFLICT,
            format!("silence `{id}` comes from the config file; remove it there"),
        ),
        _ => busy(),
    }
}

async fn send(api: &AlertsApi, cmd: Command) -> bool {
    matches!(
        tokio::time::timeout(COMMAND_TIMEOUT, api.handle.commands.send(cmd)).await,
        Ok(Ok(()))
    )
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({ "error": "the alert engine is busy or stopping; try again" })),
    )
        .into_response()
}
