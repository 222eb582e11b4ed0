//! Bounded polls: every wait has a deadline and panics saying what it was
//! waiting for (or tells its caller, who says what it saw).

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
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    match poll(timeout, POLL_INTERVAL, f).await {
        Polled::Held => {}
        Polled::Hung { checks } => panic!(
            "timed out after {timeout:?} waiting until {what} \
             (check #{checks} was still running at the deadline)"
        ),
        Polled::AllFalse { checks } => {
            panic!("timed out after {timeout:?} waiting until {what} ({checks} checks, all false)")
        }
    }
}

/// Like [`wait_until`], for a value: polls `f` until it returns `Some`,
/// and returns what it holds.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let got = std::cell::RefCell::new(None);
    wait_until(what, timeout, || {
        let next = f();
        let got = &got;
        async move {
            let v = next.await;
            let some = v.is_some();
            *got.borrow_mut() = v;
            some
        }
    })
    .await;
    got.into_inner()
        .expect("wait_until returned: the value is there")
}

/// Like [`wait_until`], checking every `interval`, but returns whether `f`
/// held in time instead of panicking, so that the caller can say what it saw
/// last.
pub async fn poll_until<F, Fut>(timeout: Duration, interval: Duration, f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    matches!(poll(timeout, interval, f).await, Polled::Held)
}

/// The opposite of [`wait_until`]: checks `f` every 25 ms for `period` and
/// panics naming `what` the first time it returns `false`. Each check runs to
/// its end (they are bounded by the caller, e.g. an HTTP client's timeout).
pub async fn holds_for<F, Fut>(what: &str, period: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + period;
    let mut checks = 0u64;
    loop {
        checks += 1;
        assert!(
            f().await,
            "{what} stopped holding at check #{checks} of a {period:?} watch"
        );
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL.min(left)).await;
    }
}

/// How a bounded poll ended.
enum Polled {
    Held,
    /// Check number `checks` was still running at the deadline.
    Hung {
        checks: u64,
    },
    /// Every one of `checks` checks returned `false`.
    AllFalse {
        checks: u64,
    },
}

async fn poll<F, Fut>(timeout: Duration, interval: Duration, mut f: F) -> Polled
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
            Ok(true) => return Polled::Held,
            Ok(false) => {}
            Err(_) => return Polled::Hung { checks },
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Polled::AllFalse { checks };
        }
        tokio::time::sleep(interval.min(left)).await;
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
