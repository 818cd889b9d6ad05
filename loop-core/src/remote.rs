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
//! gone (a pipe with no reader would raise `SIGPIPE`).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Errno, Error, Refused, Resource};
use crate::inline_fn::InlineFn;
use crate::poller::Notify;
use crate::signal::WakeEntry;

/// A loop type that a [`Remote`] can serve: names the notifier the remote wakes it with.
/// Implemented by [`EventLoop`](crate::EventLoop).
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

const ATTACHED: usize = 1;
const CLOSED: usize = 2;
const IN_FLIGHT: usize = 4;

/// A fixed-capacity queue of closures for one loop, fed from any thread and from signal
/// handlers. See the [module docs](self). `N` must be a power of two.
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Remote};
///
/// type Lp = EventLoop<SimPoller>;
/// static REMOTE: Remote<Lp, 64> = Remote::new();
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// let handle = lp.attach_remote(&REMOTE).unwrap();
/// std::thread::spawn(move || handle.add_callback(|lp| lp.stop()).map_err(|r| r.error).unwrap())
///     .join()
///     .unwrap();
/// lp.run().unwrap();
/// ```
pub struct Remote<L: RemoteTarget, const N: usize> {
    cells: [Cell<L>; N],
    enqueue: AtomicUsize,
    /// The consumer's position; only the attached loop reads and writes it.
    dequeue: UnsafeCell<usize>,
    /// `ATTACHED | CLOSED` bits, plus `IN_FLIGHT` per producer inside a call.
    state: AtomicUsize,
    wake_pending: AtomicBool,
    stop: AtomicBool,
    /// Written once by `attach` (before `ATTACHED` is published), taken by `close` (after the
    /// in-flight count drained): never touched concurrently with a write.
    notifier: UnsafeCell<Option<L::Notifier>>,
    high_water: AtomicUsize,
    /// How signal handlers reach this remote (see [`crate::signal`]).
    pub(crate) wake_entry: WakeEntry,
}

// SAFETY: the shared parts are atomics; `cells` hand values from producers to the one consumer
// through the sequence protocol (a value is written only by the producer that claimed the
// cell and read only by the consumer after `seq` published it); `dequeue` is touched only by
// the attached loop, which is `!Send` and unique (`attach` succeeds once); `notifier` is
// written before `ATTACHED` is published and taken only after `CLOSED` is set and no producer
// is in flight. The closures are `Send` (see `SendFn`), the notifier is `Send + Sync`.
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

    /// An empty, unattached queue (`const`: can initialise a `static`).
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
            state: AtomicUsize::new(0),
            wake_pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            notifier: UnsafeCell::new(None),
            high_water: AtomicUsize::new(0),
            wake_entry: WakeEntry {
                wake: Self::wake_from_signal,
                ctx: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
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

    /// Attach to a loop, taking ownership of `notifier` (a clone of the loop poller's).
    pub(crate) fn attach(&'static self, notifier: L::Notifier) -> Result<(), Error> {
        // Claim the attachment first so two loops can never both write `notifier`.
        const CLAIMING: usize = CLOSED; // closed-and-not-attached: refuses producers meanwhile
        if self
            .state
            .compare_exchange(0, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::AlreadyAttached);
        }
        // SAFETY: the successful CAS from 0 makes this the only thread that ever writes the
        // notifier before `ATTACHED` is published; producers refuse while `CLOSED` is set.
        unsafe { *self.notifier.get() = Some(notifier) };
        self.wake_entry
            .ctx
            .store(self as *const Self as *mut (), Ordering::Release);
        self.state.store(ATTACHED, Ordering::Release);
        Ok(())
    }

    /// The signal path's wake: `ctx` is this remote (see `attach`). Async-signal-safe.
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

    /// Enter a producer call: `Err` unless attached and open.
    #[inline]
    fn enter(&self) -> Result<(), Error> {
        let s = self.state.fetch_add(IN_FLIGHT, Ordering::Acquire);
        if s & CLOSED != 0 || s & ATTACHED == 0 {
            self.state.fetch_sub(IN_FLIGHT, Ordering::Release);
            return Err(Error::Closed);
        }
        Ok(())
    }

    #[inline]
    fn exit(&self) {
        self.state.fetch_sub(IN_FLIGHT, Ordering::Release);
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
        // SAFETY: only the attached loop (one `!Send` value) reaches `pop`, `len` and `close`.
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

    /// How many closures are queued (claimed cells, including ones being written).
    pub(crate) fn len(&self) -> usize {
        // SAFETY: read by the attached loop only (see `pop`).
        let dequeue = unsafe { *self.dequeue.get() };
        let len = self
            .enqueue
            .load(Ordering::Acquire)
            .wrapping_sub(dequeue)
            .min(N);
        self.high_water.fetch_max(len, Ordering::Relaxed);
        len
    }

    /// The loop is about to look at the queue: the next producer must wake it again.
    pub(crate) fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
        // See `wake_inside`: the flag write must precede the queue reads that follow.
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Whether a handle asked the loop to stop (and forget that it did).
    pub(crate) fn take_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) && self.stop.swap(false, Ordering::AcqRel)
    }

    /// The largest queue length the loop has seen.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Refuse all further calls, wait for producers inside a call to leave, drop the notifier
    /// clone and every queued closure. Only the attached loop calls this.
    pub(crate) fn close(&self) {
        let prev = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            return;
        }
        // A producer inside a call is a few instructions and one write(2) away from leaving.
        while self.state.load(Ordering::Acquire) >= IN_FLIGHT {
            core::hint::spin_loop();
        }
        // SAFETY: `CLOSED` is set and no producer is in flight, so nobody reads the notifier
        // any more; only this (the attached loop) writes it.
        drop(unsafe { (*self.notifier.get()).take() });
        while self.pop().is_some() {}
    }
}

/// A handle to a loop for other threads and signal handlers: `Copy`, `Send`, `Sync`, no
/// allocation. Made by [`EventLoop::attach_remote`](crate::EventLoop::attach_remote).
pub struct LoopHandle<L: RemoteTarget, const N: usize> {
    remote: &'static Remote<L, N>,
}

impl<L: RemoteTarget, const N: usize> Clone for LoopHandle<L, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L: RemoteTarget, const N: usize> Copy for LoopHandle<L, N> {}

impl<L: RemoteTarget, const N: usize> core::fmt::Debug for LoopHandle<L, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoopHandle").field("capacity", &N).finish()
    }
}

impl<L: RemoteTarget, const N: usize> LoopHandle<L, N> {
    pub(crate) fn new(remote: &'static Remote<L, N>) -> Self {
        LoopHandle { remote }
    }

    /// Run `f` on the loop thread in its next iteration (FIFO among remote callbacks; they run
    /// after the loop's own callbacks of that iteration). Wakes the loop if it is asleep; a
    /// burst of calls costs one wake. Async-signal-safe (see the module docs).
    ///
    /// # Errors
    /// `f` comes back inside [`Refused`] with [`Error::Full`] when `N` closures are queued, or
    /// [`Error::Closed`] when the loop was closed or dropped (or not attached yet).
    pub fn add_callback<F>(&self, f: F) -> Result<(), Refused<F>>
    where
        F: FnOnce(&mut L) + Send + 'static,
    {
        let r = self.remote;
        if let Err(error) = r.enter() {
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
    /// [`Error::Closed`] when the loop was closed or dropped; [`Error::Os`] if the wake could
    /// not be written (the stop is still recorded).
    pub fn stop(&self) -> Result<(), Error> {
        let r = self.remote;
        r.enter()?;
        r.stop.store(true, Ordering::Release);
        let woke = r.wake_inside();
        r.exit();
        woke.map_err(Error::from)
    }

    /// Wake the loop without queueing anything (its next poll returns at once).
    ///
    /// # Errors
    /// As [`stop`](Self::stop).
    pub fn wake(&self) -> Result<(), Error> {
        let r = self.remote;
        r.enter()?;
        let woke = r.wake_inside();
        r.exit();
        woke.map_err(Error::from)
    }

    /// The largest number of queued closures the loop has seen at once.
    pub fn high_water(&self) -> usize {
        self.remote.high_water()
    }
}

/// Inside the crate so Miri (which runs only this crate's tests) checks the lock-free ring
/// with real threads.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use crate::EventLoop;
    use core::time::Duration;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    type Lp = EventLoop<SimPoller<4>, 2, 2, 2>;

    #[test]
    fn producers_on_threads_deliver_each_accepted_callback_exactly_once() {
        static REMOTE: Remote<Lp, 8> = Remote::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let handle = lp.attach_remote(&REMOTE).unwrap();
        let ran = Arc::new(AtomicU64::new(0));
        let per_thread = if cfg!(miri) { 20 } else { 2000 };
        let producers: std::vec::Vec<_> = (0..2)
            .map(|_| {
                let ran = ran.clone();
                std::thread::spawn(move || {
                    let mut refused = 0u64;
                    for _ in 0..per_thread {
                        let ran = ran.clone();
                        if handle
                            .add_callback(move |_: &mut Lp| {
                                ran.fetch_add(1, Ordering::Relaxed);
                            })
                            .is_err()
                        {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        let mut done = 0;
        while done < producers.len() {
            lp.run_once(Some(Duration::ZERO)).unwrap();
            done = producers.iter().filter(|p| p.is_finished()).count();
        }
        for p in producers {
            refused += p.join().unwrap();
        }
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(ran.load(Ordering::Relaxed) + refused, 2 * per_thread);
    }

    #[test]
    fn full_ring_hands_the_closure_back_and_frees_up_after_draining() {
        static REMOTE: Remote<Lp, 2> = Remote::new();
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let handle = lp.attach_remote(&REMOTE).unwrap();
        handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
        handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
        let refused = handle.add_callback(|_| {}).unwrap_err();
        assert_eq!(
            refused.error,
            Error::Full {
                what: Resource::Callbacks
            }
        );
        lp.run_once(Some(Duration::ZERO)).unwrap();
        handle
            .add_callback(refused.into_inner())
            .map_err(|r| r.error)
            .unwrap();
        lp.close();
    }
}
