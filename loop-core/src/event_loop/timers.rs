//! Timers: one-shot and periodic, and the guard that settles a due timer after its call.

use super::*;

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
    pub fn call_at<F>(&mut self, deadline: Instant, f: F) -> Result<TimerHandle, Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        if let Err(error) = self.timer_room() {
            return Err(Refused { error, value: f });
        }
        let timer = InlineFn::once_named::<F, _>(move |lp: &mut Self, _deadline: Instant| {
            f(lp);
            Next::Done
        });
        Ok(self.schedule::<F>(deadline, timer))
    }

    /// Run `f` once, `delay` from now.
    ///
    /// # Errors
    /// As [`call_at`](Self::call_at).
    pub fn call_later<F>(&mut self, delay: Duration, f: F) -> Result<TimerHandle, Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        let deadline = self.now() + delay;
        self.call_at(deadline, f)
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
        let timer = InlineFn::named::<F, _>(move |lp: &mut Self, deadline: Instant| {
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
        });
        Ok(self.schedule::<F>(first, timer))
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

    /// Insert `timer`, which wraps a user closure of type `F`.
    pub(super) fn schedule<F>(
        &mut self,
        deadline: Instant,
        timer: TimerFn<P, H, T, Q>,
    ) -> TimerHandle {
        // Known at compile time: no cost on the insert path.
        if core::mem::needs_drop::<F>() {
            self.timer_drop_glue = true;
        }
        match self.timers.insert(deadline, timer) {
            Ok(h) => h,
            // Capacity was checked by the caller, and nothing runs in between.
            Err(_) => unreachable!("timer capacity checked before insert"),
        }
    }

    /// Cancel a timer or periodic callback. Returns whether it was pending; cancelling a
    /// timer that already fired, or was cancelled, is a no-op. A timer cancelled by an earlier
    /// callback or timer of the same iteration does not run. The timer's slot is free again at
    /// once (except when a periodic callback cancels itself: then when it returns).
    pub fn remove_timeout(&mut self, h: TimerHandle) -> bool {
        let pending = self.timers.is_pending(h);
        if let Some(f) = self.timers.cancel(h) {
            self.release(f, Source::Timer { handle: h });
        }
        pending
    }

    /// Move a pending timer to `deadline` (O(log n), no allocation): cheaper than cancel +
    /// schedule for timeouts that are pushed back on every activity. Returns `false` (and does
    /// nothing) for a timer that is not waiting.
    pub fn reset_timer(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        self.timers.reset(h, deadline)
    }

    /// Whether `h` is still scheduled (or running and not cancelled).
    pub fn timer_pending(&self, h: TimerHandle) -> bool {
        self.timers.is_pending(h)
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Run the timers due at `now` that were scheduled before this iteration (sequence below
    /// `seq_limit`), in `(deadline, sequence)` order. A timer cancelled by an earlier callback
    /// or timer of this iteration does not run.
    #[inline]
    pub(super) fn run_due_timers(&mut self, now: Instant, seq_limit: u64) {
        while let Some((handle, f, deadline)) = self.timers.pop_due(now, seq_limit) {
            self.counters.timers_fired += 1;
            let source = Source::Timer { handle };
            // Until the guard is dropped the timer's slot is marked running; the guard
            // settles it also when a panic unwinds through here.
            let mut call = TimerCall {
                lp: self,
                handle,
                f: Some(f),
                next: Next::Done,
            };
            let started = call
                .lp
                .watch_start(|| call.f.as_ref().map_or("", |f| f.name()));
            let mut outcome = Ok(());
            if let Some(f) = call.f.as_mut() {
                let lp = &mut *call.lp;
                match panic::catch(|| f.call(lp, deadline)) {
                    Ok(next) => call.next = next,
                    Err(caught) => outcome = Err(caught),
                }
            }
            if let Some(caught) = call.lp.caught.take() {
                outcome = Err(caught); // a periodic callback's, caught by its wrapper
            }
            let name = || call.f.as_ref().map_or("", |f| f.name());
            call.lp.watch_end(started, source, name);
            let name = outcome.is_err().then(name);
            call.put_back();
            core::mem::forget(call); // holds nothing any more
            if let (Err(caught), Some(name)) = (outcome, name) {
                self.panicked(source, name, caught);
            }
        }
    }
}

/// A due timer's closure, out of the heap for the call; settled on drop: re-armed if it asked
/// to be (`next`), else freed. A panic that unwinds through leaves `next` at `Done`.
struct TimerCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    handle: TimerHandle,
    f: Option<TimerFn<P, H, T, Q>>,
    next: Next,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    TimerCall<'_, P, H, T, Q>
{
    /// What `Drop` does; called at the call site on the normal way out (as for handlers).
    #[inline(always)]
    fn put_back(&mut self) {
        if let Some(f) = self.f.take() {
            if let Some(f) = self.lp.timers.finish(self.handle, f, self.next) {
                if let Next::At(_) = self.next {
                    // A periodic callback that cancelled itself: its captures go now.
                    let source = Source::Timer {
                        handle: self.handle,
                    };
                    self.lp.release(f, source);
                } else {
                    // A one-shot timer: consumed by its call (a `FnOnce` is spent before it
                    // runs, also if it panics), so this drop runs no user code.
                    drop(f);
                }
            }
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
