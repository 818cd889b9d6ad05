//! Unix-domain stream sockets: [`UnixListener`] and [`UnixStream`].

use super::*;

/// A Unix-domain stream listener on a filesystem path (Tornado's `bind_unix_socket`):
/// [`bind`](Self::bind) it, then [`accept`](Self::accept) [`UnixStream`]s inside a task or
/// `run_sync`. The socket file stays behind when the listener is dropped (the next `bind`
/// to the same path removes it).
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
/// use ioloop::net::{UnixListener, UnixStream};
///
/// let path = std::env::temp_dir().join(format!("ioloop-doc-ul-{}.sock", std::process::id()));
/// let listener = UnixListener::bind(&path)?;
/// let (accepted, connected) =
///     lp.run_sync(ioloop::join(listener.accept(), UnixStream::connect(&path)), None)?;
/// let (server, client) = (accepted?, connected?);
/// lp.run_sync(
///     async {
///         client.write_all(b"hi").await?;
///         let mut buf = [0u8; 2];
///         let n = server.read(&mut buf).await?;
///         assert_eq!(&buf[..n], b"hi");
///         Ok::<(), ioloop::Error>(())
///     },
///     None,
/// )??;
/// let _ = std::fs::remove_file(&path);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Os`] (`EADDRINUSE` if the path is taken by something that is not a socket,
/// `ENAMETOOLONG`, `EACCES`, `EMFILE`, …); `accept` also with the registration's errors
/// ([`Error::NotAttached`], [`Error::Full`]).
#[derive(Debug)]
pub struct UnixListener {
    pub(super) io: Io,
}

impl UnixListener {
    /// Bind and listen on `path`. As Tornado's `bind_unix_socket`, a *socket* file already at
    /// `path` (left by an earlier run) is removed first; any other file is an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UnixListener;
    /// let path = std::env::temp_dir().join(format!("ioloop-doc-bind-{}.sock", std::process::id()));
    /// let first = UnixListener::bind(&path)?;
    /// drop(first); // leaves the socket file behind...
    /// let second = UnixListener::bind(&path)?; // ...which the next bind removes
    /// # let _ = second;
    /// let _ = std::fs::remove_file(&path);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # use ioloop::net::{UnixListener, UnixStream};
    /// let path = std::env::temp_dir().join(format!("ioloop-doc-acc-{}.sock", std::process::id()));
    /// let listener = UnixListener::bind(&path)?;
    /// let (accepted, connected) =
    ///     lp.run_sync(ioloop::join(listener.accept(), UnixStream::connect(&path)), None)?;
    /// let (server_side, client_side) = (accepted?, connected?);
    /// lp.run_sync(client_side.write_all(b"hi"), None)??;
    /// let mut buf = [0u8; 8];
    /// let n = lp.run_sync(server_side.read(&mut buf), None)??;
    /// assert_eq!(&buf[..n], b"hi");
    /// let _ = std::fs::remove_file(&path);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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

/// A Unix-domain stream connection: from [`UnixStream::connect`], [`UnixListener::accept`] or
/// [`UnixStream::pair`] (a connected pair, for talking to yourself or a child process). Its
/// methods work as [`TcpStream`]'s: `async` [`read`](Self::read), [`write`](Self::write) and
/// [`write_all`](Self::write_all) inside a task or `run_sync`, and
/// [`shutdown`](Self::shutdown).
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
/// use std::net::Shutdown;
/// use ioloop::net::UnixStream;
///
/// let (a, b) = UnixStream::pair()?;
/// let got = lp.run_sync(
///     async {
///         a.write_all(b"ping").await?;
///         a.shutdown(Shutdown::Write)?; // b reads end-of-stream after the bytes
///         let mut got = Vec::new();
///         let mut buf = [0u8; 16];
///         loop {
///             match b.read(&mut buf).await? {
///                 0 => break,
///                 n => got.extend_from_slice(&buf[..n]),
///             }
///         }
///         Ok::<_, ioloop::Error>(got)
///     },
///     None,
/// )??;
/// assert_eq!(got, b"ping");
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// As [`TcpStream`]: [`Error::Os`] with the kernel's errno (`ECONNREFUSED` / `ENOENT` from
/// `connect`, `EPIPE` once the peer is gone, …) or the registration's errors
/// ([`Error::NotAttached`], [`Error::Full`]).
#[derive(Debug)]
pub struct UnixStream {
    pub(super) io: Io,
}

impl UnixStream {
    /// Connect to the listener at `path`. Call it inside a task or `run_sync`.
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
    /// use ioloop::net::UnixStream;
    /// let missing = std::env::temp_dir().join("ioloop-doc-no-such.sock");
    /// let result = lp.run_sync(UnixStream::connect(&missing), None)?;
    /// assert!(matches!(result, Err(ioloop::Error::Os { .. }))); // ENOENT
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UnixStream;
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// let (a, b) = UnixStream::pair()?; // connected to each other
    /// lp.run_sync(a.write_all(b"hi"), None)??;
    /// let mut buf = [0u8; 8];
    /// let n = lp.run_sync(b.read(&mut buf), None)??;
    /// assert_eq!(&buf[..n], b"hi");
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
}

stream::stream_methods!(
    UnixStream,
    " # use ioloop::net::UnixStream;\n # let (client, server) = UnixStream::pair()?;\n"
);
