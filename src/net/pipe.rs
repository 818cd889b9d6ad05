//! Pipes: [`pipe`], [`PipeReader`] and [`PipeWriter`].

use super::*;

/// The read end of a [`pipe`]: `async` [`read`](Self::read) inside a task or `run_sync`;
/// `Ok(0)` once every writer is gone.
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
/// let (reader, writer) = ioloop::net::pipe()?;
/// drop(writer); // no writer left: the reader sees end-of-stream
/// let mut buf = [0u8; 8];
/// assert_eq!(lp.run_sync(reader.read(&mut buf), None)??, 0);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// [`read`](Self::read) fails with [`Error::Os`] or the registration's errors
/// ([`Error::NotAttached`] outside a task, [`Error::Full`]).
#[derive(Debug)]
pub struct PipeReader {
    pub(super) io: Io,
}

/// The write end of a [`pipe`]: `async` [`write`](Self::write) and
/// [`write_all`](Self::write_all) inside a task or `run_sync`.
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
/// let (reader, writer) = ioloop::net::pipe()?;
/// drop(reader);
/// // No reader left: EPIPE (Rust programs ignore SIGPIPE by default).
/// let err = lp.run_sync(writer.write(b"x"), None)?.unwrap_err();
/// assert!(matches!(err, ioloop::Error::Os { .. }));
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Os`]: `EPIPE` when the reader is gone; the registration's errors
/// ([`Error::NotAttached`], [`Error::Full`]).
#[derive(Debug)]
pub struct PipeWriter {
    pub(super) io: Io,
}

/// A pipe (`pipe2(O_NONBLOCK | O_CLOEXEC)`): bytes written to the [`PipeWriter`] come out of
/// the [`PipeReader`]; once every writer is dropped the reader reads end-of-stream (`Ok(0)`).
///
/// A pipe is the simplest way to feed a task from a child process or from code that writes to
/// an fd.
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
/// let (reader, writer) = ioloop::net::pipe()?;
/// let got = lp.run_sync(
///     async move {
///         writer.write_all(b"line\n").await?;
///         drop(writer); // end-of-stream for the reader
///         let mut got = Vec::new();
///         let mut buf = [0u8; 16];
///         while let n @ 1.. = reader.read(&mut buf).await? {
///             got.extend_from_slice(&buf[..n]);
///         }
///         Ok::<_, ioloop::Error>(got)
///     },
///     None,
/// )??;
/// assert_eq!(got, b"line\n");
/// # Ok::<(), ioloop::Error>(())
/// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # let (reader, writer) = ioloop::net::pipe()?;
    /// drop(writer);
    /// let mut buf = [0u8; 4];
    /// assert_eq!(lp.run_sync(reader.read(&mut buf), None)??, 0); // no writer left: end of stream
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// # let (reader, writer) = ioloop::net::pipe()?;
    /// let n = lp.run_sync(writer.write(b"abc"), None)??;
    /// assert_eq!(n, 3);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`]: `EPIPE` when the reader is gone (the process also gets `SIGPIPE`,
    /// which Rust programs ignore by default); the registration's errors.
    pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        self.io.write(buf).await
    }

    /// Write all of `buf`, waiting for room as needed.
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
    /// # let (reader, writer) = ioloop::net::pipe()?;
    /// let data = vec![7u8; 200_000]; // more than a pipe holds: waits for the reader
    /// let read_all = async {
    ///     let (mut got, mut buf) = (0, [0u8; 4096]);
    ///     while got < data.len() {
    ///         got += reader.read(&mut buf).await?;
    ///     }
    ///     Ok::<_, ioloop::Error>(got)
    /// };
    /// let (sent, got) = lp.run_sync(ioloop::join(writer.write_all(&data), read_all), None)?;
    /// sent?;
    /// assert_eq!(got?, data.len());
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
