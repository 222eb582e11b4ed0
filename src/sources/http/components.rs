//! Per-agent statuses read out of the service's JSON body.

use serde_json::Value;

use super::MAX_DETAIL;
use crate::config::HttpComponent;
use crate::core::timestamp::parse_json_value;
use crate::core::{AgentId, Reading, Status, StatusOrigin};
use crate::sources::common::truncate;

/// One component's reading out of the body.
pub(crate) fn component_reading(agent: &AgentId, c: &HttpComponent, body: &Value) -> Reading {
    let agent = agent.clone();
    let value = match body.pointer(&c.pointer) {
        None | Some(Value::Null) => {
            return Reading::Missing {
                agent,
                reason: format!("{} absent from the body", c.pointer),
            };
        }
        Some(v) => v,
    };
    let word = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) | Value::Array(_) => {
            let what = if value.is_object() {
                "an object"
            } else {
                "a list"
            };
            return Reading::Status {
                agent,
                status: Status::unanswered(
                    StatusOrigin::BadAnswer,
                    format!("{} holds {what}, not a status value", c.pointer),
                ),
            };
        }
        Value::Null => String::new(),
    };
    let healthy = component_healthy(c, &word);
    let status = Status::reported(healthy, truncate(&word, MAX_DETAIL));
    let Some(ptr) = &c.last_seen else {
        return Reading::Status { agent, status };
    };
    match body.pointer(ptr) {
        None | Some(Value::Null) => Reading::Invalid {
            agent,
            reason: format!("{ptr} absent from the body"),
        },
        Some(v) => match parse_json_value(v) {
            Ok(last_seen) => Reading::Heartbeat {
                agent,
                last_seen,
                status: Some(status),
            },
            Err(e) => Reading::Invalid {
                agent,
                reason: format!("{ptr}: {e}"),
            },
        },
    }
}

/// Whether a component's value means healthy: one of its `healthy` values
/// (by default the [`HEALTHY_WORDS`](crate::core::HEALTHY_WORDS) every
/// source shares).
fn component_healthy(c: &HttpComponent, word: &str) -> bool {
    c.healthy
        .iter()
        .any(|h| h.eq_ignore_ascii_case(word.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comp(pointer: &str, last_seen: Option<&str>) -> HttpComponent {
        HttpComponent {
            agent: "a".into(),
            pointer: pointer.into(),
            healthy: crate::core::HEALTHY_WORDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            last_seen: last_seen.map(str::to_string),
        }
    }

    #[test]
    fn component_values_map_to_readings() {
        let body = json!({"s": "ACTIVE", "e": "error", "b": true, "o": {"x": 1}, "n": null,
                          "l": [1], "t": "2026-01-01T00:00:00"});
        let a = AgentId::from("a");
        match component_reading(&a, &comp("/s", None), &body) {
            Reading::Status { status, .. } => assert!(status.healthy),
            r => panic!("{r:?}"),
        }
        match component_reading(&a, &comp("/e", None), &body) {
            Reading::Status { status, .. } => {
                assert!(!status.healthy);
                assert_eq!(&*status.detail, "error");
            }
            r => panic!("{r:?}"),
        }
        match component_reading(&a, &comp("/b", None), &body) {
            Reading::Status { status, .. } => assert!(status.healthy),
            r => panic!("{r:?}"),
        }
        for p in ["/o", "/l"] {
            match component_reading(&a, &comp(p, None), &body) {
                Reading::Status { status, .. } => {
                    assert!(!status.healthy);
                    assert!(status.detail.contains("not a status value"), "{status:?}");
                }
                r => panic!("{r:?}"),
            }
        }
        for p in ["/absent", "/n"] {
            assert!(matches!(
                component_reading(&a, &comp(p, None), &body),
                Reading::Missing { .. }
            ));
        }
        assert!(matches!(
            component_reading(&a, &comp("/s", Some("/t")), &body),
            Reading::Heartbeat {
                status: Some(Status { healthy: true, .. }),
                ..
            }
        ));
        assert!(matches!(
            component_reading(&a, &comp("/s", Some("/nope")), &body),
            Reading::Invalid { .. }
        ));
    }

    #[test]
    fn default_components_share_the_healthy_words_and_explicit_lists_are_exact() {
        let default = comp("/s", None);
        assert!(component_healthy(&default, "running"));
        assert!(component_healthy(&default, " Healthy "));
        assert!(!component_healthy(&default, "error"));
        let explicit = HttpComponent {
            healthy: vec!["active".into()],
            ..default
        };
        assert!(component_healthy(&explicit, "ACTIVE"));
        assert!(!component_healthy(&explicit, "ok"));
    }
}
