//! ioloop: one timer per sleep, and `run()` until the timer's callback calls `stop()`.
//!
//! The timer is scheduled with `call_at(lp.now() + d, ..)`, which is exactly what
//! `call_later(d, ..)` does (`loop-core/src/event_loop.rs`), so the deadline the loop works
//! to is known here to the nanosecond and "early" is exact, not off by a clock read. The
//! callback reads `CLOCK_MONOTONIC` first thing and stops the loop; `run()` then returns. What
//! is measured is the whole path a sleeping ioloop program takes: the poll timeout the loop
//! computes, the poller's rounding, the kernel's wake-up, the loop's next iteration and its
//! timer dispatch. The loop is generic over the poller, so the three rows run the same code.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use loop_core::{EventLoop, OpenPoller, Poller};
use loop_linux::Epoll;
use loop_select::{Poll, Select};

use super::{lateness_us, PrecisionCase, PrecisionSamples};
use crate::sys::{io_err, monotonic_ns};

/// Runs the case on epoll (timerfd timeouts).
pub fn run_epoll(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    run_with::<Epoll>(case)
}

/// Runs the case on poll(2) (millisecond timeouts, rounded up).
pub fn run_poll(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    run_with::<Poll>(case)
}

/// Runs the case on select(2) (microsecond timeouts, rounded up).
pub fn run_select(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    run_with::<Select>(case)
}

fn run_with<P: Poller + OpenPoller + 'static>(
    case: &PrecisionCase,
) -> io::Result<PrecisionSamples> {
    let mut lp = EventLoop::<P, 4, 4, 4>::new_boxed().map_err(io_err)?;
    let fired = Rc::new(Cell::new(0u64));
    let mut out = Vec::with_capacity(case.sleeps);
    for gap in &case.gaps[..case.sleeps] {
        std::thread::sleep(*gap);
        let deadline = lp.now() + case.delay;
        let f = fired.clone();
        lp.call_at(deadline, move |lp| {
            f.set(monotonic_ns());
            lp.stop();
        })
        .map_err(|r| io_err(r.error))?;
        lp.run().map_err(io_err)?;
        out.push(lateness_us(fired.get(), deadline.as_nanos()));
    }
    std::hint::black_box(fired.get());
    Ok(out)
}
