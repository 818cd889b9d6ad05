//! Fork detection without a system call: a process-wide fork generation, bumped in every child
//! by a `pthread_atfork` handler (libc: rustix has no `pthread_atfork`). A poller records the
//! generation it was created in; a different one means it is a copy in a forked child.
//!
//! The loop asks at every `run_once`, so the check must be cheaper than `getpid(2)` (a real
//! syscall since glibc 2.25 stopped caching it: ~0.2 µs, measurable in the dispatch
//! benchmark). A `fork` that bypasses libc (a raw `clone` syscall) is not seen; `fork(2)`,
//! `posix_spawn` children that exec, and `std::process::Command` all go through libc.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use loop_core::{Errno, Error};

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

/// The fork generation a poller (or notifier) was created in: after `fork`, every operation
/// that would touch a kernel object shared with the parent checks it first and becomes a
/// refusal ([`Error::Forked`], or `ECHILD` for `wait` and its `Errno`) or a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkGuard {
    created: u32,
}

impl ForkGuard {
    /// A guard for an object created now, in this process.
    pub fn new() -> ForkGuard {
        ForkGuard {
            created: generation(),
        }
    }

    /// Whether this is a forked child's copy of the object.
    #[inline]
    pub fn forked(self) -> bool {
        forked_since(self.created)
    }

    /// `Err(Error::Forked)` in a forked child.
    ///
    /// # Errors
    /// [`Error::Forked`] when the object was created in another process.
    #[inline]
    pub fn check(self) -> Result<(), Error> {
        if self.forked() {
            Err(Error::Forked)
        } else {
            Ok(())
        }
    }

    /// `Err(Errno::ECHILD)` in a forked child: what `Poller::wait` returns there.
    ///
    /// # Errors
    /// [`Errno::ECHILD`] when the object was created in another process.
    #[inline]
    pub fn check_wait(self) -> Result<(), Errno> {
        if self.forked() {
            Err(Errno::ECHILD)
        } else {
            Ok(())
        }
    }
}

impl Default for ForkGuard {
    fn default() -> Self {
        ForkGuard::new()
    }
}
