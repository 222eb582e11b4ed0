//! Bearer tokens: one comparison for every endpoint that takes one, in
//! constant time, on the headers only (before any body is read).

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub fn bearer_is(headers: &HeaderMap, token: &SecretString) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given
        .trim()
        .as_bytes()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
}

/// Whether a request may pass: always without a `token`, else only with it.
pub fn allowed(token: Option<&SecretString>, headers: &HeaderMap) -> bool {
    token.is_none_or(|t| bearer_is(headers, t))
}

/// The 401 every endpoint answers: JSON, with `WWW-Authenticate: Bearer`.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "missing or wrong bearer token" })),
    )
        .into_response()
}

/// Who may read `GET /api/v1/*`: the holder of `read_token`, or of
/// `api_token` (which may already change silences).
#[derive(Clone, Default)]
pub struct ReadAccess {
    pub read_token: Option<Arc<SecretString>>,
    pub api_token: Option<Arc<SecretString>>,
}

impl ReadAccess {
    /// Whether a read with these headers may pass.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(read) = &self.read_token else {
            return true;
        };
        bearer_is(headers, read)
            || self
                .api_token
                .as_deref()
                .is_some_and(|t| bearer_is(headers, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let token = SecretString::from("s3cret".to_string());
        let mut h = HeaderMap::new();
        assert!(!bearer_is(&h, &token));
        assert!(allowed(None, &h));
        for wrong in [
            "Bearer nope",
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
        ] {
            h.insert(header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!bearer_is(&h, &token), "{wrong}");
            assert!(!allowed(Some(&token), &h), "{wrong}");
        }
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(bearer_is(&h, &token));
        assert!(allowed(Some(&token), &h));
    }
}
