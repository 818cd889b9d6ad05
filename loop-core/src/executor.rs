//! Tasks on the loop: Tornado's coroutines as Rust `async`/`await`, without allocation.
//!
//! An [`Executor<N, S>`] holds `N` task slots of `S` bytes each, in `'static` storage (a
//! `static`: `Executor::new` is `const`). [`Executor::spawn`] moves a future into a free
//! slot; a future larger than `S` (or aligned above 16) **fails to compile**, a full executor
//! hands the future back in [`Refused`]. Attach it to a loop with
//! [`EventLoop::attach_executor`](crate::EventLoop::attach_executor): each iteration polls the
//! tasks that were woken before it started (after the loop's callbacks, before its timers), so
//! a task that wakes itself (`yield_now`) runs again in the next iteration, exactly like
//! Tornado's `gen.moment`.
//!
//! **Wakers are one word** — a pointer to the task's header, which lives as long as the
//! program. Waking sets the task's ready flag; a waker that outlives its task only marks an
//! empty or reused slot ready, which at worst causes a spurious poll (allowed by the `Future`
//! contract). No waker can ever reach freed memory (embassy#181).
//!
//! **Cross-thread wakes** go through the loop's attached [`Remote`](crate::Remote) notifier,
//! and only when the loop is asleep in its poller: the loop raises a `sleeping` flag before
//! its last look at the ready flags, a waker sets its ready flag before looking at `sleeping`
//! (both `SeqCst`), so one of them always sees the other and no wake is lost, while wakes
//! from the loop thread itself never cost a system call.
//!
//! This module and `current.rs` hold the executor's `unsafe`: type-erased futures in
//! fixed storage (like `inline_fn.rs`), pinned by never moving, and the waker vtable.

use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::marker::PhantomData;
use core::mem::{align_of, size_of, MaybeUninit};
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::current::{self, LoopOps};
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

struct TaskVTable {
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

struct TaskSlot<const S: usize> {
    header: TaskHeader,
    // Loop-thread-only state below (see the `Sync` impl).
    state: Cell<u8>,
    scheduled: Cell<bool>,
    generation: Cell<u32>,
    vtable: Cell<Option<&'static TaskVTable>>,
    storage: UnsafeCell<FutureStorage<S>>,
}

impl<const S: usize> TaskSlot<S> {
    const fn new() -> Self {
        TaskSlot {
            header: TaskHeader::new(),
            state: Cell::new(EMPTY),
            scheduled: Cell::new(false),
            generation: Cell::new(0),
            vtable: Cell::new(None),
            storage: UnsafeCell::new(FutureStorage([MaybeUninit::uninit(); S])),
        }
    }
}

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
/// let out = lp.run_sync(async { sleep(Duration::from_secs(2)).await; 42 }, None).unwrap();
/// assert_eq!((out, lp.now().as_nanos()), (42, 2_000_000_000));
/// ```
pub struct Executor<const N: usize, const S: usize = 1024> {
    tasks: [TaskSlot<S>; N],
    /// `run_sync`'s own future (on its stack) wakes through this header.
    main: TaskHeader,
    shared: Shared,
    /// Set once, by `attach`.
    attached: AtomicBool,
    /// Tasks alive.
    live: AtomicU32,
}

// SAFETY: the atomics (ready flags, `Shared`, `attached`, `live`) are shared with wakers on any
// thread. Everything else (`Cell`s, the future storage) is touched only by the loop thread
// the executor is attached to: `spawn` checks it is on that thread (thread-local marker with
// `std`; without `std` there is one thread), and polling and dropping happen inside that
// loop. Futures are not required to be `Send` because they never leave that thread.
unsafe impl<const N: usize, const S: usize> Sync for Executor<N, S> {}

impl<const N: usize, const S: usize> Default for Executor<N, S> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The executor attached to a loop on this thread (its address), for `spawn`'s check.
    static OWNED: Cell<usize> = const { Cell::new(0) };
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
            attached: AtomicBool::new(false),
            live: AtomicU32::new(0),
        }
    }

    pub(crate) fn attach(&'static self, wake: &'static WakeEntry) -> Result<(), Error> {
        if self.attached.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyAttached);
        }
        self.shared.wake.store(
            wake as *const WakeEntry as *mut WakeEntry,
            Ordering::Release,
        );
        let shared = &self.shared as *const Shared as *mut Shared;
        self.main.shared.store(shared, Ordering::Release);
        for t in &self.tasks {
            t.header.shared.store(shared, Ordering::Release);
        }
        #[cfg(feature = "std")]
        OWNED.with(|o| o.set(self as *const Self as usize));
        Ok(())
    }

    fn on_loop_thread(&self) -> bool {
        if !self.attached.load(Ordering::Acquire) {
            return false;
        }
        #[cfg(feature = "std")]
        {
            OWNED.with(|o| o.get() == self as *const Self as usize)
        }
        #[cfg(not(feature = "std"))]
        {
            true
        }
    }

    /// Spawn `fut` as a task: it is first polled in the next iteration of the loop (like
    /// Tornado's `spawn_callback`). Call it on the loop's thread: from setup code, callbacks,
    /// handlers or other tasks. A future larger than `S` bytes is a compile error.
    ///
    /// # Errors
    /// `fut` comes back inside [`Refused`] with [`Error::Full`] when `N` tasks are alive, or
    /// [`Error::NotAttached`] when the executor is not attached to a loop on this thread.
    pub fn spawn<F>(&'static self, fut: F) -> Result<TaskId, Refused<F>>
    where
        F: Future<Output = ()> + 'static,
    {
        const {
            assert!(
                size_of::<F>() <= S && align_of::<F>() <= 16,
                "future too large for this Executor's task slots (raise S)"
            )
        };
        if !self.on_loop_thread() {
            return Err(Refused {
                error: Error::NotAttached,
                value: fut,
            });
        }
        let Some((index, slot)) = self
            .tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.state.get() == EMPTY)
        else {
            return Err(Refused {
                error: Error::Full {
                    what: Resource::Tasks,
                },
                value: fut,
            });
        };
        // SAFETY: the slot is EMPTY (no live future), its storage is big and aligned enough
        // (checked above), and only this thread touches it (checked above).
        unsafe { ptr::write((*slot.storage.get()).0.as_mut_ptr().cast::<F>(), fut) };
        slot.vtable.set(Some(&Erased::<F>::VTABLE));
        slot.state.set(OCCUPIED);
        self.live.fetch_add(1, Ordering::Relaxed);
        slot.header.wake();
        Ok(TaskId {
            index: index as u32,
            generation: slot.generation.get(),
        })
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
        // Check before the pair is moved into the task, so a refusal can hand it back.
        if !self.on_loop_thread() {
            return Err(Refused {
                error: Error::NotAttached,
                value: (fut, callback),
            });
        }
        if self.tasks.iter().all(|t| t.state.get() != EMPTY) {
            return Err(Refused {
                error: Error::Full {
                    what: Resource::Tasks,
                },
                value: (fut, callback),
            });
        }
        let task = async move {
            let output = fut.await;
            let mut pending =
                Some(move |lp: &mut crate::EventLoop<P, H, T, Q>| callback(lp, output));
            while let Some(cb) = pending.take() {
                let queued = current::with_current_loop(|lp: &mut crate::EventLoop<P, H, T, Q>| {
                    lp.add_callback(cb)
                });
                if let Some(Err(refused)) = queued {
                    // The loop's callback queue is full: try again next iteration.
                    pending = Some(refused.into_inner());
                    crate::yield_now().await;
                }
            }
        };
        match self.spawn(task) {
            Ok(id) => Ok(id),
            // Checked above: this thread owns the executor and a slot is free.
            Err(_) => unreachable!("add_future: spawn refused after its checks passed"),
        }
    }

    /// How many tasks are alive.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// Whether no task is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is still running (not finished, not dropped).
    pub fn is_alive(&self, id: TaskId) -> bool {
        self.tasks
            .get(id.index as usize)
            .is_some_and(|t| t.state.get() != EMPTY && t.generation.get() == id.generation)
    }
}

/// The loop's view of its executor, with the sizes erased.
pub(crate) trait ExecQueue {
    /// Poll the tasks that were ready when this call began. With a watchdog `threshold`, each
    /// poll is timed: polls at or above it go to `slow`, and the longest poll is returned.
    fn run_ready(
        &self,
        lp: *mut dyn LoopOps,
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration;
    fn any_ready(&self) -> bool;
    fn set_sleeping(&self, sleeping: bool);
    fn main_header(&self) -> &TaskHeader;
    /// Drop every task (loop closed).
    fn drop_all(&self, lp: *mut dyn LoopOps);
}

impl<const N: usize, const S: usize> Executor<N, S> {
    /// Poll one task slot that was scheduled.
    fn poll_slot(&self, slot: &TaskSlot<S>) {
        let Some(vtable) = slot.vtable.get() else {
            return;
        };
        slot.state.set(RUNNING);
        // SAFETY: this slot lives in a `'static` executor (`attach` takes `&'static self`).
        let header: &'static TaskHeader = unsafe { &*(&slot.header as *const TaskHeader) };
        let waker = header.waker();
        let mut cx = Context::from_waker(&waker);
        // SAFETY: the slot is OCCUPIED/RUNNING, so its storage holds the live future the
        // vtable was made for; it never moves; this is the loop thread.
        let done = unsafe { (vtable.poll)((*slot.storage.get()).0.as_mut_ptr().cast(), &mut cx) };
        if done.is_ready() {
            self.finish(slot, vtable);
        } else {
            slot.state.set(OCCUPIED);
        }
    }

    fn finish(&self, slot: &TaskSlot<S>, vtable: &'static TaskVTable) {
        slot.vtable.set(None);
        // SAFETY: the future is live (the vtable was still set) and is dropped exactly once,
        // here; the slot is marked empty right after.
        unsafe { (vtable.drop)((*slot.storage.get()).0.as_mut_ptr().cast()) };
        slot.state.set(EMPTY);
        slot.generation.set(slot.generation.get().wrapping_add(1));
        slot.header.ready.store(false, Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<const N: usize, const S: usize> ExecQueue for Executor<N, S> {
    fn run_ready(
        &self,
        lp: *mut dyn LoopOps,
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration {
        // Wakes from here on are seen by the next iteration.
        self.shared.ready_any.store(false, Ordering::SeqCst);
        let mut scheduled = 0;
        for t in &self.tasks {
            if t.state.get() == OCCUPIED && t.header.take_ready() {
                t.scheduled.set(true);
                scheduled += 1;
            }
        }
        // `run_sync`'s future is polled by `run_sync`, not here: keep the loop from sleeping.
        if self.main.ready.load(Ordering::SeqCst) {
            self.shared.ready_any.store(true, Ordering::SeqCst);
        }
        let mut longest = core::time::Duration::ZERO;
        if scheduled == 0 {
            return longest;
        }
        let _current = current::enter(lp);
        for (index, t) in self.tasks.iter().enumerate() {
            if !t.scheduled.replace(false) {
                continue;
            }
            let Some(threshold) = threshold else {
                self.poll_slot(t);
                continue;
            };
            // Taken before the poll: a task that finishes gets a new generation.
            let id = TaskId {
                index: index as u32,
                generation: t.generation.get(),
            };
            let name = t.vtable.get().map_or("", |v| (v.name)());
            let started = current::with_loop(|l| l.now());
            self.poll_slot(t);
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

    fn main_header(&self) -> &TaskHeader {
        &self.main
    }

    fn drop_all(&self, lp: *mut dyn LoopOps) {
        // Futures may cancel timers and fd watches as they drop: give them the loop.
        let _current = current::enter(lp);
        for t in &self.tasks {
            if t.state.get() == OCCUPIED {
                if let Some(vtable) = t.vtable.get() {
                    self.finish(t, vtable);
                }
            }
        }
    }
}

/// `true` while this thread is inside a loop's poll of a task (leaf futures need it).
pub fn in_task() -> bool {
    current::in_loop()
}

/// Inside the crate so Miri checks the executor's `unsafe` (type-erased futures in fixed slots,
/// the waker vtable, drops), including a waker that outlives its task.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use crate::{sleep, yield_now, EventLoop, Remote};
    use core::time::Duration;
    use std::rc::Rc;

    type Lp = EventLoop<SimPoller<4>, 4, 8, 4>;

    #[test]
    fn tasks_run_finish_and_free_their_slots_and_captures() {
        static REMOTE: Remote<Lp, 4> = Remote::new();
        static EXEC: Executor<2, 256> = Executor::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let rc = Rc::new(());
        let held = rc.clone();
        let id = EXEC
            .spawn(async move {
                yield_now().await;
                sleep(Duration::from_millis(5)).await;
                drop(held);
            })
            .map_err(|r| r.error)
            .unwrap();
        assert!(EXEC.is_alive(id));
        lp.run_sync(sleep(Duration::from_millis(10)), None).unwrap();
        assert!(!EXEC.is_alive(id));
        assert_eq!(Rc::strong_count(&rc), 1);
        // A waker kept after its task finished only marks a free slot ready: harmless.
        let stale = EXEC.tasks[id.index as usize].header.waker();
        stale.wake_by_ref();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        let held = rc.clone();
        EXEC.spawn(async move { drop(held) })
            .map_err(|r| r.error)
            .unwrap();
        stale.wake();
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
        EXEC.spawn(async move {
            sleep(Duration::from_secs(60)).await;
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
}
