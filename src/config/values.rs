//! Small value checks shared by several sections: names, label names,
//! http(s) URLs, request headers and sizes.

use secrecy::SecretString;
use serde_json::Value;

use super::walk::{self, Obj, Problems};
use crate::secret::SecretUrl;

/// A source or receiver name: `[A-Za-z0-9_.-]{1,64}`.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A Prometheus label name that is not reserved (`__`).
pub(super) fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

pub(super) fn check_http_scheme(u: &SecretUrl) -> Result<(), String> {
    let scheme = u.expose().split("://").next().unwrap_or_default();
    if matches!(scheme, "http" | "https") {
        Ok(())
    } else {
        Err(format!(
            "scheme must be http:// or https:// (found `{scheme}://`)"
        ))
    }
}

/// `headers:`, a mapping of header names to values; the values are secrets
/// (tokens) and no message shows them.
pub(super) fn headers(o: &mut Obj<'_>, p: &mut Problems) -> Vec<(String, SecretString)> {
    let mut headers = Vec::new();
    let headers_path = o.at("headers");
    match o.get("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let at = walk::join(&headers_path, k);
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    p.add(&at, "not a valid HTTP header name");
                    continue;
                }
                if let Some(value) = walk::as_string(v, &at, p) {
                    // The message never shows the value: it may be a token.
                    if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        p.add(&at, "the value is not a valid HTTP header value");
                    } else {
                        headers.push((k.clone(), SecretString::from(value)));
                    }
                }
            }
        }
        Some(_) => p.add(
            &headers_path,
            "expected a mapping of header names to values",
        ),
    }
    headers
}

/// `1048576`, `512KiB`, `1MiB`, `1MB`, `64kB`.
pub(super) fn parse_size(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1000,
                "kib" => 1024,
                "mb" => 1_000_000,
                "mib" => 1024 * 1024,
                _ => return None,
            };
            n.checked_mul(mult)
        }
        _ => None,
    }
}
