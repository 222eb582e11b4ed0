//! Bearer tokens: one comparison for every endpoint that takes one, in
//! constant time, on the headers only (before any body is read). Reads
//! also take the read token as the password of HTTP Basic (any user name),
//! which is how a browser sends it for the status page.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

/// What `Authorization: <scheme> <credentials>` carries.
fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(scheme)?
        .strip_prefix(' ')
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub fn bearer_is(headers: &HeaderMap, token: &SecretString) -> bool {
    let Some(given) = credentials(headers, "Bearer") else {
        return false;
    };
    given
        .trim()
        .as_bytes()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
}

/// Whether `headers` carry `Authorization: Basic` whose password (any
/// user name) is `token`.
pub fn basic_password_is(headers: &HeaderMap, token: &SecretString) -> bool {
    use base64::Engine as _;
    let Some(encoded) = credentials(headers, "Basic") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    decoded[colon + 1..]
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

/// The 401 of the status page: a Basic challenge, so that a browser asks
/// for the read token (as the password) and sends it from then on.
pub fn unauthorized_page() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                r#"Basic realm="agent-supervisor", charset="UTF-8""#,
            ),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "The status page needs the read token: give it as the password (any user name).\n",
    )
        .into_response()
}

/// Who may read `GET /api/v1/*` and the status page: the holder of
/// `read_token`, or of `api_token` (which may already change silences),
/// as a Bearer token or as the password of HTTP Basic.
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
        let holds = |t: &SecretString| bearer_is(headers, t) || basic_password_is(headers, t);
        holds(read) || self.api_token.as_deref().is_some_and(holds)
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

    fn basic(user_pass: &str) -> HeaderMap {
        use base64::Engine as _;
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn reads_take_the_token_as_a_basic_password_but_writes_do_not() {
        let token = SecretString::from("s3cret".to_string());
        let read = ReadAccess {
            read_token: Some(Arc::new(token.clone())),
            api_token: None,
        };
        for ok in ["anyone:s3cret", ":s3cret"] {
            assert!(read.allows(&basic(ok)), "{ok}");
        }
        for wrong in ["s3cret:", "anyone:s3cre", "anyone:s3cret2", "s3cret"] {
            assert!(!read.allows(&basic(wrong)), "{wrong}");
        }
        let mut garbled = HeaderMap::new();
        garbled.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!read.allows(&garbled));
        // Writes check Bearer alone.
        assert!(!allowed(Some(&token), &basic("anyone:s3cret")));
    }
}
