//! ioloop: `add_callback` of a closure, then `run_once(Some(0))` runs the batch.
//!
//! The callback queue is a fixed-capacity ring (`Q` = 1024 ≥ the batch) of closures stored
//! inline: no allocation per callback. Each closure captures one `&'static Cell` counter, as
//! the tokio tasks do. One `run_once` runs exactly the callbacks queued when it started
//! (Tornado's rule), then polls with a zero timeout: one `epoll_wait` per batch, included.

use std::cell::Cell;
use std::io;
use std::time::Duration;

use loop_core::EventLoop;
use loop_linux::Epoll;

use super::{time_batches, CallbackCase, CallbackSamples};
use crate::sys::io_err;

/// Queue capacity: one batch.
const Q: usize = 1024;
type Lp = EventLoop<Epoll, 4, 4, Q>;

/// Runs the case.
pub fn run(case: &CallbackCase) -> io::Result<CallbackSamples> {
    if case.batch > Q {
        return Err(io::Error::other(format!(
            "batch larger than the queue ({Q})"
        )));
    }
    let mut lp = Lp::new_boxed().map_err(io_err)?;
    let counter: &'static Cell<u64> = Box::leak(Box::new(Cell::new(0)));
    time_batches(case, counter, |k| {
        for _ in 0..k {
            lp.add_callback(move |_| counter.set(counter.get() + 1))
                .map_err(|_| io::Error::other("callback queue full"))?;
        }
        lp.run_once(Some(Duration::ZERO)).map_err(io_err)
    })
}
