//! ioloop: `add_callback` of a closure, then `run_once(Some(0))` runs the batch.
//!
//! The callback queue is a fixed-capacity ring (`Q` = 1024 ≥ the batch) of closures stored
//! inline: no allocation per callback. Each closure captures one `&'static Cell` counter, as
//! the tokio tasks do. One `run_once` runs exactly the callbacks queued when it started
//! (Tornado's rule), then polls with a zero timeout: one `epoll_wait` per batch, included.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use loop_core::EventLoop;
use loop_linux::Epoll;

use super::{CallbackCase, CallbackSamples};
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
    let mut out = Vec::with_capacity(case.iters);
    for _ in 0..case.iters {
        counter.set(0);
        let t0 = Instant::now();
        let mut added = 0;
        while added < case.total {
            let k = case.batch.min(case.total - added);
            for _ in 0..k {
                lp.add_callback(move |_| counter.set(counter.get() + 1))
                    .map_err(|_| io::Error::other("callback queue full"))?;
            }
            added += k;
            lp.run_once(Some(Duration::ZERO)).map_err(io_err)?;
        }
        let t1 = Instant::now();
        std::hint::black_box(counter.get());
        if counter.get() != case.total as u64 {
            return Err(io::Error::other("lost callbacks"));
        }
        out.push((t1 - t0).as_nanos() as f64 / case.total as f64);
    }
    Ok(out)
}
