//! Checked time arithmetic. A deadline past the end of representable time
//! is the end of time, never a panic: heartbeats come from outside (any
//! instant chrono can hold) and durations from the config (up to 100
//! years), so `DateTime + TimeDelta`, which panics out of range, is not
//! used on them; these saturate instead. The difference of two instants
//! is always representable and needs no helper.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::model::Timestamp;

/// A `std` duration as a signed one, `TimeDelta::MAX` past its range.
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturated at the ends of representable time.
pub fn plus(t: Timestamp, d: TimeDelta) -> Timestamp {
    t.checked_add_signed(d).unwrap_or(if d < TimeDelta::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// `t + d` for a `std` duration, saturated.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    plus(t, delta(d))
}

/// `t - d` for a `std` duration, saturated.
pub fn before(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_past_the_ends_of_time_saturate() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        assert_eq!(plus(max, TimeDelta::seconds(1)), max);
        assert_eq!(plus(min, TimeDelta::seconds(-1)), min);
        assert_eq!(plus(max, TimeDelta::MAX), max);
        assert_eq!(plus(min, TimeDelta::MIN), min);
        assert_eq!(after(max, Duration::MAX), max);
        assert_eq!(before(min, Duration::from_secs(1)), min);
        let t = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(after(t, Duration::from_secs(5)).timestamp(), 1_005);
        assert_eq!(before(t, Duration::from_secs(5)).timestamp(), 995);
        assert_eq!(delta(Duration::MAX), TimeDelta::MAX);
        // The widest difference there is still fits.
        assert!(max - min > TimeDelta::zero());
    }
}
