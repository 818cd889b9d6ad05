//! The few fd-level helpers both pollers share: errno conversion, liveness probe, close.

use loop_core::{Errno, RawFd};
use rustix::fd::BorrowedFd;

/// rustix's error as the core's plain error number.
#[inline]
pub(crate) fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// Whether `fd` is an open fd, by `fcntl(F_GETFD)`: the cheapest syscall that fails with
/// `EBADF` and nothing else for a closed fd. Used at register time (so a closed fd is refused
/// as epoll refuses it) and by `select` to find which registered fd made it fail.
pub(crate) fn check_open(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: the BorrowedFd lives only for this call and is used for `fcntl(F_GETFD)` alone,
    // which reads no memory through the fd: if `fd` is closed the kernel answers EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map(|_| ()).map_err(errno)
}

/// `close(fd)`, errors ignored (the fd is released either way on Linux and the BSDs).
///
/// # Safety
/// As [`Poller::close_fd`](loop_core::Poller::close_fd): the caller owns `fd` and nobody uses
/// the number afterwards.
pub(crate) unsafe fn close(fd: RawFd) {
    if fd < 0 {
        return;
    }
    // SAFETY: the caller owns `fd` and never uses it again (this function's contract).
    unsafe { rustix::io::close(fd) }
}
