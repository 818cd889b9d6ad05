//! ioloop's timers: `call_later`, `reset_timer`, `remove_timeout`, and `run_once` to fire.
//!
//! ioloop keeps timers in a fixed-capacity 4-ary heap (libev's layout) with the closures
//! stored inline in a slab: no allocation per timer, O(log n) insert, re-arm and real removal
//! (no dead entries). The loop is built in place on the heap (`new_boxed`) with a capacity
//! `T` chosen per case, the smallest power of two that holds `N` (as an appliance would size
//! it). Each timer's closure captures one `&'static Cell` counter (8 bytes), the same state
//! the baseline's `fn` pointer is handed.
//!
//! The schedule, rearm and cancel phases each run inside one loop callback, as a server's
//! handlers schedule their timeouts: there `call_later` counts from the loop's cached time
//! (libev's `ev_now`: the latest reading the loop took), so it reads no clock per timer.
//!
//! * schedule = `call_later(d, f)`;
//! * rearm = `reset_timer_later(h, d)` (the cached time + d), ioloop's O(log n) in-place move;
//! * cancel = `remove_timeout(h)`;
//! * fire = `run_once(Some(0))` until every callback ran (one iteration runs all due timers).
//!
//! The `call_at` variant ([`run_call_at`]) reads the loop's clock once per phase and passes
//! absolute deadlines (`call_at(now + d)`, `reset_timer(h, now + d)`): the timer table's own
//! cost, without the cached-time lookup.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use loop_core::{EventLoop, OpenPoller, TimerHandle};
use loop_linux::Epoll;

use super::manual_clock::{ManualClock, PhaseClock};
use super::{start, stop, TimerCase, TimerSamples};
use crate::sys::io_err;

/// Runs one timer case on a loop sized for it.
pub fn run(case: &TimerCase) -> io::Result<TimerSamples> {
    sized::<Epoll>(case, false)
}

/// Runs one timer case with `call_at` and one clock read per phase.
pub fn run_call_at(case: &TimerCase) -> io::Result<TimerSamples> {
    sized::<Epoll>(case, true)
}

/// [`run`] on a clock that moves by fixed steps (see `manual_clock.rs`): for instruction
/// counts that are the same in every run.
pub fn run_manual_clock(case: &TimerCase) -> io::Result<TimerSamples> {
    sized::<ManualClock<Epoll>>(case, false)
}

/// [`run_call_at`] on a clock that moves by fixed steps.
pub fn run_call_at_manual_clock(case: &TimerCase) -> io::Result<TimerSamples> {
    sized::<ManualClock<Epoll>>(case, true)
}

fn sized<P: OpenPoller + PhaseClock + 'static>(
    case: &TimerCase,
    at: bool,
) -> io::Result<TimerSamples> {
    match case.n {
        n if n <= 1 << 14 => run_sized::<P, { 1 << 14 }>(case, at),
        n if n <= 1 << 17 => run_sized::<P, { 1 << 17 }>(case, at),
        n if n <= 1 << 20 => run_sized::<P, { 1 << 20 }>(case, at),
        n => Err(io::Error::other(format!(
            "no loop size configured for {n} timers"
        ))),
    }
}

fn run_sized<P: OpenPoller + PhaseClock + 'static, const T: usize>(
    case: &TimerCase,
    at: bool,
) -> io::Result<TimerSamples> {
    let n = case.n;
    let inp = &*case.inputs;
    let mut lp = Lp::<P, T>::new_boxed().map_err(io_err)?;
    let fired: &'static Cell<u64> = Box::leak(Box::new(Cell::new(0)));
    let mut handles: Vec<TimerHandle> = Vec::with_capacity(n);
    // One closure value (it is `Copy`), so every timer has the same callback type.
    let bump = move |_: &mut Lp<P, T>| fired.set(fired.get() + 1);
    let full = |()| io::Error::other("timer table full");
    let mut out = TimerSamples::with_capacity(case.iters);

    for _ in 0..case.iters {
        handles.clear();
        lp.poller().next_phase();
        in_loop(&mut lp, &mut |lp| {
            let t0 = start();
            if at {
                let now = lp.now();
                for d in &inp.schedule {
                    handles.push(lp.call_at(now + *d, bump).map_err(|_| full(()))?);
                }
            } else {
                for d in &inp.schedule {
                    handles.push(lp.call_later(*d, bump).map_err(|_| full(()))?);
                }
            }
            out.schedule.push(stop(t0, n, "schedule"));
            Ok(())
        })?;

        lp.poller().next_phase();
        in_loop(&mut lp, &mut |lp| {
            let t0 = start();
            if at {
                let now = lp.now();
                for (h, d) in handles.iter().zip(&inp.rearm) {
                    lp.reset_timer(*h, now + *d);
                }
            } else {
                for (h, d) in handles.iter().zip(&inp.rearm) {
                    lp.reset_timer_later(*h, *d);
                }
            }
            out.rearm.push(stop(t0, n, "rearm"));
            Ok(())
        })?;

        lp.poller().next_phase();
        in_loop(&mut lp, &mut |lp| {
            let t0 = start();
            for &i in &inp.cancel {
                lp.remove_timeout(handles[i as usize]);
            }
            out.cancel.push(stop(t0, n, "cancel"));
            Ok(())
        })?;
        if lp.timer_count() != 0 {
            return Err(io::Error::other("timers left after cancelling all"));
        }

        fired.set(0);
        for d in &inp.fire {
            lp.call_later(*d, bump).map_err(|_| full(()))?;
        }
        lp.poller().until_due(Instant::now());
        let t0 = start();
        while fired.get() < n as u64 {
            lp.run_once(Some(Duration::ZERO)).map_err(io_err)?;
        }
        out.fire.push(stop(t0, n, "fire"));
        std::hint::black_box(fired.get());
    }
    Ok(out)
}

type Lp<P, const T: usize> = EventLoop<P, 4, T, 4>;

/// Runs `f` as a callback inside one loop iteration (`run_once`), as a server's handlers run.
fn in_loop<P: OpenPoller + 'static, const T: usize>(
    lp: &mut Lp<P, T>,
    f: &mut dyn FnMut(&mut Lp<P, T>) -> io::Result<()>,
) -> io::Result<()> {
    let mut result = Err(io::Error::other("phase callback did not run"));
    let mut call = |lp: &mut Lp<P, T>| result = f(lp);
    let p: *mut (dyn FnMut(&mut Lp<P, T>) + '_) = &mut call;
    // SAFETY: only the trait object's lifetime is erased: the callback runs inside the
    // `run_once` below, while `call` is still borrowed here, and it is gone when that returns
    // (the one callback queued is run by that iteration, or dropped unrun with the error).
    let p: *mut (dyn FnMut(&mut Lp<P, T>) + 'static) = unsafe { std::mem::transmute(p) };
    // SAFETY: `p` is valid for the whole `run_once` (see above) and called once, alone.
    lp.add_callback(move |lp| unsafe { (*p)(lp) })
        .map_err(|_| io::Error::other("callback queue full"))?;
    lp.run_once(Some(Duration::ZERO)).map_err(io_err)?;
    if lp.callback_count() != 0 {
        return Err(io::Error::other("phase callback did not run"));
    }
    result
}
