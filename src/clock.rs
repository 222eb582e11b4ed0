//! The wall clock the core is driven with.
//!
//! In production it is the system clock. Tests that pause tokio's time use
//! [`Clock::tokio`], a wall clock that advances with tokio's (paused) clock,
//! so deadlines, timers and `now` stay consistent under `time::advance`.

use chrono::{TimeDelta, Utc};
use tokio::time::Instant;

use crate::core::Timestamp;

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
            Clock::Tokio { wall, at } => {
                *wall + TimeDelta::from_std(at.elapsed()).unwrap_or(TimeDelta::MAX)
            }
        }
    }

    /// The tokio instant at which the wall clock reads `t` (now, if past).
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        let wait = (t - self.now()).to_std().unwrap_or_default();
        Instant::now() + wait
    }
}
