//! The event loop: Tornado's `PollIOLoop` iteration over fixed-capacity tables.
//!
//! # One iteration (DESIGN.md §2, Tornado 4.5 `PollIOLoop.start`)
//!
//! 1. count the queued callbacks: only these run in this iteration;
//! 2. read the clock once; timers with `deadline <= now` that existed before this step are due;
//! 3. run the counted callbacks, then the due timers in `(deadline, sequence)` order. A timer
//!    cancelled by an earlier callback or timer of this iteration does not run;
//! 4. poll timeout: zero if callbacks are queued, else the time to the earliest timer (read
//!    with a fresh clock), else none (sleep until an event);
//! 5. if `stop()` was called, leave here, before polling;
//! 6. poll; on `EINTR` start the next iteration;
//! 7. call each ready fd's handler once with its OR-ed readiness, looking it up at that moment:
//!    a handler removed earlier in this step is never called, even if its fd number was
//!    reused by a new handler in the meantime.
//!
//! Callbacks and timers added during an iteration run in a later one, so a callback that
//! re-queues itself cannot starve I/O.
//!
//! Step 2 differs from Tornado in mechanism, not in outcome: instead of popping every due timer
//! into a list (which would need unbounded storage), the loop notes the timer sequence number
//! before running callbacks and runs due timers from the heap head while their sequence is
//! below it. The one observable difference: if a callback of this iteration schedules a timer
//! with a deadline in the past, older due timers behind it in deadline order wait for the next
//! iteration (a zero-timeout poll later) instead of running now.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::time::Duration;

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::callback_queue::CallbackQueue;
use crate::current::{self, LoopOps};
use crate::error::{Errno, Error, HandlerError, HandlerResult, RawFd, Refused, Resource};
use crate::executor::{ExecRef, Executor};
use crate::fd::Fd;
use crate::handler_table::{HandlerId, HandlerTable, InsertError};
use crate::inline_fn::InlineFn;
use crate::interest::{Interest, Mode, Readiness};
use crate::panic::{self, Caught, PanicMessage};
use crate::periodic::{self, Periodic};
use crate::poller::{Notify, PollEvent, Poller};
use crate::remote::{LoopHandle, Remote, RemoteTarget, SendFn};
use crate::signal::{self, SignalInstaller, WakeEntry};

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
use crate::time::Instant;
use crate::timer_heap::{Next, TimerHandle, TimerHeap};
use crate::zeroed::zero_in_place;

/// How many ready fds one poll can report. More ready fds are reported by the next poll (the
/// loop registers level-triggered), after the timers and callbacks of the next iteration.
pub const EVENTS_PER_POLL: usize = 256;

type HandlerFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, (RawFd, Readiness), HandlerResult>;
type TimerFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, Instant, Next>;
type CallbackFn<P, const H: usize, const T: usize, const Q: usize> =
    InlineFn<EventLoop<P, H, T, Q>, (), ()>;

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
        id: crate::executor::TaskId,
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

/// The loop's view of its attached [`Remote`], with the capacity erased.
trait RemoteQueue<L: 'static> {
    fn pop(&self) -> Option<SendFn<L>>;
    fn len(&self) -> usize;
    fn clear_wake(&self);
    fn take_stop(&self) -> bool;
    fn close(&self);
}

impl<L: RemoteTarget, const N: usize> RemoteQueue<L> for Remote<L, N> {
    fn pop(&self) -> Option<SendFn<L>> {
        Remote::pop(self)
    }
    fn len(&self) -> usize {
        Remote::len(self)
    }
    fn clear_wake(&self) {
        Remote::clear_wake(self)
    }
    fn take_stop(&self) -> bool {
        Remote::take_stop(self)
    }
    fn close(&self) {
        Remote::close(self)
    }
}

struct Watchdog {
    threshold: Duration,
    hook: InlineFn<(), Blocked, ()>,
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
    active: bool,
    /// `stop()` was called and not yet honoured.
    stop_requested: bool,
    error_hook: Option<InlineFn<(), Failure, ()>>,
    watchdog: Option<Watchdog>,
    counters: Counters,
    /// `close()` was called: everything is refused from now on.
    closed: bool,
    remote: Option<&'static dyn RemoteQueue<Self>>,
    remote_wake: Option<&'static WakeEntry>,
    signals: [Option<SignalSlot<Self>>; MAX_SIGNAL_HANDLERS],
    signal_count: usize,
    executor: Option<ExecRef>,
    /// A panic a periodic callback's wrapper caught (it goes on with its schedule); the call
    /// site reports it, naming the timer.
    caught: Option<Caught>,
    /// A timer whose closure has drop glue was scheduled since the last teardown: teardown
    /// must then drop the timers one at a time (see `drop_closures`).
    timer_drop_glue: bool,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> RemoteTarget
    for EventLoop<P, H, T, Q>
{
    type Notifier = P::Notifier;
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// A loop over `poller`, built by value. For large capacities use
    /// [`init_in`](Self::init_in) or (feature `alloc`) [`boxed_with_poller`](Self::boxed_with_poller),
    /// which never place the tables on the stack.
    pub fn with_poller(poller: P) -> Self {
        let mut slot = MaybeUninit::uninit();
        Self::init_in(&mut slot, poller);
        // SAFETY: `init_in` initialised every field.
        unsafe { slot.assume_init() }
    }

    /// Build a loop in place, in memory the caller provides (a `static`, a `Box`, a stack
    /// slot). Only the poller and a few words are written; the tables are zeroed in place, so a
    /// loop with 10^6 timer slots never passes through the stack.
    ///
    /// The slot is overwritten without dropping what was there.
    pub fn init_in(slot: &mut MaybeUninit<Self>, poller: P) -> &mut Self {
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes of one `Self` (it comes from `&mut MaybeUninit<Self>`).
        // Each field is initialised exactly once through a raw field pointer, never read
        // before: the tables by zeroing (their `ZeroInit` impls make zero their empty state),
        // the rest by `write`. After the last write every field is initialised, so
        // `assume_init_mut` is sound.
        unsafe {
            zero_in_place(
                &mut *addr_of_mut!((*p).handlers)
                    .cast::<MaybeUninit<HandlerTable<HandlerFn<P, H, T, Q>, H>>>(),
            );
            zero_in_place(
                &mut *addr_of_mut!((*p).timers)
                    .cast::<MaybeUninit<TimerHeap<TimerFn<P, H, T, Q>, T>>>(),
            );
            zero_in_place(
                &mut *addr_of_mut!((*p).callbacks)
                    .cast::<MaybeUninit<CallbackQueue<CallbackFn<P, H, T, Q>, Q>>>(),
            );
            addr_of_mut!((*p).events).write([PollEvent::default(); EVENTS_PER_POLL]);
            addr_of_mut!((*p).active).write(false);
            addr_of_mut!((*p).stop_requested).write(false);
            addr_of_mut!((*p).error_hook).write(None);
            addr_of_mut!((*p).watchdog).write(None);
            addr_of_mut!((*p).counters).write(Counters::default());
            addr_of_mut!((*p).closed).write(false);
            addr_of_mut!((*p).remote).write(None);
            addr_of_mut!((*p).remote_wake).write(None);
            addr_of_mut!((*p).signals).write([const { None }; MAX_SIGNAL_HANDLERS]);
            addr_of_mut!((*p).signal_count).write(0);
            addr_of_mut!((*p).executor).write(None);
            addr_of_mut!((*p).caught).write(None);
            addr_of_mut!((*p).timer_drop_glue).write(false);
            addr_of_mut!((*p).poller).write(poller);
            slot.assume_init_mut()
        }
    }

    /// A loop over `poller` on the heap, built in place (no stack copy of the tables).
    #[cfg(feature = "alloc")]
    pub fn boxed_with_poller(poller: P) -> alloc::boxed::Box<Self> {
        let mut b = alloc::boxed::Box::<Self>::new_uninit();
        Self::init_in(&mut b, poller);
        // SAFETY: `init_in` initialised every field.
        unsafe { b.assume_init() }
    }

    /// A loop over a freshly opened default poller.
    ///
    /// # Errors
    /// The OS error if the poller cannot be opened (`EMFILE`, `ENOMEM`).
    pub fn new() -> Result<Self, Error>
    where
        P: crate::OpenPoller,
    {
        Ok(Self::with_poller(P::open()?))
    }

    /// A loop over a freshly opened default poller, on the heap, built in place.
    ///
    /// # Errors
    /// The OS error if the poller cannot be opened.
    #[cfg(feature = "alloc")]
    pub fn new_boxed() -> Result<alloc::boxed::Box<Self>, Error>
    where
        P: crate::OpenPoller,
    {
        Ok(Self::boxed_with_poller(P::open()?))
    }

    // ---------------------------------------------------------------------------------------
    // fd handlers
    // ---------------------------------------------------------------------------------------

    /// Call `handler(loop, fd, readiness)` whenever `fd` is ready for `interest`.
    ///
    /// `ERROR` is always added to `interest`: the handler is also called for errors and
    /// hang-ups ([`Readiness::ERROR`], [`Readiness::HUP`]). It is never shown READ or WRITE it
    /// did not ask for. The loop does not own `fd`: keep it open until the handler is removed.
    /// A handler that returns an error is reported to the error hook (`EPIPE` is ignored) and
    /// stays registered.
    ///
    /// # Errors
    /// The handler comes back inside [`Refused`] with:
    /// [`Error::InvalidFd`] for a negative fd or one the poller cannot represent;
    /// [`Error::AlreadyRegistered`] if `fd` has a handler (which is left untouched);
    /// [`Error::Full`] when `H` handlers are registered;
    /// [`Error::Os`] when the kernel refuses (`EBADF` for a closed fd, `EPERM` for a regular
    /// file on epoll, `ENOSPC` at the kernel's watch limit).
    pub fn add_handler<F>(
        &mut self,
        fd: impl Into<Fd>,
        interest: Interest,
        handler: F,
    ) -> Result<HandlerId, Refused<F>>
    where
        F: FnMut(&mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.add_handler_inner(fd.into().raw(), interest, false, handler)
    }

    /// As [`add_handler`](Self::add_handler), but the loop takes ownership of `fd` and closes
    /// it when the handler is removed or the loop is dropped.
    ///
    /// # Errors
    /// As `add_handler`; the fd and the handler come back inside [`Refused`], still open.
    #[cfg(all(feature = "std", unix))]
    pub fn add_owned_handler<F>(
        &mut self,
        fd: std::os::fd::OwnedFd,
        interest: Interest,
        handler: F,
    ) -> Result<HandlerId, Refused<(std::os::fd::OwnedFd, F)>>
    where
        F: FnMut(&mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        use std::os::fd::{AsRawFd, IntoRawFd};
        match self.add_handler_inner(fd.as_raw_fd(), interest, true, handler) {
            Ok(id) => {
                // The loop owns it now; `Poller::close_fd` closes it on removal.
                let _ = fd.into_raw_fd();
                Ok(id)
            }
            Err(Refused { error, value }) => Err(Refused {
                error,
                value: (fd, value),
            }),
        }
    }

    fn add_handler_inner<F>(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        handler: F,
    ) -> Result<HandlerId, Refused<F>>
    where
        F: FnMut(&mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.register_then(fd, interest, owned, handler, |mut handler| {
            InlineFn::named::<F, _>(move |lp: &mut Self, (fd, r)| handler(lp, fd, r))
        })
    }

    /// Reserve a slot and register `fd` with the poller; only then turn `value` into the
    /// stored handler with `wrap`, so every refusal hands `value` back untouched.
    fn register_then<V>(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        value: V,
        wrap: impl FnOnce(V) -> HandlerFn<P, H, T, Q>,
    ) -> Result<HandlerId, Refused<V>> {
        let refuse = |error, value| Err(Refused { error, value });
        if let Err(error) = self.usable() {
            return refuse(error, value);
        }
        if fd < 0 {
            return refuse(Error::InvalidFd { fd }, value);
        }
        let interest = interest.registered();
        let id = match self.handlers.reserve(fd, interest, owned) {
            Ok(id) => id,
            Err(InsertError::Duplicate) => return refuse(Error::AlreadyRegistered { fd }, value),
            Err(InsertError::Full) => {
                return refuse(
                    Error::Full {
                        what: Resource::Handlers,
                    },
                    value,
                )
            }
        };
        if let Err(error) = self.poller.register(fd, id.key(), interest, Mode::Level) {
            self.handlers.remove_id(id);
            return refuse(error, value);
        }
        self.handlers.set_handler(id, wrap(value));
        Ok(id)
    }

    /// As [`add_handler`](Self::add_handler), with the handler split into a function and the
    /// state it works on: `handler(&mut state, loop, fd, readiness)`. On refusal the state
    /// comes back as it was given (with the function), so code that keeps a caller's value
    /// inside its handler's state can return that value — which a refused closure, being
    /// opaque, cannot offer. State and function together may capture up to
    /// [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES).
    ///
    /// # Errors
    /// As [`add_handler`](Self::add_handler); `(state, handler)` come back inside [`Refused`].
    pub fn add_handler_with_state<S, F>(
        &mut self,
        fd: impl Into<Fd>,
        interest: Interest,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(S, F)>>
    where
        S: 'static,
        F: FnMut(&mut S, &mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.with_state_inner(fd.into().raw(), interest, false, state, handler)
    }

    /// [`add_handler_with_state`](Self::add_handler_with_state) for an fd the loop takes
    /// ownership of (closed on removal, as [`add_owned_handler`](Self::add_owned_handler)).
    ///
    /// # Errors
    /// As `add_owned_handler`; the fd, the state and the function come back inside
    /// [`Refused`], the fd still open.
    #[cfg(all(feature = "std", unix))]
    pub fn add_owned_handler_with_state<S, F>(
        &mut self,
        fd: std::os::fd::OwnedFd,
        interest: Interest,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(std::os::fd::OwnedFd, S, F)>>
    where
        S: 'static,
        F: FnMut(&mut S, &mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        use std::os::fd::{AsRawFd, IntoRawFd};
        match self.with_state_inner(fd.as_raw_fd(), interest, true, state, handler) {
            Ok(id) => {
                // The loop owns it now; `Poller::close_fd` closes it on removal.
                let _ = fd.into_raw_fd();
                Ok(id)
            }
            Err(Refused {
                error,
                value: (s, f),
            }) => Err(Refused {
                error,
                value: (fd, s, f),
            }),
        }
    }

    fn with_state_inner<S, F>(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(S, F)>>
    where
        S: 'static,
        F: FnMut(&mut S, &mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.register_then(
            fd,
            interest,
            owned,
            (state, handler),
            |(mut state, mut handler)| {
                InlineFn::named::<F, _>(move |lp: &mut Self, (fd, r)| {
                    handler(&mut state, lp, fd, r)
                })
            },
        )
    }

    /// Change what the handler of `fd` is called for. `ERROR` is always added. An unchanged
    /// interest costs no system call.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if `fd` has no handler; [`Error::Os`] if the kernel refuses
    /// (the old interest then stays in force).
    pub fn update_handler(&mut self, fd: impl Into<Fd>, interest: Interest) -> Result<(), Error> {
        let fd = fd.into().raw();
        let interest = interest.registered();
        let Some((id, slot)) = self.handlers.lookup_mut(fd) else {
            return Err(Error::NotRegistered { fd });
        };
        if slot.interest == interest {
            return Ok(());
        }
        self.poller.modify(fd, id.key(), interest, Mode::Level)?;
        if let Some((_, slot)) = self.handlers.lookup_mut(fd) {
            slot.interest = interest;
        }
        Ok(())
    }

    /// Stop watching `fd` and drop its handler (closing the fd if the loop owns it). Returns
    /// whether `fd` had a handler; removing an unknown fd is a no-op, as in Tornado.
    ///
    /// An event already fetched for `fd` in this iteration is dropped: the handler is never
    /// called after this returns. A handler may remove itself. Remove the handler before
    /// closing a borrowed fd: epoll watches the open file description, and a `dup` of it would
    /// keep reporting events. Should the removal come after the close anyway (the kernel then
    /// answers `EBADF`, or `ENOENT` if the number was reused), the loop resets the poller
    /// ([`Poller::reset`]: epoll gets a fresh instance) and registers every live handler again,
    /// so the stale registration cannot keep the loop busy; that costs a system call per
    /// handler, and a handler that cannot be registered again is reported to the error hook.
    pub fn remove_handler(&mut self, fd: impl Into<Fd>) -> bool {
        let fd = fd.into().raw();
        let Some((id, slot)) = self.handlers.remove(fd) else {
            return false;
        };
        // A parked I/O registration is already deregistered.
        if !slot.io.as_ref().is_some_and(|io| io.parked) {
            let deregistered = self.poller.deregister(fd);
            self.recover_from_failed_deregister(id, fd, deregistered);
        }
        if slot.owned {
            // SAFETY: `owned` is set only by `add_owned_handler*`, which took the fd out of an
            // `OwnedFd` (`into_raw_fd`); the slot was just removed, so this is the one close
            // and the loop never uses the number again.
            unsafe { self.poller.close_fd(fd) };
        }
        if let Some(f) = slot.handler {
            self.release(f, Source::Handler { id, fd });
        }
        true
    }

    /// After a `deregister` of a live registration that failed with `EBADF` (the fd was
    /// closed) or `ENOENT` (closed, and the number reused): on epoll a `dup` of the old file
    /// may keep the registration alive, reachable by no fd number, firing forever for a key
    /// no handler owns (the dup trap, DESIGN.md §3). Reset the poller and register every live
    /// handler again; pollers without the trap decline (`Ok(false)`) and nothing happens.
    /// Failures go to the error hook as the removed (or un-re-registrable) handler's.
    fn recover_from_failed_deregister(
        &mut self,
        removed: HandlerId,
        fd: RawFd,
        deregistered: Result<(), Error>,
    ) {
        let Err(Error::Os {
            errno: errno @ (Errno::EBADF | Errno::ENOENT),
        }) = deregistered
        else {
            return;
        };
        match self.poller.reset() {
            Ok(true) => {}
            Ok(false) | Err(Error::Forked) => return,
            Err(error) => {
                let errno = match error {
                    Error::Os { errno } => errno,
                    _ => errno,
                };
                let (id, error) = (removed, HandlerError::Os(errno));
                return self.report(Failure::Handler { id, fd, error });
            }
        }
        // The first few failures are reported one by one, the rest (if any) in one report.
        let (poller, mut lost, mut more) = (&mut self.poller, heapless::Vec::<_, 4>::new(), 0);
        self.handlers.for_each_mut(|id, slot| {
            let (interest, mode) = match &slot.io {
                Some(io) if io.parked => return,
                Some(io) if io.edge => {
                    ((Interest::READ | Interest::WRITE).registered(), Mode::Edge)
                }
                _ => (slot.interest, Mode::Level),
            };
            if let Err(Error::Os { errno }) = poller.register(slot.fd, id.key(), interest, mode) {
                if lost.push((id, slot.fd, errno)).is_err() {
                    more += 1;
                }
            }
        });
        for (id, fd, errno) in lost {
            let error = HandlerError::Os(errno);
            self.report(Failure::Handler { id, fd, error });
        }
        if more > 0 {
            let error = HandlerError::Other("more handlers lost their registration in a reset");
            self.report(Failure::Handler {
                id: removed,
                fd,
                error,
            });
        }
    }

    /// The handler registered for `fd`.
    pub fn handler_id(&self, fd: impl Into<Fd>) -> Option<HandlerId> {
        self.handlers.lookup(fd.into().raw()).map(|(id, _)| id)
    }

    /// How many fd handlers are registered.
    pub fn handler_count(&self) -> usize {
        self.handlers.len()
    }

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
    fn timer_room(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::Closed)
        } else if self.timers.len() >= T {
            Err(Error::Full {
                what: Resource::Timers,
            })
        } else {
            Ok(())
        }
    }

    /// Insert `timer`, which wraps a user closure of type `F`.
    fn schedule<F>(&mut self, deadline: Instant, timer: TimerFn<P, H, T, Q>) -> TimerHandle {
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
    pub fn reset_timeout(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        self.timers.reset(h, deadline)
    }

    /// Whether `h` is still scheduled (or running and not cancelled).
    pub fn timeout_pending(&self, h: TimerHandle) -> bool {
        self.timers.is_pending(h)
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    // ---------------------------------------------------------------------------------------
    // callbacks
    // ---------------------------------------------------------------------------------------

    /// Run `f` in the next iteration (or in this one, if the loop is not inside an iteration).
    /// Callbacks run first-in first-out; one added while callbacks run waits for the next
    /// iteration, and makes the next poll non-blocking.
    ///
    /// # Errors
    /// [`Error::Full`] (with `f` handed back) when `Q` callbacks are queued.
    pub fn add_callback<F>(&mut self, f: F) -> Result<(), Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        if self.closed {
            return Err(Refused {
                error: Error::Closed,
                value: f,
            });
        }
        if self.callbacks.len() >= Q {
            return Err(Refused {
                error: Error::Full {
                    what: Resource::Callbacks,
                },
                value: f,
            });
        }
        let queued = self
            .callbacks
            .push(InlineFn::once_named::<F, _>(move |lp: &mut Self, ()| f(lp)));
        debug_assert!(queued.is_ok(), "callback capacity checked before push");
        Ok(())
    }

    /// How many callbacks are queued.
    pub fn callback_count(&self) -> usize {
        self.callbacks.len()
    }

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
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.drive(timeout, 1)
    }

    /// `Err` if the loop can no longer be used: closed, or inherited across `fork`.
    #[inline]
    fn usable(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::Closed)
        } else if self.poller.forked() {
            Err(Error::Forked)
        } else {
            Ok(())
        }
    }

    fn drive(&mut self, cap: Option<Duration>, iterations: usize) -> Result<(), Error> {
        if self.active {
            return Err(Error::AlreadyRunning);
        }
        self.usable()?;
        if self.stop_requested {
            self.stop_requested = false;
            return Ok(());
        }
        let running = Running::enter(self);
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
        result
    }

    /// One iteration. `Ok(false)` when stopped.
    fn iterate(&mut self, cap: Option<Duration>) -> Result<bool, Error> {
        self.counters.iterations += 1;
        // 1. Only the callbacks queued now run in this iteration (local and remote), and only
        //    the tasks woken before now (a task spawned or woken by a callback waits for the
        //    next iteration, as one spawned by a timer or handler does).
        if let Some(exec) = self.executor {
            exec.begin_iteration();
        }
        let ncallbacks = self.callbacks.len();
        let nremote = match self.remote {
            Some(r) => {
                // Producers after this point wake the poller again.
                r.clear_wake();
                if r.take_stop() {
                    self.stop_requested = true;
                }
                let n = r.len();
                self.counters.remote_high_water = self.counters.remote_high_water.max(n);
                n
            }
            None => 0,
        };
        // 2. One clock read decides which timers are due; timers scheduled from here on
        //    (sequence >= limit) wait for a later iteration.
        let now = (self.timers.scheduled() > 0).then(|| self.poller.now());
        let seq_limit = self.timers.next_seq();
        let signals = if self.signal_count > 0 {
            signal::take_pending(self.remote_wake)
        } else {
            0
        };
        // 3. Callbacks, then due timers.
        // A callback is out of the queue before it runs and consumed by its call: a panic
        // leaves nothing to restore (its captures are dropped while unwinding).
        for _ in 0..ncallbacks {
            let Some(mut cb) = self.callbacks.pop() else {
                break; // emptied by `close()`
            };
            self.counters.callbacks_run += 1;
            let started = self.watch_start();
            let outcome = panic::catch(|| cb.call(self, ()));
            self.watch_end(started, Source::Callback, || cb.name());
            if let Err(caught) = outcome {
                self.panicked(Source::Callback, cb.name(), caught);
            }
        }
        for _ in 0..nremote {
            let Some(r) = self.remote else { break };
            // A producer may have claimed a cell and not finished writing it: it is picked up
            // by the next iteration (its wake is already pending).
            let Some(SendFn(mut cb)) = r.pop() else { break };
            if self.closed {
                break;
            }
            self.counters.remote_callbacks_run += 1;
            let started = self.watch_start();
            let outcome = panic::catch(|| cb.call(self, ()));
            self.watch_end(started, Source::Callback, || cb.name());
            if let Err(caught) = outcome {
                self.panicked(Source::Callback, cb.name(), caught);
            }
        }
        if signals != 0 {
            self.run_signal_handlers(signals);
        }
        if let Some(exec) = self.executor {
            if !self.closed {
                // Tasks woken before this iteration began (and cleanups deferred by leaf
                // futures); the loop is only reached through the current frame meanwhile.
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
        if let Some(now) = now {
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
                let started = call.lp.watch_start();
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
        // 4. Poll timeout.
        let remote_pending = self.remote.is_some_and(|r| r.len() > 0)
            || (self.signal_count > 0 && signal::any_pending(self.remote_wake))
            || self.executor.is_some_and(|e| e.any_ready());
        let timeout = if !self.callbacks.is_empty() || remote_pending {
            Some(Duration::ZERO)
        } else {
            self.timers.peek_deadline().map(|d| d - self.poller.now())
        };
        let timeout = match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        };
        // 5. Stopped (or closed by a callback): leave before polling.
        if self.stop_requested || self.closed {
            return Ok(false);
        }
        // 6. Poll. Tasks woken from other threads from here on must wake the poller: raise
        // `sleeping` first, then look at the ready flags once more (wakers do the opposite).
        let mut timeout = timeout;
        if let Some(exec) = self.executor {
            exec.set_sleeping(true);
            if exec.any_ready() {
                timeout = Some(Duration::ZERO);
            }
        }
        let waited = self.poller.wait(&mut self.events, timeout);
        if let Some(exec) = self.executor {
            exec.set_sleeping(false);
        }
        let n = match waited {
            Ok(n) => n.min(EVENTS_PER_POLL),
            Err(Errno::EINTR) => return Ok(true),
            Err(errno) => return Err(Error::Os { errno }),
        };
        // 7. Dispatch.
        for i in 0..n {
            if self.closed {
                break;
            }
            let ev = self.events[i];
            self.dispatch(ev);
        }
        Ok(true)
    }

    #[inline]
    fn dispatch(&mut self, ev: PollEvent) {
        let id = HandlerId::from_key(ev.key);
        if self.dispatch_io(id, ev.readiness) {
            return;
        }
        // The guard puts the closure back (or drops it if the handler removed itself), also
        // when a panic unwinds through here: no fd stays registered without its closure.
        let mut call = HandlerCall {
            lp: self,
            id,
            fd: -1,
            f: None,
        };
        let Some((fd, readiness)) = call.lp.handlers.take_into(id, ev.readiness, &mut call.f)
        else {
            call.put_back();
            core::mem::forget(call); // holds nothing any more
            return;
        };
        call.fd = fd;
        call.lp.counters.events_dispatched += 1;
        let source = Source::Handler { id, fd };
        let started = call.lp.watch_start();
        let mut outcome = Ok(Ok(()));
        if let Some(f) = call.f.as_mut() {
            let lp = &mut *call.lp;
            outcome = panic::catch(|| f.call(lp, (fd, readiness)));
        }
        let name = || call.f.as_ref().map_or("", |f| f.name());
        call.lp.watch_end(started, source, name);
        let name = outcome.is_err().then(name);
        call.put_back();
        core::mem::forget(call); // holds nothing any more
        match outcome {
            Ok(Ok(()) | Err(HandlerError::Os(Errno::EPIPE))) => {}
            Ok(Err(error)) => {
                self.counters.handler_errors += 1;
                self.report(Failure::Handler { id, fd, error });
            }
            Err(caught) => self.panicked(source, name.unwrap_or(""), caught),
        }
    }

    fn run_signal_handlers(&mut self, mask: u64) {
        for i in 0..MAX_SIGNAL_HANDLERS {
            let Some(slot) = self.signals[i].as_mut() else {
                continue;
            };
            let signo = slot.signo;
            if mask & (1 << signo) == 0 || self.closed {
                continue;
            }
            let Some(f) = slot.handler.take() else {
                continue;
            };
            let source = Source::Signal { signo };
            // The guard puts the closure back (unless the handler removed or replaced itself),
            // also when a panic unwinds through here.
            let mut call = SignalCall {
                lp: self,
                i,
                signo,
                f: Some(f),
            };
            let started = call.lp.watch_start();
            let mut outcome = Ok(());
            if let Some(f) = call.f.as_mut() {
                let lp = &mut *call.lp;
                outcome = panic::catch(|| f.call(lp, signo));
            }
            let name = || call.f.as_ref().map_or("", |f| f.name());
            call.lp.watch_end(started, source, name);
            let name = outcome.is_err().then(name);
            drop(call);
            if let (Err(caught), Some(name)) = (outcome, name) {
                self.panicked(source, name, caught);
            }
        }
    }

    /// Run `handler(loop, signo)` on the loop thread whenever signal `signo` arrives
    /// (Tornado's `signal.set_wakeup_fd` pattern, as loop events). `installer` puts the OS
    /// handler in place and later restores the previous disposition; the `ioloop` facade
    /// provides one (`ioloop::signals::SIGACTION`, or `ioloop::SignalExt::on_signal`).
    /// Several arrivals between two iterations run the handler once. Needs an attached
    /// [`Remote`]: the signal wakes the loop through it.
    ///
    /// Any number of loops, on any threads, may handle the same or different signals (up to
    /// [`MAX_SIGNAL_LOOPS`](crate::signal::MAX_SIGNAL_LOOPS) loops at once): every loop that
    /// registered `signo` gets each arrival, and removing it from one loop leaves it, and the
    /// process's handler, in place for the others. See [`crate::signal`] for the rules.
    ///
    /// # Errors
    /// The handler comes back inside [`Refused`] with [`Error::NoRemote`],
    /// [`Error::InvalidSignal`] (outside 1..=63 or already handled here),
    /// [`Error::Full`] with [`Resource::SignalHandlers`] (this loop's `MAX_SIGNAL_HANDLERS`
    /// are taken, or `MAX_SIGNAL_LOOPS` other loops already handle signals), [`Error::Os`]
    /// from the installer, or [`Error::Closed`] / [`Error::Forked`].
    pub fn add_signal_handler<F>(
        &mut self,
        signo: i32,
        installer: SignalInstaller,
        handler: F,
    ) -> Result<(), Refused<F>>
    where
        F: FnMut(&mut Self, i32) + 'static,
    {
        let refuse = |error, value| Err(Refused { error, value });
        if let Err(e) = self.usable() {
            return refuse(e, handler);
        }
        let Some(wake) = self.remote_wake else {
            return refuse(Error::NoRemote, handler);
        };
        if !(1..=63).contains(&signo) || self.signals.iter().flatten().any(|s| s.signo == signo) {
            return refuse(Error::InvalidSignal { signo }, handler);
        }
        let full = Error::Full {
            what: Resource::SignalHandlers,
        };
        let Some(free) = self.signals.iter().position(Option::is_none) else {
            return refuse(full, handler);
        };
        // The loop's first signal claims its registry entry; the entry is released when the
        // last one goes (here on failure, or in `remove_signal_handler` / close / drop).
        let Some(entry) = signal::claim(wake) else {
            return refuse(full, handler);
        };
        if let Err(errno) = (installer.install)(signo) {
            if self.signal_count == 0 {
                signal::release(entry);
            }
            return refuse(Error::Os { errno }, handler);
        }
        signal::want(entry, signo);
        let mut handler = handler;
        self.signals[free] = Some(SignalSlot {
            signo,
            handler: Some(InlineFn::named::<F, _>(move |lp: &mut Self, s| {
                handler(lp, s)
            })),
            restore: installer.restore,
            entry,
            released: false,
        });
        self.signal_count += 1;
        Ok(())
    }

    /// Remove the handler of `signo`. The process's disposition goes back to what it was
    /// before the first loop added `signo` only when no other loop handles it any more (tokio
    /// never restores it: tokio#7905); other loops keep receiving `signo`. Returns whether
    /// there was one. A handler may remove itself.
    pub fn remove_signal_handler(&mut self, signo: i32) -> bool {
        let Some(i) = self
            .signals
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.signo == signo))
        else {
            return false;
        };
        if let Some(slot) = self.signals[i].take() {
            signal::unwant(slot.entry, signo);
            (slot.restore)(signo);
            self.signal_count -= 1;
            if self.signal_count == 0 {
                signal::release(slot.entry);
            }
            if let Some(f) = slot.handler {
                self.release(f, Source::Signal { signo });
            }
        }
        true
    }

    /// Wake the tasks waiting on an async I/O registration. `false` if `id` is not one.
    #[inline]
    fn dispatch_io(&mut self, id: HandlerId, readiness: Readiness) -> bool {
        let Some(slot) = self.handlers.io_slot(id) else {
            return false;
        };
        let fd = slot.fd;
        let Some(io) = slot.io.as_mut() else {
            return false;
        };
        io.ready |= readiness;
        let trouble = readiness.intersects(Readiness::ERROR | Readiness::HUP);
        if readiness.contains(Readiness::READ) || trouble {
            if let Some(w) = io.read.take() {
                w.wake();
            }
        }
        if readiness.contains(Readiness::WRITE) || trouble {
            if let Some(w) = io.write.take() {
                w.wake();
            }
        }
        if !io.edge {
            // Level-triggered: watch only what someone waits for, or nothing at all after an
            // error or hang-up that would otherwise be reported at every poll.
            let mut want = Interest::empty();
            if io.read.is_some() {
                want |= Interest::READ;
            }
            if io.write.is_some() {
                want |= Interest::WRITE;
            }
            let want = want.registered();
            if trouble && want == Interest::ERROR {
                io.parked = true;
                slot.interest = want;
                let _ = self.poller.deregister(fd);
            } else if want != slot.interest {
                slot.interest = want;
                let _ = self.poller.modify(fd, id.key(), want, Mode::Level);
            }
        }
        self.counters.events_dispatched += 1;
        true
    }

    /// The clock before a call, only while a watchdog is set.
    #[inline(always)]
    fn watch_start(&self) -> Option<Instant> {
        self.watchdog.as_ref().map(|_| self.poller.now())
    }

    #[inline(always)]
    fn watch_end(
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
    fn watch_report(&mut self, started: Instant, source: Source, name: &'static str) {
        let duration = self.poller.now() - started;
        self.report_blocked(source, name, duration);
    }

    fn report_blocked(&mut self, source: Source, name: &'static str, duration: Duration) {
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
    fn release<A: ?Sized + 'static, X: 'static, R: 'static>(
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
    fn report(&mut self, failure: Failure) {
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

    /// Close the loop (Tornado's `close(all_fds=True)` for the fds it owns): every handler is
    /// removed, closing the fds handed over with `add_owned_handler` (borrowed fds are only
    /// deregistered), every signal disposition is restored, the [`Remote`] is closed
    /// ([`LoopHandle::add_callback`] returns [`Error::Closed`]), every task, timer and queued
    /// callback is dropped, and from now on `run`, `run_once` and every `add_*` return
    /// [`Error::Closed`] (closures handed back). Called from inside the loop, the loop leaves
    /// after the current step. Closing twice is a no-op. Dropping the loop does the same.
    ///
    /// The kernel-facing state goes first, then the closures one at a time: a capture whose
    /// drop panics is reported to the error hook (feature `std`) and the rest is still dropped
    /// (see the panic policy on [`EventLoop`]).
    pub fn close(&mut self) {
        self.teardown();
    }

    /// The one teardown of `close` and `Drop`. Idempotent: after a panic unwound out of it
    /// (without `std`), calling it again finishes the job.
    fn teardown(&mut self) {
        self.closed = true;
        // Without `std` a drop may unwind out of here: the guard finishes the teardown on the
        // way out (a second panic meanwhile aborts). With `std` every drop is caught.
        let resume = Resume(self);
        resume.0.release_kernel_state();
        if let Some(exec) = resume.0.executor {
            exec.drop_all(&mut *resume.0);
        }
        resume.0.drop_closures();
        core::mem::forget(resume);
    }

    /// Teardown, first step: nothing that could panic in user code runs before every signal
    /// disposition is restored and every fd deregistered (and closed if owned). The remote
    /// closes last: its queued closures are dropped inside `Remote::close`.
    fn release_kernel_state(&mut self) {
        // Each disposition restored and the loop's registry entry released exactly once, also
        // if teardown runs again (a released entry may already be another loop's).
        let mut entry = None;
        for slot in self.signals.iter_mut().flatten() {
            if slot.released {
                continue;
            }
            slot.released = true;
            signal::unwant(slot.entry, slot.signo);
            (slot.restore)(slot.signo);
            entry = Some(slot.entry);
        }
        if let Some(entry) = entry {
            signal::release(entry);
        }
        let poller = &mut self.poller;
        self.handlers.release_all(|slot| {
            let _ = poller.deregister(slot.fd);
            if slot.owned {
                // SAFETY: the loop owns this fd (`add_owned_handler*` took it out of an
                // `OwnedFd`); the slot is drained, so this is the one close.
                unsafe { poller.close_fd(slot.fd) };
            }
        });
        // `take`: once closed, the remote may serve another loop; this one must not close (or
        // pop from) that attachment later, e.g. in `drop`. `Remote::close` refuses producers,
        // releases the notifier and drops every queued closure, each exactly once, also when
        // one of their drops panics.
        if let Some(r) = self.remote.take() {
            if let Err(caught) = panic::catch(|| r.close()) {
                self.panicked(Source::Callback, "ioloop::Remote::close", caught);
            }
        }
        // The wake entry is the remote's: it may serve another loop from now on.
        self.remote_wake = None;
    }

    /// Teardown, second step: every closure the loop keeps, one at a time, each dropped under
    /// `catch` (feature `std`), so one panicking capture does not keep the others alive.
    fn drop_closures(&mut self) {
        let mut cursor = 0;
        while let Some((id, slot)) = self.handlers.take_next(&mut cursor) {
            if let Some(f) = slot.handler {
                self.release(f, Source::Handler { id, fd: slot.fd });
            }
        }
        // Every waiting timer, in heap order, when one may run user code as it is dropped.
        // That costs a heap pop each (about 70 ms for 10^5 timers, against 0.2 ms for
        // `clear`), so it is skipped when no timer closure ever had drop glue: then nothing
        // can panic. `clear` then frees the rest, and the slot of a timer running right now
        // (its closure is held by the call site, which drops it when `finish` finds no slot).
        if self.timer_drop_glue {
            while let Some((handle, f, _)) = self.timers.pop_due(Instant::MAX, u64::MAX) {
                if let Some(f) = self.timers.finish(handle, f, Next::Done) {
                    self.release(f, Source::Timer { handle });
                }
            }
            self.timer_drop_glue = false;
        }
        self.timers.clear();
        while let Some(cb) = self.callbacks.pop() {
            self.release(cb, Source::Callback);
        }
        for i in 0..MAX_SIGNAL_HANDLERS {
            if let Some(slot) = self.signals[i].take() {
                self.signal_count -= 1;
                if let Some(f) = slot.handler {
                    self.release(f, Source::Signal { signo: slot.signo });
                }
            }
        }
    }

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
        Ok(())
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
    #[cfg(feature = "alloc")]
    pub fn attach_owned_executor<const N: usize, const S: usize>(&mut self) -> Result<(), Error> {
        self.usable()?;
        let Some(wake) = self.remote_wake else {
            return Err(Error::NoRemote);
        };
        if self.executor.is_some() {
            return Err(Error::AlreadyAttached);
        }
        self.executor = Some(crate::executor::attach_pooled::<N, S>(wake));
        Ok(())
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
        if let Err(error) = self.usable() {
            return Err(Refused { error, value: fut });
        }
        let Some(exec) = self.executor else {
            return Err(Refused {
                error: Error::NotAttached,
                value: fut,
            });
        };
        // SAFETY: `&mut self` of a `!Send` loop: this is the thread the executor was attached
        // on (the attachment's epoch is checked by `reserve`).
        unsafe { exec.spawn(fut) }
    }

    /// Run the loop until `fut` completes and return its output (Tornado's `run_sync`). `fut`
    /// is polled on this stack (it need not be `'static` or fit a task slot); spawned tasks,
    /// handlers, timers and callbacks run meanwhile. As in Tornado (`add_callback(run)`, then
    /// `start()`), `fut` is first polled after the callbacks that were already queued, in the
    /// first iteration. `timeout` bounds the whole run.
    ///
    /// # Errors
    /// [`Error::TimedOut`] when `timeout` passed first; [`Error::Stopped`] when the loop was
    /// stopped first (also by a `stop()` pending before the call); [`Error::NotAttached`]
    /// without an executor; [`Error::AlreadyRunning`] inside the loop; the poller's error, as
    /// `run`. In every case — also when a panic unwinds through `run_sync` — `fut` is dropped
    /// in place before returning, with the loop current, so its sleeps and fd waits are
    /// cancelled.
    pub fn run_sync<F: Future>(
        &mut self,
        fut: F,
        timeout: Option<Duration>,
    ) -> Result<F::Output, Error> {
        let Some(exec) = self.executor else {
            return Err(Error::NotAttached);
        };
        if self.active {
            return Err(Error::AlreadyRunning);
        }
        self.usable()?;
        if self.stop_requested {
            self.stop_requested = false;
            return Err(Error::Stopped);
        }
        let header: &'static crate::executor::TaskHeader = exec.main_header();
        let waker: Waker = header.waker();
        // Poll it in the first iteration, after the callbacks already queued.
        waker.wake_by_ref();
        let deadline = timeout.map(|t| self.now() + t);
        self.active = true;
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

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Make `run` return after the current iteration's work (Tornado's `stop`): the rest of
    /// this iteration's events are dispatched, the next iteration's callbacks and due timers
    /// run, and the loop leaves before polling again. Called while the loop is not running, it
    /// makes the next `run` return at once.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Whether the loop is inside `run` or `run_once`.
    pub fn is_running(&self) -> bool {
        self.active
    }

    /// Call `hook` for every [`Failure`] inside the running loop (a handler's error, a caught
    /// panic) and go on. Without a hook, handler errors are logged (features `log` / `defmt`;
    /// otherwise dropped) and a caught panic unwinds on out of `run` (see the panic policy on
    /// [`EventLoop`]). The hook cannot reach the loop: queue work from a handler instead. A
    /// panic in the hook itself is not caught: it unwinds out of `run`.
    pub fn set_error_hook(&mut self, mut hook: impl FnMut(Failure) + 'static) {
        self.error_hook = Some(InlineFn::new(move |_: &mut (), f| hook(f)));
    }

    /// The loop's clock (the poller's).
    #[inline]
    pub fn now(&self) -> Instant {
        self.poller.now()
    }

    /// The poller.
    pub fn poller(&self) -> &P {
        &self.poller
    }

    /// The poller, mutably (tests drive the simulated poller through this).
    pub fn poller_mut(&mut self) -> &mut P {
        &mut self.poller
    }
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
        self.lp.active = false;
        self.lp.stop_requested = false;
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for EventLoop<P, H, T, Q>
{
    /// [`close`](EventLoop::close), then the error hook and the watchdog hook are dropped
    /// (a panic there is caught and dropped with `std`: there is no hook left to tell).
    fn drop(&mut self) {
        // Before the poller goes: no handle may write to a notifier whose reader is closed
        // (`teardown` closes the remote).
        self.teardown();
        let hooks = (self.error_hook.take(), self.watchdog.take());
        if panic::catch(move || drop(hooks)).is_err() {
            self.counters.panics += 1;
        }
    }
}

/// Inside `run` / `run_once`: the loop is marked running until this is dropped, also by a
/// panic unwinding out of an iteration, so the next `run` does not find it still running.
pub(crate) struct Running<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    pub(crate) lp: &'a mut EventLoop<P, H, T, Q>,
}

impl<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    Running<'a, P, H, T, Q>
{
    pub(crate) fn enter(lp: &'a mut EventLoop<P, H, T, Q>) -> Self {
        lp.active = true;
        Running { lp }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for Running<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.lp.active = false;
        self.lp.stop_requested = false;
    }
}

/// An fd handler's closure, out of its slot for the call; put back on drop.
struct HandlerCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    id: HandlerId,
    fd: RawFd,
    f: Option<HandlerFn<P, H, T, Q>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    HandlerCall<'_, P, H, T, Q>
{
    /// What `Drop` does. The normal way out calls it at the call site and forgets the guard,
    /// so the drop glue only serves the unwinding path.
    #[inline(always)]
    fn put_back(&mut self) {
        self.lp.handlers.restore_from(self.id, &mut self.f);
        // If the handler removed itself (or the loop was closed), its closure goes now.
        if let Some(f) = self.f.take() {
            let source = Source::Handler {
                id: self.id,
                fd: self.fd,
            };
            self.lp.release(f, source);
        }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for HandlerCall<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.put_back();
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

/// A signal handler's closure, out of its slot for the call; put back on drop unless the
/// handler removed or replaced itself.
struct SignalCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    i: usize,
    signo: i32,
    f: Option<InlineFn<EventLoop<P, H, T, Q>, i32, ()>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for SignalCall<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        let Some(f) = self.f.take() else { return };
        match self.lp.signals[self.i].as_mut() {
            Some(slot) if slot.signo == self.signo && slot.handler.is_none() => {
                slot.handler = Some(f);
            }
            _ => {
                let source = Source::Signal { signo: self.signo };
                self.lp.release(f, source);
            }
        }
    }
}

/// Finishes a teardown that a panicking drop interrupted (without `std`).
struct Resume<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    &'a mut EventLoop<P, H, T, Q>,
);

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for Resume<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.0.release_kernel_state();
        self.0.drop_closures();
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> LoopOps
    for EventLoop<P, H, T, Q>
{
    fn now(&self) -> Instant {
        self.poller.now()
    }

    fn wake_at(&mut self, deadline: Instant, waker: Waker) -> Result<TimerHandle, Error> {
        self.call_at(deadline, move |_| waker.wake())
            .map_err(|r| r.error)
    }

    fn cancel_timer(&mut self, h: TimerHandle) {
        self.remove_timeout(h);
    }

    fn timer_pending(&self, h: TimerHandle) -> bool {
        self.timeout_pending(h)
    }

    fn watch_once(&mut self, fd: RawFd, want: Readiness, waker: Waker) -> Result<HandlerId, Error> {
        let interest = if want.contains(Readiness::WRITE) {
            Interest::WRITE
        } else {
            Interest::READ
        };
        self.add_handler(fd, interest, move |lp, fd, _| {
            waker.wake_by_ref();
            lp.remove_handler(fd);
            Ok(())
        })
        .map_err(|r| r.error)
    }

    fn watching(&self, fd: RawFd, id: HandlerId) -> bool {
        self.handler_id(fd) == Some(id)
    }

    fn unwatch(&mut self, fd: RawFd, id: HandlerId) {
        if self.handler_id(fd) == Some(id) {
            self.remove_handler(fd);
        }
    }

    fn io_register(&mut self, fd: RawFd) -> Result<HandlerId, Error> {
        self.usable()?;
        if fd < 0 {
            return Err(Error::InvalidFd { fd });
        }
        // An I/O registration already on this fd number belongs to an fd that was closed
        // without deregistering (its owner was dropped outside a task): the number can only
        // be reused after a close, so the old registration is stale. Replace it.
        if self
            .handlers
            .lookup(fd)
            .is_some_and(|(_, slot)| slot.io.is_some())
        {
            self.remove_handler(fd);
        }
        let edge = self.poller.capabilities().supports(Mode::Edge);
        let (interest, mode) = if edge {
            ((Interest::READ | Interest::WRITE).registered(), Mode::Edge)
        } else {
            (Interest::ERROR, Mode::Level)
        };
        let id = match self.handlers.reserve(fd, interest, false) {
            Ok(id) => id,
            Err(InsertError::Duplicate) => return Err(Error::AlreadyRegistered { fd }),
            Err(InsertError::Full) => {
                return Err(Error::Full {
                    what: Resource::Handlers,
                })
            }
        };
        if let Err(e) = self.poller.register(fd, id.key(), interest, mode) {
            self.handlers.remove_id(id);
            return Err(e);
        }
        self.handlers.set_io(id, edge);
        Ok(id)
    }

    fn io_poll(
        &mut self,
        fd: RawFd,
        id: HandlerId,
        dir: Interest,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Readiness, Error>> {
        let Some(slot) = self.handlers.io_slot(id) else {
            return Poll::Ready(Err(Error::NotRegistered { fd }));
        };
        let Some(io) = slot.io.as_mut() else {
            return Poll::Ready(Err(Error::NotRegistered { fd }));
        };
        let want = Readiness::from_bits_truncate(dir.bits()) & (Readiness::READ | Readiness::WRITE);
        let seen = io.ready & (want | Readiness::ERROR | Readiness::HUP);
        if !seen.is_empty() {
            io.ready.remove(want);
            return Poll::Ready(Ok(seen));
        }
        let waiter = if want.contains(Readiness::WRITE) {
            &mut io.write
        } else {
            &mut io.read
        };
        if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waiter = Some(cx.waker().clone());
        }
        if !io.edge && !io.parked {
            let interest = slot.interest | dir | Interest::ERROR;
            if interest != slot.interest {
                if let Err(e) = self.poller.modify(fd, id.key(), interest, Mode::Level) {
                    return Poll::Ready(Err(e));
                }
                slot.interest = interest;
            }
        }
        Poll::Pending
    }

    fn io_deregister(&mut self, fd: RawFd, id: HandlerId) {
        if self.handler_id(fd) == Some(id) {
            self.remove_handler(fd);
        }
    }

    fn task_panicked(
        &mut self,
        id: crate::executor::TaskId,
        name: &'static str,
        caught: panic::Caught,
    ) {
        self.panicked(Source::Task { id }, name, caught);
    }

    fn loop_type(&self) -> core::any::TypeId {
        core::any::TypeId::of::<Self>()
    }

    fn as_untyped(&mut self) -> *mut () {
        self as *mut Self as *mut ()
    }
}

/// Loop-level tests inside the crate, so that Miri (which runs only this crate's tests) checks
/// the in-place constructor and the take-call-restore path of handlers and timers.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use std::boxed::Box;
    use std::cell::Cell;
    use std::rc::Rc;

    type Lp = EventLoop<SimPoller<8>, 4, 8, 4>;

    #[test]
    fn built_in_place_it_runs_handlers_timers_and_callbacks() {
        let mut mem = Box::new(MaybeUninit::<Lp>::uninit());
        let lp = Lp::init_in(&mut mem, SimPoller::new());
        let hits = Rc::new(Cell::new(0u32));
        let h = hits.clone();
        lp.add_handler(3, Interest::READ, move |lp, fd, _| {
            h.set(h.get() + 1);
            lp.poller_mut().clear_ready(fd);
            let h2 = h.clone();
            lp.add_callback(move |_| h2.set(h2.get() + 10))
                .map_err(|_| HandlerError::Other("full"))
        })
        .map_err(|r| r.error)
        .unwrap();
        let h = hits.clone();
        lp.call_later(Duration::from_millis(1), move |lp| {
            h.set(h.get() + 100);
            lp.poller_mut().set_ready(3, Readiness::READ);
        })
        .map_err(|r| r.error)
        .unwrap();
        let h = hits.clone();
        let p = lp
            .add_periodic(Periodic::every(Duration::from_millis(2)), move |_| {
                h.set(h.get() + 1000)
            })
            .map_err(|r| r.error)
            .unwrap();
        for _ in 0..6 {
            lp.run_once(Some(Duration::from_millis(1))).unwrap();
        }
        assert!(lp.remove_timeout(p));
        assert_eq!(
            hits.get() % 1000,
            111,
            "timer, handler and its callback each ran once"
        );
        assert!(
            hits.get() >= 2000,
            "the periodic callback ran: {}",
            hits.get()
        );
        // SAFETY: `init_in` initialised the loop; drop it before the box frees the memory.
        unsafe { mem.assume_init_drop() };
    }

    #[test]
    fn handler_that_removes_and_readds_its_own_fd_keeps_only_the_new_closure() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let rc = Rc::new(());
        let held = rc.clone();
        lp.add_handler(5, Interest::READ, move |lp, fd, _| {
            let _keep = &held;
            lp.remove_handler(fd);
            lp.add_handler(fd, Interest::READ, |lp, fd, _| {
                lp.poller_mut().clear_ready(fd);
                Ok(())
            })
            .map_err(|_| HandlerError::Other("re-add"))?;
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(5, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            Rc::strong_count(&rc),
            1,
            "the removed handler was dropped after its call"
        );
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.handler_count(), 1);
    }

    #[test]
    fn dropping_a_loop_with_everything_pending_releases_every_capture() {
        let rc = Rc::new(());
        {
            let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
            let c = rc.clone();
            lp.add_handler(1, Interest::READ, move |_, _, _| {
                let _ = &c;
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
            let c = rc.clone();
            lp.call_later(Duration::from_secs(1), move |_| drop(c))
                .map_err(|r| r.error)
                .unwrap();
            let c = rc.clone();
            lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |_| {
                let _ = &c;
            })
            .map_err(|r| r.error)
            .unwrap();
            let c = rc.clone();
            lp.add_callback(move |_| drop(c))
                .map_err(|r| r.error)
                .unwrap();
            lp.set_error_hook({
                let c = rc.clone();
                move |_| {
                    let _ = &c;
                }
            });
            assert_eq!(Rc::strong_count(&rc), 6);
        }
        assert_eq!(Rc::strong_count(&rc), 1);
    }

    // -------------------------------------------------------------------------------------
    // Panics in user closures (DESIGN.md §6). Test builds catch as with `std`;
    // `panic::testing::without_catching` lets the panic unwind, as without `std`.
    // -------------------------------------------------------------------------------------

    use crate::panic::testing::without_catching;
    use crate::remote::Remote;
    use std::cell::RefCell;
    use std::vec::Vec;

    /// Counts its drops.
    struct Counted(Rc<Cell<u32>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// Panics when dropped (not while unwinding: that would abort).
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("drop failed");
            }
        }
    }

    fn record_failures(lp: &mut Lp) -> Rc<RefCell<Vec<Failure>>> {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        lp.set_error_hook(move |f| s.borrow_mut().push(f));
        seen
    }

    fn unwinds(f: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
    }

    fn run_unwinds(lp: &mut Lp, timeout: Option<Duration>) -> bool {
        unwinds(|| {
            let _ = lp.run_once(timeout);
        })
    }

    #[test]
    fn caught_panic_in_a_callback_is_reported_and_the_loop_runs_again() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let seen = record_failures(&mut lp);
        let drops = Rc::new(Cell::new(0));
        let c = Counted(drops.clone());
        lp.add_callback(move |_| {
            let _c = c;
            panic!("callback boom")
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(drops.get(), 1, "captures dropped once, by the unwinding");
        assert_eq!(lp.counters().panics, 1);
        let seen = seen.borrow();
        let Failure::Panicked {
            source,
            name,
            message,
        } = seen[0]
        else {
            panic!("{:?}", seen[0])
        };
        assert_eq!(source, Source::Callback);
        assert!(name.contains("caught_panic_in_a_callback"), "{name}");
        assert_eq!(message.as_str(), "callback boom");
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        lp.add_callback(move |_| r.set(true))
            .map_err(|r| r.error)
            .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert!(ran.get());
    }

    #[test]
    fn caught_panic_in_a_handler_keeps_it_registered_with_its_closure() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let seen = record_failures(&mut lp);
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let id = lp
            .add_handler(3, Interest::READ, move |lp, fd, _| {
                c.set(c.get() + 1);
                if c.get() == 1 {
                    panic!("handler boom");
                }
                lp.poller_mut().clear_ready(fd);
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            seen.borrow()[0],
            Failure::Panicked {
                source: Source::Handler { id, fd: 3 },
                name: seen.borrow()[0].panicked_name(),
                message: PanicMessage::new("handler boom"),
            }
        );
        assert_eq!(lp.handler_id(3), Some(id), "still registered");
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 2, "the next event reaches the same closure");
        assert!(lp.remove_handler(3));
        assert!(lp.poller().interest(3).is_none(), "deregistered");
    }

    impl Failure {
        fn panicked_name(&self) -> &'static str {
            match self {
                Failure::Panicked { name, .. } => name,
                _ => "",
            }
        }
    }

    #[test]
    fn caught_panic_in_a_timer_frees_its_slot() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let _seen = record_failures(&mut lp);
        let drops = Rc::new(Cell::new(0));
        for _ in 0..8 {
            let c = Counted(drops.clone());
            lp.call_later(Duration::from_millis(1), move |_| {
                let _c = c;
                panic!("timer boom")
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        lp.run_once(Some(Duration::from_millis(1))).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.counters().panics, 8);
        assert_eq!(lp.timer_count(), 0);
        assert_eq!(drops.get(), 8);
        for _ in 0..8 {
            lp.call_later(Duration::from_millis(1), |_| {})
                .map_err(|r| r.error)
                .unwrap();
        }
    }

    #[test]
    fn caught_panic_in_a_periodic_callback_keeps_it_on_its_grid() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let seen = record_failures(&mut lp);
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let h = lp
            .add_periodic(Periodic::every(Duration::from_millis(10)), move |_| {
                c.set(c.get() + 1);
                panic!("tick boom")
            })
            .map_err(|r| r.error)
            .unwrap();
        // The first iteration only sleeps until the first tick.
        for _ in 0..4 {
            lp.run_once(None).unwrap();
        }
        assert_eq!(calls.get(), 3, "re-armed after each panic");
        assert_eq!(lp.now().as_nanos(), 40_000_000, "on its grid");
        assert!(matches!(
            seen.borrow()[2],
            Failure::Panicked { source: Source::Timer { handle }, .. } if handle == h
        ));
        assert!(lp.remove_timeout(h));
        assert_eq!(lp.timer_count(), 0);
    }

    #[test]
    fn without_an_error_hook_a_caught_panic_unwinds_on_with_the_loop_put_right() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let p = lp
            .add_periodic(Periodic::every(Duration::from_millis(10)), move |_| {
                c.set(c.get() + 1);
                panic!("tick boom")
            })
            .map_err(|r| r.error)
            .unwrap();
        lp.add_handler(3, Interest::READ, |_, _, _| panic!("handler boom"))
            .map_err(|r| r.error)
            .unwrap();
        lp.run_once(None).unwrap(); // sleeps until the first tick
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)), "tick panics");
        assert!(lp.timeout_pending(p), "re-armed before unwinding on");
        assert!(!lp.is_running());
        lp.poller_mut().set_ready(3, Readiness::READ);
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)), "handler panics");
        assert!(lp.handler_id(3).is_some());
        assert!(lp.remove_handler(3));
        lp.run_once(None).unwrap(); // sleeps until the next tick
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        assert_eq!((calls.get(), lp.counters().panics), (2, 3));
    }

    #[test]
    fn uncaught_panic_in_a_handler_leaves_the_loop_runnable_with_the_closure_restored() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        lp.add_handler(3, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                panic!("handler boom");
            }
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        {
            let _unwind = without_catching();
            assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        }
        assert!(!lp.is_running());
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 2, "closure back in its slot");
        assert_eq!(lp.counters().panics, 0, "nothing was caught");
    }

    #[test]
    fn uncaught_panic_in_timers_and_callbacks_frees_their_slots() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let drops = Rc::new(Cell::new(0));
        let _unwind = without_catching();
        for _ in 0..8 {
            let c = Counted(drops.clone());
            lp.call_later(Duration::from_millis(1), move |_| {
                let _c = c;
                panic!("timer boom")
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        let c = Counted(drops.clone());
        lp.add_periodic(Periodic::every(Duration::from_millis(1)), move |_| {
            let _c = &c;
            panic!("tick boom")
        })
        .map_err(|_| ())
        .unwrap_err(); // the heap is full: the periodic is refused, and handed back
        assert_eq!(drops.get(), 1);
        let mut panics = 0;
        while lp.timer_count() > 0 {
            if run_unwinds(&mut lp, Some(Duration::from_millis(1))) {
                panics += 1;
            }
            assert!(panics <= 8, "no timer ran twice");
        }
        assert_eq!(panics, 8);
        assert_eq!(drops.get(), 9);
        let c = Counted(drops.clone());
        let p = lp
            .add_periodic(Periodic::every(Duration::from_millis(1)), move |_| {
                let _c = &c;
                panic!("tick boom")
            })
            .map_err(|r| r.error)
            .unwrap();
        let mut unwound = 0;
        for _ in 0..2 {
            unwound += u32::from(run_unwinds(&mut lp, None));
        }
        assert_eq!(unwound, 1);
        assert!(!lp.timeout_pending(p), "an uncaught panic stops a periodic");
        assert_eq!(drops.get(), 10);
        let c = Counted(drops.clone());
        lp.add_callback(move |_| {
            let _c = c;
            panic!("cb boom")
        })
        .map_err(|r| r.error)
        .unwrap();
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        assert_eq!(drops.get(), 11);
        assert_eq!(lp.callback_count(), 0);
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }

    #[test]
    fn panic_in_the_error_hook_unwinds_once_and_leaves_the_loop_runnable() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let hook_calls = Rc::new(Cell::new(0));
        let h = hook_calls.clone();
        lp.set_error_hook(move |_| {
            h.set(h.get() + 1);
            panic!("hook boom");
        });
        lp.add_handler(3, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            panic!("handler boom")
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        assert_eq!(hook_calls.get(), 1, "no recursion through the hook");
        assert!(!lp.is_running());
        assert!(lp.handler_id(3).is_some());
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }

    #[test]
    fn panic_in_the_watchdog_hook_still_puts_the_handler_back() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.set_watchdog(Duration::ZERO, |_| panic!("watchdog boom"));
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        lp.add_handler(3, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        lp.clear_watchdog();
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 2, "the closure went back to its slot");
    }

    #[test]
    fn panicking_signal_handler_stays_registered_caught_or_not() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        const SIGNO: i32 = 42;
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        let seen = record_failures(&mut lp);
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        lp.add_signal_handler(SIGNO, fake_installer(), move |_, _| {
            c.set(c.get() + 1);
            panic!("signal boom")
        })
        .map_err(|r| r.error)
        .unwrap();
        crate::signal::deliver(SIGNO);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(seen.borrow().len(), 1);
        {
            let _unwind = without_catching();
            crate::signal::deliver(SIGNO);
            assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
        }
        crate::signal::deliver(SIGNO);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 3);
        assert!(lp.remove_signal_handler(SIGNO));
    }

    static INSTALLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static RESTORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn fake_installer() -> crate::SignalInstaller {
        use std::sync::atomic::Ordering::SeqCst;
        crate::SignalInstaller {
            install: |s| {
                INSTALLED.fetch_or(1u64 << s, SeqCst);
                Ok(())
            },
            restore: |s| {
                RESTORED.fetch_or(1u64 << s, SeqCst);
            },
        }
    }

    /// A loop holding two handlers (one on an owned fd), a timer, a periodic callback, a
    /// callback and a signal handler, each with a counted capture; the callback's capture
    /// panics when dropped, and with `more_panics` the second handler's and the periodic's.
    fn loaded_loop(
        remote: &'static Remote<Lp, 4>,
        drops: &Rc<Cell<u32>>,
        signo: i32,
        more_panics: bool,
    ) -> (Lp, crate::LoopHandle<Lp, 4>) {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let handle = lp.attach_remote(remote).unwrap();
        let c = Counted(drops.clone());
        lp.register_then(4, Interest::READ, true, (), |()| {
            InlineFn::new(move |_: &mut Lp, _| {
                let _ = &c;
                Ok(())
            })
        })
        .map_err(|r| r.error)
        .unwrap();
        let (c, p) = (
            Counted(drops.clone()),
            if more_panics { Some(PanicOnDrop) } else { None },
        );
        lp.add_handler(5, Interest::READ, move |_, _, _| {
            let _ = (&c, &p);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        let c = Counted(drops.clone());
        lp.call_later(Duration::from_secs(1), move |_| drop(c))
            .map_err(|r| r.error)
            .unwrap();
        let (c, p) = (
            Counted(drops.clone()),
            if more_panics { Some(PanicOnDrop) } else { None },
        );
        lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |_| {
            let _ = (&c, &p);
        })
        .map_err(|r| r.error)
        .unwrap();
        let (c, p) = (Counted(drops.clone()), PanicOnDrop);
        lp.add_callback(move |_| drop((c, p)))
            .map_err(|r| r.error)
            .unwrap();
        let c = Counted(drops.clone());
        lp.add_signal_handler(signo, fake_installer(), move |_, _| {
            let _ = &c;
        })
        .map_err(|r| r.error)
        .unwrap();
        (lp, handle)
    }

    #[test]
    fn panicking_captures_at_close_are_reported_and_everything_else_released() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        let drops = Rc::new(Cell::new(0));
        let (mut lp, handle) = loaded_loop(&REMOTE, &drops, 40, true);
        let seen = record_failures(&mut lp);
        lp.close();
        assert_eq!(drops.get(), 6, "every counted capture dropped once");
        assert_eq!(lp.counters().panics, 3);
        assert_eq!(seen.borrow().len(), 3);
        assert!(lp.poller().interest(4).is_none() && lp.poller().interest(5).is_none());
        assert_eq!(lp.poller().closed_by_loop(), &[4]);
        assert_ne!(
            RESTORED.load(std::sync::atomic::Ordering::SeqCst) & (1u64 << 40),
            0
        );
        assert!(matches!(
            handle.add_callback(|_| {}),
            Err(Refused {
                error: Error::Closed,
                ..
            })
        ));
        assert_eq!(
            (lp.handler_count(), lp.timer_count(), lp.callback_count()),
            (0, 0, 0)
        );
        drop(lp);
        assert_eq!(drops.get(), 6, "nothing dropped twice");
    }

    #[test]
    fn uncaught_panic_while_dropping_the_loop_still_finishes_the_teardown() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        let drops = Rc::new(Cell::new(0));
        // One panicking capture only: a second panic while unwinding aborts.
        let (lp, handle) = loaded_loop(&REMOTE, &drops, 41, false);
        let _unwind = without_catching();
        assert!(unwinds(move || drop(lp)));
        assert_eq!(drops.get(), 6);
        assert_ne!(
            RESTORED.load(std::sync::atomic::Ordering::SeqCst) & (1u64 << 41),
            0
        );
        assert!(handle.add_callback(|_| {}).is_err());
    }
}
