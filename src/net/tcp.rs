//! TCP: [`TcpListener`] and [`TcpStream`].

use super::*;

/// A TCP listening socket (Tornado's `bind_sockets` + `add_accept_handler`, as a future):
/// [`bind`](Self::bind) it (anywhere, before or while the loop runs), then
/// [`accept`](Self::accept) connections inside a task or `run_sync`, each a [`TcpStream`].
/// For a complete server with a connection limit and back-pressure, see
/// [`Server`](crate::Server).
///
/// # Examples
///
/// ```
/// use ioloop::{EventLoop, Executor, Remote};
///
/// static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// static EXEC: Executor<4, 1024> = Executor::new();
/// let mut lp: EventLoop = EventLoop::new()?;
/// lp.attach_remote(&REMOTE)?;
/// lp.attach_executor(&EXEC)?;
/// use ioloop::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
/// let addr = listener.local_addr()?; // port 0: the kernel picked one
/// let (server_side, client_side) = lp.run_sync(
///     ioloop::join(listener.accept(), TcpStream::connect(addr)),
///     None,
/// )?;
/// let (accepted, peer) = server_side?;
/// let client = client_side?;
/// assert_eq!(peer, client.local_addr()?);
/// assert_eq!(accepted.peer_addr()?, client.local_addr()?);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// Binding fails with [`Error::Os`] (`EADDRINUSE`, `EACCES`, `EMFILE`, …); `accept` also with
/// the registration's errors ([`Error::NotAttached`] outside a task, [`Error::Full`] when the
/// loop's handler table is full). See each method.
#[derive(Debug)]
pub struct TcpListener {
    pub(super) io: Io,
}

impl TcpListener {
    /// Bind and listen on `addr` (port 0: the kernel picks one; see
    /// [`local_addr`](Self::local_addr)), with `SO_REUSEADDR`, a backlog of 128, and
    /// `IPV6_V6ONLY` for IPv6 addresses, as Tornado's `bind_sockets`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::TcpListener;
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// assert_ne!(listener.local_addr()?.port(), 0); // the port the kernel picked
    /// // A second plain bind to the same port fails.
    /// let again = TcpListener::bind(listener.local_addr()?);
    /// assert!(matches!(again, Err(ioloop::Error::Os { .. })));
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`]: `EADDRINUSE`, `EACCES` (a port below 1024), `EMFILE`, ….
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
        Self::bind_with(addr, false)
    }

    /// As [`bind`](Self::bind), plus `SO_REUSEPORT`: several sockets (one per loop, one loop
    /// per core) listen on the same port and the kernel spreads new connections over them.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::TcpListener;
    /// let a = TcpListener::bind_reuse_port("127.0.0.1:0".parse().unwrap())?;
    /// let b = TcpListener::bind_reuse_port(a.local_addr()?)?; // same port, e.g. for a second loop
    /// assert_eq!(a.local_addr()?, b.local_addr()?);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::TcpListener;
    /// let listener = TcpListener::bind_with_backlog("127.0.0.1:0".parse().unwrap(), false, 1024)?;
    /// assert_ne!(listener.local_addr()?.port(), 0); // listening on the port the kernel picked
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::TcpListener;
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// use ioloop::net::TcpStream;
    /// let addr = listener.local_addr()?;
    /// let (accepted, _client) = lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(addr)), None)?;
    /// let (_stream, peer) = accepted?;
    /// assert!(peer.ip().is_loopback());
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::TcpListener;
    /// let listener = TcpListener::bind("[::1]:0".parse().unwrap()).or_else(|_| {
    ///     TcpListener::bind("127.0.0.1:0".parse().unwrap()) // no IPv6 here
    /// })?;
    /// assert_ne!(listener.local_addr()?.port(), 0);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname` (practically never).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }
}

/// A TCP connection on the loop (Tornado's `IOStream` over a TCP socket): made by
/// [`TcpStream::connect`] or [`TcpListener::accept`] (or adopted with
/// [`from_std`](Self::from_std)), used from tasks of one loop.
///
/// The methods are `async fn`s taking `&self`: [`read`](Self::read) waits until data (or the
/// end of the stream) is there, [`write`](Self::write) / [`write_all`](Self::write_all) wait
/// for room in the send buffer; [`shutdown`](Self::shutdown),
/// [`set_nodelay`](Self::set_nodelay) and the addresses are immediate. It also implements the
/// [`embedded_io_async`] `Read` / `Write` traits (error type [`IoError`]) and, with feature
/// `futures-io`, the `futures::io` traits. For line- or length-framed protocols wrap it in a
/// [`BufStream`](crate::BufStream). Dropping it (inside a task) closes the connection.
///
/// # Examples
///
/// An echo round trip over 127.0.0.1:
///
/// ```
/// use ioloop::{EventLoop, Executor, Remote};
///
/// static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// static EXEC: Executor<4, 1024> = Executor::new();
/// let mut lp: EventLoop = EventLoop::new()?;
/// lp.attach_remote(&REMOTE)?;
/// lp.attach_executor(&EXEC)?;
/// use ioloop::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
/// let addr = listener.local_addr()?;
/// let server = async {
///     let (stream, _peer) = listener.accept().await?;
///     let mut buf = [0u8; 64];
///     let n = stream.read(&mut buf).await?;
///     stream.write_all(&buf[..n]).await // echo it back
/// };
/// let client = async {
///     let stream = TcpStream::connect(addr).await?;
///     stream.set_nodelay(true)?;
///     stream.write_all(b"hello").await?;
///     let mut buf = [0u8; 64];
///     let n = stream.read(&mut buf).await?;
///     Ok::<_, ioloop::Error>(buf[..n].to_vec())
/// };
/// let (served, echoed) = lp.run_sync(ioloop::join(server, client), None)?;
/// served?;
/// assert_eq!(echoed?, b"hello");
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// I/O fails with [`Error::Os`] and the kernel's errno (`ECONNREFUSED` from `connect`,
/// `ECONNRESET`, `EPIPE` when writing to a peer that closed — no `SIGPIPE` is raised), or the
/// registration's errors ([`Error::NotAttached`] outside a task, [`Error::Full`] when the
/// loop's handler table has no room).
#[derive(Debug)]
pub struct TcpStream {
    pub(super) io: Io,
}

impl TcpStream {
    /// Connect to `addr`: a non-blocking `connect`, a wait until the socket is writable, then
    /// `SO_ERROR` says whether it worked. Call it inside a task or `run_sync`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::{TcpListener, TcpStream};
    /// // A port nobody listens on any more: the connection is refused.
    /// let addr = TcpListener::bind("127.0.0.1:0".parse().unwrap())?.local_addr()?;
    /// let refused = lp.run_sync(TcpStream::connect(addr), None)?;
    /// assert!(matches!(refused, Err(ioloop::Error::Os { .. }))); // ECONNREFUSED
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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

    /// Disable (`true`) or enable Nagle's algorithm (`TCP_NODELAY`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::{TcpListener, TcpStream};
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// # let (accepted, connected) =
    /// #     lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;
    /// # let ((server, _), client) = (accepted?, connected?);
    /// client.set_nodelay(true)?; // small writes go out at once
    /// # let _ = server;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::{TcpListener, TcpStream};
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// # let (accepted, connected) =
    /// #     lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;
    /// # let ((server, _), client) = (accepted?, connected?);
    /// lp.run_sync(async { server.register() }, None)??; // inside the loop: now, not at first I/O
    /// # let _ = client;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Full`] when the loop's handler table has no room; [`Error::NotAttached`]
    /// outside a task or `run_sync`; the kernel's error.
    pub fn register(&self) -> Result<(), Error> {
        self.io.registration().map(|_| ())
    }

    /// The local address.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::{TcpListener, TcpStream};
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// # let (accepted, connected) =
    /// #     lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;
    /// # let ((server, _), client) = (accepted?, connected?);
    /// assert_eq!(client.local_addr()?.ip(), std::net::Ipv4Addr::LOCALHOST);
    /// # let _ = server;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname`.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }

    /// The peer's address.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::{TcpListener, TcpStream};
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// # let (accepted, connected) =
    /// #     lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;
    /// # let ((server, _), client) = (accepted?, connected?);
    /// assert_eq!(client.peer_addr()?, listener.local_addr()?);
    /// assert_eq!(server.peer_addr()?, client.local_addr()?);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`]: `ENOTCONN` once the connection is gone.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(rustix::net::getpeername(&self.io.fd).map_err(os)?)
    }
}

stream::stream_methods!(
    TcpStream,
    " # use ioloop::net::{TcpListener, TcpStream};\n # let listener = TcpListener::bind(\"127.0.0.1:0\".parse().unwrap())?;\n # let (accepted, connected) =\n #     lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;\n # let ((server, _), client) = (accepted?, connected?);\n"
);
