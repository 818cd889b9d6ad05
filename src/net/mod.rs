//! Async sockets and pipes on the loop: Tornado's `bind_sockets` / `IOStream` re-thought as
//! `async fn`s over [`IoRegistration`].
//!
//! An echo server (each connection a task) and a client, on 127.0.0.1 with a port the kernel
//! picks:
//!
//! ```
//! use std::time::Duration;
//! use ioloop::net::{TcpListener, TcpStream};
//! use ioloop::{EventLoop, Executor, Remote};
//!
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! static EXEC: Executor<16, 2048> = Executor::new();
//!
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.attach_executor(&EXEC)?;
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = listener.local_addr()?;
//! EXEC.spawn(async move {
//!     while let Ok((stream, _peer)) = listener.accept().await {
//!         // Each connection is a task: echo until the peer closes.
//!         let _ = EXEC.spawn(async move {
//!             let mut buf = [0u8; 512];
//!             while let Ok(n @ 1..) = stream.read(&mut buf).await {
//!                 if stream.write_all(&buf[..n]).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! })?;
//! let echoed = lp.run_sync(
//!     async {
//!         let client = TcpStream::connect(addr).await?;
//!         client.write_all(b"ping").await?;
//!         let mut buf = [0u8; 4];
//!         let n = client.read(&mut buf).await?;
//!         Ok::<_, ioloop::Error>(buf[..n].to_vec())
//!     },
//!     Some(Duration::from_secs(10)),
//! )??;
//! assert_eq!(echoed, b"ping");
//! # Ok::<(), ioloop::Error>(())
//! ```
//!
//! Every type owns its fd (an `OwnedFd`, opened non-blocking and close-on-exec in the same
//! system call: `SOCK_NONBLOCK | SOCK_CLOEXEC`, `accept4`, `pipe2`) and an
//! [`IoRegistration`] made **lazily, on first use inside a task** (or `run_sync`), with the
//! loop polling that task. So a socket can be created anywhere — in `main`, before the loop
//! runs — and moved into a task. From then on it belongs to that loop: use it only from tasks
//! of the same loop.
//!
//! Each operation is "try the system call; on `EAGAIN` wait for readiness; try again"
//! ([`IoRegistration::io`]). On epoll the fd is registered once, edge-triggered, for both
//! directions: steady-state I/O costs no `epoll_ctl` and **no heap allocation**; the futures
//! are plain `async fn` state machines that live inside the task.
//!
//! **Drop sockets inside a task or `run_sync`** (as happens naturally when a task that owns
//! one finishes): the registration is removed from the loop before the fd is closed (the
//! registration is the first field, so it is dropped first). A socket dropped outside any loop
//! leaves its handler slot behind until the loop closes, and the fd number, once reused,
//! cannot be registered with that loop again.
//!
//! One task may read while another writes the same stream (the methods take `&self`), but two
//! tasks must not wait in the same direction at once: the registration keeps one waker per
//! direction, so the later waiter would take the wake from the earlier one.
//!
//! The streams ([`TcpStream`], [`UnixStream`], [`PipeReader`], [`PipeWriter`]) implement the
//! [`embedded_io_async`] `Read` / `Write` traits, so generic protocol code runs on them; the
//! traits' error type is [`IoError`], a wrapper of [`Error`] that implements
//! `embedded_io::Error`.
//!
//! Errors are [`Error::Os`] with the kernel's errno (`ECONNREFUSED`, `ECONNRESET`, `EPIPE`,
//! `EADDRINUSE`, …), or the registration's own errors ([`Error::NotAttached`] outside a task,
//! [`Error::Full`] when the loop's handler table is full).

use core::cell::OnceCell;
use core::fmt;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use loop_core::{Errno, Error, Interest, IoRegistration};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
};

/// `listen(2)` backlog, as Tornado's `bind_sockets` (`_DEFAULT_BACKLOG`).
const BACKLOG: i32 = 128;

/// How fds are born non-blocking and close-on-exec, and how writes avoid `SIGPIPE`.
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
mod sys {
    use super::*;

    /// Non-blocking and close-on-exec from birth (`socket`, `accept4`, `socketpair`): no
    /// window in which a `fork`+`exec` on another thread inherits the fd, no extra `fcntl`.
    pub(super) const FLAGS: SocketFlags = SocketFlags::NONBLOCK.union(SocketFlags::CLOEXEC);
    /// `MSG_NOSIGNAL`: a write to a closed peer fails with `EPIPE` instead of raising
    /// `SIGPIPE` (which kills a process that did not ignore it).
    pub(super) const SEND: SendFlags = SendFlags::NOSIGNAL;

    /// Nothing left to set up.
    pub(super) fn socket_ready(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
        Ok(fd)
    }

    /// `pipe2(O_NONBLOCK | O_CLOEXEC)`.
    pub(super) fn pipe() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
        use rustix::pipe::PipeFlags;
        rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)
    }
}

/// Apple has no `SOCK_NONBLOCK`/`SOCK_CLOEXEC`, `accept4`, `pipe2` or `MSG_NOSIGNAL`: the same
/// result in extra calls (`FIONBIO`, `FD_CLOEXEC`, `SO_NOSIGPIPE`), with the unavoidable window
/// before `FD_CLOEXEC` is set.
#[cfg(any(target_os = "macos", target_os = "ios"))]
mod sys {
    use super::*;

    pub(super) const FLAGS: SocketFlags = SocketFlags::empty();
    pub(super) const SEND: SendFlags = SendFlags::empty();

    fn nonblocking_cloexec(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(fd)
    }

    pub(super) fn socket_ready(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
        let fd = nonblocking_cloexec(fd)?;
        rustix::net::sockopt::set_socket_nosigpipe(&fd, true)?;
        Ok(fd)
    }

    pub(super) fn pipe() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
        let (r, w) = rustix::pipe::pipe()?;
        Ok((nonblocking_cloexec(r)?, nonblocking_cloexec(w)?))
    }
}

/// A new non-blocking, close-on-exec socket.
fn new_socket(domain: AddressFamily, ty: SocketType) -> Result<OwnedFd, Error> {
    rustix::net::socket_with(domain, ty, sys::FLAGS, None)
        .and_then(sys::socket_ready)
        .map_err(os)
}

fn os(e: rustix::io::Errno) -> Error {
    Error::Os {
        errno: Errno(e.raw_os_error()),
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn einval() -> Error {
    os(rustix::io::Errno::INVAL)
}

fn family(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    }
}

fn inet_addr(addr: Option<SocketAddrAny>) -> Result<SocketAddr, Error> {
    addr.and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(einval)
}

fn unix_addr(path: &Path) -> Result<SocketAddrUnix, Error> {
    SocketAddrUnix::new(path).map_err(os)
}

/// A listening, non-blocking socket with `SO_REUSEADDR` (and `SO_REUSEPORT` if asked).
fn listen_socket(
    domain: AddressFamily,
    bind: impl FnOnce(&OwnedFd) -> rustix::io::Result<()>,
    reuse_addr: bool,
    reuse_port: bool,
    v6only: bool,
) -> Result<OwnedFd, Error> {
    let fd = new_socket(domain, SocketType::STREAM)?;
    if reuse_addr {
        // As Tornado's bind_sockets: a restarted server rebinds while old connections linger
        // in TIME_WAIT.
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true).map_err(os)?;
    }
    if reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&fd, true).map_err(os)?;
    }
    if v6only {
        // As Tornado: IPv6 sockets never take IPv4 traffic; bind an IPv4 socket for that.
        rustix::net::sockopt::set_ipv6_v6only(&fd, true).map_err(os)?;
    }
    bind(&fd).map_err(os)?;
    rustix::net::listen(&fd, BACKLOG).map_err(os)?;
    Ok(fd)
}

macro_rules! fd_traits {
    ($($ty:ty),*) => {$(
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.fd.as_fd()
            }
        }
        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.io.fd.as_raw_fd()
            }
        }
    )*};
}

mod pipe;
mod stream;
mod tcp;
mod udp;
mod unix;

pub use pipe::{pipe, PipeReader, PipeWriter};
use stream::Io;
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

fd_traits!(
    TcpListener,
    TcpStream,
    UdpSocket,
    UnixListener,
    UnixStream,
    PipeReader,
    PipeWriter
);

/// The error type of the [`embedded_io_async`] traits on this module's streams: an [`Error`]
/// that also implements `embedded_io::Error` (which `Error` itself cannot, as it lives in
/// `loop-core`). Converts both ways with `From` / `?`.
///
/// # Examples
///
/// ```
/// use embedded_io_async::Write;
/// use ioloop::net::{IoError, UnixStream};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
///
/// // Generic code written against embedded-io-async sees `IoError`...
/// async fn greet<W: Write>(w: &mut W) -> Result<(), W::Error> {
///     w.write_all(b"hello").await
/// }
/// let (mut a, b) = UnixStream::pair()?;
/// drop(b);
/// let result: Result<(), IoError> = lp.run_sync(greet(&mut a), None)?;
/// // ...and `?` or `From` turns it back into an `ioloop::Error` (here EPIPE).
/// let err: ioloop::Error = result.unwrap_err().into();
/// assert!(matches!(err, ioloop::Error::Os { .. }));
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError(pub Error);

impl From<Error> for IoError {
    fn from(e: Error) -> Self {
        IoError(e)
    }
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        e.0
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl core::error::Error for IoError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl embedded_io_async::Error for IoError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        use embedded_io_async::ErrorKind as K;
        match self.0 {
            Error::Os { errno } => match errno.raw() {
                libc::ENOENT => K::NotFound,
                libc::EACCES | libc::EPERM => K::PermissionDenied,
                libc::ECONNREFUSED => K::ConnectionRefused,
                libc::ECONNRESET => K::ConnectionReset,
                libc::ECONNABORTED => K::ConnectionAborted,
                libc::ENOTCONN => K::NotConnected,
                libc::EADDRINUSE => K::AddrInUse,
                libc::EADDRNOTAVAIL => K::AddrNotAvailable,
                libc::EPIPE => K::BrokenPipe,
                libc::EEXIST => K::AlreadyExists,
                libc::EINVAL => K::InvalidInput,
                libc::ETIMEDOUT => K::TimedOut,
                libc::EINTR => K::Interrupted,
                libc::ENOMEM => K::OutOfMemory,
                libc::EOPNOTSUPP => K::Unsupported,
                _ => K::Other,
            },
            Error::TimedOut => K::TimedOut,
            Error::Full { .. } => K::OutOfMemory,
            Error::Unsupported => K::Unsupported,
            _ => K::Other,
        }
    }
}

macro_rules! embedded_read {
    ($($ty:ty),*) => {$(
        impl embedded_io_async::ErrorType for $ty {
            type Error = IoError;
        }
        impl embedded_io_async::Read for $ty {
            async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
                Ok(self.io.read(buf).await?)
            }
        }
    )*};
}

macro_rules! embedded_write {
    ($($ty:ty => $op:ident),*) => {$(
        impl embedded_io_async::Write for $ty {
            async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
                Ok(self.io.$op(buf).await?)
            }
            /// Nothing is buffered in user space: a no-op.
            async fn flush(&mut self) -> Result<(), IoError> {
                Ok(())
            }
        }
    )*};
}

embedded_read!(TcpStream, UnixStream, PipeReader);
embedded_write!(TcpStream => send, UnixStream => send);

impl embedded_io_async::ErrorType for PipeWriter {
    type Error = IoError;
}
embedded_write!(PipeWriter => write);

macro_rules! adopt {
    ($($ty:ident <=> $std:ty, $what:literal;)*) => {$(
        impl $ty {
            #[doc = concat!("Adopt ", $what, " made outside the loop (by `std`, or inherited: ")]
            /// systemd socket activation, a parent process). It is switched to non-blocking
            /// and close-on-exec; it registers with the loop on first use inside a task, as
            /// the ones this module makes.
            ///
            /// # Errors
            /// [`Error::Os`] if the kernel refuses `FIONBIO` / `FD_CLOEXEC` (`EBADF`).
            #[doc = concat!("\n\n```\nlet std = ", adopt!(@make $ty), ";\n")]
            #[doc = concat!("let ours = ioloop::net::", stringify!($ty), "::from_std(std)?;\n")]
            #[doc = concat!("let back: ", stringify!($std), " = ours.into_std();\n")]
            /// # let _ = back;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn from_std(s: $std) -> Result<$ty, Error> {
                Ok($ty { io: Io::adopt(OwnedFd::from(s))? })
            }

            #[doc = concat!("Hand the fd back as a `", stringify!($std), "`, still in non-blocking mode ")]
            /// (call its `set_nonblocking(false)` for blocking use). Call it inside a task or
            /// `run_sync`, like a drop: the loop registration, if one was made, is removed
            /// there.
            ///
            #[doc = concat!("```\nlet ours = ioloop::net::", stringify!($ty), "::from_std(", adopt!(@make $ty), ")?;\n")]
            #[doc = concat!("let std: ", stringify!($std), " = ours.into_std(); // still non-blocking\n")]
            /// # let _ = std;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn into_std(self) -> $std {
                <$std>::from(self.io.into_fd())
            }
        }

        #[doc = concat!("Adopt an fd as a ", stringify!($ty), ", as [`", stringify!($ty), "::from_std`] does ")]
        /// (non-blocking, close-on-exec), for fds inherited from systemd (`LISTEN_FDS`) or a
        /// parent. The fd must be of the right kind; the flags cannot fail on an open fd
        /// (on a closed one every later call fails with `EBADF`).
        impl From<OwnedFd> for $ty {
            fn from(fd: OwnedFd) -> $ty {
                $ty { io: Io::adopt_lossy(fd) }
            }
        }

        #[doc = concat!("The fd of a ", stringify!($ty), " (see [`", stringify!($ty), "::into_std`]).")]
        impl From<$ty> for OwnedFd {
            fn from(s: $ty) -> OwnedFd {
                s.io.into_fd()
            }
        }
    )*};
    (@make TcpListener) => { "std::net::TcpListener::bind(\"127.0.0.1:0\")?" };
    (@make TcpStream) => {
        "std::net::TcpStream::connect(std::net::TcpListener::bind(\"127.0.0.1:0\")?.local_addr()?)?"
    };
    (@make UdpSocket) => { "std::net::UdpSocket::bind(\"127.0.0.1:0\")?" };
    (@make UnixListener) => {
        "std::os::unix::net::UnixListener::bind({\n    \
         let p = std::env::temp_dir().join(format!(\"ioloop-doc-{}.sock\", std::process::id()));\n    \
         let _ = std::fs::remove_file(&p);\n    \
         p\n})?"
    };
    (@make UnixStream) => { "std::os::unix::net::UnixStream::pair()?.0" };
    (@make PipeReader) => { "std::io::pipe()?.0" };
    (@make PipeWriter) => { "std::io::pipe()?.1" };
}

adopt! {
    TcpListener <=> std::net::TcpListener, "a listening TCP socket";
    TcpStream <=> std::net::TcpStream, "a connected TCP socket";
    UdpSocket <=> std::net::UdpSocket, "a UDP socket";
    UnixListener <=> std::os::unix::net::UnixListener, "a listening Unix-domain socket";
    UnixStream <=> std::os::unix::net::UnixStream, "a connected Unix-domain socket";
    PipeReader <=> std::io::PipeReader, "the read end of a pipe";
    PipeWriter <=> std::io::PipeWriter, "the write end of a pipe";
}

#[cfg(feature = "futures-io")]
mod futures_io;
