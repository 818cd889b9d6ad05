//! The notifier: an `eventfd` that another thread (or a signal handler) writes to.

use loop_core::{Errno, Notify};
use loop_posix::errno;
use loop_posix::fork::ForkGuard;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// Wakes an [`Epoll`](crate::Epoll) that is blocked in `wait`, from any thread.
///
/// [`notify`](Notify::notify) adds 1 to an eventfd counter that the poller watches; `wait`
/// resets the counter to zero when it sees it, so any number of notifications before a wait
/// cost that wait one wake, and are never reported as an event.
///
/// `notify` is a single `write(2)` of 8 bytes and therefore async-signal-safe. (With rustix's
/// default `linux_raw` backend it does not even touch `errno`.)
///
/// The poller hands out `&EventFdNotifier`; a thread that needs its own `'static` handle takes
/// one with [`try_clone`](EventFdNotifier::try_clone). A clone is a `dup` of the same eventfd:
/// it keeps working (waking nobody) after the poller is dropped, so a late wake never touches
/// freed memory.
///
/// # Examples
///
/// Wake a poller that waits with no timeout, from another thread:
///
/// ```
/// use loop_core::{Notify, PollEvent, Poller};
///
/// let mut poller = loop_linux::Epoll::new()?;
/// let waker = poller.notifier().try_clone()?; // owned: can move to the thread
/// let t = std::thread::spawn(move || waker.notify());
/// let mut events = [PollEvent::default(); 4];
/// assert_eq!(poller.wait(&mut events, None)?, 0); // woken, and no event reported
/// t.join().unwrap()?;
/// # Ok::<(), loop_core::Errno>(())
/// ```
///
/// # Errors
///
/// [`try_clone`](Self::try_clone) fails with `EMFILE` when the process is out of fds;
/// `notify` practically never fails (a full counter already guarantees a wake).
#[derive(Debug)]
pub struct EventFdNotifier {
    /// Non-blocking, so a full counter is `EAGAIN` rather than a writer stuck in `notify`.
    fd: OwnedFd,
    /// In a forked child the eventfd is the parent's: `notify` must not wake its loop.
    fork: ForkGuard,
}

impl EventFdNotifier {
    /// A fresh eventfd with a zero counter.
    pub(crate) fn new() -> Result<EventFdNotifier, Errno> {
        // CLOEXEC: a child must not inherit the poller's internals; NONBLOCK: see `fd`.
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(errno)?;
        Ok(EventFdNotifier {
            fd,
            fork: ForkGuard::new(),
        })
    }

    /// Another handle on the same eventfd (`F_DUPFD_CLOEXEC`), owned, `'static` and `Send`, for
    /// a thread or signal handler that wakes the loop.
    ///
    /// # Errors
    /// `EMFILE` when the process is out of fds.
    pub fn try_clone(&self) -> Result<EventFdNotifier, Errno> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).map_err(errno)?;
        Ok(EventFdNotifier {
            fd,
            fork: self.fork,
        })
    }

    /// Reset the counter (when it is full, so the next write makes a new edge).
    pub(crate) fn drain(&self) {
        // Reading an eventfd returns the counter and zeroes it. EAGAIN means another `wait`
        // call already drained it; nothing else can fail for an 8-byte buffer.
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut counter);
    }
}

impl EventFdNotifier {
    /// The write failed. `EAGAIN`: the counter is at its maximum (the poller never reads it
    /// back: it is edge-triggered), and a failed write makes no new edge, so reset the counter
    /// and write again, as mio's waker does. Reading and writing an eventfd are
    /// async-signal-safe.
    #[cold]
    #[inline(never)]
    fn notify_failed(&self, e: rustix::io::Errno) -> Result<(), Errno> {
        if e != rustix::io::Errno::AGAIN {
            return Err(errno(e));
        }
        self.drain();
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }
}

impl Notify for EventFdNotifier {
    /// Adds 1 to the counter. In a forked child it does nothing and returns `Ok`: the eventfd
    /// is the parent's, and the child's copy of the loop cannot run (`Error::Forked`).
    #[inline(always)]
    fn notify(&self) -> Result<(), Errno> {
        if self.fork.forked() {
            return Ok(());
        }
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            Err(e) => self.notify_failed(e),
        }
    }

    fn try_clone(&self) -> Result<Self, Errno> {
        EventFdNotifier::try_clone(self)
    }
}

impl AsFd for EventFdNotifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(n: &EventFdNotifier) -> Option<u64> {
        let mut buf = [0u8; 8];
        match rustix::io::read(&n.fd, &mut buf) {
            Ok(8) => Some(u64::from_ne_bytes(buf)),
            _ => None,
        }
    }

    #[test]
    fn notifications_accumulate_in_one_counter_that_drain_resets() {
        let n = EventFdNotifier::new().unwrap();
        n.notify().unwrap();
        n.notify().unwrap();
        n.drain();
        assert_eq!(counter(&n), None, "drained: nothing left to read");
        n.notify().unwrap();
        n.notify().unwrap();
        assert_eq!(counter(&n), Some(2));
    }

    #[test]
    fn a_clone_writes_to_the_same_counter() {
        let n = EventFdNotifier::new().unwrap();
        let clone = n.try_clone().unwrap();
        clone.notify().unwrap();
        assert_eq!(counter(&n), Some(1));
    }

    #[test]
    fn a_full_counter_is_a_pending_wake_not_an_error() {
        let n = EventFdNotifier::new().unwrap();
        // The counter saturates at u64::MAX - 1; one more write would block, i.e. EAGAIN.
        rustix::io::write(&n.fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(n.notify(), Ok(()));
    }

    #[test]
    fn a_write_that_would_block_resets_the_counter_so_the_wake_makes_a_new_edge() {
        let n = EventFdNotifier::new().unwrap();
        rustix::io::write(&n.fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        n.notify().unwrap();
        // Drained, then written once: the counter went 0 -> 1, an edge an edge-triggered
        // epoll reports.
        assert_eq!(counter(&n), Some(1));
    }

    #[test]
    fn notifier_is_send_sync_and_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<EventFdNotifier>();
    }
}
