//! The executor's unsafe core: each task's header (what a one-word waker points to), the
//! waker vtable, the fixed, 16-byte aligned storage a future lives in, pinned by never moving,
//! and the type-erased poll/drop functions over it.
//!
//! **Warning:** everything here works on raw memory whose type only the vtable remembers.
//! The invariants: a slot's storage holds a live future exactly while its state is
//! `OCCUPIED` or `RUNNING` (and its `vtable` is set); a future is never moved out of its
//! slot; a waker's data pointer is always a `&'static TaskHeader`.

use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use portable_atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8};

use crate::remote::WakeEntry;

/// What every task's wakers share: where to look and how to wake a sleeping loop.
pub(super) struct Shared {
    pub(super) ready_any: AtomicBool,
    pub(super) sleeping: AtomicBool,
    /// The attached loop's remote wake (for wakes from other threads).
    pub(super) wake: AtomicPtr<WakeEntry>,
}

/// The part of a task a waker points to. `'static`: lives in the executor's static storage.
pub(crate) struct TaskHeader {
    pub(super) ready: AtomicBool,
    pub(super) shared: AtomicPtr<Shared>,
}

impl TaskHeader {
    pub(super) const fn new() -> Self {
        TaskHeader {
            ready: AtomicBool::new(false),
            shared: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(super) fn wake(&self) {
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
pub(super) struct FutureStorage<const S: usize>(pub(super) [MaybeUninit<u8>; S]);

/// The alignment of [`FutureStorage`].
pub(super) const SLOT_ALIGN: usize = 16;

pub(crate) struct TaskVTable {
    pub(super) poll: unsafe fn(*mut u8, &mut Context<'_>) -> Poll<()>,
    pub(super) drop: unsafe fn(*mut u8),
    /// The future's type name (`my_app::serve::{{closure}}`), for watchdog reports.
    pub(super) name: fn() -> &'static str,
}

pub(super) struct Erased<F>(PhantomData<F>);

impl<F: Future<Output = ()>> Erased<F> {
    pub(super) const VTABLE: TaskVTable = TaskVTable {
        poll: Self::poll,
        drop: Self::drop,
        name: core::any::type_name::<F>,
    };

    /// # Safety
    /// `p` holds a live `F` that is never moved (it stays in its slot until dropped).
    pub(super) unsafe fn poll(p: *mut u8, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: as the caller guarantees; the slot is never moved, so pinning holds.
        unsafe { Pin::new_unchecked(&mut *p.cast::<F>()) }.poll(cx)
    }

    /// # Safety
    /// `p` holds a live `F`, dead afterwards.
    pub(super) unsafe fn drop(p: *mut u8) {
        // SAFETY: as the caller guarantees.
        unsafe { ptr::drop_in_place(p.cast::<F>()) }
    }
}

pub(super) const EMPTY: u8 = 0;
pub(super) const OCCUPIED: u8 = 1;
pub(super) const RUNNING: u8 = 2;
/// Storage handed out by `reserve`, not yet holding a future.
pub(super) const RESERVED: u8 = 3;
/// A joined task ended; its slot is kept for its [`JoinHandle`](super::JoinHandle): it holds
/// the output (a [`JoinCell::Done`], `vtable` set) or nothing (aborted, panicked: `vtable`
/// unset), see `outcome`.
pub(super) const DONE: u8 = 4;

/// How a joined task ended (`TaskSlot::outcome`).
pub(super) const OUT_NONE: u8 = 0;
pub(super) const OUT_READY: u8 = 1;
pub(super) const OUT_ABORTED: u8 = 2;
pub(super) const OUT_PANICKED: u8 = 3;

/// A joined task's future and then, in the same storage, its output.
pub(super) enum JoinCell<F: Future> {
    Running(F),
    Done(F::Output),
    Gone,
}

impl<F: Future> Future for JoinCell<F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `F` is structurally pinned: it is polled in place and only ever dropped in
        // place (by `Pin::set` below); the output is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let JoinCell::Running(f) = this else {
            return Poll::Ready(());
        };
        // SAFETY: as above: `f` lives inside the pinned cell and is never moved.
        match unsafe { Pin::new_unchecked(f) }.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(out) => {
                let p: *mut Self = this;
                /// Leaves the cell `Gone` if dropping `F` unwinds (it is dropped then).
                struct Gone<F: Future>(*mut JoinCell<F>);
                impl<F: Future> Drop for Gone<F> {
                    fn drop(&mut self) {
                        // SAFETY: the cell's old value was dropped (or is being abandoned by
                        // the unwinding drop): overwrite without dropping it again.
                        unsafe { ptr::write(self.0, JoinCell::Gone) };
                    }
                }
                let gone = Gone(p);
                // SAFETY: `F` is dropped in place, exactly once (never polled again: the cell
                // is overwritten right after, or by `gone` if this unwinds).
                unsafe { ptr::drop_in_place(p) };
                core::mem::forget(gone);
                // SAFETY: the old value is dead; the storage is valid for a `Self`.
                unsafe { ptr::write(p, JoinCell::Done(out)) };
                Poll::Ready(())
            }
        }
    }
}

impl<F: Future> JoinCell<F> {
    /// Move the output out, leaving `Gone`.
    ///
    /// # Safety
    /// `p` holds a live `JoinCell<F>` (on the loop thread, not being polled) and `out` is
    /// valid for writes.
    pub(super) unsafe fn take(p: *mut u8, out: *mut Option<F::Output>) {
        // SAFETY: as the caller guarantees. Only the unpinned output is moved out; a
        // `Running` future is left alone.
        let cell = unsafe { &mut *p.cast::<JoinCell<F>>() };
        if matches!(cell, JoinCell::Done(_)) {
            if let JoinCell::Done(v) = core::mem::replace(cell, JoinCell::Gone) {
                // SAFETY: as the caller guarantees.
                unsafe { *out = Some(v) };
            }
        }
    }
}

pub(super) struct TaskSlot<const S: usize> {
    pub(super) header: TaskHeader,
    /// Written by the loop thread, readable anywhere (`is_alive`).
    pub(super) state: AtomicU8,
    pub(super) generation: AtomicU32,
    // Loop-thread-only state below (see the `Sync` impl).
    /// Chosen for this iteration's poll (`begin_iteration`).
    pub(super) scheduled: Cell<bool>,
    pub(super) vtable: Cell<Option<&'static TaskVTable>>,
    /// A [`JoinHandle`](super::JoinHandle) waits for this task: the slot is kept (`DONE`)
    /// when it ends, until the handle takes the outcome or is dropped.
    pub(super) handle: Cell<bool>,
    /// Abort requested while the task was running: dropped when its poll returns.
    pub(super) abort: Cell<bool>,
    /// How a joined task ended (`OUT_*`), valid in `DONE`.
    pub(super) outcome: Cell<u8>,
    /// The handle's waker.
    pub(super) joiner: Cell<Option<Waker>>,
    pub(super) storage: UnsafeCell<FutureStorage<S>>,
}

impl<const S: usize> TaskSlot<S> {
    pub(super) const fn new() -> Self {
        TaskSlot {
            header: TaskHeader::new(),
            state: AtomicU8::new(EMPTY),
            scheduled: Cell::new(false),
            generation: AtomicU32::new(0),
            vtable: Cell::new(None),
            handle: Cell::new(false),
            abort: Cell::new(false),
            outcome: Cell::new(OUT_NONE),
            joiner: Cell::new(None),
            storage: UnsafeCell::new(FutureStorage([MaybeUninit::uninit(); S])),
        }
    }

    pub(super) fn storage_ptr(&self) -> *mut u8 {
        // SAFETY: only a raw pointer is formed; no reference to the storage is created.
        unsafe { ptr::addr_of_mut!((*self.storage.get()).0).cast::<u8>() }
    }
}
