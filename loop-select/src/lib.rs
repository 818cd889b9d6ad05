//! Portable pollers for ioloop: [`Poll`] (`poll(2)`) and [`Select`] (`select(2)`), both woken
//! by a self-pipe [`PipeNotifier`].
//!
//! Use them where epoll and kqueue are not available, or to test a program against the
//! plainest POSIX semantics. Both implement [`loop_core::Poller`]: level-triggered, with
//! emulated oneshot, no edge mode, fixed capacity, no allocation.
//!
//! | | [`Poll<N>`](Poll) | [`Select`] |
//! |---|---|---|
//! | fds | any number, up to `N - 1` registrations (default 1023) | only fds `0..1024` (`FD_SETSIZE`) |
//! | timeout resolution | 1 ms, rounded up | 1 µs, rounded up |
//! | closed peer | READ \| HUP | READ (no hang-up bit) |
//! | fd closed while registered | ERROR once (`POLLNVAL`), then masked | ERROR once (after `EBADF`), then masked |
//! | register / deregister | O(n) | O(1) |
//!
//! ```
//! use loop_core::{Interest, Mode, Notify, PollEvent, Poller};
//! use std::time::Duration;
//!
//! let mut poller = loop_select::Poll::new().unwrap();
//! let (r, w) = std::io::pipe().unwrap();
//! poller.register(std::os::fd::AsRawFd::as_raw_fd(&r), 1, Interest::READ.registered(), Mode::Level).unwrap();
//!
//! // Nothing to read: the wait times out, never early.
//! let mut events = [PollEvent::default(); 16];
//! assert_eq!(poller.wait(&mut events, Some(Duration::from_millis(5))).unwrap(), 0);
//!
//! // A notification wakes the wait and is not reported as an event.
//! poller.notifier().notify().unwrap();
//! assert_eq!(poller.wait(&mut events, None).unwrap(), 0);
//!
//! std::io::Write::write_all(&mut &w, b"x").unwrap();
//! assert_eq!(poller.wait(&mut events, None).unwrap(), 1);
//! assert_eq!(events[0].key, 1);
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[allow(unsafe_code)] // borrows raw fds for pollfd
mod poll;
#[allow(unsafe_code)] // select(2) through libc (fd_set)
mod select;

/// The self-pipe waker both pollers use (it lives in `loop-posix`, shared with kqueue).
pub use loop_posix::{PipeNotifier, PipeReader};
pub use poll::Poll;
pub use select::{Select, FD_SETSIZE};

/// The `Mode` both fd-set pollers accept: Level → false, Oneshot → true (emulated by parking
/// the fd after its first report), Edge → unsupported (no kernel state to clear).
fn oneshot(mode: loop_core::Mode) -> Result<bool, loop_core::Error> {
    match mode {
        loop_core::Mode::Level => Ok(false),
        loop_core::Mode::Oneshot => Ok(true),
        loop_core::Mode::Edge => Err(loop_core::Error::Unsupported),
    }
}

/// Helpers both pollers' unit tests use.
#[cfg(test)]
mod test_util {
    use rustix::fd::OwnedFd;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    /// A connected, non-blocking, close-on-exec Unix stream socket pair.
    pub(crate) fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap()
    }

    /// The event a test expects: `key` with `readiness`.
    pub(crate) fn event(key: u64, readiness: loop_core::Readiness) -> loop_core::PollEvent {
        loop_core::PollEvent { key, readiness }
    }

    /// Waits three times with a one-event buffer (`wait` returns how many it filled) and
    /// checks that keys 0, 1 and 2 each came up: a small buffer still reaches every ready fd.
    pub(crate) fn assert_keys_0_to_2_each_seen(
        mut wait: impl FnMut(&mut [loop_core::PollEvent]) -> usize,
    ) {
        let mut seen = [false; 3];
        let mut ev = [loop_core::PollEvent::default(); 1];
        for _ in 0..3 {
            assert_eq!(wait(&mut ev), 1);
            seen[ev[0].key as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    /// The refusal a test expects for an error number.
    pub(crate) fn os(errno: loop_core::Errno) -> loop_core::Error {
        loop_core::Error::Os { errno }
    }
}
