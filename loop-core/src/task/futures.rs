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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, Error, EventLoop, Resource};
///
/// // Room for one timer, taken by `call_later`: the sleep reports the full heap.
/// let mut lp: EventLoop<SimPoller, 4, 1, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// lp.call_later(Duration::from_secs(60), |_| {})?;
/// let slept = lp.run_sync(sleep(Duration::from_secs(1)), None)?;
/// assert_eq!(slept, Err(Error::Full { what: Resource::Timers }));
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// lp.run_sync(async { sleep(Duration::from_secs(2)).await }, None)??;
/// assert_eq!(lp.now().as_nanos(), 2_000_000_000); // simulated time: no real wait
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep_until, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let deadline = lp.now() + Duration::from_secs(5);
/// let wait = sleep_until(deadline);
/// assert_eq!(wait.deadline(), Some(deadline));
/// lp.run_sync(wait, None)??;
/// assert_eq!(lp.now(), deadline);
/// # Ok::<(), loop_core::Error>(())
/// ```
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
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sleep, sleep_until, Instant};
    ///
    /// assert_eq!(sleep(Duration::from_secs(1)).deadline(), None); // measured from first poll
    /// let at = Instant::from_nanos(7);
    /// assert_eq!(sleep_until(at).deadline(), Some(at));
    /// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{yield_now, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// use std::{cell::RefCell, rc::Rc};
/// let log = Rc::new(RefCell::new(String::new()));
/// for name in ["a", "b"] {
///     let log = log.clone();
///     lp.spawn(async move {
///         for _ in 0..2 {
///             log.borrow_mut().push_str(name);
///             yield_now().await; // one iteration: the other task runs
///         }
///     })?;
/// }
/// lp.run_sync(async { for _ in 0..3 { yield_now().await } }, None)?;
/// assert_eq!(*log.borrow(), "abab");
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "futures do nothing unless polled"]
pub struct YieldNow {
    yielded: bool,
}

/// Yield for one loop iteration.
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{yield_now, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let before = lp.counters().iterations;
/// lp.run_sync(yield_now(), None)?;
/// assert_eq!(lp.counters().iterations - before, 2); // polled, then again one iteration later
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{join, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let both = lp.run_sync(join(async { 1 }, async { "two" }), None)?;
/// assert_eq!(both, (1, "two"));
/// # Ok::<(), loop_core::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Join<A: Future, B: Future> {
    a: MaybeDone<A>,
    b: MaybeDone<B>,
}

/// Run `a` and `b` concurrently; complete with `(a's output, b's output)` when both have.
/// A failure (an `Err` output) of one does not cut the other short: both are awaited.
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{join, sleep, Error, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let slow = async {
///     sleep(Duration::from_secs(2)).await?;
///     Ok::<_, Error>(7)
/// };
/// let (a, b) = lp.run_sync(join(sleep(Duration::from_secs(1)), slow), None)?;
/// assert_eq!((a, b), (Ok(()), Ok(7)));
/// assert_eq!(lp.now().as_nanos(), 2_000_000_000); // concurrently: 2 s, not 3
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{join_array, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let doubled = [1, 2].map(|n| async move { n * 2 }); // one future type: an array
/// assert_eq!(lp.run_sync(join_array(doubled), None)?, [2, 4]);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct JoinArray<F: Future, const N: usize> {
    futures: [MaybeDone<F>; N],
}

/// Run `N` futures of one type concurrently; complete with their outputs in input order when
/// all have (Tornado's `multi([...])`).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{join_array, sleep, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let secs = [3, 1, 2].map(|s| sleep(Duration::from_secs(s)));
/// let all = lp.run_sync(join_array(secs), None)?;
/// assert_eq!(all, [Ok(()), Ok(()), Ok(())]);
/// assert_eq!(lp.now().as_nanos(), 3_000_000_000); // the longest, not the sum
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{select, sleep, Either, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let first = lp.run_sync(select(sleep(Duration::from_secs(9)), async { 'x' }), None)?;
/// assert_eq!(first, Either::Second('x'));
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future finished first.
    First(A),
    /// The second future finished first.
    Second(B),
}

/// The first of two futures to finish: made by [`select`].
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{select, Either, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let first = lp.run_sync(select(async { 1 }, async { 2 }), None)?;
/// assert!(matches!(first, Either::First(1))); // both ready: the first wins
/// # Ok::<(), loop_core::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Select<A, B> {
    a: A,
    b: B,
}

/// Run `a` and `b` concurrently; complete with the output of the first to finish (`a` if both
/// are ready at the same poll). The other is dropped with the `Select` (a `sleep` cancels its
/// timer).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{select, sleep, Either, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let one = sleep(Duration::from_secs(1));
/// let two = sleep(Duration::from_secs(2));
/// let first = lp.run_sync(select(one, two), None)?;
/// assert!(matches!(first, Either::First(Ok(()))));
/// assert_eq!(lp.timer_count(), 0); // the loser's timer was cancelled
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, timeout, Error, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let slow = timeout(Duration::from_secs(1), sleep(Duration::from_secs(5)));
/// assert_eq!(lp.run_sync(slow, None)?, Err(Error::TimedOut));
/// assert_eq!(lp.now().as_nanos(), 1_000_000_000);
/// let quick = timeout(Duration::from_secs(1), async { 3 });
/// assert_eq!(lp.run_sync(quick, None)?, Ok(3));
/// # Ok::<(), loop_core::Error>(())
/// ```
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Error> {
    match select(fut, sleep(d)).await {
        Either::First(v) => Ok(v),
        Either::Second(Ok(())) => Err(Error::TimedOut),
        Either::Second(Err(e)) => Err(e),
    }
}

/// A one-shot wait for fd readiness: made by [`readable`] and [`writable`].
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{writable, EventLoop, Readiness};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// lp.poller_mut().set_ready(4, Readiness::WRITE); // a socket with room in its buffer
/// assert_eq!(lp.run_sync(writable(4), None)?, Ok(()));
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{readable, Error, EventLoop, Interest, Readiness};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// // Data "arrives" on virtual fd 3 after one second.
/// lp.call_later(Duration::from_secs(1), |lp| lp.poller_mut().set_ready(3, Readiness::READ))?;
/// assert_eq!(lp.run_sync(readable(3), None)?, Ok(()));
/// assert_eq!((lp.now().as_nanos(), lp.handler_count()), (1_000_000_000, 0));
///
/// lp.add_handler(5, Interest::READ, |_, _, _| Ok(()))?; // fd 5 has a handler of its own
/// assert_eq!(lp.run_sync(readable(5), None)?, Err(Error::AlreadyRegistered { fd: 5 }));
/// # Ok::<(), loop_core::Error>(())
/// ```
pub fn readable(fd: impl Into<Fd>) -> Ready {
    Ready {
        fd: fd.into().raw(),
        want: Readiness::READ,
        id: None,
        waker: None,
    }
}

/// Wait until `fd` is writable (or has an error or a hang-up). As [`readable`].
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{writable, EventLoop, Readiness};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// lp.call_later(Duration::from_millis(5), |lp| lp.poller_mut().set_ready(4, Readiness::WRITE))?;
/// assert_eq!(lp.run_sync(writable(4), None)?, Ok(()));
/// assert_eq!(lp.now().as_nanos(), 5_000_000);
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{interval, Error, EventLoop, Periodic};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let mut ticks = interval(Periodic::every(Duration::from_secs(10)));
/// let at = lp.run_sync(
///     async move { Ok::<_, Error>([ticks.tick().await?, ticks.tick().await?]) },
///     None,
/// )??;
/// assert_eq!(at.map(|t| t.as_nanos()), [10_000_000_000, 20_000_000_000]);
/// # Ok::<(), loop_core::Error>(())
/// ```
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
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{interval, sleep, Error, EventLoop, Periodic};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// let mut ticks = interval(Periodic::every(Duration::from_secs(1)));
/// let at = lp.run_sync(
///     async move {
///         let first = ticks.tick().await?;
///         sleep(Duration::from_millis(2500)).await?; // busy: the ticks at 2 s and 3 s are missed
///         Ok::<_, Error>([first, ticks.tick().await?])
///     },
///     None,
/// )??;
/// assert_eq!(at.map(|t| t.as_nanos()), [1_000_000_000, 4_000_000_000]);
/// # Ok::<(), loop_core::Error>(())
/// ```
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

    /// Wait for the next tick; returns its deadline on the loop's clock. See [`Interval`] for
    /// an example.
    ///
    /// # Errors
    /// As [`poll_tick`](Self::poll_tick).
    pub async fn tick(&mut self) -> Result<Instant, Error> {
        core::future::poll_fn(|cx| self.poll_tick(cx)).await
    }
}
