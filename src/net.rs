//! Async sockets and pipes on the loop: Tornado's `bind_sockets` / `IOStream` re-thought as
//! `async fn`s over [`IoRegistration`].
//!
//! ```no_run
//! use std::time::Duration;
//! use ioloop::net::TcpListener;
//! use ioloop::{EventLoop, Executor, Remote};
//!
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! static EXEC: Executor<16, 2048> = Executor::new();
//!
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.attach_executor(&EXEC)?;
//! let listener = TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//! let stopped = lp.run_sync(
//!     async move {
//!         loop {
//!             let (stream, _peer) = match listener.accept().await {
//!                 Ok(conn) => conn,
//!                 Err(e) => break e,
//!             };
//!             // Each connection is a task: echo until the peer closes.
//!             let _ = EXEC.spawn(async move {
//!                 let mut buf = [0u8; 512];
//!                 while let Ok(n @ 1..) = stream.read(&mut buf).await {
//!                     if stream.write_all(&buf[..n]).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!         }
//!     },
//!     Some(Duration::from_secs(60)),
//! );
//! println!("{stopped:?}");
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

/// An owned fd and its lazily made registration. Field order matters: the registration is
/// dropped (removed from the loop) before the fd is closed.
struct Io {
    reg: OnceCell<IoRegistration>,
    fd: OwnedFd,
}

impl Io {
    fn new(fd: OwnedFd) -> Io {
        Io {
            reg: OnceCell::new(),
            fd,
        }
    }

    /// The registration, made on first use with the loop polling the current task.
    fn registration(&self) -> Result<&IoRegistration, Error> {
        if let Some(reg) = self.reg.get() {
            return Ok(reg);
        }
        let reg = IoRegistration::new(&self.fd)?;
        Ok(self.reg.get_or_init(|| reg))
    }

    /// Run the non-blocking `op` until it does not fail with `EAGAIN`, waiting for `dir`
    /// readiness in between.
    async fn io<T>(
        &self,
        dir: Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
    ) -> Result<T, Error> {
        let reg = self.registration()?;
        let fd = self.fd.as_fd();
        reg.io(dir, || op(fd).map_err(errno)).await
    }

    async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::READ, |fd| rustix::io::read(fd, &mut *buf))
            .await
    }

    /// `send` without `SIGPIPE`: a write to a closed peer fails with `EPIPE`.
    async fn send(&self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::WRITE, |fd| rustix::net::send(fd, buf, sys::SEND))
            .await
    }

    /// `send` until all of `buf` is gone (stream sockets' `write_all`).
    async fn send_all(&self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.send(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::WRITE, |fd| rustix::io::write(fd, buf))
            .await
    }

    /// Connect a fresh non-blocking socket: `EINPROGRESS`, wait until writable, then ask
    /// `SO_ERROR` how it went.
    async fn connect(&self, addr: &impl rustix::net::addr::SocketAddrArg) -> Result<(), Error> {
        match rustix::net::connect(&self.fd, addr) {
            Ok(()) => return Ok(()),
            // Unix sockets say EAGAIN when the listener's backlog is full.
            Err(e)
                if e == rustix::io::Errno::INPROGRESS
                    || e == rustix::io::Errno::AGAIN
                    || e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(os(e)),
        }
        let reg = self.registration()?;
        loop {
            reg.ready(Interest::WRITE).await?;
            match rustix::net::sockopt::socket_error(&self.fd) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => return Err(os(e)),
            }
            // Writable without an error: connected — unless the wake was early (a unix
            // socket whose backlog is still full): then try again.
            match rustix::net::getpeername(&self.fd) {
                Ok(_) => return Ok(()),
                Err(e) if e == rustix::io::Errno::NOTCONN => {
                    match rustix::net::connect(&self.fd, addr) {
                        Ok(()) => return Ok(()),
                        Err(e)
                            if e == rustix::io::Errno::INPROGRESS
                                || e == rustix::io::Errno::AGAIN
                                || e == rustix::io::Errno::ALREADY
                                || e == rustix::io::Errno::INTR => {}
                        Err(e) if e == rustix::io::Errno::ISCONN => return Ok(()),
                        Err(e) => return Err(os(e)),
                    }
                }
                Err(e) => return Err(os(e)),
            }
        }
    }

    fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        let how = match how {
            Shutdown::Read => rustix::net::Shutdown::Read,
            Shutdown::Write => rustix::net::Shutdown::Write,
            Shutdown::Both => rustix::net::Shutdown::Both,
        };
        rustix::net::shutdown(&self.fd, how).map_err(os)
    }
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("fd", &self.fd.as_raw_fd())
            .field("registered", &self.reg.get().is_some())
            .finish()
    }
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

/// A TCP listening socket (Tornado's `bind_sockets` + `add_accept_handler`, as a future).
#[derive(Debug)]
pub struct TcpListener {
    io: Io,
}

impl TcpListener {
    /// Bind and listen on `addr` (port 0: the kernel picks one; see
    /// [`local_addr`](Self::local_addr)), with `SO_REUSEADDR`, a backlog of 128, and
    /// `IPV6_V6ONLY` for IPv6 addresses, as Tornado's `bind_sockets`.
    ///
    /// # Errors
    /// [`Error::Os`]: `EADDRINUSE`, `EACCES` (a port below 1024), `EMFILE`, ….
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
        Self::bind_with(addr, false)
    }

    /// As [`bind`](Self::bind), plus `SO_REUSEPORT`: several sockets (one per loop, one loop
    /// per core) listen on the same port and the kernel spreads new connections over them.
    ///
    /// # Errors
    /// As [`bind`](Self::bind); `EADDRINUSE` if a socket without `SO_REUSEPORT` (or of another
    /// user) holds the port.
    pub fn bind_reuse_port(addr: SocketAddr) -> Result<TcpListener, Error> {
        Self::bind_with(addr, true)
    }

    /// As [`bind`](Self::bind) with `SO_REUSEPORT` if `reuse_port`, and a listen backlog of
    /// `backlog` connections instead of 128 (the kernel caps it at `net.core.somaxconn`). A
    /// server that applies back-pressure (stops accepting when full) leaves waiting clients
    /// in this backlog: size it for the excess you expect.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_with_backlog(
        addr: SocketAddr,
        reuse_port: bool,
        backlog: u32,
    ) -> Result<TcpListener, Error> {
        let listener = Self::bind_with(addr, reuse_port)?;
        // A second listen(2) on a listening socket only changes its backlog.
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        rustix::net::listen(&listener.io.fd, backlog).map_err(os)?;
        Ok(listener)
    }

    fn bind_with(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, Error> {
        let fd = listen_socket(
            family(&addr),
            |fd| rustix::net::bind(fd, &addr),
            true,
            reuse_port,
            addr.is_ipv6(),
        )?;
        Ok(TcpListener { io: Io::new(fd) })
    }

    /// Wait for a connection and accept it: the new stream is non-blocking and close-on-exec
    /// (`accept4`). A connection that was aborted before it was accepted (`ECONNABORTED`) is
    /// skipped, as Tornado does.
    ///
    /// # Errors
    /// [`Error::Os`]: `EMFILE` / `ENFILE` when out of fds — the pending connection stays
    /// queued, and the next call tries `accept` again before waiting, so back off (a
    /// [`sleep`](crate::sleep)) and call again rather than give up; [`Error::NotAttached`]
    /// outside a task; [`Error::Full`] if the loop's handler table has no room for the
    /// listener.
    pub async fn accept(&self) -> Result<(TcpStream, SocketAddr), Error> {
        loop {
            match self
                .io
                .io(Interest::READ, |fd| {
                    let (fd, peer) = rustix::net::acceptfrom_with(fd, sys::FLAGS)?;
                    Ok((sys::socket_ready(fd)?, peer))
                })
                .await
            {
                Ok((fd, peer)) => {
                    let stream = TcpStream { io: Io::new(fd) };
                    let peer = match inet_addr(peer) {
                        Ok(peer) => peer,
                        Err(_) => stream.peer_addr()?,
                    };
                    return Ok((stream, peer));
                }
                Err(Error::Os { errno }) if errno.raw() == libc::ECONNABORTED => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The address it listens on (with the port the kernel picked for port 0).
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname` (practically never).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    io: Io,
}

impl TcpStream {
    /// Connect to `addr`: a non-blocking `connect`, a wait until the socket is writable, then
    /// `SO_ERROR` says whether it worked. Call it inside a task or `run_sync`.
    ///
    /// # Errors
    /// [`Error::Os`]: `ECONNREFUSED` (nothing listens), `ETIMEDOUT`, `ENETUNREACH`, …;
    /// [`Error::NotAttached`] outside a task; [`Error::Full`] if the loop's handler table is
    /// full. Bound the wait with [`timeout`](crate::timeout).
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream, Error> {
        let fd = new_socket(family(&addr), SocketType::STREAM)?;
        let stream = TcpStream { io: Io::new(fd) };
        stream.io.connect(&addr).await?;
        Ok(stream)
    }

    /// Read what is there, up to `buf.len()` bytes, waiting until something is. `Ok(0)`: the
    /// peer closed its side (or `buf` is empty).
    ///
    /// # Errors
    /// [`Error::Os`]: `ECONNRESET`, …; the registration's errors (see the
    /// [module docs](self)).
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.io.read(buf).await
    }

    /// Write some of `buf`, waiting until the socket takes at least one byte; returns how many
    /// it took.
    ///
    /// # Errors
    /// [`Error::Os`]: `EPIPE` (the peer closed; no `SIGPIPE` is raised), `ECONNRESET`, …;
    /// the registration's errors.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        self.io.send(buf).await
    }

    /// Write all of `buf`, waiting for room as needed. If it fails, some bytes may have been
    /// sent.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub async fn write_all(&self, buf: &[u8]) -> Result<(), Error> {
        self.io.send_all(buf).await
    }

    /// Shut down one or both directions (`shutdown(2)`): `Shutdown::Write` sends a FIN, so
    /// the peer reads end-of-stream while this side can still read its answer.
    ///
    /// # Errors
    /// [`Error::Os`]: `ENOTCONN`, ….
    pub fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        self.io.shutdown(how)
    }

    /// Disable (`true`) or enable Nagle's algorithm (`TCP_NODELAY`).
    ///
    /// # Errors
    /// [`Error::Os`] from `setsockopt`.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), Error> {
        rustix::net::sockopt::set_tcp_nodelay(&self.io.fd, nodelay).map_err(os)
    }

    /// Register the stream with the loop polling the current task now, rather than on its
    /// first I/O: a server calls it right after `accept`, so a full handler table is noticed
    /// while the server can still wait for room (back-pressure) instead of failing inside the
    /// connection's handler. A second call does nothing.
    ///
    /// # Errors
    /// [`Error::Full`] when the loop's handler table has no room; [`Error::NotAttached`]
    /// outside a task or `run_sync`; the kernel's error.
    pub fn register(&self) -> Result<(), Error> {
        self.io.registration().map(|_| ())
    }

    /// The local address.
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname`.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`Error::Os`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(rustix::net::getpeername(&self.io.fd).map_err(os)?)
    }
}

/// A UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    io: Io,
}

impl UdpSocket {
    /// A UDP socket bound to `addr` (port 0: the kernel picks one).
    ///
    /// # Errors
    /// [`Error::Os`]: `EADDRINUSE`, `EACCES`, `EMFILE`, ….
    pub fn bind(addr: SocketAddr) -> Result<UdpSocket, Error> {
        let fd = new_socket(family(&addr), SocketType::DGRAM)?;
        rustix::net::bind(&fd, &addr).map_err(os)?;
        Ok(UdpSocket { io: Io::new(fd) })
    }

    /// Send `buf` as one datagram to `addr`, waiting for room in the send buffer if needed.
    ///
    /// # Errors
    /// [`Error::Os`]: `EMSGSIZE` (too large for one datagram), `ENETUNREACH`, …; the
    /// registration's errors.
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize, Error> {
        self.io
            .io(Interest::WRITE, |fd| {
                rustix::net::sendto(fd, buf, sys::SEND, &addr)
            })
            .await
    }

    /// Wait for a datagram and receive it into `buf`: its length (truncated to `buf.len()`;
    /// the rest of a longer datagram is lost) and sender.
    ///
    /// # Errors
    /// [`Error::Os`]: `ECONNREFUSED` (an ICMP error from an earlier send), …; the
    /// registration's errors.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Error> {
        let (n, _, from) = self
            .io
            .io(Interest::READ, |fd| {
                rustix::net::recvfrom(fd, &mut *buf, RecvFlags::empty())
            })
            .await?;
        Ok((n, inet_addr(from)?))
    }

    /// The local address.
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname`.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }
}

/// A Unix-domain stream listener on a filesystem path.
#[derive(Debug)]
pub struct UnixListener {
    io: Io,
}

impl UnixListener {
    /// Bind and listen on `path`. As Tornado's `bind_unix_socket`, a *socket* file already at
    /// `path` (left by an earlier run) is removed first; any other file is an error.
    ///
    /// # Errors
    /// [`Error::Os`]: `EADDRINUSE` if `path` exists and is not a socket, `ENAMETOOLONG`
    /// (over 107 bytes), `EACCES`, ….
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener, Error> {
        use std::os::unix::fs::FileTypeExt;
        let path = path.as_ref();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(os(rustix::io::Errno::ADDRINUSE));
            }
            std::fs::remove_file(path).map_err(|e| Error::Os { errno: e.into() })?;
        }
        let addr = unix_addr(path)?;
        let fd = listen_socket(
            AddressFamily::UNIX,
            |fd| rustix::net::bind(fd, &addr),
            false,
            false,
            false,
        )?;
        Ok(UnixListener { io: Io::new(fd) })
    }

    /// Wait for a connection and accept it (non-blocking, close-on-exec).
    ///
    /// # Errors
    /// As [`TcpListener::accept`].
    pub async fn accept(&self) -> Result<UnixStream, Error> {
        loop {
            match self
                .io
                .io(Interest::READ, |fd| {
                    sys::socket_ready(rustix::net::accept_with(fd, sys::FLAGS)?)
                })
                .await
            {
                Ok(fd) => return Ok(UnixStream { io: Io::new(fd) }),
                Err(Error::Os { errno }) if errno.raw() == libc::ECONNABORTED => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A Unix-domain stream connection.
#[derive(Debug)]
pub struct UnixStream {
    io: Io,
}

impl UnixStream {
    /// Connect to the listener at `path`. Call it inside a task or `run_sync`.
    ///
    /// # Errors
    /// [`Error::Os`]: `ENOENT` (no such file), `ECONNREFUSED` (nobody listens there), …; the
    /// registration's errors.
    pub async fn connect(path: impl AsRef<Path>) -> Result<UnixStream, Error> {
        let addr = unix_addr(path.as_ref())?;
        let fd = new_socket(AddressFamily::UNIX, SocketType::STREAM)?;
        let stream = UnixStream { io: Io::new(fd) };
        stream.io.connect(&addr).await?;
        Ok(stream)
    }

    /// A connected pair (`socketpair(2)`), for talking to yourself or a child.
    ///
    /// # Errors
    /// [`Error::Os`]: `EMFILE`, ….
    pub fn pair() -> Result<(UnixStream, UnixStream), Error> {
        let (a, b) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, sys::FLAGS, None)
                .and_then(|(a, b)| Ok((sys::socket_ready(a)?, sys::socket_ready(b)?)))
                .map_err(os)?;
        Ok((UnixStream { io: Io::new(a) }, UnixStream { io: Io::new(b) }))
    }

    /// As [`TcpStream::read`].
    ///
    /// # Errors
    /// As [`TcpStream::read`].
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.io.read(buf).await
    }

    /// As [`TcpStream::write`] (no `SIGPIPE` either).
    ///
    /// # Errors
    /// As [`TcpStream::write`].
    pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        self.io.send(buf).await
    }

    /// As [`TcpStream::write_all`].
    ///
    /// # Errors
    /// As [`TcpStream::write`].
    pub async fn write_all(&self, buf: &[u8]) -> Result<(), Error> {
        self.io.send_all(buf).await
    }

    /// As [`TcpStream::shutdown`].
    ///
    /// # Errors
    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        self.io.shutdown(how)
    }
}

/// The read end of a [`pipe`].
#[derive(Debug)]
pub struct PipeReader {
    io: Io,
}

/// The write end of a [`pipe`].
#[derive(Debug)]
pub struct PipeWriter {
    io: Io,
}

/// A pipe (`pipe2(O_NONBLOCK | O_CLOEXEC)`): bytes written to the [`PipeWriter`] come out of
/// the [`PipeReader`]; once every writer is dropped the reader reads end-of-stream (`Ok(0)`).
///
/// # Errors
/// [`Error::Os`]: `EMFILE`, `ENFILE`.
pub fn pipe() -> Result<(PipeReader, PipeWriter), Error> {
    let (r, w) = sys::pipe().map_err(os)?;
    Ok((PipeReader { io: Io::new(r) }, PipeWriter { io: Io::new(w) }))
}

impl PipeReader {
    /// Read what is there, up to `buf.len()` bytes, waiting until something is. `Ok(0)`:
    /// every writer is gone (or `buf` is empty).
    ///
    /// # Errors
    /// [`Error::Os`]; the registration's errors.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.io.read(buf).await
    }
}

impl PipeWriter {
    /// Write some of `buf`, waiting until the pipe has room; returns how many bytes it took.
    ///
    /// # Errors
    /// [`Error::Os`]: `EPIPE` when the reader is gone (the process also gets `SIGPIPE`,
    /// which Rust programs ignore by default); the registration's errors.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        self.io.write(buf).await
    }

    /// Write all of `buf`, waiting for room as needed.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub async fn write_all(&self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.io.write(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }
}

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

// ---- Adopting fds made outside the loop (systemd socket activation, std sockets) ----

impl Io {
    /// Take over `fd`: non-blocking (the loop must never block in a system call) and
    /// close-on-exec (as every fd this module makes).
    fn adopt(fd: OwnedFd) -> Result<Io, Error> {
        rustix::io::ioctl_fionbio(&fd, true).map_err(os)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(os)?;
        Ok(Io::new(fd))
    }

    /// Adopt for an infallible `From<OwnedFd>`: the flags are set where the kernel lets us
    /// (it refuses only for an fd that is not open, on which every later call fails with
    /// `EBADF` rather than block).
    fn adopt_lossy(fd: OwnedFd) -> Io {
        let _ = rustix::io::ioctl_fionbio(&fd, true);
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        Io::new(fd)
    }

    /// Give the fd back: the registration (if any) is removed from the loop first.
    fn into_fd(self) -> OwnedFd {
        let Io { reg, fd } = self;
        drop(reg);
        fd
    }
}

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
