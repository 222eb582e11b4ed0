//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz, nightly), one
//! per parser of outside input. `cargo test` replays the committed corpora
//! through the same functions on stable (`fuzz/corpus/<target>/`), so a
//! crash once found stays fixed. Each must return without panicking,
//! whatever the bytes.

use std::path::Path;

use crate::core::Persisted;
use crate::core::timestamp::{from_epoch, parse_json_value, parse_text};

/// Heartbeat values: text (epochs, RFC 3339, ISO 8601, JSON objects with a
/// field), JSON scalars, and float epochs.
pub fn timestamp(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_text(text, Some("last_seen"));
        let _ = parse_text(text, Some("a.b"));
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = parse_json_value(&v);
        }
    }
    if let Ok(bytes) = <[u8; 8]>::try_from(data) {
        let _ = from_epoch(f64::from_le_bytes(bytes));
    }
}

/// `config.yaml` text, with every `${VAR}` unset and then set.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.yaml");
        let _ = crate::config::parse(text, path, &|_| None);
        let _ = crate::config::parse(text, path, &|_| Some("x".into()));
    }
}

/// A push request body (`POST /api/v1/heartbeats/{agent}`).
pub fn push_body(data: &[u8]) {
    let _ = crate::sources::push::read_body(data, chrono::Utc::now());
}

/// A `/health` body: component statuses and heartbeat times read out of it
/// by JSON Pointer (the body is JSON here; the probe checks that first).
pub fn health_body(data: &[u8]) {
    use crate::config::HttpComponent;
    use crate::core::{AgentId, HEALTHY_WORDS};
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let component = |pointer: &str, last_seen: Option<&str>| HttpComponent {
        agent: "a".into(),
        pointer: pointer.into(),
        healthy: HEALTHY_WORDS.iter().map(|s| s.to_string()).collect(),
        last_seen: last_seen.map(str::to_string),
    };
    for c in [
        component("/status", None),
        component("/agents/a/status", Some("/agents/a/last_seen")),
        component("/0", Some("/1")),
        component("", Some("")),
    ] {
        let _ = crate::sources::http::components::component_reading(&AgentId::new("a"), &c, &body);
    }
}

/// A `POST /api/v1/silences` body (matchers compiled as globs).
pub fn silence(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::alerts::api::NewSilence>(data);
}

/// The state files: `state.json`, and `alerts.json`'s book.
pub fn state_files(data: &[u8]) {
    let _ = crate::sinks::state::decode_json::<Persisted>(data, 1, None);
    let _ = crate::sinks::state::decode_json::<crate::alerts::book::Book>(data, 1, Some("data"));
}

/// `/metrics`' per-agent families for agents whose ids, source and label
/// value come from the bytes (`source \x01 team \x01 id \x01 id...`):
/// the text and the ids, for the caller to parse with a Prometheus text
/// parser. `None` for values that parser cannot take though Prometheus
/// does (empty, raw control characters but the newline).
pub fn metrics_text(data: &[u8]) -> Option<(String, Vec<String>)> {
    use crate::core::snapshot::AgentView;
    use crate::core::{Snapshot, State};
    let text = std::str::from_utf8(data).ok()?;
    let parts: Vec<&str> = text.split('\u{1}').collect();
    let usable = |v: &str| !v.is_empty() && !v.chars().any(|c| c.is_control() && c != '\n');
    if parts.len() < 3 || !parts.iter().all(|p| usable(p)) {
        return None;
    }
    let (source, team, ids) = (parts[0], parts[1], &parts[2..]);
    let now = chrono::Utc::now();
    let mut beats = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(*id) {
            continue;
        }
        let state = State::ALL[i % State::ALL.len()];
        beats.push((
            AgentView::with_one_check(id, state, source, team, now),
            vec![Some(now)],
        ));
    }
    let snap = Snapshot::of(now, beats);
    let mut out = String::new();
    crate::sinks::metrics::render_agents(&snap, 1 + ids.len() / 2, &mut out);
    Some((out, seen.into_iter().map(str::to_string).collect()))
}

/// PostgreSQL's binary `COPY` data, as a scan reads it, and every value
/// decoder on each row.
pub fn copy_data(data: &[u8]) {
    crate::sources::postgres::fuzz_copy_data(data);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// What the `metrics_text` target checks: the text parses with an
    /// independent Prometheus text parser and every agent label is one of
    /// the ids.
    fn metrics_text_parses(data: &[u8]) {
        let Some((text, ids)) = super::metrics_text(data) else {
            return;
        };
        let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        for sample in parsed.families["agent_supervisor_agent_up"].iter_samples() {
            let labels = sample.get_labelset().unwrap();
            let agent = labels.get_label_value("agent").unwrap();
            assert!(ids.iter().any(|i| i == agent), "{agent:?}");
        }
    }

    /// Every committed corpus entry, through its target: no panic.
    #[test]
    fn committed_fuzz_corpora_replay_without_a_panic() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 8] = [
            ("timestamp", super::timestamp),
            ("config", super::config),
            ("state_files", super::state_files),
            ("push_body", super::push_body),
            ("health_body", super::health_body),
            ("silence", super::silence),
            ("metrics_text", metrics_text_parses),
            ("copy_data", super::copy_data),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            assert!(!entries.is_empty(), "{name}: empty corpus");
            for path in entries {
                target(&std::fs::read(&path).unwrap());
            }
        }
    }
}
