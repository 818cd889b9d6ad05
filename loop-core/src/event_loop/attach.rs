//! Attaching a remote and an executor; `spawn` and `run_sync`.

use super::*;
use core::marker::PhantomData;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// Attach `remote` to this loop and return a handle for other threads and signal handlers
    /// ([`LoopHandle::add_callback`], [`LoopHandle::stop`]). The remote keeps a clone of the
    /// poller's notifier. A loop has at most one remote; a remote serves one loop at a time,
    /// and once that loop is closed or dropped it can be attached again (handles made for the
    /// earlier loop stay refused with [`Error::Closed`]).
    ///
    /// # Errors
    /// [`Error::AlreadyAttached`] if `remote` serves an open loop (this or another) or this
    /// loop already has a remote; [`Error::Os`] if the notifier cannot be cloned (`EMFILE`);
    /// [`Error::Closed`] / [`Error::Forked`] as for `run`.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// std::thread::spawn(move || handle.add_callback(|lp| lp.stop())).join().unwrap()?;
    /// lp.run()?;
    ///
    /// let mut other: Lp = EventLoop::with_poller(SimPoller::new());
    /// assert_eq!(other.attach_remote(&REMOTE).unwrap_err(), Error::AlreadyAttached); // in use
    /// drop(lp);
    /// other.attach_remote(&REMOTE)?; // free again once its loop is gone
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn attach_remote<const N: usize>(
        &mut self,
        remote: &'static Remote<Self, N>,
    ) -> Result<LoopHandle<Self, N>, Error> {
        self.usable()?;
        if self.remote.is_some() {
            return Err(Error::AlreadyAttached);
        }
        let notifier = self.poller.notifier().try_clone()?;
        remote.attach(notifier)?;
        self.remote = Some(remote);
        self.run_remote = Some(Self::run_remote_callbacks_now);
        self.remote_wake = Some(&remote.wake_entry);
        Ok(LoopHandle::new(remote))
    }

    /// Attach `executor`: its tasks are polled by this loop from now on (each iteration, after
    /// the callbacks, before the timers), and `run_sync` and [`spawn`](Self::spawn) become
    /// available. Needs an attached [`Remote`] (tasks woken from other threads wake the loop
    /// through it). A loop has at most one executor; an executor serves one loop at a time:
    /// when the loop is closed or dropped it drops the tasks and detaches the executor, which
    /// another loop (on any thread) may then attach.
    ///
    /// # Errors
    /// [`Error::NoRemote`] without a remote; [`Error::AlreadyAttached`] if either already has
    /// a partner; [`Error::Closed`] / [`Error::Forked`] as for `run`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, Error, EventLoop, Executor, Remote};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// static EXEC: Executor<4, 256> = Executor::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// assert_eq!(lp.attach_executor(&EXEC), Err(Error::NoRemote)); // the remote comes first
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// lp.spawn(async { sleep(Duration::from_secs(1)).await.ok(); })?;
    /// lp.run_sync(sleep(Duration::from_secs(2)), None)??;
    /// assert!(EXEC.is_empty());
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn attach_executor<const N: usize, const S: usize>(
        &mut self,
        executor: &'static Executor<N, S>,
    ) -> Result<(), Error> {
        self.usable()?;
        let Some(wake) = self.remote_wake else {
            return Err(Error::NoRemote);
        };
        if self.executor.is_some() {
            return Err(Error::AlreadyAttached);
        }
        self.executor = Some(executor.attach(wake)?);
        self.exec_hooks = Some(&Self::EXEC_HOOKS);
        Ok(())
    }

    /// Attach a remote the loop owns: no `static` needed. It comes from a process-wide pool of
    /// remotes leaked once and reused by later loops (feature `alloc`), so memory stays bounded
    /// by the most loops alive at once; when this loop closes, its remote is free again, and a
    /// `LoopHandle` kept from it is refused (`Error::Closed`), never routed to the next loop.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// for _ in 0..3 {
    ///     let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    ///     let handle = lp.attach_owned_remote::<16>()?;
    ///     lp.attach_owned_executor::<4, 256>()?;
    ///     handle.add_callback(|lp| lp.stop())?;
    ///     lp.run()?;
    /// } // each loop's remote and executor go back to the pool
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`attach_remote`](Self::attach_remote): [`Error::AlreadyAttached`] if this loop has
    /// a remote, [`Error::Os`] if the notifier cannot be cloned, [`Error::Closed`] /
    /// [`Error::Forked`].
    #[cfg(feature = "alloc")]
    pub fn attach_owned_remote<const N: usize>(&mut self) -> Result<LoopHandle<Self, N>, Error> {
        self.usable()?;
        if self.remote.is_some() {
            return Err(Error::AlreadyAttached);
        }
        crate::remote::attach_pooled::<Self, N, _>(|remote| self.attach_remote(remote))
    }

    /// Attach an executor of `N` slots of `S` bytes that the loop owns: no `static` needed.
    /// Its storage comes from a process-wide pool of leaked executors, one pool entry per
    /// executor type: a loop takes a free one (detached when its previous loop closed) or
    /// leaks a new one. So memory stays bounded by the most loops alive at once, and a
    /// `Waker` that outlives its loop still points to live memory (it only marks a slot of a
    /// detached or reused executor ready: a spurious poll at worst). Spawn with
    /// [`spawn`](Self::spawn).
    ///
    /// # Errors
    /// As [`attach_executor`](Self::attach_executor).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// assert_eq!(lp.attach_owned_executor::<4, 256>(), Err(Error::NoRemote));
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// assert_eq!(lp.run_sync(async { 6 * 7 }, None)?, 42);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[cfg(feature = "alloc")]
    pub fn attach_owned_executor<const N: usize, const S: usize>(&mut self) -> Result<(), Error> {
        self.usable()?;
        let Some(wake) = self.remote_wake else {
            return Err(Error::NoRemote);
        };
        if self.executor.is_some() {
            return Err(Error::AlreadyAttached);
        }
        self.executor = Some(crate::task::executor::attach_pooled::<N, S>(wake));
        self.exec_hooks = Some(&Self::EXEC_HOOKS);
        Ok(())
    }

    /// The attached executor, if the loop is usable and has one; else `fut` back with why.
    fn spawn_target<F>(&self, fut: F) -> Result<(ExecRef, F), Refused<F>> {
        let error = match (self.usable(), self.executor) {
            (Ok(()), Some(exec)) => return Ok((exec, fut)),
            (Err(error), _) => error,
            (Ok(()), None) => Error::NotAttached,
        };
        Err(Refused { error, value: fut })
    }

    /// Spawn `fut` as a task on this loop's executor: it is first polled in the next
    /// iteration (Tornado's `spawn_callback`). The loop's `&mut` proves the caller is on the
    /// loop's thread, so this works with or without `std`, from setup code or — through
    /// [`with_current_loop`](crate::with_current_loop) — from tasks.
    ///
    /// # Errors
    /// `fut` comes back inside [`Refused`] with [`Error::NotAttached`] without an executor,
    /// [`Error::Closed`] / [`Error::Forked`] as for `run`, [`Error::Full`] when every task
    /// slot is taken, [`Error::TooLarge`] when `fut` does not fit a slot.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, Error, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let woke = Rc::new(Cell::new(false));
    /// let w = woke.clone();
    /// lp.spawn(async move {
    ///     sleep(Duration::from_secs(3)).await.ok();
    ///     w.set(true);
    /// })?;
    /// lp.run_sync(sleep(Duration::from_secs(2)), None)??; // the task runs meanwhile
    /// assert!(!woke.get());
    /// lp.run_sync(sleep(Duration::from_secs(2)), None)??;
    /// assert!(woke.get());
    ///
    /// let mut bare: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// assert_eq!(bare.spawn(async {}).unwrap_err().error, Error::NotAttached); // no executor
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// The soundness of this rests on the loop being `!Send` (a loop cannot leave the thread
    /// its executor was attached on):
    ///
    /// ```compile_fail
    /// # use loop_core::{sim::SimPoller, EventLoop};
    /// fn send<T: Send>(_: T) {}
    /// send(EventLoop::<SimPoller>::with_poller(SimPoller::new()));
    /// ```
    pub fn spawn<F>(&mut self, fut: F) -> Result<crate::TaskId, Refused<F>>
    where
        F: Future<Output = ()> + 'static,
    {
        let (exec, fut) = self.spawn_target(fut)?;
        // SAFETY: `&mut self` of a `!Send` loop: this is the thread the executor was attached
        // on (the attachment's epoch is checked by `reserve`).
        unsafe { exec.spawn(fut) }
    }

    /// Spawn `fut` like [`spawn`](Self::spawn) and return a
    /// [`JoinHandle`](crate::JoinHandle) whose `.await` yields its output (kept in the
    /// task's slot, no allocation).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// let answer = lp.spawn_join(async {
    ///     sleep(Duration::from_secs(1)).await.ok();
    ///     42
    /// })?;
    /// assert_eq!(lp.run_sync(answer, None)?, Ok(42));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn spawn_join<F>(&mut self, fut: F) -> Result<crate::JoinHandle<F::Output>, Refused<F>>
    where
        F: Future + 'static,
    {
        let (exec, fut) = self.spawn_target(fut)?;
        // SAFETY: as in `spawn`: the `&mut` of a `!Send` loop proves the thread.
        unsafe { exec.spawn_join(fut) }
    }

    /// Run `fut` as a task and, one iteration after it completes, call `callback(loop, output)`
    /// as a loop callback (Tornado's `IOLoop.add_future`: the callback always comes one
    /// iteration later, even for a future that is ready at once). If the loop's callback
    /// queue is full the task retries each iteration; the callback is never dropped.
    /// `callback` and the output together may capture up to
    /// [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES) (a compile error otherwise).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn); the future and the callback come back together.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// lp.add_future(
    ///     async {
    ///         sleep(Duration::from_secs(2)).await.ok();
    ///         "fetched"
    ///     },
    ///     |lp, body| {
    ///         assert_eq!(body, "fetched");
    ///         lp.stop();
    ///     },
    /// )?;
    /// lp.run()?;
    /// assert_eq!(lp.now().as_nanos(), 2_000_000_000);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_future<Fut, C>(
        &mut self,
        fut: Fut,
        callback: C,
    ) -> Result<crate::TaskId, Refused<(Fut, C)>>
    where
        Fut: Future + 'static,
        Fut::Output: 'static,
        C: FnOnce(&mut Self, Fut::Output) + 'static,
    {
        if let Err(error) = self.usable() {
            return Err(Refused {
                error,
                value: (fut, callback),
            });
        }
        let Some(exec) = self.executor else {
            return Err(Refused {
                error: Error::NotAttached,
                value: (fut, callback),
            });
        };
        // SAFETY: `&mut self` of a `!Send` loop: this is the thread the executor was attached
        // on (as for `spawn`).
        unsafe { exec.spawn_with(fut, callback, AddFutureTask::<P, H, T, Q, Fut, C>::new) }
    }

    /// Run the loop until `fut` completes and return its output (Tornado's `run_sync`). `fut`
    /// is polled on this stack (it need not be `'static` or fit a task slot); spawned tasks,
    /// handlers, timers and callbacks run meanwhile. As in Tornado (`add_callback(run)`, then
    /// `start()`), `fut` is first polled after the callbacks that were already queued, in the
    /// first iteration. `timeout` bounds the whole run.
    ///
    /// # Errors
    /// [`Error::TimedOut`] when `timeout` passed first; [`Error::Stopped`] when the loop was
    /// stopped first (also by a `stop()` pending before the call); [`Error::Closed`] or
    /// [`Error::Forked`] for a closed loop or one used in a forked child (checked first);
    /// [`Error::NotAttached`] without an executor; [`Error::AlreadyRunning`] inside the loop; the poller's error, as
    /// `run`. In every case — also when a panic unwinds through `run_sync` — `fut` is dropped
    /// in place before returning, with the loop current, so its sleeps and fd waits are
    /// cancelled.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, Error, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// let mut buf = [0u8; 4]; // borrowed: `fut` need not be 'static
    /// let n = lp.run_sync(
    ///     async {
    ///         sleep(Duration::from_secs(1)).await?;
    ///         buf[0] = 7;
    ///         Ok::<_, Error>(1)
    ///     },
    ///     None,
    /// )??;
    /// assert_eq!((n, buf[0]), (1, 7));
    ///
    /// let slow = lp.run_sync(sleep(Duration::from_secs(60)), Some(Duration::from_secs(5)));
    /// assert_eq!(slow, Err(Error::TimedOut));
    /// assert_eq!(lp.timer_count(), 0); // the sleep was dropped: its timer is gone
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn run_sync<F: Future>(
        &mut self,
        fut: F,
        timeout: Option<Duration>,
    ) -> Result<F::Output, Error> {
        let Some(exec) = self.executor else {
            // A closed or forked loop says so first, as `spawn` does.
            if !self.running {
                self.usable()?;
            }
            return Err(Error::NotAttached);
        };
        if !self.begin_run()? {
            return Err(Error::Stopped);
        }
        let header: &'static crate::task::executor::TaskHeader = exec.main_header();
        let waker: Waker = header.waker();
        // Poll it in the first iteration, after the callbacks already queued.
        waker.wake_by_ref();
        let deadline = timeout.map(|t| self.now() + t);
        self.running = true;
        // From here on `fut` is pinned inside `main` and dropped in place by its guard.
        let mut main = RunSyncGuard {
            lp: self,
            exec,
            fut: ManuallyDrop::new(fut),
        };
        loop {
            match main.lp.iterate(deadline.map(|d| d - main.lp.now())) {
                Ok(true) => {}
                Ok(false) => return Err(Error::Stopped),
                Err(e) => return Err(e),
            }
            if header.take_ready() {
                let lp: *mut dyn LoopOps = &mut *main.lp as *mut Self;
                // SAFETY: `lp` comes from the loop's `&mut`, unused until `entered` drops.
                let entered = unsafe { current::enter(lp, main.exec) };
                // SAFETY: `main.fut` is never moved after this point (`main` stays in this
                // frame) and is dropped in place by `RunSyncGuard::drop`.
                let pinned = unsafe { Pin::new_unchecked(&mut *main.fut) };
                let polled = pinned.poll(&mut Context::from_waker(&waker));
                drop(entered);
                if let Poll::Ready(v) = polled {
                    return Ok(v);
                }
            }
            if deadline.is_some_and(|d| main.lp.now() >= d) {
                return Err(Error::TimedOut);
            }
        }
    }

    /// Run the `n` callbacks other threads had queued on the [`Remote`] when the iteration
    /// began. A producer may have claimed a cell and not finished writing it: that one is
    /// picked up by the next iteration (its wake is already pending).
    /// Reached through `run_remote`, set by [`attach_remote`](Self::attach_remote): a program
    /// that never attaches a remote queue does not link this step.
    #[inline]
    pub(super) fn run_remote_callbacks(&mut self, n: usize) {
        if let Some(run) = self.run_remote {
            run(self, n);
        }
    }

    /// [`run_remote_callbacks`](Self::run_remote_callbacks) for an attached remote queue.
    fn run_remote_callbacks_now(&mut self, n: usize) {
        for _ in 0..n {
            let Some(r) = self.remote else { break };
            let Some(SendFn(cb)) = r.pop() else { break };
            if self.closed {
                break;
            }
            self.counters.remote_callbacks_run += 1;
            self.call_callback(cb);
        }
    }

    /// Poll the tasks woken before this iteration began (and run the cleanups deferred by
    /// leaf futures); the loop is only reached through the current frame meanwhile.
    #[inline]
    pub(super) fn run_tasks(&mut self) {
        if let Some(hooks) = self.exec_hooks {
            (hooks.run_tasks)(self);
        }
    }

    /// What [`EXEC_HOOKS`](Self::EXEC_HOOKS) points to, for an attached executor.
    const EXEC_HOOKS: ExecHooks<Self> = ExecHooks {
        run_tasks: Self::run_tasks_now,
        drop_tasks: Self::drop_tasks_now,
        dispatch_io: Self::dispatch_io,
    };

    /// Teardown: drop every task (with the loop current), which detaches the executor.
    fn drop_tasks_now(&mut self) {
        if let Some(exec) = self.executor {
            exec.drop_all(self);
        }
    }

    fn run_tasks_now(&mut self) {
        let Some(exec) = self.executor else { return };
        if self.closed {
            return;
        }
        let threshold = self.watchdog.as_ref().map(|w| w.threshold);
        let mut slow = heapless::Vec::new();
        let longest = exec.run_ready(self, threshold, &mut slow);
        if longest > self.counters.max_run_time {
            self.counters.max_run_time = longest;
        }
        for s in slow {
            self.report_blocked(Source::Task { id: s.id }, s.name, s.duration);
        }
    }
}

/// The executor's entry points in the loop, reached through a pointer that only attaching an
/// executor sets (see `EventLoop::exec_hooks`).
pub(super) struct ExecHooks<L> {
    /// Step 5 of the iteration: poll the tasks woken before it began.
    pub(super) run_tasks: fn(&mut L),
    /// Teardown: drop every task.
    pub(super) drop_tasks: fn(&mut L),
    /// Dispatch: wake the tasks waiting on an async I/O registration (only the task layer,
    /// through the executor, makes one).
    pub(super) dispatch_io: fn(&mut L, HandlerId, Readiness) -> bool,
}

/// `run_sync`'s future, pinned in place: dropped exactly once, with the loop current, on
/// every exit from `run_sync` (return or unwinding), and the loop marked not running.
struct RunSyncGuard<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize, F> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    exec: ExecRef,
    fut: ManuallyDrop<F>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize, F> Drop
    for RunSyncGuard<'_, P, H, T, Q, F>
{
    fn drop(&mut self) {
        {
            let lp: *mut dyn LoopOps = &mut *self.lp as *mut EventLoop<P, H, T, Q>;
            // SAFETY: `lp` comes from the loop's `&mut`, unused until `_entered` drops.
            let _entered = unsafe { current::enter(lp, self.exec) };
            // SAFETY: dropped exactly once, in place (it was pinned there); `fut` is not used
            // afterwards.
            unsafe { ManuallyDrop::drop(&mut self.fut) };
        }
        self.lp.running = false;
        self.lp.stop_requested = false;
    }
}

/// The task `add_future` runs: the future, then the callback queued on the loop.
pub(super) struct AddFutureTask<
    P: crate::Poller + 'static,
    const H: usize,
    const T: usize,
    const Q: usize,
    Fut: Future,
    C,
> {
    /// Structurally pinned.
    fut: Fut,
    callback: Option<C>,
    output: Option<Fut::Output>,
    _loop: PhantomData<fn(&mut EventLoop<P, H, T, Q>)>,
}

impl<P, const H: usize, const T: usize, const Q: usize, Fut, C> AddFutureTask<P, H, T, Q, Fut, C>
where
    P: crate::Poller + 'static,
    Fut: Future + 'static,
    Fut::Output: 'static,
    C: FnOnce(&mut EventLoop<P, H, T, Q>, Fut::Output) + 'static,
{
    pub(super) fn new(fut: Fut, callback: C) -> Self {
        AddFutureTask {
            fut,
            callback: Some(callback),
            output: None,
            _loop: PhantomData,
        }
    }
}

impl<P, const H: usize, const T: usize, const Q: usize, Fut, C> Future
    for AddFutureTask<P, H, T, Q, Fut, C>
where
    P: crate::Poller + 'static,
    Fut: Future + 'static,
    Fut::Output: 'static,
    C: FnOnce(&mut EventLoop<P, H, T, Q>, Fut::Output) + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned (only ever polled in place, never moved out);
        // the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.output.is_none() {
            // SAFETY: as above.
            match unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx) {
                Poll::Ready(v) => this.output = Some(v),
                Poll::Pending => return Poll::Pending,
            }
        }
        let queued = crate::with_current_loop(|lp: &mut EventLoop<P, H, T, Q>| {
            if lp.callback_count() >= Q {
                // The loop's callback queue is full: try again next iteration.
                return false;
            }
            if let (Some(cb), Some(out)) = (this.callback.take(), this.output.take()) {
                // Refused only if the loop is closed (or forked): then its callbacks are
                // dropped anyway.
                let _ = lp.add_callback(move |lp| cb(lp, out));
            }
            true
        });
        if queued == Some(false) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}
