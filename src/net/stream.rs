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
