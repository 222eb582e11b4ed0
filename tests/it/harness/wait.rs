//! Bounded polls: every wait has a deadline and panics saying what it was
//! waiting for.

use std::future::Future;
use std::time::{Duration, Instant};

/// Interval between two checks of a bounded poll.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `f` every 25 ms until it returns `true`; panics naming `what` if that
/// has not happened within `timeout`.
///
/// The deadline is measured on the real clock. Each check is also bounded by the
/// time left (with `tokio::time::timeout`), so a check that hangs fails the wait
/// instead of hanging the test.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut checks = 0u64;
    loop {
        checks += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, f()).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => panic!(
                "timed out after {timeout:?} waiting until {what} \
                 (check #{checks} was still running at the deadline)"
            ),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out after {timeout:?} waiting until {what} ({checks} checks, all false)");
        }
        tokio::time::sleep(POLL_INTERVAL.min(left)).await;
    }
}

/// Blocking variant of [`wait_until`]. The check itself must be bounded: it is
/// not interrupted at the deadline.
#[track_caller]
pub fn wait_until_sync<F>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut checks = 0u64;
    loop {
        checks += 1;
        if f() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("timed out after {timeout:?} waiting until {what} ({checks} checks, all false)");
        }
        std::thread::sleep(POLL_INTERVAL.min(left));
    }
}
