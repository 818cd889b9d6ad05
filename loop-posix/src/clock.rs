//! The loop's clock on every POSIX poller: `CLOCK_MONOTONIC` (Tornado's `monotonic_time`).

use loop_core::{Clock, Instant};
use rustix::time::{clock_gettime, ClockId, Timespec};

/// `CLOCK_MONOTONIC` in nanoseconds (read through the vDSO on Linux: no syscall on common
/// targets).
///
/// It never steps with wall-clock changes (NTP, `date`), which is what deadlines need. On Linux
/// it does not advance while the system is suspended; neither does the `timerfd` that epoll's
/// poller uses for timeouts, since both run on the same clock, so a deadline and the sleep
/// towards it agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonotonicClock;

impl MonotonicClock {
    /// The clock. It has no state: every value reads the same kernel clock.
    pub const fn new() -> MonotonicClock {
        MonotonicClock
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        monotonic_now()
    }
}

/// Now on `CLOCK_MONOTONIC`, as [`MonotonicClock`] reads it.
#[inline]
pub fn monotonic_now() -> Instant {
    Instant::from_nanos(timespec_nanos(clock_gettime(ClockId::Monotonic)))
}

/// A non-negative timespec as nanoseconds, saturating (584 years of uptime fit).
fn timespec_nanos(ts: Timespec) -> u64 {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_never_goes_backwards() {
        let clock = MonotonicClock::new();
        let mut last = clock.now();
        for _ in 0..1000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn timespec_conversion_saturates_instead_of_wrapping() {
        let ts = Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 999_999_999,
        };
        assert_eq!(timespec_nanos(ts), u64::MAX);
        assert_eq!(
            timespec_nanos(Timespec {
                tv_sec: 2,
                tv_nsec: 5
            }),
            2_000_000_005
        );
    }
}
