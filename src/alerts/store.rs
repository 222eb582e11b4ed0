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
use crate::sinks::state::{StateError, read_json, write_json};

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

    /// The saved book; empty when there is none yet. An unreadable file
    /// is set aside ([`StateError::Corrupt`]) without touching the outbox.
    pub fn load_book(&self) -> Result<Book, StateError> {
        Ok(read_json(&self.book_path(), VERSION, Some("data"))?.unwrap_or_default())
    }

    /// The saved outbox (pending notifications and the next sequence
    /// number), on its own like the book.
    pub fn load_outbox(&self) -> Result<(Vec<Pending>, u64), StateError> {
        let outbox: Outbox =
            read_json(&self.outbox_path(), VERSION, Some("data"))?.unwrap_or_default();
        Ok((outbox.pending, outbox.next_seq))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_loads_on_its_own_and_a_torn_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::new(dir.path());
        assert_eq!(store.load_book().unwrap(), Book::default());
        assert_eq!(store.load_outbox().unwrap(), (Vec::new(), 0));
        let state = AlertState {
            next_seq: 7,
            ..AlertState::default()
        };
        store.save(&state).unwrap();
        assert_eq!(store.load_outbox().unwrap(), (Vec::new(), 7));
        // A torn outbox: set aside; the book still loads.
        std::fs::write(store.outbox_path(), b"{\"version\":1,\"data\":{").unwrap();
        assert!(matches!(
            store.load_outbox(),
            Err(StateError::Corrupt { aside: Some(_), .. })
        ));
        assert_eq!(store.load_book().unwrap(), state.book);
        assert_eq!(store.load_outbox().unwrap(), (Vec::new(), 0));
    }
}
