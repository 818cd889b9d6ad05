//! [`Select`]: the `select(2)` poller, for systems where nothing better exists.
//!
//! Three persistent fd sets and a registration table, all indexed by fd. Each wait hands
//! copies of the sets to the kernel and merges the three answers (each iterated in ascending
//! fd order, like sorted lists) into one event per fd. Every fd in the sets was checked open at
//! `register`; one closed since makes the kernel answer `EBADF`, which `wait` turns into a
//! one-time `ERROR` for that fd (see [`Select`]).

use core::fmt;
use core::mem::size_of;
use core::ops::Range;
use core::time::Duration;

use loop_core::{
    Capabilities, Clock, Errno, Error, Instant, Interest, Mode, OpenPoller, PollEvent, Poller,
    RawFd, Readiness,
};
use rustix::event::{fd_set_bound, fd_set_insert, fd_set_remove, FdSetElement, FdSetIter};
use rustix::fd::{AsFd, AsRawFd};

use loop_posix::fork::ForkGuard;
use loop_posix::refused;

use crate::oneshot;
use loop_posix::timeout::{wait_sliced, Resolution};
use loop_posix::{check_open, errno, PipeNotifier, PipeReader};

/// The largest fd count `select(2)` is defined for (glibc, musl, the BSDs and macOS agree).
///
/// ```
/// // Fds at or above it are refused by `Select::register` with `Error::InvalidFd`; a process
/// // that may hold more fds should use `Poll` (or epoll/kqueue).
/// assert_eq!(loop_select::FD_SETSIZE, 1024);
/// ```
pub const FD_SETSIZE: usize = 1024;

/// `FdSetElement`s in one set of `FD_SETSIZE` bits.
const WORDS: usize = FD_SETSIZE / (size_of::<FdSetElement>() * 8);

type FdSet = [FdSetElement; WORDS];

/// A `select(2)` poller for fds below [`FD_SETSIZE`].
///
/// As Tornado's `_Select` (TORNADO.md §1.4): [`Interest::READ`] puts the fd in the read set,
/// [`Interest::WRITE`] in the write set, [`Interest::ERROR`] in the except set. What that means
/// for a handler:
///
/// * **A closed peer shows up as READ**, not HUP: `select` has no hang-up bit. The handler's
///   `read` returns 0 and it learns of the hang-up there, as with Tornado's select loop. An fd
///   registered for WRITE only is told through WRITE (its next write fails with `EPIPE`).
/// * **The except set means "exceptional condition"**, which for sockets is out-of-band
///   (TCP urgent) data; it is reported as [`Readiness::ERROR`], as Tornado does.
/// * **`FD_SETSIZE`**: the sets are fixed arrays for fds `0..1024`. A larger (or negative) fd
///   is refused at `register` with [`Error::InvalidFd`] instead of writing past the set (the
///   classic select overflow), and the poller stays usable. The notifier's own pipe must fit
///   too: [`Select::new`] fails with `EMFILE` if the process has no fd below 1024 left.
/// * **A registered fd closed behind the poller's back** would make every `select` fail with
///   `EBADF`. Instead the poller finds the closed fds (one `fcntl(F_GETFD)` each), reports
///   each **once** as [`Readiness::ERROR`] and stops watching it until `modify` or
///   `deregister`: the same rule as [`Poll`](crate::Poll)'s `POLLNVAL`. A closed fd is refused
///   at `register` with `EBADF`.
/// * **Modes**: level; [`Mode::Oneshot`] emulated (the fd leaves the sets after one report
///   until `modify`); [`Mode::Edge`] refused with [`Error::Unsupported`].
/// * **Timeouts** are `struct timeval`: microseconds, rounded **up**.
/// * **Cost**: register/modify/deregister are O(1); a wait is O(`FD_SETSIZE`/64) words per set
///   plus one step per ready fd. Reporting starts after the fd reported last, so a small event
///   buffer still reaches every ready fd in turn.
///
/// About 17 KiB, all inline; nothing is allocated.
///
/// # Examples
///
/// ```
/// use loop_core::{Error, Interest, Mode, Poller};
///
/// let mut poller = loop_select::Select::new().unwrap();
/// // An fd select cannot represent is refused, not written past the end of the set.
/// assert_eq!(poller.register(4096, 1, Interest::READ.registered(), Mode::Level), Err(Error::InvalidFd { fd: 4096 }));
/// ```
pub struct Select {
    read: FdSet,
    write: FdSet,
    except: FdSet,
    entries: [Option<Entry>; FD_SETSIZE],
    notifier: PipeNotifier,
    reader: PipeReader,
    /// The reader's fd, cached: it is in the read set for good.
    reader_fd: RawFd,
    registered: usize,
    /// The fd after the last one reported: where the next report starts.
    cursor: RawFd,
    /// The fork generation the poller was created in: a forked child's copy refuses every
    /// operation rather than drain the wake-up pipe it shares with the parent.
    fork: ForkGuard,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    oneshot: bool,
    /// Out of the sets (oneshot fired, or found closed), still registered.
    parked: bool,
}

impl Select {
    /// A poller with its notifier pipe in the read set.
    ///
    /// # Errors
    /// The OS error from creating the pipe, or `EMFILE` if its read end is at or above
    /// [`FD_SETSIZE`] (the process holds over a thousand fds already).
    pub fn new() -> Result<Select, Errno> {
        let (notifier, reader) = PipeNotifier::pair()?;
        let reader_fd = reader.as_fd().as_raw_fd();
        if !representable(reader_fd) {
            return Err(Errno::EMFILE);
        }
        let mut select = Select {
            read: [FdSetElement::default(); WORDS],
            write: [FdSetElement::default(); WORDS],
            except: [FdSetElement::default(); WORDS],
            entries: [None; FD_SETSIZE],
            notifier,
            reader,
            reader_fd,
            registered: 0,
            cursor: 0,
            fork: ForkGuard::new(),
        };
        fd_set_insert(&mut select.read, reader_fd);
        Ok(select)
    }

    /// How many fds are registered, not counting the notifier.
    ///
    /// ```
    /// use loop_core::{Interest, Mode, Poller};
    ///
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
    /// let mut poller = loop_select::Select::new()?;
    /// assert!(poller.is_empty());
    /// poller.register(fd, 1, Interest::READ.registered(), Mode::Level)?;
    /// assert_eq!(poller.len(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.registered
    }

    /// Whether no fd is registered.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
    }

    /// Put `fd` into the sets its interest names.
    fn arm(&mut self, fd: RawFd, interest: Interest) {
        if interest.contains(Interest::READ) {
            fd_set_insert(&mut self.read, fd);
        }
        if interest.contains(Interest::WRITE) {
            fd_set_insert(&mut self.write, fd);
        }
        if interest.contains(Interest::ERROR) {
            fd_set_insert(&mut self.except, fd);
        }
    }

    /// Take `fd` out of every set.
    fn disarm(&mut self, fd: RawFd) {
        fd_set_remove(&mut self.read, fd);
        fd_set_remove(&mut self.write, fd);
        fd_set_remove(&mut self.except, fd);
    }

    fn park(&mut self, fd: RawFd) {
        self.disarm(fd);
        if let Some(e) = &mut self.entries[fd as usize] {
            e.parked = true;
        }
    }

    /// Merge the three result sets into `events`, starting after the fd reported last time
    /// (so a small `events` still reaches every ready fd in turn), wrapping around once.
    fn collect(&mut self, r: &FdSet, w: &FdSet, x: &FdSet, events: &mut [PollEvent]) -> usize {
        if FdSetIter::new(r)
            .take_while(|&fd| fd <= self.reader_fd)
            .any(|fd| fd == self.reader_fd)
        {
            self.reader.drain();
        }
        let start = self.cursor;
        let filled = self.collect_range(r, w, x, start..FD_SETSIZE as RawFd, events, 0);
        self.collect_range(r, w, x, 0..start, events, filled)
    }

    /// One pass of [`collect`](Self::collect) over the fds in `range`, each set iterated in
    /// ascending order and merged like sorted lists.
    fn collect_range(
        &mut self,
        r: &FdSet,
        w: &FdSet,
        x: &FdSet,
        range: Range<RawFd>,
        events: &mut [PollEvent],
        mut filled: usize,
    ) -> usize {
        let within = |set| {
            FdSetIter::new(set)
                .skip_while(|&fd| fd < range.start)
                .take_while(|&fd| fd < range.end)
        };
        let (mut r, mut w, mut x) = (
            within(r).peekable(),
            within(w).peekable(),
            within(x).peekable(),
        );
        while filled < events.len() {
            let Some(fd) = [r.peek(), w.peek(), x.peek()]
                .into_iter()
                .flatten()
                .copied()
                .min()
            else {
                break;
            };
            let mut readiness = Readiness::empty();
            if r.next_if_eq(&fd).is_some() {
                readiness |= Readiness::READ;
            }
            if w.next_if_eq(&fd).is_some() {
                readiness |= Readiness::WRITE;
            }
            if x.next_if_eq(&fd).is_some() {
                readiness |= Readiness::ERROR;
            }
            if fd == self.reader_fd {
                continue;
            }
            let Some(entry) = self.entries[fd as usize] else {
                continue;
            };
            events[filled] = PollEvent {
                key: entry.key,
                readiness,
            };
            filled += 1;
            self.cursor = fd + 1;
            if entry.oneshot {
                self.park(fd);
            }
        }
        filled
    }

    /// After `EBADF`: report each registered fd that is now closed, once, and park it.
    fn collect_closed(&mut self, events: &mut [PollEvent]) -> usize {
        let mut filled = 0;
        for fd in 0..FD_SETSIZE as RawFd {
            if filled == events.len() {
                break;
            }
            let Some(entry) = self.entries[fd as usize] else {
                continue;
            };
            if !entry.parked && check_open(fd) == Err(Errno::EBADF) {
                events[filled] = PollEvent {
                    key: entry.key,
                    readiness: Readiness::ERROR,
                };
                filled += 1;
                self.park(fd);
            }
        }
        filled
    }
}

/// Whether select's fixed sets can hold `fd`.
fn representable(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
}

impl Clock for Select {
    fn now(&self) -> Instant {
        loop_posix::monotonic_now()
    }
}

impl Poller for Select {
    type Notifier = PipeNotifier;
    loop_posix::notifier_and_forked!();

    fn capabilities(&self) -> Capabilities {
        Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::PRECISE_TIMEOUT
    }

    fn register(&mut self, fd: RawFd, key: u64, interest: Interest, m: Mode) -> Result<(), Error> {
        self.fork.check()?;
        if !representable(fd) {
            return Err(Error::InvalidFd { fd });
        }
        let oneshot = oneshot(m)?;
        if fd == self.reader_fd || self.entries[fd as usize].is_some() {
            return Err(refused(Errno::EEXIST));
        }
        // A closed fd in a set fails every later select with EBADF: refuse it here.
        check_open(fd)?;
        self.entries[fd as usize] = Some(Entry {
            key,
            oneshot,
            parked: false,
        });
        self.arm(fd, interest);
        self.registered += 1;
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.fork.check()?;
        if !representable(fd) {
            return Err(Error::InvalidFd { fd });
        }
        let oneshot = oneshot(mode)?;
        // A closed fd is refused as `register` refuses it (and as epoll's modify does): the
        // loop's take-over of a deferred removal relies on it, and a closed fd left in the
        // set would fail every later wait (select: EBADF; poll: POLLNVAL).
        check_open(fd)?;
        if self.entries[fd as usize].is_none() {
            return Err(refused(Errno::ENOENT));
        }
        self.entries[fd as usize] = Some(Entry {
            key,
            oneshot,
            parked: false,
        });
        self.disarm(fd);
        self.arm(fd, interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.fork.check()?;
        if !representable(fd) || self.entries[fd as usize].take().is_none() {
            return Err(refused(Errno::ENOENT));
        }
        self.disarm(fd);
        self.registered -= 1;
        Ok(())
    }

    fn wait(&mut self, events: &mut [PollEvent], limit: Option<Duration>) -> Result<usize, Errno> {
        // A forked child must not drain the parent's wake-up pipe.
        self.fork.check_wait()?;
        wait_sliced(limit, Resolution::Micros, |slice| {
            let (mut r, mut w, mut x) = (self.read, self.write, self.except);
            let nfds = fd_set_bound(&r).max(fd_set_bound(&w)).max(fd_set_bound(&x));
            // SAFETY: rustix requires the sets to hold open fds. Every fd in them was open at
            // register time (checked), and one closed since is answered by the kernel with
            // EBADF, which is handled below; select reads no memory through the fds. The sets
            // hold FD_SETSIZE bits, enough for any nfds they can produce.
            let result = unsafe {
                rustix::event::select(nfds, Some(&mut r), Some(&mut w), Some(&mut x), slice)
            };
            match result {
                Ok(0) => Ok(None),
                Ok(_) => Ok(Some(self.collect(&r, &w, &x, events))),
                Err(rustix::io::Errno::BADF) => {
                    let n = self.collect_closed(events);
                    if n > 0 || events.is_empty() {
                        Ok(Some(n))
                    } else {
                        Err(Errno::EBADF)
                    }
                }
                Err(e) => Err(errno(e)),
            }
        })
    }
}

impl OpenPoller for Select {
    /// [`Select::new`]: lets `EventLoop::new()` open a select loop.
    fn open() -> Result<Self, Errno> {
        Self::new()
    }
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_keys_0_to_2_each_seen, event, os, pair};

    const NOW: Option<Duration> = Some(Duration::ZERO);

    #[test]
    fn sets_cover_fd_setsize_exactly() {
        assert_eq!(WORDS * size_of::<FdSetElement>() * 8, FD_SETSIZE);
        assert_eq!(
            rustix::event::fd_set_num_elements(FD_SETSIZE, FD_SETSIZE as RawFd),
            WORDS
        );
    }

    #[test]
    fn out_of_range_fds_are_refused() {
        let mut s = Select::new().unwrap();
        let i = Interest::READ.registered();
        assert_eq!(
            s.register(1024, 1, i, Mode::Level),
            Err(Error::InvalidFd { fd: 1024 })
        );
        assert_eq!(
            s.register(-3, 1, i, Mode::Level),
            Err(Error::InvalidFd { fd: -3 })
        );
        assert_eq!(
            s.modify(1024, 1, i, Mode::Level),
            Err(Error::InvalidFd { fd: 1024 })
        );
        assert_eq!(s.deregister(1024), Err(os(Errno::ENOENT)));
    }

    #[test]
    fn read_write_and_except_merge_into_one_event() {
        let mut s = Select::new().unwrap();
        let (a, b) = pair();
        rustix::io::write(&b, b"x").unwrap();
        let all = Interest::READ | Interest::WRITE | Interest::ERROR;
        s.register(a.as_raw_fd(), 9, all, Mode::Level).unwrap();
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(ev[0], event(9, Readiness::READ | Readiness::WRITE));
    }

    #[test]
    fn a_closed_registered_fd_is_reported_once_not_an_endless_ebadf() {
        let mut s = Select::new().unwrap();
        let (a, _b) = pair();
        let (c, _d) = pair();
        // Far above the numbers the other tests of this binary open in parallel (and below
        // FD_SETSIZE), so none of them can reuse it between the close and the wait.
        let dup = rustix::io::fcntl_dupfd_cloexec(&a, 800).unwrap();
        let fd = dup.as_raw_fd();
        s.register(fd, 3, Interest::READ.registered(), Mode::Level)
            .unwrap();
        s.register(c.as_raw_fd(), 4, Interest::WRITE.registered(), Mode::Level)
            .unwrap();
        drop(dup);
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(ev[0], event(3, Readiness::ERROR));
        let n = s.wait(&mut ev, NOW).unwrap();
        assert_eq!(&ev[..n], &[event(4, Readiness::WRITE)]);
        assert_eq!(s.deregister(fd), Ok(()));
    }

    #[test]
    fn oneshot_leaves_the_sets_until_modified() {
        let mut s = Select::new().unwrap();
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        s.register(fd, 1, Interest::WRITE.registered(), Mode::Oneshot)
            .unwrap();
        let mut ev = [PollEvent::default(); 4];
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 0);
        s.modify(fd, 2, Interest::WRITE.registered(), Mode::Level)
            .unwrap();
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(s.wait(&mut ev, NOW).unwrap(), 1);
        assert_eq!(
            s.register(fd, 1, Interest::READ, Mode::Edge),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn duplicate_register_and_notifier_fd() {
        let mut s = Select::new().unwrap();
        let (a, _b) = pair();
        let i = Interest::READ.registered();
        s.register(a.as_raw_fd(), 1, i, Mode::Level).unwrap();
        assert_eq!(
            s.register(a.as_raw_fd(), 1, i, Mode::Level),
            Err(os(Errno::EEXIST))
        );
        assert_eq!(
            s.register(s.reader_fd, 1, i, Mode::Level),
            Err(os(Errno::EEXIST))
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_small_buffer_still_reaches_every_ready_fd() {
        let mut s = Select::new().unwrap();
        let pairs = [pair(), pair(), pair()];
        for (k, (a, _)) in pairs.iter().enumerate() {
            s.register(
                a.as_raw_fd(),
                k as u64,
                Interest::WRITE.registered(),
                Mode::Level,
            )
            .unwrap();
        }
        assert_keys_0_to_2_each_seen(|ev| s.wait(ev, NOW).unwrap());
    }
}
