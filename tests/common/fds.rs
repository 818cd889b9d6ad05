//! Socketpair and pipe helpers shared by the tests that run on real fds. Include with
//! `#[path = "common/fds.rs"] mod fds;`.

#![allow(dead_code)] // each test binary uses some of them

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// A connected pair of non-blocking Unix stream sockets.
pub fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("non-blocking");
    b.set_nonblocking(true).expect("non-blocking");
    (a, b)
}

/// Make `fd` non-blocking and close-on-exec. (Done after the fact, not with `SOCK_CLOEXEC` /
/// `pipe2`, which macOS lacks.)
pub fn nonblocking_cloexec(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    use rustix::io::{fcntl_setfd, FdFlags};
    fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    fcntl_setfl(&fd, fcntl_getfl(&fd)? | OFlags::NONBLOCK)?;
    Ok(fd)
}

/// A connected pair of non-blocking, close-on-exec Unix stream sockets as bare fds, or the
/// error (`EMFILE` when out of fds).
pub fn try_sockets() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )?;
    Ok((nonblocking_cloexec(a)?, nonblocking_cloexec(b)?))
}

/// A connected pair of non-blocking, close-on-exec Unix stream sockets as bare fds.
pub fn sockets() -> (OwnedFd, OwnedFd) {
    try_sockets().expect("socketpair")
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    (
        nonblocking_cloexec(r).expect("pipe flags"),
        nonblocking_cloexec(w).expect("pipe flags"),
    )
}

/// The number of an fd.
pub fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// Read `fd` until it would block or reports end of file.
pub fn drain(fd: RawFd) {
    let mut buf = [0u8; 256];
    // SAFETY: callers pass an fd they hold open for the duration of the call (handlers pass
    // their own fd, which stays open while it is registered).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    while matches!(rustix::io::read(borrowed, &mut buf), Ok(n) if n > 0) {}
}
