//! Turning the loop's `Option<Duration>` into kernel timeouts without ever waking early.
//!
//! Two rules. **Round up** to the syscall's resolution (milliseconds for `poll`, microseconds
//! for `select`): a 0.4 ms wait rounded down to 0 would busy-poll until the deadline
//! (ARCHITECTURE.md, "Traps"). **Slice** waits longer than [`MAX_SLICE`]: some kernels reject or overflow
//! huge timeouts (`poll` takes an `int` of milliseconds where there is no `ppoll`), so a long
//! wait is a series of one-day waits, and the poller re-waits after a slice that timed out.
//! kqueue takes a nanosecond `timespec` ([`Resolution::Nanos`]: no rounding) but still slices:
//! some kernels reject huge timespecs with `EINVAL`.

use core::time::Duration;
use rustix::time::Timespec;

/// The longest single kernel wait: one day, which every `poll`/`select` accepts.
pub const MAX_SLICE: Duration = Duration::from_secs(86_400);

/// The resolution a syscall can express; see [`slice`](fn@slice).
///
/// # Examples
///
/// ```
/// use core::time::Duration;
/// use loop_posix::timeout::{slice, Resolution};
///
/// let d = Some(Duration::from_nanos(1_500)); // 1.5 µs
/// let micros = slice(d, Resolution::Micros).timeout.unwrap();
/// assert_eq!(micros.tv_nsec, 2_000); // rounded up, never down
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// `poll(2)`: whole milliseconds.
    Millis,
    /// `select(2)`'s `struct timeval`: whole microseconds.
    Micros,
    /// `kevent(2)`'s `struct timespec`: nanoseconds, nothing to round.
    Nanos,
}

/// One kernel wait's worth of a timeout, from [`slice`](fn@slice).
///
/// # Examples
///
/// ```
/// use core::time::Duration;
/// use loop_posix::timeout::{slice, Resolution, MAX_SLICE};
///
/// let s = slice(Some(Duration::from_secs(3 * 86_400)), Resolution::Nanos);
/// assert!(s.partial); // wait a day, then wait again for the rest
/// assert_eq!(s.timeout.map(|t| t.tv_sec), Some(MAX_SLICE.as_secs() as _));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// What to pass to the syscall (`None` = block indefinitely).
    pub timeout: Option<Timespec>,
    /// The request was longer than [`MAX_SLICE`]: if this slice times out, wait again.
    pub partial: bool,
}

/// The first kernel wait for `remaining`, rounded up to `resolution`.
///
/// ```
/// use core::time::Duration;
/// use loop_posix::timeout::{slice, Resolution};
///
/// let s = slice(Some(Duration::from_micros(400)), Resolution::Millis);
/// assert_eq!(s.timeout.unwrap().tv_nsec, 1_000_000); // 0.4 ms waits 1 ms, not 0
/// assert!(slice(None, Resolution::Millis).timeout.is_none()); // block indefinitely
/// ```
pub fn slice(remaining: Option<Duration>, resolution: Resolution) -> Slice {
    let Some(d) = remaining else {
        return Slice {
            timeout: None,
            partial: false,
        };
    };
    if d > MAX_SLICE {
        return Slice {
            timeout: Some(timespec(MAX_SLICE)),
            partial: true,
        };
    }
    let unit: u32 = match resolution {
        Resolution::Millis => 1_000_000,
        Resolution::Micros => 1_000,
        Resolution::Nanos => 1,
    };
    let nanos = d.subsec_nanos().div_ceil(unit) * unit;
    // subsec rounding may carry into a whole second (0.9996 s -> 1 s); Duration::new carries.
    let rounded = Duration::new(d.as_secs(), 0) + Duration::from_nanos(u64::from(nanos));
    Slice {
        timeout: Some(timespec(rounded)),
        partial: false,
    }
}

/// Waits up to `timeout` as a series of kernel waits: calls `wait_once` with each
/// [`slice`](fn@slice) of it until `wait_once` reports events (`Ok(Some(n))`, returned as
/// `Ok(n)`) or a slice that was not [`partial`](Slice::partial) times out (`Ok(0)`). What
/// remains after a partial slice is measured on the monotonic clock, so a slice cut short
/// (`EINTR` reported as no events) never lengthens the whole wait.
///
/// # Errors
/// The first error `wait_once` returns, unchanged.
///
/// ```
/// use core::time::Duration;
/// use loop_posix::timeout::{wait_sliced, Resolution};
///
/// let mut calls = 0;
/// let n = wait_sliced(Some(Duration::ZERO), Resolution::Millis, |_| {
///     calls += 1;
///     Ok::<_, loop_core::Errno>(None)
/// });
/// assert_eq!((n, calls), (Ok(0), 1)); // one slice, timed out
/// ```
pub fn wait_sliced<E>(
    timeout: Option<Duration>,
    resolution: Resolution,
    mut wait_once: impl FnMut(Option<&Timespec>) -> Result<Option<usize>, E>,
) -> Result<usize, E> {
    let start = crate::monotonic_now();
    let mut remaining = timeout;
    loop {
        let Slice { timeout, partial } = slice(remaining, resolution);
        if let Some(n) = wait_once(timeout.as_ref())? {
            return Ok(n);
        }
        match remaining {
            Some(d) if partial => {
                remaining = Some(d.saturating_sub(crate::monotonic_now() - start));
            }
            _ => return Ok(0),
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        // At most MAX_SLICE: fits every platform's time_t.
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: Slice) -> Duration {
        let t = s.timeout.unwrap();
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn sub_millisecond_waits_round_up_never_to_zero() {
        let s = slice(Some(Duration::from_micros(400)), Resolution::Millis);
        assert_eq!(ts(s), Duration::from_millis(1));
        let s = slice(Some(Duration::from_nanos(1)), Resolution::Micros);
        assert_eq!(ts(s), Duration::from_micros(1));
    }

    #[test]
    fn exact_values_are_kept_and_zero_stays_zero() {
        assert_eq!(
            ts(slice(Some(Duration::from_millis(7)), Resolution::Millis)),
            Duration::from_millis(7)
        );
        assert_eq!(
            ts(slice(Some(Duration::ZERO), Resolution::Millis)),
            Duration::ZERO
        );
    }

    #[test]
    fn rounding_carries_into_seconds() {
        let s = slice(Some(Duration::new(2, 999_999_001)), Resolution::Millis);
        assert_eq!(ts(s), Duration::from_secs(3));
        assert!(!s.partial);
    }

    #[test]
    fn huge_waits_are_sliced_not_truncated() {
        let s = slice(Some(Duration::MAX), Resolution::Millis);
        assert_eq!(ts(s), MAX_SLICE);
        assert!(s.partial);
        assert_eq!(
            slice(None, Resolution::Micros),
            Slice {
                timeout: None,
                partial: false
            }
        );
    }
}
