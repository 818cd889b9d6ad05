//! The loop's clock on every POSIX poller: `CLOCK_MONOTONIC` (Tornado's `monotonic_time`).

use loop_core::{Clock, Instant};
use rustix::time::Timespec;
#[cfg(not(feature = "libc-clock"))]
use rustix::time::{clock_gettime, ClockId};

/// `CLOCK_MONOTONIC` in nanoseconds (read through the vDSO on Linux: no syscall on common
/// targets).
///
/// It never steps with wall-clock changes (NTP, `date`), which is what deadlines need. On Linux
/// it does not advance while the system is suspended; neither does the `timerfd` that epoll's
/// poller uses for timeouts, since both run on the same clock, so a deadline and the sleep
/// towards it agree.
///
/// # Examples
///
/// ```
/// use loop_core::Clock;
/// use loop_posix::MonotonicClock;
///
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b >= a); // monotonic
/// ```
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
///
/// ```
/// let start = loop_posix::monotonic_now();
/// let elapsed = loop_posix::monotonic_now() - start; // a Duration
/// assert!(elapsed.as_secs() < 60);
/// ```
#[inline]
pub fn monotonic_now() -> Instant {
    Instant::from_nanos(timespec_nanos(read_monotonic()))
}

/// `CLOCK_MONOTONIC` through rustix (its own vDSO reader on Linux: no libc).
#[cfg(not(feature = "libc-clock"))]
#[inline]
fn read_monotonic() -> Timespec {
    clock_gettime(ClockId::Monotonic)
}

/// `CLOCK_MONOTONIC` through the C library's `clock_gettime` (feature `libc-clock`: the C
/// library's vDSO lookup, which a program that links libc carries anyway). The monotonic clock
/// always exists, so a failure (impossible) reads as the epoch.
#[cfg(feature = "libc-clock")]
// One `clock_gettime` into a local timespec; `time_t` and `c_long` are `i64` on 64-bit targets,
// narrower on some 32-bit ones.
#[allow(unsafe_code, clippy::useless_conversion)]
#[inline]
fn read_monotonic() -> Timespec {
    // Not a struct literal: some targets' `timespec` has private padding fields.
    let mut ts = core::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is valid for writes of one `timespec` for the duration of the call, and
    // `CLOCK_MONOTONIC` is a clock id every supported kernel knows; the call writes only `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    if rc != 0 {
        return Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
    }
    // SAFETY: a successful `clock_gettime` filled `ts`.
    let ts = unsafe { ts.assume_init() };
    Timespec {
        tv_sec: ts.tv_sec.into(),
        tv_nsec: ts.tv_nsec.into(),
    }
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

    /// With or without feature `libc-clock`, the clock is the kernel's `CLOCK_MONOTONIC`, the
    /// one the pollers' timeouts (epoll's timerfd) run on: a reading falls between two of
    /// rustix's own.
    #[test]
    fn clock_reads_the_same_monotonic_clock_as_rustix() {
        let nanos = || {
            timespec_nanos(rustix::time::clock_gettime(
                rustix::time::ClockId::Monotonic,
            ))
        };
        for _ in 0..100 {
            let before = nanos();
            let ours = monotonic_now().as_nanos();
            let after = nanos();
            assert!(
                before <= ours && ours <= after,
                "{before} <= {ours} <= {after}"
            );
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
