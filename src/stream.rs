//! Buffered streams: Tornado's `IOStream` without allocation, with the deadlines Tornado left
//! one layer up.
//!
//! A [`BufStream<S, R, W>`] wraps any byte stream `S` of [`ioloop::net`](crate::net)
//! ([`TcpStream`](crate::net::TcpStream), [`UnixStream`](crate::net::UnixStream), a pipe pair
//! as [`Duplex`]) with an `R`-byte read buffer and a `W`-byte write buffer, both inline
//! (const generics): a stream and its buffers live inside the task that owns them, and no
//! operation allocates.
//!
//! A line server and its client over 127.0.0.1 (port 0), both buffered:
//!
//! ```
//! use std::time::Duration;
//! use ioloop::net::{TcpListener, TcpStream};
//! use ioloop::stream::{BufStream, StreamError, Timeouts};
//! use ioloop::{EventLoop, Executor, Remote};
//!
//! async fn answer(tcp: TcpStream) -> Result<(), StreamError> {
//!     let mut s: BufStream<_, 4096, 4096> = BufStream::new(tcp).with_timeouts(Timeouts {
//!         idle: Some(Duration::from_secs(60)),  // waiting for a request to begin
//!         read: Some(Duration::from_secs(5)),   // one request line, from its first byte
//!         write: Some(Duration::from_secs(10)), // one flush
//!     });
//!     loop {
//!         let len = match s.read_until(b"\n", 1024).await {
//!             Ok(line) => line.len(), // up to and including the delimiter
//!             Err(StreamError::Closed) => return Ok(()), // the client hung up
//!             Err(e) => return Err(e),
//!         };
//!         s.write(b"got ").await?;
//!         s.write(&[b'0' + len as u8, b'\n']).await?;
//!         s.flush().await?;
//!     }
//! }
//!
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! static EXEC: Executor<4, 8192> = Executor::new();
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.attach_executor(&EXEC)?;
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = listener.local_addr()?;
//! let server = async {
//!     let (tcp, _peer) = listener.accept().await?;
//!     Ok::<_, StreamError>(answer(tcp).await?)
//! };
//! let client = async {
//!     let mut s: BufStream<_> = BufStream::new(TcpStream::connect(addr).await?);
//!     s.write(b"hello\n").await?;
//!     s.flush().await?;
//!     let reply = s.read_until(b"\n", 64).await?.to_vec();
//!     Ok::<_, StreamError>(reply) // dropping `s` closes the connection
//! };
//! let (served, reply) = lp.run_sync(ioloop::join(server, client), None)?;
//! assert_eq!(reply?, b"got 6\n");
//! served?;
//! # Ok::<(), ioloop::Error>(())
//! ```
//!
//! # Reads (Tornado's behaviour, kept)
//!
//! Every read is first tried against the buffer; the fd is read only when the buffer cannot
//! satisfy it. A read returns a slice **into the read buffer**, valid until the next call on
//! the stream (which consumes it): no copy. `&mut self` makes "one read at a time" (Tornado's
//! "Already reading") a compile-time rule.
//!
//! - [`read_until(delim, max)`](BufStream::read_until): the data up to and including `delim`.
//!   If `max` bytes (or the whole buffer, `R`) are buffered without it, the read fails with
//!   [`StreamError::LimitExceeded`] (Tornado's `UnsatisfiableReadError`): the buffer never
//!   grows. The bytes stay buffered, so a server can still answer (HTTP 431) before closing.
//! - [`read_exact(n)`](BufStream::read_exact): exactly `n` bytes (`n > R` is
//!   [`StreamError::BufferFull`]; use [`read_exact_into`](BufStream::read_exact_into) for
//!   larger bodies).
//! - [`read_partial(max)`](BufStream::read_partial): what is there, at least one byte.
//! - [`read_until_close`](BufStream::read_until_close): everything until the peer closes (at
//!   most `R` bytes; more is [`StreamError::BufferFull`]).
//! - [`wait_closed`](BufStream::wait_closed): the close notification (Tornado's
//!   `set_close_callback`), resolved when the peer closes or the connection fails.
//!
//! A read that cannot be satisfied because the peer closed fails with
//! [`StreamError::Closed`]; bytes still buffered remain readable by the reads they satisfy.
//!
//! # Writes
//!
//! [`write`](BufStream::write) copies into the write buffer and returns at once while the
//! buffer holds less than the **high-water mark** (default `W`, see
//! [`set_write_high_water`](BufStream::set_write_high_water)); above it, `write` flushes first:
//! a slow reader back-pressures the writer instead of growing a buffer (Tornado's unbounded
//! default, or `StreamBufferFullError` past `max_write_buffer_size`). Data larger than `W`
//! streams through. [`flush`](BufStream::flush) sends everything queued. Nothing is sent on
//! drop: flush before dropping.
//!
//! # Timeouts
//!
//! [`Timeouts`] are the stream's own deadlines, on the loop's timers (one timer per waiting
//! operation, cancelled when it finishes):
//! - `idle`: how long a read may wait for its **first byte** when nothing is buffered — the
//!   keep-alive wait between requests (Tornado's `idle_connection_timeout`);
//! - `read`: how long one read operation may take from the moment bytes are flowing (from
//!   its start when data was buffered, else from the first byte; without an `idle` timeout,
//!   from its start): a header timeout for `read_until(b"\r\n\r\n", ..)`, which a peer that
//!   sends half a header and stops hits;
//! - `write`: how long one flush may wait for the peer to take the data.
//!
//! A timeout fails the operation with [`StreamError::TimedOut`] naming which; the stream is
//! then marked closed (every later operation fails with [`StreamError::Closed`]), so the
//! handler's natural error path drops it and frees its slot.
//!
//! # Errors
//!
//! [`StreamError`] has one variant per outcome: `Closed`, `LimitExceeded`, `BufferFull`,
//! `TimedOut`, `Io` (the kernel's error). It converts to [`Error`] (`?` in code that returns
//! `ioloop::Error`) and implements `embedded_io::Error`, so [`BufStream`] implements
//! [`embedded_io_async`]'s `Read`, `BufRead` and `Write`.

use core::fmt;
use core::future::Future;
use core::time::Duration;

use embedded_io_async::{ErrorType, Read, Write};
use loop_core::{timeout, Errno, Error};

use crate::net::IoError;

/// Which deadline ran out, in [`StreamError::TimedOut`]: tells a keep-alive connection that
/// simply went quiet (`Idle`, close it silently) from a peer that stalled mid-request (`Read`,
/// e.g. answer 408) or stopped reading (`Write`). See [`Timeouts`] (whose example shows an
/// `Idle` timeout).
///
/// # Examples
///
/// A peer that sends half a line and stops hits the read timeout, not the idle one:
///
/// ```
/// use std::time::Duration;
/// use ioloop::net::UnixStream;
/// use ioloop::stream::{BufStream, StreamError, TimeoutKind, Timeouts};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
/// let (a, b) = UnixStream::pair()?;
/// let mut s: BufStream<_> = BufStream::new(a).with_timeouts(Timeouts {
///     read: Some(Duration::from_millis(20)),
///     ..Timeouts::default()
/// });
/// let line = lp.run_sync(
///     async {
///         b.write_all(b"GET / HT").await?; // ...and nothing more, but `b` stays open
///         Ok::<_, ioloop::Error>(s.read_until(b"\n", 64).await.map(|l| l.len()))
///     },
///     None,
/// )??;
/// assert_eq!(line, Err(StreamError::TimedOut(TimeoutKind::Read)));
/// # drop(b);
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// A read waited for its first byte longer than [`Timeouts::idle`].
    Idle,
    /// A read took longer than [`Timeouts::read`].
    Read,
    /// A flush took longer than [`Timeouts::write`].
    Write,
}

/// What a [`BufStream`] operation can fail with. Each outcome is its own variant. It converts
/// to [`Error`] with `?` (`Closed` as [`Error::Os`] `EPIPE`, `LimitExceeded` and `BufferFull`
/// as `EMSGSIZE`, `TimedOut` as [`Error::TimedOut`], `Io` as the error it holds) and
/// implements `embedded_io::Error`.
///
/// # Examples
///
/// ```
/// use ioloop::net::UnixStream;
/// use ioloop::stream::{BufStream, StreamError};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
///
/// let (a, b) = UnixStream::pair()?;
/// let mut s: BufStream<_, 16, 16> = BufStream::new(a);
/// let (too_long, too_big) = lp.run_sync(
///     async {
///         b.write_all(b"no newline in sixteen bytes").await?;
///         let too_long = s.read_until(b"\n", 8).await.map(|l| l.len());
///         drop(b); // the peer closes
///         let too_big = s.read_exact(100).await.map(|r| r.len()); // more than R = 16
///         Ok::<_, ioloop::Error>((too_long, too_big))
///     },
///     None,
/// )??;
/// assert_eq!(too_long, Err(StreamError::LimitExceeded { max: 8 }));
/// assert_eq!(too_big, Err(StreamError::BufferFull { capacity: 16 }));
/// let as_error: ioloop::Error = StreamError::Closed.into(); // what `?` does
/// assert!(matches!(as_error, ioloop::Error::Os { .. }));
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer closed the connection (end-of-stream) before the read could be satisfied, or
    /// the stream was closed earlier (by [`BufStream::close`], a timeout or an I/O error).
    Closed,
    /// `read_until`'s delimiter was not found within its `max` bytes (Tornado's
    /// `UnsatisfiableReadError`). The bytes stay buffered; close the stream after answering.
    LimitExceeded {
        /// The limit that was reached, in bytes.
        max: usize,
    },
    /// The request needs more room than the buffer has (`read_exact(n)` with `n > R`, or
    /// `read_until_close` with more than `R` bytes before the close).
    BufferFull {
        /// The buffer's capacity, in bytes.
        capacity: usize,
    },
    /// A deadline ran out; the stream is closed.
    TimedOut(TimeoutKind),
    /// The kernel (or the loop) refused: `ECONNRESET`, `EPIPE`, [`Error::Full`] when the loop's
    /// handler table has no room for the fd, …; the stream is closed.
    Io(Error),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Closed => f.write_str("stream closed"),
            StreamError::LimitExceeded { max } => {
                write!(f, "delimiter not found within {max} bytes")
            }
            StreamError::BufferFull { capacity } => {
                write!(f, "the {capacity}-byte stream buffer is full")
            }
            StreamError::TimedOut(TimeoutKind::Idle) => f.write_str("idle timeout"),
            StreamError::TimedOut(TimeoutKind::Read) => f.write_str("read timeout"),
            StreamError::TimedOut(TimeoutKind::Write) => f.write_str("write timeout"),
            StreamError::Io(e) => write!(f, "stream I/O failed: {e}"),
        }
    }
}

impl core::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            StreamError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for StreamError {
    fn from(e: Error) -> StreamError {
        StreamError::Io(e)
    }
}

impl From<IoError> for StreamError {
    fn from(e: IoError) -> StreamError {
        StreamError::Io(e.0)
    }
}

/// `Closed` → `Os(EPIPE)`, a timeout → [`Error::TimedOut`], `LimitExceeded` and `BufferFull`
/// → `Os(EMSGSIZE)` (the loop's `Error` has no variant for a stream's bounds), `Io(e)` → `e`.
impl From<StreamError> for Error {
    fn from(e: StreamError) -> Error {
        match e {
            StreamError::Closed => Error::Os {
                errno: Errno(libc::EPIPE),
            },
            StreamError::LimitExceeded { .. } | StreamError::BufferFull { .. } => Error::Os {
                errno: Errno(libc::EMSGSIZE),
            },
            StreamError::TimedOut(_) => Error::TimedOut,
            StreamError::Io(e) => e,
        }
    }
}

impl embedded_io_async::Error for StreamError {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        use embedded_io_async::ErrorKind as K;
        match self {
            StreamError::Closed => K::BrokenPipe,
            StreamError::LimitExceeded { .. } => K::InvalidData,
            StreamError::BufferFull { .. } => K::OutOfMemory,
            StreamError::TimedOut(_) => K::TimedOut,
            StreamError::Io(e) => embedded_io_async::Error::kind(&IoError(*e)),
        }
    }
}

/// The deadlines of a [`BufStream`]: `idle` (waiting for a request to begin), `read` (one read
/// once bytes flow), `write` (one flush), all off by default. Set them so that a silent or slow
/// peer cannot hold a connection, and its task slot, for ever; see the
/// [module docs](self#timeouts).
///
/// # Examples
///
/// A peer that never sends hits the idle timeout; the stream is closed afterwards:
///
/// ```
/// use std::time::Duration;
/// use ioloop::net::UnixStream;
/// use ioloop::stream::{BufStream, StreamError, TimeoutKind, Timeouts};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
///
/// let (a, _silent_peer) = UnixStream::pair()?;
/// let mut s: BufStream<_> = BufStream::new(a).with_timeouts(Timeouts {
///     idle: Some(Duration::from_millis(20)),
///     ..Timeouts::default()
/// });
/// let (first, then) = lp.run_sync(
///     async {
///         let first = s.read_partial(64).await.map(|r| r.len());
///         let then = s.read_partial(64).await.map(|r| r.len());
///         (first, then)
///     },
///     None,
/// )?;
/// assert_eq!(first, Err(StreamError::TimedOut(TimeoutKind::Idle)));
/// assert_eq!(then, Err(StreamError::Closed));
/// assert!(s.is_closed());
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a read may wait for its first byte when nothing is buffered.
    pub idle: Option<Duration>,
    /// How long one read operation may take once data flows.
    pub read: Option<Duration>,
    /// How long one flush may take.
    pub write: Option<Duration>,
}

/// A reader and a writer used as one stream: a pipe pair ([`PipeReader`](crate::net::PipeReader),
/// [`PipeWriter`](crate::net::PipeWriter)), or any two halves, under one [`BufStream`].
///
/// # Examples
///
/// ```
/// use ioloop::net::pipe;
/// use ioloop::stream::{BufStream, Duplex};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
///
/// // Two pipes make a loopback: what we write comes back to our reader.
/// let (reader, writer) = pipe()?;
/// let mut s: BufStream<_> = BufStream::new(Duplex { reader, writer });
/// let echoed = lp.run_sync(
///     async {
///         s.write(b"ok\n").await?;
///         s.flush().await?;
///         Ok::<_, ioloop::stream::StreamError>(s.read_until(b"\n", 16).await?.to_vec())
///     },
///     None,
/// )??;
/// assert_eq!(echoed, b"ok\n");
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Debug)]
pub struct Duplex<Rd, Wr> {
    /// The read half.
    pub reader: Rd,
    /// The write half.
    pub writer: Wr,
}

impl<Rd, Wr> ErrorType for Duplex<Rd, Wr> {
    type Error = IoError;
}

impl<Rd: Read + ErrorType<Error = IoError>, Wr> Read for Duplex<Rd, Wr> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        self.reader.read(buf).await
    }
}

impl<Rd, Wr: Write + ErrorType<Error = IoError>> Write for Duplex<Rd, Wr> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        self.writer.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), IoError> {
        self.writer.flush().await
    }
}

/// A buffered byte stream for protocol code (Tornado's `IOStream`): delimiter, length and
/// partial reads from an inline `R`-byte buffer, writes queued in an inline `W`-byte buffer,
/// and per-operation deadlines, over a [`TcpStream`](crate::net::TcpStream),
/// [`UnixStream`](crate::net::UnixStream) or pipe pair ([`Duplex`]). Use it to speak a line- or
/// header-based protocol without allocating; see the [module docs](self).
///
/// Methods by group: reads ([`read_until`](Self::read_until), [`read_exact`](Self::read_exact),
/// [`read_exact_into`](Self::read_exact_into), [`read_partial`](Self::read_partial),
/// [`read_until_close`](Self::read_until_close), [`wait_closed`](Self::wait_closed)) return
/// slices into the read buffer; writes ([`write`](Self::write), [`flush`](Self::flush)) queue
/// and send; [`Timeouts`] and the high-water mark are set with
/// [`with_timeouts`](Self::with_timeouts) / [`set_write_high_water`](Self::set_write_high_water);
/// [`buffered`](Self::buffered), [`queued`](Self::queued), [`is_closed`](Self::is_closed),
/// [`close`](Self::close) and [`into_inner`](Self::into_inner) inspect and end it.
///
/// # Examples
///
/// Length-prefixed and delimited reads over a socket pair:
///
/// ```
/// use ioloop::net::UnixStream;
/// use ioloop::stream::{BufStream, StreamError};
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
///
/// let (a, b) = UnixStream::pair()?;
/// let mut s: BufStream<_, 64, 64> = BufStream::new(a);
/// lp.run_sync(
///     async {
///         b.write_all(b"\x05helloHEADER\r\n\r\nrest").await?;
///         let len = s.read_exact(1).await?[0] as usize;
///         assert_eq!(s.read_exact(len).await?, b"hello");
///         assert_eq!(s.read_until(b"\r\n\r\n", 64).await?, b"HEADER\r\n\r\n");
///         assert_eq!(s.buffered(), 4); // "rest" is already read from the fd
///         drop(b);
///         assert_eq!(s.read_until_close().await?, b"rest");
///         Ok::<(), StreamError>(())
///     },
///     None,
/// )??;
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// Every operation returns a [`StreamError`]; each method lists which. A timeout or an I/O
/// error closes the stream (later operations fail with [`StreamError::Closed`]).
pub struct BufStream<S, const R: usize = 4096, const W: usize = 4096> {
    io: S,
    rbuf: [u8; R],
    /// Buffered, unread bytes are `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    /// Bytes handed out by the last read, consumed when the next operation starts.
    handed: usize,
    wbuf: [u8; W],
    wlen: usize,
    high_water: usize,
    timeouts: Timeouts,
    /// The peer closed its side (a read returned 0).
    eof: bool,
    /// Closed for good: by `close`, a timeout or an I/O error.
    closed: bool,
}

impl<S, const R: usize, const W: usize> fmt::Debug for BufStream<S, R, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufStream")
            .field("buffered", &(self.rend - self.rstart))
            .field("queued", &self.wlen)
            .field("eof", &self.eof)
            .field("closed", &self.closed)
            .finish()
    }
}

/// What a read step found in the buffer.
enum Step {
    /// The read is satisfied by the first `n` buffered bytes.
    Done(usize),
    /// Read more from the fd.
    More,
    /// Unsatisfiable (a limit): fail with this.
    Fail(StreamError),
}

/// Await `f` for at most `d` (no timer when `d` is `None`).
async fn within<F: Future>(d: Option<Duration>, f: F) -> Result<F::Output, ()> {
    match d {
        Some(d) => timeout(d, f).await.map_err(|_| ()),
        None => Ok(f.await),
    }
}

impl<S, const R: usize, const W: usize> BufStream<S, R, W>
where
    S: Read + Write + ErrorType<Error = IoError>,
{
    const VALID: () = assert!(R > 0 && W > 0, "BufStream<_, R, W>: R and W above 0");

    /// Wrap `io` with empty buffers, no timeouts, and a write high-water mark of `W`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::BufStream;
    /// let (a, _b) = UnixStream::pair()?;
    /// let s: BufStream<_, 1024, 512> = BufStream::new(a); // 1 KiB read, 512 B write buffer
    /// assert_eq!((s.buffered(), s.queued(), s.is_closed()), (0, 0, false));
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn new(io: S) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        BufStream {
            io,
            rbuf: [0; R],
            rstart: 0,
            rend: 0,
            handed: 0,
            wbuf: [0; W],
            wlen: 0,
            high_water: W,
            timeouts: Timeouts::default(),
            eof: false,
            closed: false,
        }
    }

    /// Set the deadlines (builder form of [`set_timeouts`](Self::set_timeouts)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::{BufStream, Timeouts};
    /// let (a, _b) = UnixStream::pair()?;
    /// let header_timeout = Timeouts { read: Some(Duration::from_secs(5)), ..Timeouts::default() };
    /// let s: BufStream<_> = BufStream::new(a).with_timeouts(header_timeout);
    /// assert_eq!(s.timeouts(), header_timeout);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn with_timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// Set the deadlines for the following operations.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::{BufStream, Timeouts};
    /// let (a, _b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// // A long keep-alive wait, then a short one per request.
    /// s.set_timeouts(Timeouts { idle: Some(Duration::from_secs(300)), ..s.timeouts() });
    /// assert_eq!(s.timeouts().idle, Some(Duration::from_secs(300)));
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// The deadlines in force.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::{BufStream, Timeouts};
    /// let (a, _b) = UnixStream::pair()?;
    /// let s: BufStream<_> = BufStream::new(a);
    /// assert_eq!(s.timeouts(), Timeouts::default()); // none: reads may wait for ever
    /// assert_eq!(s.timeouts().idle, None);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Set the write high-water mark (clamped to `1..=W`): [`write`](Self::write) flushes
    /// before queueing past it.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_, 64, 64> = BufStream::new(a);
    /// s.set_write_high_water(8);
    /// lp.run_sync(async {
    ///     s.write(b"1234").await?; // under the mark: only queued
    ///     assert_eq!(s.queued(), 4);
    ///     s.write(b"5678").await?; // reaches it: flushed first
    ///     Ok::<(), StreamError>(())
    /// }, None)??;
    /// assert!(s.queued() < 8);
    /// # let _ = b;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn set_write_high_water(&mut self, bytes: usize) {
        self.high_water = bytes.clamp(1, W);
    }

    /// The underlying stream (for `set_nodelay`, `peer_addr`, …). Reading or writing it
    /// directly bypasses the buffers.
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
    /// use ioloop::net::{UnixStream, TcpListener, TcpStream};
    /// use ioloop::stream::BufStream;
    /// # let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// # let (_acc, tcp) = lp.run_sync(ioloop::join(listener.accept(), TcpStream::connect(listener.local_addr()?)), None)?;
    /// let s: BufStream<TcpStream> = BufStream::new(tcp?);
    /// s.get_ref().set_nodelay(true)?; // socket options go to the stream underneath
    /// let _peer = s.get_ref().peer_addr()?;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably (see [`get_ref`](Self::get_ref)). What is written
    /// through it goes out ahead of the data still queued in the write buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// use embedded_io_async::Write;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::{BufStream, StreamError};
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// let got = lp.run_sync(
    ///     async {
    ///         s.write(b"queued").await?; // into the write buffer
    ///         s.get_mut().write_all(b"direct,").await?; // straight to the socket
    ///         s.flush().await?;
    ///         let mut buf = [0u8; 13];
    ///         let mut n = 0;
    ///         while n < buf.len() {
    ///             n += b.read(&mut buf[n..]).await?;
    ///         }
    ///         Ok::<_, StreamError>(buf)
    ///     },
    ///     None,
    /// )??;
    /// assert_eq!(&got, b"direct,queued");
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The underlying stream; buffered data is lost (unread bytes, and queued writes: flush
    /// first).
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
    /// use ioloop::stream::{BufStream, StreamError};
    /// let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     s.write(b"sent,").await?;
    ///     s.flush().await?;
    ///     s.write(b"lost").await // only queued
    /// }, None)??;
    /// let a = s.into_inner(); // back to the plain stream; "lost" is gone
    /// lp.run_sync(async move { a.write_all(b"raw").await }, None)??; // then `a` is dropped (closed)
    /// let mut buf = [0u8; 16];
    /// let mut n = 0;
    /// loop {
    ///     match lp.run_sync(b.read(&mut buf[n..]), None)?? {
    ///         0 => break, // `a` is closed
    ///         k => n += k,
    ///     }
    /// }
    /// assert_eq!(&buf[..n], b"sent,raw");
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Bytes buffered and not yet read (not counting the last read's result).
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::BufStream;
    /// let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_, 64, 64> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(b"a\nb\n").await?;
    ///     s.read_until(b"\n", 64).await?; // reads both lines from the fd, returns the first
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// assert_eq!(s.buffered(), 2); // "b\n" waits in the buffer
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn buffered(&self) -> usize {
        self.rend - self.rstart - self.handed
    }

    /// Bytes queued for writing.
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::BufStream;
    /// let (a, _b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(s.write(b"abc"), None)??;
    /// assert_eq!(s.queued(), 3); // until `flush`
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn queued(&self) -> usize {
        self.wlen
    }

    /// Whether the stream was closed (by [`close`](Self::close), a timeout or an I/O error)
    /// or the peer closed its side.
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::UnixStream;
    /// use ioloop::stream::BufStream;
    /// let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// drop(b);
    /// let _ = lp.run_sync(s.read_partial(8), None)?; // reads end-of-stream
    /// assert!(s.is_closed());
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed || self.eof
    }

    /// Close the stream: every later operation fails with [`StreamError::Closed`]; queued
    /// writes are discarded (flush first to send them). The fd itself closes when the
    /// `BufStream` is dropped.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// s.close();
    /// assert!(s.is_closed());
    /// let after = lp.run_sync(s.read_partial(8), None)?.map(|r| r.len());
    /// assert_eq!(after, Err(StreamError::Closed));
    /// # let _ = b;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.closed = true;
        self.wlen = 0;
    }

    fn fail(&mut self, e: StreamError) -> StreamError {
        if matches!(e, StreamError::TimedOut(_) | StreamError::Io(_)) {
            self.closed = true;
        }
        e
    }

    /// Consume what the last read handed out; make room at the end of the buffer.
    fn consume_handed(&mut self) {
        self.rstart += self.handed;
        self.handed = 0;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
    }

    /// One read from the fd into the buffer's free end. `Ok(false)`: end-of-stream, or the
    /// buffer is full.
    async fn fill_once(&mut self) -> Result<bool, StreamError> {
        if self.rend == R && self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rend == R {
            return Ok(false);
        }
        let n = self.io.read(&mut self.rbuf[self.rend..]).await?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.rend += n;
        Ok(true)
    }

    /// Read until `step` is satisfied by the buffered bytes, within the deadlines; returns
    /// how many of them to hand out.
    async fn read_op(
        &mut self,
        mut step: impl FnMut(&[u8], bool) -> Step,
    ) -> Result<usize, StreamError> {
        self.consume_handed();
        if self.closed {
            return Err(StreamError::Closed);
        }
        match step(&self.rbuf[self.rstart..self.rend], self.eof) {
            Step::Done(n) => return Ok(n),
            Step::Fail(e) => return Err(e),
            Step::More if self.eof => return Err(StreamError::Closed),
            Step::More => {}
        }
        let Timeouts { idle, read, .. } = self.timeouts;
        if self.rstart == self.rend && idle.is_some() {
            // Nothing buffered: the wait for the first byte is the idle wait.
            match within(idle, self.fill_once()).await {
                Err(()) => return Err(self.fail(StreamError::TimedOut(TimeoutKind::Idle))),
                Ok(Err(e)) => return Err(self.fail(e)),
                Ok(Ok(_)) => {}
            }
        }
        let result = within(read, async {
            loop {
                match step(&self.rbuf[self.rstart..self.rend], self.eof) {
                    Step::Done(n) => return Ok(n),
                    Step::Fail(e) => return Err(e),
                    Step::More if self.eof => return Err(StreamError::Closed),
                    Step::More => {}
                }
                if !self.fill_once().await? && !self.eof {
                    // Full buffer and `step` still wants more.
                    return Err(StreamError::BufferFull { capacity: R });
                }
            }
        })
        .await;
        match result {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(()) => Err(self.fail(StreamError::TimedOut(TimeoutKind::Read))),
        }
    }

    fn hand_out(&mut self, n: usize) -> &[u8] {
        self.handed = n;
        &self.rbuf[self.rstart..self.rstart + n]
    }

    /// Read up to and including `delim` (Tornado's `read_until(delimiter, max_bytes)`); the
    /// slice is valid until the next call. An empty `delim` matches at once (empty slice).
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_, 64, 64> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    ///     let line = s.read_until(b"\r\n", 64).await?;
    ///     assert_eq!(line, b"GET / HTTP/1.0\r\n");
    ///     // A header longer than `max` is refused; its bytes stay buffered.
    ///     assert_eq!(s.read_until(b"\r\n\r\n", 4).await, Err(StreamError::LimitExceeded { max: 4 }));
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::LimitExceeded`] when `min(max, R)` bytes are buffered without the
    /// delimiter (the stream stays open: answer, then close); [`StreamError::Closed`] when the
    /// peer closed first; [`StreamError::TimedOut`] (`Idle` or `Read`); [`StreamError::Io`].
    pub async fn read_until(&mut self, delim: &[u8], max: usize) -> Result<&[u8], StreamError> {
        let max = max.min(R);
        let n = self
            .read_op(|buf, _| match find(buf, delim) {
                Some(end) if end <= max => Step::Done(end),
                Some(_) => Step::Fail(StreamError::LimitExceeded { max }),
                None if buf.len() >= max => Step::Fail(StreamError::LimitExceeded { max }),
                None => Step::More,
            })
            .await?;
        Ok(self.hand_out(n))
    }

    /// Read exactly `n` bytes (Tornado's `read_bytes(n)`); the slice is valid until the next
    /// call.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_, 64, 64> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(&[0, 3, b'a', b'b', b'c']).await?;
    ///     let len = u16::from_be_bytes(s.read_exact(2).await?.try_into().unwrap()) as usize;
    ///     assert_eq!(s.read_exact(len).await?, b"abc");
    ///     assert_eq!(s.read_exact(65).await, Err(StreamError::BufferFull { capacity: 64 }));
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::BufferFull`] if `n > R` (nothing is read); [`StreamError::Closed`] when
    /// the peer closed before `n` bytes came; [`StreamError::TimedOut`]; [`StreamError::Io`].
    pub async fn read_exact(&mut self, n: usize) -> Result<&[u8], StreamError> {
        if n > R {
            return Err(StreamError::BufferFull { capacity: R });
        }
        let n = self
            .read_op(|buf, _| {
                if buf.len() >= n {
                    Step::Done(n)
                } else {
                    Step::More
                }
            })
            .await?;
        Ok(self.hand_out(n))
    }

    /// Fill all of `out` (Tornado's `read_into`), for bodies larger than the read buffer.
    /// The idle timeout applies to the first byte only; the read timeout to each wait for
    /// more.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_, 16, 16> = BufStream::new(a);
    /// let mut body = [0u8; 100]; // larger than the 16-byte buffer
    /// lp.run_sync(async {
    ///     b.write_all(&[9u8; 100]).await?;
    ///     s.read_exact_into(&mut body).await?;
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// assert_eq!(body, [9u8; 100]);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`read_exact`](Self::read_exact), without `BufferFull`. On error some of `out` may
    /// have been filled.
    pub async fn read_exact_into(&mut self, out: &mut [u8]) -> Result<(), StreamError> {
        let saved = self.timeouts;
        let mut got = 0;
        let mut result = Ok(());
        while got < out.len() {
            let want = out.len() - got;
            match self.read_partial(want).await {
                Ok(chunk) => {
                    out[got..got + chunk.len()].copy_from_slice(chunk);
                    got += chunk.len();
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            // Mid-body the peer is not idle: later waits are read waits.
            self.timeouts.idle = None;
        }
        self.timeouts = saved;
        result
    }

    /// Read what is buffered, or wait for at least one byte (Tornado's `read_bytes(max,
    /// partial=True)`): 1 to `max` bytes (`max == 0` returns an empty slice at once).
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(b"some bytes").await?;
    ///     let got = s.read_partial(4).await?; // what is there, at most 4
    ///     assert_eq!(got, b"some");
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::Closed`] when the peer closed and nothing is buffered;
    /// [`StreamError::TimedOut`]; [`StreamError::Io`].
    pub async fn read_partial(&mut self, max: usize) -> Result<&[u8], StreamError> {
        let n = self
            .read_op(|buf, _| {
                if max == 0 || !buf.is_empty() {
                    Step::Done(buf.len().min(max))
                } else {
                    Step::More
                }
            })
            .await?;
        Ok(self.hand_out(n))
    }

    /// Read everything until the peer closes (Tornado's `read_until_close`), at most `R`
    /// bytes.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(b"the whole answer").await?;
    ///     drop(b);
    ///     assert_eq!(s.read_until_close().await?, b"the whole answer");
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::BufferFull`] if more than `R` bytes come before the close (they stay
    /// buffered); [`StreamError::TimedOut`]; [`StreamError::Io`]; [`StreamError::Closed`] if
    /// the stream was closed by this side.
    pub async fn read_until_close(&mut self) -> Result<&[u8], StreamError> {
        let n = self
            .read_op(|buf, eof| {
                if eof {
                    Step::Done(buf.len())
                } else {
                    Step::More
                }
            })
            .await?;
        Ok(self.hand_out(n))
    }

    /// Wait until the peer closes its side or the connection fails (the close notification,
    /// Tornado's `set_close_callback`). Data that arrives meanwhile is buffered for later
    /// reads; the idle and read timeouts do not apply (bound the wait with
    /// [`timeout`] if needed).
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     b.write_all(b"late data").await?;
    ///     drop(b);
    ///     s.wait_closed().await?; // the peer hung up...
    ///     assert_eq!(s.read_partial(64).await?, b"late data"); // ...the data is still readable
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::BufferFull`] if the buffer fills before the close. A failed connection
    /// (`ECONNRESET`, …) counts as closed: `Ok(())`.
    pub async fn wait_closed(&mut self) -> Result<(), StreamError> {
        self.consume_handed();
        while !self.eof && !self.closed {
            match self.fill_once().await {
                Ok(true) => {}
                Ok(false) if self.eof => {}
                Ok(false) => return Err(StreamError::BufferFull { capacity: R }),
                Err(e) => {
                    self.fail(e);
                }
            }
        }
        Ok(())
    }

    /// Queue `data` for writing (Tornado's `write`). Returns at once while the write buffer
    /// stays under the high-water mark; past it, flushes first (back-pressure). Data longer
    /// than the buffer streams through it.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// lp.run_sync(async {
    ///     s.write(b"HTTP/1.0 200 OK\r\n").await?; // queued, nothing sent yet
    ///     s.write(b"\r\n").await?;
    ///     assert_eq!(s.queued(), 19);
    ///     s.flush().await?;
    ///     let mut buf = [0u8; 32];
    ///     let n = b.read(&mut buf).await?;
    ///     assert_eq!(&buf[..n], b"HTTP/1.0 200 OK\r\n\r\n");
    ///     Ok::<(), ioloop::Error>(())
    /// }, None)??;
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::Closed`] on a closed stream; a flush's errors
    /// ([`StreamError::TimedOut`] `Write`, [`StreamError::Io`] such as `EPIPE`). On error,
    /// part of `data` may have been queued or sent.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        while !data.is_empty() {
            if self.wlen >= self.high_water {
                self.flush().await?;
            }
            let room = (W - self.wlen).min(data.len());
            self.wbuf[self.wlen..self.wlen + room].copy_from_slice(&data[..room]);
            self.wlen += room;
            data = &data[room..];
        }
        if self.wlen >= self.high_water {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send everything queued, within the write timeout.
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
    /// # use ioloop::net::UnixStream;
    /// # use ioloop::stream::{BufStream, StreamError};
    /// # let (a, b) = UnixStream::pair()?;
    /// let mut s: BufStream<_> = BufStream::new(a);
    /// drop(b);
    /// let result = lp.run_sync(async {
    ///     s.write(b"nobody listens").await?;
    ///     s.flush().await // EPIPE: the peer is gone
    /// }, None)?;
    /// assert!(matches!(result, Err(StreamError::Io(_))));
    /// assert!(s.is_closed());
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`StreamError::Closed`] on a closed stream; [`StreamError::TimedOut`] `Write`;
    /// [`StreamError::Io`] (`EPIPE`, `ECONNRESET`, …). Both close the stream.
    pub async fn flush(&mut self) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        if self.wlen == 0 {
            return Ok(());
        }
        let result = within(self.timeouts.write, async {
            let mut sent = 0;
            while sent < self.wlen {
                match self.io.write(&self.wbuf[sent..self.wlen]).await {
                    Ok(0) => return Err(StreamError::Closed),
                    Ok(n) => sent += n,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {
                self.wlen = 0;
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e)),
            Err(()) => Err(self.fail(StreamError::TimedOut(TimeoutKind::Write))),
        }
    }
}

/// Where `delim` ends in `buf` (the index just past it).
fn find(buf: &[u8], delim: &[u8]) -> Option<usize> {
    if delim.is_empty() {
        return Some(0);
    }
    buf.windows(delim.len())
        .position(|w| w == delim)
        .map(|i| i + delim.len())
}

impl<S, const R: usize, const W: usize> ErrorType for BufStream<S, R, W> {
    type Error = StreamError;
}

impl<S, const R: usize, const W: usize> Read for BufStream<S, R, W>
where
    S: Read + Write + ErrorType<Error = IoError>,
{
    /// Copy from the buffer (reading the fd when it is empty); `Ok(0)` at end-of-stream.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let max = buf.len();
        let n = self
            .read_op(|b, eof| {
                if max == 0 || !b.is_empty() || eof {
                    Step::Done(b.len().min(max))
                } else {
                    Step::More
                }
            })
            .await?;
        buf[..n].copy_from_slice(&self.rbuf[self.rstart..self.rstart + n]);
        self.rstart += n;
        Ok(n)
    }
}

impl<S, const R: usize, const W: usize> embedded_io_async::BufRead for BufStream<S, R, W>
where
    S: Read + Write + ErrorType<Error = IoError>,
{
    /// The buffered bytes (reading the fd when none are); empty at end-of-stream.
    async fn fill_buf(&mut self) -> Result<&[u8], StreamError> {
        let n = self
            .read_op(|buf, eof| {
                if !buf.is_empty() || eof {
                    Step::Done(buf.len())
                } else {
                    Step::More
                }
            })
            .await?;
        Ok(&self.rbuf[self.rstart..self.rstart + n])
    }

    fn consume(&mut self, amt: usize) {
        self.rstart = (self.rstart + amt).min(self.rend);
    }
}

impl<S, const R: usize, const W: usize> Write for BufStream<S, R, W>
where
    S: Read + Write + ErrorType<Error = IoError>,
{
    /// Queue all of `buf` (see [`BufStream::write`]).
    async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        BufStream::write(self, buf).await?;
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), StreamError> {
        BufStream::flush(self).await
    }
}
