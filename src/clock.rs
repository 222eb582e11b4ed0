//! The wall clock the core is driven with.
//!
//! In production it is the system clock. Tests that pause tokio's time use
//! [`Clock::tokio`], a wall clock that advances with tokio's (paused) clock,
//! so deadlines, timers and `now` stay consistent under `time::advance`.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::core::Timestamp;
use crate::core::time::{delta, plus};

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Tokio { wall: Timestamp, at: Instant },
}

impl Clock {
    /// A wall clock that follows tokio's clock from `wall` on.
    pub fn tokio(wall: Timestamp) -> Self {
        Clock::Tokio {
            wall,
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, at } => plus(*wall, delta(at.elapsed())),
        }
    }

    /// The tokio instant at which the wall clock reads `t` (now, if past).
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        let wait = (t - self.now()).to_std().unwrap_or_default();
        instant_after(Instant::now(), wait)
    }
}

/// "Never" for a timer: about 30 years on.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d` on the monotonic clock, or [`FAR`] on when `d` reaches past
/// what it can hold.
pub fn instant_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// `now - d` on the monotonic clock, or `now` itself when the clock does
/// not reach that far back (for "long ago").
pub fn instant_before(now: Instant, d: Duration) -> Instant {
    now.checked_sub(d).unwrap_or(now)
}
