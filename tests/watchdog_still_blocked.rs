//! The still-blocked watchdog (Tornado's `set_blocking_signal_threshold`): a callback that
//! blocks the loop is reported by the `SIGALRM` handler *while* it is still running. Its own
//! process (`harness = false`): the watchdog installs a process-wide `SIGALRM` handler and
//! `ITIMER_REAL`.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ioloop::watchdog::{self, BlockedNow};
use ioloop::EventLoop;

const THRESHOLD: Duration = Duration::from_millis(50);

/// Reports seen by the custom (async-signal-safe: atomics only) report function.
static SEEN: AtomicU32 = AtomicU32::new(0);
/// The first report's closure name (pointer and length of a `&'static str`).
static NAME_PTR: AtomicUsize = AtomicUsize::new(0);
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);
static AT_LEAST_MS: AtomicU64 = AtomicU64::new(0);
/// Reports counted by the blocking callback before it returned.
static SEEN_WHILE_BLOCKED: AtomicU32 = AtomicU32::new(0);

fn record(b: &BlockedNow) {
    if SEEN.fetch_add(1, Ordering::Relaxed) == 0 {
        NAME_PTR.store(b.name.as_ptr() as usize, Ordering::Relaxed);
        NAME_LEN.store(b.name.len(), Ordering::Relaxed);
        AT_LEAST_MS.store(b.at_least.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Blocks the loop for 3× the threshold (busy-wait, so no sleep is cut short), then notes how
/// many reports arrived while it was still running.
fn blocking_callback(lp: &mut EventLoop) {
    let start = Instant::now();
    while start.elapsed() < THRESHOLD * 3 {
        std::hint::spin_loop();
    }
    SEEN_WHILE_BLOCKED.store(SEEN.load(Ordering::Relaxed), Ordering::Relaxed);
    lp.stop();
}

fn quick_callback(_: &mut EventLoop) {}

fn still_blocked_callback_is_reported_while_it_runs_naming_it() {
    let mut lp: EventLoop = EventLoop::new().unwrap();
    watchdog::arm(&mut lp, THRESHOLD, Some(record)).unwrap();
    assert_eq!(
        watchdog::arm(&mut lp, THRESHOLD, None),
        Err(ioloop::Error::AlreadyAttached),
        "one watchdog per process"
    );
    lp.add_callback(quick_callback).unwrap();
    lp.add_callback(blocking_callback).unwrap();
    lp.run().unwrap();
    watchdog::disarm(&mut lp);

    let during = SEEN_WHILE_BLOCKED.load(Ordering::Relaxed);
    assert!(
        during >= 1,
        "no still-blocked report while the callback ran"
    );
    assert!(watchdog::reports() >= u64::from(during));
    // SAFETY: pointer and length of a `&'static str` stored by `record`.
    let name = unsafe {
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(
            NAME_PTR.load(Ordering::Relaxed) as *const u8,
            NAME_LEN.load(Ordering::Relaxed),
        ))
    };
    assert!(name.ends_with("blocking_callback"), "named {name}");
    assert!(AT_LEAST_MS.load(Ordering::Relaxed) >= THRESHOLD.as_millis() as u64);
}

fn disarmed_watchdog_restores_sigalrm_and_can_be_armed_again() {
    let mut lp: EventLoop = EventLoop::new().unwrap();
    // SAFETY: reads SIGALRM's disposition into a zeroed struct.
    let disposition = || unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut now),
            0
        );
        now.sa_sigaction
    };
    assert_eq!(disposition(), libc::SIG_DFL);
    watchdog::arm(&mut lp, THRESHOLD, None).unwrap();
    assert_ne!(disposition(), libc::SIG_DFL);
    watchdog::disarm(&mut lp);
    assert_eq!(disposition(), libc::SIG_DFL);
    assert_eq!(
        watchdog::arm(&mut lp, Duration::ZERO, None),
        Err(ioloop::Error::InvalidPeriod)
    );
    watchdog::arm(&mut lp, THRESHOLD, None).unwrap();
    watchdog::disarm(&mut lp);
}

fn main() {
    still_blocked_callback_is_reported_while_it_runs_naming_it();
    println!("test still_blocked_callback_is_reported_while_it_runs_naming_it ... ok");
    disarmed_watchdog_restores_sigalrm_and_can_be_armed_again();
    println!("test disarmed_watchdog_restores_sigalrm_and_can_be_armed_again ... ok");
}
