//! Running the loop: `run`, `run_once`, `stop` and the iteration itself.

use super::*;

/// What [`EventLoop::begin_iteration`] fixed for the rest of the iteration.
struct Snapshot {
    callbacks: usize,
    remote: usize,
    signals: u64,
    now: Option<Instant>,
    timer_seq: u64,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    // ---------------------------------------------------------------------------------------
    // running
    // ---------------------------------------------------------------------------------------

    /// Run until [`stop`](Self::stop) (Tornado's `start`).
    ///
    /// If `stop()` was called while the loop was not running, returns at once without running
    /// anything (and the stop is consumed). After returning, the loop can be run again.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] when called from inside this loop (a handler, timer or
    /// callback); [`Error::Os`] when the poller fails with anything but `EINTR` (which is
    /// retried). The loop stays usable after an error.
    ///
    /// # Panics
    /// A panic of a handler, timer or callback unwinds out of `run` when it is not reported
    /// to an error hook (see the panic policy on [`EventLoop`]); the loop stays usable and
    /// can be run again.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_callback(|lp| lp.stop())?;
    /// lp.run()?; // returns after the iteration that called stop()
    /// assert!(!lp.is_running());
    /// # let _ = (Duration::ZERO, Readiness::READ, Interest::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn run(&mut self) -> Result<(), Error> {
        self.drive(None, usize::MAX)
    }

    /// Run one iteration, polling for at most `timeout` (`None`: as long as the loop's own
    /// rule allows; `Some(Duration::ZERO)`: never block).
    ///
    /// A pending `stop()` makes it return at once, as for [`run`](Self::run); `stop()` called
    /// inside the iteration skips its poll.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let start = lp.now();
    /// lp.run_once(Some(Duration::from_millis(250)))?; // nothing to do: waits 250 ms
    /// assert_eq!(lp.now() - start, Duration::from_millis(250));
    /// lp.run_once(Some(Duration::ZERO))?; // never blocks
    /// assert_eq!(lp.now() - start, Duration::from_millis(250));
    /// # let _ = (Readiness::READ, Interest::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        // `drive(timeout, 1)` without its loop: bench.c-style callers run one pass at a time,
        // so the prologue is paid per pass. An I/O-only pass leaves the fork check to the
        // poller: its first kernel operation (the wait, or a deferred deregistration before
        // it) refuses in a forked child, and `poll_failed` turns that refusal into
        // `Error::Forked`. A pass with other work checks first (in `iterate`), so no callback,
        // timer or task runs in a child.
        if self.running {
            return Err(Error::AlreadyRunning);
        }
        if self.closed {
            return Err(Error::Closed);
        }
        let io_only = self.only_io();
        if self.stop_requested {
            // As `begin_run`: a loop that cannot be used says so before a pending stop is
            // consumed (no pass has checked for a fork yet).
            self.usable()?;
            self.stop_requested = false;
            return Ok(());
        }
        let running = Running::enter(self);
        let result = if io_only {
            // Its wait takes a reading (or forgets the cached time) before any handler runs.
            running.lp.io_only_pass(timeout)
        } else {
            // As `begin_run`: the cached time of an earlier pass is stale (the loop may have
            // sat idle since), and this pass may run callbacks before it reads the clock.
            running.lp.clock.set(None);
            running.lp.iterate(timeout)
        };
        let result = result.map(drop);
        drop(running);
        result
    }

    /// `Err` if the loop can no longer be used: closed, or inherited across `fork`.
    #[inline]
    pub(super) fn usable(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::Closed)
        } else if self.poller.forked() {
            crate::log::log_warn!("ioloop: loop used after fork: refused (build a new loop)");
            Err(Error::Forked)
        } else {
            Ok(())
        }
    }

    /// The prologue shared by `run`, `run_once` and `run_sync`: refuse a nested run and an
    /// unusable loop, and consume a pending `stop()`. `Ok(false)`: stopped before starting.
    #[inline]
    pub(super) fn begin_run(&mut self) -> Result<bool, Error> {
        if self.running {
            return Err(Error::AlreadyRunning);
        }
        self.usable()?;
        if self.stop_requested {
            self.stop_requested = false;
            return Ok(false);
        }
        // The cached time of an earlier run is stale: the first reading of this run replaces it.
        self.clock.set(None);
        Ok(true)
    }

    pub(super) fn drive(&mut self, cap: Option<Duration>, iterations: usize) -> Result<(), Error> {
        if !self.begin_run()? {
            return Ok(());
        }
        let running = Running::enter(self);
        if iterations > 1 {
            crate::log::log_info!("ioloop: loop running");
        }
        let mut result = Ok(());
        for _ in 0..iterations {
            match running.lp.iterate(cap) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(running);
        if iterations > 1 {
            match &result {
                Ok(()) => crate::log::log_info!("ioloop: loop stopped"),
                Err(e) => {
                    let _ = e;
                    crate::log::log_warn!("ioloop: loop stopped on an error: {}", e);
                }
            }
        }
        result
    }

    /// One iteration, in the order of the module doc. `Ok(false)` when stopped.
    ///
    /// An I/O-only pass ([`only_io`](Self::only_io)) skips steps 1–6, which would find
    /// nothing to run, and polls with `cap` (no work waiting, no timer); any other pass runs
    /// them ([`full_pass_steps`](Self::full_pass_steps), its only call site, so inlined here).
    /// Both then fall through the same poll and dispatch: one copy of it, not one per kind of
    /// pass. Never inlined:
    /// `run`, `run_sync` and `run_once` (for a pass that is not I/O-only) share it, and
    /// `run_once`'s own I/O-only pass keeps the registers to itself.
    #[inline(never)]
    pub(super) fn iterate(&mut self, cap: Option<Duration>) -> Result<bool, Error> {
        let timeout = if self.only_io() {
            self.counters.iterations += 1;
            if self.stop_requested || self.closed {
                return Ok(false);
            }
            cap
        } else {
            match self.full_pass_steps(cap) {
                Ok(timeout) => timeout,
                Err(end) => return end,
            }
        };
        // Steps 8 and 9: poll, then dispatch what the poller reported.
        let waited = self.timed_wait(timeout);
        if let Some(exec) = self.executor {
            // Set by `full_pass_steps` (a loop with an executor never has an I/O-only pass).
            exec.set_sleeping(false);
        }
        self.dispatch_polled(waited)
    }

    /// `run_once`'s iteration with nothing but fds to watch ([`only_io`](Self::only_io)): as
    /// [`iterate`](Self::iterate)'s I/O-only branch, inlined into `run_once` (bench.c-style
    /// callers run one pass at a time).
    #[inline(always)]
    fn io_only_pass(&mut self, cap: Option<Duration>) -> Result<bool, Error> {
        self.counters.iterations += 1;
        if self.stop_requested || self.closed {
            return Ok(false);
        }
        let waited = self.timed_wait(cap);
        self.dispatch_polled(waited)
    }

    /// After the wait, in both kinds of pass: count the poll, then dispatch what it reported
    /// (`Ok(true)`), or end the iteration with the poll's failure. Inlined into each pass:
    /// written once, compiled where each pass needs it.
    #[inline(always)]
    fn dispatch_polled(&mut self, waited: Result<usize, Errno>) -> Result<bool, Error> {
        let n = match self.count_poll(waited) {
            Ok(n) => n,
            Err(errno) => return self.poll_failed(errno),
        };
        self.dispatch_events(n);
        Ok(true)
    }

    /// Steps 1–7 of a pass with more than I/O to do: the fork check, the callbacks, remote
    /// callbacks, signal handlers, tasks and due timers, the poll timeout and the stop check,
    /// and the executor's `sleeping` flag raised for the wait. `Ok(timeout)`: poll with it
    /// (the caller lowers the flag after the wait); `Err(result)`: the iteration ends with
    /// `result` without polling. Inlined into [`iterate`](Self::iterate), its only caller: no
    /// call, and no result to pass back through memory.
    #[inline(always)]
    fn full_pass_steps(
        &mut self,
        cap: Option<Duration>,
    ) -> Result<Option<Duration>, Result<bool, Error>> {
        // A pass with other work checks for a fork first (an I/O-only one leaves it to the
        // poller's wait): a handler, callback or task that forked must not have the child run
        // this pass's callbacks, timers and tasks. (A loop closed during the run still ends it
        // with `Ok`, below.)
        if self.poller.forked() {
            // As `usable` says (without asking the poller again): a closed loop says so first.
            if self.closed {
                return Err(Err(Error::Closed));
            }
            crate::log::log_warn!("ioloop: loop used after fork: refused (build a new loop)");
            return Err(Err(Error::Forked));
        }
        let snapshot = self.begin_iteration();
        self.run_callbacks(snapshot.callbacks);
        self.run_remote_callbacks(snapshot.remote);
        self.run_signal_handlers(snapshot.signals);
        self.run_tasks();
        if let Some(now) = snapshot.now {
            self.run_due_timers(now, snapshot.timer_seq);
        }
        let mut timeout = self.poll_timeout(cap);
        if self.stop_requested || self.closed {
            return Err(Ok(false));
        }
        // Tasks woken from other threads while the loop sleeps must wake the poller: raise
        // the executor's `sleeping` flag first, then look at the ready flags once more
        // (wakers do the opposite).
        if let Some(exec) = self.executor {
            exec.set_sleeping(true);
            if exec.any_ready() {
                timeout = Some(Duration::ZERO);
            }
        }
        self.sample_high_water();
        Ok(timeout)
    }

    /// A wait that failed: `EINTR` ends the iteration (the next one polls again); `ECHILD`
    /// from a poller inherited across `fork` is [`Error::Forked`] (the poller refused, as
    /// its contract says); anything else is the poller's failure.
    #[cold]
    #[inline(never)]
    fn poll_failed(&self, errno: Errno) -> Result<bool, Error> {
        match errno {
            Errno::EINTR => Ok(true),
            Errno::ECHILD if self.poller.forked() => {
                crate::log::log_warn!("ioloop: loop used after fork: refused (build a new loop)");
                Err(Error::Forked)
            }
            errno => Err(Error::Os { errno }),
        }
    }

    /// The one "slow work pending" check: no callbacks queued, no remote queue, no signal
    /// handlers, no executor and no timers, so an iteration only polls and dispatches I/O.
    #[inline(always)]
    fn only_io(&self) -> bool {
        // One OR of the five and one test, not five tests and branches: each term is zero
        // exactly when its kind of work is absent.
        let pending = self.callbacks.len()
            | self
                .remote
                .map_or(0, |r| (r as *const dyn RemoteQueue<Self>).addr())
            | self.signal_count
            | usize::from(self.executor.is_some())
            | self.timers.scheduled();
        pending == 0
    }

    /// Step 1: fix what this iteration runs. Only the callbacks queued now (local and
    /// remote), the signals pending now and the tasks woken before now run in it; one clock
    /// read decides which timers are due, and timers scheduled from here on (sequence at or
    /// above `timer_seq`) wait for a later iteration.
    #[inline]
    fn begin_iteration(&mut self) -> Snapshot {
        self.counters.iterations += 1;
        if let Some(exec) = self.executor {
            exec.begin_iteration();
        }
        let callbacks = self.callbacks.len();
        self.sample_high_water();
        let remote = match self.remote {
            Some(r) => {
                // Producers after this point wake the poller again.
                let (n, stop) = r.begin();
                if stop {
                    self.stop_requested = true;
                }
                self.counters.remote_high_water = self.counters.remote_high_water.max(n);
                n
            }
            None => 0,
        };
        let now = (self.timers.scheduled() > 0).then(|| self.now());
        let timer_seq = self.timers.next_seq();
        // Through the hooks `add_signal_handler` sets (before `signal_count` can be above
        // zero): a program with no signal handler does not link the registry's polling.
        let signals = match self.signal_hooks {
            Some(hooks) if self.signal_count > 0 => (hooks.take_pending)(self.remote_wake),
            _ => 0,
        };
        Snapshot {
            callbacks,
            remote,
            signals,
            now,
            timer_seq,
        }
    }

    /// The poll timeout: zero if work is already waiting (callbacks, remote callbacks,
    /// pending signals, ready tasks), else the time to the earliest timer (a fresh clock
    /// read), else none; never more than `cap`.
    #[inline]
    fn poll_timeout(&self, cap: Option<Duration>) -> Option<Duration> {
        let pending = !self.callbacks.is_empty()
            || self.remote.is_some_and(|r| !r.is_empty())
            || (self.signal_count > 0
                && self
                    .signal_hooks
                    .is_some_and(|hooks| (hooks.any_pending)(self.remote_wake)))
            || self.executor.is_some_and(|e| e.any_ready());
        let timeout = if pending {
            Some(Duration::ZERO)
        } else {
            self.timers.peek_deadline().map(|d| d - self.poller.now())
        };
        match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        }
    }

    /// The poller's wait; a wait that may block is timed into `idle_time` (two clock reads),
    /// a non-blocking one (`Some(ZERO)`) is not: it is work, not idleness, and costs no clock
    /// read.
    #[inline(always)]
    fn timed_wait(&mut self, timeout: Option<Duration>) -> Result<usize, Errno> {
        self.changes_before_poll();
        if timeout.is_some_and(|t| t.is_zero()) {
            // No reading after this poll: forget the cached time, so the next `call_later`
            // reads the clock (and caches it) instead of counting from an older iteration.
            self.clock.set(None);
            return self.poller.wait(&mut self.events, timeout);
        }
        let before = self.poller.now();
        let waited = self.poller.wait(&mut self.events, timeout);
        let after = self.poller.now();
        self.set_clock(after);
        let waited_ns = after.as_nanos().saturating_sub(before.as_nanos());
        self.idle_ns = self.idle_ns.saturating_add(waited_ns);
        waited
    }

    /// The poll counters, and the count clamped to the buffer.
    #[inline(always)]
    fn count_poll(&mut self, waited: Result<usize, Errno>) -> Result<usize, Errno> {
        let c = &mut self.counters;
        c.polls += 1;
        let waited = waited.map(|n| n.min(EVENTS_PER_POLL));
        if let Ok(n) = waited {
            c.events_last_poll = n;
            c.events_max_poll = c.events_max_poll.max(n);
        }
        waited
    }

    /// Raise the tables' high-water marks to their current lengths.
    #[inline]
    fn sample_high_water(&mut self) {
        let c = &mut self.counters;
        c.handlers_high_water = c.handlers_high_water.max(self.handlers.len());
        c.timers_high_water = c.timers_high_water.max(self.timers.len());
        c.callbacks_high_water = c.callbacks_high_water.max(self.callbacks.len());
        if let Some(exec) = self.executor {
            c.tasks_high_water = c.tasks_high_water.max(exec.live());
        }
    }

    /// Call each ready fd's handler (or wake its tasks) once, looking it up at that moment.
    /// Always inlined (two call sites): at one event per pass its call and prologue are paid
    /// per event.
    #[inline(always)]
    fn dispatch_events(&mut self, n: usize) {
        for i in 0..n {
            if self.closed {
                break;
            }
            let ev = self.events[i];
            self.dispatch(ev);
        }
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// assert!(!lp.is_closed());
    /// lp.close();
    /// assert!(lp.is_closed());
    /// assert!(lp.run().is_err()); // a closed loop does not run again
    /// # let _ = (Duration::ZERO, Readiness::READ, Interest::READ);
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Make `run` return after the current iteration's work (Tornado's `stop`): the rest of
    /// this iteration's events are dispatched, the next iteration's callbacks and due timers
    /// run, and the loop leaves before polling again. Called while the loop is not running, it
    /// makes the next `run` return at once.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.stop(); // before run: the next run returns at once
    /// lp.call_later(Duration::from_secs(1), |_| panic!("not reached"))?;
    /// lp.run()?;
    /// assert_eq!(lp.timer_count(), 1);
    /// # let _ = (Readiness::READ, Interest::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Whether the loop is inside `run` or `run_once`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_callback(|lp| {
    ///     assert!(lp.is_running());
    ///     lp.stop();
    /// })?;
    /// assert!(!lp.is_running());
    /// lp.run()?;
    /// # let _ = (Duration::ZERO, Readiness::READ, Interest::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.running
    }
}

/// Inside `run` / `run_once`: the loop is marked running until this is dropped, also by a
/// panic unwinding out of an iteration, so the next `run` does not find it still running.
pub(super) struct Running<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    pub(super) lp: &'a mut EventLoop<P, H, T, Q>,
}

impl<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    Running<'a, P, H, T, Q>
{
    pub(super) fn enter(lp: &'a mut EventLoop<P, H, T, Q>) -> Self {
        lp.running = true;
        Running { lp }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for Running<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.lp.running = false;
        self.lp.stop_requested = false;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use core::cell::Cell;
    use std::rc::Rc;

    type Lp = EventLoop<SimPoller<8>, 4, 8, 4>;

    /// A loop with one ready handler counting its calls.
    fn ready_loop(calls: &Rc<Cell<u32>>) -> Lp {
        ready_loop_with(calls)
    }

    /// [`ready_loop`] with any callback capacity.
    fn ready_loop_with<const Q: usize>(calls: &Rc<Cell<u32>>) -> EventLoop<SimPoller<8>, 4, 8, Q> {
        let mut lp = EventLoop::with_poller(SimPoller::new());
        let c = calls.clone();
        lp.add_handler(3, Interest::READ, move |_, _, _| {
            c.set(c.get() + 1);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp
    }

    #[test]
    fn an_io_only_pass_in_a_forked_child_is_refused_by_the_poll_and_calls_no_handler() {
        let calls = Rc::new(Cell::new(0));
        let mut lp = ready_loop(&calls);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 1);
        lp.poller_mut().set_forked(true);
        assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Forked));
        assert_eq!(lp.run(), Err(Error::Forked));
        assert_eq!(calls.get(), 1);
        assert!(!lp.is_running());
    }

    #[test]
    fn a_pass_with_callbacks_in_a_forked_child_is_refused_before_running_them() {
        let calls = Rc::new(Cell::new(0));
        let mut lp = ready_loop(&calls);
        let c = calls.clone();
        lp.add_callback(move |_| c.set(c.get() + 10))
            .map_err(|r| r.error)
            .unwrap();
        lp.poller_mut().set_forked(true);
        assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Forked));
        assert_eq!(calls.get(), 0);
        lp.poller_mut().set_forked(false);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 11);
    }

    #[test]
    fn a_loop_without_callback_capacity_refuses_callbacks_and_still_runs_timers_and_handlers() {
        let calls = Rc::new(Cell::new(0));
        let mut lp = ready_loop_with::<0>(&calls);
        assert!(lp.add_callback(|_| panic!("never queued")).is_err());
        let c = calls.clone();
        lp.call_later(Duration::ZERO, move |_| c.set(c.get() + 10))
            .map_err(|r| r.error)
            .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 11);
        assert_eq!(lp.callback_count(), 0);
    }

    #[test]
    fn run_once_refuses_a_nested_run_and_a_closed_loop_as_before() {
        let calls = Rc::new(Cell::new(0));
        let mut lp = ready_loop(&calls);
        let c = calls.clone();
        lp.remove_handler(3);
        lp.add_handler(3, Interest::READ, move |lp, _, _| {
            assert_eq!(
                lp.run_once(Some(Duration::ZERO)),
                Err(Error::AlreadyRunning)
            );
            c.set(c.get() + 1);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 1);
        lp.close();
        assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Closed));
    }
}
