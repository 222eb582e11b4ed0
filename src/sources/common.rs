//! What the sources share: the words that mean healthy, bounded text,
//! classification of a driver's I/O failures, skip logging, the ids a scan
//! has seen and the clock offset of a datastore.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::TimeDelta;
use tracing::warn;

use crate::core::{ErrorKind, SourceId, Timestamp};

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A mutex that a panicked holder did not poison for good.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `no connection to {endpoint} within {timeout}`.
pub fn no_connection(endpoint: &str, timeout: Duration) -> String {
    format!(
        "no connection to {endpoint} within {}",
        humantime::format_duration(timeout)
    )
}

/// An I/O failure of a datastore driver as a kind and a message naming the
/// endpoint. `io` is the failure's kind when the driver kept it (`None`
/// when only its text is left, as with fred, whose text is then searched);
/// `tls` whether the source uses TLS and the failure looks like a TLS one
/// (see [`is_tls_failure`]).
pub fn classify_io(
    io: Option<std::io::ErrorKind>,
    text: &str,
    tls: bool,
    endpoint: &str,
) -> (ErrorKind, String) {
    use std::io::ErrorKind as Io;
    let io = io.or_else(|| {
        if text.contains("ConnectionRefused") || text.contains("Connection refused") {
            Some(Io::ConnectionRefused)
        } else if text.contains("TimedOut") {
            Some(Io::TimedOut)
        } else {
            None
        }
    });
    match io {
        Some(Io::ConnectionRefused) => (
            ErrorKind::ConnectionRefused,
            format!("connection refused ({endpoint})"),
        ),
        Some(Io::TimedOut) => (
            ErrorKind::Timeout,
            format!("connecting timed out ({endpoint}): {text}"),
        ),
        _ if is_dns_failure(text) => (
            ErrorKind::Dns,
            format!("cannot resolve the host ({endpoint}): {text}"),
        ),
        _ if tls => (ErrorKind::Tls, format!("TLS failure ({endpoint}): {text}")),
        Some(Io::UnexpectedEof | Io::ConnectionReset | Io::BrokenPipe | Io::ConnectionAborted) => (
            ErrorKind::Other,
            format!("connection to {endpoint} closed: {text}"),
        ),
        _ => (ErrorKind::Other, format!("I/O error ({endpoint}): {text}")),
    }
}

/// Host name resolution failures, as the resolvers word them.
fn is_dns_failure(text: &str) -> bool {
    [
        "failed to lookup address",
        "Failed to resolve",
        "Name or service not known",
        "No address associated",
        "nodename nor servname",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// rustls errors surface from a handshake in several shapes (an I/O error
/// of kind `InvalidData`, a rustls error's name, a driver's own words).
/// Only meaningful for a source that uses TLS.
pub fn is_tls_failure(text: &str) -> bool {
    [
        "InvalidData",
        "InvalidCertificate",
        "invalid peer certificate",
        "AlertReceived",
        "HandshakeFailure",
        "CorruptMessage",
        "InvalidMessage",
        "PeerIncompatible",
        "PeerMisbehaved",
        "NoCertificatesPresented",
        "UnknownIssuer",
        "NotValidForName",
        "certificate",
        "does not support TLS",
        "TLS",
        "tls",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// The agent ids a scan has delivered, to leave out an entry met again (a
/// Redis `SCAN` may return a key twice, a query two rows for one agent).
///
/// Kept as 64-bit hashes (foldhash's quality variant, seeded per scan: the
/// hash stands for the id, so it is the variant that mixes fully): 8 bytes an id and nothing
/// allocated per id, where a set of the ids themselves kept every one alive
/// until the scan ended. Two ids with one hash (about one chance in 10^7 in
/// a scan of a million) leave the second out of that scan only; an agent a
/// scan leaves out is confirmed by a point read when its deadline passes,
/// as any agent missing from a scan is, and found by the next scan if new.
#[derive(Default)]
pub struct SeenIds {
    keys: foldhash::quality::RandomState,
    hashes: HashSet<u64, BuildHasherDefault<Prehashed>>,
}

impl SeenIds {
    /// A set with room for `n` ids (the last scan's count) without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            keys: foldhash::quality::RandomState::default(),
            hashes: HashSet::with_capacity_and_hasher(n, BuildHasherDefault::default()),
        }
    }

    /// How many ids were seen.
    pub fn count(&self) -> usize {
        self.hashes.len()
    }

    /// True the first time `id` is offered in this scan.
    pub fn first_time(&mut self, id: &str) -> bool {
        self.hashes.insert(self.keys.hash_one(id))
    }
}

/// The hasher of a set of hashes: a value is its own hash.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Required by `Hasher`. The set hashes u64s only (`write_u64`), so
        // this is not called; were it, the bytes would still all count.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Logs entries a scan had to skip, once per change of their number rather
/// than once per scan.
#[derive(Default)]
pub struct SkipLog {
    logged: AtomicUsize,
}

impl SkipLog {
    /// `skipped` entries were skipped in the last scan, for the reason
    /// `message` gives.
    pub fn note(&self, source: &SourceId, skipped: usize, message: &str) {
        if self.logged.swap(skipped, Ordering::Relaxed) != skipped && skipped > 0 {
            warn!(source = %source, skipped, "{message}");
        }
    }
}

/// The offset of a datastore's clock from ours (remote - local), as of the
/// last read.
#[derive(Default)]
pub struct ClockOffset {
    seconds: Mutex<Option<f64>>,
}

impl ClockOffset {
    /// The offset of `remote`, read between `before` and `after` on the
    /// local clock, measured at the round trip's midpoint; remembered.
    pub fn measure(&self, before: Timestamp, remote: Timestamp, after: Timestamp) -> TimeDelta {
        let local = crate::core::time::plus(before, (after - before) / 2);
        let offset = remote - local;
        *lock(&self.seconds) = Some(offset.as_seconds_f64());
        offset
    }

    /// The last offset measured, in seconds.
    pub fn seconds(&self) -> Option<f64> {
        *lock(&self.seconds)
    }
}

/// A time stored on the datastore's clock, moved onto the local clock.
pub fn to_local(remote: Timestamp, offset: TimeDelta) -> Result<Timestamp, String> {
    remote
        .checked_sub_signed(offset)
        .ok_or_else(|| "timestamp out of range".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_seen_once_per_scan() {
        let mut seen = SeenIds::default();
        assert!(seen.first_time("a"));
        assert!(seen.first_time("b"));
        assert!(!seen.first_time("a"));
        let mut next_scan = SeenIds::default();
        assert!(next_scan.first_time("a"));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }

    #[test]
    fn io_failures_are_classified_by_kind_or_text() {
        use std::io::ErrorKind as Io;
        let (k, m) = classify_io(Some(Io::ConnectionRefused), "x", false, "h:1");
        assert_eq!(
            (k, m.as_str()),
            (ErrorKind::ConnectionRefused, "connection refused (h:1)")
        );
        let (k, _) = classify_io(None, "Connection refused", false, "h:1");
        assert_eq!(k, ErrorKind::ConnectionRefused);
        let (k, _) = classify_io(None, "failed to lookup address information", false, "h:1");
        assert_eq!(k, ErrorKind::Dns);
        let (k, _) = classify_io(None, "InvalidCertificate(UnknownIssuer)", true, "h:1");
        assert_eq!(k, ErrorKind::Tls);
        let (k, m) = classify_io(Some(Io::ConnectionReset), "reset", false, "h:1");
        assert_eq!(
            (k, m.as_str()),
            (ErrorKind::Other, "connection to h:1 closed: reset")
        );
    }

    #[test]
    fn clock_offset_is_taken_at_the_round_trip_midpoint() {
        let t0 = chrono::DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let c = ClockOffset::default();
        assert_eq!(c.seconds(), None);
        let off = c.measure(t0, t0 + TimeDelta::seconds(11), t0 + TimeDelta::seconds(2));
        assert_eq!(off, TimeDelta::seconds(10));
        assert_eq!(c.seconds(), Some(10.0));
        assert_eq!(to_local(t0 + off, off), Ok(t0));
    }
}
