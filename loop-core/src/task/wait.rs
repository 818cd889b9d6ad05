//! Tornado's remaining coroutine tools: results in completion order ([`wait_each`], Tornado's
//! `WaitIterator`) and a periodic callback whose body is async ([`every`], Tornado 5.1's
//! `PeriodicCallback` with a coroutine callback: a tick never overlaps the previous one).
//!
//! Neither allocates: [`WaitEach`] keeps its `N` futures inline, [`every`] is one future that
//! holds the [`Interval`](crate::Interval) and the running tick.

use core::future::Future;
use core::ops::ControlFlow;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::periodic::Periodic;
use crate::task::futures::interval;
use crate::time::Instant;

/// `N` futures of one type, yielding `(index, output)` in the order they finish: made by
/// [`wait_each`].
///
/// Tornado's `WaitIterator`: `current_index` is the `usize` of each pair. Futures that finish
/// in the same poll come out in input order. Each finished future is dropped at once (a
/// `sleep` frees its timer then), the others keep running between calls to
/// [`next`](Self::next).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, wait_each, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// use core::pin::pin;
///
/// let seen = lp.run_sync(
///     async {
///         let mut each = pin!(wait_each([3, 1, 2].map(|s| sleep(Duration::from_secs(s)))));
///         let before = each.remaining();
///         let first = each.as_mut().next().await.map(|(index, _)| index);
///         (before, first, each.remaining())
///     },
///     None,
/// )?;
/// assert_eq!(seen, (3, Some(1), 2)); // the 1 s sleep (index 1) finished first; 2 to come
/// assert_eq!(lp.now().as_nanos(), 1_000_000_000);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct WaitEach<F: Future, const N: usize> {
    futures: [Option<F>; N],
    /// Outputs that finished in a poll that already returned an earlier one.
    ready: [Option<F::Output>; N],
    left: usize,
}

/// Wait for `futures` one at a time, in completion order (Tornado's `gen.WaitIterator`).
///
/// ```
/// use core::pin::pin;
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, wait_each, EventLoop, Executor, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 16> = Remote::new();
/// static EXEC: Executor<4> = Executor::new();
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE).unwrap();
/// lp.attach_executor(&EXEC).unwrap();
/// let order = lp
///     .run_sync(
///         async {
///             let fetch = |ms: u64| async move {
///                 sleep(Duration::from_millis(ms)).await.unwrap();
///                 ms
///             };
///             let mut each = pin!(wait_each([fetch(30), fetch(10), fetch(20)]));
///             let mut order = [(0, 0); 3];
///             let mut k = 0;
///             while let Some((index, ms)) = each.as_mut().next().await {
///                 order[k] = (index, ms);
///                 k += 1;
///             }
///             order
///         },
///         None,
///     )
///     .unwrap();
/// assert_eq!(order, [(1, 10), (2, 20), (0, 30)]);
/// ```
pub fn wait_each<F: Future, const N: usize>(futures: [F; N]) -> WaitEach<F, N> {
    WaitEach {
        futures: futures.map(Some),
        ready: [const { None }; N],
        left: N,
    }
}

impl<F: Future, const N: usize> WaitEach<F, N> {
    /// How many results are still to come. See [`WaitEach`] for an example.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// Ready with the next `(index, output)` in completion order, or `None` once every future
    /// has been handed out. For hand-written futures; in `async` code use
    /// [`next`](Self::next).
    pub fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(usize, F::Output)>> {
        // SAFETY: structural pinning of `futures`' elements: an element is never moved while
        // pinned, only dropped in place (`Pin::set(None)`); `ready` and `left` are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.left == 0 {
            return Poll::Ready(None);
        }
        for (i, slot) in this.futures.iter_mut().enumerate() {
            // SAFETY: as above.
            let mut slot = unsafe { Pin::new_unchecked(slot) };
            let Some(fut) = slot.as_mut().as_pin_mut() else {
                continue;
            };
            if let Poll::Ready(v) = fut.poll(cx) {
                // Dropped in place, now: its timers and fd watches go with it.
                slot.set(None);
                this.ready[i] = Some(v);
            }
        }
        match this
            .ready
            .iter_mut()
            .enumerate()
            .find_map(|(i, r)| r.take().map(|v| (i, v)))
        {
            Some(pair) => {
                this.left -= 1;
                Poll::Ready(Some(pair))
            }
            None => Poll::Pending,
        }
    }

    /// The next `(index, output)` in completion order, or `None` when all were handed out.
    /// See [`wait_each`] and [`WaitEach`] for examples.
    pub fn next(self: Pin<&mut Self>) -> impl Future<Output = Option<(usize, F::Output)>> + '_ {
        let mut this = self;
        core::future::poll_fn(move |cx| this.as_mut().poll_next(cx))
    }
}

/// Run `body(tick)` on `periodic`'s grid, awaiting each run before the next tick is chosen
/// (Tornado 5.1's `PeriodicCallback` with a coroutine callback): runs never overlap, ticks
/// covered by a slow run are skipped, never caught up, and a clock that steps back never
/// repeats a tick (see [`Periodic`]). The first run is one period after the first poll.
///
/// Stops when a run returns `ControlFlow::Break(value)`, with `Ok(value)`; spawn it as a
/// task, or drop it to stop it (its timer is cancelled).
///
/// # Errors
/// The tick's timer error, as [`Interval::poll_tick`](crate::Interval::poll_tick):
/// [`Error::Full`](crate::Error::Full) when the loop's timer heap is full,
/// [`Error::NotAttached`](crate::Error::NotAttached) outside a loop's task.
///
/// ```
/// use core::ops::ControlFlow;
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{every, sleep, EventLoop, Executor, Periodic, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 16> = Remote::new();
/// static EXEC: Executor<4> = Executor::new();
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE).unwrap();
/// lp.attach_executor(&EXEC).unwrap();
/// // Every 10 ms; each run takes 25 ms, so the runs start at 10, 40, 70 ms (20, 30, 50, 60
/// // are covered by a run and skipped).
/// let mut starts = [0u64; 3];
/// let mut n = 0;
/// lp.run_sync(
///     every(Periodic::every(Duration::from_millis(10)), |tick| {
///         starts[n] = tick.as_nanos() / 1_000_000;
///         n += 1;
///         let last = n == 3;
///         async move {
///             sleep(Duration::from_millis(25)).await.unwrap();
///             if last { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
///         }
///     }),
///     None,
/// )
/// .unwrap()
/// .unwrap();
/// assert_eq!(starts, [10, 40, 70]);
/// ```
pub async fn every<B, Fut, F>(periodic: Periodic, mut body: F) -> Result<B, crate::Error>
where
    F: FnMut(Instant) -> Fut,
    Fut: Future<Output = ControlFlow<B>>,
{
    let mut ticks = interval(periodic);
    loop {
        let tick = ticks.tick().await?;
        if let ControlFlow::Break(b) = body(tick).await {
            return Ok(b);
        }
    }
}
