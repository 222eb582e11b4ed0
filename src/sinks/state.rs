//! The embedded state store: one JSON file under `state.path`, written
//! atomically (temp file, fsync, rename, fsync of the directory), so a crash
//! mid-write leaves the previous state intact.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::Persisted;

const FILE: &str = "state.json";
const VERSION: u32 = 1;

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
    #[error("state file {path} is not readable state ({message}); starting empty")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    state: Persisted,
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
        let probe = dir.join(".write-test");
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

    /// The saved state; empty when there is none yet.
    pub fn load(&self) -> Result<Persisted, StateError> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let disk: OnDisk = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if disk.version != VERSION {
            return Err(StateError::Corrupt {
                path,
                message: format!("version {} (this build reads {VERSION})", disk.version),
            });
        }
        Ok(disk.state)
    }

    /// Write atomically. Blocking: call from `spawn_blocking`.
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let disk = OnDisk {
            version: VERSION,
            state: state.clone(),
        };
        write_json(&self.dir, FILE, &disk)
    }
}

/// Write `value` as JSON to `dir/name` atomically: a temp file, fsync,
/// rename over the old file, fsync of the directory. A crash leaves either
/// the old or the new file, never a torn one. Blocking.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |source| StateError::Io {
        path: tmp.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer(&mut w, value).map_err(|e| io(e.into()))?;
    w.flush().map_err(io)?;
    w.get_ref().sync_all().map_err(io)?;
    drop(w);
    fs::rename(&tmp, &path).map_err(|source| StateError::Io {
        path: path.clone(),
        source,
    })?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::core::State;
    use crate::core::snapshot::PersistedAgent;

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
            }],
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        fs::write(store.path(), b"{\"version\": 1, \"checks\": [tru").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
