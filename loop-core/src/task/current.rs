//! The loop a future is being polled by (Tornado's `IOLoop.current()`), for leaf futures
//! (`sleep`, `readable`, …) that need to schedule timers or watch fds.
//!
//! The executor sets it for the duration of each poll (and `run_sync` for its own future, and
//! `close`/`drop` while tasks are dropped): a *frame* holding a type-erased `*mut dyn LoopOps`
//! derived from the `&mut EventLoop` the executor holds (which it does not touch while the
//! frame is set) and the loop's identity (its executor and attach epoch, [`ExecRef`]).
//!
//! **One `&mut` at a time.** [`with_loop`] *takes* the pointer out of the frame while its
//! closure runs (the slot says "busy"), and puts it back afterwards, also when the closure
//! unwinds. A nested call — written by hand, or made by the `Drop` of a `Sleep`, `Ready` or
//! `IoRegistration` dropped inside the closure — finds no loop and returns `None`. Those
//! `Drop`s then *defer* their cleanup (cancel a timer, remove a one-shot watch, deregister an
//! fd): they push it on the owning executor's deferred queue, which the outermost `with_loop`
//! applies as soon as its closure returns, and the loop applies every iteration (and before
//! it drops its tasks on close). A drop on another thread, or while another loop of the same
//! thread is current, defers the same way, so no loop's tables are ever touched from outside
//! its own frame. The queue is bounded ([`DEFERRED`] entries); if it is full, the cleanup
//! falls back to what happens anyway: a cancelled sleep's timer fires once at its deadline
//! (waking nobody who cares) and frees itself, a one-shot watch frees itself when the fd is
//! ready, an I/O registration is replaced when its fd number is registered again, and
//! everything is freed when the loop closes.
//!
//! **Threads.** With `std` the slot is thread-local, so loops on several threads never see
//! each other's. Without `std` there are no thread-locals: the slot is one global, guarded by
//! the [`critical-section`](https://docs.rs/critical-section) crate, and **the critical
//! section is held for the whole of each poll** (a task's, `run_sync`'s future's, and the
//! drops on close). So no interrupt handler and no other core can run while a frame is set:
//! outside a poll they find the slot empty (and `with_current_loop`, `Executor::spawn`
//! refuse), inside one there is no one else. The price is interrupt latency: interrupts wait
//! for the longest task poll; keep polls short (they must be anyway, the loop is
//! cooperative). The application links a critical-section implementation (for example
//! cortex-m's `critical-section-single-core`); with `std` nothing is needed.

use core::task::Waker;

use crate::error::{Error, RawFd};
use crate::interest::{Interest, Readiness};
use crate::tables::handler_table::HandlerId;
use crate::tables::timer_heap::TimerHandle;
use crate::task::executor::ExecRef;
use crate::time::Instant;

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
    /// Remove the one-shot handler or I/O registration `id` of `fd` if it is still there.
    fn unwatch(&mut self, fd: RawFd, id: HandlerId);
    /// Register `fd` persistently for async I/O (see `crate::task::io`).
    fn io_register(&mut self, fd: RawFd) -> Result<HandlerId, Error>;
    /// Consume `dir` readiness of registration `id`, or store the task's waker for it.
    fn io_poll(
        &mut self,
        fd: RawFd,
        id: HandlerId,
        dir: Interest,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Result<Readiness, Error>>;
    /// A task's poll panicked and the panic was caught (feature `std`): report it as the
    /// loop's panic policy says (`Failure::Panicked` with `Source::Task`, or unwind on).
    fn task_panicked(
        &mut self,
        id: crate::task::executor::TaskId,
        name: &'static str,
        caught: crate::panic::Caught,
    );
    /// The concrete loop type, for [`with_current_loop`].
    fn loop_type(&self) -> core::any::TypeId;
    /// `self` as an untyped pointer, for [`with_current_loop`].
    fn as_untyped(&mut self) -> *mut ();
}

/// Cleanup a leaf future's `Drop` could not do at once (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deferred {
    CancelTimer(TimerHandle),
    Unwatch(RawFd, HandlerId),
}

/// How many deferred cleanups one executor holds before falling back (module docs).
pub(crate) const DEFERRED: usize = 64;

impl Deferred {
    pub(crate) fn apply(self, lp: &mut dyn LoopOps) {
        match self {
            Deferred::CancelTimer(h) => lp.cancel_timer(h),
            Deferred::Unwatch(fd, id) => lp.unwatch(fd, id),
        }
    }
}

/// A loop set current: the erased pointer and whose it is.
#[derive(Clone, Copy)]
struct Frame {
    lp: *mut dyn LoopOps,
    owner: ExecRef,
}

#[derive(Clone, Copy)]
enum Slot {
    Empty,
    /// A loop is current and reachable.
    Ready(Frame),
    /// A loop is current but its `&mut` is out (inside `with_loop`).
    Busy(ExecRef),
}

#[cfg(feature = "std")]
mod slot {
    use super::Slot;
    use core::cell::Cell;
    std::thread_local! {
        static CURRENT: Cell<Slot> = const { Cell::new(Slot::Empty) };
    }
    pub(super) fn get() -> Slot {
        CURRENT.with(Cell::get)
    }
    pub(super) fn set(v: Slot) {
        CURRENT.with(|c| c.set(v))
    }
    /// Held for the whole time a frame is set (nothing with `std`: the slot is per thread).
    pub(super) struct Hold;
    pub(super) fn hold() -> Hold {
        Hold
    }
}

#[cfg(not(feature = "std"))]
mod slot {
    use super::Slot;
    use core::cell::Cell;
    struct Global(critical_section::Mutex<Cell<Slot>>);
    // SAFETY: the slot is only read or written inside a critical section (`Mutex::borrow`
    // needs a `CriticalSection` token), and a frame is only set while `Hold` keeps the
    // critical section held, so no other context can observe or use a set frame. The raw
    // pointer it holds is only dereferenced by the context that set it (see `with_loop`).
    unsafe impl Sync for Global {}
    static CURRENT: Global = Global(critical_section::Mutex::new(Cell::new(Slot::Empty)));
    pub(super) fn get() -> Slot {
        critical_section::with(|cs| CURRENT.0.borrow(cs).get())
    }
    pub(super) fn set(v: Slot) {
        critical_section::with(|cs| CURRENT.0.borrow(cs).set(v))
    }
    /// The critical section, held for the whole time a frame is set.
    pub(super) struct Hold(critical_section::RestoreState);
    pub(super) fn hold() -> Hold {
        // SAFETY: released exactly once, by `Hold::drop`, and `Hold`s are dropped in the
        // reverse order of their creation (they live in `Entered` guards on the stack).
        Hold(unsafe { critical_section::acquire() })
    }
    impl Drop for Hold {
        fn drop(&mut self) {
            // SAFETY: the state `acquire` returned, released once, in LIFO order.
            unsafe { critical_section::release(self.0) }
        }
    }
}

/// A scope in which a loop is current; restores the previous slot when dropped.
pub(crate) struct Entered {
    prev: Slot,
    // Dropped after the slot is restored (field drops run after `Drop::drop`).
    _hold: slot::Hold,
}

/// Make `lp` (owned by `owner`) the current loop until the returned guard is dropped.
///
/// # Safety
/// `lp` must point to a live loop that stays valid (not moved, not dropped) while the guard
/// lives, and the caller must not use the loop (the `&mut` it was derived from) while the
/// guard lives, except through [`with_loop`]: the pointer is dereferenced by every
/// `with_loop` call in that time. Guards must be dropped in the reverse order of creation
/// (keep them on the stack).
pub(crate) unsafe fn enter(lp: *mut dyn LoopOps, owner: ExecRef) -> Entered {
    let hold = slot::hold();
    let prev = slot::get();
    slot::set(Slot::Ready(Frame { lp, owner }));
    Entered { prev, _hold: hold }
}

impl Drop for Entered {
    fn drop(&mut self) {
        slot::set(self.prev);
    }
}

/// Puts the frame back when `with_loop`'s closure returns or unwinds.
struct Restore(Frame);

impl Drop for Restore {
    fn drop(&mut self) {
        slot::set(Slot::Ready(self.0));
    }
}

/// Run `f` with the current loop, or return `None` outside of a loop's poll or inside another
/// `with_loop` (the loop's `&mut` is out). Cleanups deferred while `f` ran are applied to the
/// loop before returning.
pub(crate) fn with_loop<R>(f: impl FnOnce(&mut dyn LoopOps) -> R) -> Option<R> {
    let Slot::Ready(frame) = slot::get() else {
        return None;
    };
    slot::set(Slot::Busy(frame.owner));
    let _restore = Restore(frame);
    // SAFETY: `enter`'s caller guarantees `frame.lp` is valid and otherwise unused while the
    // frame is set. The slot now says busy, so no other `with_loop` (nested, or from a `Drop`
    // inside `f`) derives a second `&mut` until `_restore` puts the frame back, after the
    // last use of `lp`. With `std` the slot is per thread; without it the critical section
    // `enter` holds keeps every other context out.
    let lp = unsafe { &mut *frame.lp };
    let out = f(&mut *lp);
    while let Some(op) = frame.owner.take_deferred() {
        op.apply(&mut *lp);
    }
    Some(out)
}

/// Run `f` with the current loop and its identity, or `None` (as [`with_loop`]).
pub(crate) fn with_loop_owned<R>(f: impl FnOnce(&mut dyn LoopOps, ExecRef) -> R) -> Option<R> {
    let owner = current_owner()?;
    with_loop(|lp| f(lp, owner))
}

/// Apply `op` to the loop `owner` identifies: at once when that loop is current and
/// reachable, else through its deferred queue (see the module docs).
pub(crate) fn apply_or_defer(owner: ExecRef, op: Deferred) {
    if let Slot::Ready(frame) = slot::get() {
        if frame.owner.same(&owner) {
            let _ = with_loop(|lp| op.apply(lp));
            return;
        }
    }
    owner.defer(op);
}

/// The identity of the current loop (also while its `&mut` is out).
pub(crate) fn current_owner() -> Option<ExecRef> {
    match slot::get() {
        Slot::Empty => None,
        Slot::Ready(f) => Some(f.owner),
        Slot::Busy(o) => Some(o),
    }
}

/// Run `f` with the loop that is polling the current task, if it is an `L`: the way for a task
/// to add handlers, timers or callbacks to its own loop (Tornado's `IOLoop.current()`).
/// `None` outside a task / `run_sync`, if the loop is not an `L`, or inside another
/// `with_current_loop` (the loop is already lent out: one `&mut` at a time). Leaf futures
/// (`Sleep`, `Ready`, `IoRegistration`, sockets) may be dropped inside `f`: their cleanup is
/// applied when `f` returns.
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
    !matches!(slot::get(), Slot::Empty)
}
