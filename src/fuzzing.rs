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

/// The state files: `state.json`, and `alerts.json`'s book.
pub fn state_files(data: &[u8]) {
    let _ = crate::sinks::state::decode_json::<Persisted>(data, 1, None);
    let _ = crate::sinks::state::decode_json::<crate::alerts::book::Book>(data, 1, Some("data"));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every committed corpus entry, through its target: no panic.
    #[test]
    fn committed_fuzz_corpora_replay_without_a_panic() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 3] = [
            ("timestamp", super::timestamp),
            ("config", super::config),
            ("state_files", super::state_files),
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
