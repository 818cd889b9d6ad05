//! Tasks on the loop: Tornado's coroutines as Rust `async`/`await`, without allocation.
//!
//! An [`Executor<N, S>`] holds `N` task slots of `S` bytes each, in `'static` storage (a
//! `static`: `Executor::new` is `const`; or, with `alloc`, storage the loop takes from a
//! process-wide pool: `EventLoop::attach_owned_executor`, feature `alloc`).
//! Attach it to a loop with [`EventLoop::attach_executor`](crate::EventLoop::attach_executor),
//! then spawn with [`EventLoop::spawn`](crate::EventLoop::spawn) (the loop's `&mut` proves the
//! thread; works everywhere) or [`Executor::spawn`] (a future larger than `S`, or aligned above
//! 16, **fails to compile**). A full executor hands the future back in [`Refused`].
//!
//! **Join handles.** [`Executor::spawn_join`] / [`EventLoop::spawn_join`](crate::EventLoop::spawn_join)
//! return a [`JoinHandle<T>`] instead of a [`TaskId`]: `.await` yields the task's output,
//! which waits in the task's own slot (the future and then its output share the slot's
//! storage: no allocation), or a [`JoinError`] (`Aborted`, `Panicked`, `Closed` when the loop
//! dropped the task). [`JoinHandle::abort`] drops the future; dropping the handle detaches
//! the task. A finished task's slot stays taken until its handle is awaited or dropped.
//! `spawn` keeps returning a `TaskId`, so fire-and-forget callers are unchanged.
//!
//! **Compile-time size check.** A future over `S` bytes is rejected when `spawn` is
//! *instantiated* (`cargo build`/`test`), not by `cargo check`: Rust has no stable way to
//! compare `size_of::<F>()` with `S` before monomorphization. The error gives both sizes:
//! "index out of bounds: the length is `S` but the index is `size_of::<F>()`".
//!
//! **Iterations.** Each iteration polls the tasks that were woken (or spawned) before it
//! *started*, after the loop's callbacks and before its timers. So a task that wakes itself
//! (`yield_now`) runs again in the next iteration, exactly like Tornado's `gen.moment`, and a
//! task spawned — or woken — by a callback, a timer, a handler or another task is first
//! polled in the next iteration (Tornado's `spawn_callback`).
//!
//! **Lifecycle.** An executor serves one loop at a time. When that loop is closed or dropped
//! it drops every task (each future exactly once, with the loop current, so their sleeps and
//! fd watches are cancelled) and detaches the executor: from then on `spawn` refuses with
//! [`Error::NotAttached`] and hands the future back, and another loop — on any thread — may
//! attach the same executor. Each attachment has an *epoch*; anything recorded under an old
//! epoch (deferred cleanups, I/O registrations) is never applied to the new loop.
//!
//! **Threads.** Everything but the ready flags, the slot states and generations (atomics,
//! readable from any thread: [`is_alive`](Executor::is_alive), [`len`](Executor::len)) is
//! touched only by the thread of the loop the executor is attached to. With `std`,
//! [`Executor::spawn`] checks it runs on that thread (the thread that attached it; each
//! executor records its own, so any number of loops and executors share a thread). Without
//! `std` there is no thread identity: `Executor::spawn` is accepted only inside a poll of
//! this executor's own loop (a task, `run_sync`'s future), where the critical section that
//! guards the current loop is held (see `current.rs`), and refused elsewhere; from setup code
//! use [`EventLoop::spawn`](crate::EventLoop::spawn).
//!
//! **Wakers are one word** — a pointer to the task's header, which lives as long as the
//! program (a `static`, or leaked pool storage that is reused but never freed). Waking sets
//! the task's ready flag; a waker that outlives its task (or its loop) only marks an empty or
//! reused slot ready, which at worst causes a spurious poll (allowed by the `Future`
//! contract). No waker can ever reach freed memory (embassy#181).
//!
//! **Cross-thread wakes** go through the loop's attached [`Remote`](crate::Remote) notifier,
//! and only when the loop is asleep in its poller: the loop raises a `sleeping` flag before
//! its last look at the ready flags, a waker sets its ready flag before looking at `sleeping`
//! (both `SeqCst`), so one of them always sees the other and no wake is lost, while wakes
//! from the loop thread itself never cost a system call.
//!
//! **Panics.** A task whose poll unwinds is dropped (exactly once, in place) and its slot
//! freed before the panic goes on, so the executor stays consistent.
//!
//! The executor's unsafe core (type-erased futures in fixed storage, pinned by never moving,
//! and the waker vtable) is `raw.rs`; `queue.rs` is the loop's side; the current-loop frame
//! is `task/current.rs`. ARCHITECTURE.md lists every module allowed `unsafe`.

use core::cell::RefCell;
use core::future::Future;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr;
use core::sync::atomic::Ordering;
use core::task::{Context, Waker};
use portable_atomic::{AtomicBool, AtomicPtr, AtomicU32};

use crate::error::{Error, Refused, Resource};
use crate::remote::WakeEntry;
use crate::task::current::{self, Deferred, LoopOps, DEFERRED};

mod join;
#[cfg(feature = "alloc")]
mod pool;
mod queue;
mod raw;

pub use join::{JoinError, JoinHandle};
#[cfg(feature = "alloc")]
pub(crate) use pool::attach_pooled;
pub(crate) use queue::ExecQueue;
use queue::FinishOnUnwind;
pub(crate) use raw::TaskHeader;
use raw::*;

/// Identifies a spawned task (slot and generation).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, EventLoop, Executor, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 4> = Remote::new();
/// static EXEC: Executor<4, 256> = Executor::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE)?;
/// lp.attach_executor(&EXEC)?;
/// let id = lp.spawn(async { sleep(Duration::from_secs(1)).await.ok(); })?;
/// assert!(EXEC.is_alive(id));
/// lp.run_sync(sleep(Duration::from_secs(2)), None)??;
/// assert!(!EXEC.is_alive(id)); // finished; its slot may serve a new task with a new id
/// assert_ne!(lp.spawn(async {})?, id);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskId {
    index: u32,
    generation: u32,
}

/// A task poll that took at least the watchdog's threshold.
pub(crate) struct SlowPoll {
    pub(crate) id: TaskId,
    pub(crate) name: &'static str,
    pub(crate) duration: core::time::Duration,
}

/// The slow polls of one iteration.
pub(crate) type SlowPolls = heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>;

/// At most this many slow task polls are reported per iteration (the longest poll always
/// updates `Counters::max_run_time`).
pub(crate) const SLOW_POLLS_PER_ITERATION: usize = 8;

/// Bit 0 of `Executor::state`: attached to a loop; the rest: the attach epoch.
const ATTACHED: u32 = 1;

/// `N` task slots of `S` bytes each; see the [module docs](self).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{sleep, EventLoop, Executor, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 16> = Remote::new();
/// static EXEC: Executor<8> = Executor::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE).unwrap();
/// lp.attach_executor(&EXEC).unwrap();
/// let out = lp.run_sync(async { sleep(Duration::from_secs(2)).await.unwrap(); 42 }, None).unwrap();
/// assert_eq!((out, lp.now().as_nanos()), (42, 2_000_000_000));
/// ```
pub struct Executor<const N: usize, const S: usize = 1024> {
    tasks: [TaskSlot<S>; N],
    /// `run_sync`'s own future (on its stack) wakes through this header.
    main: TaskHeader,
    shared: Shared,
    /// `epoch << 1 | ATTACHED`.
    state: AtomicU32,
    /// The thread of the loop it is attached to (0: none).
    #[cfg(feature = "std")]
    owner_thread: core::sync::atomic::AtomicU64,
    /// Tasks alive.
    live: AtomicU32,
    /// Cleanups leaf futures could not do at once, with the epoch they belong to.
    deferred: critical_section::Mutex<RefCell<heapless::Deque<(u32, Deferred), DEFERRED>>>,
    /// `deferred` may be non-empty: lets the hot path skip the critical section.
    has_deferred: AtomicBool,
    /// The loop is dropping the tasks (`drop_all`): spawns are refused, so a task spawned by
    /// a dropping future's `Drop` cannot outlive the loop.
    closing: AtomicBool,
}

// SAFETY: the atomics (ready flags, `Shared`, `state`, the slots' states and generations,
// `live`) are shared with wakers and observers on any thread, and `deferred` is a
// critical-section mutex. Everything else (the `Cell`s, the future storage) is touched only by
// the thread of the loop the executor is attached to: `spawn` checks it is on that thread
// (the owner thread with `std`; without `std` only inside a poll of its loop, under the
// critical section), `EventLoop::spawn` holds the loop's `&mut` (the loop is `!Send`), and
// polling and dropping happen inside that loop. A new attachment (possibly on another thread)
// happens after the previous loop detached (a release/acquire pair on `state`). Futures are
// not required to be `Send` because they never leave the loop's thread while alive.
unsafe impl<const N: usize, const S: usize> Sync for Executor<N, S> {}

impl<const N: usize, const S: usize> Default for Executor<N, S> {
    fn default() -> Self {
        Self::new()
    }
}

/// This thread's identity for the executor's owner check (never 0).
#[cfg(feature = "std")]
fn this_thread() -> u64 {
    use core::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    // Inside a thread-local destructor the id may be gone: no executor matches 0.
    ID.try_with(|id| *id).unwrap_or(0)
}

/// The executor a loop holds: its erased queue and the epoch it was attached with. Also the
/// loop's identity for leaf futures (see `current.rs`).
#[derive(Clone, Copy)]
pub(crate) struct ExecRef {
    q: &'static dyn ExecQueue,
    epoch: u32,
}

impl core::fmt::Debug for ExecRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExecRef")
            .field("executor", &(self.q as *const dyn ExecQueue).cast::<()>())
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl ExecRef {
    /// Whether both name the same attachment (same executor, same epoch).
    pub(crate) fn same(&self, other: &ExecRef) -> bool {
        self.epoch == other.epoch
            && ptr::addr_eq(
                self.q as *const dyn ExecQueue,
                other.q as *const dyn ExecQueue,
            )
    }

    /// Queue `op` for the loop; `false` if it is gone or the queue is full.
    pub(crate) fn defer(&self, op: Deferred) -> bool {
        self.q.defer(self.epoch, op)
    }

    pub(crate) fn take_deferred(&self) -> Option<Deferred> {
        self.q.take_deferred(self.epoch)
    }

    /// Start of a loop iteration: choose the tasks this iteration polls.
    pub(crate) fn begin_iteration(&self) {
        self.q.begin_iteration(self.epoch);
    }

    /// Poll the tasks chosen by `begin_iteration` (and apply deferred cleanups). With a
    /// watchdog `threshold`, each poll is timed: polls at or above it go to `slow`, and the
    /// longest poll is returned.
    pub(crate) fn run_ready(
        &self,
        lp: &mut (dyn LoopOps + 'static),
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration {
        self.q.run_ready(lp, *self, threshold, slow)
    }

    pub(crate) fn any_ready(&self) -> bool {
        self.q.any_ready()
    }

    /// Tasks alive, for the loop's high-water mark.
    pub(crate) fn live(&self) -> usize {
        self.q.live()
    }

    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.q.set_sleeping(sleeping);
    }

    pub(crate) fn main_header(&self) -> &'static TaskHeader {
        self.q.main_header()
    }

    /// Drop every task (loop closed or dropped) and detach. A no-op if this attachment is
    /// already over (closed before, or the executor serves another loop now).
    pub(crate) fn drop_all(&self, lp: &mut (dyn LoopOps + 'static)) {
        self.q.drop_all(lp, *self);
    }

    /// Whether this attachment is still current.
    pub(crate) fn attached(&self) -> bool {
        self.q.current_epoch() == Some(self.epoch)
    }

    /// Spawn `make(a, b)` as a task; `a` and `b` come back if it is refused (the task is
    /// only built once a slot is reserved for it).
    ///
    /// # Safety
    /// Call only on the thread of the loop this executor is attached to (the caller holds
    /// that loop's `&mut`, or is inside a poll of it).
    pub(crate) unsafe fn spawn_with<A, B, R, M>(
        &self,
        a: A,
        b: B,
        make: M,
    ) -> Result<TaskId, Refused<(A, B)>>
    where
        R: Future<Output = ()> + 'static,
        M: FnOnce(A, B) -> R,
    {
        // SAFETY: as this function's caller guarantees.
        match unsafe { self.q.reserve(self.epoch, size_of::<R>(), align_of::<R>()) } {
            Err(error) => Err(Refused {
                error,
                value: (a, b),
            }),
            Ok((index, p)) => {
                // SAFETY: `reserve` handed out slot `index`'s storage, RESERVED for us, big and
                // aligned enough for an `R` (checked against `size_of`/`align_of`).
                unsafe { ptr::write(p.cast::<R>(), make(a, b)) };
                // SAFETY: the slot now holds a live `R`, matching the vtable.
                Ok(unsafe { self.q.commit(index, &Erased::<R>::VTABLE, false) })
            }
        }
    }

    /// Spawn `fut` with a [`JoinHandle`] for its output.
    ///
    /// # Safety
    /// As [`spawn_with`](Self::spawn_with).
    pub(crate) unsafe fn spawn_join<F>(&self, fut: F) -> Result<JoinHandle<F::Output>, Refused<F>>
    where
        F: Future + 'static,
    {
        type Cell<F> = JoinCell<F>;
        // SAFETY: as this function's caller guarantees.
        match unsafe {
            self.q
                .reserve(self.epoch, size_of::<Cell<F>>(), align_of::<Cell<F>>())
        } {
            Err(error) => Err(Refused { error, value: fut }),
            Ok((index, p)) => {
                // SAFETY: `reserve` handed out slot `index`'s storage, RESERVED for us, big and
                // aligned enough for a `JoinCell<F>`.
                unsafe { ptr::write(p.cast::<Cell<F>>(), JoinCell::Running(fut)) };
                // SAFETY: the slot now holds a live `JoinCell<F>`, matching the vtable.
                let id = unsafe { self.q.commit(index, &Erased::<Cell<F>>::VTABLE, true) };
                Ok(JoinHandle {
                    q: self.q,
                    epoch: self.epoch,
                    id,
                    take: JoinCell::<F>::take,
                    done: false,
                    _not_send: PhantomData,
                })
            }
        }
    }

    /// Spawn `fut` (see [`spawn_with`](Self::spawn_with)).
    ///
    /// # Safety
    /// As [`spawn_with`](Self::spawn_with).
    pub(crate) unsafe fn spawn<F>(&self, fut: F) -> Result<TaskId, Refused<F>>
    where
        F: Future<Output = ()> + 'static,
    {
        // SAFETY: as this function's caller guarantees.
        unsafe { self.spawn_with(fut, (), |f, ()| f) }.map_err(|r| Refused {
            error: r.error,
            value: r.value.0,
        })
    }
}

impl<const N: usize, const S: usize> Executor<N, S> {
    const VALID: () = assert!(
        N > 0 && N < u32::MAX as usize,
        "Executor<N, _>: 0 < N < 2^32"
    );

    /// An empty executor (`const`: initialises a `static`) of `N` slots of `S` bytes.
    ///
    /// ```
    /// use loop_core::Executor;
    ///
    /// static EXEC: Executor<8, 512> = Executor::new(); // 8 tasks of up to 512 bytes each
    /// assert!(EXEC.is_empty() && !EXEC.is_attached());
    /// ```
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        Executor {
            tasks: [const { TaskSlot::new() }; N],
            main: TaskHeader::new(),
            shared: Shared {
                ready_any: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                wake: AtomicPtr::new(ptr::null_mut()),
            },
            state: AtomicU32::new(0),
            #[cfg(feature = "std")]
            owner_thread: core::sync::atomic::AtomicU64::new(0),
            live: AtomicU32::new(0),
            deferred: critical_section::Mutex::new(RefCell::new(heapless::Deque::new())),
            has_deferred: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    /// Attach to the calling thread's loop; the new attachment's identity.
    pub(crate) fn attach(&'static self, wake: &'static WakeEntry) -> Result<ExecRef, Error> {
        let st = self.state.load(Ordering::Acquire);
        if st & ATTACHED != 0 {
            return Err(Error::AlreadyAttached);
        }
        let next = (st | ATTACHED).wrapping_add(2) | ATTACHED;
        if self
            .state
            .compare_exchange(st, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::AlreadyAttached);
        }
        Ok(self.bind(wake, next >> 1))
    }

    /// Attach a freshly built executor that no one else can see yet.
    #[cfg(feature = "alloc")]
    fn attach_fresh(&'static self, wake: &'static WakeEntry) -> ExecRef {
        self.state.store(2 | ATTACHED, Ordering::Release);
        self.bind(wake, 1)
    }

    /// Second half of attaching: this thread owns the executor under `epoch`.
    fn bind(&'static self, wake: &'static WakeEntry, epoch: u32) -> ExecRef {
        #[cfg(feature = "std")]
        self.owner_thread.store(this_thread(), Ordering::Release);
        self.shared.wake.store(
            wake as *const WakeEntry as *mut WakeEntry,
            Ordering::Release,
        );
        let shared = &self.shared as *const Shared as *mut Shared;
        self.main.shared.store(shared, Ordering::Release);
        for t in &self.tasks {
            t.header.shared.store(shared, Ordering::Release);
        }
        ExecRef { q: self, epoch }
    }

    /// Whether this executor is attached to a loop (on any thread).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Executor, Remote};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// static EXEC: Executor<4, 256> = Executor::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// assert!(EXEC.is_attached());
    /// drop(lp); // the loop drops its tasks and detaches the executor
    /// assert!(!EXEC.is_attached());
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn is_attached(&self) -> bool {
        self.state.load(Ordering::Acquire) & ATTACHED != 0
    }

    /// The current attachment if the caller may touch the loop-thread-only state.
    fn here(&'static self) -> Option<ExecRef> {
        let st = self.state.load(Ordering::Acquire);
        if st & ATTACHED == 0 {
            return None;
        }
        let me = ExecRef {
            q: self,
            epoch: st >> 1,
        };
        #[cfg(feature = "std")]
        {
            (self.owner_thread.load(Ordering::Acquire) == this_thread()).then_some(me)
        }
        #[cfg(not(feature = "std"))]
        {
            // Only inside a poll of this executor's loop: then the critical section is held
            // (`current::enter`) and no other context runs.
            current::current_owner()
                .is_some_and(|o| o.same(&me))
                .then_some(me)
        }
    }

    /// Spawn `fut` as a task: it is first polled in the next iteration of the loop (like
    /// Tornado's `spawn_callback`). With `std`, call it on the loop's thread: from setup code,
    /// callbacks, handlers or other tasks. Without `std`, only from inside a poll of this
    /// executor's loop (a task or `run_sync`'s future); elsewhere use
    /// [`EventLoop::spawn`](crate::EventLoop::spawn). A future larger than `S` bytes is a
    /// compile error.
    ///
    /// # Errors
    /// `fut` comes back inside [`Refused`] with [`Error::Full`] when `N` tasks are alive, or
    /// [`Error::NotAttached`] when the executor is not attached to a loop on this thread
    /// (never attached, its loop closed or dropped, another thread's loop), or
    /// [`Error::Closed`] while its loop is dropping the tasks (a spawn from a `Drop` then).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Executor, Remote, Resource};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// static EXEC: Executor<4, 256> = Executor::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// let fifth = lp.run_sync(
    ///     async {
    ///         for _ in 0..4 {
    ///             // Inside a task: works with or without `std`.
    ///             EXEC.spawn(core::future::pending::<()>())?;
    ///         }
    ///         EXEC.spawn(core::future::pending::<()>()).map(drop)
    ///     },
    ///     None,
    /// )?;
    /// assert_eq!(fifth.unwrap_err().error, Error::Full { what: Resource::Tasks }); // N is 4
    /// assert_eq!(EXEC.len(), 4);
    ///
    /// let other = std::thread::spawn(|| EXEC.spawn(async {}).unwrap_err().error);
    /// assert_eq!(other.join().unwrap(), Error::NotAttached); // not the loop's thread
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn spawn<F>(&'static self, fut: F) -> Result<TaskId, Refused<F>>
    where
        F: Future<Output = ()> + 'static,
    {
        #[allow(clippy::let_unit_value)]
        let () = Fits::<F, S>::OK;
        let Some(me) = self.here() else {
            return Err(Refused {
                error: Error::NotAttached,
                value: fut,
            });
        };
        // SAFETY: `here` checked this is the loop's thread (or, without `std`, a poll of its
        // loop).
        unsafe { me.spawn(fut) }
    }

    /// Spawn `fut` as a task, like [`spawn`](Self::spawn), and return a [`JoinHandle`] whose
    /// `.await` yields its output. The output is kept in the task's slot (the future and then
    /// its output share the slot's `S` bytes: `size_of::<F>().max(size_of::<F::Output>())`
    /// plus a tag must fit, checked at compile time). The slot stays taken until the handle
    /// is awaited to the end or dropped.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
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
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// let out = lp.run_sync(
    ///     async {
    ///         let handle = EXEC.spawn_join(async {
    ///             sleep(Duration::from_secs(1)).await.ok();
    ///             "done"
    ///         })?;
    ///         Ok::<_, Error>(handle.await)
    ///     },
    ///     None,
    /// )??;
    /// assert_eq!(out, Ok("done"));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn spawn_join<F>(&'static self, fut: F) -> Result<JoinHandle<F::Output>, Refused<F>>
    where
        F: Future + 'static,
    {
        #[allow(clippy::let_unit_value)]
        let () = Fits::<JoinCell<F>, S>::OK;
        let Some(me) = self.here() else {
            return Err(Refused {
                error: Error::NotAttached,
                value: fut,
            });
        };
        // SAFETY: `here` checked this is the loop's thread (or, without `std`, a poll of its
        // loop).
        unsafe { me.spawn_join(fut) }
    }

    /// How many tasks are alive. Readable from any thread.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{sleep, EventLoop, Executor, Remote};
    ///
    /// type Lp = EventLoop<SimPoller>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// static EXEC: Executor<4, 256> = Executor::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// lp.attach_executor(&EXEC)?;
    /// assert!(EXEC.is_empty());
    /// lp.spawn(async { sleep(Duration::from_secs(1)).await.ok(); })?;
    /// lp.spawn(async { sleep(Duration::from_secs(2)).await.ok(); })?;
    /// assert_eq!(EXEC.len(), 2);
    /// lp.run_sync(sleep(Duration::from_millis(1500)), None)??;
    /// assert_eq!(EXEC.len(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Acquire) as usize
    }

    /// Whether no task is alive. Readable from any thread. See [`len`](Self::len).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is still running (not finished, not dropped). Readable from any thread.
    /// See [`TaskId`] for an example.
    pub fn is_alive(&self, id: TaskId) -> bool {
        self.tasks.get(id.index as usize).is_some_and(|t| {
            let state = t.state.load(Ordering::Acquire);
            (state == OCCUPIED || state == RUNNING)
                && t.generation.load(Ordering::Acquire) == id.generation
        })
    }

    fn attached_epoch(&self) -> Option<u32> {
        let st = self.state.load(Ordering::Acquire);
        (st & ATTACHED != 0).then_some(st >> 1)
    }

    /// Poll one task slot that was scheduled.
    fn poll_slot(&self, slot: &TaskSlot<S>, me: &ExecRef) {
        let Some(vtable) = slot.vtable.get() else {
            return;
        };
        slot.state.store(RUNNING, Ordering::Release);
        // SAFETY: this slot lives in a `'static` executor (`attach` takes `&'static self`).
        let header: &'static TaskHeader = unsafe { &*(&slot.header as *const TaskHeader) };
        let waker = header.waker();
        let mut cx = Context::from_waker(&waker);
        // If the poll unwinds, the task is dropped and its slot freed on the way out.
        let guard = FinishOnUnwind {
            exec: self,
            slot,
            vtable,
        };
        // SAFETY: the slot is RUNNING, so its storage holds the live future the vtable was
        // made for; it never moves; this is the loop thread.
        let done = unsafe { (vtable.poll)(slot.storage_ptr(), &mut cx) };
        core::mem::forget(guard);
        // A task that closed its own loop is dropped now: the loop dropped the others.
        if !me.attached() {
            self.finish(slot, vtable);
        } else if done.is_ready() {
            self.complete(slot, vtable, OUT_READY);
        } else if slot.abort.get() {
            self.complete(slot, vtable, OUT_ABORTED);
        } else {
            slot.state.store(OCCUPIED, Ordering::Release);
        }
    }

    /// A task ended (`outcome`): without a handle its slot is freed; with one the slot is
    /// kept (`DONE`) with the output (`OUT_READY`) or, its future dropped, empty.
    fn complete(&self, slot: &TaskSlot<S>, vtable: &'static TaskVTable, outcome: u8) {
        if !slot.handle.get() {
            self.finish(slot, vtable);
            return;
        }
        slot.scheduled.set(false);
        slot.abort.set(false);
        slot.header.ready.store(false, Ordering::Relaxed);
        slot.outcome.set(outcome);
        /// Marks the slot `DONE`, no longer alive, and wakes the joiner, even if the drop
        /// below unwinds. If the handle went away meanwhile (the future owned its own handle
        /// and dropped it), the slot is freed instead.
        struct Done<'a, const S: usize>(&'a TaskSlot<S>, &'a AtomicU32);
        impl<const S: usize> Drop for Done<'_, S> {
            fn drop(&mut self) {
                self.1.fetch_sub(1, Ordering::AcqRel);
                if self.0.handle.get() {
                    self.0.state.store(DONE, Ordering::Release);
                    if let Some(w) = self.0.joiner.take() {
                        w.wake();
                    }
                } else {
                    // Only reached with the vtable cleared: nothing is left in the storage.
                    self.0.outcome.set(OUT_NONE);
                    self.0.generation.fetch_add(1, Ordering::AcqRel);
                    self.0.state.store(EMPTY, Ordering::Release);
                }
            }
        }
        if outcome == OUT_READY {
            // The storage now holds `JoinCell::Done(output)`; the vtable stays to drop it.
            drop(Done(slot, &self.live));
            return;
        }
        slot.vtable.set(None);
        slot.state.store(RESERVED, Ordering::Release);
        let _done = Done(slot, &self.live);
        // SAFETY: the future is live (the vtable was still set), dropped exactly once, here
        // (the vtable is cleared); the slot is not reusable (RESERVED, then DONE).
        unsafe { (vtable.drop)(slot.storage_ptr()) };
    }

    /// Free a `DONE` slot (its handle took the outcome or is gone), dropping any output left.
    fn free_done(&self, slot: &TaskSlot<S>) {
        slot.handle.set(false);
        slot.outcome.set(OUT_NONE);
        slot.joiner.set(None);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        slot.state.store(RESERVED, Ordering::Release);
        struct Free<'a, const S: usize>(&'a TaskSlot<S>);
        impl<const S: usize> Drop for Free<'_, S> {
            fn drop(&mut self) {
                self.0.state.store(EMPTY, Ordering::Release);
            }
        }
        let _free = Free(slot);
        if let Some(vtable) = slot.vtable.take() {
            // SAFETY: a `DONE` slot with a vtable holds the live `JoinCell` it was made for;
            // dropped once (the vtable is cleared first).
            unsafe { (vtable.drop)(slot.storage_ptr()) };
        }
    }

    /// The slot named by a handle's `id` and `epoch`, if the handle may touch it (same
    /// attachment, on its thread; same generation).
    fn joined(&self, id: TaskId, epoch: u32) -> Option<&TaskSlot<S>> {
        if self.attached_epoch() != Some(epoch) {
            return None;
        }
        #[cfg(feature = "std")]
        if self.owner_thread.load(Ordering::Acquire) != this_thread() {
            return None;
        }
        let slot = self.tasks.get(id.index as usize)?;
        (slot.generation.load(Ordering::Acquire) == id.generation && slot.handle.get())
            .then_some(slot)
    }

    fn finish(&self, slot: &TaskSlot<S>, vtable: &'static TaskVTable) {
        slot.handle.set(false);
        slot.abort.set(false);
        slot.outcome.set(OUT_NONE);
        if let Some(w) = slot.joiner.take() {
            // The generation changes below: the handle then yields `Closed`.
            w.wake();
        }
        slot.vtable.set(None);
        // Marked empty before the drop: a drop that unwinds leaves a consistent slot (the
        // future is then dropped by the unwinding itself, exactly once).
        slot.scheduled.set(false);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        slot.header.ready.store(false, Ordering::Relaxed);
        slot.state.store(RESERVED, Ordering::Release);
        struct Free<'a, const S: usize>(&'a TaskSlot<S>, &'a AtomicU32);
        impl<const S: usize> Drop for Free<'_, S> {
            fn drop(&mut self) {
                self.0.state.store(EMPTY, Ordering::Release);
                self.1.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _free = Free(slot, &self.live);
        // SAFETY: the future is live (the vtable was still set) and is dropped exactly once,
        // here (the vtable is cleared, so no other path drops it); the slot stays RESERVED
        // (not reusable) until the drop is over.
        unsafe { (vtable.drop)(slot.storage_ptr()) };
    }

    /// Apply the cleanups deferred for `me`.
    fn drain_deferred(&self, lp: &mut dyn LoopOps, me: &ExecRef) {
        while let Some(op) = self.take_deferred(me.epoch) {
            op.apply(lp);
        }
    }
}

/// The compile-time slot check. Rust evaluates it when `spawn` is instantiated for `F`
/// (monomorphization), which `cargo build`/`cargo test` do and `cargo check` does not: a
/// post-monomorphization error cannot be made visible to `cargo check` on stable Rust (nor
/// can `size_of::<F>()` be a const generic argument or a trait bound without the unstable
/// `generic_const_exprs`). A `const` panic message cannot format numbers, so a too-large
/// task fails on an out-of-bounds index instead, which rustc reports as "the length is
/// `S` but the index is `size_of::<F>()`": both sizes; the error also names
/// `Fits::<F, S>::OK` with the task's type.
struct Fits<F, const S: usize>(PhantomData<F>);

impl<F, const S: usize> Fits<F, S> {
    const OK: () = {
        if size_of::<F>() > S {
            // TASK TOO LARGE FOR ITS SLOT. The error reads "index out of bounds: the length
            // is <S, the slot size> but the index is <the task's actual size in bytes>".
            let task_slot_bytes = [0u8; S];
            let _ = task_slot_bytes[size_of::<F>()];
        }
        assert!(
            size_of::<F>() <= S && align_of::<F>() <= SLOT_ALIGN,
            "the task's future (with spawn_join: future or output, plus a tag) is larger than \
             this Executor<N, S>'s slot size S bytes, or aligned above 16: raise S (see \
             `Fits<F, S>` in this error for the type and S)"
        );
    };
}

/// `true` while this thread is inside a loop's poll of a task (leaf futures need it).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{in_task, EventLoop};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// assert!(!in_task());
/// assert!(lp.run_sync(async { in_task() }, None)?);
/// # Ok::<(), loop_core::Error>(())
/// ```
pub fn in_task() -> bool {
    current::in_loop()
}

#[cfg(test)]
mod tests;
