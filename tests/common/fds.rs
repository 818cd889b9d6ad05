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

/// A connected pair of non-blocking, close-on-exec Unix stream sockets as bare fds.
pub fn sockets() -> (OwnedFd, OwnedFd) {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .expect("socketpair")
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    use rustix::pipe::{pipe_with, PipeFlags};
    pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe")
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
