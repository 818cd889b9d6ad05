//! The epoll poller.
//!
//! # Interest and readiness
//!
//! | [`Interest`]   | registered as            | reported as [`Readiness`]         |
//! |----------------|--------------------------|-----------------------------------|
//! | `READ`         | `EPOLLIN`                | `EPOLLIN` (`EPOLLPRI`, `EPOLLRDHUP`) → `READ` |
//! | `WRITE`        | `EPOLLOUT`               | `EPOLLOUT` → `WRITE`              |
//! | `ERROR`        | `EPOLLERR \| EPOLLHUP`    | `EPOLLERR` → `ERROR`, `EPOLLHUP` → `HUP` |
//! | [`Mode::Edge`] | `EPOLLET`                |                                   |
//! | [`Mode::Oneshot`] | `EPOLLONESHOT`        |                                   |
//!
//! The contract forbids reporting `READ`/`WRITE` that was not asked for, yet the key is opaque, so
//! the poller cannot look the interest up. It need not: the kernel masks what it reports with the
//! registered events (`ep_item_poll` returns `vfs_poll(..) & epi->event.events`), and `epoll_ctl`
//! adds only `EPOLLERR | EPOLLHUP` on its own. So `READ`/`WRITE` only ever arrive when asked for,
//! while errors and hang-ups always do, exactly as the contract wants.
//!
//! Not registered, on purpose:
//! - `EPOLLRDHUP`: sockets set it only together with `EPOLLIN` (a half-closed socket is readable:
//!   `read` returns 0), so it would add nothing to `READ`; `Readiness` has no bit of its own for
//!   it, and asking for it on a write-only registration would smuggle in a `READ`.
//! - `EPOLLPRI`: TCP urgent data keeps it set until read with `MSG_OOB`, which a `READ` handler
//!   does not do, so a level-triggered registration would spin. (sysfs attributes that signal
//!   with `EPOLLPRI` also raise `EPOLLERR`, which every handler sees.)
//!
//! Both still translate to `READ` should they ever be reported.
//!
//! # Timeouts
//!
//! Precise to the nanosecond and never early: a timed wait arms a `timerfd` instead of passing
//! milliseconds to `epoll_wait` (see `timerfd.rs` for why not `epoll_pwait2`). `Some(ZERO)` makes
//! no timer call at all; `None` disarms a timer left over from an earlier wait, so an untimed wait
//! is never cut short.
//!
//! # Stale events and `dup`
//!
//! `epoll_ctl(DEL)` takes the fd off epoll's ready list, so once `deregister` returns no later
//! wait reports its key. epoll registrations belong to the open file description, though: an fd
//! that was `dup`ed and closed without `deregister` keeps delivering events through the copy, and
//! `deregister` by the closed number then fails with `EBADF`. Deregister before closing.
//! Should it happen anyway, the loop calls [`Poller::reset`] on that `EBADF` (or `ENOENT`, when
//! the number was reused): the poller swaps in a fresh epoll instance, dropping the stale
//! registration with the old one, and the loop registers its live handlers again — O(handlers)
//! system calls, once per misuse, instead of a loop that spins on a key nobody owns.

use core::fmt;
use core::time::Duration;

use loop_core::{
    Capabilities, Clock, Errno, Error, Instant, Interest, Mode, PollEvent, Poller, RawFd, Readiness,
};
use loop_posix::fork::ForkGuard;
use loop_posix::{errno, os, MonotonicClock};
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::time::Timespec;

use crate::eventfd::EventFdNotifier;
use crate::timerfd::DeadlineTimer;

/// Key of the internal eventfd (edge-triggered, never read); consumed inside `wait`, never
/// reported.
const NOTIFY_KEY: u64 = u64::MAX;
/// Key of the internal timerfd; its expiry ends a timed wait and is never reported.
const TIMER_KEY: u64 = u64::MAX - 1;

/// The epoll-based [`Poller`] for Linux (2.6.27 or later), with an eventfd notifier and timerfd
/// timeouts.
///
/// `N` is the size of the internal buffer of raw epoll events, filled by the kernel and
/// translated into the caller's [`PollEvent`]s: one `wait` reports at most `min(N, events.len())`
/// fds, and the rest are reported by later waits (epoll moves a reported level-triggered fd to
/// the back of its ready list, so no fd starves). 256 events take 3 KiB on x86-64 (4 KiB
/// elsewhere) inside the `Epoll` value; nothing is allocated, at creation or per call.
///
/// Keys above [`Epoll::MAX_KEY`] are reserved for the poller's own fds.
///
/// ```
/// use loop_core::Poller;
///
/// let small = loop_linux::Epoll::<16>::with_capacity()?;
/// assert!(small.capabilities().contains(loop_core::Capabilities::PRECISE_TIMEOUT));
/// # Ok::<(), loop_core::Errno>(())
/// ```
pub struct Epoll<const N: usize = 256> {
    epoll: OwnedFd,
    notifier: EventFdNotifier,
    timer: DeadlineTimer,
    events: RawEvents<N>,
    /// The raw fds of `notifier` and `timer` (neither ever changes), which `register`,
    /// `modify` and `deregister` refuse: read here by every `epoll_ctl` instead of through
    /// the two `AsFd` calls, which are not inlined across crates (~20 instructions a call).
    own: [RawFd; 2],
    /// The fork generation the epoll instance was created in: a forked child's copy never
    /// touches the epoll instance or the timerfd it shares with the parent.
    fork: ForkGuard,
}

/// The kernel's side of the event buffer.
struct RawEvents<const N: usize>([Event; N]);

// SAFETY: `Event` is `!Send` only because its `EventData` union has a raw-pointer variant. This
// buffer only ever holds what the kernel copied out of our registrations: flags and the `u64`
// keys we stored. No pointer is ever stored, read or dereferenced, so sending the buffer to
// another thread sends integers.
unsafe impl<const N: usize> Send for RawEvents<N> {}

impl Epoll {
    /// A poller with the default buffer of 256 events.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when the process or system is out of fds (the poller holds three: the
    /// epoll, the eventfd and the timerfd), `ENOMEM`.
    pub fn new() -> Result<Epoll, Errno> {
        Epoll::with_capacity()
    }
}

impl<const N: usize> Epoll<N> {
    /// The largest key `register` and `modify` accept; the two above it are the poller's own.
    pub const MAX_KEY: u64 = u64::MAX - 2;

    /// A poller whose `wait` reports at most `N` fds per call. `N` must not be zero (a compile
    /// error).
    ///
    /// # Errors
    /// As [`Epoll::new`].
    pub fn with_capacity() -> Result<Epoll<N>, Errno> {
        const { assert!(N > 0, "an Epoll needs room for at least one event") };
        // CLOEXEC: a child process must not inherit (and keep alive) the loop's epoll.
        let notifier = EventFdNotifier::new()?;
        let timer = DeadlineTimer::new()?;
        let epoll = new_epoll(&notifier, &timer)?;
        let empty = Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let own = [notifier.as_fd().as_raw_fd(), timer.as_fd().as_raw_fd()];
        Ok(Epoll {
            epoll,
            notifier,
            timer,
            own,
            events: RawEvents([empty; N]),
            fork: ForkGuard::new(),
        })
    }

    /// Replace the epoll instance by a fresh one holding only the notifier and the timer,
    /// under the same fd number (`dup3`, so whoever nests this poller by its fd keeps the
    /// number). Closing the old instance frees every registration in it, including one that
    /// no fd number reaches any more (the dup trap, see the module docs).
    fn rebuild(&mut self) -> Result<(), Errno> {
        let fresh = new_epoll(&self.notifier, &self.timer)?;
        rustix::io::dup3(&fresh, &mut self.epoll, rustix::io::DupFlags::CLOEXEC).map_err(errno)
    }

    /// Whether `fd` is one of the poller's own, which callers may not touch.
    fn is_internal(&self, fd: RawFd) -> bool {
        fd == self.epoll.as_raw_fd() || fd == self.own[0] || fd == self.own[1]
    }

    /// Arm the timerfd for a timed wait, or disarm it for an untimed one. Out of line: a
    /// wait that may block has time to spare, and the non-blocking wait stays small enough
    /// to be inlined into the loop's poll.
    #[inline(never)]
    fn set_timer(&mut self, timeout: Option<Duration>) -> Result<(), Errno> {
        match timeout {
            Some(d) => self.timer.arm(d),
            None => self.timer.disarm(),
        }
    }

    /// Run one `epoll_ctl` on a raw fd from the loop (`key`, `interest` and `mode` only for
    /// an add or a modify, whose key is checked first). One body for the three operations
    /// (inlined, with the operation known, where the optimizer finds it worth it).
    #[inline]
    fn ctl(
        &self,
        op: Ctl,
        fd: RawFd,
        key: u64,
        interest: Interest,
        mode: Mode,
    ) -> Result<(), Error> {
        if !matches!(op, Ctl::Delete) {
            check_key::<N>(key)?;
        }
        // Before anything else: an EPOLL_CTL_* from a forked child edits the parent's set.
        self.fork.check()?;
        if fd < 0 || self.is_internal(fd) {
            return Err(Error::InvalidFd { fd });
        }
        // SAFETY: `fd` is not negative (so not the -1 niche). The `Poller` contract takes raw
        // fds, so keeping `fd` open is the caller's promise; the borrow lasts one `epoll_ctl`,
        // which touches no memory through it and answers EBADF should the promise be broken.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let (data, flags) = (EventData::new_u64(key), epoll_flags(interest, mode));
        match op {
            Ctl::Add => epoll::add(&self.epoll, borrowed, data, flags),
            Ctl::Modify => epoll::modify(&self.epoll, borrowed, data, flags),
            Ctl::Delete => epoll::delete(&self.epoll, borrowed),
        }
        .map_err(os)
    }
}

/// The `epoll_ctl` operation [`Epoll::ctl`] runs.
#[derive(Clone, Copy)]
enum Ctl {
    Add,
    Modify,
    Delete,
}

/// A close-on-exec epoll instance watching the poller's own notifier and timer.
fn new_epoll(notifier: &EventFdNotifier, timer: &DeadlineTimer) -> Result<OwnedFd, Errno> {
    // CLOEXEC: a child process must not inherit (and keep alive) the loop's epoll.
    let epoll = epoll::create(CreateFlags::CLOEXEC).map_err(errno)?;
    // Edge-triggered, never read back (as mio's waker): every eventfd write is a new edge,
    // so a notification that races with a wait is seen by that wait or the next, and a
    // wake costs one syscall on each side instead of two on the loop's (`read` to drain).
    // Writes coalesce into one report while it is pending; the counter only overflows
    // after 2^64 - 2 writes (`EventFdNotifier::notify` then treats EAGAIN as pending).
    // Adding checks readiness at once, so a wake pending across a rebuild is not lost.
    let notify = EventData::new_u64(NOTIFY_KEY);
    epoll::add(&epoll, notifier, notify, EventFlags::IN | EventFlags::ET).map_err(errno)?;
    // Edge-triggered: see `timerfd.rs`; one report per expiry, never a read.
    let timer_data = EventData::new_u64(TIMER_KEY);
    epoll::add(&epoll, timer, timer_data, EventFlags::IN | EventFlags::ET).map_err(errno)?;
    Ok(epoll)
}

/// A key the loop may use.
fn check_key<const N: usize>(key: u64) -> Result<(), Error> {
    if key > Epoll::<N>::MAX_KEY {
        return Err(Error::Os {
            errno: Errno::EINVAL,
        });
    }
    Ok(())
}

/// The epoll events for an interest, see the module docs. Always inlined: a few
/// instructions, cheaper in place than as a function with its own unwind entry.
#[inline(always)]
fn epoll_flags(interest: Interest, mode: Mode) -> EventFlags {
    // The kernel adds ERR and HUP to every registration anyway; naming them says so.
    let mut flags = EventFlags::ERR | EventFlags::HUP;
    if interest.contains(Interest::READ) {
        flags |= EventFlags::IN;
    }
    if interest.contains(Interest::WRITE) {
        flags |= EventFlags::OUT;
    }
    match mode {
        Mode::Level => {}
        Mode::Edge => flags |= EventFlags::ET,
        Mode::Oneshot => flags |= EventFlags::ONESHOT,
    }
    flags
}

/// What the kernel reported, as loop-core's readiness.
fn readiness(flags: EventFlags) -> Readiness {
    let mut ready = Readiness::empty();
    if flags.intersects(EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP) {
        ready |= Readiness::READ;
    }
    if flags.contains(EventFlags::OUT) {
        ready |= Readiness::WRITE;
    }
    if flags.contains(EventFlags::ERR) {
        ready |= Readiness::ERROR;
    }
    if flags.contains(EventFlags::HUP) {
        ready |= Readiness::HUP;
    }
    ready
}

impl<const N: usize> Epoll<N> {
    /// The rest of a wait's translation from the first of the poller's own keys (the
    /// notifier's, or the timer's, which is marked expired) at `raw[from]`: own keys are
    /// dropped, the loop's keys move up to fill the gap. Returns how many events `events`
    /// holds.
    #[cold]
    #[inline(never)]
    fn own_key_from(&mut self, from: usize, n: usize, events: &mut [PollEvent]) -> usize {
        let mut out = from;
        for i in from..n.min(self.events.0.len()) {
            let event = self.events.0[i];
            let key = event.data.u64();
            if key >= TIMER_KEY {
                if key == TIMER_KEY {
                    self.timer.expired();
                }
                continue;
            }
            if let Some(slot) = events.get_mut(out) {
                *slot = PollEvent {
                    key,
                    readiness: readiness(event.flags),
                };
                out += 1;
            }
        }
        out
    }
}

impl<const N: usize> Poller for Epoll<N> {
    type Notifier = EventFdNotifier;

    fn capabilities(&self) -> Capabilities {
        Capabilities::LEVEL
            | Capabilities::EDGE
            | Capabilities::ONESHOT
            | Capabilities::PRECISE_TIMEOUT
    }

    /// `EPOLL_CTL_ADD`.
    ///
    /// # Errors
    /// [`Error::InvalidFd`] for a negative fd or one of the poller's own; `Os(EINVAL)` for a
    /// key above [`Epoll::MAX_KEY`]; `Os(EEXIST)` if already registered (the registration is
    /// unchanged); `Os(EBADF)` for a closed fd; `Os(EPERM)` for an fd epoll cannot watch (a
    /// regular file or directory); `Os(ENOSPC)` past `max_user_watches`.
    fn register(&mut self, fd: RawFd, key: u64, interest: Interest, m: Mode) -> Result<(), Error> {
        self.ctl(Ctl::Add, fd, key, interest, m)
    }

    /// `EPOLL_CTL_MOD`; also re-arms a [`Mode::Oneshot`] registration.
    ///
    /// # Errors
    /// As [`register`](Poller::register); `Os(ENOENT)` if `fd` is not registered.
    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.ctl(Ctl::Modify, fd, key, interest, mode)
    }

    /// `EPOLL_CTL_DEL`: no later wait reports the fd's key.
    ///
    /// # Errors
    /// `Os(ENOENT)` if `fd` is not registered, `Os(EBADF)` if it is closed (see the module docs
    /// on `dup`), [`Error::InvalidFd`] as for `register`.
    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.ctl(Ctl::Delete, fd, 0, Interest::READ, Mode::Level)
    }

    /// `epoll_pwait`, with a timerfd for the timeout (see the module docs).
    ///
    /// # Errors
    /// `EINTR` when a signal arrived (not retried here: the loop restarts its iteration);
    /// `EINVAL` for an empty `events` slice.
    #[inline(always)]
    fn wait(
        &mut self,
        events: &mut [PollEvent],
        timeout: Option<Duration>,
    ) -> Result<usize, Errno> {
        const NO_WAIT: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };

        // A forked child must neither steal the parent's events nor re-arm the shared timerfd.
        self.fork.check_wait()?;
        // Never ask the kernel for more fds than the caller can take: an edge-triggered or
        // oneshot event fetched and then dropped would be lost for good.
        let room = N.min(events.len());
        if room == 0 {
            return Err(Errno::EINVAL);
        }
        let epoll_timeout = match timeout {
            Some(d) if d.is_zero() => Some(&NO_WAIT),
            timeout => {
                self.set_timer(timeout)?;
                None
            }
        };
        let raw = &mut self.events.0[..room];
        let n = epoll::wait(&self.epoll, &mut *raw, epoll_timeout).map_err(errno)?;

        // `n <= room <= events.len()` (the kernel reports at most `room`: the clamp says so to
        // the compiler), so event `i` goes to `events[i]` with no test that there is room,
        // until one of the poller's own keys (one comparison, `>= TIMER_KEY`, tells them
        // apart): from there, `own_key_from` compacts what is left.
        let n = n.min(raw.len());
        for (i, (event, slot)) in raw[..n].iter().zip(events.iter_mut()).enumerate() {
            let key = event.data.u64();
            if key >= TIMER_KEY {
                return Ok(self.own_key_from(i, n, events));
            }
            *slot = PollEvent {
                key,
                readiness: readiness(event.flags),
            };
        }
        Ok(n.min(events.len()))
    }

    fn notifier(&self) -> &EventFdNotifier {
        &self.notifier
    }

    /// A fresh epoll instance under the same fd number, with only the notifier and the timer
    /// registered: the loop registers its live fds again. The way out of the dup trap (module
    /// docs), which no `EPOLL_CTL_DEL` can reach.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE`/`ENOMEM` from `epoll_create1` (every old registration is then kept);
    /// [`Error::Forked`] in a forked child.
    fn reset(&mut self) -> Result<bool, Error> {
        self.fork.check()?;
        self.rebuild().map_err(|errno| Error::Os { errno })?;
        Ok(true)
    }

    /// Compares the fork generation with the one this poller was created in (one atomic
    /// load; see `loop_posix::fork`).
    #[inline]
    fn forked(&self) -> bool {
        self.fork.forked()
    }

    /// `true`: epoll keys registrations by open file and fd number, so `EPOLL_CTL_ADD`'s
    /// `EEXIST` proves the file `fd` names now is registered (as it was), and a success that
    /// it was not.
    fn register_eexist_is_exact(&self) -> bool {
        true
    }
}

impl<const N: usize> loop_core::OpenPoller for Epoll<N> {
    /// [`Epoll::with_capacity`]: lets `EventLoop::new()` open an epoll loop.
    fn open() -> Result<Self, Errno> {
        Epoll::with_capacity()
    }
}

impl<const N: usize> Clock for Epoll<N> {
    /// [`MonotonicClock`], the clock the timeouts run on.
    fn now(&self) -> Instant {
        MonotonicClock::new().now()
    }
}

/// The epoll fd, for nesting this poller in another event loop (it is readable when `wait`
/// would report something).
impl<const N: usize> AsFd for Epoll<N> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl<const N: usize> fmt::Debug for Epoll<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoll")
            .field("epoll", &self.epoll)
            .field("notifier", &self.notifier)
            .field("timer", &self.timer)
            .field("buffer", &N)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deferred removal on epoll: a handler removed and re-added with the same interest keeps
    /// the kernel registration (a refused `EPOLL_CTL_ADD`), and the kernel's old key reaches
    /// only the new handler, from the next poll on.
    mod deferred_take_over {
        extern crate std;
        use super::*;
        use loop_core::EventLoop;
        use std::cell::Cell;
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        use std::rc::Rc;

        type Lp = EventLoop<Epoll, 8, 4, 4>;

        fn counting(lp: &mut Lp, fd: RawFd, n: &Rc<Cell<u32>>) {
            let n = n.clone();
            lp.add_handler(fd, Interest::READ, move |_, _, _| {
                n.set(n.get() + 1);
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
        }

        fn readable() -> (UnixStream, UnixStream) {
            let (ours, mut peer) = UnixStream::pair().unwrap();
            peer.write_all(b"x").unwrap(); // never read: level-triggered, ready every poll
            (ours, peer)
        }

        #[test]
        fn the_pollers_own_keys_anywhere_in_a_wait_are_dropped_and_the_rest_kept_in_order() {
            use loop_core::Notify;
            let mut poller = Epoll::new().unwrap();
            let (a, _pa) = readable();
            poller.notifier().notify().unwrap(); // ready first: the kernel reports it first
            let (b, _pb) = readable();
            poller
                .register(a.as_raw_fd(), 1, Interest::READ.registered(), Mode::Level)
                .unwrap();
            poller
                .register(b.as_raw_fd(), 2, Interest::READ.registered(), Mode::Level)
                .unwrap();
            let mut events = [PollEvent::default(); 4];
            let n = poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
            let mut keys: std::vec::Vec<u64> = events[..n].iter().map(|e| e.key).collect();
            keys.sort_unstable();
            assert_eq!(keys, [1, 2]);
            assert!(events[..n].iter().all(|e| e.readiness == Readiness::READ));
            // A buffer with room for one: one of the two, never an own key.
            poller.notifier().notify().unwrap();
            let mut one = [PollEvent::default(); 1];
            let n = poller.wait(&mut one, Some(Duration::ZERO)).unwrap();
            assert!(n <= 1 && one[..n].iter().all(|e| e.key == 1 || e.key == 2));
        }

        #[test]
        fn a_removed_and_re_added_handler_keeps_the_registration_and_gets_the_events() {
            let mut lp = Lp::with_poller(Epoll::new().unwrap());
            lp.set_deferred_removal(true);
            let (ours, _peer) = readable();
            let fd = ours.as_raw_fd();
            let (old, new) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            counting(&mut lp, fd, &old);
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(old.get(), 1);
            for round in 1..=3 {
                assert!(lp.remove_handler(fd));
                counting(&mut lp, fd, &new);
                lp.run_once(Some(Duration::ZERO)).unwrap();
                assert_eq!((old.get(), new.get()), (1, round));
            }
            // Removed for good: deregistered before the next poll.
            assert!(lp.remove_handler(fd));
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(
                lp.poller_mut().deregister(fd),
                Err(Error::Os {
                    errno: Errno::ENOENT
                })
            );
        }

        #[test]
        fn a_closed_and_reused_number_is_registered_for_its_new_file() {
            let mut lp = Lp::with_poller(Epoll::new().unwrap());
            lp.set_deferred_removal(true);
            let (ours, peer) = readable();
            let fd = ours.as_raw_fd();
            let (old, new) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            counting(&mut lp, fd, &old);
            assert!(lp.remove_handler(fd));
            drop((ours, peer)); // the kernel drops the registration with the file
            let (again, _peer) = readable();
            let reused = again.as_raw_fd();
            counting(&mut lp, reused, &new);
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!((old.get(), new.get()), (0, 1), "fd {fd} reused as {reused}");
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(new.get(), 2);
        }

        #[test]
        fn a_handler_re_added_during_a_pass_misses_that_passs_events_only() {
            let mut lp = Lp::with_poller(Epoll::new().unwrap());
            lp.set_deferred_removal(true);
            let (x, _px) = readable();
            let (y, _py) = readable();
            let (xfd, yfd) = (x.as_raw_fd(), y.as_raw_fd());
            let (old_y, new_y) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            counting(&mut lp, yfd, &old_y);
            let n = new_y.clone();
            let replaced = Rc::new(Cell::new(false));
            let r = replaced.clone();
            lp.add_handler(xfd, Interest::READ, move |lp, _, _| {
                if !r.replace(true) {
                    assert!(lp.remove_handler(yfd));
                    counting(lp, yfd, &n);
                }
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert!(replaced.get());
            assert!(
                old_y.get() <= 1,
                "the old handler: at most before its removal"
            );
            assert_eq!(
                new_y.get(),
                0,
                "y's event of this poll was fetched for the old one"
            );
            lp.run_once(Some(Duration::ZERO)).unwrap();
            assert_eq!(new_y.get(), 1);
        }
    }

    #[test]
    fn epoll_is_send_and_static() {
        fn check<T: Send + 'static>() {}
        check::<Epoll>();
        check::<Epoll<1>>();
    }

    #[test]
    fn read_interest_asks_for_in_only_and_write_for_out_only() {
        let read = epoll_flags(Interest::READ.registered(), Mode::Level);
        assert!(read.contains(EventFlags::IN));
        assert!(!read.intersects(EventFlags::OUT | EventFlags::PRI | EventFlags::RDHUP));
        let write = epoll_flags(Interest::WRITE.registered(), Mode::Level);
        assert!(write.contains(EventFlags::OUT));
        assert!(!write.intersects(EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP));
    }

    #[test]
    fn modes_map_to_et_and_oneshot_and_level_to_neither() {
        let flags = |mode| epoll_flags(Interest::READ, mode);
        assert!(!flags(Mode::Level).intersects(EventFlags::ET | EventFlags::ONESHOT));
        assert!(flags(Mode::Edge).contains(EventFlags::ET));
        assert!(!flags(Mode::Edge).contains(EventFlags::ONESHOT));
        assert!(flags(Mode::Oneshot).contains(EventFlags::ONESHOT));
        assert!(!flags(Mode::Oneshot).contains(EventFlags::ET));
    }

    #[test]
    fn kernel_flags_translate_to_readiness() {
        assert_eq!(readiness(EventFlags::IN), Readiness::READ);
        assert_eq!(readiness(EventFlags::PRI), Readiness::READ);
        assert_eq!(readiness(EventFlags::RDHUP), Readiness::READ);
        assert_eq!(readiness(EventFlags::OUT), Readiness::WRITE);
        assert_eq!(readiness(EventFlags::ERR), Readiness::ERROR);
        assert_eq!(readiness(EventFlags::HUP), Readiness::HUP);
        assert_eq!(
            readiness(EventFlags::IN | EventFlags::OUT | EventFlags::ERR | EventFlags::HUP),
            Readiness::all()
        );
    }

    #[test]
    fn the_pollers_own_fds_are_refused_and_never_closed() {
        let mut poller = Epoll::new().unwrap();
        for fd in [
            poller.epoll.as_raw_fd(),
            poller.notifier.as_fd().as_raw_fd(),
            poller.timer.as_fd().as_raw_fd(),
        ] {
            let refused = Err(Error::InvalidFd { fd });
            assert_eq!(poller.register(fd, 1, Interest::READ, Mode::Level), refused);
            assert_eq!(poller.modify(fd, 1, Interest::READ, Mode::Level), refused);
            assert_eq!(poller.deregister(fd), refused);
        }
        // Still alive: a notification still wakes a wait.
        loop_core::Notify::notify(poller.notifier()).unwrap();
        let mut events = [PollEvent::default(); 4];
        assert_eq!(poller.wait(&mut events, None), Ok(0));
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut poller = Epoll::new().unwrap();
        let fd = poller.notifier.try_clone().unwrap();
        let raw = fd.as_fd().as_raw_fd();
        for key in [NOTIFY_KEY, TIMER_KEY] {
            let refused = Err(Error::Os {
                errno: Errno::EINVAL,
            });
            assert_eq!(
                poller.register(raw, key, Interest::READ, Mode::Level),
                refused
            );
        }
        assert_eq!(
            poller.register(raw, Epoll::<256>::MAX_KEY, Interest::READ, Mode::Level),
            Ok(())
        );
    }
}
