//! The reference rows: one bare `epoll_wait` per sleep, on an epoll with nothing registered,
//! with the sleep converted to whole milliseconds, the only unit `epoll_wait` takes.
//!
//! Rounded up (rustix's conversion, tokio's, Python's `select.epoll.poll`): never early, but a
//! 100 µs sleep takes a millisecond and a 3.1 ms one four. Rounded down (C's
//! `timeout_ns / 1000000`): a 100 µs sleep becomes `epoll_wait(.., 0)` and returns at once,
//! early by the whole sleep, and a 3.1 ms one wakes at 3 ms (+ timer slack), mostly early.
//! That is why ioloop's pollers round up, and why its epoll poller arms a timerfd instead.
//! The whole-millisecond value is passed as a `Timespec` of whole milliseconds, which rustix
//! hands to `epoll_pwait` as exactly that many milliseconds.

use std::io;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::time::Timespec;

use super::{lateness_us, PrecisionCase, PrecisionSamples};
use crate::sys::monotonic_ns;

/// Whole milliseconds, rounded up.
pub fn run_round_up(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    run(case, true)
}

/// Whole milliseconds, rounded down.
pub fn run_round_down(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    run(case, false)
}

fn run(case: &PrecisionCase, round_up: bool) -> io::Result<PrecisionSamples> {
    let ep = epoll::create(CreateFlags::CLOEXEC)?;
    let mut events = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }; 1];
    let ns = case.delay.as_nanos() as u64;
    let ms = if round_up {
        ns.div_ceil(1_000_000)
    } else {
        ns / 1_000_000
    };
    let ts = Timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    };
    let mut out = Vec::with_capacity(case.sleeps);
    for gap in &case.gaps[..case.sleeps] {
        std::thread::sleep(*gap);
        let deadline = monotonic_ns() + ns;
        let n = epoll::wait(&ep, &mut events[..], Some(&ts))?;
        let fired = monotonic_ns();
        std::hint::black_box(n);
        out.push(lateness_us(fired, deadline));
    }
    Ok(out)
}
