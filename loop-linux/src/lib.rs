//! ioloop's Linux poller: epoll, with an eventfd to wake it and a timerfd for timeouts finer
//! than a millisecond.
//!
//! ```
//! use core::time::Duration;
//! use std::io::Write;
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//!
//! use loop_core::{Interest, Mode, PollEvent, Poller, Readiness};
//! use loop_linux::Epoll;
//!
//! let mut poller = Epoll::new()?;
//! let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
//! loop_linux::set_nonblocking(&ours)?;
//!
//! // The loop passes an opaque key and always adds ERROR to the interest.
//! poller.register(ours.as_raw_fd(), 7, Interest::READ.registered(), Mode::Level)?;
//! theirs.write_all(b"ping").expect("write");
//!
//! let mut events = [PollEvent::default(); 16];
//! let n = poller.wait(&mut events, Some(Duration::from_secs(5)))?;
//! assert_eq!(&events[..n], &[PollEvent { key: 7, readiness: Readiness::READ }]);
//!
//! poller.deregister(ours.as_raw_fd())?;
//! # Ok::<(), loop_core::Error>(())
//! ```
//!
//! The crate is `no_std` and never allocates. Its default `std` feature only makes the fd helpers
//! accept the standard library's fd types; see `Cargo.toml`.
//!
//! - [`Epoll`]: the [`loop_core::Poller`] (and [`loop_core::Clock`]);
//! - [`EventFdNotifier`]: its [`loop_core::Notify`], safe to call from other threads and signal
//!   handlers;
//! - [`MonotonicClock`]: `CLOCK_MONOTONIC` as a [`loop_core::Clock`];
//! - [`set_cloexec`], [`set_nonblocking`]: what an fd needs before a loop watches it.

#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[allow(unsafe_code)] // borrows raw fds for epoll_ctl; Send for the event buffer
mod epoll;
mod eventfd;
mod timerfd;

pub use epoll::Epoll;
pub use eventfd::EventFdNotifier;
/// Shared with every POSIX poller (they live in `loop-posix`).
pub use loop_posix::{set_cloexec, set_nonblocking, MonotonicClock};
