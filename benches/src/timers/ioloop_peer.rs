//! ioloop's timers: `call_later`, `reset_timer`, `remove_timeout`, and `run_once` to fire.
//!
//! ioloop keeps timers in a fixed-capacity 4-ary heap (libev's layout) with the closures
//! stored inline in a slab: no allocation per timer, O(log n) insert, re-arm and real removal
//! (no dead entries). The loop is built in place on the heap (`new_boxed`) with a capacity
//! `T` chosen per case, the smallest power of two that holds `N` (as an appliance would size
//! it). Each timer's closure captures one `&'static Cell` counter (8 bytes), the same state
//! the baseline's `fn` pointer is handed.
//!
//! * schedule = `call_later(d, f)` (reads the loop's clock, as the others do);
//! * rearm = `reset_timer(h, now + d)`, ioloop's O(log n) in-place move;
//! * cancel = `remove_timeout(h)`;
//! * fire = `run_once(Some(0))` until every callback ran (one iteration runs all due timers).
//!
//! The `call_at` variant ([`run_call_at`]) reads the loop's clock once per phase and passes
//! absolute deadlines (`call_at(now + d)`, `reset_timer(h, now + d)`), as libev's cached
//! `ev_now` does: the timer table's own cost without a clock read per timer.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use loop_core::{EventLoop, TimerHandle};
use loop_linux::Epoll;

use super::{start, stop, wait_until_due, TimerCase, TimerSamples};
use crate::sys::io_err;

/// Runs one timer case on a loop sized for it.
pub fn run(case: &TimerCase) -> io::Result<TimerSamples> {
    sized(case, false)
}

/// Runs one timer case with `call_at` and one clock read per phase.
pub fn run_call_at(case: &TimerCase) -> io::Result<TimerSamples> {
    sized(case, true)
}

fn sized(case: &TimerCase, at: bool) -> io::Result<TimerSamples> {
    match case.n {
        n if n <= 1 << 14 => run_sized::<{ 1 << 14 }>(case, at),
        n if n <= 1 << 17 => run_sized::<{ 1 << 17 }>(case, at),
        n if n <= 1 << 20 => run_sized::<{ 1 << 20 }>(case, at),
        n => Err(io::Error::other(format!(
            "no loop size configured for {n} timers"
        ))),
    }
}

fn run_sized<const T: usize>(case: &TimerCase, at: bool) -> io::Result<TimerSamples> {
    type Lp<const T: usize> = EventLoop<Epoll, 4, T, 4>;
    let n = case.n;
    let inp = &*case.inputs;
    let mut lp = Lp::<T>::new_boxed().map_err(io_err)?;
    let fired: &'static Cell<u64> = Box::leak(Box::new(Cell::new(0)));
    let mut handles: Vec<TimerHandle> = Vec::with_capacity(n);
    // One closure value (it is `Copy`), so every timer has the same callback type.
    let bump = move |_: &mut Lp<T>| fired.set(fired.get() + 1);
    let full = |_| io::Error::other("timer table full");
    let mut out = TimerSamples::with_capacity(case.iters);

    for _ in 0..case.iters {
        handles.clear();
        let t0 = start();
        if at {
            let now = lp.now();
            for d in &inp.schedule {
                handles.push(lp.call_at(now + *d, bump).map_err(full)?);
            }
        } else {
            for d in &inp.schedule {
                handles.push(lp.call_later(*d, bump).map_err(full)?);
            }
        }
        out.schedule.push(stop(t0, n, "schedule"));

        let t0 = start();
        if at {
            let now = lp.now();
            for (h, d) in handles.iter().zip(&inp.rearm) {
                lp.reset_timer(*h, now + *d);
            }
        } else {
            for (h, d) in handles.iter().zip(&inp.rearm) {
                let deadline = lp.now() + *d;
                lp.reset_timer(*h, deadline);
            }
        }
        out.rearm.push(stop(t0, n, "rearm"));

        let t0 = start();
        for &i in &inp.cancel {
            lp.remove_timeout(handles[i as usize]);
        }
        out.cancel.push(stop(t0, n, "cancel"));
        if lp.timer_count() != 0 {
            return Err(io::Error::other("timers left after cancelling all"));
        }

        fired.set(0);
        for d in &inp.fire {
            lp.call_later(*d, bump).map_err(full)?;
        }
        wait_until_due(Instant::now());
        let t0 = start();
        while fired.get() < n as u64 {
            lp.run_once(Some(Duration::ZERO)).map_err(io_err)?;
        }
        out.fire.push(stop(t0, n, "fire"));
        std::hint::black_box(fired.get());
    }
    Ok(out)
}
