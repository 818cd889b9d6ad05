//! Find what blocks the loop: a watchdog that names the closure the loop is stuck in **while**
//! it is still stuck (Tornado's `set_blocking_signal_threshold`: `SIGALRM` from `setitimer`).
//!
//! [`EventLoop::set_watchdog`](loop_core::EventLoop::set_watchdog) reports a slow handler,
//! timer or callback only after it returned: a loop stuck in an endless loop or a blocking call
//! is never reported. [`arm`] closes that gap without a thread: the loop publishes which closure
//! it is running in a static [`Beacon`] (four atomic stores per call), and
//! `setitimer(ITIMER_REAL)` raises `SIGALRM` every `threshold`. The signal handler compares the
//! call it sees with the one it saw at the previous tick: the same call at two consecutive ticks
//! has been running for at least `threshold`, and is reported, again at every further tick
//! while it goes on. Detection is within two thresholds of the call's start.
//!
//! The report runs **inside the signal handler**: the default ([`write_report`]) formats on the
//! stack and writes one line to stderr with `write(2)`:
//!
//! ```text
//! ioloop: loop still blocked in my_app::on_request::{{closure}} (at least 200 ms)
//! ```
//!
//! A custom report function must be **async-signal-safe**: no allocation, no locks (no
//! `println!`, no `log` records, no `Mutex`), no panics; atomics, `write(2)` to an fd opened
//! beforehand and plain arithmetic are fine. It may run on any thread of the process (the
//! kernel picks one that does not block `SIGALRM`; normally the loop's own).
//!
//! One watchdog per process: `SIGALRM` and `ITIMER_REAL` are process-wide. `arm` refuses when
//! another handler owns `SIGALRM` (e.g. [`EventLoop::on_signal`](crate::SignalExt) for it).
//! Calls interrupted by `SIGALRM` are restarted (`SA_RESTART`); the loop's own poll returns
//! `EINTR` and goes on with the next iteration.
//!
//! # Example
//!
//! A callback that blocks the loop is reported while it still runs: here it stands for a
//! blocking call that returns only once the watchdog has seen it (or after 10 s).
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::{Duration, Instant};
//! use ioloop::watchdog::{self, BlockedNow};
//! use ioloop::EventLoop;
//!
//! static SEEN: AtomicU32 = AtomicU32::new(0);
//! fn count(_: &BlockedNow) {
//!     SEEN.fetch_add(1, Ordering::Relaxed); // async-signal-safe: an atomic, nothing else
//! }
//!
//! let mut lp: EventLoop = EventLoop::new()?;
//! watchdog::arm(&mut lp, Duration::from_millis(20), Some(count))?; // `None`: a line on stderr
//! lp.add_callback(|lp| {
//!     let start = Instant::now();
//!     while SEEN.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
//!         std::thread::sleep(Duration::from_millis(1)); // blocks the loop
//!     }
//!     lp.stop();
//! })?;
//! lp.run()?;
//! watchdog::disarm(&mut lp);
//! assert!(SEEN.load(Ordering::Relaxed) >= 1); // reported before the callback returned
//! # Ok::<(), ioloop::Error>(())
//! ```

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Mutex;

use loop_core::{Beacon, Errno, Error, EventLoop, Poller};

/// One still-blocked report, handed to a custom [`ReportFn`]: the closure that has been
/// running, without returning, for at least [`at_least`](Self::at_least), and how many times it
/// was reported. Read it in your report function to choose what to do (count, write to a log
/// fd, abort after too many reports).
///
/// # Examples
///
/// A report function that remembers the longest block (atomics only: it runs in a signal
/// handler), called here directly with a made-up report:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use ioloop::watchdog::BlockedNow;
///
/// static LONGEST_MS: AtomicU64 = AtomicU64::new(0);
/// fn remember(b: &BlockedNow) {
///     LONGEST_MS.fetch_max(b.at_least.as_millis() as u64, Ordering::Relaxed);
/// }
///
/// remember(&BlockedNow { name: "my_app::on_request", at_least: Duration::from_millis(400), report: 2 });
/// assert_eq!(LONGEST_MS.load(Ordering::Relaxed), 400);
/// // Installed with `watchdog::arm(&mut lp, threshold, Some(remember))`.
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedNow {
    /// The type name of the running closure (`my_crate::my_fn::{{closure}}`).
    pub name: &'static str,
    /// A lower bound of how long it has been running (a whole number of thresholds).
    pub at_least: Duration,
    /// Reports of this same call so far, this one included (1 for the first).
    pub report: u32,
}

/// A report function: called inside the `SIGALRM` handler, so it must be async-signal-safe
/// (see the module doc).
pub type ReportFn = fn(&BlockedNow);

static BEACON: Beacon = Beacon::new();
static ARMED: AtomicBool = AtomicBool::new(false);
static THRESHOLD_NS: AtomicU64 = AtomicU64::new(0);
/// The custom report function's address; 0 for [`write_report`].
static REPORT: AtomicUsize = AtomicUsize::new(0);
/// The call seen at the previous tick (0: none).
static LAST_CALL: AtomicUsize = AtomicUsize::new(0);
/// Consecutive ticks that saw `LAST_CALL` after the first.
static TICKS: AtomicU32 = AtomicU32::new(0);
static REPORTS: AtomicU64 = AtomicU64::new(0);
/// The `SIGALRM` disposition `arm` replaced.
static SAVED: Mutex<Option<libc::sigaction>> = Mutex::new(None);

/// Report a loop blocked in one closure for `threshold` or longer, while it still is, from a
/// `SIGALRM` handler: `report` (async-signal-safe, see the module doc), or [`write_report`]
/// for `None`. Makes `lp` publish its running closure on the watchdog's beacon. The
/// [module example](self) reports a blocked callback.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::{watchdog, Error, EventLoop};
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// assert_eq!(watchdog::arm(&mut lp, Duration::ZERO, None), Err(Error::InvalidPeriod));
/// watchdog::arm(&mut lp, Duration::from_millis(200), None)?; // reports on stderr
/// // One per process: a second one is refused, the first stays armed.
/// assert_eq!(watchdog::arm(&mut lp, Duration::from_millis(200), None), Err(Error::AlreadyAttached));
/// watchdog::disarm(&mut lp);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
/// Nothing is armed on error, and the error says why: [`Error::InvalidPeriod`] for a zero
/// threshold (or one under a microsecond); [`Error::AlreadyAttached`] when a watchdog is
/// already armed in this process (it stays armed); [`Error::Os`] with `EBUSY` when another
/// handler owns `SIGALRM`, or the errno of a failed `sigaction` / `setitimer` (the previous
/// `SIGALRM` disposition is put back).
pub fn arm<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
    threshold: Duration,
    report: Option<ReportFn>,
) -> Result<(), Error> {
    if threshold < Duration::from_micros(1) {
        return Err(Error::InvalidPeriod);
    }
    if ARMED
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(Error::AlreadyAttached);
    }
    let nanos = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
    THRESHOLD_NS.store(nanos, Ordering::Relaxed);
    REPORT.store(report.map_or(0, |f| f as usize), Ordering::Relaxed);
    LAST_CALL.store(0, Ordering::Relaxed);
    TICKS.store(0, Ordering::Relaxed);
    if let Err(errno) = install(threshold) {
        ARMED.store(false, Ordering::Release);
        return Err(Error::Os { errno });
    }
    lp.set_beacon(Some(&BEACON));
    Ok(())
}

/// Stop the timer, restore `SIGALRM`'s previous disposition and stop `lp` publishing. Does
/// nothing when no watchdog is armed. Afterwards [`arm`] may be called again (for this loop or
/// another).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::{watchdog, EventLoop};
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// watchdog::arm(&mut lp, Duration::from_millis(200), None)?;
/// watchdog::disarm(&mut lp);
/// watchdog::disarm(&mut lp); // nothing armed: does nothing
/// watchdog::arm(&mut lp, Duration::from_millis(100), None)?; // the process's watchdog is free again
/// watchdog::disarm(&mut lp);
/// # Ok::<(), ioloop::Error>(())
/// ```
pub fn disarm<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
) {
    lp.set_beacon(None);
    if !ARMED.load(Ordering::Acquire) {
        return;
    }
    set_timer(Duration::ZERO);
    let saved = SAVED.lock().map(|mut s| s.take()).unwrap_or(None);
    if let Some(old) = saved {
        // SAFETY: restores the disposition `install` read from the kernel.
        unsafe { libc::sigaction(libc::SIGALRM, &old, std::ptr::null_mut()) };
    }
    ARMED.store(false, Ordering::Release);
}

/// How many still-blocked reports the watchdog made in this process (with any report
/// function), for a health endpoint or a test.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::{watchdog, EventLoop};
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// watchdog::arm(&mut lp, Duration::from_secs(1), None)?;
/// lp.add_callback(|lp| lp.stop())?; // returns at once: never reported
/// lp.run()?;
/// watchdog::disarm(&mut lp);
/// assert_eq!(watchdog::reports(), 0);
/// # Ok::<(), ioloop::Error>(())
/// ```
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// The default report: one line on stderr with `write(2)`, formatted on the stack
/// (async-signal-safe). Long closure names are cut. A custom [`ReportFn`] can call it too,
/// and add its own action.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::watchdog::{write_report, BlockedNow};
///
/// // Writes "ioloop: loop still blocked in my_app::on_request (at least 400 ms)" to stderr.
/// write_report(&BlockedNow { name: "my_app::on_request", at_least: Duration::from_millis(400), report: 2 });
/// ```
pub fn write_report(b: &BlockedNow) {
    let mut buf = [0u8; 512];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let take = bytes.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&bytes[..take]);
        n += take;
    };
    put(b"ioloop: loop still blocked in ");
    put(&b.name.as_bytes()[..b.name.len().min(400)]);
    put(b" (at least ");
    let mut digits = [0u8; 20];
    let mut ms = u64::try_from(b.at_least.as_millis()).unwrap_or(u64::MAX);
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (ms % 10) as u8;
        ms /= 10;
        if ms == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b" ms)\n");
    // SAFETY: write(2) from a valid buffer of `n` initialised bytes; async-signal-safe.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), n) };
}

fn install(threshold: Duration) -> Result<(), Errno> {
    // SAFETY: plain sigaction calls with zero-initialised, then filled, C structs; the handler
    // is an `extern "C" fn(c_int)` that only touches atomics and calls the async-signal-safe
    // report.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut old) != 0 {
            return Err(last_errno());
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(Errno(libc::EBUSY));
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return Err(last_errno());
        }
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some(old);
        }
    }
    if !set_timer(threshold) {
        let errno = last_errno();
        if let Some(old) = SAVED.lock().ok().and_then(|mut s| s.take()) {
            // SAFETY: restores the disposition read above.
            unsafe { libc::sigaction(libc::SIGALRM, &old, std::ptr::null_mut()) };
        }
        return Err(errno);
    }
    Ok(())
}

/// `setitimer(ITIMER_REAL)` with `every` as value and interval (zero stops it).
fn set_timer(every: Duration) -> bool {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(every.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: setitimer with a valid itimerval and no old value.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    rc == 0
}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// The `SIGALRM` handler: atomics and the report only.
extern "C" fn on_alarm(_signo: libc::c_int) {
    let errno = errno_location();
    // SAFETY: the thread's errno location, valid for the thread's life; saved and restored
    // because the report may call write(2).
    let saved = errno.map(|e| unsafe { *e });
    tick();
    if let (Some(e), Some(v)) = (errno, saved) {
        // SAFETY: as above.
        unsafe { *e = v };
    }
}

fn tick() {
    let Some(now) = BEACON.running() else {
        LAST_CALL.store(0, Ordering::Relaxed);
        TICKS.store(0, Ordering::Relaxed);
        return;
    };
    if LAST_CALL.swap(now.call, Ordering::Relaxed) != now.call {
        TICKS.store(0, Ordering::Relaxed);
        return;
    }
    let ticks = TICKS.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    let threshold = Duration::from_nanos(THRESHOLD_NS.load(Ordering::Relaxed));
    let blocked = BlockedNow {
        name: now.name,
        at_least: threshold.saturating_mul(ticks),
        report: ticks,
    };
    REPORTS.fetch_add(1, Ordering::Relaxed);
    match REPORT.load(Ordering::Relaxed) {
        0 => write_report(&blocked),
        addr => {
            // SAFETY: a non-zero `REPORT` was stored by `arm` from a `ReportFn`.
            let f: ReportFn = unsafe { core::mem::transmute::<usize, ReportFn>(addr) };
            f(&blocked);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_location() -> Option<*mut libc::c_int> {
    // SAFETY: returns the calling thread's errno address; no preconditions.
    Some(unsafe { libc::__errno_location() })
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn errno_location() -> Option<*mut libc::c_int> {
    // SAFETY: returns the calling thread's errno address; no preconditions.
    Some(unsafe { libc::__error() })
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
)))]
fn errno_location() -> Option<*mut libc::c_int> {
    None
}
