//! The OS-free, allocation-free core of **ioloop**: Tornado's IOLoop semantics over
//! fixed-capacity tables.
//!
//! ```
//! use core::time::Duration;
//! use loop_core::sim::SimPoller;
//! use loop_core::{EventLoop, Interest, Readiness};
//!
//! // 16 fd handlers, 64 timers, 32 queued callbacks; all storage inline, no allocation.
//! let mut lp: EventLoop<SimPoller, 16, 64, 32> = EventLoop::with_poller(SimPoller::new());
//! lp.add_handler(7, Interest::READ, |lp, fd, ready| {
//!     assert!(ready.contains(Readiness::READ));
//!     lp.poller_mut().clear_ready(fd); // "read until EAGAIN"
//!     lp.add_callback(|lp| lp.stop()).map_err(|_| loop_core::HandlerError::Other("queue full"))
//! })
//! .unwrap();
//! lp.call_later(Duration::from_secs(1), |lp| lp.poller_mut().set_ready(7, Readiness::READ)).unwrap();
//! lp.run().unwrap();
//! assert_eq!(lp.now().as_nanos(), 1_000_000_000); // simulated time: no sleeping
//! ```
//!
//! The layers (ARCHITECTURE.md draws them):
//!
//! * the vocabulary, at the top: [`Poller`] (the OS door, `poller.rs`), errors, interest and
//!   readiness, time, fds, signals, the cross-thread [`Remote`], periodic callbacks, panic
//!   capture, logging, and the simulated poller (module `sim`, feature `sim`);
//! * `raw/`: the unsafe storage everything else is built on (inline closures, in-place
//!   zero-initialisation, the slab);
//! * `tables/`: the handler table and its fd index, the timer heap, the callback queue;
//! * `event_loop/`: [`EventLoop`], Tornado's iteration over those tables, one file per concern;
//! * `task/`: the executor, the futures, async I/O registrations and the current-loop frame
//!   through which they reach the loop.
//!
//! The modules allowed `unsafe` are listed in ARCHITECTURE.md ("Unsafe inventory"); the
//! compiler holds everything else to `#![deny(unsafe_code)]`.
#![no_std]
// Links from the facade's docs (`ioloop::EventLoop` is an alias of this crate's type) resolve
// to docs.rs when loop-core's own pages are not built beside them (`cargo doc --no-deps`).
#![doc(html_root_url = "https://docs.rs/loop-core/0.1.0")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod event_loop;
mod fd;
mod interest;
mod log;
mod panic;
mod periodic;
pub mod poller;
#[allow(unsafe_code)] // the unsafe storage: inline closures, in-place zeroing, the slab
mod raw;
#[allow(unsafe_code)] // lock-free MPSC queue of closures; Send/Sync impls
pub mod remote;
#[allow(unsafe_code)] // the async-signal-safe registry dereferences wake pointers
pub mod signal;
#[cfg(any(feature = "sim", test))]
pub mod sim;
mod tables;
mod task;
mod time;

pub use task::{executor, io};

pub use error::{Errno, Error, HandlerError, HandlerResult, RawFd, Refused, Resource};
pub use event_loop::{
    Beacon, Blocked, Counters, EventLoop, Failure, RunningNow, Source, EVENTS_PER_POLL,
    MAX_SIGNAL_HANDLERS,
};
pub use fd::Fd;
pub use interest::{Capabilities, Interest, Mode, Readiness};
pub use panic::{PanicMessage, PANIC_MESSAGE_BYTES};
pub use periodic::Periodic;
pub use poller::{Notify, OpenPoller, PollEvent, Poller};
#[doc(hidden)]
pub use raw::inline_fn::inline_fn_fits;
pub use raw::inline_fn::INLINE_CAPTURE_BYTES;
pub use remote::{LoopHandle, Remote, RemoteTarget};
pub use signal::SignalInstaller;
pub use tables::handler_table::HandlerId;
pub use tables::timer_heap::TimerHandle;
pub use task::current::with_current_loop;
pub use task::executor::{in_task, Executor, JoinError, JoinHandle, TaskId};
pub use task::futures::{
    interval, join, join_array, readable, select, sleep, sleep_until, timeout, writable, yield_now,
    Either, Interval, Join, JoinArray, Ready, Select, Sleep, YieldNow,
};
pub use task::io::IoRegistration;
pub use task::wait::{every, wait_each, WaitEach};
pub use time::{duration_nanos, Clock, Instant};
