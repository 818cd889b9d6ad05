//! Timers: one-shot and periodic, and the guard that settles a due timer after its call.

use super::*;
use crate::raw::inline_fn::{InitInPlace, OnceNamed};

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    // ---------------------------------------------------------------------------------------
    // timers
    // ---------------------------------------------------------------------------------------

    /// Run `f` once, at `deadline` on the loop's clock ([`now`](Self::now)). A deadline in
    /// the past runs in the next iteration. Timers with equal deadlines run in the order they
    /// were scheduled.
    ///
    /// # Errors
    /// [`Error::Full`] (with `f` handed back) when `T` timers are pending.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 2, 4> = EventLoop::with_poller(SimPoller::new());
    /// let at = lp.now() + Duration::from_secs(2);
    /// lp.call_at(at, |lp| lp.stop())?;
    /// lp.call_at(at, |_| {})?; // the table holds 2 timers
    /// let refused = lp.call_at(at, |_| {}).unwrap_err();
    /// assert_eq!(refused.error, loop_core::Error::Full { what: loop_core::Resource::Timers });
    /// lp.run()?;
    /// assert_eq!(lp.now(), at);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[inline(always)]
    pub fn call_at<F>(&mut self, deadline: Instant, f: F) -> Result<TimerHandle, Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        // Inlined (the insert is a few dozen instructions, as the call would be); the
        // refusal is out of line.
        if self.closed || self.timers.len() >= T {
            return Err(self.refuse_timer(f));
        }
        let wrapper = move |lp: &mut Self, _deadline: Instant| {
            f(lp);
            Next::Done
        };
        let drop_glue = has_drop_glue(&wrapper);
        Ok(self.schedule_with(deadline, OnceNamed::<F, _>::new(wrapper), drop_glue))
    }

    /// Run `f` once, `delay` from now.
    ///
    /// "Now" is the loop's cached time (libev's `ev_now`): inside a running loop, the latest
    /// clock reading the loop took — once per iteration, and at every [`now`](Self::now) —
    /// so scheduling costs no clock read; outside a running loop (before `run`, between runs)
    /// a fresh reading. Tornado's ordering holds: `call_later(d)` scheduled after
    /// `call_at(lp.now() + d)` runs after it, and a deadline is never earlier than `d` after
    /// a time the caller has already been shown. Unlike Tornado, a callback that blocks for a
    /// while and then calls `call_later(d)` without reading [`now`](Self::now) gets a
    /// deadline `d` after the iteration's reading, not after the end of its blocking: call
    /// `now()` first, or use `call_at(lp.now() + d)`, to count from the moment of the call.
    ///
    /// # Errors
    /// As [`call_at`](Self::call_at).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use loop_core::{sim::SimPoller, EventLoop};
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_callback(|lp| {
    ///     assert_eq!(lp.now().as_nanos(), 0); // the latest reading: 0 s
    ///     lp.poller().advance(Duration::from_secs(5)); // the callback blocks for 5 s
    ///     // Counts from the latest reading: due at 1 s, so already due.
    ///     lp.call_later(Duration::from_secs(1), |lp| lp.stop()).unwrap();
    /// })
    /// .unwrap();
    /// lp.run().unwrap();
    /// assert_eq!(lp.now().as_nanos(), 5_000_000_000); // ran at once, not at 6 s
    /// ```
    #[inline(always)]
    pub fn call_later<F>(&mut self, delay: Duration, f: F) -> Result<TimerHandle, Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        let now = self.cached_now();
        self.timers.note_now(now);
        self.call_at(now + delay, f)
    }

    /// Call `f` periodically (Tornado 5.1's `PeriodicCallback`): first at now + period, then on
    /// the grid `start + k·period`, skipping ticks missed while the loop was busy, never
    /// repeating a call when the clock steps back, with the optional jitter of `periodic`.
    /// Stop it with [`remove_timeout`](Self::remove_timeout), also from inside `f`.
    ///
    /// `f` may capture up to `INLINE_CAPTURE_BYTES − 16` bytes (the schedule is stored with it).
    ///
    /// # Errors
    /// [`Error::InvalidPeriod`] for a zero period, [`Error::Full`] when `T` timers are
    /// pending; `f` is handed back.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop, Periodic};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// let mut ticks = 0;
    /// lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |lp| {
    ///     ticks += 1;
    ///     if ticks == 3 {
    ///         lp.stop();
    ///     }
    /// })?;
    /// lp.run()?;
    /// assert_eq!(lp.now().as_nanos(), 3_000_000_000); // at 1 s, 2 s and 3 s
    /// assert!(lp.add_periodic(Periodic::every(Duration::ZERO), |_| {}).is_err());
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_periodic<F>(
        &mut self,
        periodic: Periodic,
        mut f: F,
    ) -> Result<TimerHandle, Refused<F>>
    where
        F: FnMut(&mut Self) + 'static,
    {
        let room = if periodic.period_ns == 0 {
            Err(Error::InvalidPeriod)
        } else {
            self.timer_room()
        };
        if let Err(error) = room {
            return Err(Refused { error, value: f });
        }
        let now = self.now();
        let (period_ns, jitter_ppm) = (periodic.period_ns, periodic.jitter_ppm);
        let mut rng = periodic.first_rng(now, self.timers.next_seq());
        let first = periodic::next_deadline(now, now, period_ns, jitter_ppm, &mut rng);
        let wrapper = move |lp: &mut Self, deadline: Instant| {
            // Tornado's `PeriodicCallback` schedules the next call also after an exception:
            // a caught panic is handed to the call site, which reports it.
            if let Err(caught) = panic::catch(|| f(lp)) {
                lp.caught = Some(caught);
            }
            // Scheduled after the call, from a fresh clock reading, as Tornado does.
            let now = lp.now();
            Next::At(periodic::next_deadline(
                deadline, now, period_ns, jitter_ppm, &mut rng,
            ))
        };
        let drop_glue = has_drop_glue(&wrapper);
        let timer = InlineFn::named::<F, _>(wrapper);
        Ok(self.schedule(first, timer, drop_glue))
    }

    /// The refusal of a timer that [`timer_room`](Self::timer_room) turns away.
    #[cold]
    #[inline(never)]
    fn refuse_timer<F>(&self, f: F) -> Refused<F> {
        let error = match self.timer_room() {
            Err(error) => error,
            // Not reached (the caller saw a closed loop or a full table); full it is.
            Ok(()) => self.full(Resource::Timers),
        };
        Refused { error, value: f }
    }

    /// `Ok` if a timer can be added now: the loop is open and the heap has room.
    #[inline]
    pub(super) fn timer_room(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::Closed)
        } else if self.timers.len() >= T {
            Err(self.full(Resource::Timers))
        } else {
            Ok(())
        }
    }

    /// Insert the timer `init` writes straight into its slot, whose closure has drop glue if
    /// `drop_glue` (known at compile time).
    #[inline(always)]
    pub(super) fn schedule_with(
        &mut self,
        deadline: Instant,
        init: impl InitInPlace<TimerFn<P, H, T, Q>>,
        drop_glue: bool,
    ) -> TimerHandle {
        if drop_glue {
            self.timer_drop_glue = true;
        }
        match self.timers.insert_in_place(deadline, init, drop_glue) {
            Ok(h) => h,
            // Capacity was checked by the caller, and nothing runs in between.
            Err(_) => unreachable!("timer capacity checked before insert"),
        }
    }

    /// Insert `timer`, whose closure has drop glue if `drop_glue` (known at compile time).
    #[inline]
    pub(super) fn schedule(
        &mut self,
        deadline: Instant,
        timer: TimerFn<P, H, T, Q>,
        drop_glue: bool,
    ) -> TimerHandle {
        if drop_glue {
            self.timer_drop_glue = true;
        }
        match self.timers.insert_flagged(deadline, timer, drop_glue) {
            Ok(h) => h,
            // Capacity was checked by the caller, and nothing runs in between.
            Err(_) => unreachable!("timer capacity checked before insert"),
        }
    }

    /// Cancel a timer or periodic callback. Returns whether it was pending; cancelling a
    /// timer that already fired, or was cancelled, is a no-op. A timer cancelled by an earlier
    /// callback or timer of the same iteration does not run. The timer's slot is free again at
    /// once (except when a periodic callback cancels itself: then when it returns).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// let h = lp.call_later(Duration::from_secs(1), |_| panic!("cancelled"))?;
    /// assert!(lp.timer_pending(h));
    /// assert!(lp.remove_timeout(h));
    /// assert!(!lp.remove_timeout(h)); // a second cancel is a no-op
    /// assert_eq!(lp.timer_count(), 0);
    /// lp.run_once(Some(Duration::from_secs(2)))?; // nothing fires
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn remove_timeout(&mut self, h: TimerHandle) -> bool {
        // No timer with drop glue since the last teardown: no closure needs a drop.
        match self.timers.cancel_quick(h, self.timer_drop_glue) {
            Quick::NotPending => false,
            Quick::Running | Quick::Removed => true,
            Quick::NeedsDrop => self.remove_timeout_dropping(h),
        }
    }

    /// [`remove_timeout`](Self::remove_timeout) of a waiting timer whose closure has drop
    /// glue: its captures are dropped now, under the panic policy.
    #[cold]
    #[inline(never)]
    fn remove_timeout_dropping(&mut self, h: TimerHandle) -> bool {
        match self.timers.cancel_hinted(h, true) {
            Cancel::NotPending => false,
            Cancel::Running | Cancel::Removed => true,
            Cancel::RemovedWith(f) => {
                self.release(f, Source::Timer { handle: h });
                true
            }
        }
    }

    /// Move a pending timer to `deadline` (O(log n), no allocation): cheaper than cancel +
    /// schedule for timeouts that are pushed back on every activity. Returns `false` (and does
    /// nothing) for a timer that is not waiting.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// let h = lp.call_later(Duration::from_secs(1), |lp| lp.stop())?;
    /// let later = lp.now() + Duration::from_secs(5);
    /// assert!(lp.reset_timer(h, later));
    /// lp.run()?;
    /// assert_eq!(lp.now(), later);
    /// assert!(!lp.reset_timer(h, later)); // it fired: nothing to move
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[inline]
    pub fn reset_timer(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        self.timers.reset(h, deadline)
    }

    /// Move a pending timer to `delay` from now, "now" being the loop's cached time as for
    /// [`call_later`](Self::call_later) (no clock read inside a running loop): libev's
    /// `ev_timer_again`. Returns `false` (and does nothing) for a timer that is not waiting.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use loop_core::{sim::SimPoller, EventLoop};
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// let idle = lp.call_later(Duration::from_secs(30), |lp| lp.stop()).unwrap();
    /// lp.poller().advance(Duration::from_secs(10)); // activity at 10 s pushes it back
    /// assert!(lp.reset_timer_later(idle, Duration::from_secs(30)));
    /// lp.run().unwrap();
    /// assert_eq!(lp.now().as_nanos(), 40_000_000_000);
    /// ```
    #[inline]
    pub fn reset_timer_later(&mut self, h: TimerHandle, delay: Duration) -> bool {
        let deadline = self.cached_now() + delay;
        self.timers.reset(h, deadline)
    }

    /// Whether `h` is still scheduled (or running and not cancelled).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// let h = lp.call_later(Duration::from_secs(1), |_| {})?;
    /// assert!(lp.timer_pending(h));
    /// lp.run_once(Some(Duration::from_secs(2)))?; // waits until 1 s
    /// lp.run_once(Some(Duration::ZERO))?; // it fires
    /// assert!(!lp.timer_pending(h));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn timer_pending(&self, h: TimerHandle) -> bool {
        self.timers.is_pending(h)
    }

    /// How many timers are pending.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::{sim::SimPoller, EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.call_later(Duration::from_secs(1), |_| {})?;
    /// lp.call_later(Duration::from_secs(2), |_| {})?;
    /// assert_eq!(lp.timer_count(), 2);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Run the timers due at `now` that were scheduled before this iteration (sequence below
    /// `seq_limit`), in `(deadline, sequence)` order. A timer cancelled by an earlier callback
    /// or timer of this iteration does not run.
    #[inline]
    pub(super) fn run_due_timers(&mut self, now: Instant, seq_limit: u64) {
        loop {
            // Until the guard is dropped the timer's slot is marked running; the guard
            // settles it also when a panic unwinds through here. The closure goes straight
            // from its slot into the guard (one move, not two).
            let mut call = TimerCall {
                handle: TimerHandle::NONE,
                f: None,
                lp: self,
                next: Next::Done,
            };
            let Some((handle, deadline)) = call.lp.timers.pop_due_into(now, seq_limit, &mut call.f)
            else {
                core::mem::forget(call); // holds nothing
                return;
            };
            call.handle = handle;
            call.lp.counters.timers_fired += 1;
            let source = Source::Timer { handle };
            let mut outcome = match call.lp.watched_timer {
                None => call.call(deadline),
                Some(watched) => watched(&mut call, deadline),
            };
            if let Some(caught) = call.lp.caught.take() {
                outcome = Err(caught); // a periodic callback's, caught by its wrapper
            }
            let name = outcome
                .is_err()
                .then(|| call.f.as_ref().map_or("", |f| f.name()));
            call.put_back();
            core::mem::forget(call); // holds nothing any more
            if let (Err(caught), Some(name)) = (outcome, name) {
                self.panicked(source, name, caught);
            }
        }
    }
}

/// Whether dropping a `W` runs any code (its captures have drop glue); known at compile time.
#[inline(always)]
fn has_drop_glue<W>(_: &W) -> bool {
    core::mem::needs_drop::<W>()
}

/// [`TimerCall::call_watched`], kept by the loop while a watchdog or beacon is set.
pub(super) type WatchedTimer<P, const H: usize, const T: usize, const Q: usize> =
    for<'a, 'b> fn(&'b mut TimerCall<'a, P, H, T, Q>, Instant) -> Result<(), Caught>;

/// A due timer's closure, out of the heap for the call; settled on drop: re-armed if it asked
/// to be (`next`), else freed. A panic that unwinds through leaves `next` at `Done`.
pub(super) struct TimerCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
{
    lp: &'a mut EventLoop<P, H, T, Q>,
    handle: TimerHandle,
    f: Option<TimerFn<P, H, T, Q>>,
    next: Next,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    TimerCall<'_, P, H, T, Q>
{
    /// Call the closure (due at `deadline`), keeping what it asks for next.
    #[inline(always)]
    fn call(&mut self, deadline: Instant) -> Result<(), Caught> {
        if let Some(f) = self.f.as_mut() {
            let lp = &mut *self.lp;
            self.next = panic::catch(|| f.call(lp, deadline))?;
        }
        Ok(())
    }

    /// [`call`](Self::call) under the watchdog: its beacon names the timer while it runs, and
    /// a call longer than the threshold is reported. Reached through [`WatchedTimer`] (as the
    /// handlers' watched call): a program that never sets a watchdog or a beacon does not link
    /// it, and a loop without one pays one test per timer for it.
    #[inline]
    pub(super) fn call_watched(&mut self, deadline: Instant) -> Result<(), Caught> {
        let started = self
            .lp
            .watch_start(|| self.f.as_ref().map_or("", |f| f.name()));
        let outcome = self.call(deadline);
        let source = Source::Timer {
            handle: self.handle,
        };
        let name = || self.f.as_ref().map_or("", |f| f.name());
        self.lp.watch_end(started, source, name);
        outcome
    }

    /// What `Drop` does; called at the call site on the normal way out (as for handlers).
    #[inline(always)]
    fn put_back(&mut self) {
        if self.f.is_none() {
            return;
        }
        if let Next::At(_) = self.next {
            if let Some(f) = self.f.take() {
                if let Some(f) = self.lp.timers.finish(self.handle, f, self.next) {
                    // A periodic callback that cancelled itself: its captures go now.
                    let source = Source::Timer {
                        handle: self.handle,
                    };
                    self.lp.release(f, source);
                }
            }
        } else {
            self.lp.timers.finish_done(self.handle);
            // A one-shot timer: consumed by its call (a `FnOnce` is spent before it runs,
            // also if it panics), so this drop, in place, runs no user code. (A periodic
            // callback whose call unwound without `std`: its captures go now.)
            self.f = None;
        }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for TimerCall<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.put_back();
    }
}

/// On the simulated clock: the cached clock (`call_later` counts from the loop's latest
/// reading: Tornado's ordering, fresh readings outside a run, one reading per iteration) and
/// cancelling with and without drop glue.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use crate::task::executor::Executor;
    use crate::{sleep, Remote};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::vec::Vec;

    type Lp = EventLoop<SimPoller<4>, 4, 16, 8>;
    type Log = Rc<RefCell<Vec<&'static str>>>;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn at(secs: u64) -> Instant {
        Instant::from_nanos(secs * 1_000_000_000)
    }

    /// A timer that logs `name` and the time it ran at.
    fn logs(log: &Log, times: &Rc<RefCell<Vec<u64>>>, name: &'static str) -> impl FnOnce(&mut Lp) {
        let (log, times) = (log.clone(), times.clone());
        move |lp: &mut Lp| {
            log.borrow_mut().push(name);
            times.borrow_mut().push(lp.now().as_nanos() / 1_000_000_000);
        }
    }

    #[test]
    fn call_later_after_call_at_now_plus_d_runs_after_it_even_when_the_clock_moved() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        let (l, t) = (log.clone(), times.clone());
        lp.add_callback(move |lp| {
            lp.poller().advance(s(3)); // the callback took 3 s
            let deadline = lp.now() + s(2); // a fresh reading (3 s): due at 5 s
            lp.call_at(deadline, logs(&l, &t, "call_at")).unwrap();
            // Scheduled after it with the same delay: never before it.
            lp.call_later(s(2), logs(&l, &t, "call_later")).unwrap();
            // And the other way round: call_later first, then call_at(now() + d).
            lp.call_later(s(4), logs(&l, &t, "later_first")).unwrap();
            let deadline = lp.now() + s(4);
            lp.call_at(deadline, logs(&l, &t, "at_second")).unwrap();
        })
        .unwrap();
        lp.call_at(at(8), |lp| lp.stop()).unwrap();
        lp.run().unwrap();
        assert_eq!(
            *log.borrow(),
            ["call_at", "call_later", "later_first", "at_second"]
        );
        assert_eq!(*times.borrow(), [5, 5, 7, 7]);
    }

    #[test]
    fn call_later_inside_an_iteration_counts_from_the_latest_reading_not_a_fresh_one() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        let (l, t) = (log.clone(), times.clone());
        lp.call_at(at(10), |_| {}).unwrap(); // keeps the iteration reading the clock
        lp.add_callback(move |lp| {
            assert_eq!(lp.now(), Instant::ZERO);
            lp.poller().advance(s(5)); // blocks for 5 s without reading the clock
            lp.call_at(at(2), logs(&l, &t, "at 2 s")).unwrap();
            // Counts from the iteration's reading (0 s): due at 1 s, before the one at 2 s
            // although scheduled after it (a fresh reading would make it 6 s).
            lp.call_later(s(1), logs(&l, &t, "later 1 s")).unwrap();
            lp.call_at(at(6), |lp| lp.stop()).unwrap();
        })
        .unwrap();
        lp.run().unwrap();
        assert_eq!(*log.borrow(), ["later 1 s", "at 2 s"]);
        assert_eq!(*times.borrow(), [5, 5]);
    }

    /// Busy iterations (callbacks queued, so every poll is non-blocking and takes no clock
    /// reading) must not leave `call_later` counting from an older iteration's reading.
    #[test]
    fn call_later_after_busy_iterations_without_a_clock_reading_never_fires_early() {
        fn step(n: u32, log: Log, times: Rc<RefCell<Vec<u64>>>) -> impl FnOnce(&mut Lp) {
            move |lp: &mut Lp| {
                lp.poller().advance(s(5)); // work that takes 5 s, no clock read
                if n < 3 {
                    lp.add_callback(step(n + 1, log, times)).unwrap();
                } else {
                    lp.call_later(s(1), logs(&log, &times, "later 1 s"))
                        .unwrap();
                    lp.call_at(at(30), |lp| lp.stop()).unwrap();
                }
            }
        }
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        // One blocking poll first, so the loop holds a cached reading (0 s) before the busy
        // passes begin.
        lp.run_once(Some(Duration::ZERO)).unwrap();
        let (l, t) = (log.clone(), times.clone());
        lp.call_later(s(1), move |lp| {
            lp.add_callback(step(1, l, t)).map(|_| ()).unwrap()
        })
        .unwrap();
        lp.run().unwrap();
        assert_eq!(*log.borrow(), ["later 1 s"]);
        // The third step ran at 1 + 15 s: one second later is 17 s, never earlier.
        assert_eq!(*times.borrow(), [17]);
    }

    #[test]
    fn now_inside_a_callback_refreshes_the_time_call_later_counts_from() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        let (l, t) = (log.clone(), times.clone());
        lp.add_callback(move |lp| {
            lp.poller().advance(s(5));
            assert_eq!(lp.now(), at(5)); // the user saw 5 s
            lp.call_at(at(5) + Duration::from_millis(500), logs(&l, &t, "at 5.5 s"))
                .unwrap();
            lp.call_later(s(1), logs(&l, &t, "later: 6 s")).unwrap();
        })
        .unwrap();
        lp.call_at(at(7), |lp| lp.stop()).unwrap();
        lp.run().unwrap();
        assert_eq!(*log.borrow(), ["at 5.5 s", "later: 6 s"]);
        assert_eq!(*times.borrow(), [5, 6]);
    }

    #[test]
    fn call_later_outside_a_run_reads_the_clock_fresh_so_an_idle_loop_never_fires_early() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        // A run leaves its latest reading (1 s) behind.
        lp.call_later(s(1), |lp| lp.stop()).unwrap();
        lp.run().unwrap();
        assert_eq!(lp.now(), at(1));
        // The loop sits idle for 10 s, then a timer is scheduled from outside.
        lp.poller().advance(s(10));
        lp.call_later(s(2), logs(&log, &times, "between runs"))
            .unwrap();
        lp.call_at(at(13), |lp| lp.stop()).unwrap();
        lp.run().unwrap();
        assert_eq!(*times.borrow(), [13]); // 11 s + 2 s, not 1 s + 2 s
                                           // Nor does a new run count from the last run's reading before it takes its own: no
                                           // timer is scheduled, so its first iteration reads no clock before the callback.
        lp.poller().advance(s(10)); // 23 s
        let (l, t) = (log.clone(), times.clone());
        lp.add_callback(move |lp| {
            lp.call_later(s(1), logs(&l, &t, "first of a run")).unwrap();
            lp.call_at(at(25), |lp| lp.stop()).unwrap();
        })
        .unwrap();
        lp.run().unwrap();
        assert_eq!(*times.borrow(), [13, 24]);
        assert_eq!(*log.borrow(), ["between runs", "first of a run"]);
    }

    #[test]
    fn reset_timer_later_counts_from_the_cached_time_inside_a_run_and_fresh_outside() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let (log, times) = (Log::default(), Rc::new(RefCell::new(Vec::new())));
        let h = lp.call_later(s(1), logs(&log, &times, "idle")).unwrap();
        lp.poller().advance(s(4)); // outside a run: a fresh reading
        assert!(lp.reset_timer_later(h, s(2)));
        lp.add_callback(move |lp| {
            lp.poller().advance(s(1)); // 5 s, unread: the cached time stays at 4 s
            assert!(lp.reset_timer_later(h, s(3)));
        })
        .unwrap();
        lp.call_at(at(9), |lp| lp.stop()).unwrap();
        lp.run().unwrap();
        assert_eq!(*times.borrow(), [7]);
        assert!(!lp.reset_timer_later(h, s(1))); // fired: not waiting any more
    }

    #[test]
    fn sleep_in_a_task_still_counts_from_a_fresh_reading() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        lp.call_at(at(100), |_| {}).unwrap(); // iterations read the clock
        let woke = lp
            .run_sync(
                async {
                    crate::with_current_loop(|lp: &mut Lp| lp.poller().advance(s(3))).unwrap();
                    // The task blocked 3 s; sleep(2 s) counts from a fresh reading (3 s).
                    sleep(s(2)).await.unwrap();
                    crate::with_current_loop(|lp: &mut Lp| lp.now()).unwrap()
                },
                None,
            )
            .unwrap();
        assert_eq!(woke, at(5));
    }

    #[test]
    fn a_timer_call_is_watched_exactly_while_a_watchdog_or_beacon_is_set() {
        use crate::Beacon;
        use core::cell::Cell;
        static BEACON: Beacon = Beacon::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let seen = Rc::new(Cell::new(None::<bool>));
        let fire = |lp: &mut Lp| {
            let s = seen.clone();
            lp.call_later(Duration::ZERO, move |_| {
                s.set(Some(BEACON.running().is_some()))
            })
            .unwrap()
        };
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        lp.set_watchdog(Duration::ZERO, move |b| r.borrow_mut().push(b.source));
        let h = fire(&mut lp);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(*reports.borrow(), [Source::Timer { handle: h }]);
        assert_eq!(seen.get(), Some(false));
        lp.clear_watchdog();
        fire(&mut lp);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(reports.borrow().len(), 1, "not watched any more");
        lp.set_beacon(Some(&BEACON));
        fire(&mut lp);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(seen.get(), Some(true), "the beacon names the running timer");
        lp.set_beacon(None);
        seen.set(None);
        fire(&mut lp);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(seen.get(), Some(false));
        assert_eq!(reports.borrow().len(), 1);
        assert!(lp.watched_timer.is_none());
    }

    /// One schedule of near and far timers (ms to an hour), with a cancel, re-arms and a
    /// periodic callback, through a loop whose timer table has no wheel and one whose table
    /// has one: the same timers fire at the same instants in the same order.
    #[test]
    fn far_and_near_timers_fire_alike_with_and_without_the_timer_wheel() {
        use crate::tables::timer_heap::WHEEL_ABOVE;
        type Fired = Rc<RefCell<Vec<(u32, u64)>>>;
        fn schedule<const T: usize>() -> Vec<(u32, u64)> {
            let mut lp: EventLoop<SimPoller<4>, 4, T, 8> = EventLoop::with_poller(SimPoller::new());
            let fired = Fired::default();
            let log = |id: u32| {
                let fired = fired.clone();
                move |lp: &mut EventLoop<SimPoller<4>, 4, T, 8>| {
                    fired.borrow_mut().push((id, lp.now().as_nanos()))
                }
            };
            let ms = Duration::from_millis;
            lp.call_later(s(3600), log(1)).unwrap();
            lp.call_later(ms(2), log(2)).unwrap();
            let cancelled = lp.call_later(s(10), log(3)).unwrap();
            lp.call_later(s(10), log(4)).unwrap();
            let moved = lp.call_later(s(600), log(5)).unwrap();
            lp.call_later(ms(30), log(6)).unwrap();
            lp.call_at(at(10), log(7)).unwrap(); // equal to 4's deadline: after it
            let f = fired.clone();
            lp.add_periodic(crate::Periodic::every(s(1000)), move |lp| {
                f.borrow_mut().push((8, lp.now().as_nanos()))
            })
            .unwrap();
            assert!(lp.remove_timeout(cancelled));
            assert!(lp.reset_timer(moved, at(5))); // from far to near
            lp.call_at(at(3600), |lp| lp.stop()).unwrap(); // after 1: same deadline
            lp.run().unwrap();
            let out = fired.borrow().clone();
            out
        }
        let heap_only = schedule::<16>();
        assert_eq!(heap_only, schedule::<{ WHEEL_ABOVE + 8 }>());
        let secs = |n: u64| n * 1_000_000_000;
        assert_eq!(
            heap_only,
            [
                (2, 2_000_000),
                (6, 30_000_000),
                (5, secs(5)),
                (4, secs(10)),
                (7, secs(10)),
                (8, secs(1000)),
                (8, secs(2000)),
                (8, secs(3000)),
                (1, secs(3600)),
            ]
        );
    }

    #[test]
    fn remove_timeout_reports_pending_and_drops_captures_once_with_or_without_drop_glue() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let held = Rc::new(());
        let h = held.clone();
        let glue = lp.call_later(s(1), move |_| drop(h)).unwrap();
        let plain = lp.call_later(s(2), |_| {}).unwrap();
        let periodic = lp
            .add_periodic(crate::Periodic::every(s(3)), |_| {})
            .unwrap();
        assert_eq!(Rc::strong_count(&held), 2);
        assert!(lp.remove_timeout(glue));
        assert_eq!(Rc::strong_count(&held), 1, "dropped at once");
        assert!(lp.remove_timeout(plain));
        assert!(lp.remove_timeout(periodic));
        for h in [glue, plain, periodic] {
            assert!(!lp.remove_timeout(h), "a second cancel is a no-op");
            assert!(!lp.timer_pending(h));
        }
        assert_eq!(lp.timer_count(), 0);
        // A timer cancelling itself while it runs: pending (running) the first time only.
        let me = Rc::new(core::cell::Cell::new(None));
        let m = me.clone();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sn = seen.clone();
        let h = lp
            .call_later(s(1), move |lp| {
                let h = m.get().unwrap();
                sn.borrow_mut().push(lp.remove_timeout(h));
                sn.borrow_mut().push(lp.remove_timeout(h));
                lp.stop();
            })
            .unwrap();
        me.set(Some(h));
        lp.run().unwrap();
        assert_eq!(*seen.borrow(), [true, false]);
        assert_eq!(lp.timer_count(), 0);
    }
}
