//! Join handles: a spawned task's output, awaited from another task (or `run_sync`), kept in
//! the task's own slot until then.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Why a [`JoinHandle`] has no output.
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Executor, JoinError, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 4> = Remote::new();
/// static EXEC: Executor<4, 256> = Executor::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE)?;
/// lp.attach_executor(&EXEC)?;
/// let handle = lp.spawn_join(core::future::pending::<()>())?;
/// handle.abort();
/// assert_eq!(lp.run_sync(handle, None)?, Err(JoinError::Aborted));
///
/// let mut handle = lp.spawn_join(async { 1 })?;
/// drop(lp); // the loop drops its tasks
/// use core::{future::Future, pin::Pin, task::{Context, Poll, Waker}};
/// let polled = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
/// assert_eq!(polled, Poll::Ready(Err(JoinError::Closed)));
/// assert_eq!(JoinError::Closed.to_string(), "task's loop closed");
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum JoinError {
    /// [`JoinHandle::abort`] dropped the task before it finished.
    Aborted,
    /// The task's poll panicked (with `std`; without it a panic does not unwind).
    Panicked,
    /// The task's loop was closed or dropped (it dropped the task), or the handle belongs
    /// to an attachment of the executor that is over.
    Closed,
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JoinError::Aborted => "task aborted",
            JoinError::Panicked => "task panicked",
            JoinError::Closed => "task's loop closed",
        })
    }
}

/// A spawned task's output, awaited on the loop's thread: `.await` yields `Ok(output)` once
/// the task finishes, or a [`JoinError`]. The output waits in the task's own slot (no
/// allocation), which stays taken until the handle is awaited to the end or dropped.
///
/// Dropping the handle *detaches* the task: it runs on, and its output is dropped when it
/// finishes. [`abort`](Self::abort) drops the task's future. A handle never reads another
/// task's output: it names its slot's generation and its executor's attachment, and any
/// mismatch yields [`JoinError::Closed`].
///
/// `!Send`: it touches the executor's loop-thread state, so it stays on the loop's thread.
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// // A task that awaits another task's output.
/// let worker = lp.spawn_join(async {
///     sleep(Duration::from_secs(1)).await.ok();
///     6 * 7
/// })?;
/// let answer = lp.run_sync(async move { worker.await.map(|n| n + 1) }, None)?;
/// assert_eq!(answer, Ok(43));
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Debug)]
pub struct JoinHandle<T> {
    pub(super) q: &'static dyn ExecQueue,
    pub(super) epoch: u32,
    pub(super) id: TaskId,
    pub(super) take: unsafe fn(*mut u8, *mut Option<T>),
    /// The outcome was delivered (the slot is freed).
    pub(super) done: bool,
    pub(super) _not_send: PhantomData<*const T>,
}

impl core::fmt::Debug for dyn ExecQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ExecQueue")
    }
}

impl<T> JoinHandle<T> {
    /// The task's id (for [`Executor::is_alive`]).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{yield_now, EventLoop, Executor, Remote};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// static EXEC: Executor<4, 256> = Executor::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// let handle = lp.spawn_join(yield_now())?;
    /// let id = handle.id();
    /// assert!(EXEC.is_alive(id));
    /// lp.run_sync(handle, None)?.unwrap();
    /// assert!(!EXEC.is_alive(id));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Abort the task: its future is dropped at once (or, if the task itself is running —
    /// it aborts itself — as soon as its current poll returns), and the handle then yields
    /// [`JoinError::Aborted`]. A task that already finished keeps its output. A no-op once
    /// the loop is gone.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, EventLoop, JoinError};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// let handle = lp.spawn_join(sleep(Duration::from_secs(60)))?;
    /// lp.run_once(Some(Duration::ZERO))?; // the task started: its sleep holds a timer
    /// assert_eq!(lp.timer_count(), 1);
    /// handle.abort(); // drops the future: its sleep's timer is cancelled
    /// assert_eq!(lp.run_sync(handle, None)?, Err(JoinError::Aborted));
    /// assert_eq!(lp.timer_count(), 0);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn abort(&self) {
        if !self.done {
            self.q.join_abort(self.id, self.epoch);
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> core::task::Poll<Result<T, JoinError>> {
        use core::task::Poll;
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(JoinError::Closed));
        }
        let mut out: Option<T> = None;
        let take = this.take;
        let r = this.q.join_poll(this.id, this.epoch, cx.waker(), &mut |p| {
            // SAFETY: `join_poll` calls this only for our own task (generation and epoch
            // checked) in `DONE` with its output, on the loop thread: `p` holds the live
            // `JoinCell` `take` was made for, whose output type is `T`.
            unsafe { take(p, &mut out) }
        });
        match r {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.done = true;
                Poll::Ready(r.and_then(|()| out.ok_or(JoinError::Closed)))
            }
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !self.done {
            self.q.join_detach(self.id, self.epoch);
        }
    }
}
