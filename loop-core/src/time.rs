//! Monotonic time in integer nanoseconds.
//!
//! No floats anywhere: a deadline is a `u64` count of nanoseconds on the loop's clock, which is
//! enough for 584 years of uptime. The zero point is the clock's own (boot time for
//! `CLOCK_MONOTONIC`, zero for the simulated clock).

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the loop's monotonic clock, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The clock's zero point.
    pub const ZERO: Instant = Instant(0);
    /// The far future: used for "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the clock's zero point.
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the clock's zero point.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Instant::MAX`] instead of overflowing.
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: a deadline past [`Instant::MAX`] is [`Instant::MAX`].
    #[inline]
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: zero if `rhs` is later than `self`.
    #[inline]
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// A [`Duration`] as whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A monotonic clock.
///
/// Implementations must never go backwards in normal operation; the loop tolerates a clock
/// that does (periodic callbacks never repeat a call, timers simply fire later), because a
/// simulated clock in tests and a misbehaving platform both can.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_saturates_instead_of_wrapping() {
        assert_eq!(
            Instant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            Instant::MAX
        );
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
    }

    #[test]
    fn subtracting_a_later_instant_is_zero() {
        assert_eq!(
            Instant::from_nanos(5) - Instant::from_nanos(9),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_nanos(9) - Instant::from_nanos(5),
            Duration::from_nanos(4)
        );
    }
}
