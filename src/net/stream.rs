//! The one stream implementation behind every socket and pipe type: an owned fd and its
//! lazily made [`IoRegistration`], with "try the call; on `EAGAIN` wait; try again".

use super::*;

/// An owned fd and its lazily made registration. Field order matters: the registration is
/// dropped (removed from the loop) before the fd is closed.
pub(super) struct Io {
    pub(super) reg: OnceCell<IoRegistration>,
    pub(super) fd: OwnedFd,
}

impl Io {
    pub(super) fn new(fd: OwnedFd) -> Io {
        Io {
            reg: OnceCell::new(),
            fd,
        }
    }

    /// The registration, made on first use with the loop polling the current task.
    pub(super) fn registration(&self) -> Result<&IoRegistration, Error> {
        if let Some(reg) = self.reg.get() {
            return Ok(reg);
        }
        let reg = IoRegistration::new(&self.fd)?;
        Ok(self.reg.get_or_init(|| reg))
    }

    /// Run the non-blocking `op` until it does not fail with `EAGAIN`, waiting for `dir`
    /// readiness in between.
    pub(super) async fn io<T>(
        &self,
        dir: Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
    ) -> Result<T, Error> {
        let reg = self.registration()?;
        let fd = self.fd.as_fd();
        reg.io(dir, || op(fd).map_err(errno)).await
    }

    pub(super) async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::READ, |fd| rustix::io::read(fd, &mut *buf))
            .await
    }

    /// `send` without `SIGPIPE`: a write to a closed peer fails with `EPIPE`.
    pub(super) async fn send(&self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::WRITE, |fd| rustix::net::send(fd, buf, sys::SEND))
            .await
    }

    /// `send` until all of `buf` is gone (stream sockets' `write_all`).
    pub(super) async fn send_all(&self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.send(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    pub(super) async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io(Interest::WRITE, |fd| rustix::io::write(fd, buf))
            .await
    }

    /// Connect a fresh non-blocking socket: `EINPROGRESS`, wait until writable, then ask
    /// `SO_ERROR` how it went.
    pub(super) async fn connect(
        &self,
        addr: &impl rustix::net::addr::SocketAddrArg,
    ) -> Result<(), Error> {
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

    pub(super) fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
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

// Adopting fds made outside the loop (systemd socket activation, std sockets).

impl Io {
    /// Take over `fd`: non-blocking (the loop must never block in a system call) and
    /// close-on-exec (as every fd this module makes).
    pub(super) fn adopt(fd: OwnedFd) -> Result<Io, Error> {
        rustix::io::ioctl_fionbio(&fd, true).map_err(os)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(os)?;
        Ok(Io::new(fd))
    }

    /// Adopt for an infallible `From<OwnedFd>`: the flags are set where the kernel lets us
    /// (it refuses only for an fd that is not open, on which every later call fails with
    /// `EBADF` rather than block).
    pub(super) fn adopt_lossy(fd: OwnedFd) -> Io {
        let _ = rustix::io::ioctl_fionbio(&fd, true);
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        Io::new(fd)
    }

    /// Give the fd back: the registration (if any) is removed from the loop first.
    pub(super) fn into_fd(self) -> OwnedFd {
        let Io { reg, fd } = self;
        drop(reg);
        fd
    }
}

/// The byte-stream methods of [`TcpStream`](crate::net::TcpStream) and
/// [`UnixStream`](crate::net::UnixStream), written once over [`Io`]. `$setup` is the hidden
/// doc-test setup: a loop `lp` with a remote and an executor, and a connected `client` and
/// `server` of the type.
macro_rules! stream_methods {
    ($ty:ident, $setup:literal) => {
        $crate::net::stream::stream_methods!(@impl $ty, concat!(
            " # use ioloop::{EventLoop, Executor, Remote};\n",
            " # static REMOTE: Remote<EventLoop, 64> = Remote::new();\n",
            " # static EXEC: Executor<4, 1024> = Executor::new();\n",
            " # let mut lp: EventLoop = EventLoop::new()?;\n",
            " # lp.attach_remote(&REMOTE)?;\n",
            " # lp.attach_executor(&EXEC)?;\n",
            $setup
        ));
    };
    (@impl $ty:ident, $setup:expr) => {
        impl $ty {
        #[doc = " Read what is there, up to `buf.len()` bytes, waiting until something is. `Ok(0)`: the"]
        #[doc = " peer closed its side (or `buf` is empty)."]
        #[doc = ""]
        #[doc = " # Examples"]
        #[doc = ""]
        #[doc = " ```"]
        #[doc = $setup]
        #[doc = " lp.run_sync(client.write_all(b\"hi\"), None)??;"]
        #[doc = " drop(client);"]
        #[doc = " let mut buf = [0u8; 8];"]
        #[doc = " let n = lp.run_sync(server.read(&mut buf), None)??;"]
        #[doc = " assert_eq!(&buf[..n], b\"hi\");"]
        #[doc = " assert_eq!(lp.run_sync(server.read(&mut buf), None)??, 0); // the peer closed"]
        #[doc = " # Ok::<(), ioloop::Error>(())"]
        #[doc = " ```"]
        #[doc = ""]
        #[doc = " # Errors"]
        #[doc = " [`Error::Os`]: `ECONNRESET`, …; the registration's errors (see the"]
        #[doc = " [module docs](crate::net))."]
        pub async fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
            self.io.read(buf).await
        }

        #[doc = " Write some of `buf`, waiting until the socket takes at least one byte; returns how many"]
        #[doc = " it took."]
        #[doc = ""]
        #[doc = " # Examples"]
        #[doc = ""]
        #[doc = " ```"]
        #[doc = $setup]
        #[doc = " let n = lp.run_sync(client.write(b\"hello\"), None)??;"]
        #[doc = " assert_eq!(n, 5); // a small write is taken whole"]
        #[doc = " # let _ = server;"]
        #[doc = " # Ok::<(), ioloop::Error>(())"]
        #[doc = " ```"]
        #[doc = ""]
        #[doc = " # Errors"]
        #[doc = " [`Error::Os`]: `EPIPE` (the peer closed; no `SIGPIPE` is raised), `ECONNRESET`, …;"]
        #[doc = " the registration's errors."]
        pub async fn write(&self, buf: &[u8]) -> Result<usize, Error> {
            self.io.send(buf).await
        }

        #[doc = " Write all of `buf`, waiting for room as needed. If it fails, some bytes may have been"]
        #[doc = " sent."]
        #[doc = ""]
        #[doc = " # Examples"]
        #[doc = ""]
        #[doc = " ```"]
        #[doc = $setup]
        #[doc = " let big = vec![0x55u8; 256 * 1024]; // more than a socket buffer: waits for the reader"]
        #[doc = " let reader = async {"]
        #[doc = "     let mut got = 0;"]
        #[doc = "     let mut buf = [0u8; 4096];"]
        #[doc = "     while got < big.len() {"]
        #[doc = "         got += server.read(&mut buf).await?;"]
        #[doc = "     }"]
        #[doc = "     Ok::<_, ioloop::Error>(got)"]
        #[doc = " };"]
        #[doc = " let (sent, got) = lp.run_sync(ioloop::join(client.write_all(&big), reader), None)?;"]
        #[doc = " sent?;"]
        #[doc = " assert_eq!(got?, big.len());"]
        #[doc = " # Ok::<(), ioloop::Error>(())"]
        #[doc = " ```"]
        #[doc = ""]
        #[doc = " # Errors"]
        #[doc = " As [`write`](Self::write)."]
        pub async fn write_all(&self, buf: &[u8]) -> Result<(), Error> {
            self.io.send_all(buf).await
        }

        #[doc = " Shut down one or both directions (`shutdown(2)`): `Shutdown::Write` sends a FIN, so"]
        #[doc = " the peer reads end-of-stream while this side can still read its answer."]
        #[doc = ""]
        #[doc = " # Examples"]
        #[doc = ""]
        #[doc = " ```"]
        #[doc = $setup]
        #[doc = " use std::net::Shutdown;"]
        #[doc = " client.shutdown(Shutdown::Write)?; // FIN: the server reads end-of-stream..."]
        #[doc = " let mut buf = [0u8; 8];"]
        #[doc = " assert_eq!(lp.run_sync(server.read(&mut buf), None)??, 0);"]
        #[doc = " lp.run_sync(server.write_all(b\"bye\"), None)??; // ...and can still answer"]
        #[doc = " let n = lp.run_sync(client.read(&mut buf), None)??;"]
        #[doc = " assert_eq!(&buf[..n], b\"bye\");"]
        #[doc = " # Ok::<(), ioloop::Error>(())"]
        #[doc = " ```"]
        #[doc = ""]
        #[doc = " # Errors"]
        #[doc = " [`Error::Os`]: `ENOTCONN`, …."]
        pub fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
            self.io.shutdown(how)
        }
        }
    };
}
pub(super) use stream_methods;
