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
//! The pieces, one file each: [`Poller`] (the OS door, `poller.rs`), the handler table
//! (`handler_table.rs`), the timer heap (`timer_heap.rs`), the callback queue
//! (`callback_queue.rs`), the iteration algorithm ([`EventLoop`], `event_loop.rs`), periodic
//! callbacks (`periodic.rs`) and the simulated poller (module `sim`, feature `sim`). `unsafe` lives
//! only in `inline_fn.rs`, `slab.rs`, `callback_queue.rs`, `zeroed.rs` and the in-place
//! constructor of the loop.
#![no_std]
#![warn(missing_docs)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod callback_queue;
mod current;
mod error;
mod event_loop;
pub mod executor;
mod fd;
mod fd_index;
mod futures;
mod handler_table;
mod inline_fn;
mod interest;
pub mod io;
mod log;
mod panic;
mod periodic;
pub mod poller;
pub mod remote;
pub mod signal;
#[cfg(any(feature = "sim", test))]
pub mod sim;
mod slab;
mod time;
mod timer_heap;
mod wait;
mod zeroed;

pub use current::with_current_loop;
pub use error::{Errno, Error, HandlerError, HandlerResult, RawFd, Refused, Resource};
pub use event_loop::{
    Blocked, Counters, EventLoop, Failure, Source, EVENTS_PER_POLL, MAX_SIGNAL_HANDLERS,
};
pub use executor::{in_task, Executor, TaskId};
pub use fd::Fd;
pub use futures::{
    interval, join, join_array, readable, select, sleep, sleep_until, timeout, writable, yield_now,
    Either, Interval, Join, JoinArray, Ready, Select, Sleep, YieldNow,
};
pub use handler_table::HandlerId;
#[doc(hidden)]
pub use inline_fn::inline_fn_fits;
pub use inline_fn::INLINE_CAPTURE_BYTES;
pub use interest::{Capabilities, Interest, Mode, Readiness};
pub use io::IoRegistration;
pub use panic::{PanicMessage, PANIC_MESSAGE_BYTES};
pub use periodic::Periodic;
pub use poller::{Notify, OpenPoller, PollEvent, Poller};
pub use remote::{LoopHandle, Remote, RemoteTarget};
pub use signal::SignalInstaller;
pub use time::{duration_nanos, Clock, Instant};
pub use timer_heap::TimerHandle;
pub use wait::{every, wait_each, WaitEach};
