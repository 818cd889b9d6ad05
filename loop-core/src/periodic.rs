//! Periodic callbacks with Tornado 5.1's `PeriodicCallback` timing.
//!
//! * The first call is at `start + period` (not immediately).
//! * Calls stay on the grid `start + k·period`: after a slow call the next one is the first
//!   grid point strictly after "now" — missed ticks are skipped, never caught up.
//! * If the clock went backwards, the next call is one period after the last deadline: a call
//!   is never repeated (Tornado #2333).
//! * An optional jitter scales each period by `1 + jitter·(r − ½)`, `r` uniform in `[0, 1)`,
//!   as Tornado 5.1 does (so `jitter = 0.1` spreads calls ±5 %). Integer maths only.

use core::time::Duration;

use crate::time::Instant;

/// When and how often a periodic callback runs; see [`crate::EventLoop::add_periodic`].
///
/// # Examples
///
/// A callback every 100 ms that stops itself after three calls (on the simulated clock, so
/// this finishes at once):
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Periodic};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let mut calls = 0;
/// lp.add_periodic(Periodic::every(Duration::from_millis(100)), move |lp| {
///     calls += 1;
///     if calls == 3 {
///         lp.stop();
///     }
/// })?;
/// lp.run()?;
/// assert_eq!(lp.now().as_nanos(), 300_000_000); // calls at 100, 200 and 300 ms
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// # Errors
///
/// `add_periodic` refuses a zero period with [`crate::Error::InvalidPeriod`] and a full timer
/// table with [`crate::Error::Full`], handing the callback back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Periodic {
    pub(crate) period_ns: u64,
    pub(crate) jitter_ppm: u32,
    /// The jitter generator's first state; 0: derived from the clock when the callback starts.
    pub(crate) seed: u32,
}

impl Periodic {
    /// Every `period`. A zero period is refused by `add_periodic` with
    /// [`crate::Error::InvalidPeriod`].
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Periodic;
    /// assert_eq!(Periodic::every(Duration::from_secs(1)).period(), Duration::from_secs(1));
    /// ```
    pub const fn every(period: Duration) -> Periodic {
        let ns = period.as_nanos();
        let period_ns = if ns > u64::MAX as u128 {
            u64::MAX
        } else {
            ns as u64
        };
        Periodic {
            period_ns,
            jitter_ppm: 0,
            seed: 0,
        }
    }

    /// Add jitter, as a fraction in parts per million (`100_000` = Tornado's `jitter=0.1`,
    /// each period scaled by a factor in `[0.95, 1.05)`). Values above 1 000 000 are clamped.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Periodic;
    ///
    /// let p = Periodic::every(Duration::from_secs(10)).with_jitter_ppm(100_000); // ±5 %
    /// for d in p.periods().take(100) {
    ///     assert!(d >= Duration::from_millis(9_500) && d < Duration::from_millis(10_500));
    /// }
    /// ```
    pub const fn with_jitter_ppm(mut self, jitter_ppm: u32) -> Periodic {
        self.jitter_ppm = if jitter_ppm > 1_000_000 {
            1_000_000
        } else {
            jitter_ppm
        };
        self
    }

    /// Start the jitter generator from `seed` instead of a value derived from the clock, so
    /// the jittered periods are reproducible: exactly those of [`periods`](Self::periods).
    /// Tests use it to pin jitter down; `0` means "derive from the clock" (the default).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Periodic;
    ///
    /// let p = Periodic::every(Duration::from_millis(100))
    ///     .with_jitter_ppm(100_000)
    ///     .with_jitter_seed(7);
    /// let mut periods = p.periods();
    /// let first = periods.next().unwrap();
    /// assert!(first >= Duration::from_millis(95) && first < Duration::from_millis(105));
    /// assert_eq!(p.periods().next(), Some(first)); // same seed, same sequence
    /// ```
    pub const fn with_jitter_seed(mut self, seed: u32) -> Periodic {
        self.seed = seed;
        self
    }

    /// The period.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Periodic;
    /// assert_eq!(Periodic::every(Duration::from_secs(2)).period(), Duration::from_secs(2));
    /// ```
    pub const fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// The jittered periods a callback with this schedule uses, in order, from its jitter seed
    /// (with no seed set, from seed 1: a running callback derives its seed from the clock).
    /// Without jitter every item is [`period`](Self::period). A callback that is late skips
    /// grid points, and each skip consumes no extra item: step `k` of the schedule waits the
    /// `k`-th period (or a multiple of it after a late call).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::Periodic;
    /// let p = Periodic::every(Duration::from_millis(10));
    /// assert!(p.periods().take(3).all(|d| d == Duration::from_millis(10))); // no jitter
    /// ```
    pub fn periods(&self) -> impl Iterator<Item = Duration> {
        let (period_ns, jitter_ppm) = (self.period_ns.max(1), self.jitter_ppm);
        let mut rng = if self.seed == 0 { 1 } else { self.seed };
        core::iter::repeat_with(move || {
            Duration::from_nanos(jittered(period_ns, jitter_ppm, &mut rng).max(1))
        })
    }

    /// The generator's first state for a callback started at `now` (`salt` tells callbacks
    /// started at the same instant apart).
    pub(crate) fn first_rng(&self, now: Instant, salt: u64) -> u32 {
        if self.seed != 0 {
            self.seed
        } else {
            seed(now, salt)
        }
    }
}

/// The period for one step, with jitter applied. Never zero.
fn jittered(period_ns: u64, jitter_ppm: u32, rng: &mut u32) -> u64 {
    if jitter_ppm == 0 {
        return period_ns;
    }
    // xorshift32: tiny, no_std, good enough to spread wake-ups.
    let mut x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    let centred = x as i128 - (1i128 << 31); // r − ½, scaled by 2^32
    let delta = period_ns as i128 * jitter_ppm as i128 * centred / (1_000_000i128 << 32);
    (period_ns as i128 + delta).clamp(1, u64::MAX as i128) as u64
}

/// The next deadline after a call whose deadline was `last`, at time `now`.
pub(crate) fn next_deadline(
    last: Instant,
    now: Instant,
    period_ns: u64,
    jitter_ppm: u32,
    rng: &mut u32,
) -> Instant {
    let p = jittered(period_ns, jitter_ppm, rng).max(1);
    let last = last.as_nanos();
    let now = now.as_nanos();
    let next = if last <= now {
        let steps = (now - last) / p + 1;
        last.saturating_add(steps.saturating_mul(p))
    } else {
        last.saturating_add(p)
    };
    Instant::from_nanos(next)
}

/// The seed for a periodic callback's jitter generator (never zero, which xorshift can't leave).
pub(crate) fn seed(now: Instant, salt: u64) -> u32 {
    let mixed = (now.as_nanos() ^ salt.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as u32) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    #[test]
    fn on_time_call_moves_one_period() {
        assert_eq!(next_deadline(t(100), t(100), 10, 0, &mut 1), t(110));
        assert_eq!(next_deadline(t(100), t(105), 10, 0, &mut 1), t(110));
    }

    #[test]
    fn slow_call_skips_missed_ticks_and_stays_on_the_grid() {
        // Tornado: a call that ends exactly on a grid point skips that point.
        assert_eq!(next_deadline(t(100), t(130), 10, 0, &mut 1), t(140));
        assert_eq!(next_deadline(t(100), t(137), 10, 0, &mut 1), t(140));
    }

    #[test]
    fn clock_going_backwards_never_repeats_a_call() {
        assert_eq!(next_deadline(t(100), t(20), 10, 0, &mut 1), t(110));
    }

    #[test]
    fn jitter_stays_within_its_window_and_varies() {
        let mut rng = seed(t(1), 2);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1000 {
            let p = jittered(1_000_000, 100_000, &mut rng);
            assert!((950_000..1_050_000).contains(&p), "{p}");
            seen_low |= p < 990_000;
            seen_high |= p > 1_010_000;
        }
        assert!(seen_low && seen_high);
    }
}
