//! [`PipeNotifier`]: the self-pipe that wakes a sleeping `poll`, `select` or pipe-woken `kevent`
//! from another thread.
//!
//! This is Tornado's `Waker` (TORNADO.md §2): an anonymous pipe, both ends non-blocking and
//! close-on-exec. A wake writes one byte; the poller drains every byte inside `wait` and never
//! reports the pipe as an event. The pipe is a flag, not a counter: a full pipe already
//! guarantees a wake, so a write that finds it full (`EAGAIN`) is a success.

use loop_core::{Errno, Notify};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno as OsErrno;

use crate::fd::errno;
use crate::fork::ForkGuard;

/// The write end of a self-pipe: wakes the poller that holds the matching [`PipeReader`].
///
/// `notify` is one `write(2)` of one byte, so it is safe to call from any thread and from a
/// signal handler. Any number of notifications before a wait coalesce into one wake.
///
/// # Examples
///
/// ```
/// use loop_core::Notify;
/// let (notifier, reader) = loop_posix::PipeNotifier::pair().unwrap();
/// notifier.notify().unwrap();
/// notifier.notify().unwrap();
/// assert!(reader.drain(), "two notifications, one wake");
/// assert!(!reader.drain());
/// ```
#[derive(Debug)]
pub struct PipeNotifier {
    write: OwnedFd,
    /// In a forked child the pipe is the parent's: `notify` must not wake its loop.
    fork: ForkGuard,
}

/// The read end of a self-pipe, kept by the poller: watched for readability and drained.
#[derive(Debug)]
pub struct PipeReader {
    read: OwnedFd,
}

impl PipeNotifier {
    /// Make a non-blocking, close-on-exec pipe and return its two ends.
    ///
    /// # Errors
    /// The OS error from `pipe2` (`EMFILE`, `ENFILE`) or, on Apple targets, from the `fcntl`
    /// calls that set the flags `pipe2` would have set.
    pub fn pair() -> Result<(PipeNotifier, PipeReader), Errno> {
        let (read, write) = nonblocking_cloexec_pipe().map_err(errno)?;
        let fork = ForkGuard::new();
        Ok((PipeNotifier { write, fork }, PipeReader { read }))
    }

    /// A second handle on the same pipe (`dup` of the write end, close-on-exec), owned, so it
    /// can be moved to another thread or kept in `'static` storage while the poller waits.
    ///
    /// # Errors
    /// The OS error from `fcntl(F_DUPFD_CLOEXEC)` (`EMFILE` when out of fds).
    pub fn try_clone(&self) -> Result<PipeNotifier, Errno> {
        let write = rustix::io::fcntl_dupfd_cloexec(&self.write, 0).map_err(errno)?;
        Ok(PipeNotifier {
            write,
            fork: self.fork,
        })
    }
}

/// The write end (for a `signal`-style wakeup fd, or to compare fds).
impl AsFd for PipeNotifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }
}

impl Notify for PipeNotifier {
    /// Writes one byte. In a forked child it does nothing and returns `Ok`: the pipe is the
    /// parent's, and the child's copy of the loop cannot run (`Error::Forked`).
    fn notify(&self) -> Result<(), Errno> {
        if self.fork.forked() {
            return Ok(());
        }
        loop {
            match rustix::io::write(&self.write, &[1]) {
                // A full pipe is already readable: the wake is guaranteed (Tornado ignores it too).
                Ok(_) | Err(OsErrno::AGAIN) => return Ok(()),
                Err(OsErrno::INTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
    }

    fn try_clone(&self) -> Result<Self, Errno> {
        PipeNotifier::try_clone(self)
    }
}

/// The read end, to hand to `poll`/`select`/`kevent`.
impl AsFd for PipeReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl PipeReader {
    /// Read until the pipe is empty; returns whether anything was there.
    ///
    /// Reads whole buffers at a time, so a burst of wakes costs a few syscalls, not one each.
    /// Errors other than `EINTR` end the drain: `EAGAIN` means empty, and the read end of a
    /// pipe we own cannot fail otherwise in a way a retry would fix.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 128];
        let mut any = false;
        loop {
            match rustix::io::read(&self.read, &mut buf) {
                Ok(n) if n == buf.len() => any = true,
                // A short read emptied the pipe; 0 would mean every writer is gone.
                Ok(n) => return any || n > 0,
                Err(OsErrno::INTR) => continue,
                Err(_) => return any,
            }
        }
    }
}

#[cfg(not(target_vendor = "apple"))]
fn nonblocking_cloexec_pipe() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pipe::PipeFlags;
    // One syscall sets both flags atomically: no window in which a fork+exec leaks the fds.
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
}

#[cfg(target_vendor = "apple")]
fn nonblocking_cloexec_pipe() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
    // Apple has no pipe2: set the flags afterwards (as mio and polling do there).
    let (read, write) = rustix::pipe::pipe()?;
    for fd in [&read, &write] {
        fcntl_setfd(fd, fcntl_getfd(fd)? | FdFlags::CLOEXEC)?;
        fcntl_setfl(fd, fcntl_getfl(fd)? | OFlags::NONBLOCK)?;
    }
    Ok((read, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_on_a_full_pipe_is_not_an_error() {
        let (n, r) = PipeNotifier::pair().unwrap();
        // 64 KiB default capacity on Linux; write well past it.
        for _ in 0..200_000 {
            n.notify().unwrap();
        }
        assert!(r.drain());
        assert!(!r.drain(), "drain empties the pipe completely");
    }

    #[test]
    fn a_clone_wakes_the_same_reader() {
        let (n, r) = PipeNotifier::pair().unwrap();
        let c = n.try_clone().unwrap();
        drop(n);
        c.notify().unwrap();
        assert!(r.drain());
    }

    #[test]
    fn both_ends_are_nonblocking_and_cloexec() {
        use rustix::fs::{fcntl_getfl, OFlags};
        use rustix::io::{fcntl_getfd, FdFlags};
        let (n, r) = PipeNotifier::pair().unwrap();
        for fd in [n.as_fd(), r.as_fd()] {
            assert!(fcntl_getfd(fd).unwrap().contains(FdFlags::CLOEXEC));
            assert!(fcntl_getfl(fd).unwrap().contains(OFlags::NONBLOCK));
        }
    }
}
