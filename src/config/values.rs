//! Small value checks shared by several sections: names, label names,
//! http(s) URLs, request headers and sizes.

use secrecy::SecretString;
use serde_json::Value;

use super::walk::{self, Obj, Problems};
use crate::secret::SecretUrl;

/// The required `name` of a source or receiver, when well-formed:
/// `[A-Za-z0-9_.-]{1,64}`.
pub(super) fn name(o: &mut Obj<'_>, p: &mut Problems) -> Option<String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    o.required_string("name", p).filter(|n| {
        if !valid(n) {
            p.add(o.at("name"), "use 1 to 64 letters, digits, `_`, `-` or `.`");
        }
        valid(n)
    })
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

/// `labels:` of `o`, a mapping of label names to strings: each pair with a
/// valid name is given to `each` with its path; `values` says what the
/// values are in the message of a wrong shape.
pub(super) fn labels(
    o: &mut Obj<'_>,
    values: &str,
    p: &mut Problems,
    mut each: impl FnMut(&str, String, &str, &mut Problems),
) {
    let labels_path = o.at("labels");
    match o.get("labels") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let at = walk::join(&labels_path, k);
                if !valid_label_name(k) {
                    p.add(
                        &at,
                        "label names use letters, digits and `_`, not starting with a digit or `__`",
                    );
                } else if let Some(s) = walk::as_string(v, &at, p) {
                    each(k, s, &at, p);
                }
            }
        }
        Some(_) => p.add(
            &labels_path,
            format!("expected a mapping of label names to {values}"),
        ),
    }
}

/// The required `url` of `o`, parsed and accepted by `check`.
pub(super) fn required_url(
    o: &mut Obj<'_>,
    p: &mut Problems,
    check: impl Fn(&SecretUrl) -> Result<(), String>,
) -> Option<SecretUrl> {
    let s = o.required_string("url", p)?;
    SecretUrl::parse(&s)
        .and_then(|u| check(&u).map(|()| u))
        .map_err(|e| p.add(o.at("url"), e))
        .ok()
}

/// `Ok` when the scheme of `u` is one of `schemes` (the message shows the
/// first two).
pub(super) fn check_scheme(u: &SecretUrl, schemes: &[&str]) -> Result<(), String> {
    let scheme = u.expose().split("://").next().unwrap_or_default();
    if schemes.contains(&scheme) {
        return Ok(());
    }
    let shown: Vec<String> = schemes.iter().take(2).map(|s| format!("{s}://")).collect();
    Err(format!(
        "scheme must be {} (found `{scheme}://`)",
        shown.join(" or ")
    ))
}

pub(super) fn check_http_scheme(u: &SecretUrl) -> Result<(), String> {
    check_scheme(u, &["http", "https"])
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
