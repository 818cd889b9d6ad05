//! The POSIX pieces every ioloop poller shares, in one place (Tornado keeps them in
//! `tornado/platform/posix.py`): each platform crate (`loop-linux`, `loop-bsd`, `loop-select`)
//! is then only its poller's translation, and no platform crate depends on another.
//!
//! - [`set_cloexec`], [`set_nonblocking`]: what an fd needs before a loop watches it;
//! - [`PipeNotifier`] / [`PipeReader`]: the self-pipe waker (Tornado's `Waker`), for pollers
//!   without a better one (poll, select, kqueue without `EVFILT_USER`);
//! - [`fork`]: the process-wide fork generation, so a poller copied into a child by `fork`
//!   refuses to touch the kernel objects it shares with the parent;
//! - [`MonotonicClock`]: `CLOCK_MONOTONIC` as the loop's [`Clock`](loop_core::Clock);
//! - [`errno`] / [`os`]: rustix's error numbers as loop-core's;
//! - [`timeout`]: kernel timeouts that are rounded up, never down, and sliced when huge;
//! - [`check_open`]: the fd-level probe the pollers share.
//!
//! `no_std`, no allocation, and no libc on Linux and Android (rustix's raw-syscall backend);
//! elsewhere rustix links libc anyway, and [`fork`] uses its `pthread_atfork`. Feature
//! `libc-clock` (for programs that link libc anyway, as every `std` program does; the `ioloop`
//! facade turns it on) reads the clock through the C library's `clock_gettime` instead of
//! rustix's own vDSO reader, so a static binary carries one vDSO lookup, not two.
//!
//! ```
//! use loop_core::Notify;
//! let (notifier, reader) = loop_posix::PipeNotifier::pair()?;
//! notifier.notify()?;
//! assert!(reader.drain());
//! let guard = loop_posix::fork::ForkGuard::new();
//! assert!(!guard.forked());
//! # Ok::<(), loop_core::Errno>(())
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod clock;
#[allow(unsafe_code)] // `check_open` borrows a raw fd for one fcntl
mod fd;
#[allow(unsafe_code)] // the wipe-on-fork page: mmap/madvise/munmap and its atomic word
pub mod fork;
mod pipe;
pub mod timeout;

pub use clock::{monotonic_now, MonotonicClock};
pub use fd::{check_open, errno, os, refused, set_cloexec, set_nonblocking};
pub use pipe::{PipeNotifier, PipeReader};

/// The `Poller` methods every posix poller writes the same way, for use inside its
/// `impl Poller` block: `notifier` (the struct's `notifier` field) and `forked` (its
/// [`fork::ForkGuard`] in the `fork` field, one atomic load, no syscall).
///
/// ```ignore
/// impl Poller for MyPoller {
///     type Notifier = loop_posix::PipeNotifier;
///     loop_posix::notifier_and_forked!();
///     // capabilities, register, modify, deregister, wait ...
/// }
/// ```
#[macro_export]
macro_rules! notifier_and_forked {
    () => {
        fn notifier(&self) -> &Self::Notifier {
            &self.notifier
        }

        /// Compares the fork generation with the one this poller was created in (one atomic
        /// load, no syscall; see `loop_posix::fork`).
        #[inline]
        fn forked(&self) -> bool {
            self.fork.forked()
        }
    };
}
