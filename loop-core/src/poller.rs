//! The [`Poller`] trait: the loop's only door to the operating system.
//!
//! A poller watches fds for readiness, sleeps until something happens or a timeout passes,
//! can be woken from another thread ([`Notify`]), and tells the time ([`Clock`]). The loop
//! drives it; users pick one with a Cargo feature of the `ioloop` facade (epoll, kqueue, poll,
//! select) or write their own for an unusual platform.
//!
//! # The contract
//!
//! * **Keys.** Every registration carries an opaque `u64` key chosen by the loop (it packs a
//!   handler slot and a generation into it). The poller reports the key back and never
//!   interprets it.
//! * **Interest.** The loop always passes interests with [`Interest::ERROR`] set. A poller must
//!   report [`Readiness::ERROR`] / [`Readiness::HUP`] whenever the OS says so, whatever was
//!   asked for, and must not report `READ` / `WRITE` that was not asked for.
//! * **One event per key per wait.** If the OS reports several events for one fd in one wait
//!   (kqueue's separate read and write filters), the poller ORs them into one [`PollEvent`].
//! * **Level-triggered by default.** [`Mode::Level`] must be supported. Others are optional;
//!   asking for one the poller lacks returns [`Error::Unsupported`].
//! * **Duplicates.** `register` of an fd that is already registered returns
//!   `Error::Os { errno: Errno::EEXIST }` (or `AlreadyRegistered`) and leaves the existing
//!   registration alone. (The loop checks first, so this only happens to direct users.)
//! * **Stale events.** After `deregister` returns, later waits never report that fd's old key.
//!   Events already copied into the loop's buffer by an earlier wait are the loop's problem: it
//!   drops them by generation.
//! * **Timeouts.** `wait(None)` sleeps until an event or a notification; `wait(Some(d))` returns
//!   no earlier than `d` unless an event, a notification or a signal (`EINTR`) came first.
//!   Pollers with millisecond resolution round **up**, never down: a timeout rounded down to
//!   zero would busy-poll until the deadline.
//! * **Notifications** are consumed inside `wait` and never reported as an event; a wait that
//!   was woken only by the notifier returns `Ok(0)`. Many notifications before a wait coalesce
//!   into one wake.
//! * **`EINTR`** is returned as `Err(Errno::EINTR)`; the loop restarts its iteration.
//! * **Fork.** A poller copied into a child by `fork` shares kernel objects with the parent
//!   (the epoll instance and its timerfd, the notifier's eventfd or pipe). Nothing the child
//!   does to its copy may touch them: `register`, `modify` and `deregister` return
//!   [`Error::Forked`], `wait` returns `Err(`[`Errno::ECHILD`]`)`, a notifier (and its clones)
//!   does nothing, and dropping the poller only closes the child's own fd copies (never an
//!   `EPOLL_CTL_*`; a kqueue, which the child does not inherit, is not even closed, since its
//!   number may name a file the child opened since). Build a new loop in the child.
//!
//! [`Error::Forked`]: crate::Error::Forked
//!
//! [`Error::Unsupported`]: crate::Error::Unsupported

use core::time::Duration;

use crate::error::{Errno, Error, RawFd};
use crate::interest::{Capabilities, Interest, Mode, Readiness};
use crate::time::Clock;

impl Errno {
    /// `ECHILD` (10 on Linux, the BSDs and macOS): what [`Poller::wait`] returns on a poller
    /// copied into a child by `fork` (see the module docs).
    pub const ECHILD: Errno = Errno(10);
}

/// One ready fd, as reported by [`Poller::wait`]; see [`Poller`]'s example.
///
/// # Examples
///
/// ```
/// use loop_core::{PollEvent, Readiness};
///
/// let mut events = [PollEvent::default(); 8]; // the buffer a wait fills from the front
/// events[0] = PollEvent { key: 42, readiness: Readiness::READ | Readiness::HUP };
/// assert!(events[0].readiness.contains(Readiness::HUP));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PollEvent {
    /// The key given at registration.
    pub key: u64,
    /// What is ready, OR-ed over everything the OS reported for this fd in this wait.
    pub readiness: Readiness,
}

/// Wakes a poller's `wait` from another thread (or a signal handler, for implementations that
/// document themselves async-signal-safe: eventfd, pipe and `EVFILT_USER` writes are).
///
/// # Examples
///
/// A notification makes the next wait return at once, with no event:
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Clock, Notify, PollEvent, Poller};
///
/// let mut poller: SimPoller = SimPoller::new();
/// let waker = poller.notifier().try_clone()?; // e.g. for another thread
/// waker.notify()?;
/// waker.notify()?; // coalesces with the first
/// let start = poller.now();
/// let mut events = [PollEvent::default(); 4];
/// assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(60)))?, 0);
/// assert_eq!(poller.now(), start); // woken, not timed out
/// # Ok::<(), loop_core::Errno>(())
/// ```
pub trait Notify: Send + Sync {
    /// Make the current or next `wait` return. Calls before that wait coalesce into one wake.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Notify, Poller};
    /// let poller: SimPoller = SimPoller::new();
    /// poller.notifier().notify()?; // the next wait returns at once
    /// # Ok::<(), loop_core::Errno>(())
    /// ```
    ///
    /// # Errors
    /// The OS error if the wake could not be delivered (never for a full pipe or counter,
    /// which already guarantees a wake).
    fn notify(&self) -> Result<(), Errno>;

    /// An independent notifier that wakes the same poller (a `dup` of the fd), owned by the
    /// caller: a [`Remote`](crate::Remote) keeps one so handles on other threads never touch
    /// the poller itself. Writing to it after the poller is gone is harmless for eventfd and
    /// kqueue; the `Remote` never does it for a pipe (see `Remote::close`).
    ///
    /// # Errors
    /// The OS error (`EMFILE` when the process is out of fds).
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Notify, Poller};
    ///
    /// let poller: SimPoller = SimPoller::new();
    /// let other_thread = poller.notifier().try_clone()?;
    /// std::thread::spawn(move || other_thread.notify()).join().unwrap()?;
    /// assert_eq!(poller.notifier().count(), 1); // the clone woke the same poller
    /// # Ok::<(), loop_core::Errno>(())
    /// ```
    fn try_clone(&self) -> Result<Self, Errno>
    where
        Self: Sized;
}

/// An OS readiness API (epoll, kqueue, poll, select, or a simulation), as the loop uses it.
///
/// See the [module docs](self) for the contract every implementation keeps. The loop is
/// generic over it; you call these methods yourself only to write or test a poller (or through
/// `EventLoop::poller_mut` for fds the loop does not handle).
///
/// # Examples
///
/// The calls the loop makes, on the simulated poller:
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{Capabilities, Interest, Mode, PollEvent, Poller, Readiness};
///
/// let mut poller: SimPoller = SimPoller::new();
/// assert!(poller.capabilities().contains(Capabilities::LEVEL));
/// poller.register(5, 0xfeed, Interest::READ.registered(), Mode::Level)?;
/// poller.set_ready(5, Readiness::READ);
/// let mut events = [PollEvent::default(); 4];
/// let n = poller.wait(&mut events, Some(Duration::ZERO))?;
/// assert_eq!(&events[..n], &[PollEvent { key: 0xfeed, readiness: Readiness::READ }]);
/// poller.modify(5, 0xfeed, Interest::WRITE.registered(), Mode::Level)?; // READ no longer asked
/// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO))?, 0);
/// poller.deregister(5)?;
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// # Errors
///
/// Registration calls fail with [`Error`] (an fd it cannot hold, a full table, an unsupported
/// mode, the kernel's refusal, a forked child); `wait` with an [`Errno`] (`EINTR` is retried by
/// the loop). Each method lists its cases.
pub trait Poller: Clock {
    /// The thread-safe waker for this poller.
    type Notifier: Notify;

    /// Which trigger modes (and timeout precision) this poller offers.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Mode, Poller};
    /// let poller: SimPoller = SimPoller::new();
    /// let mode = if poller.capabilities().supports(Mode::Edge) { Mode::Edge } else { Mode::Level };
    /// # let _ = mode;
    /// ```
    fn capabilities(&self) -> Capabilities;

    /// Start watching `fd` for `interest`, reporting it with `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Errno, Error, Interest, Mode, Poller};
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.register(3, 1, Interest::READ.registered(), Mode::Level)?;
    /// // A second registration of the same fd is refused and leaves the first alone.
    /// assert!(matches!(
    ///     poller.register(3, 2, Interest::WRITE.registered(), Mode::Level),
    ///     Err(Error::Os { errno: Errno::EEXIST } | Error::AlreadyRegistered { .. })
    /// ));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidFd`] for an fd this poller cannot represent (negative, or at or above
    /// select's `FD_SETSIZE`); [`Error::Full`] when the poller's own table is full;
    /// [`Error::Unsupported`] for a mode it lacks; [`Error::Os`] when the kernel refuses
    /// (`EBADF` closed fd, `EPERM` regular file on epoll, `EEXIST` already registered,
    /// `ENOSPC`/`ENOMEM` kernel limits).
    fn register(
        &mut self,
        fd: RawFd,
        key: u64,
        interest: Interest,
        mode: Mode,
    ) -> Result<(), Error>;

    /// Change the interest (and key) of a registered fd.
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Interest, Mode, Poller};
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.register(3, 1, Interest::READ.registered(), Mode::Level)?;
    /// poller.modify(3, 1, (Interest::READ | Interest::WRITE).registered(), Mode::Level)?;
    /// assert!(poller.modify(4, 1, Interest::READ.registered(), Mode::Level).is_err()); // ENOENT
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`register`](Poller::register); `Error::Os { errno: Errno::ENOENT }` if `fd` is not
    /// registered.
    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error>;

    /// Stop watching `fd`. The fd is not closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Interest, Mode, Poller};
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.register(3, 1, Interest::READ.registered(), Mode::Level)?;
    /// poller.deregister(3)?;
    /// assert!(poller.deregister(3).is_err()); // not registered any more
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// `Error::Os { errno: Errno::ENOENT }` (or `EBADF`) if `fd` was not registered or was
    /// already closed; the loop ignores these, as Tornado does.
    fn deregister(&mut self, fd: RawFd) -> Result<(), Error>;

    /// Wait for readiness, filling `events` from the front, and return how many were filled.
    ///
    /// `timeout`: `None` waits indefinitely, `Some(Duration::ZERO)` does not block.
    /// If more fds are ready than `events` holds, the rest are reported by later waits
    /// (level-triggered registrations stay ready).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Interest, Mode, PollEvent, Poller, Readiness};
    /// let mut poller: SimPoller = SimPoller::new();
    /// for fd in 0..5 {
    ///     poller.register(fd, fd as u64, Interest::READ.registered(), Mode::Level)?;
    ///     poller.set_ready(fd, Readiness::READ);
    /// }
    /// let mut events = [PollEvent::default(); 2]; // smaller than what is ready
    /// assert_eq!(poller.wait(&mut events, Some(Duration::ZERO))?, 2); // the rest comes later
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// `Errno::EINTR` when a signal interrupted the wait (the loop retries); any other
    /// `Errno` is a failure of the poller itself.
    fn wait(&mut self, events: &mut [PollEvent], timeout: Option<Duration>)
        -> Result<usize, Errno>;

    /// The notifier that wakes this poller's `wait`.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Notify, Poller};
    /// let poller: SimPoller = SimPoller::new();
    /// let for_another_thread = poller.notifier().try_clone()?;
    /// # let _ = for_another_thread;
    /// # Ok::<(), loop_core::Errno>(())
    /// ```
    fn notifier(&self) -> &Self::Notifier;

    /// Whether this poller was created by another process, i.e. this is a child after `fork`
    /// (the kernel object is shared with the parent, so using it would steal or misroute the
    /// parent's events). Checked by the loop when it starts running and when it registers fds;
    /// the poller checks it too in every operation that touches the kernel (module docs,
    /// "Fork"). Real pollers compare the process-wide fork generation they were created in
    /// (an atomic load, no syscall); the simulation reports what it was told.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Poller;
    /// let mut poller: SimPoller = SimPoller::new();
    /// assert!(!poller.forked());
    /// poller.set_forked(true); // the simulation reports what it is told
    /// assert!(poller.forked());
    /// ```
    fn forked(&self) -> bool;

    /// Drop every registration at once (the poller's own notifier and timer stay), so that
    /// the caller can register its live fds again. Returns `Ok(true)` if registrations were
    /// dropped (the caller must then register every fd it still watches), `Ok(false)` if this
    /// poller never needs it (the default).
    ///
    /// The loop calls it after a `deregister` that failed with `EBADF` or `ENOENT`: the fd
    /// number no longer names the registered file. epoll registrations belong to the open file
    /// description, so if the user `dup`ed the fd and closed the original without removing
    /// the handler first, the registration stays in the kernel, reachable by no fd number,
    /// and reports its key at every wait — a busy loop with no handler (the dup trap).
    /// Pollers that forget a closed fd by number (poll, select, kqueue) keep the default.
    /// Registrations made directly on the poller (through `EventLoop::poller_mut`) are
    /// dropped too: the loop only registers its own handlers again.
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Interest, Mode, Poller};
    /// let mut poller: SimPoller = SimPoller::new();
    /// poller.register(3, 1, Interest::READ.registered(), Mode::Level)?;
    /// if poller.reset()? {
    ///     // every registration is gone: register the live fds again
    ///     poller.register(3, 1, Interest::READ.registered(), Mode::Level)?;
    /// }
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// The OS error if a fresh kernel object cannot be made (`EMFILE`, `ENOMEM`): the old
    /// registrations are then all kept. [`Error::Forked`] in a forked
    /// child.
    fn reset(&mut self) -> Result<bool, Error> {
        Ok(false)
    }

    /// Whether [`register`](Self::register) tells the kernel's view exactly: `Os(EEXIST)`
    /// proves that the file `fd` names *now* is registered, with its registration (key,
    /// interest, mode) unchanged, and success proves it was not (a file that took over the
    /// number of a closed one is not the closed file's registration). True of epoll, which
    /// keys registrations by open file and fd number; not of pollers whose duplicate check is
    /// a table of fd numbers (kqueue's, poll's and select's here: a closed and reused number
    /// still looks registered to them).
    ///
    /// The loop's deferred removal (`EventLoop::set_deferred_removal`) uses it as libev does:
    /// a handler removed and re-added with the same interest before the next poll keeps its
    /// kernel registration (an `EPOLL_CTL_ADD` refused with `EEXIST`, half the kernel time of
    /// the `EPOLL_CTL_MOD` that would move it to the new key, measured at 10^4 fds); the loop
    /// maps the old key to the new handler. Default `false`: the loop modifies instead.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::Poller;
    /// let poller: SimPoller = SimPoller::new();
    /// assert!(!poller.register_eexist_is_exact()); // its registrations are by fd number
    /// ```
    fn register_eexist_is_exact(&self) -> bool {
        false
    }
}

/// A poller that can be opened with default settings, so that `EventLoop::new()` can make one.
///
/// # Examples
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, OpenPoller};
///
/// let poller = SimPoller::<16>::open()?; // what `EventLoop::new` does for you
/// let lp: EventLoop<SimPoller<16>, 4, 4, 4> = EventLoop::with_poller(poller);
/// let lp2: EventLoop<SimPoller<16>, 4, 4, 4> = EventLoop::new()?;
/// # let _ = (lp, lp2);
/// # Ok::<(), loop_core::Error>(())
/// ```
pub trait OpenPoller: Poller + Sized {
    /// Open the poller (create the epoll/kqueue instance and its notifier).
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::OpenPoller;
    /// let poller = SimPoller::<8>::open()?;
    /// # let _ = poller;
    /// # Ok::<(), loop_core::Errno>(())
    /// ```
    ///
    /// # Errors
    /// The OS error (`EMFILE`, `ENFILE`, `ENOMEM`).
    fn open() -> Result<Self, Errno>;
}
