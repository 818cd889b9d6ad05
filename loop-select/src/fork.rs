//! Fork detection without a system call: a process-wide fork generation, bumped in every child
//! by a `pthread_atfork` handler (libc: rustix has no `pthread_atfork`). A poller records the
//! generation it was created in; a different one means it is a copy in a forked child.
//!
//! The loop asks at every `run_once`, so the check must be cheaper than `getpid(2)` (a real
//! syscall since glibc 2.25 stopped caching it: ~0.2 µs, measurable in the dispatch
//! benchmark). A `fork` that bypasses libc (a raw `clone` syscall) is not seen; `fork(2)`,
//! `posix_spawn` children that exec, and `std::process::Command` all go through libc.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static FORKS: AtomicU32 = AtomicU32::new(0);
static REGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation; registers the child handler on first use. Every poller of
/// the workspace (epoll, kqueue, poll, select) shares this one counter.
pub fn generation() -> u32 {
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler that only increments an atomic (async-signal-safe, as
        // handlers run in the child right after fork must be); no prepare/parent handlers.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    }
    FORKS.load(Ordering::Relaxed)
}

/// Whether a poller created in generation `created` now runs in a forked child.
#[inline]
pub fn forked_since(created: u32) -> bool {
    FORKS.load(Ordering::Relaxed) != created
}
