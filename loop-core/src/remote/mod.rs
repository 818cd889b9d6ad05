//! Handing work to the loop from other threads and from signal handlers: [`Remote`] and
//! [`LoopHandle`].
//!
//! A [`Remote`] is a bounded, lock-free, multi-producer single-consumer queue of closures,
//! placed in `'static` storage (a `static`, or leaked once), and attached to one loop with
//! [`EventLoop::attach_remote`](crate::EventLoop::attach_remote). Producers use a
//! [`LoopHandle`] (`Copy + Send + Sync`):
//!
//! * `add_callback` stores the closure inline (no allocation) in a cell of the ring; when the
//!   ring is full the closure comes back inside [`Refused`] — nothing is lost;
//! * a burst of adds costs one notifier write: an atomic "wake pending" flag lets only the first
//!   producer after the loop last looked write to the notifier;
//! * everything on the producer side is atomics plus, at most, one `write(2)` (or `kevent`),
//!   so it is **async-signal-safe**: a signal handler may call `add_callback` with a closure
//!   whose captures are plain data (its construction and drop must not allocate or lock);
//! * after the loop is closed or dropped, every call returns [`Error::Closed`].
//!
//! The ring is Dmitry Vyukov's bounded MPMC queue (used here with one consumer): each cell
//! carries a sequence number that says whether it is free for the producer at position `p`
//! (`seq == p`) or full for the consumer at `p` (`seq == p + 1`). A producer claims a position
//! with one compare-and-swap, writes the closure, then publishes it by storing `seq = p + 1`.
//!
//! The notifier the handles write to is a clone (`dup`) of the poller's, owned by the `Remote`.
//! Closing waits for producers that are between their "is it open?" check and their write
//! (an in-flight count), then drops the clone: no write can reach a notifier whose poller is
//! gone (a pipe with no reader would raise `SIGPIPE`). A producer enters with a load and a
//! compare-and-swap that only succeeds on an open state, so once `close` has set `CLOSED` the
//! count can only go down: `close` waits for the producers already inside (a few instructions
//! and one write each), never for the ones that keep arriving.
//!
//! ## Attaching again
//!
//! After its loop is closed or dropped a `Remote` is free again: the next
//! [`EventLoop::attach_remote`](crate::EventLoop::attach_remote) (on any thread, for any loop
//! of the same type) starts a new *attachment*. Closures still queued at close are dropped there,
//! exactly once, and the queue starts empty. Every attachment has a generation number, and
//! each [`LoopHandle`] carries the one it was made for: a handle from an earlier attachment
//! gets [`Error::Closed`] (with its closure back) forever, and never reaches the new loop.
//! (The generation is a `usize`: a handle kept across `2^32` attachments on a 32-bit target
//! would alias; on 64-bit targets this cannot happen.)

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering;
use portable_atomic::{AtomicBool, AtomicPtr, AtomicUsize};

use crate::error::{Errno, Error, Refused, Resource};
use crate::poller::Notify;
use crate::raw::inline_fn::InlineFn;

/// How a remote's loop is woken from outside it: by a signal handler (the process's signal
/// registry, `signal.rs`, holds a pointer to it) and by a task's waker on another thread (the
/// executor holds it). A field of the `'static` [`Remote`], so it lives as long as the program.
pub(crate) struct WakeEntry {
    /// Wakes the loop; `ctx` is the `Remote` the entry lives in.
    pub(crate) wake: fn(*const ()),
    pub(crate) ctx: AtomicPtr<()>,
}

/// A loop type that a [`Remote`] can serve: names the notifier the remote wakes it with.
/// Implemented by [`EventLoop`](crate::EventLoop).
///
/// ```
/// use loop_core::sim::{SimNotifier, SimPoller};
/// use loop_core::{EventLoop, RemoteTarget};
///
/// fn notifier_of<L: RemoteTarget>() -> &'static str {
///     core::any::type_name::<L::Notifier>()
/// }
/// assert_eq!(
///     notifier_of::<EventLoop<SimPoller>>(),
///     core::any::type_name::<SimNotifier>()
/// );
/// ```
pub trait RemoteTarget: 'static {
    /// The poller's notifier type.
    type Notifier: Notify;
}

/// A closure sent from another thread: `InlineFn` is `!Send` because loop closures may hold
/// `Rc`s; these were built from `Send` closures only.
pub(crate) struct SendFn<L: 'static>(pub(crate) InlineFn<L, (), ()>);

// SAFETY: a `SendFn` is only made (in `LoopHandle::add_callback`) from a closure that is
// `Send`, so moving it to the loop thread is sound.
unsafe impl<L> Send for SendFn<L> {}

struct Cell<L: 'static> {
    /// The cell's sequence number minus its index (so that all-zero is the initial state and
    /// `Remote::new` can be a `const fn`).
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<SendFn<L>>>,
}

// The state word: two flags and, above them, the number of producers inside a call.
//
//   IDLE (0)                 never attached, or closed: `attach` may claim it
//   CLOSED                   an `attach` is filling in the notifier: producers refuse
//   ATTACHED + n*IN_FLIGHT   open: producers enter (CAS n -> n+1) and leave (n -> n-1)
//   ATTACHED|CLOSED + n*..   closing: producers refuse without touching the word; `close`
//                            waits for n to reach 0, drains the queue, then stores IDLE
const IDLE: usize = 0;
const ATTACHED: usize = 1;
const CLOSED: usize = 2;
const IN_FLIGHT: usize = 4;
/// While `attach` fills in the notifier: neither idle nor open.
const CLAIMING: usize = CLOSED;

/// A fixed-capacity queue of closures for one loop at a time, fed from any thread and from
/// signal handlers. See the [module docs](self). `N` must be a power of two.
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 64> = Remote::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// let handle = lp.attach_remote(&REMOTE)?;
/// let worker = std::thread::spawn(move || handle.add_callback(|lp| lp.stop()));
/// worker.join().unwrap()?;
/// lp.run()?;
/// drop(lp);
///
/// // The loop is gone: its handles are refused, and the remote can serve a new loop.
/// assert_eq!(handle.add_callback(|_| {}).unwrap_err().error, Error::Closed);
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// let handle = lp.attach_remote(&REMOTE)?;
/// handle.stop()?;
/// lp.run()?;
/// # Ok::<(), Error>(())
/// ```
pub struct Remote<L: RemoteTarget, const N: usize> {
    cells: [Cell<L>; N],
    enqueue: AtomicUsize,
    /// The consumer's position; only the attached loop reads and writes it (an attachment
    /// hands it to the next through `state`: `close` stores `IDLE` with Release after its
    /// last `pop`, `attach` claims `IDLE` with Acquire).
    dequeue: UnsafeCell<usize>,
    /// `ATTACHED | CLOSED` bits, plus `IN_FLIGHT` per producer inside a call (see above).
    state: AtomicUsize,
    /// The generation of the current (or last) attachment; written only by `attach` while
    /// no producer is inside, read by producers once they are inside.
    epoch: AtomicUsize,
    wake_pending: AtomicBool,
    stop: AtomicBool,
    /// Written by `attach` (before `ATTACHED` is published), taken by `close` (after the
    /// in-flight count drained): never touched concurrently with a write.
    notifier: UnsafeCell<Option<L::Notifier>>,
    high_water: AtomicUsize,
    /// How signal handlers reach this remote (see [`crate::signal`]): `wake(ctx)` wakes the
    /// loop the remote serves at that moment, if any, and does nothing otherwise.
    pub(crate) wake_entry: WakeEntry,
}

// SAFETY: the shared parts are atomics; `cells` hand values from producers to the one consumer
// through the sequence protocol (a value is written only by the producer that claimed the
// cell and read only by the consumer after `seq` published it); `dequeue` is touched only by
// the attached loop, which is `!Send` and unique (`attach` succeeds only from `IDLE`, and the
// next attachment starts after `close` published `IDLE`); `notifier` is written before
// `ATTACHED` is published and taken only after `CLOSED` is set and no producer is in flight.
// The closures are `Send` (see `SendFn`), the notifier is `Send + Sync`.
unsafe impl<L: RemoteTarget, const N: usize> Sync for Remote<L, N> {}
// SAFETY: as above; a `Remote` owns `Send` closures and a `Send` notifier.
unsafe impl<L: RemoteTarget, const N: usize> Send for Remote<L, N> {}

impl<L: RemoteTarget, const N: usize> Default for Remote<L, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: RemoteTarget, const N: usize> Remote<L, N> {
    const VALID: () = assert!(
        N.is_power_of_two(),
        "Remote<_, N>: N must be a power of two"
    );

    /// An empty, unattached queue (`const`: can initialise a `static`). `N` must be a power
    /// of two (checked at compile time).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 8> = Remote::new(); // room for 8 queued closures
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// handle.add_callback(|lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(REMOTE.high_water(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        Remote {
            cells: [const {
                Cell {
                    seq: AtomicUsize::new(0),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                }
            }; N],
            enqueue: AtomicUsize::new(0),
            dequeue: UnsafeCell::new(0),
            state: AtomicUsize::new(IDLE),
            epoch: AtomicUsize::new(0),
            wake_pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            notifier: UnsafeCell::new(None),
            high_water: AtomicUsize::new(0),
            wake_entry: WakeEntry {
                wake: Self::wake_from_signal,
                ctx: AtomicPtr::new(core::ptr::null_mut()),
            },
        }
    }

    #[inline]
    fn seq(&self, index: usize) -> usize {
        self.cells[index]
            .seq
            .load(Ordering::Acquire)
            .wrapping_add(index)
    }

    #[inline]
    fn set_seq(&self, index: usize, seq: usize) {
        self.cells[index]
            .seq
            .store(seq.wrapping_sub(index), Ordering::Release);
    }

    /// Attach to a loop, taking ownership of `notifier` (a clone of the loop poller's), and
    /// start a new generation: handles made before (see [`LoopHandle::new`]) are refused.
    pub(crate) fn attach(&'static self, notifier: L::Notifier) -> Result<(), Error> {
        // Claim the attachment first so two loops can never both write `notifier`.
        if self
            .state
            .compare_exchange(IDLE, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::AlreadyAttached);
        }
        // SAFETY: the successful CAS from `IDLE` makes this the only thread that touches the
        // notifier until `ATTACHED` is published; producers refuse meanwhile (no `ATTACHED`),
        // and the previous attachment's `close` took its notifier before publishing `IDLE`.
        unsafe { *self.notifier.get() = Some(notifier) };
        // A fresh start: nothing pending from the previous attachment reaches this loop.
        self.wake_pending.store(false, Ordering::Relaxed);
        self.stop.store(false, Ordering::Relaxed);
        self.high_water.store(0, Ordering::Relaxed);
        // Generation 0 means "never attached": skip it when the counter wraps.
        let epoch = match self.epoch.load(Ordering::Relaxed).wrapping_add(1) {
            0 => 1,
            e => e,
        };
        self.epoch.store(epoch, Ordering::Relaxed);
        self.wake_entry
            .ctx
            .store(self as *const Self as *mut (), Ordering::Release);
        // Publishes all of the above to producers (their entering CAS is Acquire).
        self.state.store(ATTACHED, Ordering::Release);
        Ok(())
    }

    /// The signal path's wake: `ctx` is this remote (see `attach`). Async-signal-safe: a
    /// bounded number of atomic operations and at most one notifier write. Wakes whichever
    /// loop the remote serves now (at worst one spurious wake-up of a loop attached after the
    /// signal was raised); after `close` it does nothing and never touches the notifier.
    fn wake_from_signal(ctx: *const ()) {
        if ctx.is_null() {
            return;
        }
        // SAFETY: `ctx` was set by `attach` to this `'static` remote's address.
        let this = unsafe { &*(ctx as *const Self) };
        if this.enter().is_ok() {
            let _ = this.wake_inside();
            this.exit();
        }
    }

    /// Enter a producer call: `Err` unless attached and open. Never changes the state word
    /// unless it is open, so a closing remote's in-flight count only drains. Lock-free and
    /// async-signal-safe (a CAS retried only when another producer changed the word).
    #[inline]
    fn enter(&self) -> Result<(), Error> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (ATTACHED | CLOSED) != ATTACHED {
                return Err(Error::Closed);
            }
            // The count is bounded by the producer calls running at once (threads plus
            // nested signal handlers), far below `usize::MAX / IN_FLIGHT`.
            match self.state.compare_exchange_weak(
                s,
                s.wrapping_add(IN_FLIGHT),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => s = now,
            }
        }
    }

    /// Enter a producer call for the attachment of generation `epoch`: `Err` unless that
    /// attachment is the current one and open.
    #[inline]
    fn enter_for(&self, epoch: usize) -> Result<(), Error> {
        self.enter()?;
        // Inside, the generation cannot change (`attach` needs `close` to finish, which waits
        // for this call), and the Acquire CAS of `enter` read a state published by the
        // current `attach` (or an RMW after it), so this sees the current generation.
        if self.epoch.load(Ordering::Relaxed) != epoch {
            self.exit();
            return Err(Error::Closed);
        }
        Ok(())
    }

    #[inline]
    fn exit(&self) {
        self.state.fetch_sub(IN_FLIGHT, Ordering::Release);
    }

    /// The current generation (read by the attached loop's thread right after `attach`).
    fn epoch(&self) -> usize {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Wake the loop unless a wake is already pending. Called between `enter` and `exit`.
    #[inline]
    fn wake_inside(&self) -> Result<(), Errno> {
        // Dekker with the loop's `clear_wake`: the producer writes the queue, then reads the
        // flag; the loop writes the flag, then reads the queue. The queue operations are not
        // SeqCst, so a fence on each side keeps the write before the read (on x86 the queue's
        // CAS already is one; on ARM it is not), and one of the two sides always sees the other.
        core::sync::atomic::fence(Ordering::SeqCst);
        // A plain load first: in a burst the flag is already set, and a swap would bounce the
        // cache line between the producers and the loop on every call.
        if self.wake_pending.load(Ordering::SeqCst)
            || self.wake_pending.swap(true, Ordering::SeqCst)
        {
            return Ok(());
        }
        // SAFETY: between `enter` and `exit` the notifier is present and not being taken:
        // `close` sets `CLOSED` and then waits for the in-flight count to reach zero first.
        match unsafe { &*self.notifier.get() } {
            Some(n) => n.notify(),
            None => Ok(()),
        }
    }

    fn push<F>(&self, f: F) -> Result<(), Refused<F>>
    where
        F: FnOnce(&mut L) + Send + 'static,
    {
        let mut pos = self.enqueue.load(Ordering::Relaxed);
        let index = loop {
            let index = pos % N;
            let dif = self.seq(index) as isize - pos as isize;
            if dif == 0 {
                match self.enqueue.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break index,
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                return Err(Refused {
                    error: Error::Full {
                        what: Resource::Callbacks,
                    },
                    value: f,
                });
            } else {
                pos = self.enqueue.load(Ordering::Relaxed);
            }
        };
        let value = SendFn(InlineFn::once_named::<F, _>(move |lp: &mut L, ()| f(lp)));
        // SAFETY: the CAS above gave this producer exclusive ownership of the cell at
        // position `pos` until it publishes `seq = pos + 1`; the consumer does not read it
        // before then, and the cell is empty (its previous value was read out).
        unsafe { (*self.cells[index].value.get()).write(value) };
        self.set_seq(index, pos.wrapping_add(1));
        Ok(())
    }

    /// Take the oldest closure. Only the attached loop calls this.
    pub(crate) fn pop(&self) -> Option<SendFn<L>> {
        // SAFETY: only the attached loop (one `!Send` value) reaches `pop`, `len` and `close`,
        // and the reference does not outlive this call.
        let dequeue = unsafe { &mut *self.dequeue.get() };
        let pos = *dequeue;
        let index = pos % N;
        if self.seq(index) != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: `seq == pos + 1` means a producer wrote this cell and published it
        // (Acquire in `seq` pairs with its Release), and only this consumer reads it, once.
        let value = unsafe { (*self.cells[index].value.get()).assume_init_read() };
        self.set_seq(index, pos.wrapping_add(N));
        *dequeue = pos.wrapping_add(1);
        Some(value)
    }

    /// How many closures are queued (claimed cells, including ones being written), without
    /// touching the high-water mark.
    #[inline]
    fn queued(&self) -> usize {
        // SAFETY: read by the attached loop only (see `pop`).
        let dequeue = unsafe { *self.dequeue.get() };
        self.enqueue
            .load(Ordering::Acquire)
            .wrapping_sub(dequeue)
            .min(N)
    }

    /// How many closures are queued, raising the high-water mark to it. Only the attached
    /// loop writes the mark (and `attach`, before that loop exists), so a plain load and a
    /// store when it grows replace a locked read-modify-write.
    pub(crate) fn len(&self) -> usize {
        let len = self.queued();
        if len > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(len, Ordering::Relaxed);
        }
        len
    }

    /// The loop is about to look at the queue: the next producer must wake it again.
    pub(crate) fn clear_wake(&self) {
        // The flag store and the queue reads that follow are kept in order by the SeqCst
        // fence, which pairs with the one in `wake_inside` (Dekker with fences: each side
        // writes its word, fences, then reads the other's, so if the producer's fence comes
        // second in the single total order of SeqCst fences it reads `false` and writes the
        // notifier, and if it comes first the loop's queue reads see its push). The store
        // needs nothing stronger than the fence: one barrier per iteration, not two (a SeqCst
        // store is an `xchg` on x86, a second full barrier before the fence's).
        self.wake_pending.store(false, Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    /// The loop's start of an iteration, in one call (one indirect call through
    /// [`RemoteQueue`] instead of three): re-arm the wake ([`clear_wake`](Self::clear_wake)),
    /// take a pending stop, and count the queue (raising the high-water mark).
    #[inline]
    fn begin(&self) -> (usize, bool) {
        self.clear_wake();
        let stop = self.take_stop();
        (self.len(), stop)
    }

    /// Whether a handle asked the loop to stop (and forget that it did).
    pub(crate) fn take_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) && self.stop.swap(false, Ordering::AcqRel)
    }

    /// The largest queue length the loop it serves (or last served) has seen; reset when the
    /// remote is attached again. Use it to size `N`.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 8> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// for _ in 0..3 {
    ///     handle.add_callback(|_| {})?;
    /// }
    /// handle.stop()?;
    /// lp.run()?;
    /// assert_eq!(REMOTE.high_water(), 3); // three were queued at once
    /// drop(lp);
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// assert_eq!(REMOTE.high_water(), 0); // a new attachment starts again
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Refuse all further calls, wait for producers inside a call to leave, drop the notifier
    /// clone and every queued closure (each exactly once), and make the remote free for the
    /// next `attach`. Only the attached loop calls this; on a remote that is not open (never
    /// attached, or already closed) it does nothing.
    ///
    /// Finishes in bounded time whatever other threads do: producers arriving after `CLOSED`
    /// is set never touch the in-flight count, so only the calls already inside are waited
    /// for (each is a few atomics and at most one notifier write away from leaving).
    pub(crate) fn close(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (ATTACHED | CLOSED) != ATTACHED {
                return;
            }
            match self.state.compare_exchange_weak(
                s,
                s | CLOSED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        let mut spins = 0u32;
        // Acquire pairs with each producer's Release `exit`: their pushes and notifier writes
        // happen before what follows.
        while self.state.load(Ordering::Acquire) != ATTACHED | CLOSED {
            spins = spins.wrapping_add(1);
            backoff(spins);
        }
        // SAFETY: `CLOSED` is set and no producer is in flight, so nobody reads the notifier
        // any more, and no new producer can enter; only this (the attached loop) writes it.
        drop(unsafe { (*self.notifier.get()).take() });
        self.finish_close();
    }

    /// Drop every queued closure, then publish `IDLE`. If a closure's `Drop` panics, the
    /// rest are still dropped (during unwinding; a second panic aborts, as for a `Vec`) and
    /// the remote is still freed: nothing is leaked, nothing dropped twice.
    fn finish_close(&self) {
        struct Resume<'a, L: RemoteTarget, const N: usize>(&'a Remote<L, N>);
        impl<L: RemoteTarget, const N: usize> Drop for Resume<'_, L, N> {
            fn drop(&mut self) {
                self.0.finish_close();
            }
        }
        let resume = Resume(self);
        // Every claimed cell is published: pushes happen only inside a call, and none is.
        while let Some(f) = self.pop() {
            drop(f);
        }
        core::mem::forget(resume);
        self.wake_pending.store(false, Ordering::Relaxed);
        self.stop.store(false, Ordering::Relaxed);
        // Hands `dequeue`, the cells and the flags to the next `attach` (Acquire there).
        self.state.store(IDLE, Ordering::Release);
    }
}

/// Wait a little while producers leave: spin first, then (with `std`) give the CPU to them,
/// which matters when there are more producer threads than cores.
#[inline]
fn backoff(spins: u32) {
    if spins < 64 {
        core::hint::spin_loop();
    } else {
        #[cfg(any(feature = "std", test))]
        {
            extern crate std;
            std::thread::yield_now();
        }
        #[cfg(not(any(feature = "std", test)))]
        core::hint::spin_loop();
    }
}

/// A handle to a loop for other threads and signal handlers: `Copy`, `Send`, `Sync`, no
/// allocation. Made by [`EventLoop::attach_remote`](crate::EventLoop::attach_remote).
///
/// A handle belongs to one attachment of its [`Remote`]: once that loop is closed or dropped,
/// every call returns [`Error::Closed`], also after the remote was attached to a new loop
/// (which gets its own handles).
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop, Remote};
///
/// type Lp = EventLoop<SimPoller, 4, 4, 4>;
/// static REMOTE: Remote<Lp, 4> = Remote::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// let handle = lp.attach_remote(&REMOTE)?;
/// let worker = std::thread::spawn(move || handle.add_callback(|lp| lp.stop()));
/// worker.join().unwrap()?;
/// lp.run()?; // the callback ran on this thread and stopped the loop
/// lp.close();
/// assert_eq!(handle.stop(), Err(Error::Closed));
/// # Ok::<(), loop_core::Error>(())
/// ```
pub struct LoopHandle<L: RemoteTarget, const N: usize> {
    remote: &'static Remote<L, N>,
    /// The generation of the attachment this handle was made for.
    epoch: usize,
}

impl<L: RemoteTarget, const N: usize> Clone for LoopHandle<L, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L: RemoteTarget, const N: usize> Copy for LoopHandle<L, N> {}

impl<L: RemoteTarget, const N: usize> core::fmt::Debug for LoopHandle<L, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoopHandle")
            .field("capacity", &N)
            .field("generation", &self.epoch)
            .finish()
    }
}

impl<L: RemoteTarget, const N: usize> LoopHandle<L, N> {
    /// A handle for the current attachment of `remote`: called by the attaching loop right
    /// after a successful `attach` (the generation cannot change until that loop closes).
    pub(crate) fn new(remote: &'static Remote<L, N>) -> Self {
        LoopHandle {
            remote,
            epoch: remote.epoch(),
        }
    }

    /// Run `f` on the loop thread in its next iteration (FIFO among remote callbacks; they run
    /// after the loop's own callbacks of that iteration). Wakes the loop if it is asleep; a
    /// burst of calls costs one wake. Async-signal-safe (see the module docs).
    ///
    /// # Errors
    /// `f` comes back inside [`Refused`] with [`Error::Full`] when `N` closures are queued, or
    /// [`Error::Closed`] when this handle's loop was closed or dropped (also once the remote
    /// serves another loop).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 2> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// handle.add_callback(|_| {})?;
    /// handle.add_callback(|lp| lp.stop())?;
    /// let refused = handle.add_callback(|_| {}).unwrap_err(); // two is the capacity
    /// assert!(matches!(refused.error, Error::Full { .. }));
    /// let _closure = refused.into_inner(); // handed back, not lost
    /// lp.run()?;
    /// handle.add_callback(|_| {})?; // room again
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_callback<F>(&self, f: F) -> Result<(), Refused<F>>
    where
        F: FnOnce(&mut L) + Send + 'static,
    {
        let r = self.remote;
        if let Err(error) = r.enter_for(self.epoch) {
            return Err(Refused { error, value: f });
        }
        let pushed = r.push(f);
        if pushed.is_ok() {
            // A failed wake leaves the callback queued: it runs at the loop's next wake-up.
            // eventfd and pipe writes only fail for a full counter/pipe, which already
            // guarantees a pending wake, so this is not reported.
            let _ = r.wake_inside();
        }
        r.exit();
        pushed
    }

    /// Make the loop stop as [`EventLoop::stop`](crate::EventLoop::stop) does, from any thread.
    ///
    /// # Errors
    /// [`Error::Closed`] when this handle's loop was closed or dropped; [`Error::Os`] if the
    /// wake could not be written (the stop is still recorded).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// lp.call_later(Duration::from_secs(3600), |_| {})?; // something to wait for
    /// std::thread::spawn(move || handle.stop()).join().unwrap()?;
    /// lp.run()?; // returns without waiting for the timer
    /// assert_eq!((lp.now().as_nanos(), lp.timer_count()), (0, 1));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn stop(&self) -> Result<(), Error> {
        let r = self.remote;
        r.enter_for(self.epoch)?;
        r.stop.store(true, Ordering::Release);
        let woke = r.wake_inside();
        r.exit();
        woke.map_err(Error::from)
    }

    /// Wake the loop without queueing anything (its next poll returns at once).
    ///
    /// # Errors
    /// As [`stop`](Self::stop).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// handle.wake()?;
    /// // With nothing to wait for, the simulation would report "blocked forever"; the wake
    /// // makes the poll return at once instead.
    /// lp.run_once(None)?;
    /// assert!(lp.run_once(None).is_err());
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn wake(&self) -> Result<(), Error> {
        let r = self.remote;
        r.enter_for(self.epoch)?;
        let woke = r.wake_inside();
        r.exit();
        woke.map_err(Error::from)
    }

    /// The largest number of queued closures the remote's current loop has seen at once
    /// (as [`Remote::high_water`]).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// handle.add_callback(|_| {})?;
    /// handle.add_callback(|lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(handle.high_water(), 2);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn high_water(&self) -> usize {
        self.remote.high_water()
    }
}

/// The loop's view of its attached [`Remote`], with the capacity erased.
pub(crate) trait RemoteQueue<L: 'static> {
    fn pop(&self) -> Option<SendFn<L>>;
    /// Start an iteration: clear the wake flag (producers from here on wake the poller
    /// again), take a pending stop, count the queue. Returns `(queued, stop)`.
    fn begin(&self) -> (usize, bool);
    /// Whether nothing is queued (no high-water update: the poll timeout's check).
    fn is_empty(&self) -> bool;
    fn close(&self);
}

impl<L: RemoteTarget, const N: usize> RemoteQueue<L> for Remote<L, N> {
    fn pop(&self) -> Option<SendFn<L>> {
        Remote::pop(self)
    }
    fn begin(&self) -> (usize, bool) {
        Remote::begin(self)
    }
    fn is_empty(&self) -> bool {
        self.queued() == 0
    }
    fn close(&self) {
        Remote::close(self)
    }
}

#[cfg(test)]
mod tests;

/// Attach a pooled `Remote<L, N>` with `attach` (the loop's `attach_remote`): a free one of
/// that type if the pool (`crate::raw::pool`) has one, else a new leaked one, published once
/// attached (also when that attach failed, for the next loop).
///
/// # Errors
/// What `attach` returns for a fresh remote (`Error::Os` when the notifier cannot be cloned).
#[cfg(feature = "alloc")]
pub(crate) fn attach_pooled<L: RemoteTarget, const N: usize, H>(
    mut attach: impl FnMut(&'static Remote<L, N>) -> Result<H, Error>,
) -> Result<H, Error> {
    let mut out = None;
    crate::raw::pool::find::<Remote<L, N>>(|remote| match attach(remote) {
        // Serving another loop: try the next one.
        Err(Error::AlreadyAttached) => false,
        other => {
            out = Some(other);
            true
        }
    });
    if let Some(out) = out {
        return out;
    }
    let remote: &'static Remote<L, N> =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(Remote::new()));
    let out = attach(remote);
    crate::raw::pool::publish(remote);
    out
}
