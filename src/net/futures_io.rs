//! [`futures_io`] `AsyncRead` / `AsyncWrite` for the streams (feature `futures-io`), so the
//! `futures::io` utilities (`read_to_end`, `write_all`, `copy`, `BufReader`, `lines`, …) and
//! the TLS and protocol crates written against these traits run on the loop.
//!
//! Each is implemented for the type and for a shared reference to it (`&TcpStream`), so one
//! task can read while another writes (but, as for the `async fn`s, not two waiting in the same
//! direction). Polls must happen inside a task or `run_sync` of the loop the stream belongs to;
//! outside, they fail with the `io::Error` of [`Error::NotAttached`](crate::Error).
//!
//! `poll_flush` is a no-op (nothing is buffered in user space); `poll_close` shuts down the
//! write direction of a socket (`shutdown(SHUT_WR)`: the peer reads end-of-stream) and does
//! nothing for a [`PipeWriter`] (its fd closes when it is dropped).

use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use futures_io::{AsyncRead, AsyncWrite};
use loop_core::Interest;

use super::{sys, Io, PipeReader, PipeWriter, TcpStream, UnixStream};

impl Io {
    /// The poll form of [`Io::io`]: try `op`; on `EAGAIN` poll for `dir` readiness (which
    /// registers the waker) and try again once it is there.
    fn poll_io<T>(
        &self,
        dir: Interest,
        cx: &mut Context<'_>,
        mut op: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let reg = match self.registration() {
            Ok(reg) => reg,
            Err(e) => return Poll::Ready(Err(e.into())),
        };
        loop {
            match op(self.fd.as_fd()) {
                Ok(v) => return Poll::Ready(Ok(v)),
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) if e == rustix::io::Errno::AGAIN => match reg.poll_ready(dir, cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) => return Poll::Ready(Err(io::Error::from_raw_os_error(e.raw_os_error()))),
            }
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_io(Interest::READ, cx, |fd| rustix::io::read(fd, &mut *buf))
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_io(Interest::WRITE, cx, |fd| {
            rustix::net::send(fd, buf, sys::SEND)
        })
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_io(Interest::WRITE, cx, |fd| rustix::io::write(fd, buf))
    }
}

macro_rules! futures_read {
    (@one $target:ty, $doc:literal) => {
        #[doc = $doc]
        impl AsyncRead for $target {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.io.poll_read(cx, buf)
            }
        }
    };
    ($($ty:ty),*) => {$(
        futures_read!(@one $ty, "`futures_io::AsyncRead` (feature `futures-io`): as the `read` \
            method. `Ok(0)` is end-of-stream.");
        futures_read!(@one &$ty, "`futures_io::AsyncRead` through a shared reference (feature \
            `futures-io`).");
    )*};
}

macro_rules! futures_write {
    (@one $ty:ty, $target:ty, $op:ident, $close:expr, $doc:literal) => {
        #[doc = $doc]
        impl AsyncWrite for $target {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.io.$op(cx, buf)
            }
            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let close: fn(&$ty) -> io::Result<()> = $close;
                let this: &$ty = &self;
                Poll::Ready(close(this))
            }
        }
    };
    ($($ty:ty => $op:ident, $close:expr;)*) => {$(
        futures_write!(@one $ty, $ty, $op, $close, "`futures_io::AsyncWrite` (feature \
            `futures-io`): as the `write` method; flushing is a no-op; closing shuts the write \
            direction of a socket (a no-op on a pipe).");
        futures_write!(@one $ty, &$ty, $op, $close, "`futures_io::AsyncWrite` through a shared \
            reference (feature `futures-io`).");
    )*};
}

/// `shutdown(SHUT_WR)`, where an already shut down or reset connection (`ENOTCONN`) counts
/// as closed.
fn shutdown_write(io: &Io) -> io::Result<()> {
    match io.shutdown(Shutdown::Write) {
        Err(loop_core::Error::Os { errno }) if errno.raw() == libc::ENOTCONN => Ok(()),
        r => r.map_err(io::Error::from),
    }
}

futures_read!(TcpStream, UnixStream, PipeReader);
futures_write! {
    TcpStream => poll_send, |s| shutdown_write(&s.io);
    UnixStream => poll_send, |s| shutdown_write(&s.io);
    PipeWriter => poll_write, |_| Ok(());
}
