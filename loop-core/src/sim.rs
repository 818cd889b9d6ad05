//! A simulated poller and manual clock, for exact, instant tests (Tornado's `FakeTimeIOLoop`).
//!
//! fds are virtual numbers. Tests mark them ready with [`SimPoller::set_ready`]; readiness is
//! level-triggered (it stays until [`SimPoller::clear_ready`]). A wait that finds nothing ready
//! and was not notified **advances the clock by its timeout** and returns no events, so timers
//! fire at exactly their deadlines without sleeping. A wait with no timeout that finds nothing
//! would block forever: it fails with [`SimPoller::WOULD_BLOCK_FOREVER`] instead, which turns a
//! deadlocked test into an error rather than a hang.
//!
//! Faults can be queued for the next `wait` or `register` (EINTR, ENOMEM, EBADF, …), and
//! spurious events injected. Every call is counted in [`SimStats`].
//!
//! # Examples
//!
//! A handler test without sockets or sleeping: a timer makes a virtual fd readable, the
//! handler reads it "to `EAGAIN`" and stops the loop.
//!
//! ```
//! use core::time::Duration;
//! use loop_core::sim::SimPoller;
//! use loop_core::{EventLoop, Interest, Readiness};
//!
//! let mut lp: EventLoop<SimPoller, 8, 8, 8> = EventLoop::with_poller(SimPoller::new());
//! lp.add_handler(4, Interest::READ, |lp, _fd, ready| {
//!     assert!(ready.contains(Readiness::READ));
//!     lp.poller_mut().clear_ready(4);
//!     lp.stop();
//!     Ok(())
//! })?;
//! lp.call_later(Duration::from_secs(30), |lp| lp.poller_mut().set_ready(4, Readiness::READ))?;
//! lp.run()?;
//! assert_eq!(lp.now().as_nanos(), 30_000_000_000); // 30 simulated seconds, no real wait
//! assert_eq!(lp.poller().interest(4), Some(Interest::READ | Interest::ERROR));
//! # Ok::<(), loop_core::Error>(())
//! ```

use core::cell::Cell;
use core::sync::atomic::Ordering;
use core::time::Duration;
use portable_atomic::{AtomicBool, AtomicUsize};

use alloc::sync::Arc;
use heapless::{Deque, Vec};

use crate::error::{Errno, Error, RawFd, Resource};
use crate::interest::{Capabilities, Interest, Mode, Readiness};
use crate::poller::{Notify, PollEvent, Poller};
use crate::time::{Clock, Instant};

/// Counts of what the loop asked of the simulated poller, from [`SimPoller::stats`]: pins
/// down "no `epoll_ctl` per iteration" and "the loop slept for exactly this long".
///
/// # Examples
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::EventLoop;
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.call_later(Duration::from_millis(250), |lp| lp.stop())?;
/// lp.run()?;
/// let stats = lp.poller().stats();
/// assert_eq!(stats.registers, 0); // timers need no fd
/// assert!(stats.waits >= 1);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// `wait` calls.
    pub waits: u64,
    /// `register` calls (including refused ones).
    pub registers: u64,
    /// `modify` calls.
    pub modifies: u64,
    /// `deregister` calls.
    pub deregisters: u64,
    /// The timeout of the most recent `wait`.
    pub last_timeout: Option<Option<Duration>>,
    /// `now` calls (the clock reads a real poller would pay for).
    pub clock_reads: u64,
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    fd: RawFd,
    key: u64,
    interest: Interest,
}

#[derive(Debug, Default)]
struct SimFlag {
    pending: AtomicBool,
    count: AtomicUsize,
}

/// The simulated poller's notifier: a shared flag (clones share it, as `dup`s of an eventfd
/// share the counter).
///
/// # Examples
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Notify, Poller};
///
/// let poller: SimPoller = SimPoller::new();
/// let clone = poller.notifier().try_clone()?;
/// clone.notify()?;
/// assert_eq!(poller.notifier().count(), 1); // clones share the count
/// # Ok::<(), loop_core::Errno>(())
/// ```
#[derive(Debug, Default)]
pub struct SimNotifier(Arc<SimFlag>);

impl SimNotifier {
    /// How many times `notify` was called, on this notifier or any clone.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Poller, Remote};
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// handle.add_callback(|lp| lp.stop()).ok(); // from "another thread": wakes the poller
    /// assert!(lp.poller().notifier().count() >= 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl Notify for SimNotifier {
    fn notify(&self) -> Result<(), Errno> {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.pending.store(true, Ordering::Release);
        Ok(())
    }

    fn try_clone(&self) -> Result<Self, Errno> {
        Ok(SimNotifier(self.0.clone()))
    }
}

/// A simulated poller for up to `N` virtual fds. See the [module docs](self).
///
/// Methods by group: time ([`advance`](Self::advance), [`set_time`](Self::set_time));
/// readiness ([`set_ready`](Self::set_ready), [`clear_ready`](Self::clear_ready),
/// [`readiness`](Self::readiness), [`inject_event`](Self::inject_event)); fd life
/// ([`close`](Self::close), [`reopen`](Self::reopen),
/// [`close_keeping_registration`](Self::close_keeping_registration)); faults ([`fail_next_wait`](Self::fail_next_wait),
/// [`fail_next_register`](Self::fail_next_register), [`set_forked`](Self::set_forked));
/// inspection ([`interest`](Self::interest), [`stats`](Self::stats),
/// [`resets`](Self::resets)).
///
/// # Examples
///
/// Injecting faults, as the loop's own tests do:
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Errno, Error, EventLoop, Interest};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.poller_mut().fail_next_register(Errno::ENOSPC);
/// let refused = lp.add_handler(3, Interest::READ, |_, _, _| Ok(())).unwrap_err();
/// assert_eq!(refused.error, Error::Os { errno: Errno::ENOSPC });
/// lp.poller_mut().close(5);
/// let refused = lp.add_handler(5, Interest::READ, |_, _, _| Ok(())).unwrap_err();
/// assert_eq!(refused.error, Error::Os { errno: Errno::EBADF }); // a closed fd
/// # Ok::<(), loop_core::Error>(())
/// ```
pub struct SimPoller<const N: usize = 64> {
    now: Cell<u64>,
    clock_reads: Cell<u64>,
    regs: Vec<Registration, N>,
    ready: Vec<(RawFd, Readiness), N>,
    closed: Vec<RawFd, N>,
    /// Closed while a `dup` keeps the file open: registration kept, `deregister` refused.
    trapped: Vec<RawFd, N>,
    resets: u64,
    wait_faults: Deque<Errno, 8>,
    register_faults: Deque<Errno, 8>,
    injected: Deque<PollEvent, 16>,
    notifier: SimNotifier,
    stats: SimStats,
    forked: bool,
    /// Answer `register_eexist_is_exact` with `true` (see [`SimPoller::set_exact_eexist`]).
    exact_eexist: bool,
}

impl<const N: usize> Default for SimPoller<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SimPoller<N> {
    /// The error a wait returns when nothing is ready and it has no timeout: a test whose
    /// loop would sleep forever fails instead of hanging.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{PollEvent, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// let mut events = [PollEvent::default(); 4];
    /// assert_eq!(poller.wait(&mut events, None), Err(SimPoller::<64>::WOULD_BLOCK_FOREVER));
    /// ```
    pub const WOULD_BLOCK_FOREVER: Errno = Errno(-1);

    /// A poller with no fds, at time zero.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Clock;
    ///
    /// let poller: SimPoller<8> = SimPoller::new(); // room for 8 virtual fds
    /// assert_eq!(poller.now().as_nanos(), 0);
    /// assert_eq!(poller.stats().waits, 0);
    /// ```
    pub fn new() -> Self {
        SimPoller {
            now: Cell::new(0),
            clock_reads: Cell::new(0),
            regs: Vec::new(),
            ready: Vec::new(),
            closed: Vec::new(),
            trapped: Vec::new(),
            resets: 0,
            wait_faults: Deque::new(),
            register_faults: Deque::new(),
            injected: Deque::new(),
            notifier: SimNotifier::default(),
            stats: SimStats {
                waits: 0,
                registers: 0,
                modifies: 0,
                deregisters: 0,
                last_timeout: None,
                clock_reads: 0,
            },
            forked: false,
            exact_eexist: false,
        }
    }

    /// Move the clock forward.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Clock, Instant};
    ///
    /// let poller: SimPoller = SimPoller::new();
    /// poller.advance(Duration::from_millis(5));
    /// assert_eq!(poller.now().as_nanos(), 5_000_000);
    /// poller.set_time(Instant::from_nanos(1_000)); // steps back, as a clock can
    /// assert_eq!(poller.now().as_nanos(), 1_000);
    /// ```
    pub fn advance(&self, d: Duration) {
        self.now.set(
            self.now
                .get()
                .saturating_add(crate::time::duration_nanos(d)),
        );
    }

    /// Set the clock, also backwards (to test clock steps).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Instant};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.poller().set_time(Instant::from_nanos(5_000_000_000));
    /// assert_eq!(lp.now(), Instant::from_nanos(5_000_000_000));
    /// lp.call_later(Duration::from_secs(1), |lp| lp.stop())?;
    /// lp.run()?; // the timer fires at 6 s on the simulated clock
    /// assert_eq!(lp.now().as_nanos(), 6_000_000_000);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn set_time(&self, t: Instant) {
        self.now.set(t.as_nanos());
    }

    /// Mark `fd` ready for `r` (OR-ed with what it already had). Ignored if `N` fds are
    /// already ready.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Readiness;
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.set_ready(3, Readiness::READ);
    /// poller.set_ready(3, Readiness::WRITE);
    /// assert_eq!(poller.readiness(3), Readiness::READ | Readiness::WRITE);
    /// poller.clear_ready(3);
    /// assert!(poller.readiness(3).is_empty());
    /// ```
    pub fn set_ready(&mut self, fd: RawFd, r: Readiness) {
        if let Some((_, have)) = self.ready.iter_mut().find(|(f, _)| *f == fd) {
            *have |= r;
        } else {
            let _ = self.ready.push((fd, r));
        }
    }

    /// Clear all readiness of `fd` (as reading a socket to `EAGAIN` does).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Readiness;
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.set_ready(4, Readiness::READ | Readiness::HUP);
    /// poller.clear_ready(4);
    /// assert_eq!(poller.readiness(4), Readiness::empty());
    /// ```
    pub fn clear_ready(&mut self, fd: RawFd) {
        self.ready.retain(|(f, _)| *f != fd);
    }

    /// What `fd` is ready for.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Readiness;
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// assert!(poller.readiness(5).is_empty()); // nothing set yet
    /// poller.set_ready(5, Readiness::WRITE);
    /// assert_eq!(poller.readiness(5), Readiness::WRITE);
    /// ```
    pub fn readiness(&self, fd: RawFd) -> Readiness {
        self.ready
            .iter()
            .find(|(f, _)| *f == fd)
            .map_or(Readiness::empty(), |(_, r)| *r)
    }

    /// Mark `fd` closed: registering it fails with `EBADF`, and its registration and readiness
    /// disappear (as the kernel drops a closed fd from epoll).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(6, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.poller_mut().close(6); // closed behind the loop's back: the kernel forgets it
    /// assert_eq!(lp.poller().interest(6), None);
    /// lp.poller_mut().reopen(6); // the number is reused by a new file
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn close(&mut self, fd: RawFd) {
        self.regs.retain(|r| r.fd != fd);
        self.clear_ready(fd);
        if !self.closed.contains(&fd) {
            let _ = self.closed.push(fd);
        }
    }

    /// Mark `fd` open again (the number was reused).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Interest};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.poller_mut().close(6);
    /// let refused = lp.add_handler(6, Interest::READ, |_, _, _| Ok(())).unwrap_err();
    /// assert!(matches!(refused.error, Error::Os { .. })); // EBADF: closed
    /// lp.poller_mut().reopen(6);
    /// lp.add_handler(6, Interest::READ, |_, _, _| Ok(()))?; // a new file, same number
    /// assert_eq!(lp.handler_count(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn reopen(&mut self, fd: RawFd) {
        self.closed.retain(|f| *f != fd);
        self.trapped.retain(|f| *f != fd);
    }

    /// epoll's dup trap: `fd` is closed while a `dup` of it keeps the file open. As epoll
    /// does, its registration stays and keeps reporting the readiness it has (set with
    /// [`set_ready`](Self::set_ready) before), `deregister(fd)` fails with `EBADF`, and only
    /// [`reset`](Poller::reset) removes it.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    /// use loop_core::Readiness;
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(6, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.poller_mut().set_ready(6, Readiness::READ);
    /// lp.poller_mut().close_keeping_registration(6); // closed, but a dup keeps the file open
    /// lp.remove_handler(6); // deregister fails with EBADF: the loop remembers the key
    /// assert_eq!(lp.poller().resets(), 0);
    /// lp.run_once(Some(core::time::Duration::ZERO))?; // a stale event proves the trap: reset
    /// assert_eq!(lp.poller().resets(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn close_keeping_registration(&mut self, fd: RawFd) {
        if !self.closed.contains(&fd) {
            let _ = self.closed.push(fd);
        }
        if !self.trapped.contains(&fd) {
            let _ = self.trapped.push(fd);
        }
    }

    /// How many times [`Poller::reset`] dropped every registration.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Interest, Mode, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.register(3, 1, Interest::READ, Mode::Level)?;
    /// assert_eq!(poller.reset(), Ok(true));
    /// assert_eq!((poller.resets(), poller.interest(3)), (1, None));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Fail the next `wait` with `errno`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Errno, PollEvent, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.fail_next_wait(Errno::EINTR);
    /// let mut events = [PollEvent::default(); 4];
    /// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)), Err(Errno::EINTR));
    /// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)), Ok(0)); // once only
    /// ```
    pub fn fail_next_wait(&mut self, errno: Errno) {
        let _ = self.wait_faults.push_back(errno);
    }

    /// Fail the next `register` with `errno` (once; several calls queue up to 8 faults).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Errno, Error, Interest, Mode, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.fail_next_register(Errno::ENOMEM);
    /// let err = poller.register(3, 1, Interest::READ, Mode::Level).unwrap_err();
    /// assert_eq!(err, Error::Os { errno: Errno::ENOMEM });
    /// assert_eq!(poller.register(3, 1, Interest::READ, Mode::Level), Ok(()));
    /// ```
    pub fn fail_next_register(&mut self, errno: Errno) {
        let _ = self.register_faults.push_back(errno);
    }

    /// Report `readiness` for `key` at the next wait, whether or not anything is registered
    /// with that key (a spurious or stale event).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{PollEvent, Poller, Readiness};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.inject_event(99, Readiness::READ);
    /// let mut events = [PollEvent::default(); 4];
    /// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)), Ok(1));
    /// assert_eq!(events[0].key, 99);
    /// ```
    pub fn inject_event(&mut self, key: u64, readiness: Readiness) {
        let _ = self.injected.push_back(PollEvent { key, readiness });
    }

    /// Whether `fd` is registered, and with what interest.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// assert_eq!(lp.poller().interest(3), None);
    /// lp.add_handler(3, Interest::WRITE, |_, _, _| Ok(()))?;
    /// // The loop always asks for errors too.
    /// assert_eq!(lp.poller().interest(3), Some(Interest::WRITE | Interest::ERROR));
    /// lp.remove_handler(3);
    /// assert_eq!(lp.poller().interest(3), None);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn interest(&self, fd: RawFd) -> Option<Interest> {
        self.regs.iter().find(|r| r.fd == fd).map(|r| r.interest)
    }

    /// The key `fd` is registered with, if it is.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let id = lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// assert_eq!(lp.poller().key(3), Some(id.key()));
    /// assert_eq!(lp.poller().key(4), None);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn key(&self, fd: RawFd) -> Option<u64> {
        self.regs.iter().find(|r| r.fd == fd).map(|r| r.key)
    }

    /// Pretend this is (or is not) a child process after `fork`: `register`, `modify` and
    /// `deregister` then return [`Error::Forked`] and `wait` `Errno::ECHILD`, as real pollers
    /// do in a child (see the [`poller`](crate::poller) module docs, "Fork").
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, Interest, Mode, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.set_forked(true);
    /// assert_eq!(poller.register(3, 1, Interest::READ, Mode::Level), Err(Error::Forked));
    /// ```
    pub fn set_forked(&mut self, forked: bool) {
        self.forked = forked;
    }

    /// Claim (or stop claiming) that `register`'s `EEXIST` is exact, as epoll's is (see
    /// [`Poller::register_eexist_is_exact`]): the loop's deferred removal then takes a
    /// removed-and-re-added registration over as it does on epoll (a refused `register`, the
    /// old key mapped to the new handler) instead of with a `modify`. True of the simulation
    /// as long as no fd is [`close_keeping_registration`](Self::close_keeping_registration)'d
    /// (a trapped registration still answers `EEXIST` for a reused number). Off by default.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Poller};
    ///
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.set_exact_eexist(true);
    /// assert!(poller.register_eexist_is_exact());
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(poller);
    /// lp.set_deferred_removal(true);
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.remove_handler(3);
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?; // same interest: kept as it is
    /// let stats = lp.poller().stats();
    /// assert_eq!((stats.registers, stats.modifies, stats.deregisters), (2, 0, 0));
    /// # let _ = Duration::ZERO;
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn set_exact_eexist(&mut self, on: bool) {
        self.exact_eexist = on;
    }

    /// Call counts (see [`SimStats`]).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.run_once(Some(Duration::from_millis(10)))?;
    /// let stats = lp.poller().stats();
    /// assert_eq!((stats.registers, stats.waits), (1, 1));
    /// assert_eq!(stats.last_timeout, Some(Some(Duration::from_millis(10))));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn stats(&self) -> SimStats {
        SimStats {
            clock_reads: self.clock_reads.get(),
            ..self.stats
        }
    }
}

impl<const N: usize> Clock for SimPoller<N> {
    fn now(&self) -> Instant {
        self.clock_reads.set(self.clock_reads.get() + 1);
        Instant::from_nanos(self.now.get())
    }
}

impl<const N: usize> Poller for SimPoller<N> {
    type Notifier = SimNotifier;

    fn capabilities(&self) -> Capabilities {
        Capabilities::LEVEL | Capabilities::PRECISE_TIMEOUT
    }

    fn register(&mut self, fd: RawFd, key: u64, interest: Interest, m: Mode) -> Result<(), Error> {
        self.stats.registers += 1;
        if self.forked {
            return Err(Error::Forked);
        }
        if let Some(errno) = self.register_faults.pop_front() {
            return Err(Error::Os { errno });
        }
        if fd < 0 {
            return Err(Error::InvalidFd { fd });
        }
        if m != Mode::Level {
            return Err(Error::Unsupported);
        }
        if self.closed.contains(&fd) {
            return Err(os(Errno::EBADF));
        }
        if self.regs.iter().any(|r| r.fd == fd) {
            return Err(os(Errno::EEXIST));
        }
        self.regs
            .push(Registration { fd, key, interest })
            .map_err(|_| Error::Full {
                what: Resource::PollerSlots,
            })
    }

    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.stats.modifies += 1;
        if self.forked {
            return Err(Error::Forked);
        }
        if mode != Mode::Level {
            return Err(Error::Unsupported);
        }
        let reg = self
            .regs
            .iter_mut()
            .find(|r| r.fd == fd)
            .ok_or(os(Errno::ENOENT))?;
        reg.key = key;
        reg.interest = interest;
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.stats.deregisters += 1;
        if self.forked {
            return Err(Error::Forked);
        }
        if self.trapped.contains(&fd) {
            return Err(os(Errno::EBADF));
        }
        let before = self.regs.len();
        self.regs.retain(|r| r.fd != fd);
        if self.regs.len() == before {
            Err(os(Errno::ENOENT))
        } else {
            Ok(())
        }
    }

    fn wait(&mut self, events: &mut [PollEvent], limit: Option<Duration>) -> Result<usize, Errno> {
        self.stats.waits += 1;
        self.stats.last_timeout = Some(limit);
        if self.forked {
            return Err(Errno::ECHILD);
        }
        if let Some(errno) = self.wait_faults.pop_front() {
            return Err(errno);
        }
        let mut n = 0;
        while n < events.len() {
            let Some(ev) = self.injected.pop_front() else {
                break;
            };
            events[n] = ev;
            n += 1;
        }
        for reg in &self.regs {
            if n == events.len() {
                break;
            }
            let ready = self
                .ready
                .iter()
                .find(|(f, _)| *f == reg.fd)
                .map_or(Readiness::empty(), |(_, r)| *r);
            let visible = ready & reg.interest.visible();
            if !visible.is_empty() {
                events[n] = PollEvent {
                    key: reg.key,
                    readiness: visible,
                };
                n += 1;
            }
        }
        let notified = self.notifier.0.pending.swap(false, Ordering::Acquire);
        if n == 0 && !notified {
            match limit {
                None => return Err(Self::WOULD_BLOCK_FOREVER),
                Some(d) => self.advance(d),
            }
        }
        Ok(n)
    }

    fn notifier(&self) -> &SimNotifier {
        &self.notifier
    }

    /// Drops every registration (a trapped one too) and returns `Ok(true)`, as epoll's
    /// rebuild does.
    fn reset(&mut self) -> Result<bool, Error> {
        if self.forked {
            return Err(Error::Forked);
        }
        self.regs.clear();
        self.trapped.clear();
        self.resets += 1;
        Ok(true)
    }

    fn forked(&self) -> bool {
        self.forked
    }

    fn register_eexist_is_exact(&self) -> bool {
        self.exact_eexist
    }
}

/// The [`Error::Os`] a kernel poller would answer with.
const fn os(errno: Errno) -> Error {
    Error::Os { errno }
}

impl<const N: usize> crate::OpenPoller for SimPoller<N> {
    fn open() -> Result<Self, Errno> {
        Ok(Self::new())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::EventLoop;

    type Lp = EventLoop<SimPoller<8>, 4, 4, 4>;

    /// epoll's dup trap, simulated: the handler's fd is closed while a `dup` keeps the file
    /// (and its registration) alive, data arrives, and `remove_handler`'s deregister fails
    /// with EBADF. The stale registration must not keep the loop busy: with nothing else
    /// ready, the next wait has nothing to report and would block (the simulation says so
    /// with WOULD_BLOCK_FOREVER instead of sleeping), and the other handlers still fire.
    #[test]
    fn dup_trap_does_not_spin() {
        let mut lp = Lp::with_poller(SimPoller::new());
        let (trapped, other) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let t = trapped.clone();
        lp.add_handler(3, Interest::READ, move |_, _, _| {
            t.set(t.get() + 1);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        let o = other.clone();
        lp.add_handler(4, Interest::READ, move |lp, fd, _| {
            o.set(o.get() + 1);
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().close_keeping_registration(3);
        lp.poller_mut().set_ready(3, Readiness::READ);

        assert!(lp.remove_handler(3));
        assert_eq!(
            lp.poller_mut().resets(),
            0,
            "a failed deregister alone does not reset: usually the kernel forgot the fd"
        );
        lp.run_once(Some(core::time::Duration::ZERO)).unwrap();
        assert_eq!(
            lp.poller_mut().resets(),
            1,
            "the stale event for the removed key reset the poller"
        );
        let waits = lp.poller_mut().stats().waits;
        assert_eq!(
            lp.run_once(None),
            Err(Error::Os {
                errno: SimPoller::<8>::WOULD_BLOCK_FOREVER
            }),
            "nothing to report: the loop blocks instead of spinning on the stale key"
        );
        assert_eq!(lp.poller_mut().stats().waits, waits + 1);
        assert_eq!(trapped.get(), 0);

        // The live handler was registered again, with its interest.
        assert_eq!(
            lp.poller_mut().interest(4),
            Some(Interest::READ.registered())
        );
        lp.poller_mut().set_ready(4, Readiness::READ);
        lp.run_once(None).unwrap();
        assert_eq!(other.get(), 1);
    }

    #[test]
    fn a_failed_deregister_of_a_plain_close_never_resets_and_keeps_the_rest() {
        let mut lp = Lp::with_poller(SimPoller::new());
        lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))
            .map_err(|r| r.error)
            .unwrap();
        lp.add_handler(5, Interest::WRITE, |_, _, _| Ok(()))
            .map_err(|r| r.error)
            .unwrap();
        // Closed without a dup: the kernel already dropped it (ENOENT on deregister), and no
        // stale event can come: removing it must not cost a rebuild of the poller.
        lp.poller_mut().close(3);
        assert!(lp.remove_handler(3));
        lp.run_once(Some(core::time::Duration::ZERO)).unwrap();
        assert_eq!(lp.poller_mut().resets(), 0);
        assert_eq!(
            lp.poller_mut().interest(5),
            Some(Interest::WRITE.registered())
        );
        // A successful deregister never resets.
        assert!(lp.remove_handler(5));
        assert_eq!(lp.poller_mut().resets(), 0);
    }
}
