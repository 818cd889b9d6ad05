//! UDP: [`UdpSocket`].

use super::*;

/// A UDP socket on the loop: [`bind`](Self::bind) it, then [`send_to`](Self::send_to) and
/// [`recv_from`](Self::recv_from) datagrams inside a task or `run_sync`. Each datagram is sent
/// or received whole (a receive buffer that is too small truncates it).
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
/// use ioloop::net::UdpSocket;
///
/// let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
/// let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
/// let b_addr = b.local_addr()?;
/// let (got, from) = lp.run_sync(
///     async {
///         a.send_to(b"ping", b_addr).await?;
///         let mut buf = [0u8; 16];
///         let (n, from) = b.recv_from(&mut buf).await?;
///         Ok::<_, ioloop::Error>((buf[..n].to_vec(), from))
///     },
///     None,
/// )??;
/// assert_eq!(got, b"ping");
/// assert_eq!(from, a.local_addr()?);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Os`] with the kernel's errno (`EADDRINUSE` from `bind`, `EMSGSIZE` from a
/// datagram too large, `ECONNREFUSED` reported by a later call after an ICMP error), or the
/// registration's errors ([`Error::NotAttached`], [`Error::Full`]).
#[derive(Debug)]
pub struct UdpSocket {
    pub(super) io: Io,
}

impl UdpSocket {
    /// A UDP socket bound to `addr` (port 0: the kernel picks one). It can be made before
    /// or while the loop runs; it registers with the loop at its first send or receive inside a
    /// task or `run_sync`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UdpSocket;
    /// let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// assert_ne!(sock.local_addr()?.port(), 0);
    /// // The address is now taken: a second bind to it is refused.
    /// let taken = UdpSocket::bind(sock.local_addr()?).unwrap_err();
    /// assert!(matches!(taken, ioloop::Error::Os { errno } if errno.raw() == libc::EADDRINUSE));
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`]: `EADDRINUSE`, `EACCES`, `EMFILE`, …; nothing is left open.
    pub fn bind(addr: SocketAddr) -> Result<UdpSocket, Error> {
        let fd = new_socket(family(&addr), SocketType::DGRAM)?;
        rustix::net::bind(&fd, &addr).map_err(os)?;
        Ok(UdpSocket { io: Io::new(fd) })
    }

    /// Send `buf` as one datagram to `addr`, waiting for room in the send buffer if needed.
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
    /// use ioloop::net::UdpSocket;
    /// let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let to = sock.local_addr()?; // to ourselves
    /// assert_eq!(lp.run_sync(sock.send_to(b"hi", to), None)??, 2);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<4, 1024> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::UdpSocket;
    /// let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// lp.run_sync(a.send_to(b"0123456789", b.local_addr()?), None)??;
    /// let mut small = [0u8; 4];
    /// let (n, from) = lp.run_sync(b.recv_from(&mut small), None)??;
    /// assert_eq!((n, &small[..]), (4, &b"0123"[..])); // truncated: the rest is lost
    /// assert_eq!(from, a.local_addr()?);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use ioloop::net::UdpSocket;
    /// let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    /// assert_ne!(sock.local_addr()?.port(), 0);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Os`] from `getsockname`.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        inet_addr(Some(rustix::net::getsockname(&self.io.fd).map_err(os)?))
    }
}
