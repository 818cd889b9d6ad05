//! Observability: the watchdog, the counters, the error hook and panic reporting.

use super::*;

use core::sync::atomic::Ordering;
use portable_atomic::{AtomicPtr, AtomicUsize};

/// What the watchdog found running: which handler, timer or callback.
///
/// ```
/// use core::{cell::Cell, time::Duration};
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Source};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let seen = Rc::new(Cell::new(None));
/// let s = seen.clone();
/// lp.set_watchdog(Duration::ZERO, move |blocked| s.set(Some(blocked.source)));
/// let timer = lp.call_later(Duration::from_secs(1), |lp| lp.stop())?;
/// lp.run()?;
/// assert_eq!(seen.get(), Some(Source::Timer { handle: timer }));
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Source {
    /// An fd handler.
    Handler {
        /// The handler.
        id: HandlerId,
        /// Its fd.
        fd: RawFd,
    },
    /// A timer or periodic callback.
    Timer {
        /// Its handle.
        handle: TimerHandle,
    },
    /// A callback from `add_callback` or a `LoopHandle`.
    Callback,
    /// One poll of a task (an `async` block between two `.await`s).
    Task {
        /// The task.
        id: crate::task::executor::TaskId,
    },
    /// A signal handler.
    Signal {
        /// The signal number.
        signo: i32,
    },
}

/// A handler, timer or callback that ran longer than the watchdog's threshold (Tornado's
/// `set_blocking_log_threshold`), reported to the watchdog hook after it returned.
///
/// ```
/// use core::{cell::Cell, time::Duration};
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Source};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let seen = Rc::new(Cell::new(None));
/// let s = seen.clone();
/// lp.set_watchdog(Duration::from_millis(100), move |blocked| s.set(Some(blocked)));
/// lp.add_callback(|lp| {
///     lp.poller().advance(Duration::from_millis(300)); // "blocks" for 300 ms, simulated
///     lp.stop();
/// })?;
/// lp.run()?;
/// let blocked = seen.get().unwrap();
/// assert_eq!((blocked.source, blocked.duration), (Source::Callback, Duration::from_millis(300)));
/// assert!(blocked.name.contains("{{closure}}")); // where the callback was written
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Which one.
    pub source: Source,
    /// The type name of its closure (`my_crate::my_fn::{{closure}}`): where it was written.
    pub name: &'static str,
    /// How long it ran.
    pub duration: Duration,
}

/// Always-on counters, read with [`EventLoop::counters`]. Plain integers updated on the loop
/// thread: reading them costs nothing and keeping them costs an add per event, a compare per
/// table per iteration (the high-water marks) and two clock reads per poll that may block
/// (idle time).
///
/// # Sizing capacities and reading utilisation
///
/// The `*_high_water` fields are the most entries a table held, sampled at each iteration's
/// start and again before its poll: compare them with the loop's `H`, `T`, `Q` (and the
/// executor's task count) to size fixed capacities. Loop utilisation over a window is
/// `1 - Δidle_time / Δnow` between two reads of `counters()` and [`EventLoop::now`] (libuv's
/// `uv_metrics_idle_time`).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::EventLoop;
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.add_callback(|_| {})?;
/// lp.call_later(Duration::from_secs(2), |_| {})?;
/// lp.call_later(Duration::from_secs(3), |lp| lp.stop())?;
/// lp.run()?;
/// let c = lp.counters();
/// assert_eq!((c.callbacks_run, c.timers_fired), (1, 2));
/// assert_eq!((c.timers_high_water, c.callbacks_high_water), (2, 1));
/// assert_eq!(c.idle_time, Duration::from_secs(3)); // all of it asleep in the poller
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Iterations started.
    pub iterations: u64,
    /// Polls (waits in the poller) made.
    pub polls: u64,
    /// Time spent inside the poller's wait, on the loop's clock: the loop was idle. Two clock
    /// reads per poll that may block (in an iteration that has no timer, these are its only
    /// ones); a non-blocking poll (timeout zero: work was waiting, or `run_once(Some(ZERO))`)
    /// is not idleness, is not counted and reads no clock.
    pub idle_time: Duration,
    /// Ready fds the last poll reported (at most [`EVENTS_PER_POLL`]).
    pub events_last_poll: usize,
    /// The most ready fds one poll reported: near [`EVENTS_PER_POLL`] means events wait for the
    /// next poll.
    pub events_max_poll: usize,
    /// The most fd handlers registered at once (of `H`).
    pub handlers_high_water: usize,
    /// The most timers and periodic callbacks pending at once (of `T`).
    pub timers_high_water: usize,
    /// The most callbacks queued at once (of `Q`).
    pub callbacks_high_water: usize,
    /// The most tasks alive at once in the attached executor (of its `N`; 0 without one).
    pub tasks_high_water: usize,
    /// fd handler calls.
    pub events_dispatched: u64,
    /// Callbacks run.
    pub callbacks_run: u64,
    /// Timer and periodic callback calls.
    pub timers_fired: u64,
    /// Handler errors reported to the error hook (EPIPE not counted).
    pub handler_errors: u64,
    /// Remote callbacks run (from [`LoopHandle::add_callback`]).
    pub remote_callbacks_run: u64,
    /// The most remote callbacks the loop found queued at once (0 without a remote).
    pub remote_high_water: usize,
    /// The longest any handler, timer or callback ran. Measured only while a watchdog is set
    /// (it costs two clock reads per call); zero otherwise.
    pub max_run_time: Duration,
    /// Panics caught in handlers, timers, callbacks and signal handlers, and in the drop of
    /// their captures (feature `std`; see [`EventLoop`]'s panic policy): each reported to
    /// the error hook as [`Failure::Panicked`], or resumed when there is none.
    pub panics: u64,
}

pub(super) struct Watchdog {
    pub(super) threshold: Duration,
    /// `None` while only a beacon is set.
    pub(super) hook: Option<InlineFn<(), Blocked, ()>>,
    /// Where the running closure is published for a signal handler ([`Beacon`]).
    pub(super) beacon: Option<&'static Beacon>,
}

/// Where a loop publishes, in atomics, which closure it is running, so that an
/// asynchronous-signal handler (the facade's `ioloop::watchdog`, Tornado's `SIGALRM` path of
/// `set_blocking_signal_threshold`) can see a loop that is *still* blocked, while it is.
///
/// Set with [`EventLoop::set_beacon`]; from then on, each handler, timer, callback and signal
/// handler call costs four relaxed/release atomic stores (no clock read). A `static`: the
/// reader runs in a signal handler and may not take locks or references into the loop.
///
/// Every method is async-signal-safe: plain atomic loads and stores, no locks, no allocation.
///
/// ```
/// use core::cell::Cell;
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Beacon, EventLoop};
///
/// static BEACON: Beacon = Beacon::new();
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.set_beacon(Some(&BEACON));
/// let seen = Rc::new(Cell::new(None));
/// let s = seen.clone();
/// // What a SIGALRM handler would read while the callback runs:
/// lp.add_callback(move |lp| {
///     s.set(BEACON.running());
///     lp.stop();
/// })?;
/// lp.run()?;
/// assert!(seen.get().unwrap().name.contains("{{closure}}"));
/// assert_eq!(BEACON.running(), None); // between calls
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Beacon {
    /// The call number of the closure running now; 0 between calls.
    running: AtomicUsize,
    /// Calls started so far (wraps, skipping 0).
    calls: AtomicUsize,
    name_ptr: AtomicPtr<u8>,
    name_len: AtomicUsize,
}

impl Default for Beacon {
    fn default() -> Self {
        Self::new()
    }
}

/// What a [`Beacon`] shows: the closure the loop is running now.
///
/// ```
/// use core::cell::Cell;
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Beacon, EventLoop, RunningNow};
///
/// static BEACON: Beacon = Beacon::new();
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.set_beacon(Some(&BEACON));
/// let calls: Rc<Cell<[Option<RunningNow>; 2]>> = Rc::default();
/// let (a, b) = (calls.clone(), calls.clone());
/// lp.add_callback(move |_| a.set([BEACON.running(), None]))?;
/// lp.add_callback(move |lp| {
///     b.set([b.get()[0], BEACON.running()]);
///     lp.stop();
/// })?;
/// lp.run()?;
/// let [Some(first), Some(second)] = calls.get() else { panic!("both ran") };
/// assert_ne!(first.call, second.call); // another closure ran in between
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningNow {
    /// Which call this is: two reads with the same number saw the same call still running
    /// (no other closure ran in between).
    pub call: usize,
    /// The type name of its closure (`my_crate::my_fn::{{closure}}`).
    pub name: &'static str,
}

impl Beacon {
    /// An idle beacon (for a `static`).
    ///
    /// ```
    /// use loop_core::Beacon;
    ///
    /// static BEACON: Beacon = Beacon::new();
    /// assert_eq!(BEACON.running(), None);
    /// ```
    pub const fn new() -> Self {
        Beacon {
            running: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            name_ptr: AtomicPtr::new(core::ptr::null_mut()),
            name_len: AtomicUsize::new(0),
        }
    }

    /// A call begins: publish its name, then its number. Out of line: it is only reached
    /// while a beacon is set, and every call site (handlers, timers, callbacks, signal
    /// handlers, tasks) would otherwise carry its own copy.
    #[inline(never)]
    pub(super) fn enter(&self, name: &'static str) {
        let mut call = self.calls.load(Ordering::Relaxed).wrapping_add(1);
        if call == 0 {
            call = 1;
        }
        self.calls.store(call, Ordering::Relaxed);
        // `running` is 0 here: a reader ignores the name until `running` is set below.
        self.name_ptr
            .store(name.as_ptr().cast_mut(), Ordering::Relaxed);
        self.name_len.store(name.len(), Ordering::Relaxed);
        self.running.store(call, Ordering::Release);
    }

    /// The call ended.
    #[inline]
    pub(super) fn leave(&self) {
        self.running.store(0, Ordering::Release);
    }

    /// The closure running now, or `None` between calls (or while a call is being published).
    /// Async-signal-safe. See [`Beacon`] for an example.
    #[allow(unsafe_code)] // rebuilds the `&'static str` the loop published
    pub fn running(&self) -> Option<RunningNow> {
        let call = self.running.load(Ordering::Acquire);
        if call == 0 {
            return None;
        }
        let ptr = self.name_ptr.load(Ordering::Relaxed);
        let len = self.name_len.load(Ordering::Relaxed);
        // Same call still published: the name and length belong to it (they are only written
        // while `running` is 0, before the release store of the call number).
        core::sync::atomic::fence(Ordering::Acquire);
        if self.running.load(Ordering::Relaxed) != call || ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr`/`len` were taken from a `&'static str` in `enter` and published
        // (release) before `running` was set to `call`, which we read with acquire and found
        // unchanged after reading them: they are the parts of that same `'static`, UTF-8 str.
        let name = unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr.cast_const(), len))
        };
        Some(RunningNow { call, name })
    }
}

/// Something that went wrong inside the running loop, reported to the error hook
/// ([`EventLoop::set_error_hook`]) while the loop goes on.
///
/// ```
/// use core::cell::Cell;
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Failure, HandlerError, Interest, Readiness};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let seen = Rc::new(Cell::new(None));
/// let s = seen.clone();
/// lp.set_error_hook(move |failure| s.set(Some(failure)));
/// lp.add_handler(3, Interest::READ, |lp, fd, _| {
///     lp.poller_mut().clear_ready(fd);
///     lp.stop();
///     Err(HandlerError::Other("bad frame"))
/// })?;
/// lp.poller_mut().set_ready(3, Readiness::READ);
/// lp.run()?; // the failure is reported, the loop goes on
/// let id = lp.handler_id(3).unwrap(); // and the handler stays
/// let error = HandlerError::Other("bad frame");
/// assert_eq!(seen.get(), Some(Failure::Handler { id, fd: 3, error }));
/// assert_eq!(lp.counters().handler_errors, 1);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Failure {
    /// An fd handler returned an error (other than `EPIPE`, which is ignored as in Tornado).
    Handler {
        /// The handler.
        id: HandlerId,
        /// Its fd.
        fd: RawFd,
        /// What it returned.
        error: HandlerError,
    },
    /// A handler, timer, periodic callback, callback, remote callback or signal handler
    /// panicked, or the drop of its captures did (feature `std`: the panic was caught, see
    /// [`EventLoop`]'s panic policy).
    Panicked {
        /// Which one. A callback from a [`LoopHandle`] is a [`Source::Callback`].
        source: Source,
        /// The type name of its closure (where it was written).
        name: &'static str,
        /// The panic's message (`&str` and `String` payloads), cut to
        /// [`PANIC_MESSAGE_BYTES`](crate::PANIC_MESSAGE_BYTES).
        message: PanicMessage,
    },
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// The clock before a call, only while a watchdog is set.
    /// Publishes the closure's name on the beacon, if one is set; reads the clock only while
    /// a watchdog hook is set.
    #[inline(always)]
    pub(super) fn watch_start(&self, name: impl FnOnce() -> &'static str) -> Option<Instant> {
        let w = self.watchdog.as_ref()?;
        if let Some(b) = w.beacon {
            b.enter(name());
        }
        w.hook.as_ref().map(|_| self.poller.now())
    }

    #[inline(always)]
    pub(super) fn watch_end(
        &mut self,
        started: Option<Instant>,
        source: Source,
        name: impl FnOnce() -> &'static str,
    ) {
        if let Some(b) = self.watchdog.as_ref().and_then(|w| w.beacon) {
            b.leave();
        }
        // The name (an indirect call) is only looked up while a watchdog is set.
        if let Some(started) = started {
            self.watch_report(started, source, name());
        }
    }

    #[cold]
    pub(super) fn watch_report(&mut self, started: Instant, source: Source, name: &'static str) {
        let duration = self.poller.now() - started;
        self.report_blocked(source, name, duration);
    }

    pub(super) fn report_blocked(
        &mut self,
        source: Source,
        name: &'static str,
        duration: Duration,
    ) {
        if duration > self.counters.max_run_time {
            self.counters.max_run_time = duration;
        }
        if let Some(w) = self.watchdog.as_mut() {
            if let (true, Some(hook)) = (duration >= w.threshold, w.hook.as_mut()) {
                crate::log::log_warn!(
                    "ioloop: {} blocked the loop for {} us",
                    name,
                    duration.as_micros() as u64
                );
                hook.call(
                    &mut (),
                    Blocked {
                        source,
                        name,
                        duration,
                    },
                );
            }
        }
    }

    /// Count a caught panic and report it to the error hook; with no hook set, let it unwind
    /// on (the loop is consistent again by now) rather than lose it. While closing, report it
    /// (or log it) and go on: teardown must finish. For the executor's task polls too
    /// (`Source::Task`).
    #[cold]
    pub(crate) fn panicked(&mut self, source: Source, name: &'static str, caught: Caught) {
        self.counters.panics += 1;
        if self.error_hook.is_none() && !self.closed {
            crate::log::log_warn!("ioloop: {} panicked; unwinding out of run", name);
            caught.resume();
        }
        let failure = Failure::Panicked {
            source,
            name,
            message: caught.into_message(),
        };
        if self.closed {
            // Teardown goes on whatever the hook does: a panic of the hook is dropped here.
            if let Err(again) = panic::catch(|| self.report(failure)) {
                self.counters.panics += 1;
                let _ = again.into_message();
            }
        } else {
            self.report(failure);
        }
    }

    /// The refusal for a full table, logged (features `log` / `defmt`): the operator's cue to
    /// raise a capacity ([`Counters`]' high-water marks tell by how much).
    #[cold]
    pub(super) fn full(&self, what: Resource) -> Error {
        crate::log::log_warn!("ioloop: refused: {:?} at capacity", what);
        Error::Full { what }
    }

    /// Drop a closure the loop no longer keeps, catching a panic of its captures' drop.
    /// Out of line: the call sites are hot, and this path is rare on most of them.
    #[inline(never)]
    pub(super) fn release<A: ?Sized + 'static, X: 'static, R: 'static>(
        &mut self,
        f: InlineFn<A, X, R>,
        source: Source,
    ) {
        // The name's function, not the name: it is called only if the drop panicked.
        let name = f.namer();
        if let Err(caught) = panic::catch(move || drop(f)) {
            self.panicked(source, name(), caught);
        }
    }

    /// The error hook, or the log. Not guarded: a panic of the hook unwinds to the caller.
    pub(super) fn report(&mut self, failure: Failure) {
        if let Some(hook) = self.error_hook.as_mut() {
            hook.call(&mut (), failure);
            return;
        }
        match failure {
            Failure::Handler { fd, error, .. } => {
                // Read only by the log back ends; without one the failure is dropped.
                let _ = (fd, error);
                crate::log::log_warn!("ioloop: handler for fd {} failed: {}", fd, error);
            }
            Failure::Panicked { name, message, .. } => {
                let _ = (name, message);
                crate::log::log_warn!("ioloop: {} panicked: {}", name, message);
            }
        }
    }

    /// Report every handler, timer or callback that runs for `threshold` or longer to `hook`,
    /// naming it (Tornado's `set_blocking_log_threshold`, without signals or threads: the
    /// duration is measured around each call, and reported after the call returned). While a
    /// watchdog is set, each call costs two extra clock reads.
    ///
    /// This sees a slow call only once it returned; for a loop that is *still* blocked see
    /// [`set_beacon`](Self::set_beacon) (the facade's `ioloop::watchdog::arm`).
    ///
    /// ```
    /// use core::{cell::Cell, time::Duration};
    /// use std::rc::Rc;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let reports = Rc::new(Cell::new(0));
    /// let r = reports.clone();
    /// lp.set_watchdog(Duration::from_millis(50), move |_| r.set(r.get() + 1));
    /// lp.add_callback(|lp| lp.poller().advance(Duration::from_millis(10)))?; // quick enough
    /// lp.add_callback(|lp| lp.poller().advance(Duration::from_millis(80)))?; // too slow
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(reports.get(), 1);
    /// assert_eq!(lp.counters().max_run_time, Duration::from_millis(80));
    ///
    /// lp.clear_watchdog();
    /// lp.add_callback(|lp| lp.poller().advance(Duration::from_millis(80)))?;
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(reports.get(), 1); // no longer watched
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn set_watchdog(&mut self, threshold: Duration, mut hook: impl FnMut(Blocked) + 'static) {
        let beacon = self.watchdog.as_ref().and_then(|w| w.beacon);
        self.watchdog = Some(Watchdog {
            threshold,
            hook: Some(InlineFn::new(move |_: &mut (), b| hook(b))),
            beacon,
        });
        self.sync_watched_call();
    }

    /// Remove the watchdog hook (a beacon stays set). See [`set_watchdog`](Self::set_watchdog)
    /// for an example.
    pub fn clear_watchdog(&mut self) {
        let beacon = self.watchdog.as_ref().and_then(|w| w.beacon);
        self.watchdog = beacon.map(|beacon| Watchdog {
            threshold: Duration::MAX,
            hook: None,
            beacon: Some(beacon),
        });
        self.sync_watched_call();
    }

    /// Publish on `beacon`, from now on, which closure (handler, timer, callback, signal
    /// handler) the loop is running, so that a signal handler can report a loop that is still
    /// blocked (the facade's `ioloop::watchdog` does so on `SIGALRM`); `None` stops publishing.
    /// Costs four atomic stores per call, no clock read.
    ///
    /// ```
    /// use core::cell::Cell;
    /// use std::rc::Rc;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Beacon, EventLoop};
    ///
    /// static BEACON: Beacon = Beacon::new();
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let seen = Rc::new(Cell::new((false, false)));
    /// lp.set_beacon(Some(&BEACON));
    /// let s = seen.clone();
    /// lp.add_callback(move |lp| {
    ///     s.set((BEACON.running().is_some(), false));
    ///     lp.set_beacon(None); // stop publishing
    /// })?;
    /// let s = seen.clone();
    /// lp.add_callback(move |lp| {
    ///     s.set((s.get().0, BEACON.running().is_some()));
    ///     lp.stop();
    /// })?;
    /// lp.run()?;
    /// assert_eq!(seen.get(), (true, false));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn set_beacon(&mut self, beacon: Option<&'static Beacon>) {
        match (self.watchdog.as_mut(), beacon) {
            (Some(w), b) => {
                if let Some(old) = w.beacon {
                    old.leave();
                }
                w.beacon = b;
                if w.beacon.is_none() && w.hook.is_none() {
                    self.watchdog = None;
                }
            }
            (None, Some(b)) => {
                self.watchdog = Some(Watchdog {
                    threshold: Duration::MAX,
                    hook: None,
                    beacon: Some(b),
                });
            }
            (None, None) => {}
        }
        self.sync_watched_call();
    }

    /// Keep `watched_call` and `watched_timer` in step with `watchdog` (`Some` exactly when
    /// it is).
    fn sync_watched_call(&mut self) {
        self.watched_call = match self.watchdog {
            Some(_) => Some(|call, readiness| call.call_watched(readiness)),
            None => None,
        };
        self.watched_timer = match self.watchdog {
            Some(_) => Some(|call, deadline| call.call_watched(deadline)),
            None => None,
        };
    }

    /// The loop's counters (a copy; see [`Counters`] for an example).
    pub fn counters(&self) -> Counters {
        Counters {
            idle_time: Duration::from_nanos(self.idle_ns),
            ..self.counters
        }
    }

    /// Call `hook` for every [`Failure`] inside the running loop (a handler's error, a caught
    /// panic) and go on. Without a hook, handler errors are logged (features `log` / `defmt`;
    /// otherwise dropped) and a caught panic unwinds on out of `run` (see the panic policy on
    /// [`EventLoop`]). The hook cannot reach the loop: queue work from a handler instead. A
    /// panic in the hook itself is not caught: it unwinds out of `run`. See [`Failure`] for
    /// an example.
    pub fn set_error_hook(&mut self, mut hook: impl FnMut(Failure) + 'static) {
        self.error_hook = Some(InlineFn::new(move |_: &mut (), f| hook(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimPoller;

    static BEACON: Beacon = Beacon::new();

    fn reads_the_beacon(_: &mut EventLoop<SimPoller, 4, 4, 4>) {
        let now = BEACON.running().expect("published while it runs");
        assert!(now.name.ends_with("reads_the_beacon"), "{}", now.name);
    }

    #[test]
    fn beacon_names_the_running_callback_and_is_idle_between_calls() {
        let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
        assert_eq!(BEACON.running(), None);
        lp.set_beacon(Some(&BEACON));
        lp.add_callback(reads_the_beacon).unwrap();
        lp.call_later(Duration::ZERO, reads_the_beacon).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(BEACON.running(), None);
        assert_eq!(lp.counters().callbacks_run, 1);
        assert_eq!(lp.counters().timers_fired, 1);
        lp.set_beacon(None);
        assert!(
            lp.watchdog.is_none(),
            "no beacon, no hook: nothing to do per call"
        );
    }

    #[test]
    fn each_call_gets_a_new_number() {
        let b = Beacon::new();
        b.enter("a");
        let first = b.running().unwrap();
        b.leave();
        b.enter("b");
        let second = b.running().unwrap();
        assert_ne!(first.call, second.call);
        assert_eq!((first.name, second.name), ("a", "b"));
    }
}
