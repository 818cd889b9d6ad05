//! Tornado's coroutine helpers as futures: `gen.sleep` → [`sleep`], `gen.moment` →
//! [`yield_now`], `gen.multi` → [`join`] / [`join_array`], `with_timeout` → [`timeout`], plus
//! [`select`] and fd readiness ([`readable`], [`writable`]).
//!
//! Leaf futures (`sleep`, `readable`, `writable`) use the loop that polls them (see
//! `current.rs`); polled anywhere else they stay pending. They never allocate: a sleep
//! is one timer in the loop's heap, cancelled when the future is dropped.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use crate::current::with_loop;
use crate::error::{Error, RawFd};
use crate::fd::Fd;
use crate::handler_table::HandlerId;
use crate::interest::Readiness;
use crate::time::Instant;
use crate::timer_heap::TimerHandle;

/// A future that completes at a deadline on the loop's clock. Made by [`sleep`] and
/// [`sleep_until`]; dropping it before it fires cancels its timer at once (the timer slot is
/// free again).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    delay: Option<Duration>,
    deadline: Instant,
    timer: Option<TimerHandle>,
    waker: Option<Waker>,
}

/// Sleep for `d`, measured from the first poll (which, for a spawned task or `run_sync`, is
/// right away). Tornado's `gen.sleep`. Never completes early.
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        delay: Some(d),
        deadline: Instant::MAX,
        timer: None,
        waker: None,
    }
}

/// Sleep until `deadline` on the loop's clock ([`crate::EventLoop::now`]).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        delay: None,
        deadline,
        timer: None,
        waker: None,
    }
}

impl Sleep {
    /// The deadline (known once the sleep was first polled, for [`sleep`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.delay.is_none().then_some(self.deadline)
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        with_loop(|lp| {
            if let Some(d) = this.delay.take() {
                this.deadline = lp.now() + d;
            }
            if lp.now() >= this.deadline {
                if let Some(h) = this.timer.take() {
                    lp.cancel_timer(h);
                }
                return Poll::Ready(());
            }
            let same_waker = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            match this.timer {
                Some(h) if same_waker && lp.timer_pending(h) => {}
                _ => {
                    if let Some(h) = this.timer.take() {
                        lp.cancel_timer(h);
                    }
                    match lp.wake_at(this.deadline, cx.waker().clone()) {
                        Ok(h) => {
                            this.timer = Some(h);
                            this.waker = Some(cx.waker().clone());
                        }
                        // The timer heap is full: try again next iteration rather than fail.
                        Err(_) => cx.waker().wake_by_ref(),
                    }
                }
            }
            Poll::Pending
        })
        .unwrap_or(Poll::Pending)
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(h) = self.timer.take() {
            // Outside a loop the timer stays and later wakes a waker nobody polls: harmless.
            let _ = with_loop(|lp| lp.cancel_timer(h));
        }
    }
}

/// A future that is pending once, then ready: yields to the loop for exactly one iteration
/// (Tornado's `gen.moment`). Two tasks that yield in turn alternate: `a b a b …`.
#[derive(Debug, Default)]
#[must_use = "futures do nothing unless polled"]
pub struct YieldNow {
    yielded: bool,
}

/// Yield for one loop iteration.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A future or its output.
enum MaybeDone<F: Future> {
    Future(F),
    Done(F::Output),
    Taken,
}

impl<F: Future> MaybeDone<F> {
    /// Poll if still running; `true` once the output is there.
    fn poll_done(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        // SAFETY: the `Future` variant's value is never moved out while pinned: it is only
        // polled in place, and replaced (dropped in place) by `Done` when it completes.
        let this = unsafe { self.get_unchecked_mut() };
        match this {
            MaybeDone::Future(f) => {
                // SAFETY: `f` lives inside the pinned `MaybeDone` and is never moved.
                match unsafe { Pin::new_unchecked(f) }.poll(cx) {
                    Poll::Ready(v) => {
                        *this = MaybeDone::Done(v);
                        true
                    }
                    Poll::Pending => false,
                }
            }
            MaybeDone::Done(_) => true,
            MaybeDone::Taken => true,
        }
    }

    fn take(self: Pin<&mut Self>) -> Option<F::Output> {
        // SAFETY: only the `Done` output is moved out; a `Future` value is left in place.
        let this = unsafe { self.get_unchecked_mut() };
        match core::mem::replace(this, MaybeDone::Taken) {
            MaybeDone::Done(v) => Some(v),
            other => {
                *this = other;
                None
            }
        }
    }
}

/// Both futures' outputs, in input order, once both finished (Tornado's `multi`): made by
/// [`join`].
#[must_use = "futures do nothing unless polled"]
pub struct Join<A: Future, B: Future> {
    a: MaybeDone<A>,
    b: MaybeDone<B>,
}

/// Run `a` and `b` concurrently; complete with `(a's output, b's output)` when both have.
/// A failure (an `Err` output) of one does not cut the other short: both are awaited.
pub fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B> {
    Join {
        a: MaybeDone::Future(a),
        b: MaybeDone::Future(b),
    }
}

impl<A: Future, B: Future> Future for Join<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning: the fields are never moved out while pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above, for each field.
        let (mut a, mut b) = unsafe {
            (
                Pin::new_unchecked(&mut this.a),
                Pin::new_unchecked(&mut this.b),
            )
        };
        let a_done = a.as_mut().poll_done(cx);
        let b_done = b.as_mut().poll_done(cx);
        if a_done && b_done {
            if let (Some(x), Some(y)) = (a.take(), b.take()) {
                return Poll::Ready((x, y));
            }
        }
        Poll::Pending
    }
}

/// All outputs in input order, once all finished: made by [`join_array`].
#[must_use = "futures do nothing unless polled"]
pub struct JoinArray<F: Future, const N: usize> {
    futures: [MaybeDone<F>; N],
}

/// Run `N` futures of one type concurrently; complete with their outputs in input order when
/// all have (Tornado's `multi([...])`).
pub fn join_array<F: Future, const N: usize>(futures: [F; N]) -> JoinArray<F, N> {
    JoinArray {
        futures: futures.map(MaybeDone::Future),
    }
}

impl<F: Future, const N: usize> Future for JoinArray<F, N> {
    type Output = [F::Output; N];

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning: the array elements are never moved while pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let mut all = true;
        for f in this.futures.iter_mut() {
            // SAFETY: as above.
            all &= unsafe { Pin::new_unchecked(f) }.poll_done(cx);
        }
        if !all {
            return Poll::Pending;
        }
        let mut i = 0;
        let out = core::array::from_fn(|_| {
            // SAFETY: as above; every element is `Done`, so `take` moves only outputs.
            let v = unsafe { Pin::new_unchecked(&mut this.futures[i]) }.take();
            i += 1;
            v
        });
        if out.iter().all(Option::is_some) {
            Poll::Ready(out.map(|v| v.expect("checked: all outputs present")))
        } else {
            Poll::Pending
        }
    }
}

/// The output of the future that finished first in a [`select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future finished first.
    First(A),
    /// The second future finished first.
    Second(B),
}

/// The first of two futures to finish: made by [`select`].
#[must_use = "futures do nothing unless polled"]
pub struct Select<A, B> {
    a: A,
    b: B,
}

/// Run `a` and `b` concurrently; complete with the output of the first to finish (`a` if both
/// are ready at the same poll). The other is dropped with the `Select` (a `sleep` cancels its
/// timer).
pub fn select<A: Future, B: Future>(a: A, b: B) -> Select<A, B> {
    Select { a, b }
}

impl<A: Future, B: Future> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning: the fields are never moved out while pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        if let Poll::Ready(v) = unsafe { Pin::new_unchecked(&mut this.a) }.poll(cx) {
            return Poll::Ready(Either::First(v));
        }
        // SAFETY: as above.
        if let Poll::Ready(v) = unsafe { Pin::new_unchecked(&mut this.b) }.poll(cx) {
            return Poll::Ready(Either::Second(v));
        }
        Poll::Pending
    }
}

/// [`timeout`] ran out before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Run `fut` for at most `d` (Tornado's `with_timeout`): `Ok(output)`, or `Err(Elapsed)` when
/// the time ran out first (then `fut` is dropped, cancelling whatever it waited on).
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    match select(fut, sleep(d)).await {
        Either::First(v) => Ok(v),
        Either::Second(()) => Err(Elapsed),
    }
}

/// A one-shot wait for fd readiness: made by [`readable`] and [`writable`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Ready {
    fd: RawFd,
    want: Readiness,
    id: Option<HandlerId>,
    waker: Option<Waker>,
}

/// Wait until `fd` is readable (or has an error or a hang-up: the next read tells which).
/// While it waits it holds the fd's handler slot (a one-shot handler that wakes the task and
/// removes itself), so the fd must not have a handler of its own; resolves to `Err` with
/// [`Error::AlreadyRegistered`] if it does, or with the kernel's error for a bad fd.
pub fn readable(fd: impl Into<Fd>) -> Ready {
    Ready {
        fd: fd.into().raw(),
        want: Readiness::READ,
        id: None,
        waker: None,
    }
}

/// Wait until `fd` is writable (or has an error or a hang-up). As [`readable`].
pub fn writable(fd: impl Into<Fd>) -> Ready {
    Ready {
        fd: fd.into().raw(),
        want: Readiness::WRITE,
        id: None,
        waker: None,
    }
}

impl Future for Ready {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        with_loop(|lp| {
            if let Some(id) = this.id {
                if !lp.watching(this.fd, id) {
                    this.id = None;
                    return Poll::Ready(Ok(()));
                }
                if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    return Poll::Pending;
                }
                // Polled by another task than before: watch again with its waker.
                lp.unwatch(this.fd, id);
                this.id = None;
            }
            match lp.watch_once(this.fd, this.want, cx.waker().clone()) {
                Ok(id) => {
                    this.id = Some(id);
                    this.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .unwrap_or(Poll::Pending)
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let fd = self.fd;
            let _ = with_loop(|lp| lp.unwatch(fd, id));
        }
    }
}

/// Periodic ticks as a stream, with [`Periodic`](crate::Periodic)'s timing (Tornado 5.1's
/// `PeriodicCallback`): the first tick one period after the first poll, then on the grid
/// `start + k·period`, skipping ticks missed while the task was busy, never repeating one when
/// the clock steps back. Made by [`interval`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Interval {
    period_ns: u64,
    jitter_ppm: u32,
    rng: u32,
    /// The deadline of the last tick handed out.
    last: Option<Instant>,
    /// The tick being waited for; chosen when the task comes back for it (as Tornado
    /// schedules the next call after the callback returned), so time spent between two
    /// `tick`s skips the ticks it covered.
    next: Option<Instant>,
    sleep: Option<Sleep>,
}

/// Ticks every `periodic.period()` (with its jitter); see [`Interval`]. A zero period is
/// treated as one nanosecond.
pub fn interval(periodic: crate::Periodic) -> Interval {
    Interval {
        period_ns: periodic.period_ns.max(1),
        jitter_ppm: periodic.jitter_ppm,
        // 0 until the first tick derives one from the clock, unless the schedule has a seed.
        rng: periodic.seed,
        last: None,
        next: None,
        sleep: None,
    }
}

impl Interval {
    /// Ready with the tick's deadline when the next tick is due.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let Some(now) = with_loop(|lp| lp.now()) else {
                    return Poll::Pending;
                };
                let from = match self.last {
                    Some(last) => last,
                    None => {
                        if self.rng == 0 {
                            self.rng = crate::periodic::seed(now, self.period_ns);
                        }
                        now
                    }
                };
                let n = crate::periodic::next_deadline(
                    from,
                    now,
                    self.period_ns,
                    self.jitter_ppm,
                    &mut self.rng,
                );
                self.next = Some(n);
                n
            }
        };
        let sleep = self.sleep.get_or_insert_with(|| sleep_until(next));
        if Pin::new(sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        self.next = None;
        self.last = Some(next);
        Poll::Ready(next)
    }

    /// Wait for the next tick; returns its deadline on the loop's clock.
    pub async fn tick(&mut self) -> Instant {
        core::future::poll_fn(|cx| self.poll_tick(cx)).await
    }
}
