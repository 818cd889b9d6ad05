//! Tasks on the loop: Tornado's coroutines as Rust `async`/`await`, without allocation.
//!
//! An [`Executor<N, S>`] holds `N` task slots of `S` bytes each, in `'static` storage (a
//! `static`: `Executor::new` is `const`; or, with `alloc`, storage the loop takes from a
//! process-wide pool: [`EventLoop::attach_owned_executor`](crate::EventLoop::attach_owned_executor)).
//! Attach it to a loop with [`EventLoop::attach_executor`](crate::EventLoop::attach_executor),
//! then spawn with [`EventLoop::spawn`](crate::EventLoop::spawn) (the loop's `&mut` proves the
//! thread; works everywhere) or [`Executor::spawn`] (a future larger than `S`, or aligned above
//! 16, **fails to compile**). A full executor hands the future back in [`Refused`].
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
//! This module and `current.rs` hold the executor's `unsafe`: type-erased futures in
//! fixed storage (like `inline_fn.rs`), pinned by never moving, and the waker vtable.

use core::cell::{Cell, RefCell, UnsafeCell};
use core::future::Future;
use core::marker::PhantomData;
use core::mem::{align_of, size_of, MaybeUninit};
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::current::{self, Deferred, LoopOps, DEFERRED};
use crate::error::{Error, Refused, Resource};
use crate::signal::WakeEntry;

/// Identifies a spawned task (slot and generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskId {
    index: u32,
    generation: u32,
}

/// What every task's wakers share: where to look and how to wake a sleeping loop.
struct Shared {
    ready_any: AtomicBool,
    sleeping: AtomicBool,
    /// The attached loop's remote wake (for wakes from other threads).
    wake: AtomicPtr<WakeEntry>,
}

/// The part of a task a waker points to. `'static`: lives in the executor's static storage.
pub(crate) struct TaskHeader {
    ready: AtomicBool,
    shared: AtomicPtr<Shared>,
}

impl TaskHeader {
    const fn new() -> Self {
        TaskHeader {
            ready: AtomicBool::new(false),
            shared: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn wake(&self) {
        self.ready.store(true, Ordering::Release);
        let shared = self.shared.load(Ordering::Acquire);
        if shared.is_null() {
            return;
        }
        // SAFETY: `shared` points into the same `'static` executor as this header.
        let shared = unsafe { &*shared };
        shared.ready_any.store(true, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) {
            let entry = shared.wake.load(Ordering::Acquire);
            if !entry.is_null() {
                // SAFETY: wake entries are fields of `'static` remotes.
                let entry = unsafe { &*entry };
                (entry.wake)(entry.ctx.load(Ordering::Acquire));
            }
        }
    }

    /// A waker for this header (which must be `'static`).
    pub(crate) fn waker(&'static self) -> Waker {
        // SAFETY: the vtable functions treat the data pointer as `&'static TaskHeader`, which
        // it is; clone copies the pointer, drop does nothing: no reference counting needed
        // for `'static` data.
        unsafe {
            Waker::from_raw(RawWaker::new(
                self as *const TaskHeader as *const (),
                &WAKER_VTABLE,
            ))
        }
    }

    pub(crate) fn take_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.ready.swap(false, Ordering::AcqRel)
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake, waker_drop);

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: every waker made by `TaskHeader::waker` carries a `&'static TaskHeader`.
    unsafe { &*(data as *const TaskHeader) }.wake();
}

unsafe fn waker_drop(_: *const ()) {}

/// Storage for one future: `S` bytes, 16-byte aligned.
#[repr(C, align(16))]
struct FutureStorage<const S: usize>([MaybeUninit<u8>; S]);

/// The alignment of [`FutureStorage`].
const SLOT_ALIGN: usize = 16;

pub(crate) struct TaskVTable {
    poll: unsafe fn(*mut u8, &mut Context<'_>) -> Poll<()>,
    drop: unsafe fn(*mut u8),
    /// The future's type name (`my_app::serve::{{closure}}`), for watchdog reports.
    name: fn() -> &'static str,
}

/// A task poll that took at least the watchdog's threshold.
pub(crate) struct SlowPoll {
    pub(crate) id: TaskId,
    pub(crate) name: &'static str,
    pub(crate) duration: core::time::Duration,
}

/// At most this many slow task polls are reported per iteration (the longest poll always
/// updates `Counters::max_run_time`).
pub(crate) const SLOW_POLLS_PER_ITERATION: usize = 8;

struct Erased<F>(PhantomData<F>);

impl<F: Future<Output = ()>> Erased<F> {
    const VTABLE: TaskVTable = TaskVTable {
        poll: Self::poll,
        drop: Self::drop,
        name: core::any::type_name::<F>,
    };

    /// # Safety
    /// `p` holds a live `F` that is never moved (it stays in its slot until dropped).
    unsafe fn poll(p: *mut u8, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: as the caller guarantees; the slot is never moved, so pinning holds.
        unsafe { Pin::new_unchecked(&mut *p.cast::<F>()) }.poll(cx)
    }

    /// # Safety
    /// `p` holds a live `F`, dead afterwards.
    unsafe fn drop(p: *mut u8) {
        // SAFETY: as the caller guarantees.
        unsafe { ptr::drop_in_place(p.cast::<F>()) }
    }
}

const EMPTY: u8 = 0;
const OCCUPIED: u8 = 1;
const RUNNING: u8 = 2;
/// Storage handed out by `reserve`, not yet holding a future.
const RESERVED: u8 = 3;

struct TaskSlot<const S: usize> {
    header: TaskHeader,
    /// Written by the loop thread, readable anywhere (`is_alive`).
    state: AtomicU8,
    generation: AtomicU32,
    // Loop-thread-only state below (see the `Sync` impl).
    /// Chosen for this iteration's poll (`begin_iteration`).
    scheduled: Cell<bool>,
    vtable: Cell<Option<&'static TaskVTable>>,
    storage: UnsafeCell<FutureStorage<S>>,
}

impl<const S: usize> TaskSlot<S> {
    const fn new() -> Self {
        TaskSlot {
            header: TaskHeader::new(),
            state: AtomicU8::new(EMPTY),
            scheduled: Cell::new(false),
            generation: AtomicU32::new(0),
            vtable: Cell::new(None),
            storage: UnsafeCell::new(FutureStorage([MaybeUninit::uninit(); S])),
        }
    }

    fn storage_ptr(&self) -> *mut u8 {
        // SAFETY: only a raw pointer is formed; no reference to the storage is created.
        unsafe { ptr::addr_of_mut!((*self.storage.get()).0).cast::<u8>() }
    }
}

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
                Ok(unsafe { self.q.commit(index, &Erased::<R>::VTABLE) })
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

/// The loop's view of its executor, with the sizes erased.
pub(crate) trait ExecQueue: Sync {
    fn begin_iteration(&self, epoch: u32);
    fn run_ready(
        &self,
        lp: &mut (dyn LoopOps + 'static),
        me: ExecRef,
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration;
    fn any_ready(&self) -> bool;
    fn set_sleeping(&self, sleeping: bool);
    fn main_header(&'static self) -> &'static TaskHeader;
    fn drop_all(&self, lp: &mut (dyn LoopOps + 'static), me: ExecRef);
    fn current_epoch(&self) -> Option<u32>;
    fn defer(&self, epoch: u32, op: Deferred) -> bool;
    fn take_deferred(&self, epoch: u32) -> Option<Deferred>;
    /// A free slot's storage for a future of `size` bytes aligned to `align`.
    ///
    /// # Safety
    /// On the loop's thread (see [`ExecRef::spawn`]); `commit` must follow once the storage
    /// holds the future.
    unsafe fn reserve(
        &self,
        epoch: u32,
        size: usize,
        align: usize,
    ) -> Result<(usize, *mut u8), Error>;
    /// # Safety
    /// Slot `index` was `reserve`d and now holds a live future `vtable` was made for.
    unsafe fn commit(&self, index: usize, vtable: &'static TaskVTable) -> TaskId;
}

impl<const N: usize, const S: usize> Executor<N, S> {
    const VALID: () = assert!(
        N > 0 && N < u32::MAX as usize,
        "Executor<N, _>: 0 < N < 2^32"
    );

    /// An empty executor (`const`: initialises a `static`).
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
    pub fn spawn<F>(&'static self, fut: F) -> Result<TaskId, Refused<F>>
    where
        F: Future<Output = ()> + 'static,
    {
        const {
            assert!(
                size_of::<F>() <= S && align_of::<F>() <= SLOT_ALIGN,
                "future too large for this Executor's task slots (raise S)"
            )
        };
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

    /// Run `fut` as a task and, one iteration after it completes, call `callback(loop, output)`
    /// as a loop callback (Tornado's `add_future`: the callback always comes one iteration
    /// later, even for a future that is ready at once). If the loop's callback queue is full
    /// the task retries each iteration; the callback is never dropped. `callback` and the
    /// output together may capture up to `INLINE_CAPTURE_BYTES` (a compile error otherwise).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn); the future and the callback come back together.
    pub fn add_future<P, const H: usize, const T: usize, const Q: usize, Fut, C>(
        &'static self,
        fut: Fut,
        callback: C,
    ) -> Result<TaskId, Refused<(Fut, C)>>
    where
        P: crate::Poller + 'static,
        Fut: Future + 'static,
        Fut::Output: 'static,
        C: FnOnce(&mut crate::EventLoop<P, H, T, Q>, Fut::Output) + 'static,
    {
        const {
            assert!(
                size_of::<AddFutureTask<P, H, T, Q, Fut, C>>() <= S
                    && align_of::<AddFutureTask<P, H, T, Q, Fut, C>>() <= SLOT_ALIGN,
                "future too large for this Executor's task slots (raise S)"
            )
        };
        let Some(me) = self.here() else {
            return Err(Refused {
                error: Error::NotAttached,
                value: (fut, callback),
            });
        };
        // SAFETY: `here` checked this is the loop's thread (or a poll of its loop).
        unsafe { me.spawn_with(fut, callback, AddFutureTask::<P, H, T, Q, Fut, C>::new) }
    }

    /// How many tasks are alive. Readable from any thread.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Acquire) as usize
    }

    /// Whether no task is alive. Readable from any thread.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is still running (not finished, not dropped). Readable from any thread.
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
        if done.is_ready() || !me.attached() {
            self.finish(slot, vtable);
        } else {
            slot.state.store(OCCUPIED, Ordering::Release);
        }
    }

    fn finish(&self, slot: &TaskSlot<S>, vtable: &'static TaskVTable) {
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

/// Drops the task whose poll is unwinding and frees its slot.
struct FinishOnUnwind<'a, const N: usize, const S: usize> {
    exec: &'a Executor<N, S>,
    slot: &'a TaskSlot<S>,
    vtable: &'static TaskVTable,
}

impl<const N: usize, const S: usize> Drop for FinishOnUnwind<'_, N, S> {
    fn drop(&mut self) {
        self.exec.finish(self.slot, self.vtable);
    }
}

/// The task `add_future` runs: the future, then the callback queued on the loop.
struct AddFutureTask<
    P: crate::Poller + 'static,
    const H: usize,
    const T: usize,
    const Q: usize,
    Fut: Future,
    C,
> {
    /// Structurally pinned.
    fut: Fut,
    callback: Option<C>,
    output: Option<Fut::Output>,
    _loop: PhantomData<fn(&mut crate::EventLoop<P, H, T, Q>)>,
}

impl<P, const H: usize, const T: usize, const Q: usize, Fut, C> AddFutureTask<P, H, T, Q, Fut, C>
where
    P: crate::Poller + 'static,
    Fut: Future + 'static,
    Fut::Output: 'static,
    C: FnOnce(&mut crate::EventLoop<P, H, T, Q>, Fut::Output) + 'static,
{
    fn new(fut: Fut, callback: C) -> Self {
        AddFutureTask {
            fut,
            callback: Some(callback),
            output: None,
            _loop: PhantomData,
        }
    }
}

impl<P, const H: usize, const T: usize, const Q: usize, Fut, C> Future
    for AddFutureTask<P, H, T, Q, Fut, C>
where
    P: crate::Poller + 'static,
    Fut: Future + 'static,
    Fut::Output: 'static,
    C: FnOnce(&mut crate::EventLoop<P, H, T, Q>, Fut::Output) + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned (only ever polled in place, never moved out);
        // the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.output.is_none() {
            // SAFETY: as above.
            match unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx) {
                Poll::Ready(v) => this.output = Some(v),
                Poll::Pending => return Poll::Pending,
            }
        }
        let queued = current::with_current_loop(|lp: &mut crate::EventLoop<P, H, T, Q>| {
            if lp.callback_count() >= Q {
                // The loop's callback queue is full: try again next iteration.
                return false;
            }
            if let (Some(cb), Some(out)) = (this.callback.take(), this.output.take()) {
                // Refused only if the loop is closed (or forked): then its callbacks are
                // dropped anyway.
                let _ = lp.add_callback(move |lp| cb(lp, out));
            }
            true
        });
        if queued == Some(false) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}

impl<const N: usize, const S: usize> ExecQueue for Executor<N, S> {
    fn begin_iteration(&self, epoch: u32) {
        if self.attached_epoch() != Some(epoch) {
            return;
        }
        // Wakes from here on are seen by the next iteration.
        self.shared.ready_any.store(false, Ordering::SeqCst);
        for t in &self.tasks {
            if t.state.load(Ordering::Relaxed) == OCCUPIED && t.header.take_ready() {
                t.scheduled.set(true);
            }
        }
        // `run_sync`'s future is polled by `run_sync`, not here: keep the loop from sleeping.
        if self.main.ready.load(Ordering::SeqCst) {
            self.shared.ready_any.store(true, Ordering::SeqCst);
        }
    }

    fn run_ready(
        &self,
        lp: &mut (dyn LoopOps + 'static),
        me: ExecRef,
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration {
        let mut longest = core::time::Duration::ZERO;
        if !me.attached() {
            return longest;
        }
        self.drain_deferred(lp, &me);
        if self.tasks.iter().all(|t| !t.scheduled.get()) {
            return longest;
        }
        let lp: *mut dyn LoopOps = lp;
        // SAFETY: `lp` comes from the loop's `&mut`, which is not used again until the guard
        // is dropped at the end of this function; the guard stays on this stack.
        let _current = unsafe { current::enter(lp, me) };
        for (index, t) in self.tasks.iter().enumerate() {
            if !me.attached() {
                // The loop was closed by a task: it dropped the other tasks.
                break;
            }
            if !t.scheduled.replace(false) || t.state.load(Ordering::Relaxed) != OCCUPIED {
                continue;
            }
            // Taken before the poll: a task that finishes gets a new generation.
            let id = TaskId {
                index: index as u32,
                generation: t.generation.load(Ordering::Relaxed),
            };
            let vtable = t.vtable.get();
            let started = threshold.and_then(|_| current::with_loop(|l| l.now()));
            // With `std` a panic is caught here, after `poll_slot`'s guard dropped the task
            // and freed its slot, and reported by the loop's policy (which may unwind on).
            if let Err(caught) = crate::panic::catch(|| self.poll_slot(t, &me)) {
                let name = vtable.map_or("", |v| (v.name)());
                let _ = current::with_loop(move |l| l.task_panicked(id, name, caught));
                continue;
            }
            let Some(threshold) = threshold else {
                continue;
            };
            let name = vtable.map_or("", |v| (v.name)());
            let ended = current::with_loop(|l| l.now());
            if let (Some(a), Some(b)) = (started, ended) {
                let duration = b - a;
                longest = longest.max(duration);
                if duration >= threshold {
                    let _ = slow.push(SlowPoll { id, name, duration });
                }
            }
        }
        longest
    }

    fn any_ready(&self) -> bool {
        self.shared.ready_any.load(Ordering::SeqCst)
    }

    fn set_sleeping(&self, sleeping: bool) {
        self.shared.sleeping.store(sleeping, Ordering::SeqCst);
    }

    fn main_header(&'static self) -> &'static TaskHeader {
        &self.main
    }

    fn drop_all(&self, lp: &mut (dyn LoopOps + 'static), me: ExecRef) {
        if !me.attached() {
            return;
        }
        self.drain_deferred(lp, &me);
        self.closing.store(true, Ordering::Release);
        {
            let lp: *mut dyn LoopOps = lp;
            // SAFETY: as in `run_ready`: the loop's `&mut` is not used while the guard lives.
            let _current = unsafe { current::enter(lp, me) };
            // Futures may cancel timers and fd watches as they drop: the loop is current.
            for t in &self.tasks {
                // A RUNNING task (it closed its loop) is dropped when its poll returns.
                if t.state.load(Ordering::Relaxed) == OCCUPIED {
                    if let Some(vtable) = t.vtable.get() {
                        self.finish(t, vtable);
                    }
                }
            }
        }
        self.drain_deferred(lp, &me);
        // Detach: the executor may serve another loop from now on.
        critical_section::with(|cs| {
            #[cfg(feature = "std")]
            self.owner_thread.store(0, Ordering::Release);
            self.shared.wake.store(ptr::null_mut(), Ordering::Release);
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.deferred.borrow_ref_mut(cs).clear();
            self.has_deferred.store(false, Ordering::Release);
            self.closing.store(false, Ordering::Release);
            self.state.store(me.epoch << 1, Ordering::Release);
        });
    }

    fn current_epoch(&self) -> Option<u32> {
        self.attached_epoch()
    }

    fn defer(&self, epoch: u32, op: Deferred) -> bool {
        critical_section::with(|cs| {
            // Checked inside the critical section that `drop_all` detaches in: an op is never
            // queued for a loop that is gone.
            if self.attached_epoch() != Some(epoch) {
                return false;
            }
            let pushed = self
                .deferred
                .borrow_ref_mut(cs)
                .push_back((epoch, op))
                .is_ok();
            self.has_deferred.store(true, Ordering::Release);
            pushed
        })
    }

    fn take_deferred(&self, epoch: u32) -> Option<Deferred> {
        // Called on every `with_loop`: without pending cleanups, no critical section. A push
        // racing with this load is picked up by the next call (the loop's next iteration).
        if !self.has_deferred.load(Ordering::Acquire) {
            return None;
        }
        critical_section::with(|cs| {
            let mut q = self.deferred.borrow_ref_mut(cs);
            while let Some((e, op)) = q.pop_front() {
                if e == epoch {
                    return Some(op);
                }
            }
            self.has_deferred.store(false, Ordering::Release);
            None
        })
    }

    unsafe fn reserve(
        &self,
        epoch: u32,
        size: usize,
        align: usize,
    ) -> Result<(usize, *mut u8), Error> {
        if self.attached_epoch() != Some(epoch) {
            return Err(Error::NotAttached);
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if size > S || align > SLOT_ALIGN {
            return Err(Error::TooLarge {
                size,
                align,
                max: S,
            });
        }
        let Some((index, slot)) = self
            .tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.state.load(Ordering::Relaxed) == EMPTY)
        else {
            return Err(Error::Full {
                what: Resource::Tasks,
            });
        };
        slot.state.store(RESERVED, Ordering::Relaxed);
        Ok((index, slot.storage_ptr()))
    }

    unsafe fn commit(&self, index: usize, vtable: &'static TaskVTable) -> TaskId {
        let slot = &self.tasks[index];
        slot.vtable.set(Some(vtable));
        slot.scheduled.set(false);
        self.live.fetch_add(1, Ordering::AcqRel);
        slot.state.store(OCCUPIED, Ordering::Release);
        // Polled in the next iteration: `begin_iteration` picks it up.
        slot.header.wake();
        TaskId {
            index: index as u32,
            generation: slot.generation.load(Ordering::Relaxed),
        }
    }
}

/// One leaked executor in the pool behind `attach_pooled` (never freed, so wakers made by
/// it stay valid for the life of the process).
#[cfg(feature = "alloc")]
struct PoolEntry {
    type_id: core::any::TypeId,
    /// The `Executor<N, S>` `type_id` names.
    exec: *const (),
    next: *const PoolEntry,
}

#[cfg(feature = "alloc")]
static POOL: AtomicPtr<PoolEntry> = AtomicPtr::new(ptr::null_mut());

/// Attach an executor from the process-wide pool: a detached one of this type, or a newly
/// leaked one (pushed on the pool). Memory is bounded by the most executors of each type
/// attached at once.
#[cfg(feature = "alloc")]
pub(crate) fn attach_pooled<const N: usize, const S: usize>(wake: &'static WakeEntry) -> ExecRef {
    use alloc::boxed::Box;
    let type_id = core::any::TypeId::of::<Executor<N, S>>();
    let mut entry = POOL.load(Ordering::Acquire).cast_const();
    while !entry.is_null() {
        // SAFETY: pool entries are leaked (never freed) and immutable once published.
        let e = unsafe { &*entry };
        if e.type_id == type_id {
            // SAFETY: the entry's type id says `exec` is a leaked `Executor<N, S>`.
            let exec: &'static Executor<N, S> = unsafe { &*e.exec.cast::<Executor<N, S>>() };
            if let Ok(r) = exec.attach(wake) {
                return r;
            }
        }
        entry = e.next;
    }
    let exec: &'static Executor<N, S> = Box::leak(Box::new(Executor::new()));
    let attached = exec.attach_fresh(wake);
    let new: &'static mut PoolEntry = Box::leak(Box::new(PoolEntry {
        type_id,
        exec: (exec as *const Executor<N, S>).cast(),
        next: ptr::null(),
    }));
    let mut head = POOL.load(Ordering::Acquire);
    loop {
        new.next = head;
        match POOL.compare_exchange_weak(
            head,
            &mut *new as *mut PoolEntry,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return attached,
            Err(h) => head = h,
        }
    }
}

/// `true` while this thread is inside a loop's poll of a task (leaf futures need it).
pub fn in_task() -> bool {
    current::in_loop()
}

/// Inside the crate so Miri checks the executor's `unsafe` (type-erased futures in fixed slots,
/// the waker vtable, drops, the current-loop frame), including a waker that outlives its task.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use crate::{sleep, with_current_loop, yield_now, EventLoop, Remote};
    use core::time::Duration;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::vec::Vec;

    type Lp = EventLoop<SimPoller<4>, 4, 8, 4>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Counts its drops: every capture must be dropped exactly once.
    struct DropCount(Rc<Cell<u32>>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn tasks_run_finish_and_free_their_slots_and_captures() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let rc = Rc::new(());
        let held = rc.clone();
        let id = lp
            .spawn(async move {
                yield_now().await;
                sleep(ms(5)).await.unwrap();
                drop(held);
            })
            .map_err(|r| r.error)
            .unwrap();
        assert!(EXEC.is_alive(id));
        lp.run_sync(sleep(ms(10)), None).unwrap().unwrap();
        assert!(!EXEC.is_alive(id));
        assert_eq!(Rc::strong_count(&rc), 1);
        // A waker kept after its task finished only marks a free slot ready: harmless.
        let stale = EXEC.tasks[id.index as usize].header.waker();
        stale.wake_by_ref();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        let held = rc.clone();
        lp.spawn(async move { drop(held) })
            .map_err(|r| r.error)
            .unwrap();
        stale.wake();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(Rc::strong_count(&rc), 1);
        assert!(EXEC.is_empty());
    }

    #[test]
    fn closing_the_loop_drops_pending_tasks() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let rc = Rc::new(());
        let held = rc.clone();
        lp.spawn(async move {
            let _ = sleep(Duration::from_secs(60)).await;
            drop(held);
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.timer_count(), 1);
        lp.close();
        assert_eq!(Rc::strong_count(&rc), 1);
        assert!(EXEC.is_empty());
    }

    #[test]
    fn nested_with_current_loop_gets_none_and_leaf_futures_dropped_inside_are_cleaned_up() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 512> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let out = lp
            .run_sync(
                async {
                    // Arm a sleep, a one-shot watch and an I/O registration.
                    let mut s = sleep(Duration::from_secs(60));
                    let mut r = crate::readable(5);
                    let reg = crate::IoRegistration::new(6).unwrap();
                    core::future::poll_fn(|cx| {
                        assert!(Pin::new(&mut s).poll(cx).is_pending());
                        assert!(Pin::new(&mut r).poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                    let before =
                        with_current_loop(|lp: &mut Lp| (lp.timer_count(), lp.handler_count()));
                    // Inside the closure: nested calls see no loop, drops are deferred.
                    let inside = with_current_loop(|lp: &mut Lp| {
                        let nested = with_current_loop(|lp2: &mut Lp| lp2.timer_count());
                        drop(s);
                        drop(r);
                        drop(reg);
                        (nested, lp.timer_count(), lp.handler_count())
                    });
                    let after =
                        with_current_loop(|lp: &mut Lp| (lp.timer_count(), lp.handler_count()));
                    (before, inside, after)
                },
                None,
            )
            .unwrap();
        let (before, inside, after) = out;
        assert_eq!(before, Some((1, 2)));
        // Nothing was cleaned up while the loop's `&mut` was out; nested got `None`.
        assert_eq!(inside, Some((None, 1, 2)));
        // Applied as soon as the closure returned.
        assert_eq!(after, Some((0, 0)));
        assert_eq!((lp.timer_count(), lp.handler_count()), (0, 0));
    }

    #[test]
    fn run_sync_drops_its_future_in_place_when_its_poll_panics() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let drops = Rc::new(Cell::new(0));
        let held = DropCount(drops.clone());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.run_sync(
                async move {
                    let _held = held;
                    let _ = sleep(ms(5)).await;
                    panic!("boom");
                },
                None,
            )
        }));
        assert!(caught.is_err());
        assert_eq!(drops.get(), 1);
        // The sleep's timer went with the future and the loop can run again.
        assert_eq!(lp.timer_count(), 0);
        assert!(!lp.is_running());
        assert_eq!(lp.run_sync(async { 7 }, None).unwrap(), 7);
    }

    #[test]
    fn run_sync_drops_its_future_when_a_callback_panics() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let drops = Rc::new(Cell::new(0));
        let held = DropCount(drops.clone());
        let _ = lp.call_later(ms(1), |_| panic!("callback"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.run_sync(
                async move {
                    let _held = held;
                    let _ = sleep(ms(5)).await;
                },
                None,
            )
        }));
        // Whether the loop reports the panic and goes on or lets it escape, the future is
        // dropped exactly once, and its own sleep is cancelled.
        let _ = caught;
        assert_eq!(drops.get(), 1);
        assert!(!lp.is_running());
    }

    #[test]
    fn a_task_that_panics_is_dropped_once_and_its_slot_freed() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<1, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let drops = Rc::new(Cell::new(0));
        let held = DropCount(drops.clone());
        let id = lp
            .spawn(async move {
                let _held = held;
                let _ = sleep(ms(1)).await;
                panic!("task");
            })
            .map_err(|r| r.error)
            .unwrap();
        for _ in 0..4 {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = lp.run_once(Some(ms(1)));
            }));
        }
        assert_eq!(drops.get(), 1);
        assert!(!EXEC.is_alive(id));
        assert!(EXEC.is_empty());
        assert_eq!(lp.timer_count(), 0);
        // The one slot is free again.
        assert!(lp.spawn(async {}).is_ok());
    }

    #[test]
    fn a_panicking_task_is_reported_to_the_error_hook_and_the_loop_goes_on() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        lp.set_error_hook(move |f| {
            if let crate::Failure::Panicked {
                source, message, ..
            } = f
            {
                s.borrow_mut()
                    .push((source, std::string::String::from(message.as_str())));
            }
        });
        let drops = Rc::new(Cell::new(0));
        let held = DropCount(drops.clone());
        let id = lp
            .spawn(async move {
                let _held = held;
                yield_now().await;
                panic!("task failed");
            })
            .map_err(|r| r.error)
            .unwrap();
        let out = lp.run_sync(
            async {
                sleep(ms(3)).await.unwrap();
                5
            },
            None,
        );
        assert_eq!(out, Ok(5));
        assert_eq!(drops.get(), 1);
        assert!(EXEC.is_empty());
        assert_eq!(
            *seen.borrow(),
            [(
                crate::Source::Task { id },
                std::string::String::from("task failed")
            )]
        );
    }

    #[test]
    fn spawn_after_the_loop_is_dropped_is_refused_and_hands_the_future_back() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        drop(lp);
        assert!(!EXEC.is_attached());
        let drops = Rc::new(Cell::new(0));
        let held = DropCount(drops.clone());
        let refused = EXEC
            .spawn(async move {
                let _held = held;
            })
            .err()
            .unwrap();
        assert_eq!(refused.error, Error::NotAttached);
        assert_eq!(drops.get(), 0);
        drop(refused);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn an_executor_reattaches_to_a_new_loop_after_close_and_drop() {
        static REMOTES: [Remote<Lp, 4>; 3] = [const { Remote::new() }; 3];
        static EXEC: Executor<2, 256> = Executor::new();
        for remote in &REMOTES {
            let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
            lp.attach_remote(remote).unwrap();
            lp.attach_executor(&EXEC).unwrap();
            let n = lp
                .run_sync(
                    async {
                        sleep(ms(1)).await.unwrap();
                        3
                    },
                    None,
                )
                .unwrap();
            assert_eq!(n, 3);
            lp.spawn(async {
                let _ = sleep(Duration::from_secs(9)).await;
            })
            .map_err(|r| r.error)
            .unwrap();
            lp.close();
            assert!(!EXEC.is_attached());
            assert!(EXEC.is_empty());
            // Dropping the closed loop does not touch the executor again.
        }
    }

    #[test]
    fn two_loops_on_one_thread_each_keep_their_executor() {
        static RA: Remote<Lp, 4> = Remote::new();
        static RB: Remote<Lp, 4> = Remote::new();
        static EA: Executor<2, 256> = Executor::new();
        static EB: Executor<2, 256> = Executor::new();
        let mut a: Lp = EventLoop::with_poller(SimPoller::new());
        let mut b: Lp = EventLoop::with_poller(SimPoller::new());
        a.attach_remote(&RA).unwrap();
        a.attach_executor(&EA).unwrap();
        b.attach_remote(&RB).unwrap();
        b.attach_executor(&EB).unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let (la, lb) = (log.clone(), log.clone());
        lp_spawn(&mut a, async move { la.borrow_mut().push('a') });
        lp_spawn(&mut b, async move { lb.borrow_mut().push('b') });
        a.run_once(Some(Duration::ZERO)).unwrap();
        a.run_once(Some(Duration::ZERO)).unwrap();
        b.run_once(Some(Duration::ZERO)).unwrap();
        b.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(*log.borrow(), ['a', 'b']);
        #[cfg(feature = "std")]
        {
            // Both executors accept spawns from their (common) thread.
            assert!(EA.spawn(async {}).is_ok());
            assert!(EB.spawn(async {}).is_ok());
        }
    }

    fn lp_spawn(lp: &mut Lp, f: impl Future<Output = ()> + 'static) {
        lp.spawn(f).map_err(|r| r.error).unwrap();
    }

    #[test]
    fn a_task_spawned_from_a_callback_is_first_polled_in_the_next_iteration() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let polled_in = Rc::new(Cell::new(0u64));
        let p = polled_in.clone();
        lp.add_callback(move |lp: &mut Lp| {
            let p = p.clone();
            lp.spawn(async move {
                let it = with_current_loop(|lp: &mut Lp| lp.counters().iterations).unwrap();
                p.set(it);
            })
            .map_err(|r| r.error)
            .unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(polled_in.get(), 0, "polled in the callback's own iteration");
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(polled_in.get(), 2);
    }

    #[test]
    fn a_task_woken_by_a_callback_runs_in_the_next_iteration() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let waker: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
        let resumed = Rc::new(Cell::new(0u64));
        let (w, r) = (waker.clone(), resumed.clone());
        lp.spawn(async move {
            let mut first = true;
            core::future::poll_fn(|cx| {
                if first {
                    first = false;
                    *w.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            r.set(with_current_loop(|lp: &mut Lp| lp.counters().iterations).unwrap());
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 1: first poll
        let w = waker.clone();
        lp.add_callback(move |_: &mut Lp| w.borrow_mut().take().unwrap().wake())
            .map_err(|r| r.error)
            .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 2: the callback wakes it
        assert_eq!(resumed.get(), 0);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(resumed.get(), 3);
    }

    #[test]
    fn run_sync_runs_the_callbacks_queued_before_it_first() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        lp.add_callback(move |_: &mut Lp| l.borrow_mut().push("init"))
            .map_err(|r| r.error)
            .unwrap();
        let l = log.clone();
        lp.run_sync(async move { l.borrow_mut().push("main") }, None)
            .unwrap();
        assert_eq!(*log.borrow(), ["init", "main"]);
    }

    #[test]
    fn sleep_zero_and_sleep_until_the_past_yield_one_iteration() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let start = lp.counters().iterations;
        lp.run_sync(
            async {
                for _ in 0..5 {
                    sleep(Duration::ZERO).await.unwrap();
                }
                let past = with_current_loop(|lp: &mut Lp| lp.now()).unwrap();
                for _ in 0..5 {
                    crate::sleep_until(past).await.unwrap();
                }
            },
            None,
        )
        .unwrap();
        // Ten yields: at least ten more iterations (and no time passed).
        assert!(lp.counters().iterations - start >= 10);
        assert_eq!(lp.now().as_nanos(), 0);
    }

    #[test]
    fn sleep_with_a_full_timer_heap_fails_with_full_instead_of_spinning() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        for _ in 0..8 {
            let _ = lp.call_later(Duration::from_secs(100), |_| {});
        }
        assert_eq!(lp.timer_count(), 8);
        let start = lp.counters().iterations;
        let out = lp.run_sync(sleep(ms(5)), None).unwrap();
        assert_eq!(
            out,
            Err(Error::Full {
                what: Resource::Timers
            })
        );
        // One iteration to run the future, no busy loop.
        assert!(lp.counters().iterations - start <= 2);
        let t = lp.run_sync(crate::timeout(ms(5), core::future::pending::<()>()), None);
        assert_eq!(
            t.unwrap(),
            Err(Error::Full {
                what: Resource::Timers
            })
        );
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn an_owned_executor_is_reused_after_its_loop_is_dropped() {
        static REMOTES: [Remote<Lp, 4>; 3] = [const { Remote::new() }; 3];
        fn pooled() -> usize {
            let mut n = 0;
            let mut e = POOL.load(Ordering::Acquire).cast_const();
            while !e.is_null() {
                // SAFETY: pool entries are never freed.
                let entry = unsafe { &*e };
                if entry.type_id == core::any::TypeId::of::<Executor<3, 200>>() {
                    n += 1;
                }
                e = entry.next;
            }
            n
        }
        let drops = Rc::new(Cell::new(0));
        for remote in &REMOTES {
            let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
            lp.attach_remote(remote).unwrap();
            lp.attach_owned_executor::<3, 200>().unwrap();
            let held = DropCount(drops.clone());
            lp.spawn(async move {
                let _held = held;
                let _ = sleep(Duration::from_secs(9)).await;
            })
            .map_err(|r| r.error)
            .unwrap();
            assert_eq!(lp.run_sync(async { 1 }, None).unwrap(), 1);
        }
        assert_eq!(drops.get(), 3);
        assert_eq!(pooled(), 1);
    }

    #[test]
    fn a_registration_used_by_another_loop_fails_and_its_slot_is_freed_in_its_own() {
        static RA: Remote<Lp, 4> = Remote::new();
        static RB: Remote<Lp, 4> = Remote::new();
        static EA: Executor<2, 256> = Executor::new();
        static EB: Executor<2, 256> = Executor::new();
        let mut a: Lp = EventLoop::with_poller(SimPoller::new());
        let mut b: Lp = EventLoop::with_poller(SimPoller::new());
        a.attach_remote(&RA).unwrap();
        a.attach_executor(&EA).unwrap();
        b.attach_remote(&RB).unwrap();
        b.attach_executor(&EB).unwrap();
        let reg = a
            .run_sync(async { crate::IoRegistration::new(9) }, None)
            .unwrap()
            .unwrap();
        assert_eq!(a.handler_count(), 1);
        let (res, reg) = b
            .run_sync(
                async move {
                    let r = reg.ready(crate::Interest::READ).await;
                    (r, reg)
                },
                None,
            )
            .unwrap();
        assert_eq!(res, Err(Error::WrongLoop));
        assert_eq!(b.handler_count(), 0);
        // Dropped while `b` is current: queued for `a`, freed by `a`'s next iteration.
        b.run_sync(async move { drop(reg) }, None).unwrap();
        assert_eq!(a.handler_count(), 1);
        a.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(a.handler_count(), 0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn is_alive_and_len_are_race_free_from_other_threads() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<4, 256> = Executor::new();
        use std::sync::atomic::AtomicBool;
        static STOP: AtomicBool = AtomicBool::new(false);
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let id = EXEC.spawn(async {}).map_err(|r| r.error).unwrap();
        let watcher = std::thread::spawn(move || {
            let mut seen = 0usize;
            while !STOP.load(Ordering::Acquire) {
                seen += usize::from(EXEC.is_alive(id)) + EXEC.len();
                // Another thread may not spawn here.
                assert!(EXEC.spawn(async {}).is_err());
            }
            seen
        });
        for _ in 0..200 {
            let _ = EXEC.spawn(async { yield_now().await });
            lp.run_once(Some(Duration::ZERO)).unwrap();
        }
        STOP.store(true, Ordering::Release);
        let _ = watcher.join().unwrap();
        lp.close();
        assert!(EXEC.is_empty());
    }

    #[cfg(not(feature = "std"))]
    #[test]
    fn without_std_executor_spawn_is_accepted_only_inside_a_poll_of_its_loop() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        assert_eq!(
            EXEC.spawn(async {}).err().unwrap().error,
            Error::NotAttached
        );
        let inside = lp
            .run_sync(async { EXEC.spawn(async {}).is_ok() }, None)
            .unwrap();
        assert!(inside);
    }
}
