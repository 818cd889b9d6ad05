//! The kqueue poller for ioloop: `Kqueue` on FreeBSD, DragonFly, macOS, iOS, NetBSD and
//! OpenBSD, and [`translate`], the pure kevent → readiness rules it uses.
//!
//! On every other platform (Linux included) only [`translate`] is compiled, so its rules are
//! unit-tested where CI runs; the syscall half is type-checked with
//! `cargo check -p loop-bsd --target x86_64-unknown-freebsd` (and `aarch64-apple-darwin`).
//!
//! ```
//! use loop_bsd::translate::{merge, translate, Filter, EV_EOF};
//! use loop_core::{PollEvent, Readiness};
//!
//! // One fd, both filters fired in one kevent call: one event, OR-ed.
//! let mut events = [PollEvent::default(); 4];
//! let n = merge(&mut events, 0, 7, translate(Filter::Read, EV_EOF));
//! let n = merge(&mut events, n, 7, translate(Filter::Write, 0));
//! assert_eq!(n, 1);
//! assert_eq!(events[0].readiness, Readiness::READ | Readiness::HUP | Readiness::WRITE);
//! ```
//!
//! On a BSD (elsewhere this example compiles to nothing):
//!
//! ```
//! # #[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "macos",
//! #     target_os = "ios", target_os = "netbsd", target_os = "openbsd"))]
//! # fn main() -> Result<(), loop_core::Error> {
//! use loop_core::{Interest, Mode, Notify, PollEvent, Poller};
//! use std::os::fd::AsRawFd;
//!
//! let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
//! let mut poller = loop_bsd::Kqueue::new()?;
//! poller.register(a.as_raw_fd(), 1, Interest::READ.registered(), Mode::Level)?;
//! poller.notifier().notify()?; // wakes the wait below; not reported as an event
//! let n = poller.wait(&mut [PollEvent::default(); 64], None)?;
//! assert_eq!(n, 0);
//! # Ok(())
//! # }
//! # #[cfg(not(any(target_os = "freebsd", target_os = "dragonfly", target_os = "macos",
//! #     target_os = "ios", target_os = "netbsd", target_os = "openbsd")))]
//! # fn main() {}
//! ```
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod translate;

// The kqueue half exists only where kqueue does (`cfg(kqueue)`, `cfg(evfilt_user)` and
// `cfg(kqueue_pipe)` come from build.rs, the one place that lists those targets); the
// translation above is pure, and compiles and is tested everywhere.
#[cfg(kqueue)]
#[allow(unsafe_code)] // borrows raw fds for kevent; Send for the event buffer
mod kqueue;
#[cfg(kqueue)]
#[allow(unsafe_code)] // kevent on a raw fd; the shared kqueue fd dropped once
mod notifier;

#[cfg(kqueue)]
pub use kqueue::Kqueue;
#[cfg(kqueue)]
pub use notifier::KqueueNotifier;

#[cfg(kqueue)]
use loop_posix::errno;
