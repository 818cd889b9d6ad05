//! Observability: the watchdog, the counters, the error hook and panic reporting.

use super::*;

/// What the watchdog found running: which handler, timer or callback.
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
/// thread: reading them costs nothing and keeping them costs an add per event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Iterations started.
    pub iterations: u64,
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
    pub(super) hook: InlineFn<(), Blocked, ()>,
}

/// Something that went wrong inside the running loop, reported to the error hook
/// ([`EventLoop::set_error_hook`]) while the loop goes on.
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
    #[inline(always)]
    pub(super) fn watch_start(&self) -> Option<Instant> {
        self.watchdog.as_ref().map(|_| self.poller.now())
    }

    #[inline(always)]
    pub(super) fn watch_end(
        &mut self,
        started: Option<Instant>,
        source: Source,
        name: impl FnOnce() -> &'static str,
    ) {
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
            if duration >= w.threshold {
                w.hook.call(
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

    /// Drop a closure the loop no longer keeps, catching a panic of its captures' drop.
    /// Out of line: the call sites are hot, and this path is rare on most of them.
    #[inline(never)]
    pub(super) fn release<A: ?Sized + 'static, X: 'static, R: 'static>(
        &mut self,
        f: InlineFn<A, X, R>,
        source: Source,
    ) {
        let name = f.name();
        if let Err(caught) = panic::catch(move || drop(f)) {
            self.panicked(source, name, caught);
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
    pub fn set_watchdog(&mut self, threshold: Duration, mut hook: impl FnMut(Blocked) + 'static) {
        self.watchdog = Some(Watchdog {
            threshold,
            hook: InlineFn::new(move |_: &mut (), b| hook(b)),
        });
    }

    /// Remove the watchdog.
    pub fn clear_watchdog(&mut self) {
        self.watchdog = None;
    }

    /// The loop's counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Call `hook` for every [`Failure`] inside the running loop (a handler's error, a caught
    /// panic) and go on. Without a hook, handler errors are logged (features `log` / `defmt`;
    /// otherwise dropped) and a caught panic unwinds on out of `run` (see the panic policy on
    /// [`EventLoop`]). The hook cannot reach the loop: queue work from a handler instead. A
    /// panic in the hook itself is not caught: it unwinds out of `run`.
    pub fn set_error_hook(&mut self, mut hook: impl FnMut(Failure) + 'static) {
        self.error_hook = Some(InlineFn::new(move |_: &mut (), f| hook(f)));
    }
}
