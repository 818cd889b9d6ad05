//! The event loop: Tornado's `PollIOLoop` iteration over fixed-capacity tables.
//!
//! # One iteration (Tornado 4.5 `PollIOLoop.start`; see ARCHITECTURE.md)
//!
//! `iterate` (in `iterate.rs`) is these steps, in this order:
//!
//! 1. `begin_iteration`: fix what this iteration runs. Count the queued callbacks and the
//!    remote callbacks (only these run now), take the pending signals, mark the tasks woken
//!    so far, and read the clock once: timers with `deadline <= now` scheduled before this
//!    step are due;
//! 2. `run_callbacks`: the counted callbacks, first-in first-out;
//! 3. `run_remote_callbacks`: the counted callbacks queued from other threads ([`Remote`]);
//! 4. `run_signal_handlers`: each signal that arrived, its handler once;
//! 5. `run_tasks`: the executor's tasks woken before the iteration began;
//! 6. `run_due_timers`: the due timers in `(deadline, sequence)` order. A timer cancelled by
//!    an earlier callback or timer of this iteration does not run;
//! 7. `poll_timeout`: zero if work is waiting (callbacks, remote callbacks, signals, ready
//!    tasks), else the time to the earliest timer (a fresh clock read), else none (sleep until
//!    an event); capped by `run_once`'s / `run_sync`'s bound;
//! 8. if `stop()` was called (or the loop closed), leave here, before polling;
//! 9. `poll`; on `EINTR` start the next iteration;
//! 10. `dispatch_events`: call each ready fd's handler once with its OR-ed readiness (or wake
//!     the tasks waiting on its I/O registration), looking it up at that moment: a handler
//!     removed earlier in this step is never called, even if its fd number was reused by a
//!     new handler in the meantime.
//!
//! Callbacks, timers and tasks added during an iteration run in a later one, so a callback
//! that re-queues itself cannot starve I/O.
//!
//! The loop keeps its latest clock reading while it runs (libev's `ev_now`): step 1's
//! reading, step 9's reading after the poll, and every [`EventLoop::now`] call.
//! `call_later` and `reset_timer_later` count from it instead of reading the clock; outside
//! a running loop they read the clock.
//!
//! Step 1 differs from Tornado in mechanism, not in outcome: instead of popping every due
//! timer into a list (which would need unbounded storage), the loop notes the timer sequence
//! number before running callbacks and runs due timers from the heap head while their
//! sequence is below it. The one observable difference: if a callback of this iteration
//! schedules a timer with a deadline in the past, older due timers behind it in deadline order
//! wait for the next iteration (a zero-timeout poll later) instead of running now.
//!
//! # Files
//!
//! `mod.rs` the loop's state; `construct.rs` building it (by value, in place, boxed); `iterate.rs` running and the iteration;
//! `handlers.rs`, `timers.rs`, `callbacks.rs`, `signals.rs` the four kinds of work and their
//! step; `observe.rs` watchdog, counters, error hook and panic reporting; `attach.rs` the
//! remote and the executor, `spawn` and `run_sync`; `bridge.rs` the loop as the task layer
//! sees it; `teardown.rs` `close` and `Drop`.

#[allow(unsafe_code)] // run_sync pins its future on the stack
mod attach;
mod bridge;
mod callbacks;
#[allow(unsafe_code)] // builds the loop in place
mod construct;
mod handlers;
mod iterate;
mod observe;
#[cfg(all(test, feature = "std", unix))]
mod owned_tests;
mod signals;
mod teardown;
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
mod timers;

use attach::ExecHooks;
use observe::Watchdog;
pub use observe::{Beacon, Blocked, Counters, Failure, RunningNow, Source};
use signals::SignalHooks;

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::time::Duration;

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::error::{Errno, Error, HandlerError, HandlerResult, RawFd, Refused, Resource};
use crate::fd::Fd;
use crate::interest::{Interest, Mode, Readiness};
use crate::panic::{self, Caught, PanicMessage};
use crate::periodic::{self, Periodic};
use crate::poller::{Notify, PollEvent, Poller};
use crate::raw::inline_fn::InlineFn;
use crate::remote::WakeEntry;
use crate::remote::{LoopHandle, Remote, RemoteQueue, RemoteTarget, SendFn};
use crate::signal::{self, SignalInstaller};
use crate::tables::callback_queue::CallbackQueue;
use crate::tables::handler_table::{HandlerId, HandlerTable, InsertError};
use crate::task::current::{self, LoopOps};
use crate::task::executor::{ExecRef, Executor};

/// How many signals one loop can handle.
pub const MAX_SIGNAL_HANDLERS: usize = 8;

struct SignalSlot<L: 'static> {
    signo: i32,
    /// `None` while it runs.
    handler: Option<InlineFn<L, i32, ()>>,
    restore: fn(i32),
    /// The loop's entry in the process's signal registry.
    entry: signal::Slot,
    /// Teardown restored the disposition and released the entry.
    released: bool,
}
use crate::raw::zeroed::zero_in_place;
use crate::tables::timer_heap::{Cancel, Next, Quick, TimerHandle, TimerHeap};
use crate::time::Instant;

/// How many failed deregistrations the loop remembers before it resets the poller at once.
const MAX_SUSPECTS: usize = 8;

/// How many ready fds one poll can report. More ready fds are reported by the next poll (the
/// loop registers level-triggered), after the timers and callbacks of the next iteration.
pub const EVENTS_PER_POLL: usize = 256;

type HandlerFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, (RawFd, Readiness), HandlerResult>;
type TimerFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, Instant, Next>;
type CallbackFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, (), ()>;

/// A single-threaded event loop over a [`Poller`], with fixed capacities:
/// `H` fd handlers, `T` timers (including periodic callbacks), `Q` queued callbacks.
///
/// Handlers, timers and callbacks are closures that receive `&mut EventLoop`, through which
/// they add and remove handlers, schedule timers and callbacks, and stop the loop. They are
/// stored inline, without allocation: each may capture up to
/// [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES) bytes (a larger closure fails to
/// compile) and must be `'static`.
///
/// A closure that captures more than that is a compile error, not an allocation:
///
/// ```compile_fail
/// # use loop_core::{sim::SimPoller, EventLoop};
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// let state = [0u8; 57];
/// let _ = lp.add_callback(move |_| drop(state)); // 57 bytes: "closure too large"
/// ```
///
/// ```
/// # use loop_core::{sim::SimPoller, EventLoop};
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// let state = [0u8; 56];
/// let _ = lp.add_callback(move |_| drop(state)); // 56 bytes: fits
/// ```
///
/// Not `Send`: build the loop on the thread that runs it. Other threads reach it through the
/// poller's notifier.
///
/// # Methods by group
///
/// * building: [`with_poller`](Self::with_poller), [`init_in`](Self::init_in),
///   [`new`](Self::new), and with feature `alloc` `with_poller_boxed` and `new_boxed`;
/// * running: [`run`](Self::run), [`run_once`](Self::run_once), [`stop`](Self::stop),
///   [`is_running`](Self::is_running), [`close`](Self::close), [`is_closed`](Self::is_closed)
///   (example below);
/// * fd handlers: [`add_handler`](Self::add_handler), [`update_handler`](Self::update_handler),
///   [`remove_handler`](Self::remove_handler), [`handler_id`](Self::handler_id),
///   [`handler_count`](Self::handler_count), the `_with_state` and (feature `std`) `owned`
///   variants (example below);
/// * timers: [`call_later`](Self::call_later), [`call_at`](Self::call_at),
///   [`add_periodic`](Self::add_periodic), [`remove_timeout`](Self::remove_timeout),
///   [`reset_timer`](Self::reset_timer), [`timer_pending`](Self::timer_pending),
///   [`timer_count`](Self::timer_count) (example below);
/// * callbacks: [`add_callback`](Self::add_callback), [`callback_count`](Self::callback_count);
/// * other threads and signals: [`attach_remote`](Self::attach_remote) (or, with feature
///   `alloc`, `attach_owned_remote`), [`add_signal_handler`](Self::add_signal_handler),
///   [`remove_signal_handler`](Self::remove_signal_handler);
/// * tasks: [`attach_executor`](Self::attach_executor) (or, with feature `alloc`,
///   `attach_owned_executor`), [`spawn`](Self::spawn),
///   [`spawn_join`](Self::spawn_join), [`add_future`](Self::add_future),
///   [`run_sync`](Self::run_sync);
/// * observing: [`counters`](Self::counters), [`set_error_hook`](Self::set_error_hook),
///   [`set_watchdog`](Self::set_watchdog), [`clear_watchdog`](Self::clear_watchdog),
///   [`set_beacon`](Self::set_beacon), [`now`](Self::now), [`poller`](Self::poller),
///   [`poller_mut`](Self::poller_mut).
///
/// Running and stopping: `run` returns when a closure calls `stop`; `run_once` runs one
/// iteration; a closed loop refuses to run.
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.add_callback(|lp| {
///     assert!(lp.is_running());
///     assert_eq!(lp.run_once(None), Err(Error::AlreadyRunning)); // no nested runs
///     lp.stop();
/// })?;
/// lp.run()?;
/// assert!(!lp.is_running());
/// lp.call_later(Duration::from_secs(1), |_| {})?;
/// lp.run_once(None)?; // polls (a simulated sleep) until the timer is due
/// assert_eq!((lp.now().as_nanos(), lp.timer_count()), (1_000_000_000, 1));
/// lp.run_once(Some(Duration::ZERO))?; // the next iteration runs it (then polls, not blocking)
/// assert_eq!(lp.timer_count(), 0);
/// lp.close();
/// assert!(lp.is_closed());
/// assert_eq!(lp.run(), Err(Error::Closed));
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// fd handlers: called with the loop, the fd and its readiness, while the fd is ready for
/// what they asked (level-triggered).
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop, Interest, Readiness};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let id = lp.add_handler(3, Interest::READ, |lp, fd, ready| {
///     assert!(ready.contains(Readiness::WRITE)); // after update_handler below
///     lp.remove_handler(fd); // a handler may remove itself
///     Ok(())
/// })?;
/// assert_eq!((lp.handler_id(3), lp.handler_count()), (Some(id), 1));
/// let refused = lp.add_handler(3, Interest::READ, |_, _, _| Ok(())).unwrap_err();
/// assert_eq!(refused.error, Error::AlreadyRegistered { fd: 3 });
///
/// lp.update_handler(3, Interest::WRITE)?;
/// lp.poller_mut().set_ready(3, Readiness::READ | Readiness::WRITE);
/// lp.run_once(Some(core::time::Duration::ZERO))?;
/// assert_eq!((lp.handler_id(3), lp.handler_count()), (None, 0));
/// assert!(!lp.remove_handler(3)); // removing an unknown fd is a no-op
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// Timers: one-shot (`call_later`, `call_at`) or periodic, each with a
/// [`TimerHandle`](crate::TimerHandle) to cancel or move it.
///
/// ```
/// use core::{cell::Cell, time::Duration};
/// use std::rc::Rc;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Periodic};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let every = lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |_| {
///     t.set(t.get() + 1);
/// })?;
/// let idle = lp.call_later(Duration::from_secs(2), |_| unreachable!("pushed back"))?;
/// assert!(lp.reset_timer(idle, lp.now() + Duration::from_secs(10))); // activity seen
/// lp.call_at(lp.now() + Duration::from_millis(3500), move |lp| {
///     lp.remove_timeout(every);
///     assert!(lp.remove_timeout(idle));
///     lp.stop();
/// })?;
/// lp.run()?;
/// assert_eq!(ticks.get(), 3); // at 1, 2 and 3 s
/// assert!(!lp.timer_pending(every) && !lp.timer_pending(idle));
/// assert_eq!(lp.timer_count(), 0);
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// # Panics in user code
///
/// A panic in a handler, timer or callback never bricks the loop, leaks a slot or loses a
/// capture:
///
/// - **With feature `std`** every closure the loop calls — fd handler, timer, periodic
///   callback, callback, remote callback, signal handler — runs under `catch_unwind`. A caught
///   panic is counted in [`Counters::panics`] and the loop's tables are put right as listed
///   below. Then:
///   - with an error hook set ([`set_error_hook`](Self::set_error_hook)), Tornado's model:
///     the panic is reported to the hook as [`Failure::Panicked`] (source, closure name,
///     message) and the loop goes on;
///   - with no error hook, the panic unwinds on out of `run` / `run_once`, as Rust code
///     expects (a test's `assert!` inside a callback still fails the test): nothing is lost
///     silently, and the loop, already consistent, can be run again.
///
///   What a panic leaves:
///   - an fd handler **stays registered**, with its closure, as Tornado keeps a handler whose
///     call raised: its next event calls it again (remove it from the error hook's side, e.g.
///     through a queued callback, if a failure should end it);
///   - a periodic callback **stays scheduled** on its grid, as Tornado's `PeriodicCallback`
///     does after an exception;
///   - a signal handler stays registered;
///   - a one-shot timer, callback or remote callback is consumed by its call: its captures
///     were dropped while unwinding, and a timer's slot is free at once.
///
///   A panic in the drop of a capture (when a handler is removed, a timer cancelled, or the
///   loop closed or dropped) is caught and handled the same way, except that while closing or
///   dropping it never unwinds: with no hook it is logged (features `log` / `defmt`) and
///   teardown goes on.
/// - **Without `std`** nothing can be caught: the panic unwinds out of `run` / `run_once` (or
///   aborts, with `panic = "abort"`). Drop guards leave the loop as the `std` policy would: not
///   running (the next `run` works), the handler's closure back in its slot, the timer's slot
///   free (a periodic callback is stopped), the callback queue intact.
/// - A panic in the error hook or the watchdog hook itself is never caught (reporting it to the
///   hook could recurse): it unwinds out of `run`, through the same guards.
/// - [`close`](Self::close) and dropping the loop release the kernel-facing state first —
///   signal dispositions restored, fds deregistered and owned fds closed, the [`Remote`] closed
///   so [`LoopHandle::add_callback`] returns [`Error::Closed`] — and only then drop the
///   closures, one at a time, each under `catch_unwind` with `std` (a panic is reported to the
///   error hook, then teardown goes on); without `std` a guard finishes the teardown while the
///   first panic unwinds (a second one aborts, as in `std`'s collections).
///
/// # Example
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Interest};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.add_handler(3, Interest::READ, |lp, fd, ready| {
///     assert_eq!(fd, 3);
///     lp.poller_mut().clear_ready(fd);
///     lp.stop();
///     Ok(())
/// })
/// .unwrap();
/// lp.call_later(Duration::from_millis(10), |lp| lp.poller_mut().set_ready(3, loop_core::Readiness::READ))
///     .unwrap();
/// lp.run().unwrap();
/// assert_eq!(lp.now().as_nanos(), 10_000_000);
/// ```
pub struct EventLoop<
    P: Poller + 'static,
    const H: usize = 64,
    const T: usize = 256,
    const Q: usize = 256,
> {
    poller: P,
    handlers: HandlerTable<HandlerFn<P, H, T, Q>, H>,
    timers: TimerHeap<TimerFn<P, H, T, Q>, T>,
    callbacks: CallbackQueue<CallbackFn<P, H, T, Q>, Q>,
    events: [PollEvent; EVENTS_PER_POLL],
    /// Inside `run` / `run_once`.
    running: bool,
    /// `stop()` was called and not yet honoured.
    stop_requested: bool,
    error_hook: Option<InlineFn<(), Failure, ()>>,
    watchdog: Option<Watchdog>,
    /// The handler call under the watchdog, set with `watchdog` (`Some` exactly when it is):
    /// a program that never sets a watchdog or a beacon does not link that path.
    watched_call: Option<handlers::WatchedCall<P, H, T, Q>>,
    /// The same for a due timer's call.
    watched_timer: Option<timers::WatchedTimer<P, H, T, Q>>,
    counters: Counters,
    /// `counters.idle_time` in nanoseconds, kept here (saturating) and put into the copy
    /// `counters()` hands out: one add per wait, no `Duration` arithmetic (or its overflow
    /// panic).
    idle_ns: u64,
    /// `close()` was called: everything is refused from now on.
    closed: bool,
    remote: Option<&'static dyn RemoteQueue<Self>>,
    remote_wake: Option<&'static WakeEntry>,
    signals: [Option<SignalSlot<Self>>; MAX_SIGNAL_HANDLERS],
    signal_count: usize,
    /// How the loop runs, restores and drops its signal handlers, set by the first
    /// `add_signal_handler`: a program that never adds one does not link that code.
    signal_hooks: Option<&'static SignalHooks<Self>>,
    /// Keys (with their fds) whose deregistration failed with `EBADF`: the fd was closed
    /// first. Usually the kernel forgot the registration with the fd; if a `dup` keeps the
    /// file open (epoll's dup trap), a stale event for one of these keys proves it, and only
    /// then is the poller reset (see `remove_handler`).
    suspects: heapless::Vec<(u64, RawFd), MAX_SUSPECTS>,
    executor: Option<ExecRef>,
    /// How the loop runs and drops its executor's tasks, set with the executor: the only
    /// code that hands the loop to the task layer as a `dyn LoopOps`, so a program that never
    /// attaches an executor does not link the async bridge (about 7 KB of a static binary).
    exec_hooks: Option<&'static ExecHooks<Self>>,
    /// The remote callbacks' step, set with `remote` (`Some` exactly when it is).
    run_remote: Option<fn(&mut Self, usize)>,
    /// A panic a periodic callback's wrapper caught (it goes on with its schedule); the call
    /// site reports it, naming the timer.
    caught: Option<Caught>,
    /// A timer whose closure has drop glue was scheduled since the last teardown: teardown
    /// must then drop the timers one at a time (see `drop_closures`), and a cancel looks at
    /// the timer's needs-drop bit (else no live closure needs a drop).
    timer_drop_glue: bool,
    /// The latest clock reading taken inside the current run (libev's `ev_now`): refreshed
    /// once per iteration and by every [`now`](Self::now) while running; `None` outside a run
    /// and until the run's first reading. `call_later` counts from it.
    clock: core::cell::Cell<Option<Instant>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> RemoteTarget
    for EventLoop<P, H, T, Q>
{
    type Notifier = P::Notifier;
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// The loop's clock (the poller's): a fresh reading.
    ///
    /// Inside a running loop it also becomes the loop's cached time, from which
    /// [`call_later`](Self::call_later) counts, so a timer scheduled with `call_later(d)`
    /// after `call_at(now() + d)` never fires before it.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let start = lp.now();
    /// lp.call_later(Duration::from_millis(1500), |lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(lp.now() - start, Duration::from_millis(1500));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[inline]
    pub fn now(&self) -> Instant {
        let t = self.poller.now();
        if self.running {
            self.clock.set(Some(t));
        }
        t
    }

    /// The time `call_later` counts from: inside a running loop the latest reading the loop
    /// took (once per iteration, and by each [`now`](Self::now)), outside one a fresh reading.
    #[inline]
    pub(super) fn cached_now(&self) -> Instant {
        match self.clock.get() {
            Some(t) if self.running => t,
            _ => self.now(),
        }
    }

    /// Record a clock reading the iteration took (its cached time from here on).
    #[inline(always)]
    pub(super) fn set_clock(&self, t: Instant) {
        self.clock.set(Some(t));
    }

    /// The poller (to inspect it; [`poller_mut`](Self::poller_mut) to drive it).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// assert_eq!(lp.poller().stats().registers, 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn poller(&self) -> &P {
        &self.poller
    }

    /// The poller, mutably (tests drive the simulated poller through this). Deregistrations
    /// that `remove_handler` deferred to the next poll are applied first, so the poller
    /// holds exactly the registrations of the live handlers.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let calls = Rc::new(Cell::new(0));
    /// let c = calls.clone();
    /// lp.add_handler(3, Interest::READ, move |_, _, _| {
    ///     c.set(c.get() + 1);
    ///     Ok(())
    /// })?;
    /// lp.poller_mut().set_ready(3, Readiness::READ); // "data arrives"
    /// lp.run_once(Some(Duration::ZERO))?;
    /// lp.run_once(Some(Duration::ZERO))?; // level-triggered: still readable
    /// lp.poller_mut().clear_ready(3); // "read to EAGAIN"
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(calls.get(), 2);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn poller_mut(&mut self) -> &mut P {
        if self.handlers.has_deferred() {
            self.flush_deferred();
        }
        &mut self.poller
    }
}
