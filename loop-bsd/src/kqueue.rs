//! [`Kqueue`]: the kqueue poller (FreeBSD, DragonFly, macOS, iOS, NetBSD, OpenBSD).
//!
//! Each filter's `udata` is the index of its registration in a fixed table, which gives
//! `wait` the key without a search and gives `register` the duplicate check kqueue lacks
//! (`EV_ADD` on an existing filter silently modifies it; the contract wants `EEXIST`).
//! Changes go one per `kevent` call, write before read, as Tornado does ("it seems to return
//! EINVAL on Mac OS X (10.6) when there is more than one event in the list").

use core::fmt;
use core::mem::MaybeUninit;
use core::time::Duration;

use loop_core::{
    Capabilities, Clock, Errno, Error, Instant, Interest, Mode, OpenPoller, PollEvent, Poller,
    RawFd, Resource,
};
use rustix::event::kqueue::{kevent_timespec, kqueue, Event, EventFilter, EventFlags};
use rustix::fd::{AsFd, BorrowedFd};

use loop_posix::fork::ForkGuard;
use loop_posix::refused;
use loop_posix::timeout::{wait_sliced, Resolution};

use crate::errno;
use crate::notifier::KqueueNotifier;
use crate::translate::{merge, translate, Filter, EV_EOF, EV_ERROR};

const _: () = assert!(EventFlags::EOF.bits() == EV_EOF && EventFlags::ERROR.bits() == EV_ERROR);

/// `udata` of the notifier's pipe filter (where there is no `EVFILT_USER`).
#[cfg(kqueue_pipe)]
const NOTIFIER: usize = usize::MAX;

/// A kqueue poller with room for `N` registrations, fetching up to `E` kevents per wait.
///
/// * **Filters**: a registration is up to two kernel filters, `EVFILT_READ` and
///   `EVFILT_WRITE`, as in Tornado's `_KQueue`; an `ERROR`-only interest registers no filter
///   (kqueue has no error filter: errors arrive as flags on the others).
/// * **Readiness**: see [`crate::translate`]: `WRITE + EV_EOF` (a refused connect) is
///   `ERROR | HUP`, `READ + EV_EOF` is `READ | HUP`, `EV_ERROR` is `ERROR`; the read and write
///   filters of one fd in one wait are OR-ed into one event.
/// * **Modes**: level (the default) and edge (`EV_CLEAR`). Oneshot is refused with
///   [`Error::Unsupported`]: `EV_ONESHOT`/`EV_DISPATCH` act per filter, so a read+write
///   registration would fire twice.
/// * **Timeouts** are `timespec`: nanosecond precision, no rounding; waits over a day are
///   sliced.
/// * **Notifier**: `EVFILT_USER` where the kernel has it, a self-pipe elsewhere (see
///   [`KqueueNotifier`]).
/// * `wait` refuses an empty event buffer with `EINVAL` (as epoll does): a fetched edge event
///   with nowhere to go would be lost.
pub struct Kqueue<const N: usize = 1024, const E: usize = 256> {
    regs: [Option<Reg>; N],
    registered: usize,
    buf: [MaybeUninit<Event>; E],
    /// Holds the kqueue fd where the notifier is an `EVFILT_USER` event.
    notifier: KqueueNotifier,
    /// Closed on drop only in the process that created it (see `Drop`).
    #[cfg(kqueue_pipe)]
    kq: core::mem::ManuallyDrop<rustix::fd::OwnedFd>,
    #[cfg(kqueue_pipe)]
    reader: loop_posix::PipeReader,
    /// The fork generation the kqueue was created in. A child does not inherit the kqueue
    /// (its fd number is free there, and may name a file the child opened since), so a
    /// child's copy of this value refuses every operation and never closes that number.
    fork: ForkGuard,
}

#[derive(Clone, Copy, Debug)]
struct Reg {
    fd: RawFd,
    key: u64,
    interest: Interest,
    edge: bool,
}

impl Kqueue {
    /// A kqueue poller for up to 1024 fds (the defaults `N = 1024`, `E = 256`).
    ///
    /// # Errors
    /// The OS error from `kqueue()` or from setting up the notifier.
    pub fn new() -> Result<Kqueue, Errno> {
        Kqueue::with_capacity()
    }
}

impl<const N: usize, const E: usize> Kqueue<N, E> {
    /// A kqueue poller with `N` registration slots and an `E`-kevent fetch buffer.
    ///
    /// # Errors
    /// The OS error from `kqueue()` or from setting up the notifier.
    pub fn with_capacity() -> Result<Self, Errno> {
        const { assert!(E >= 1, "Kqueue<N, E> needs E >= 1 to fetch events") };
        let kq = kqueue().map_err(errno)?;
        // kqueue(2) has no CLOEXEC flag (FreeBSD's kqueuex is 13+ only); set it right after,
        // as mio does. A fork does not inherit a kqueue, but a plain exec would keep it open.
        rustix::io::fcntl_setfd(&kq, rustix::io::FdFlags::CLOEXEC).map_err(errno)?;
        Self::with_kqueue(kq)
    }

    #[cfg(evfilt_user)]
    fn with_kqueue(kq: rustix::fd::OwnedFd) -> Result<Self, Errno> {
        Ok(Kqueue {
            regs: [None; N],
            registered: 0,
            buf: [MaybeUninit::uninit(); E],
            notifier: KqueueNotifier::new(kq)?,
            fork: ForkGuard::new(),
        })
    }

    #[cfg(kqueue_pipe)]
    fn with_kqueue(kq: rustix::fd::OwnedFd) -> Result<Self, Errno> {
        let (pipe, reader) = loop_posix::PipeNotifier::pair()?;
        let watch = Event::new(
            EventFilter::Read(rustix::fd::AsRawFd::as_raw_fd(&reader.as_fd())),
            EventFlags::ADD,
            udata(NOTIFIER),
        );
        apply(kq.as_fd(), &watch)?;
        Ok(Kqueue {
            regs: [None; N],
            registered: 0,
            buf: [MaybeUninit::uninit(); E],
            notifier: KqueueNotifier { pipe },
            kq: core::mem::ManuallyDrop::new(kq),
            reader,
            fork: ForkGuard::new(),
        })
    }

    fn kq(&self) -> BorrowedFd<'_> {
        #[cfg(evfilt_user)]
        return self.notifier.kq.as_fd();
        #[cfg(kqueue_pipe)]
        return self.kq.as_fd();
    }

    /// How many fds are registered.
    pub fn len(&self) -> usize {
        self.registered
    }

    /// Whether no fd is registered.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
    }

    fn find(&self, fd: RawFd) -> Option<usize> {
        self.regs.iter().position(|r| r.is_some_and(|r| r.fd == fd))
    }

    /// Add (or update) the filters `interest` asks for and delete the ones only `old` had.
    /// Write before read, one `kevent` call each, as Tornado does (macOS 10.6 returned
    /// `EINVAL` for a changelist of more than one event).
    fn sync_filters(
        &self,
        index: usize,
        fd: RawFd,
        old: Interest,
        new: Interest,
        edge: bool,
    ) -> Result<(), Errno> {
        let mut add = EventFlags::ADD;
        if edge {
            add |= EventFlags::CLEAR;
        }
        for (bit, filter) in [
            (Interest::WRITE, EventFilter::Write(fd)),
            (Interest::READ, EventFilter::Read(fd)),
        ] {
            if new.contains(bit) {
                apply(self.kq(), &Event::new(filter, add, udata(index)))?;
            } else if old.contains(bit) {
                apply(
                    self.kq(),
                    &Event::new(filter, EventFlags::DELETE, udata(index)),
                )?;
            }
        }
        Ok(())
    }

    /// Translate the fetched kevents into `events`; returns how many were filled.
    fn collect(&mut self, fetched: usize, events: &mut [PollEvent]) -> usize {
        let mut filled = 0;
        for slot in &self.buf[..fetched] {
            // SAFETY: kevent initialised the first `fetched` entries (its return value).
            let ev = unsafe { slot.assume_init_ref() };
            let (filter, fd) = match ev.filter() {
                EventFilter::Read(fd) => (Filter::Read, fd),
                EventFilter::Write(fd) => (Filter::Write, fd),
                // The notifier's user event: fetching it consumed it (EV_CLEAR).
                _ => continue,
            };
            let index = ev.udata().addr();
            #[cfg(kqueue_pipe)]
            if index == NOTIFIER {
                self.reader.drain();
                continue;
            }
            // Filters are deleted before their slot is freed, so this always matches; the
            // check only guards against a kernel that reports a filter we never added.
            let Some(reg) = self
                .regs
                .get(index)
                .copied()
                .flatten()
                .filter(|r| r.fd == fd)
            else {
                continue;
            };
            let readiness = translate(filter, ev.flags().bits()) & reg.interest.visible();
            filled = merge(events, filled, reg.key, readiness);
        }
        filled
    }
}

/// A table index (or the notifier's sentinel) as kevent `udata`, which is a pointer on most
/// BSDs; it is never dereferenced.
fn udata(index: usize) -> *mut core::ffi::c_void {
    core::ptr::without_provenance_mut(index)
}

/// Apply one change, with no event list: errors come back as the call's error.
fn apply(kq: BorrowedFd<'_>, change: &Event) -> Result<(), Errno> {
    let mut none: [MaybeUninit<Event>; 0] = [];
    // SAFETY: rustix asks that the fds named by the changes stay valid while the kqueue
    // uses them. The kernel drops a filter when its fd is closed, so a fd closed while
    // registered only makes later `EV_DELETE`s fail (ignored by `deregister`); nothing
    // is read through a stale fd. The event list is empty: nothing is written back.
    match unsafe { kevent_timespec(kq, core::slice::from_ref(change), &mut none[..], None) } {
        // With no event list there is no sleep to interrupt, and kevent(2) (FreeBSD)
        // says changes are applied when it fails with EINTR: do not apply them twice
        // (a second EV_DELETE would fail with ENOENT).
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

fn mode_is_edge(mode: Mode) -> Result<bool, Error> {
    match mode {
        Mode::Level => Ok(false),
        Mode::Edge => Ok(true),
        Mode::Oneshot => Err(Error::Unsupported),
    }
}

impl<const N: usize, const E: usize> Clock for Kqueue<N, E> {
    fn now(&self) -> Instant {
        loop_posix::monotonic_now()
    }
}

impl<const N: usize, const E: usize> Poller for Kqueue<N, E> {
    type Notifier = KqueueNotifier;
    loop_posix::notifier_and_forked!();

    fn capabilities(&self) -> Capabilities {
        Capabilities::LEVEL | Capabilities::EDGE | Capabilities::PRECISE_TIMEOUT
    }

    fn register(&mut self, fd: RawFd, key: u64, interest: Interest, m: Mode) -> Result<(), Error> {
        self.fork.check_fd(fd)?;
        let edge = mode_is_edge(m)?;
        if self.find(fd).is_some() {
            return Err(refused(Errno::EEXIST));
        }
        let index = self
            .regs
            .iter()
            .position(Option::is_none)
            .ok_or(Error::Full {
                what: Resource::PollerSlots,
            })?;
        if let Err(errno) = self.sync_filters(index, fd, Interest::empty(), interest, edge) {
            // Undo a half-done registration (write added, read refused); errors ignored.
            let _ = self.sync_filters(index, fd, interest, Interest::empty(), edge);
            return Err(Error::Os { errno });
        }
        self.regs[index] = Some(Reg {
            fd,
            key,
            interest,
            edge,
        });
        self.registered += 1;
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.fork.check_fd(fd)?;
        let edge = mode_is_edge(mode)?;
        let index = self.find(fd).ok_or(refused(Errno::ENOENT))?;
        let (mut old, was_edge) =
            self.regs[index].map_or((Interest::empty(), false), |r| (r.interest, r.edge));
        if was_edge != edge {
            // Not every kernel updates EV_CLEAR on a re-add: switch modes by delete + add.
            let _ = self.sync_filters(index, fd, old, Interest::empty(), was_edge);
            old = Interest::empty();
        }
        self.sync_filters(index, fd, old, interest, edge)?;
        self.regs[index] = Some(Reg {
            fd,
            key,
            interest,
            edge,
        });
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.fork.check()?;
        let index = self.find(fd).ok_or(refused(Errno::ENOENT))?;
        if let Some(reg) = self.regs[index].take() {
            // ENOENT/EBADF here mean the fd was closed and the kernel already dropped the
            // filters: the registration is gone either way.
            let _ = self.sync_filters(index, fd, reg.interest, Interest::empty(), reg.edge);
            self.registered -= 1;
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut [PollEvent], limit: Option<Duration>) -> Result<usize, Errno> {
        self.fork.check_wait()?;
        // Never fetch more kevents than `events` can take after merging: a fetched edge
        // event that did not fit would be lost. So an empty buffer is refused, as epoll does.
        if events.is_empty() {
            return Err(Errno::EINVAL);
        }
        let want = events.len().min(E);
        // Waits over a day are sliced: some kernels reject huge timespecs with EINVAL.
        wait_sliced(limit, Resolution::Nanos, |limit| {
            // Field by field (not `self.kq()`), so the buffer can be borrowed mutably beside it.
            #[cfg(evfilt_user)]
            let kq = self.notifier.kq.as_fd();
            #[cfg(kqueue_pipe)]
            let kq = self.kq.as_fd();
            // SAFETY: no changes are submitted (see `apply` for the fd-lifetime argument);
            // the event list is our own buffer, `want <= E` entries long.
            let result = unsafe { kevent_timespec(kq, &[], &mut self.buf[..want], limit) };
            let fetched = result.map_err(errno)?.0.len();
            Ok((fetched > 0).then(|| self.collect(fetched, events)))
        })
    }
}

/// Closes the kqueue only in the process that created it: in a forked child the number was
/// not inherited and may name another file by now.
#[cfg(kqueue_pipe)]
impl<const N: usize, const E: usize> Drop for Kqueue<N, E> {
    fn drop(&mut self) {
        if !self.fork.forked() {
            // SAFETY: `kq` is dropped here, once, and the value is never used again.
            unsafe { core::mem::ManuallyDrop::drop(&mut self.kq) };
        }
    }
}

impl<const N: usize, const E: usize> OpenPoller for Kqueue<N, E> {
    /// [`Kqueue::with_capacity`]: lets `EventLoop::new()` open a kqueue loop.
    fn open() -> Result<Self, Errno> {
        Self::with_capacity()
    }
}

impl<const N: usize, const E: usize> fmt::Debug for Kqueue<N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kqueue")
            .field("capacity", &N)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}
