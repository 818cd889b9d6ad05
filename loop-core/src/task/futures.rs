//! Tornado's coroutine helpers as futures: `gen.sleep` → [`sleep`], `gen.moment` →
//! [`yield_now`], `gen.multi` → [`join`] / [`join_array`], `with_timeout` → [`timeout`], plus
//! [`select`] and fd readiness ([`readable`], [`writable`]).
//!
//! Leaf futures (`sleep`, `readable`, `writable`) use the loop that polls them (see
//! `current.rs`); polled anywhere else (outside a task or `run_sync`, or inside a
//! `with_current_loop` closure) they complete with [`Error::NotAttached`]. They never
//! allocate: a sleep is one timer in the loop's heap, cancelled when the future is dropped (at
//! once inside its loop; from elsewhere — another thread, another loop, a `with_current_loop`
//! closure — the cancellation is deferred to the owning loop's next iteration).

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use crate::error::{Error, RawFd};
use crate::fd::Fd;
use crate::interest::Readiness;
use crate::tables::handler_table::HandlerId;
use crate::tables::timer_heap::TimerHandle;
use crate::task::current::{apply_or_defer, with_loop, with_loop_owned, Deferred};
use crate::task::executor::ExecRef;
use crate::time::Instant;

/// A future that completes at a deadline on the loop's clock. Made by [`sleep`] and
/// [`sleep_until`]; dropping it before it fires cancels its timer (the timer slot is free
/// again).
///
/// Like Tornado's `gen.sleep(0)`, it always yields to the loop at least once: a sleep whose
/// deadline has already passed (`sleep(Duration::ZERO)`, `sleep_until` of a past instant)
/// completes on its second poll, one iteration later, so a task looping on it cannot starve
/// I/O and timers.
///
/// Its output is `Err(Error::Full { what: Resource::Timers })` when the loop's timer heap
/// is full (the task decides: retry later, give up), `Err(Error::NotAttached)` when polled
/// outside a loop's task, `Ok(())` otherwise. It never busy-waits.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    delay: Option<Duration>,
    deadline: Instant,
    timer: Option<(TimerHandle, ExecRef)>,
    waker: Option<Waker>,
    /// Returned `Pending` at least once (it has yielded to the loop).
    yielded: bool,
}

/// Sleep for `d`, measured from the first poll (which, for a spawned task or `run_sync`, is
/// right away). Tornado's `gen.sleep`. Never completes early; see [`Sleep`] for its output.
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        delay: Some(d),
        deadline: Instant::MAX,
        timer: None,
        waker: None,
        yielded: false,
    }
}

/// Sleep until `deadline` on the loop's clock ([`crate::EventLoop::now`]).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        delay: None,
        deadline,
        timer: None,
        waker: None,
        yielded: false,
    }
}

impl Sleep {
    /// The deadline (known once the sleep was first polled, for [`sleep`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.delay.is_none().then_some(self.deadline)
    }

    fn cancel(&mut self) {
        if let Some((h, owner)) = self.timer.take() {
            apply_or_defer(owner, Deferred::CancelTimer(h));
        }
    }
}

impl Future for Sleep {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        // A timer armed by another loop (the sleep moved) is cancelled there.
        if let Some((_, owner)) = this.timer {
            if crate::task::current::current_owner().is_some_and(|o| !o.same(&owner)) {
                this.cancel();
            }
        }
        let polled = with_loop_owned(|lp, owner| {
            if let Some(d) = this.delay.take() {
                this.deadline = lp.now() + d;
            }
            if lp.now() >= this.deadline {
                if let Some((h, _)) = this.timer.take() {
                    lp.cancel_timer(h);
                }
                if this.yielded {
                    return Poll::Ready(Ok(()));
                }
                // Due already at the first poll: yield one iteration (Tornado's sleep(0)).
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let same_waker = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            match this.timer {
                Some((h, _)) if same_waker && lp.timer_pending(h) => {}
                _ => {
                    if let Some((h, _)) = this.timer.take() {
                        lp.cancel_timer(h);
                    }
                    match lp.wake_at(this.deadline, cx.waker().clone()) {
                        Ok(h) => {
                            this.timer = Some((h, owner));
                            this.waker = Some(cx.waker().clone());
                        }
                        // The timer heap is full: a clear error, never a busy loop.
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            this.yielded = true;
            Poll::Pending
        });
        polled.unwrap_or(Poll::Ready(Err(Error::NotAttached)))
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
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

/// Run `fut` for at most `d` (Tornado's `with_timeout`): `Ok(output)`, or
/// `Err(Error::TimedOut)` when the time ran out first (then `fut` is dropped, cancelling
/// whatever it waited on).
///
/// # Errors
/// [`Error::TimedOut`] as above; the timer's error ([`Error::Full`] when the loop's timer
/// heap is full, [`Error::NotAttached`] outside a loop), in which case `fut` is dropped too.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Error> {
    match select(fut, sleep(d)).await {
        Either::First(v) => Ok(v),
        Either::Second(Ok(())) => Err(Error::TimedOut),
        Either::Second(Err(e)) => Err(e),
    }
}

/// A one-shot wait for fd readiness: made by [`readable`] and [`writable`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Ready {
    fd: RawFd,
    want: Readiness,
    id: Option<(HandlerId, ExecRef)>,
    waker: Option<Waker>,
}

/// Wait until `fd` is readable (or has an error or a hang-up: the next read tells which).
/// While it waits it holds the fd's handler slot (a one-shot handler that wakes the task and
/// removes itself), so the fd must not have a handler of its own; resolves to `Err` with
/// [`Error::AlreadyRegistered`] if it does, with the kernel's error for a bad fd, or with
/// [`Error::NotAttached`] when polled outside a loop's task.
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

impl Ready {
    fn cancel(&mut self) {
        if let Some((id, owner)) = self.id.take() {
            apply_or_defer(owner, Deferred::Unwatch(self.fd, id));
        }
    }
}

impl Future for Ready {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A watch made by another loop (the future moved) is removed there.
        if let Some((_, owner)) = this.id {
            if crate::task::current::current_owner().is_some_and(|o| !o.same(&owner)) {
                this.cancel();
            }
        }
        let polled = with_loop_owned(|lp, owner| {
            if let Some((id, _)) = this.id {
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
                    this.id = Some((id, owner));
                    this.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        });
        polled.unwrap_or(Poll::Ready(Err(Error::NotAttached)))
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.cancel();
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
    ///
    /// # Errors
    /// As [`Sleep`]: [`Error::Full`] when the loop's timer heap is full (the next poll tries
    /// again), [`Error::NotAttached`] outside a loop's task.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Result<Instant, Error>> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let Some(now) = with_loop(|lp| lp.now()) else {
                    return Poll::Ready(Err(Error::NotAttached));
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
        match Pin::new(sleep).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.sleep = None;
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Ok(())) => {}
        }
        self.sleep = None;
        self.next = None;
        self.last = Some(next);
        Poll::Ready(Ok(next))
    }

    /// Wait for the next tick; returns its deadline on the loop's clock.
    ///
    /// # Errors
    /// As [`poll_tick`](Self::poll_tick).
    pub async fn tick(&mut self) -> Result<Instant, Error> {
        core::future::poll_fn(|cx| self.poll_tick(cx)).await
    }
}
