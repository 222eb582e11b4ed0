//! `${VAR}` and `${VAR:-default}` substitution, applied to every string value
//! of the parsed tree (never to the raw text, so a value holding `:` or `#`
//! cannot change the YAML's structure). `$$` is a literal `$`.

use serde_json::Value;

use super::walk::{Problems, index, join};

/// Substitute in place; problems name the path, never the value.
pub fn substitute(
    v: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) {
    match v {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(out) => *s = out,
            Err(msg) => p.add_value(path, msg),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &index(path, i), lookup, p);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                substitute(item, &join(path, k), lookup, p);
            }
        }
        _ => {}
    }
}

/// Expand one string.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err("unclosed `${` in value".into());
        };
        let body = &body_and_rest[..end];
        rest = &body_and_rest[end + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        match (
            lookup(name).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                ));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("redis.internal".into()),
            "EMPTY" => Some(String::new()),
            "PASS" => Some("p#ss:w0rd".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_and_defaults_are_expanded() {
        assert_eq!(
            expand("redis://${HOST}:6379", &env).unwrap(),
            "redis://redis.internal:6379"
        );
        assert_eq!(expand("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        assert_eq!(expand("${PASS}", &env).unwrap(), "p#ss:w0rd");
    }

    #[test]
    fn unset_variable_without_default_is_an_error_naming_it() {
        let err = expand("${SUPABASE_DB_URL}", &env).unwrap_err();
        assert!(err.contains("SUPABASE_DB_URL"), "{err}");
        assert!(expand("${A", &env).is_err());
        assert!(expand("${a-b}", &env).is_err());
    }
}
