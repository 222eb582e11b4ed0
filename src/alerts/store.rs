//! The durable alert state, beside `state.json`, each file written
//! atomically: the [`Book`] (firing alerts, what each receiver was told, API
//! silences) in `alerts.json`, and the outbox of undelivered notifications
//! in `outbox.json`. The outbox is small and rewritten on every delivery, so
//! a delivered notification is not sent again after a crash; the book can be
//! large (one entry per firing alert) and is written only when it changes.
//!
//! Order of writes for new notifications: the outbox (with them) first, then
//! the book (which records them as told). A crash between the two repeats a
//! notification rather than losing one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::book::Book;
use crate::core::Timestamp;
use crate::core::alert::Notification;
use crate::sinks::state::{StateError, write_json};

const BOOK_FILE: &str = "alerts.json";
const OUTBOX_FILE: &str = "outbox.json";
const VERSION: u32 = 1;

/// One undelivered notification for one receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Order of creation; delivery per receiver follows it.
    pub seq: u64,
    pub notification: Notification,
    /// `starts_at` of the alerts this receiver hears of for the first time
    /// (for the start-to-delivery histogram).
    #[serde(default)]
    pub first_told: Vec<Timestamp>,
    /// Requests of this notification already delivered (PagerDuty sends one
    /// per alert; the others one in all).
    #[serde(default)]
    pub parts_done: usize,
    pub queued_at: Timestamp,
}

/// What `alerts.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub book: Book,
    pub outbox: Vec<Pending>,
    pub next_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct OnDisk<T> {
    version: u32,
    data: T,
}

#[derive(Serialize)]
struct OnDiskRef<'a, T> {
    version: u32,
    data: &'a T,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Outbox {
    pending: Vec<Pending>,
    next_seq: u64,
}

/// The file store for alert state.
#[derive(Clone, Debug)]
pub struct AlertStore {
    dir: PathBuf,
}

impl AlertStore {
    /// `dir` must exist and be writable (the state store checked it).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn book_path(&self) -> PathBuf {
        self.dir.join(BOOK_FILE)
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.dir.join(OUTBOX_FILE)
    }

    /// The saved state; empty when there is none yet.
    pub fn load(&self) -> Result<AlertState, StateError> {
        let book: Book = read(&self.book_path())?.unwrap_or_default();
        let outbox: Outbox = read(&self.outbox_path())?.unwrap_or_default();
        Ok(AlertState {
            book,
            outbox: outbox.pending,
            next_seq: outbox.next_seq,
        })
    }

    /// Write the outbox. Blocking: call from `spawn_blocking`.
    pub fn save_outbox(&self, pending: &[Pending], next_seq: u64) -> Result<(), StateError> {
        let outbox = Outbox {
            pending: pending.to_vec(),
            next_seq,
        };
        write_json(
            &self.dir,
            OUTBOX_FILE,
            &OnDiskRef {
                version: VERSION,
                data: &outbox,
            },
        )
    }

    /// Write the book. Blocking.
    pub fn save_book(&self, book: &Book) -> Result<(), StateError> {
        write_json(
            &self.dir,
            BOOK_FILE,
            &OnDiskRef {
                version: VERSION,
                data: book,
            },
        )
    }

    /// Write both, outbox first. Blocking.
    pub fn save(&self, state: &AlertState) -> Result<(), StateError> {
        self.save_outbox(&state.outbox, state.next_seq)?;
        self.save_book(&state.book)
    }
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let disk: OnDisk<T> = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if disk.version != VERSION {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("version {} (this build reads {VERSION})", disk.version),
        });
    }
    Ok(Some(disk.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_a_torn_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::new(dir.path());
        assert_eq!(store.load().unwrap(), AlertState::default());
        let state = AlertState {
            next_seq: 7,
            ..AlertState::default()
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        std::fs::write(store.outbox_path(), b"{\"version\":1,\"data\":{").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
