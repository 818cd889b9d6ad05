//! The echo step both raw echo servers share (`examples/echo_server.rs` and the `no_std`
//! `examples/nostd-echo`): no std, no allocation, only rustix. Include with
//! `#[path = ".../shared/echo_step.rs"] mod echo_step;`.

use rustix::fd::BorrowedFd;
use rustix::io::Errno;

/// What a connection's handler does next.
pub enum Next {
    /// Wait until the socket is readable.
    Read,
    /// A backlog is waiting: wait until the socket is writable.
    Write,
    /// The peer is gone or the socket failed: close it.
    Close,
}

/// Writes the backlog `buf[*start..*end]`, then reads into `buf` and writes back until a read
/// comes up short (the socket is drained for now: level-triggered epoll reports it again when
/// more arrives, so the `read` that would answer `EAGAIN` is saved).
pub fn echo(buf: &mut [u8], start: &mut usize, end: &mut usize, fd: BorrowedFd<'_>) -> Next {
    let mut short = false;
    loop {
        while *start < *end {
            match rustix::io::write(fd, &buf[*start..*end]) {
                Ok(k) => *start += k,
                Err(Errno::AGAIN) => return Next::Write,
                Err(Errno::INTR) => {}
                Err(_) => return Next::Close,
            }
        }
        if short {
            return Next::Read;
        }
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Next::Close,
            Ok(k) => {
                *start = 0;
                *end = k;
                short = k < buf.len();
            }
            Err(Errno::AGAIN) => return Next::Read,
            Err(Errno::INTR) => {}
            Err(_) => return Next::Close,
        }
    }
}
