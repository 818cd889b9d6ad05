//! Signals as loop events: the OS-free half.
//!
//! A platform signal handler (installed by the `ioloop` facade with `sigaction`) calls
//! [`deliver`], which is async-signal-safe: it sets the signal's bit in a process-wide mask and
//! wakes the loop through its attached [`Remote`](crate::Remote) (atomics and one notifier
//! write). The loop swaps the mask out at the start of each iteration and runs the handlers
//! registered with [`EventLoop::add_signal_handler`](crate::EventLoop::add_signal_handler)
//! on the loop thread, like any callback.
//!
//! Signals are process-wide, so one loop per process handles them: the last loop to register
//! a signal handler receives the wakes.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Signals 1..=63 as bits, in two 32-bit words: 32-bit targets such as ARMv7-M have no 64-bit
/// atomics.
static PENDING: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

/// How a signal reaches the loop that handles signals: set once per loop, read from signal
/// handlers.
pub(crate) struct WakeEntry {
    /// Wakes the loop; `ctx` is the `Remote` the entry lives in.
    pub(crate) wake: fn(*const ()),
    pub(crate) ctx: AtomicPtr<()>,
}

static WAKE: AtomicPtr<WakeEntry> = AtomicPtr::new(core::ptr::null_mut());

/// Record that `signo` arrived and wake the loop that handles signals. Async-signal-safe:
/// call it from a signal handler. Signal numbers outside 1..=63 are ignored.
pub fn deliver(signo: i32) {
    if !(1..=63).contains(&signo) {
        return;
    }
    PENDING[(signo / 32) as usize].fetch_or(1 << (signo % 32), Ordering::SeqCst);
    let entry = WAKE.load(Ordering::Acquire);
    if !entry.is_null() {
        // SAFETY: entries are fields of `'static` remotes (set by `route_wakes_to`), never
        // freed or moved.
        let entry = unsafe { &*entry };
        (entry.wake)(entry.ctx.load(Ordering::Acquire));
    }
}

/// Route signal wakes to `entry` (a field of a `'static` remote).
pub(crate) fn route_wakes_to(entry: &'static WakeEntry) {
    WAKE.store(
        entry as *const WakeEntry as *mut WakeEntry,
        Ordering::Release,
    );
}

/// Take the signals that arrived since the last call, as a bit mask.
#[inline]
pub(crate) fn take_pending() -> u64 {
    let mut mask = 0u64;
    for (i, word) in PENDING.iter().enumerate() {
        if word.load(Ordering::Relaxed) != 0 {
            mask |= (word.swap(0, Ordering::SeqCst) as u64) << (32 * i);
        }
    }
    mask
}

/// Whether signals arrived that nobody took yet.
#[inline]
pub(crate) fn any_pending() -> bool {
    PENDING.iter().any(|w| w.load(Ordering::Relaxed) != 0)
}

/// Installs and restores the process's handler for a signal: provided by the platform
/// (`ioloop::signals::SIGACTION`), so the core stays OS-free. `install` must make the signal
/// call [`deliver`] and remember the previous disposition; `restore` puts it back.
#[derive(Clone, Copy, Debug)]
pub struct SignalInstaller {
    /// Install the delivering handler for a signal.
    pub install: fn(i32) -> Result<(), crate::Errno>,
    /// Restore the disposition `install` replaced.
    pub restore: fn(i32),
}
