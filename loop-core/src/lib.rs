#![no_std]
#![warn(missing_docs)]
#![doc = "ioloop core (work in progress)"]

#[cfg(feature = "std")]
extern crate std;

mod error;
mod interest;
mod poller;
mod time;

pub use error::{Errno, Error, HandlerError, HandlerResult, RawFd, Refused, Resource};
pub use interest::{Capabilities, Interest, Mode, Readiness};
pub use poller::{Notify, PollEvent, Poller};
pub use time::{duration_nanos, Clock, Instant};
mod callback_queue;
mod fd_index;
mod handler_table;
mod inline_fn;
mod slab;
mod timer_heap;
mod zeroed;
