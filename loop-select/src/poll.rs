//! [`Poll`]: the `poll(2)` poller, for any POSIX system.
//!
//! # How the table works
//!
//! The kernel gets one contiguous `pollfd` array per call, so that array *is* the table: a
//! fixed-capacity `heapless::Vec` of `PollFd`, with a parallel `Vec` of bookkeeping (key,
//! interest, mode). It is kept in three zones:
//!
//! ```text
//! [0]            the notifier's read end, always polled for POLLIN
//! [1 .. armed]   armed registrations: handed to poll(2)
//! [armed .. len] parked registrations: still registered, not handed to poll(2)
//! ```
//!
//! Parking exists because `poll(2)` reports `POLLERR`/`POLLHUP`/`POLLNVAL` whatever `events`
//! says, so "watch nothing" cannot be expressed with `events = 0`, and rustix's `PollFd` holds a
//! `BorrowedFd`, which cannot be the `-1` POSIX uses to skip an entry. `POLLNVAL` and a fired
//! oneshot park an entry (see [`Poll`]); `modify` re-arms it; `deregister` removes it from
//! either zone. Parking is a swap with the zone boundary, so it is O(1), and a wait parks
//! only after its scan (in descending order) so the scan's indices stay put.
//!
//! # Lifetimes
//!
//! `PollFd<'fd>` borrows its fd. The poller does not own the fds it watches (the loop hands it
//! raw numbers), so the entries are `PollFd<'static>` built with `BorrowedFd::borrow_raw`. That
//! is the same trade smol-rs/polling makes: `poll(2)` reads only the number, never memory
//! behind it, and a number that was closed behind our back is answered with `POLLNVAL`, which
//! is handled above. The borrowed fds never leave this module.
//!
//! # Cost
//!
//! `register`/`modify`/`deregister` search the table linearly (O(n), like the `wait` that
//! follows them); `wait` is one `poll(2)` over the armed entries and one pass over them. No
//! allocation anywhere.

use core::fmt;
use core::time::Duration;

use heapless::Vec;
use loop_core::{
    Capabilities, Clock, Errno, Error, Instant, Interest, Mode, OpenPoller, PollEvent, Poller,
    RawFd, Readiness, Resource,
};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd};

use loop_posix::fork::ForkGuard;
use loop_posix::refused;

use crate::oneshot;
use loop_posix::timeout::{wait_sliced, Resolution};
use loop_posix::{check_open, errno, PipeNotifier, PipeReader};

/// A `poll(2)` poller with room for `N` pollfds, one of which is the notifier's: it watches up
/// to `N - 1` fds.
///
/// * **Modes**: [`Mode::Level`], and [`Mode::Oneshot`] emulated as mio and polling do (after
///   one report the fd is no longer handed to `poll(2)` until `modify` re-arms it).
///   [`Mode::Edge`] cannot be emulated faithfully on a level-triggered API (it would need to
///   know when the handler drained the fd): it is refused with [`Error::Unsupported`] and left
///   out of [`Poller::capabilities`].
/// * **An fd closed while registered** (`POLLNVAL`) is reported **once** as
///   [`Readiness::ERROR`], then masked, so the loop does not spin on an event it cannot clear.
///   The registration stays until `deregister` (which succeeds); `modify` re-arms it (and a
///   number that is still closed is reported once more). A closed fd is refused at
///   `register` with `EBADF`, as epoll refuses it.
/// * **Timeouts** are whole milliseconds, rounded **up** (a 0.4 ms wait is 1 ms, never a
///   0 ms busy-poll); waits over a day are sliced, never truncated.
/// * **Fairness**: reporting starts after the fd reported last, so a caller with a small
///   event buffer still reaches every ready fd in turn.
/// * **Full table**: `register` returns `Error::Full { what: Resource::PollerSlots }`.
///
/// # Examples
///
/// ```
/// use loop_core::{Interest, Mode, PollEvent, Poller, Readiness};
/// use std::time::Duration;
///
/// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let mut poller = loop_select::Poll::new().unwrap();
/// let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
/// poller.register(fd, 7, Interest::READ.registered(), Mode::Level).unwrap();
///
/// std::io::Write::write_all(&mut &b, b"x").unwrap();
/// let mut events = [PollEvent::default(); 8];
/// let n = poller.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
/// assert_eq!(n, 1);
/// assert_eq!(events[0].key, 7);
/// assert!(events[0].readiness.contains(Readiness::READ));
/// ```
pub struct Poll<const N: usize = 1024> {
    /// The array handed to `poll(2)`; see the module docs for its zones.
    fds: Vec<PollFd<'static>, N>,
    /// `slots[i]` describes `fds[i]`.
    slots: Vec<Slot, N>,
    /// `fds[..armed]` is what the kernel sees (always ≥ 1: the notifier).
    armed: usize,
    /// Where the next report starts, counted over the armed user entries.
    cursor: usize,
    notifier: PipeNotifier,
    /// Entry 0 of `fds` borrows this fd; `fds` is declared (so dropped) first.
    reader: PipeReader,
    /// The fork generation the poller was created in: a forked child's copy refuses every
    /// operation rather than drain the wake-up pipe it shares with the parent.
    fork: ForkGuard,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    fd: RawFd,
    key: u64,
    interest: Interest,
    oneshot: bool,
    /// Marked during a wait's scan, parked after it (so the scan's indices stay put).
    park: bool,
}

impl Poll {
    /// A poller for up to 1023 fds (the default `N = 1024`).
    ///
    /// # Errors
    /// The OS error from creating the notifier pipe (`EMFILE`, `ENFILE`).
    pub fn new() -> Result<Poll, Errno> {
        Poll::with_capacity()
    }
}

impl<const N: usize> Poll<N> {
    /// A poller with `N` pollfd slots (`Poll::<64>::with_capacity()` watches up to 63 fds).
    ///
    /// ```
    /// use loop_core::{Error, Interest, Mode, Poller, Resource};
    ///
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let fd = |s: &std::os::unix::net::UnixStream| std::os::fd::AsRawFd::as_raw_fd(s);
    /// let mut poller = loop_select::Poll::<2>::with_capacity()?; // the notifier + 1 fd
    /// poller.register(fd(&a), 1, Interest::READ.registered(), Mode::Level)?;
    /// assert_eq!(
    ///     poller.register(fd(&b), 2, Interest::READ.registered(), Mode::Level),
    ///     Err(Error::Full { what: Resource::PollerSlots })
    /// );
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// The OS error from creating the notifier pipe (`EMFILE`, `ENFILE`).
    pub fn with_capacity() -> Result<Self, Errno> {
        const { assert!(N >= 1, "Poll<N> needs N >= 1: slot 0 is the notifier's") };
        let (notifier, reader) = PipeNotifier::pair()?;
        let mut poll = Poll {
            fds: Vec::new(),
            slots: Vec::new(),
            armed: 0,
            cursor: 0,
            notifier,
            reader,
            fork: ForkGuard::new(),
        };
        let fd = poll.reader.as_fd().as_raw_fd();
        // Capacity N >= 1 was checked at compile time, so the first push cannot fail.
        let _ = poll.fds.push(pollfd(fd, PollFlags::IN));
        let _ = poll.slots.push(Slot {
            fd,
            key: 0,
            interest: Interest::READ,
            oneshot: false,
            park: false,
        });
        poll.armed = 1;
        Ok(poll)
    }

    /// How many fds are registered (armed or parked), not counting the notifier.
    ///
    /// ```
    /// use loop_core::{Interest, Mode, Poller};
    ///
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
    /// let mut poller = loop_select::Poll::<8>::with_capacity()?;
    /// assert!(poller.is_empty());
    /// poller.register(fd, 1, Interest::READ.registered(), Mode::Level)?;
    /// assert_eq!(poller.len(), 1);
    /// poller.deregister(fd)?;
    /// assert!(poller.is_empty());
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len() - 1
    }

    /// Whether no fd is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of `fd`'s registration, skipping the notifier's slot 0.
    fn find(&self, fd: RawFd) -> Option<usize> {
        self.slots
            .iter()
            .skip(1)
            .position(|s| s.fd == fd)
            .map(|i| i + 1)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.fds.swap(a, b);
        self.slots.swap(a, b);
    }

    /// Move the parked entry `i` into the armed zone.
    fn arm(&mut self, i: usize) {
        debug_assert!(i >= self.armed);
        self.swap(i, self.armed);
        self.armed += 1;
    }

    /// Move the armed entry `i` into the parked zone.
    fn park(&mut self, i: usize) {
        debug_assert!(i >= 1 && i < self.armed);
        self.swap(i, self.armed - 1);
        self.armed -= 1;
    }

    /// Read the `revents` of the last `poll(2)` into `events`; returns how many were filled.
    fn collect(&mut self, events: &mut [PollEvent]) -> usize {
        if !self.fds[0].revents().is_empty() {
            self.reader.drain();
        }
        let users = self.armed - 1;
        let start = if users == 0 { 0 } else { self.cursor % users };
        let mut filled = 0;
        let mut parks = 0;
        for step in 0..users {
            if filled == events.len() {
                break;
            }
            let i = 1 + (start + step) % users;
            let revents = self.fds[i].revents();
            let slot = &mut self.slots[i];
            let readiness = readiness(revents, slot.interest);
            if readiness.is_empty() {
                continue;
            }
            events[filled] = PollEvent {
                key: slot.key,
                readiness,
            };
            filled += 1;
            if slot.oneshot || revents.contains(PollFlags::NVAL) {
                slot.park = true;
                parks += 1;
            }
            self.cursor = start + step + 1;
        }
        // Descending, so a park's swap only moves an entry this pass has already looked at.
        let mut i = self.armed;
        while parks > 0 && i > 1 {
            i -= 1;
            if self.slots[i].park {
                self.slots[i].park = false;
                self.park(i);
                parks -= 1;
            }
        }
        filled
    }
}

/// A `PollFd` for a raw fd number the poller does not own.
fn pollfd(fd: RawFd, events: PollFlags) -> PollFd<'static> {
    // SAFETY: `poll(2)` only reads the fd number; a number closed while registered is answered
    // with POLLNVAL (handled by parking), never with a memory access. The 'static borrow never
    // leaves this module (see "Lifetimes" in the module docs).
    PollFd::from_borrowed_fd(unsafe { BorrowedFd::borrow_raw(fd) }, events)
}

/// The `events` mask for an interest. ERROR needs no bit: `poll(2)` always reports it.
fn poll_flags(interest: Interest) -> PollFlags {
    let mut flags = PollFlags::empty();
    if interest.contains(Interest::READ) {
        flags |= PollFlags::IN;
    }
    if interest.contains(Interest::WRITE) {
        flags |= PollFlags::OUT;
    }
    flags
}

/// What a `revents` mask means for a handler with `interest`.
///
/// `POLLERR` and `POLLNVAL` are errors, `POLLHUP` a hang-up; readability and writability only
/// count when asked for (the kernel would not report them otherwise, but the contract is
/// ours to keep).
fn readiness(revents: PollFlags, interest: Interest) -> Readiness {
    let mut r = Readiness::empty();
    if interest.contains(Interest::READ)
        && revents
            .intersects(PollFlags::IN | PollFlags::PRI | PollFlags::RDNORM | PollFlags::RDBAND)
    {
        r |= Readiness::READ;
    }
    if interest.contains(Interest::WRITE)
        && revents.intersects(PollFlags::OUT | PollFlags::WRNORM | PollFlags::WRBAND)
    {
        r |= Readiness::WRITE;
    }
    if revents.intersects(PollFlags::ERR | PollFlags::NVAL) {
        r |= Readiness::ERROR;
    }
    if revents.contains(PollFlags::HUP) {
        r |= Readiness::HUP;
    }
    r
}

impl<const N: usize> Clock for Poll<N> {
    fn now(&self) -> Instant {
        loop_posix::monotonic_now()
    }
}

impl<const N: usize> Poller for Poll<N> {
    type Notifier = PipeNotifier;
    loop_posix::notifier_and_forked!();

    fn capabilities(&self) -> Capabilities {
        Capabilities::LEVEL | Capabilities::ONESHOT
    }

    fn register(&mut self, fd: RawFd, key: u64, interest: Interest, m: Mode) -> Result<(), Error> {
        self.fork.check_fd(fd)?;
        let oneshot = oneshot(m)?;
        // Slot 0 counts: the notifier's own fd is "already registered".
        if self.slots.iter().any(|s| s.fd == fd) {
            return Err(refused(Errno::EEXIST));
        }
        if self.slots.is_full() {
            return Err(Error::Full {
                what: Resource::PollerSlots,
            });
        }
        // Refuse a closed fd now, as epoll does, rather than report POLLNVAL later.
        check_open(fd)?;
        let slot = Slot {
            fd,
            key,
            interest,
            oneshot,
            park: false,
        };
        // Both Vecs have the same length and capacity, and one is not full.
        let _ = self.fds.push(pollfd(fd, poll_flags(interest)));
        let _ = self.slots.push(slot);
        self.arm(self.slots.len() - 1);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.fork.check_fd(fd)?;
        let oneshot = oneshot(mode)?;
        // A closed fd is refused as `register` refuses it (and as epoll's modify does): the
        // loop's take-over of a deferred removal relies on it, and a closed fd left in the
        // set would fail every later wait (select: EBADF; poll: POLLNVAL).
        check_open(fd)?;
        let i = self.find(fd).ok_or(refused(Errno::ENOENT))?;
        self.fds[i] = pollfd(fd, poll_flags(interest));
        self.slots[i] = Slot {
            fd,
            key,
            interest,
            oneshot,
            park: false,
        };
        if i >= self.armed {
            self.arm(i);
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.fork.check()?;
        let mut i = self.find(fd).ok_or(refused(Errno::ENOENT))?;
        if i < self.armed {
            self.park(i);
            i = self.armed;
        }
        // Parked zone: swapping the last (parked) entry in keeps the zones intact.
        self.fds.swap_remove(i);
        self.slots.swap_remove(i);
        Ok(())
    }

    fn wait(&mut self, events: &mut [PollEvent], limit: Option<Duration>) -> Result<usize, Errno> {
        // A forked child must not drain the parent's wake-up pipe.
        self.fork.check_wait()?;
        wait_sliced(limit, Resolution::Millis, |slice| {
            let n = rustix::event::poll(&mut self.fds[..self.armed], slice).map_err(errno)?;
            Ok((n > 0).then(|| self.collect(events)))
        })
    }
}

impl<const N: usize> OpenPoller for Poll<N> {
    /// [`Poll::with_capacity`]: lets `EventLoop::new()` open a poll loop.
    fn open() -> Result<Self, Errno> {
        Self::with_capacity()
    }
}

impl<const N: usize> fmt::Debug for Poll<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poll")
            .field("capacity", &(N - 1))
            .field("registered", &self.len())
            .field("armed", &(self.armed - 1))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_keys_0_to_2_each_seen, event, os, pair};
    use loop_core::Notify;
    use rustix::fd::OwnedFd;

    fn raw(fd: &OwnedFd) -> RawFd {
        fd.as_raw_fd()
    }

    const RW: Interest = Interest::READ.union(Interest::WRITE).union(Interest::ERROR);
    const NOW: Option<Duration> = Some(Duration::ZERO);

    #[test]
    fn readiness_translation_respects_interest() {
        let all = PollFlags::IN | PollFlags::OUT;
        assert_eq!(readiness(all, Interest::READ), Readiness::READ);
        assert_eq!(readiness(all, Interest::WRITE), Readiness::WRITE);
        assert_eq!(
            readiness(PollFlags::NVAL, Interest::empty()),
            Readiness::ERROR
        );
        assert_eq!(
            readiness(PollFlags::HUP | PollFlags::IN, Interest::READ),
            Readiness::READ | Readiness::HUP
        );
        assert_eq!(readiness(PollFlags::ERR, Interest::WRITE), Readiness::ERROR);
    }

    #[test]
    fn closed_fd_is_reported_once_then_masked() {
        let mut p = Poll::<8>::with_capacity().unwrap();
        let (a, _b) = pair();
        // A second number for the same socket: closing it leaves a closed number registered.
        // Far above the numbers the other tests of this binary open in parallel, so none of
        // them can reuse it between the close and the wait (that would make it valid again).
        let dup = rustix::io::fcntl_dupfd_cloexec(&a, 700).unwrap();
        let fd = raw(&dup);
        p.register(fd, 5, Interest::READ.registered(), Mode::Level)
            .unwrap();
        drop(dup);
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(p.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(ev[0], event(5, Readiness::ERROR));
        assert_eq!(
            p.wait(&mut ev, NOW).unwrap(),
            0,
            "POLLNVAL must not be reported again"
        );
        assert_eq!(
            p.deregister(fd),
            Ok(()),
            "the parked registration is still there to remove"
        );
        assert!(p.is_empty());
    }

    #[test]
    fn oneshot_reports_once_until_modified() {
        let mut p = Poll::<8>::with_capacity().unwrap();
        let (a, _b) = pair();
        p.register(raw(&a), 1, RW, Mode::Oneshot).unwrap();
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(p.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(p.wait(&mut ev, NOW).unwrap(), 0);
        p.modify(raw(&a), 2, RW, Mode::Oneshot).unwrap();
        assert_eq!(p.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(ev[0].key, 2);
    }

    #[test]
    fn edge_mode_is_refused() {
        let mut p = Poll::<8>::with_capacity().unwrap();
        let (a, _b) = pair();
        assert_eq!(
            p.register(raw(&a), 1, RW, Mode::Edge),
            Err(Error::Unsupported)
        );
        assert!(!p.capabilities().supports(Mode::Edge));
    }

    #[test]
    fn full_table_is_an_error_not_a_panic() {
        let mut p = Poll::<3>::with_capacity().unwrap();
        let (a, b) = pair();
        let (c, _d) = pair();
        p.register(raw(&a), 1, RW, Mode::Level).unwrap();
        p.register(raw(&b), 2, RW, Mode::Level).unwrap();
        assert_eq!(
            p.register(raw(&c), 3, RW, Mode::Level),
            Err(Error::Full {
                what: Resource::PollerSlots
            })
        );
        p.deregister(raw(&a)).unwrap();
        p.register(raw(&c), 3, RW, Mode::Level).unwrap();
    }

    #[test]
    fn duplicate_and_unknown_fds() {
        let mut p = Poll::new().unwrap();
        let (a, b) = pair();
        p.register(raw(&a), 1, RW, Mode::Level).unwrap();
        assert_eq!(
            p.register(raw(&a), 2, RW, Mode::Level),
            Err(os(Errno::EEXIST))
        );
        assert_eq!(
            p.modify(raw(&b), 2, RW, Mode::Level),
            Err(os(Errno::ENOENT))
        );
        assert_eq!(p.deregister(raw(&b)), Err(os(Errno::ENOENT)));
        assert_eq!(
            p.register(-1, 2, RW, Mode::Level),
            Err(Error::InvalidFd { fd: -1 })
        );
        let notifier_fd = p.reader.as_fd().as_raw_fd();
        assert_eq!(
            p.register(notifier_fd, 2, RW, Mode::Level),
            Err(os(Errno::EEXIST))
        );
        assert_eq!(p.deregister(notifier_fd), Err(os(Errno::ENOENT)));
    }

    #[test]
    fn closed_fd_is_refused_at_register() {
        let mut p = Poll::new().unwrap();
        let (a, _b) = pair();
        let fd = raw(&a);
        drop(a);
        assert_eq!(p.register(fd, 1, RW, Mode::Level), Err(os(Errno::EBADF)));
    }

    #[test]
    fn a_small_buffer_still_reaches_every_ready_fd() {
        let mut p = Poll::<8>::with_capacity().unwrap();
        let pairs = [pair(), pair(), pair()];
        for (k, (a, _)) in pairs.iter().enumerate() {
            p.register(raw(a), k as u64, Interest::WRITE.registered(), Mode::Level)
                .unwrap();
        }
        assert_keys_0_to_2_each_seen(|ev| p.wait(ev, NOW).unwrap());
    }

    #[test]
    fn notification_alone_returns_zero_events() {
        let mut p = Poll::new().unwrap();
        p.notifier().notify().unwrap();
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap(), 0);
        assert!(!p.reader.drain(), "the wait drained the pipe");
    }

    #[test]
    fn deregister_keeps_the_other_registrations_intact() {
        let mut p = Poll::<8>::with_capacity().unwrap();
        // Peers kept alive: a dropped peer would add HUP to every event.
        let (a, _pa) = pair();
        let (b, _pb) = pair();
        let (c, _pc) = pair();
        p.register(raw(&a), 1, Interest::WRITE.registered(), Mode::Level)
            .unwrap();
        p.register(raw(&b), 2, Interest::WRITE.registered(), Mode::Oneshot)
            .unwrap();
        p.register(raw(&c), 3, Interest::WRITE.registered(), Mode::Level)
            .unwrap();
        let mut ev = [PollEvent::default(); 8];
        assert_eq!(p.wait(&mut ev, NOW).unwrap(), 3); // b parks
        p.deregister(raw(&a)).unwrap();
        let n = p.wait(&mut ev, NOW).unwrap();
        assert_eq!(&ev[..n], &[event(3, Readiness::WRITE)]);
        p.modify(raw(&b), 4, Interest::WRITE.registered(), Mode::Level)
            .unwrap();
        let n = p.wait(&mut ev, NOW).unwrap();
        let mut keys: [u64; 2] = [ev[0].key, ev[1].key];
        keys.sort();
        assert_eq!((n, keys), (2, [3, 4]));
    }
}
