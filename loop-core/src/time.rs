//! Monotonic time in integer nanoseconds.
//!
//! No floats anywhere: a deadline is a `u64` count of nanoseconds on the loop's clock, which is
//! enough for 584 years of uptime. The zero point is the clock's own (boot time for
//! `CLOCK_MONOTONIC`, zero for the simulated clock).

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the loop's monotonic clock, in nanoseconds.
///
/// The zero point is the clock's own, so an `Instant` means something only next to another
/// from the same loop (usually [`EventLoop::now`](crate::EventLoop::now)). With the `std`
/// feature it converts to and from `std::time::Instant` through such a pair: see
#[cfg_attr(
    feature = "std",
    doc = "[`to_std`](Instant::to_std) and [`from_std`](Instant::from_std)."
)]
#[cfg_attr(not(feature = "std"), doc = "`to_std` and `from_std`.")]
///
/// **Conversion notes.** `std::time::Instant` is opaque and the loop's clock is the poller's
/// (`CLOCK_MONOTONIC` for epoll, poll, select and kqueue; a manual clock for the simulated
/// poller), so a conversion keeps the *distance* from a pair of readings taken together: the
/// loop's `now` and `std::time::Instant::now()`. Its error is the time between the two reads.
///
/// ```
/// use core::time::Duration;
/// use loop_core::Instant;
///
/// let t = Instant::from_nanos(1_500);
/// assert_eq!(t + Duration::from_nanos(500), Instant::from_nanos(2_000));
/// assert_eq!(t - Instant::from_nanos(500), Duration::from_nanos(1_000));
/// assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX); // saturates
/// ```
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
    ///
    /// ```
    /// use loop_core::Instant;
    /// let t = Instant::from_nanos(1_500);
    /// assert_eq!(t.as_nanos(), 1_500);
    /// assert_eq!(Instant::from_nanos(0), Instant::ZERO);
    /// ```
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since the clock's zero point.
    #[inline]
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Instant;
    /// assert_eq!((Instant::ZERO + Duration::from_micros(2)).as_nanos(), 2_000);
    /// ```
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at [`Instant::MAX`] instead of overflowing.
    #[inline]
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Instant;
    /// assert_eq!(Instant::MAX.saturating_add(Duration::from_secs(1)), Instant::MAX);
    /// assert_eq!(Instant::ZERO.saturating_add(Duration::from_nanos(7)).as_nanos(), 7);
    /// ```
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[inline]
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Instant;
    /// let (a, b) = (Instant::from_nanos(10), Instant::from_nanos(25));
    /// assert_eq!(b.saturating_duration_since(a), Duration::from_nanos(15));
    /// assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
    /// ```
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Conversions with `std::time::Instant`.
///
/// `std::time::Instant` is opaque (no readable zero point), and the loop's clock is the
/// poller's: `CLOCK_MONOTONIC` for the epoll, poll, select and kqueue pollers, a manual clock
/// for the simulated one. So a conversion goes through a pair of readings taken at the same
/// moment — the loop's `now` (pass [`EventLoop::now`](crate::EventLoop::now)) and
/// `std::time::Instant::now()` — and keeps the *distance* from that moment: a deadline 3 s
/// after the loop's `now` becomes the `std::time::Instant` 3 s after std's `now`. The two
/// readings are a few nanoseconds apart; that is the conversion's error.
#[cfg(feature = "std")]
impl Instant {
    /// This instant as a `std::time::Instant`, given the loop's `now` (read just before; see
    /// the conversion notes on [`Instant`]).
    ///
    /// `None` when the result is not representable as a `std::time::Instant` (in practice:
    /// [`Instant::MAX`], "never", on platforms whose `std::time::Instant` is narrower).
    ///
    /// ```
    /// # #[cfg(feature = "sim")] {
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// let lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let deadline = lp.now() + Duration::from_secs(3);
    /// let std_deadline = deadline.to_std(lp.now()).unwrap();
    /// assert!(std_deadline > std::time::Instant::now());
    /// # }
    /// ```
    pub fn to_std(self, now: Instant) -> Option<std::time::Instant> {
        self.to_std_with(now, std::time::Instant::now())
    }

    /// As [`to_std`](Self::to_std), with both readings given: `std_now` is the
    /// `std::time::Instant` of the moment the loop's clock read `now`. Exact and
    /// deterministic (no clock is read).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Instant;
    ///
    /// let (now, std_now) = (Instant::from_nanos(10_000), std::time::Instant::now());
    /// let later = Instant::from_nanos(12_000).to_std_with(now, std_now).unwrap();
    /// assert_eq!(later - std_now, Duration::from_nanos(2_000));
    /// ```
    pub fn to_std_with(
        self,
        now: Instant,
        std_now: std::time::Instant,
    ) -> Option<std::time::Instant> {
        if self >= now {
            std_now.checked_add(self - now)
        } else {
            std_now.checked_sub(now - self)
        }
    }

    /// The loop instant of `t`, given the loop's `now` (read just before; see the
    /// conversion notes on [`Instant`]). Saturates: an instant before the loop clock's zero
    /// point is [`Instant::ZERO`], one past 584 years is [`Instant::MAX`].
    ///
    /// ```
    /// # #[cfg(feature = "sim")] {
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Instant};
    ///
    /// let lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let at = std::time::Instant::now() + Duration::from_secs(60);
    /// let deadline = Instant::from_std(at, lp.now());
    /// assert!(deadline > lp.now() + Duration::from_secs(59));
    /// # }
    /// ```
    pub fn from_std(t: std::time::Instant, now: Instant) -> Instant {
        Instant::from_std_with(t, now, std::time::Instant::now())
    }

    /// As [`from_std`](Self::from_std), with both readings given (see
    /// [`to_std_with`](Self::to_std_with)). Exact and deterministic.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Instant;
    ///
    /// let (now, std_now) = (Instant::from_nanos(10_000), std::time::Instant::now());
    /// let t = Instant::from_std_with(std_now + Duration::from_nanos(5), now, std_now);
    /// assert_eq!(t, Instant::from_nanos(10_005));
    /// ```
    pub fn from_std_with(
        t: std::time::Instant,
        now: Instant,
        std_now: std::time::Instant,
    ) -> Instant {
        if t >= std_now {
            now.saturating_add(t - std_now)
        } else {
            Instant(now.0.saturating_sub(duration_nanos(std_now - t)))
        }
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
///
/// ```
/// use core::time::Duration;
/// assert_eq!(loop_core::duration_nanos(Duration::from_micros(3)), 3_000);
/// assert_eq!(loop_core::duration_nanos(Duration::MAX), u64::MAX);
/// ```
#[inline]
pub fn duration_nanos(d: Duration) -> u64 {
    // One 64-bit multiply-add instead of `as_nanos`'s 128-bit arithmetic: every `call_later`
    // and `reset_timer_later` converts its delay. Below 2^64 ns exactly when the whole
    // seconds are below `u64::MAX / 10^9` or, at that second, the sum does not overflow.
    let secs = d.as_secs();
    if secs <= u64::MAX / 1_000_000_000 {
        (secs * 1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
    } else {
        u64::MAX
    }
}

/// A monotonic clock.
///
/// Implementations must never go backwards in normal operation; the loop tolerates a clock
/// that does (periodic callbacks never repeat a call, timers simply fire later), because a
/// simulated clock in tests and a misbehaving platform both can.
///
/// ```
/// use core::cell::Cell;
/// use loop_core::{Clock, Instant};
///
/// /// A clock that a test moves by hand.
/// struct Manual(Cell<u64>);
/// impl Clock for Manual {
///     fn now(&self) -> Instant {
///         Instant::from_nanos(self.0.get())
///     }
/// }
/// let c = Manual(Cell::new(5));
/// assert_eq!(c.now(), Instant::from_nanos(5));
/// ```
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

    #[cfg(feature = "std")]
    #[test]
    fn std_conversions_keep_the_distance_from_the_anchor_both_ways() {
        let std_now = std::time::Instant::now();
        let now = Instant::from_nanos(1_000_000_000);
        for off in [0u64, 1, 999, 250_000_000, 999_999_999] {
            for t in [now + Duration::from_nanos(off), Instant(now.0 - off)] {
                let s = t.to_std_with(now, std_now).unwrap();
                assert_eq!(Instant::from_std_with(s, now, std_now), t);
            }
        }
        let later = now + Duration::from_secs(3);
        assert_eq!(
            later.to_std_with(now, std_now).unwrap() - std_now,
            Duration::from_secs(3)
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn std_instants_before_the_loop_clock_zero_saturate_to_zero() {
        let std_now = std::time::Instant::now();
        let now = Instant::from_nanos(10);
        let Some(earlier) = std_now.checked_sub(Duration::from_secs(1)) else {
            return; // this platform's std clock starts less than 1 s ago
        };
        assert_eq!(Instant::from_std_with(earlier, now, std_now), Instant::ZERO);
    }

    #[cfg(feature = "std")]
    #[test]
    fn reading_both_clocks_gives_a_conversion_within_their_elapsed_time() {
        let now = Instant::from_nanos(5_000_000_000);
        let before = std::time::Instant::now();
        let s = (now + Duration::from_secs(1)).to_std(now).unwrap();
        let after = std::time::Instant::now();
        assert!(s >= before + Duration::from_secs(1) && s <= after + Duration::from_secs(1));
        let back = Instant::from_std(before + Duration::from_secs(1), now);
        assert!(back <= now + Duration::from_secs(1));
    }

    #[test]
    fn duration_nanos_is_exact_below_584_years_and_saturates_above() {
        let max_secs = u64::MAX / 1_000_000_000; // 18_446_744_073
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::new(3, 999_999_999),
            Duration::new(max_secs, 0),
            Duration::new(max_secs, 709_551_615), // exactly u64::MAX ns
            Duration::new(max_secs, 709_551_616), // one past
            Duration::new(max_secs, 999_999_999),
            Duration::new(max_secs + 1, 0),
            Duration::MAX,
        ] {
            let want = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            assert_eq!(duration_nanos(d), want, "{d:?}");
        }
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
