//! Sub-millisecond timeouts for `epoll_wait`: a `timerfd` watched by the same epoll.
//!
//! `epoll_wait` takes whole milliseconds. rustix rounds a finer timeout **up** (never early, so
//! no busy-polling), but a 1.1 ms deadline then sleeps 2 ms. `epoll_pwait2` (Linux 5.11) takes a
//! timespec, but rustix only calls it with its `linux_5_11` feature, and then unconditionally:
//! on an older kernel every wait would fail with `ENOSYS`, and appliance kernels are often
//! older. So, like smol-rs/polling, a timed wait arms a timerfd (Linux 2.6.25) with the exact
//! relative timeout and calls `epoll_wait` with no timeout; the timer's expiry is the wake.
//! The cost is one `timerfd_settime` per timed wait.
//!
//! The timer is registered edge-triggered and never read: arming or disarming it resets its
//! expiry count, and epoll re-checks readiness before reporting, so a stale expiry is never
//! seen after a re-arm, and one that is seen is reported once, not at every later wait.

use core::time::Duration;

use loop_core::Errno;
use loop_posix::errno;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

const ZERO: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// A one-shot `CLOCK_MONOTONIC` timer that wakes the poller's epoll.
#[derive(Debug)]
pub(crate) struct DeadlineTimer {
    fd: OwnedFd,
    /// Whether an expiry may still be pending: only then does an untimed wait need to disarm.
    armed: bool,
}

impl DeadlineTimer {
    pub(crate) fn new() -> Result<DeadlineTimer, Errno> {
        // Monotonic: the loop's clock (see `MonotonicClock`). CLOEXEC: internal to the poller.
        let flags = TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK;
        let fd = timerfd_create(TimerfdClockId::Monotonic, flags).map_err(errno)?;
        Ok(DeadlineTimer { fd, armed: false })
    }

    /// Expire once, `timeout` from now (`timeout` must not be zero: zero disarms).
    pub(crate) fn arm(&mut self, timeout: Duration) -> Result<(), Errno> {
        self.set(timespec(timeout))?;
        self.armed = true;
        Ok(())
    }

    /// Make sure no earlier `arm` can still wake the poller.
    pub(crate) fn disarm(&mut self) -> Result<(), Errno> {
        if self.armed {
            self.set(ZERO)?;
            self.armed = false;
        }
        Ok(())
    }

    /// The poller saw the expiry: nothing is pending any more.
    pub(crate) fn expired(&mut self) {
        self.armed = false;
    }

    fn set(&self, value: Timespec) -> Result<(), Errno> {
        let spec = Itimerspec {
            it_interval: ZERO,
            it_value: value,
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec).map_err(errno)?;
        Ok(())
    }
}

impl AsFd for DeadlineTimer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `d` as a timespec, saturating at `i64::MAX` seconds; the kernel clamps anything past its own
/// limit (~292 years) to "never", so `Duration::MAX` is a valid, endless timeout.
fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9, so it fits `tv_nsec` (a `c_long`) on every target.
        tv_nsec: d.subsec_nanos() as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_keeps_nanoseconds_and_saturates_seconds() {
        let ts = timespec(Duration::new(3, 1_500));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 1_500));
        let ts = timespec(Duration::MAX);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (i64::MAX, 999_999_999));
    }

    #[test]
    fn the_kernel_accepts_the_longest_timeout() {
        let mut t = DeadlineTimer::new().unwrap();
        t.arm(Duration::MAX).unwrap();
        t.disarm().unwrap();
        assert!(!t.armed);
    }
}
