//! Signals as loop events: the OS-free half.
//!
//! A platform signal handler (installed by the `ioloop` facade with `sigaction`) calls
//! [`deliver`], which is async-signal-safe (atomics and, per loop, one notifier write). The loop
//! takes its pending signals at the start of each iteration and runs the handlers registered
//! with [`EventLoop::add_signal_handler`](crate::EventLoop::add_signal_handler) on the loop
//! thread, like any callback.
//!
//! # Rules with several loops
//!
//! Any number of loops, on any threads, may handle signals, up to [`MAX_SIGNAL_LOOPS`] at once:
//!
//! * **Every loop that registered a signal gets it.** One arrival of `signo` sets a pending bit
//!   in *each* loop that handles `signo` and wakes each of them; one loop taking its signals
//!   never takes another's. Several arrivals between two iterations of a loop run its handler
//!   once (signals are not queued, as in POSIX).
//! * **Or registration fails, with the handler handed back.** A loop that would be the
//!   `MAX_SIGNAL_LOOPS + 1`-th to handle signals gets [`Error::Full`] with
//!   [`Resource::SignalHandlers`] — as does one whose own table ([`MAX_SIGNAL_HANDLERS`]) is
//!   full. Nothing is ever accepted and then silently lost.
//! * **The OS disposition is shared and counted.** The installer (for example
//!   `ioloop::signals::SIGACTION`) installs the process's handler for `signo` when the first
//!   loop adds it and puts the previous disposition back only when the last loop removes it
//!   (by `remove_signal_handler`, `close` or drop). Removing a signal from one loop never
//!   changes what another loop receives, and never restores a default disposition under a loop
//!   that still handles the signal.
//! * **A handler that was there first keeps running.** If the disposition replaced was a
//!   handler function (not `SIG_DFL` / `SIG_IGN`), the facade's handler calls it too, before
//!   the loops are woken (as `signal-hook-registry` does), and it is back in place once the
//!   last loop removed the signal.
//! * A loop's registry entry is claimed by its first `add_signal_handler` and released when it
//!   has no signal left, is closed or is dropped; a loop closed and created again (or a new
//!   one) claims an entry again. A loop that is leaked (`mem::forget`) keeps its entry.
//!
//! # The registry
//!
//! A fixed, process-wide array of [`MAX_SIGNAL_LOOPS`] entries (no allocation). Each entry has
//! an owner (the loop's wake: a field of its `'static` [`Remote`](crate::Remote)), the set of
//! signals the loop wants and the signals pending for it, each as two `AtomicU32` words for
//! signals 1..=63 (ARMv7-M has no 64-bit atomics), and a `state` word: a `LIVE` bit plus the
//! number of [`deliver`] calls reading the entry right now.
//!
//! * claim: compare-and-swap the owner from null to the loop's wake (so two loops never share
//!   an entry), clear the words, then set `LIVE` (Release);
//! * deliver: skip entries with no owner; count itself in with `fetch_add` on `state` and look
//!   at the `LIVE` bit it returned; only if live read the wanted set and the owner, set the
//!   pending bit, wake the owner; count itself out;
//! * release: clear `LIVE`, wait until no deliver is counted in (a deliver is a few atomics and
//!   one `write(2)` away from leaving, and one that interrupted this thread has already left),
//!   then clear the words and the owner. `LIVE` and the count share one atomic word, so a
//!   deliver either counted itself in before `LIVE` was cleared (and release waits for it) or
//!   saw it cleared (and touched nothing): no deliver ever reads a half-released entry, and
//!   none can wake a remote after its loop released the entry.

use core::sync::atomic::Ordering;
use portable_atomic::{AtomicPtr, AtomicU32};

use crate::remote::WakeEntry;

#[cfg(doc)]
use crate::{Error, Resource, MAX_SIGNAL_HANDLERS};

/// How many loops in the process can handle signals at the same time.
pub const MAX_SIGNAL_LOOPS: usize = 16;

/// `state`: the entry's owner and words are valid for deliveries.
const LIVE: u32 = 1;
/// `state`: one `deliver` reading the entry.
const READER: u32 = 2;

/// A signal number's word and bit in two-word masks. `None` outside 1..=63.
#[inline]
fn bit(signo: i32) -> Option<(usize, u32)> {
    if (1..=63).contains(&signo) {
        Some(((signo / 32) as usize, 1 << (signo % 32)))
    } else {
        None
    }
}

/// One loop's view of the signals.
struct Entry {
    /// The loop's wake; null when the entry is free.
    owner: AtomicPtr<WakeEntry>,
    /// `LIVE` plus `READER` per `deliver` inside.
    state: AtomicU32,
    /// Signals the loop handles.
    wants: [AtomicU32; 2],
    /// Signals that arrived and the loop has not taken yet.
    pending: [AtomicU32; 2],
}

impl Entry {
    const fn new() -> Self {
        Entry {
            owner: AtomicPtr::new(core::ptr::null_mut()),
            state: AtomicU32::new(0),
            wants: [AtomicU32::new(0), AtomicU32::new(0)],
            pending: [AtomicU32::new(0), AtomicU32::new(0)],
        }
    }
}

/// A loop's claimed registry entry (an index into the registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(usize);

/// The per-loop signal entries. Process-wide as [`REGISTRY`]; tests make their own.
pub(crate) struct Registry<const N: usize> {
    entries: [Entry; N],
}

impl<const N: usize> Registry<N> {
    pub(crate) const fn new() -> Self {
        Registry {
            entries: [const { Entry::new() }; N],
        }
    }

    /// The entry `wake` owns, if any. Loop thread only (the owner is written by its own loop).
    pub(crate) fn find(&self, wake: &'static WakeEntry) -> Option<Slot> {
        let key = wake as *const WakeEntry as *mut WakeEntry;
        self.entries
            .iter()
            .position(|e| e.owner.load(Ordering::Relaxed) == key)
            .map(Slot)
    }

    /// The entry `wake` owns, claiming a free one if it has none. `None` when all are taken.
    pub(crate) fn claim(&self, wake: &'static WakeEntry) -> Option<Slot> {
        if let Some(slot) = self.find(wake) {
            return Some(slot);
        }
        let key = wake as *const WakeEntry as *mut WakeEntry;
        for (i, e) in self.entries.iter().enumerate() {
            if e.owner
                .compare_exchange(
                    core::ptr::null_mut(),
                    key,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                // Not live yet: deliveries skip it while the words are cleared.
                for w in e.wants.iter().chain(e.pending.iter()) {
                    w.store(0, Ordering::Relaxed);
                }
                // Release: a deliver that sees `LIVE` sees the owner and the cleared words.
                e.state.fetch_or(LIVE, Ordering::Release);
                return Some(Slot(i));
            }
        }
        None
    }

    /// Give the entry back: after this no deliver reads it, and another loop may claim it.
    pub(crate) fn release(&self, slot: Slot) {
        let Some(e) = self.entries.get(slot.0) else {
            return;
        };
        e.state.fetch_and(!LIVE, Ordering::AcqRel);
        // Deliveries that counted themselves in while it was live are finishing (on other
        // threads: one that interrupted this thread has already returned).
        while e.state.load(Ordering::Acquire) & !LIVE != 0 {
            core::hint::spin_loop();
        }
        for w in e.wants.iter().chain(e.pending.iter()) {
            w.store(0, Ordering::Relaxed);
        }
        // Release: the next claimer sees the cleared words.
        e.owner.store(core::ptr::null_mut(), Ordering::Release);
    }

    /// Deliver `signo` to the entry's loop from now on.
    pub(crate) fn want(&self, slot: Slot, signo: i32) {
        if let (Some(e), Some((w, b))) = (self.entries.get(slot.0), bit(signo)) {
            // A stale arrival from an earlier registration must not run the new handler.
            e.pending[w].fetch_and(!b, Ordering::Relaxed);
            e.wants[w].fetch_or(b, Ordering::Release);
        }
    }

    /// Stop delivering `signo` to the entry's loop; forget an arrival not taken yet.
    pub(crate) fn unwant(&self, slot: Slot, signo: i32) {
        if let (Some(e), Some((w, b))) = (self.entries.get(slot.0), bit(signo)) {
            e.wants[w].fetch_and(!b, Ordering::Release);
            e.pending[w].fetch_and(!b, Ordering::Relaxed);
        }
    }

    /// Record `signo` in every live entry that wants it and wake each one. Async-signal-safe.
    pub(crate) fn deliver(&self, signo: i32) {
        let Some((w, b)) = bit(signo) else {
            return;
        };
        for e in &self.entries {
            if e.owner.load(Ordering::Relaxed).is_null() {
                continue;
            }
            let state = e.state.fetch_add(READER, Ordering::Acquire);
            if state & LIVE != 0 && e.wants[w].load(Ordering::Acquire) & b != 0 {
                // Before the wake: the loop clears its wake flag and then takes the pending
                // bits, the remote's wake reads the flag after this write (a SeqCst fence on
                // each side), so either the loop sees the bit or this wakes it.
                e.pending[w].fetch_or(b, Ordering::SeqCst);
                let owner = e.owner.load(Ordering::Acquire);
                if !owner.is_null() {
                    // SAFETY: a live entry's owner is the `WakeEntry` field of a `'static`
                    // remote, set by `claim` before `LIVE` and cleared by `release` only
                    // after this reader counted itself out.
                    let owner = unsafe { &*owner };
                    (owner.wake)(owner.ctx.load(Ordering::Acquire));
                }
            }
            e.state.fetch_sub(READER, Ordering::Release);
        }
    }

    /// Take the signals that arrived for the entry's loop since it last took them, as a mask
    /// (bit `n` = signal `n`).
    pub(crate) fn take_pending(&self, slot: Slot) -> u64 {
        let Some(e) = self.entries.get(slot.0) else {
            return 0;
        };
        let mut mask = 0u64;
        for (i, word) in e.pending.iter().enumerate() {
            if word.load(Ordering::Relaxed) != 0 {
                let taken = word.swap(0, Ordering::SeqCst) & e.wants[i].load(Ordering::Relaxed);
                mask |= u64::from(taken) << (32 * i);
            }
        }
        mask
    }

    /// Whether signals arrived for the entry's loop that it has not taken yet.
    pub(crate) fn any_pending(&self, slot: Slot) -> bool {
        self.entries
            .get(slot.0)
            .is_some_and(|e| e.pending.iter().any(|w| w.load(Ordering::Relaxed) != 0))
    }
}

/// The process's registry.
static REGISTRY: Registry<MAX_SIGNAL_LOOPS> = Registry::new();

/// Record that `signo` arrived, for every loop that handles it, and wake each of them.
/// Async-signal-safe: call it from a signal handler. Signal numbers outside 1..=63, and
/// signals no loop handles, are ignored.
///
/// Calling it directly simulates an arrival (what the OS handler would do):
///
/// ```
/// use core::cell::Cell;
/// use core::time::Duration;
/// use std::rc::Rc;
/// use loop_core::signal::{deliver, SignalInstaller};
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Remote};
///
/// type Lp = EventLoop<SimPoller, 4, 4, 4>;
/// static REMOTE: Remote<Lp, 4> = Remote::new();
/// // No OS handler in a simulation: install and restore do nothing.
/// const NO_OS: SignalInstaller = SignalInstaller { install: |_| Ok(()), restore: |_| {} };
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE)?; // signals wake the loop through its remote
/// let seen = Rc::new(Cell::new(0));
/// let s = seen.clone();
/// lp.add_signal_handler(10, NO_OS, move |_, signo| s.set(s.get() + signo))?;
/// deliver(10);
/// deliver(10); // two arrivals before the loop looks: one call, as in POSIX
/// deliver(12); // no loop handles 12: ignored
/// lp.run_once(Some(Duration::ZERO))?;
/// assert_eq!(seen.get(), 10);
/// # Ok::<(), loop_core::Error>(())
/// ```
pub fn deliver(signo: i32) {
    REGISTRY.deliver(signo);
}

/// The process registry's entry for the loop whose remote has `wake`, claiming one if needed.
pub(crate) fn claim(wake: &'static WakeEntry) -> Option<Slot> {
    REGISTRY.claim(wake)
}

/// The process registry's entry for the loop whose remote has `wake`.
pub(crate) fn find(wake: &'static WakeEntry) -> Option<Slot> {
    REGISTRY.find(wake)
}

/// See [`Registry::release`].
pub(crate) fn release(slot: Slot) {
    REGISTRY.release(slot);
}

/// See [`Registry::want`].
pub(crate) fn want(slot: Slot, signo: i32) {
    REGISTRY.want(slot, signo);
}

/// See [`Registry::unwant`].
pub(crate) fn unwant(slot: Slot, signo: i32) {
    REGISTRY.unwant(slot, signo);
}

/// The signals that arrived for the loop whose remote has `wake` since it last took them.
#[inline]
pub(crate) fn take_pending(wake: Option<&'static WakeEntry>) -> u64 {
    match wake.and_then(find) {
        Some(slot) => REGISTRY.take_pending(slot),
        None => 0,
    }
}

/// Whether signals arrived for the loop whose remote has `wake` that it has not taken yet.
#[inline]
pub(crate) fn any_pending(wake: Option<&'static WakeEntry>) -> bool {
    wake.and_then(find)
        .is_some_and(|slot| REGISTRY.any_pending(slot))
}

/// Installs and restores the process's handler for a signal: provided by the platform
/// (`ioloop::signals::SIGACTION`), so the core stays OS-free.
///
/// The loop calls `install` once for each loop that adds `signo` and `restore` once for each
/// loop that removes it (or is closed or dropped with it), from any thread: an installer must
/// count the users of each signal, install the handler that calls [`deliver`] for the first
/// and put the previous disposition back only for the last.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use loop_core::signal::SignalInstaller;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Errno, Error, EventLoop, Remote};
///
/// type Lp = EventLoop<SimPoller, 4, 4, 4>;
/// static REMOTE: Remote<Lp, 4> = Remote::new();
/// static USERS: AtomicU32 = AtomicU32::new(0); // loops handling signal 10
///
/// // A counting installer (a real one calls `sigaction` for the first user and puts the old
/// // disposition back after the last).
/// const COUNTING: SignalInstaller = SignalInstaller {
///     install: |_| {
///         USERS.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     },
///     restore: |_| {
///         USERS.fetch_sub(1, Ordering::Relaxed);
///     },
/// };
/// const FAILING: SignalInstaller = SignalInstaller {
///     install: |_| Err(Errno::EINVAL),
///     restore: |_| {},
/// };
///
/// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
/// lp.attach_remote(&REMOTE)?;
/// lp.add_signal_handler(10, COUNTING, |_, _| {})?;
/// assert_eq!(USERS.load(Ordering::Relaxed), 1);
/// let refused = lp.add_signal_handler(11, FAILING, |_, _| {}).unwrap_err();
/// assert_eq!(refused.error, Error::Os { errno: Errno::EINVAL });
/// drop(lp); // dropping (or closing) the loop restores what it installed
/// assert_eq!(USERS.load(Ordering::Relaxed), 0);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SignalInstaller {
    /// One more loop handles the signal: make sure it calls [`deliver`].
    pub install: fn(i32) -> Result<(), crate::Errno>,
    /// One loop fewer handles the signal: restore the previous disposition if none is left.
    pub restore: fn(i32),
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::{AtomicBool, AtomicUsize};

    /// A loop's wake, for tests: counts the wakes (in statics: nothing to leak under Miri).
    struct Wake {
        entry: WakeEntry,
        count: AtomicUsize,
    }

    const fn new_wake() -> Wake {
        Wake {
            entry: WakeEntry {
                wake: count,
                ctx: AtomicPtr::new(core::ptr::null_mut()),
            },
            count: AtomicUsize::new(0),
        }
    }

    fn count(ctx: *const ()) {
        // SAFETY: `entry` set `ctx` to its `'static` `Wake`.
        let wake = unsafe { &*(ctx as *const Wake) };
        wake.count.fetch_add(1, Ordering::Relaxed);
    }

    impl Wake {
        fn entry(&'static self) -> &'static WakeEntry {
            self.entry
                .ctx
                .store(self as *const Wake as *mut (), Ordering::Relaxed);
            &self.entry
        }
        fn wakes(&self) -> usize {
            self.count.load(Ordering::Relaxed)
        }
    }

    const USR1: i32 = 10;
    const USR2: i32 = 12;

    #[test]
    fn one_signal_reaches_every_entry_that_wants_it() {
        static W: [Wake; 2] = [const { new_wake() }; 2];
        let reg: Registry<4> = Registry::new();
        let a = reg.claim(W[0].entry()).unwrap();
        let b = reg.claim(W[1].entry()).unwrap();
        reg.want(a, USR1);
        reg.want(b, USR1);
        reg.deliver(USR1);
        assert_eq!(reg.take_pending(a), 1 << USR1);
        assert_eq!(
            reg.take_pending(b),
            1 << USR1,
            "a taking its bit leaves b's"
        );
        assert_eq!((W[0].wakes(), W[1].wakes()), (1, 1));
        assert_eq!(reg.take_pending(a), 0);
    }

    #[test]
    fn different_signals_reach_only_their_own_entry() {
        static W: [Wake; 2] = [const { new_wake() }; 2];
        let reg: Registry<4> = Registry::new();
        let a = reg.claim(W[0].entry()).unwrap();
        let b = reg.claim(W[1].entry()).unwrap();
        reg.want(a, USR1);
        reg.want(b, USR2);
        reg.want(b, 63);
        reg.deliver(USR1);
        reg.deliver(USR2);
        reg.deliver(63);
        assert_eq!(reg.take_pending(a), 1 << USR1);
        assert_eq!(reg.take_pending(b), (1 << USR2) | (1 << 63));
        assert_eq!((W[0].wakes(), W[1].wakes()), (1, 2));
    }

    #[test]
    fn unwanted_and_invalid_signals_are_ignored() {
        static W: Wake = new_wake();
        let reg: Registry<2> = Registry::new();
        let a = reg.claim(W.entry()).unwrap();
        reg.want(a, USR1);
        for signo in [0, -1, 64, i32::MAX, USR2] {
            reg.deliver(signo);
        }
        assert!(!reg.any_pending(a));
        assert_eq!(W.wakes(), 0);
        reg.unwant(a, USR1);
        reg.deliver(USR1);
        assert_eq!(reg.take_pending(a), 0);
    }

    #[test]
    fn a_full_registry_refuses_and_a_released_entry_is_claimed_again() {
        let reg: Registry<2> = Registry::new();
        static W: [Wake; 3] = [const { new_wake() }; 3];
        let (w1, w2, w3) = (W[0].entry(), W[1].entry(), W[2].entry());
        let s1 = reg.claim(w1).unwrap();
        assert_eq!(reg.claim(w1), Some(s1), "the owner finds its own entry");
        let s2 = reg.claim(w2).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(reg.claim(w3), None);
        reg.want(s1, USR1);
        reg.deliver(USR1);
        reg.release(s1);
        assert_eq!(reg.find(w1), None);
        let s3 = reg.claim(w3).unwrap();
        assert_eq!(s3, s1);
        assert!(
            !reg.any_pending(s3),
            "nothing of the previous owner is left"
        );
        reg.deliver(USR1);
        assert!(!reg.any_pending(s3), "nor its wanted set");
    }

    /// One thread delivers without pause while another claims, wants, takes and releases:
    /// every delivery to a live entry that wants the signal wakes it, none reads a freed one.
    /// Run under Miri to check the claim/release protocol against the signal path.
    #[test]
    fn deliveries_race_claims_and_releases_safely() {
        static REG: Registry<2> = Registry::new();
        static STOP: AtomicBool = AtomicBool::new(false);
        static W: Wake = new_wake();
        let w = W.entry();
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let deliverer = std::thread::spawn(|| {
            while !STOP.load(Ordering::Relaxed) {
                REG.deliver(USR1);
                std::thread::yield_now();
            }
        });
        let mut seen = 0;
        for _ in 0..rounds {
            let slot = REG.claim(w).unwrap();
            REG.want(slot, USR1);
            seen += REG.take_pending(slot).count_ones();
            REG.release(slot);
            assert_eq!(REG.find(w), None);
        }
        STOP.store(true, Ordering::Relaxed);
        deliverer.join().unwrap();
        assert!(W.wakes() >= seen as usize);
    }

    /// Two loops on the simulated poller, one installer that counts its users per signal (as
    /// the facade's does): the whole add / deliver / take / remove path, checkable by Miri.
    mod loops {
        extern crate std;
        use super::super::*;
        use crate::sim::SimPoller;
        use crate::{EventLoop, Remote};
        use core::time::Duration;
        use std::rc::Rc;

        type Lp = EventLoop<SimPoller<4>, 2, 2, 2>;
        // Signal numbers no other test of this crate uses: the registry is process-wide.
        const A: i32 = 41;
        const B: i32 = 42;
        static USERS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];

        fn install(signo: i32) -> Result<(), crate::Errno> {
            USERS[signo as usize].fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn restore(signo: i32) {
            USERS[signo as usize].fetch_sub(1, Ordering::Relaxed);
        }
        const COUNTING: SignalInstaller = SignalInstaller { install, restore };

        fn counting_handler(
            seen: &Rc<core::cell::Cell<u32>>,
        ) -> impl FnMut(&mut Lp, i32) + 'static {
            let seen = seen.clone();
            move |_, _| seen.set(seen.get() + 1)
        }

        #[test]
        fn every_loop_gets_the_signal_and_removal_is_counted() {
            static R1: Remote<Lp, 4> = Remote::new();
            static R2: Remote<Lp, 4> = Remote::new();
            let mut l1: Lp = EventLoop::with_poller(SimPoller::new());
            let mut l2: Lp = EventLoop::with_poller(SimPoller::new());
            l1.attach_remote(&R1).unwrap();
            l2.attach_remote(&R2).unwrap();
            let (s1, s2) = (Rc::default(), Rc::default());
            l1.add_signal_handler(A, COUNTING, counting_handler(&s1))
                .map_err(|r| r.error)
                .unwrap();
            l2.add_signal_handler(A, COUNTING, counting_handler(&s2))
                .map_err(|r| r.error)
                .unwrap();
            l2.add_signal_handler(B, COUNTING, counting_handler(&s2))
                .map_err(|r| r.error)
                .unwrap();
            assert_eq!(USERS[A as usize].load(Ordering::Relaxed), 2);

            deliver(A);
            deliver(B);
            l1.run_once(Some(Duration::ZERO)).unwrap();
            l2.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(
                (s1.get(), s2.get()),
                (1, 2),
                "each loop ran its own handlers"
            );

            assert!(l2.remove_signal_handler(A));
            assert_eq!(USERS[A as usize].load(Ordering::Relaxed), 1);
            deliver(A);
            l1.run_once(Some(Duration::ZERO)).unwrap();
            l2.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(
                (s1.get(), s2.get()),
                (2, 2),
                "l1 still gets it, l2 no longer"
            );

            drop(l2);
            assert_eq!(USERS[B as usize].load(Ordering::Relaxed), 0);
            assert_eq!(find(&R2.wake_entry), None, "dropping released the entry");
            l1.close();
            assert_eq!(USERS[A as usize].load(Ordering::Relaxed), 0);
            assert_eq!(find(&R1.wake_entry), None, "closing released the entry");
        }
    }
}
