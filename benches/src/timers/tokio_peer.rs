//! tokio's timer wheel through `tokio::time::Sleep`, on a current_thread runtime, real time.
//!
//! The `Sleep`s live in a `Vec<Option<Sleep>>` with capacity for all `N`, allocated once and
//! never grown, so each is pinned in place without a `Box` per timer (a careful tokio user's
//! layout; `Box::pin` per timer would add an allocation tokio does not need).
//!
//! * schedule = `sleep(d)` + one poll: a `Sleep` only enters the wheel when first polled.
//! * rearm = `Sleep::reset(now + d)` (lazy when the deadline moves later).
//! * cancel = drop, in place (`slot = None`), which unlinks the entry under the driver lock.
//! * fire = one `yield_now` (the runtime turns its driver without blocking, which expires the
//!   wheel and wakes the waiting task), then one poll of each `Sleep` to observe completion:
//!   tokio's shape of "run the callbacks of the due timers".
//!
//! The phases run inside `task::unconstrained`: otherwise tokio's cooperative budget makes
//! every poll after the 128th of a task turn return `Pending` without registering anything.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::{sleep, Sleep};

use super::{start, stop, wait_until_due, TimerCase, TimerSamples};

/// Pins a `Sleep` inside the preallocated vector.
///
/// SAFETY (for the callers' `unsafe` blocks): the vector is created with capacity `n` and
/// never pushed beyond it, so its elements never move; they are only dropped in place
/// (`= None`, `clear`).
#[inline]
fn pinned(s: &mut Option<Sleep>) -> Pin<&mut Sleep> {
    let s = s.as_mut().expect("live sleep");
    // SAFETY: see above.
    unsafe { Pin::new_unchecked(s) }
}

fn register(sleeps: &mut Vec<Option<Sleep>>, d: &[std::time::Duration], cx: &mut Context<'_>) {
    for d in d {
        sleeps.push(Some(sleep(*d)));
        let s = sleeps.last_mut().unwrap();
        let _ = pinned(s).poll(cx);
    }
}

/// Runs one timer case.
pub fn run(case: &TimerCase) -> io::Result<TimerSamples> {
    let n = case.n;
    let inp = &*case.inputs;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let out = rt.block_on(tokio::task::unconstrained(async {
        let mut sleeps: Vec<Option<Sleep>> = Vec::with_capacity(n);
        let mut done = vec![false; n];
        let mut out = TimerSamples::with_capacity(case.iters);
        for _ in 0..case.iters {
            // schedule
            let t0 = start();
            poll_fn(|cx| {
                register(&mut sleeps, &inp.schedule, cx);
                Poll::Ready(())
            })
            .await;
            out.schedule.push(stop(t0, n, "schedule"));

            // rearm
            let t0 = start();
            for (s, d) in sleeps.iter_mut().zip(&inp.rearm) {
                pinned(s).reset(tokio::time::Instant::now() + *d);
            }
            out.rearm.push(stop(t0, n, "rearm"));

            // cancel
            let t0 = start();
            for &i in &inp.cancel {
                sleeps[i as usize] = None;
            }
            out.cancel.push(stop(t0, n, "cancel"));
            sleeps.clear();

            // fire
            poll_fn(|cx| {
                register(&mut sleeps, &inp.fire, cx);
                Poll::Ready(())
            })
            .await;
            done.iter_mut().for_each(|d| *d = false);
            wait_until_due(Instant::now());
            let t0 = start();
            tokio::task::yield_now().await;
            let mut ran = 0;
            poll_fn(|cx| {
                for (s, d) in sleeps.iter_mut().zip(done.iter_mut()) {
                    if !*d && pinned(s).poll(cx).is_ready() {
                        *d = true;
                        ran += 1;
                    }
                }
                if ran == n {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            out.fire.push(stop(t0, n, "fire"));
            std::hint::black_box(ran);
            sleeps.clear();
        }
        out
    }));
    Ok(out)
}
