//! The loop a future is being polled by (Tornado's `IOLoop.current()`), for leaf futures
//! (`sleep`, `readable`, …) that need to schedule timers or watch fds.
//!
//! The executor sets it for the duration of each poll (and `run_sync` for its own future); it
//! is a type-erased `*mut dyn LoopOps` derived from the `&mut EventLoop` the executor holds,
//! which the executor does not touch while the future runs. With `std` it is thread-local, so
//! loops on several threads (one per core) never see each other's; without `std` it is one
//! global (bare-metal targets run one loop).

use core::task::Waker;

use crate::error::{Error, RawFd};
use crate::handler_table::HandlerId;
use crate::interest::{Interest, Readiness};
use crate::time::Instant;
use crate::timer_heap::TimerHandle;

/// What leaf futures need from the loop, object-safe so the pointer can be type-erased.
pub(crate) trait LoopOps {
    fn now(&self) -> Instant;
    /// Wake `waker` at `deadline`.
    fn wake_at(&mut self, deadline: Instant, waker: Waker) -> Result<TimerHandle, Error>;
    fn cancel_timer(&mut self, h: TimerHandle);
    fn timer_pending(&self, h: TimerHandle) -> bool;
    /// Register a one-shot handler for `fd` that wakes `waker` when `want` (or an error) is
    /// ready and then removes itself.
    fn watch_once(&mut self, fd: RawFd, want: Readiness, waker: Waker) -> Result<HandlerId, Error>;
    /// Whether the one-shot handler `id` of `fd` is still waiting.
    fn watching(&self, fd: RawFd, id: HandlerId) -> bool;
    /// Remove the one-shot handler `id` of `fd` if it is still there.
    fn unwatch(&mut self, fd: RawFd, id: HandlerId);
    /// Register `fd` persistently for async I/O (see `crate::io`).
    fn io_register(&mut self, fd: RawFd) -> Result<HandlerId, Error>;
    /// Consume `dir` readiness of registration `id`, or store the task's waker for it.
    fn io_poll(
        &mut self,
        fd: RawFd,
        id: HandlerId,
        dir: Interest,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Result<Readiness, Error>>;
    /// Remove registration `id` of `fd` if it is still there.
    fn io_deregister(&mut self, fd: RawFd, id: HandlerId);
    /// The concrete loop type, for [`with_current_loop`].
    fn loop_type(&self) -> core::any::TypeId;
    /// `self` as an untyped pointer, for [`with_current_loop`].
    fn as_untyped(&mut self) -> *mut ();
}

/// A scope in which the current loop is set; restores the previous one when dropped.
pub(crate) struct Entered {
    prev: Option<*mut dyn LoopOps>,
}

#[cfg(feature = "std")]
mod slot {
    use super::LoopOps;
    use core::cell::Cell;
    std::thread_local! {
        static CURRENT: Cell<Option<*mut dyn LoopOps>> = const { Cell::new(None) };
    }
    pub(super) fn get() -> Option<*mut dyn LoopOps> {
        CURRENT.with(Cell::get)
    }
    pub(super) fn set(v: Option<*mut dyn LoopOps>) {
        CURRENT.with(|c| c.set(v))
    }
}

#[cfg(not(feature = "std"))]
mod slot {
    use super::LoopOps;
    use core::cell::Cell;
    struct Global(Cell<Option<*mut dyn LoopOps>>);
    // SAFETY: without `std` the crate serves one loop on one thread (bare metal); the slot is
    // only touched by that thread's executor.
    unsafe impl Sync for Global {}
    static CURRENT: Global = Global(Cell::new(None));
    pub(super) fn get() -> Option<*mut dyn LoopOps> {
        CURRENT.0.get()
    }
    pub(super) fn set(v: Option<*mut dyn LoopOps>) {
        CURRENT.0.set(v)
    }
}

/// Make `lp` the current loop until the returned guard is dropped.
///
/// The caller must not use `lp` (the `&mut` it came from) while the guard lives, except through
/// [`with_loop`].
pub(crate) fn enter(lp: *mut dyn LoopOps) -> Entered {
    let prev = slot::get();
    slot::set(Some(lp));
    Entered { prev }
}

impl Drop for Entered {
    fn drop(&mut self) {
        slot::set(self.prev);
    }
}

/// Run `f` with the current loop, or return `None` outside of a loop's poll.
pub(crate) fn with_loop<R>(f: impl FnOnce(&mut dyn LoopOps) -> R) -> Option<R> {
    let ptr = slot::get()?;
    // SAFETY: `enter` stored a pointer derived from the executor's `&mut EventLoop`, which the
    // executor does not use while the guard lives; the loop is single-threaded (the slot is
    // thread-local with std) and `with_loop` calls do not nest (leaf futures do not poll other
    // futures inside `f`), so this is the only live reference.
    let lp = unsafe { &mut *ptr };
    Some(f(lp))
}

/// Run `f` with the loop that is polling the current task, if it is an `L`: the way for a task
/// to add handlers, timers or callbacks to its own loop (Tornado's `IOLoop.current()`).
/// `None` outside a task / `run_sync`, or if the loop is not an `L`.
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{with_current_loop, EventLoop, Executor, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 16> = Remote::new();
/// static EXEC: Executor<4> = Executor::new();
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE).unwrap();
/// lp.attach_executor(&EXEC).unwrap();
/// let n = lp.run_sync(async { with_current_loop(|lp: &mut Lp| lp.timer_count()) }, None).unwrap();
/// assert_eq!(n, Some(0));
/// assert_eq!(with_current_loop(|lp: &mut Lp| lp.timer_count()), None);
/// ```
pub fn with_current_loop<L: 'static, R>(f: impl FnOnce(&mut L) -> R) -> Option<R> {
    with_loop(|ops| {
        if ops.loop_type() != core::any::TypeId::of::<L>() {
            return None;
        }
        // SAFETY: the type id says the erased loop is an `L`; the reference is the only live
        // one for the duration of `f` (see `with_loop`).
        let lp = unsafe { &mut *ops.as_untyped().cast::<L>() };
        Some(f(lp))
    })
    .flatten()
}

/// Whether this thread is inside a loop's poll.
pub(crate) fn in_loop() -> bool {
    slot::get().is_some()
}
