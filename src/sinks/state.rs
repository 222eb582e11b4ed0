//! The embedded state store: one JSON file under `state.path`, written
//! atomically (a temp file of its own name, fsync, rename, fsync of the
//! directory), so a crash mid-write leaves the previous state intact.
//!
//! Every state file (this one, and the alert engine's `alerts.json` and
//! `outbox.json`) fails safe: each loads on its own; one that cannot be read
//! as what it should hold (corrupt, truncated, another version) is renamed
//! aside to `<name>.corrupt-<UTC time>`, kept for inspection, and the
//! sidecar starts without it.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::Persisted;
use crate::telemetry::metrics::LabelValue;

const FILE: &str = "state.json";
const VERSION: u32 = 1;

/// The state files, as a label of the state metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFile {
    /// `state.json`: check and agent states.
    State,
    /// `alerts.json`: the alert book.
    Alerts,
    /// `outbox.json`: undelivered notifications.
    Outbox,
    /// `actions.json`: remediation calls within their windows, recent
    /// attempts.
    Actions,
}

impl LabelValue for StateFile {
    fn label(self) -> &'static str {
        match self {
            StateFile::State => "state.json",
            StateFile::Alerts => "alerts.json",
            StateFile::Outbox => "outbox.json",
            StateFile::Actions => "actions.json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not readable state ({message}); {}", match .aside {
        Some(a) => format!("kept as {}", a.display()),
        None => "it could not be renamed aside".to_string(),
    })]
    Corrupt {
        path: PathBuf,
        /// Where the file was moved, when the rename succeeded.
        aside: Option<PathBuf>,
        message: String,
    },
}

#[derive(Serialize)]
struct OnDisk<'a, T> {
    version: u32,
    #[serde(flatten)]
    state: &'a T,
}

/// The file store. Cheap to clone: it is just a path.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Creates the directory if needed and checks it is writable, so a bad
    /// `state.path` fails at start, not at the first save.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let probe = dir.join(format!(".write-test-{:016x}", rand::random::<u64>()));
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|source| StateError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state; empty when there is none yet. A file that cannot be
    /// read is set aside ([`StateError::Corrupt`]); the next load is empty.
    pub fn load(&self) -> Result<Persisted, StateError> {
        Ok(read_json(&self.path(), VERSION, None)?.unwrap_or_default())
    }

    /// Write atomically. Blocking: call from `spawn_blocking`. `state` is
    /// a [`Persisted`] or what serializes as one (`PersistView`).
    pub fn save<T: Serialize>(&self, state: &T) -> Result<(), StateError> {
        let disk = OnDisk {
            version: VERSION,
            state,
        };
        write_json(&self.dir, FILE, &disk)
    }
}

/// Read `path`, a JSON object with a `version` (which must be `version`)
/// and the value itself under `field` (or the whole object, flattened,
/// when `None`). `Ok(None)` when there is no file. A file that is not that
/// is renamed aside and reported as [`StateError::Corrupt`]. Blocking.
pub fn read_json<T: DeserializeOwned>(
    path: &Path,
    version: u32,
    field: Option<&str>,
) -> Result<Option<T>, StateError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match decode_json(&text, version, field) {
        Ok(value) => Ok(Some(value)),
        Err(message) => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            aside: set_aside(path),
            message,
        }),
    }
}

/// The bytes of a state file as `T` (see [`read_json`]), or why not.
pub fn decode_json<T: DeserializeOwned>(
    bytes: &[u8],
    version: u32,
    field: Option<&str>,
) -> Result<T, String> {
    let mut v = serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| e.to_string())?;
    match v.get("version").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(version) => {}
        Some(n) => return Err(format!("version {n} (this build reads {version})")),
        None => return Err("no version".to_string()),
    }
    let inner = match field {
        Some(f) => v
            .get_mut(f)
            .map(serde_json::Value::take)
            .ok_or_else(|| format!("no `{f}`"))?,
        None => v,
    };
    serde_json::from_value::<T>(inner).map_err(|e| e.to_string())
}

/// Rename `path` to `<name>.corrupt-<UTC time>` beside it; `None` when the
/// rename failed.
fn set_aside(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let aside = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    fs::rename(path, &aside).ok().map(|()| aside)
}

/// Write `value` as JSON to `dir/name` atomically: a temp file of its own
/// (unique) name, fsync, rename over the old file, fsync of the directory.
/// A crash leaves either the old or the new file, never a torn one; a
/// failure (a full disk) leaves the old file and no temp file. Blocking.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp-{:016x}", rand::random::<u64>()));
    let written = write_file(&tmp, value).and_then(|()| {
        fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Make the rename itself durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })
}

fn write_file<T: Serialize>(tmp: &Path, value: &T) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer(&mut w, value).map_err(|e| io(e.into()))?;
    w.flush().map_err(io)?;
    w.get_ref().sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::core::State;
    use crate::core::snapshot::{PersistedAgent, Transition};

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), Persisted::default());
        let state = Persisted {
            checks: vec![],
            agents: vec![PersistedAgent {
                agent: "a".into(),
                state: State::Stale,
                since: Utc::now(),
                reason: "no heartbeat".into(),
                history: vec![],
            }],
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["state.json".to_string()], "no temp file left");
    }

    /// A state file written before agents kept their transitions loads,
    /// with no history; one written now keeps it.
    #[test]
    fn a_state_file_without_history_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        fs::write(
            store.path(),
            r#"{"version": 1, "checks": [], "agents": [
                {"agent": "a", "state": "stale", "since": "2026-11-27T12:00:00Z",
                 "reason": "no heartbeat"}]}"#,
        )
        .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.agents.len(), 1);
        assert!(loaded.agents[0].history.is_empty());

        let mut with = loaded.clone();
        with.agents[0].history = vec![
            Transition {
                at: "2026-11-27T11:59:00Z".parse().unwrap(),
                state: State::Healthy,
            },
            Transition {
                at: "2026-11-27T12:00:00Z".parse().unwrap(),
                state: State::Stale,
            },
        ];
        store.save(&with).unwrap();
        assert_eq!(store.load().unwrap(), with);
    }

    /// A torn file, another version, or not state at all: set aside with
    /// its bytes, reported, and the next load starts empty.
    #[test]
    fn an_unreadable_file_is_set_aside_not_overwritten() {
        for bytes in [
            &b"{\"version\": 1, \"checks\": [tru"[..],
            &b"{\"version\": 2, \"checks\": [], \"agents\": []}"[..],
            &b"[1, 2, 3]"[..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::open(dir.path()).unwrap();
            fs::write(store.path(), bytes).unwrap();
            let Err(StateError::Corrupt { aside, .. }) = store.load() else {
                panic!("{bytes:?} loaded");
            };
            let aside = aside.expect("renamed aside");
            assert!(
                aside
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            );
            assert_eq!(fs::read(&aside).unwrap(), bytes);
            assert_eq!(store.load().unwrap(), Persisted::default());
        }
    }
}
