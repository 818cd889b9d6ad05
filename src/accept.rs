//! Accepting connections on a listening socket with a callback (Tornado's
//! `netutil.add_accept_handler`), with a back-off when out of fds and an optional connection
//! limit. In async code, use [`TcpListener::accept`](crate::net::TcpListener::accept) or a
//! [`Server`](crate::server::Server) instead.
//!
//! [`add_accept_handler`] watches a listening socket for READ and, on each readiness, accepts
//! in a loop until the kernel says `EAGAIN`, handing every connection to your callback as an
//! [`OwnedFd`] that is already non-blocking and close-on-exec (`accept4` with `SOCK_NONBLOCK |
//! SOCK_CLOEXEC`, so no `exec` in another thread can inherit it), with the peer's address.
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use ioloop::accept::add_accept_handler;
//! use ioloop::{EventLoop, Interest};
//!
//! let mut lp: EventLoop = EventLoop::new()?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let handle = add_accept_handler(&mut lp, listener, |lp, conn, peer| {
//!     println!("connection from {peer:?}");
//!     // Give it to the loop; when the handler table is full, dropping `conn` closes it.
//!     if let Err(refused) = lp.add_owned_handler(conn, Interest::READ, |_, _, _| Ok(())) {
//!         eprintln!("refused: {}", refused.error);
//!     }
//!     lp.stop(); // one connection is enough for this example
//! })?;
//! let _client = TcpStream::connect(addr)?; // completes in the listen backlog
//! lp.run()?;
//! assert!(handle.is_active(&lp));
//! assert!(handle.remove(&mut lp)); // closes the (owned) listener
//! # Ok::<(), ioloop::Error>(())
//! ```
//!
//! # Bounded work per readiness
//!
//! At most [`ACCEPTS_PER_EVENT`] (128, Tornado's `_DEFAULT_BACKLOG`) connections are accepted
//! per readiness, so one busy listener cannot starve the rest of the loop; the listener is
//! registered level-triggered, so what is left is accepted in the next iteration.
//!
//! # Out of fds: back off, never spin
//!
//! When `accept` fails with `EMFILE` or `ENFILE` (or `ENOBUFS` / `ENOMEM`), the pending
//! connection stays in the kernel's queue and the listener stays readable: a level-triggered
//! loop that simply returned would be called again at once, forever, at 100 % CPU. Instead the
//! handler stops watching READ on the listener (`update_handler` to an empty interest) and
//! schedules a timer that re-arms it after [`BACKOFF_MIN`] (100 ms), doubling on each failure
//! in a row up to [`BACKOFF_MAX`] (1 s), and back to the minimum after the next successful
//! accept. Each back-off is reported to the loop's error hook as
//! `Failure::Handler { fd: listener, error: HandlerError::Os(Errno(EMFILE)) }` (and counted in
//! `counters().handler_errors`), so a program sees that it is shedding load. Any other
//! unexpected `accept` error (`EBADF`, `EINVAL`, `ENOTSOCK`, …) backs off the same way.
//!
//! Per-connection failures (`ECONNABORTED`, `EINTR`, `EPROTO`, `EPERM` and the network errors
//! Linux passes on from the new socket, see `accept(2)`) skip that connection and go on.
//!
//! # Back-pressure: a connection limit instead of accept-then-drop
//!
//! [`add_accept_handler_limited`] takes an [`AcceptLimit`] (a `static`): before each `accept`
//! the handler checks that the limit has room and that the loop's handler table has a free
//! slot for the connection. If not, it **stops accepting**: it drops READ from the listener's
//! interest (`update_handler` to an empty interest), so new connections wait in the kernel's
//! listen backlog instead of being accepted and dropped. [`AcceptLimit::release`], called when
//! a connection ends, re-arms the listener; a pause caused by a full handler table (room that
//! no release of ours frees) re-arms after [`BACKOFF_MIN`] and looks again. Pauses, resumes,
//! accepted connections, the current count and its high-water mark are counted
//! ([`AcceptLimit::stats`]); with the `log` feature the first pause is logged (`warn`), later
//! ones at `debug`: never one line per connection.
//!
//! A listening socket reports ERROR or HUP without READ only when it can no longer accept (it
//! was shut down, or never listened); both are always watched and level-triggered, so the
//! handler removes itself (closing an owned listener) and reports
//! `HandlerError::Other(LISTENER_FAILED)` rather than be called every iteration.

use core::time::Duration;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use rustix::net::SocketFlags;

use loop_core::{
    Errno, Error, EventLoop, HandlerError, HandlerId, HandlerResult, Interest, Poller, RawFd,
    Readiness, Refused,
};

/// How many connections one readiness of the listener accepts at most (Tornado's
/// `_DEFAULT_BACKLOG`: "to prevent starvation of other tasks").
pub const ACCEPTS_PER_EVENT: usize = 128;

/// The first back-off after `EMFILE` / `ENFILE`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest back-off: the delay doubles from [`BACKOFF_MIN`] up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the handler reports when the listener failed (ERROR or HUP without READ) and it
/// removed itself.
pub const LISTENER_FAILED: &str = "listening socket failed (ERROR/HUP); accept handler removed";

/// What the handler reports when it must back off but the loop's timer table is full: the
/// listener then stays armed, and accept is retried in the next iteration.
pub const BACKOFF_NO_TIMER: &str = "accept back-off needs a free timer slot; retrying at once";

/// A listening socket handed to [`add_accept_handler`]: owned (the loop closes it when the
/// handler is removed or the loop is dropped) or borrowed for `'static` (the loop never
/// closes it). `From` conversions make either: from a `std` listener or an [`OwnedFd`]
/// (owned), or from a `&'static` reference to anything [`AsFd`] (borrowed).
///
/// A borrowed listener must be `'static` because the handler goes on calling `accept` on it
/// for as long as it is registered, which no shorter borrow can promise: a listener dropped
/// while its handler is registered would leave the handler accepting on whatever file reuses
/// the number. A `&'static` listener cannot be closed by safe code: a `static` or
/// [`OnceLock`](std::sync::OnceLock), or a [`Box::leak`]ed listener (what a listener that
/// lives as long as the program is). For an fd kept open by other means, there is the
/// `unsafe` [`Listener::borrow_raw`].
///
/// # Examples
///
/// ```
/// use std::net::TcpListener;
/// use ioloop::accept::Listener;
///
/// let owned = Listener::from(TcpListener::bind("127.0.0.1:0")?); // the loop will close it
/// assert!(owned.into_owned().is_some());
/// let forever: &'static TcpListener = Box::leak(Box::new(TcpListener::bind("127.0.0.1:0")?));
/// let borrowed = Listener::from(forever); // stays ours, never closed by the loop
/// assert!(borrowed.into_owned().is_none());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// A listener borrowed for less than `'static` is refused by the compiler:
///
/// ```compile_fail,E0597
/// use ioloop::accept::Listener;
///
/// let local = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let borrowed = Listener::from(&local); // error: `local` does not live long enough
/// drop(borrowed);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Listener {
    /// The loop takes the fd and closes it on removal.
    Owned(OwnedFd),
    /// An fd open for the rest of the program (or, through [`Listener::borrow_raw`], for as
    /// long as its caller promised); the loop never closes it.
    Borrowed(BorrowedFd<'static>),
}

impl Listener {
    /// A borrowed listener from a raw fd number, for an fd that is not `'static` in Rust's
    /// eyes but that the caller keeps open (one inherited from a service manager and closed
    /// by hand, say). Prefer an owned listener, or `Listener::from(&'static listener)`.
    ///
    /// # Safety
    ///
    /// `fd` must be an open file descriptor (not `-1`), and it must stay open — not closed,
    /// not replaced with `dup2` — until the accept handler given this `Listener` is removed
    /// ([`AcceptHandle::remove`], [`EventLoop::remove_handler`], the handler's own removal
    /// after the listener failed, or the loop dropped), or, if it is never registered (a
    /// refusal hands it back), until the `Listener` is dropped. The handler calls `accept`
    /// and `ioctl` on it until then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use ioloop::accept::{add_accept_handler, Listener};
    /// use ioloop::EventLoop;
    ///
    /// let mut lp: EventLoop = EventLoop::new()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// // SAFETY: `listener` outlives the handler: it is removed below, before the drop.
    /// let borrowed = unsafe { Listener::borrow_raw(listener.as_raw_fd()) };
    /// let handle = add_accept_handler(&mut lp, borrowed, |_, _conn, _| {})?;
    /// assert!(handle.remove(&mut lp)); // the listener stays open...
    /// drop(listener); // ...until we close it
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub unsafe fn borrow_raw(fd: RawFd) -> Listener {
        // SAFETY: the caller promises `fd` is open (and not -1) for as long as this
        // `Listener` or the handler it is given uses it: the only uses of the `'static`.
        Listener::Borrowed(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// The fd number.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use ioloop::accept::Listener;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let raw = l.as_raw_fd();
    /// assert_eq!(Listener::from(l).raw(), raw);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn raw(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }

    /// The fd, if it was handed over owned (so a refused owned listener is not lost).
    ///
    /// ```
    /// use ioloop::accept::{add_accept_handler, Listener};
    /// use ioloop::EventLoop;
    /// let mut lp: EventLoop<1> = EventLoop::new()?;
    /// let _first = add_accept_handler(&mut lp, std::net::TcpListener::bind("127.0.0.1:0")?, |_, _, _| {})?;
    /// // The table (1 handler) is full: the owned listener comes back, not closed.
    /// let refused = add_accept_handler(&mut lp, std::net::TcpListener::bind("127.0.0.1:0")?, |_, _, _| {})
    ///     .unwrap_err();
    /// let (listener, _callback) = refused.value;
    /// let fd = listener.into_owned().expect("handed over owned, handed back owned");
    /// let back = std::net::TcpListener::from(fd);
    /// # let _ = back;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_owned(self) -> Option<OwnedFd> {
        match self {
            Listener::Owned(fd) => Some(fd),
            Listener::Borrowed(_) => None,
        }
    }
}

impl From<OwnedFd> for Listener {
    fn from(fd: OwnedFd) -> Listener {
        Listener::Owned(fd)
    }
}

impl From<std::net::TcpListener> for Listener {
    fn from(l: std::net::TcpListener) -> Listener {
        Listener::Owned(l.into())
    }
}

impl From<std::os::unix::net::UnixListener> for Listener {
    fn from(l: std::os::unix::net::UnixListener) -> Listener {
        Listener::Owned(l.into())
    }
}

/// Borrowed for the rest of the program: a `static`, a [`OnceLock`](std::sync::OnceLock)'s
/// value or a [`Box::leak`]ed listener. See [`Listener`] for why not a shorter borrow.
impl<T: AsFd + ?Sized> From<&'static T> for Listener {
    fn from(l: &'static T) -> Listener {
        Listener::Borrowed(l.as_fd())
    }
}

/// The listener's fd, owned or borrowed.
impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Owned(fd) => fd.as_fd(),
            Listener::Borrowed(fd) => *fd,
        }
    }
}

/// The handle [`add_accept_handler`] returns, to stop accepting later: [`remove`](Self::remove)
/// unregisters the listener (closing it if the loop owns it), [`is_active`](Self::is_active)
/// tells whether it is still registered. It names the listener's fd and its registration;
/// `Copy`, and it owns nothing (dropping it leaves the handler in place).
///
/// # Examples
///
/// ```
/// use ioloop::accept::add_accept_handler;
/// use ioloop::EventLoop;
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let handle = add_accept_handler(&mut lp, listener, |_, _conn, _| {})?;
/// assert!(handle.is_active(&lp));
/// assert!(handle.remove(&mut lp));
/// assert!(!handle.is_active(&lp));
/// assert!(!handle.remove(&mut lp)); // removing twice does nothing
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptHandle {
    fd: RawFd,
    id: HandlerId,
}

impl AcceptHandle {
    /// The listener's fd.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use ioloop::accept::add_accept_handler;
    /// let mut lp: ioloop::EventLoop = ioloop::EventLoop::new()?;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let raw = l.as_raw_fd();
    /// let handle = add_accept_handler(&mut lp, l, |_, _, _| {})?;
    /// assert_eq!(handle.fd(), raw);
    /// assert_eq!(lp.handler_id(handle.fd()), Some(handle.id()));
    /// handle.remove(&mut lp);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fd(self) -> RawFd {
        self.fd
    }

    /// The listener's handler registration (what [`EventLoop::handler_id`] returns for its
    /// fd while this accept handler is registered).
    ///
    /// ```
    /// use ioloop::accept::add_accept_handler;
    /// let mut lp: ioloop::EventLoop = ioloop::EventLoop::new()?;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let handle = add_accept_handler(&mut lp, l, |_, _, _| {})?;
    /// assert_eq!(lp.handler_id(handle.fd()), Some(handle.id()));
    /// handle.remove(&mut lp);
    /// assert_eq!(lp.handler_id(handle.fd()), None); // removed: the id names nothing any more
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(self) -> HandlerId {
        self.id
    }

    /// Whether this accept handler is still registered in `lp` (it is not once removed, or
    /// after its listener failed).
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use ioloop::accept::add_accept_handler;
    /// use ioloop::Interest;
    /// let mut lp: ioloop::EventLoop = ioloop::EventLoop::new()?;
    /// // Borrowed for 'static (the loop never closes it), to register its fd again below.
    /// let l: &'static TcpListener = Box::leak(Box::new(TcpListener::bind("127.0.0.1:0")?));
    /// let handle = add_accept_handler(&mut lp, l, |_, _, _| {})?;
    /// assert!(handle.is_active(&lp));
    /// // Another handler on the same fd number is not this accept handler.
    /// lp.remove_handler(l);
    /// lp.add_handler(l, Interest::READ, |_, _, _| Ok(()))?;
    /// assert!(!handle.is_active(&lp));
    /// assert!(!handle.remove(&mut lp)); // and `remove` leaves it alone
    /// lp.remove_handler(l);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_active<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        self,
        lp: &EventLoop<P, H, T, Q>,
    ) -> bool {
        lp.handler_id(self.fd) == Some(self.id)
    }

    /// Stop accepting (Tornado's returned `remove_handler()`): the listener's handler is
    /// removed, closing an owned listener. Called from the accept callback, it also ends the
    /// current batch: no further connection is accepted. Returns whether it was registered; a
    /// handle whose fd number now belongs to another handler removes nothing. A back-off timer
    /// still pending finds the handler gone and does nothing.
    ///
    /// # Examples
    ///
    /// Stop after the first connection, from inside the callback:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::net::{TcpListener, TcpStream};
    /// use std::rc::Rc;
    /// use ioloop::accept::{add_accept_handler, AcceptHandle};
    /// use ioloop::EventLoop;
    ///
    /// let mut lp: EventLoop = EventLoop::new()?;
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let me: Rc<Cell<Option<AcceptHandle>>> = Rc::default();
    /// let me2 = me.clone();
    /// let handle = add_accept_handler(&mut lp, listener, move |lp, _conn, _peer| {
    ///     if let Some(h) = me2.get() {
    ///         assert!(h.remove(lp)); // no further connection is accepted; the listener closes
    ///     }
    ///     lp.stop();
    /// })?;
    /// me.set(Some(handle));
    /// let _a = TcpStream::connect(addr)?;
    /// lp.run()?;
    /// assert!(!handle.is_active(&lp));
    /// assert_eq!(lp.handler_count(), 0); // the owned listener is closed
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        self,
        lp: &mut EventLoop<P, H, T, Q>,
    ) -> bool {
        self.is_active(lp) && lp.remove_handler(self.fd)
    }
}

/// Call `callback(loop, connection, peer)` for every connection accepted on `listener`
/// (Tornado's `netutil.add_accept_handler`).
///
/// `connection` is non-blocking and close-on-exec; dropping it closes it. `peer` is the
/// remote address for TCP (IPv4 or IPv6) and `None` for other families (Unix sockets). The
/// callback runs synchronously inside the listener's handler; it may add handlers, schedule
/// timers, stop the loop or [`remove`](AcceptHandle::remove) this accept handler (which ends
/// the batch). The listener is switched to non-blocking mode: `accept` must never block the
/// loop (for a borrowed listener this changes the caller's file description too).
///
/// The callback is stored inline with the handler's state, so it may capture up to
/// [`INLINE_CAPTURE_BYTES`](loop_core::INLINE_CAPTURE_BYTES) − 8 bytes (a larger one fails
/// to compile). Nothing is allocated, now or per connection. See the [module
/// docs](self) for the per-readiness bound, the `EMFILE` back-off (it needs one free timer
/// slot while it backs off) and what is reported to the error hook.
///
/// # Examples
///
/// A Unix socket the program keeps for its whole life, borrowed from a `static`:
///
/// ```
/// use std::os::unix::net::{UnixListener, UnixStream};
/// use std::sync::OnceLock;
/// use ioloop::accept::add_accept_handler;
/// use ioloop::EventLoop;
///
/// static LISTENER: OnceLock<UnixListener> = OnceLock::new();
/// let mut lp: EventLoop = EventLoop::new()?;
/// let path = std::env::temp_dir().join(format!("ioloop-doc-aah-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// LISTENER.set(UnixListener::bind(&path)?).expect("set once");
/// let listener: &'static UnixListener = LISTENER.get().expect("just set");
/// // Borrowed for 'static: it stays ours and stays open after the handler is removed.
/// let handle = add_accept_handler(&mut lp, listener, |lp, conn, peer| {
///     assert!(peer.is_none()); // no address for Unix sockets
///     drop(conn);
///     lp.stop();
/// })?;
/// let _client = UnixStream::connect(&path)?;
/// lp.run()?;
/// assert!(handle.remove(&mut lp));
/// let _another = UnixStream::connect(&path)?; // still listening: the loop never closes it
/// let _ = std::fs::remove_file(&path);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// The listener and the callback come back inside [`Refused`] with: [`Error::Os`] if the
/// listener cannot be made non-blocking, or the errors of
/// [`EventLoop::add_handler`]: [`Error::InvalidFd`], [`Error::AlreadyRegistered`] (the fd has
/// a handler), [`Error::Full`] (no free handler slot), [`Error::Os`] (the kernel refuses the
/// fd), [`Error::Closed`], [`Error::Forked`].
#[allow(clippy::type_complexity)]
pub fn add_accept_handler<P, const H: usize, const T: usize, const Q: usize, F>(
    lp: &mut EventLoop<P, H, T, Q>,
    listener: impl Into<Listener>,
    callback: F,
) -> Result<AcceptHandle, Refused<(Listener, F)>>
where
    P: Poller + 'static,
    F: FnMut(&mut EventLoop<P, H, T, Q>, OwnedFd, Option<SocketAddr>) + 'static,
{
    add_acceptor(lp, listener.into(), callback, None)
}

/// As [`add_accept_handler`], with a connection limit and back-pressure: while `limit` has no
/// room (or the loop's handler table has no free slot), the listener is disarmed and
/// connections wait in the kernel's backlog; see the [module docs](self#back-pressure-a-connection-limit-instead-of-accept-then-drop).
/// Every connection handed to `callback` counts against `limit` until you call
/// [`AcceptLimit::release`] for it (when it closes). One listener per `AcceptLimit`.
///
/// # Examples
///
/// A limit of one: the second client waits in the backlog until the first is released.
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use std::os::fd::OwnedFd;
/// use ioloop::accept::{add_accept_handler_limited, AcceptLimit};
/// use ioloop::EventLoop;
///
/// static LIMIT: AcceptLimit = AcceptLimit::new(1);
/// let mut lp: EventLoop = EventLoop::new()?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let mut held: Vec<OwnedFd> = Vec::new();
/// add_accept_handler_limited(&mut lp, listener, &LIMIT, move |lp, conn, _peer| {
///     held.push(conn); // keep the connection open: the limit is reached
///     lp.stop();
/// })?;
/// let _a = TcpStream::connect(addr)?;
/// let _b = TcpStream::connect(addr)?;
/// lp.run()?; // accepts the first client, then stops accepting
/// assert!(LIMIT.is_paused());
/// assert_eq!((LIMIT.stats().accepted, LIMIT.stats().current), (1, 1));
/// LIMIT.release(&mut lp); // the first connection ended: the listener is re-armed
/// assert!(!LIMIT.is_paused());
/// lp.run()?; // accepts the second
/// assert_eq!(LIMIT.stats().accepted, 2);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
/// As [`add_accept_handler`]: the listener and the callback come back inside [`Refused`],
/// and `limit` is left unattached (it can be passed again).
#[allow(clippy::type_complexity)]
pub fn add_accept_handler_limited<P, const H: usize, const T: usize, const Q: usize, F>(
    lp: &mut EventLoop<P, H, T, Q>,
    listener: impl Into<Listener>,
    limit: &'static AcceptLimit,
    callback: F,
) -> Result<AcceptHandle, Refused<(Listener, F)>>
where
    P: Poller + 'static,
    F: FnMut(&mut EventLoop<P, H, T, Q>, OwnedFd, Option<SocketAddr>) + 'static,
{
    add_acceptor(lp, listener.into(), callback, Some(limit))
}

#[allow(clippy::type_complexity)]
fn add_acceptor<P, const H: usize, const T: usize, const Q: usize, F>(
    lp: &mut EventLoop<P, H, T, Q>,
    listener: Listener,
    callback: F,
    limit: Option<&'static AcceptLimit>,
) -> Result<AcceptHandle, Refused<(Listener, F)>>
where
    P: Poller + 'static,
    F: FnMut(&mut EventLoop<P, H, T, Q>, OwnedFd, Option<SocketAddr>) + 'static,
{
    let fd = listener.raw();
    let refuse = |error, listener, callback| {
        Err(Refused {
            error,
            value: (listener, callback),
        })
    };
    if fd < 0 {
        return refuse(Error::InvalidFd { fd }, listener, callback);
    }
    if let Err(errno) = set_nonblocking(listener.as_fd()) {
        return refuse(Error::Os { errno }, listener, callback);
    }
    // The callback lives in the handler's state, which a refusal hands back untouched.
    let acceptor = Acceptor {
        callback,
        backoff_ms: 0,
        limit,
    };
    // The loop owns an owned listener: its handler gets a `BorrowedFd` it can vouch for.
    let on_owned_ready = |a: &mut Acceptor<F>,
                          lp: &mut EventLoop<P, H, T, Q>,
                          fd: BorrowedFd<'_>,
                          ready: Readiness| { a.on_ready(lp, fd, ready) };
    // A borrowed listener is open for `'static` (`BorrowedFd<'static>`): the handler keeps
    // that `BorrowedFd` (as the owned handler keeps its `OwnedFd`) and accepts on it, not on
    // the number the loop passes.
    let on_borrowed_ready = |listener: BorrowedFd<'static>| {
        move |a: &mut Acceptor<F>, lp: &mut EventLoop<P, H, T, Q>, _: RawFd, ready: Readiness| {
            a.on_ready(lp, listener, ready)
        }
    };
    let added = match listener {
        Listener::Owned(owned) => lp
            .add_owned_handler_with_state(owned, Interest::READ, acceptor, on_owned_ready)
            .map_err(|r| {
                let (owned, acceptor, _) = r.value;
                (r.error, Listener::Owned(owned), acceptor)
            }),
        Listener::Borrowed(fd) => lp
            .add_handler_with_state(fd, Interest::READ, acceptor, on_borrowed_ready(fd))
            .map_err(|r| (r.error, Listener::Borrowed(fd), r.value.0)),
    };
    match added {
        Ok(id) => {
            if let Some(limit) = limit {
                limit.attach(fd, id);
            }
            Ok(AcceptHandle { fd, id })
        }
        Err((error, listener, acceptor)) => refuse(error, listener, acceptor.callback),
    }
}

/// The accept handler's state, stored inline in the loop's handler table.
struct Acceptor<F> {
    callback: F,
    /// The current back-off in milliseconds; 0 while accepting normally.
    backoff_ms: u32,
    limit: Option<&'static AcceptLimit>,
}

impl<F> Acceptor<F> {
    fn on_ready<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        &mut self,
        lp: &mut EventLoop<P, H, T, Q>,
        listener: BorrowedFd<'_>,
        ready: Readiness,
    ) -> HandlerResult
    where
        F: FnMut(&mut EventLoop<P, H, T, Q>, OwnedFd, Option<SocketAddr>),
    {
        let fd = listener.as_raw_fd();
        if !ready.contains(Readiness::READ) {
            lp.remove_handler(fd);
            return Err(HandlerError::Other(LISTENER_FAILED));
        }
        // Our own registration, to notice removal (or a new handler on a reused fd number)
        // from inside the callback.
        let me = lp.handler_id(fd);
        for _ in 0..ACCEPTS_PER_EVENT {
            if let Some(limit) = self.limit {
                let own_room = limit.has_room();
                if !own_room || lp.handler_count() >= H {
                    limit.pause(lp, fd, own_room);
                    return Ok(());
                }
            }
            match accept(listener) {
                Ok((conn, peer)) => {
                    self.backoff_ms = 0;
                    if let Some(limit) = self.limit {
                        limit.acquire();
                    }
                    (self.callback)(lp, conn, peer);
                    if lp.handler_id(fd) != me || lp.is_closed() {
                        return Ok(());
                    }
                }
                Err(e) if e.0 == libc::EAGAIN || e.0 == libc::EWOULDBLOCK => return Ok(()),
                Err(e) if skippable(e) => {}
                Err(e) => return self.back_off(lp, fd, me, e),
            }
        }
        Ok(())
    }

    /// Stop watching READ and re-arm after the next back-off delay.
    fn back_off<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        &mut self,
        lp: &mut EventLoop<P, H, T, Q>,
        fd: RawFd,
        me: Option<HandlerId>,
        errno: Errno,
    ) -> HandlerResult {
        let min = BACKOFF_MIN.as_millis() as u32;
        let max = BACKOFF_MAX.as_millis() as u32;
        self.backoff_ms = if self.backoff_ms == 0 {
            min
        } else {
            self.backoff_ms.saturating_mul(2).min(max)
        };
        let Some(id) = me else {
            return Err(HandlerError::Os(errno));
        };
        if lp.timer_count() >= T {
            // No timer to re-arm with: stay armed (the next readiness retries at once).
            return Err(HandlerError::Other(BACKOFF_NO_TIMER));
        }
        // Disarm first, then schedule the re-arm: a refused disarm leaves nothing to cancel
        // (the listener is still armed, the next readiness retries).
        if lp.update_handler(fd, Interest::empty()).is_err() {
            return Err(HandlerError::Os(errno));
        }
        let delay = Duration::from_millis(u64::from(self.backoff_ms));
        if !schedule_rearm(lp, fd, id, delay, None) {
            // Not expected (a slot was free): arm again at once rather than stay disarmed.
            rearm(lp, fd, id);
            return Err(HandlerError::Other(BACKOFF_NO_TIMER));
        }
        Err(HandlerError::Os(errno))
    }
}

/// A cap on the live connections of one listener, for [`add_accept_handler_limited`]: at the
/// cap the listener stops accepting, so clients wait in the kernel's backlog instead of being
/// accepted and dropped (see the [module docs](self#back-pressure-a-connection-limit-instead-of-accept-then-drop)).
/// It also counts ([`stats`](Self::stats)). `const`: put it in a `static`.
///
/// # Examples
///
/// A limit of one connection; each is released as soon as it is handled, so the second one
/// gets its turn:
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use ioloop::accept::{add_accept_handler_limited, AcceptLimit};
/// use ioloop::EventLoop;
///
/// static LIMIT: AcceptLimit = AcceptLimit::new(1);
/// let mut lp: EventLoop = EventLoop::new()?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let mut seen = 0;
/// add_accept_handler_limited(&mut lp, listener, &LIMIT, move |lp, conn, _peer| {
///     drop(conn); // the connection ends here...
///     LIMIT.release(lp); // ...so its place is free again
///     seen += 1;
///     if seen == 2 {
///         lp.stop();
///     }
/// })?;
/// let _a = TcpStream::connect(addr)?;
/// let _b = TcpStream::connect(addr)?;
/// lp.run()?;
/// let stats = LIMIT.stats();
/// assert_eq!((stats.accepted, stats.current, stats.high_water), (2, 0, 1));
/// # Ok::<(), ioloop::Error>(())
/// ```
#[derive(Debug)]
pub struct AcceptLimit {
    max: AtomicUsize,
    current: AtomicUsize,
    paused: AtomicBool,
    /// The listener this limit gates: its fd (-1 until the handler is added) and its
    /// registration's key. Written on the thread that adds the handler (id first, then fd);
    /// `resume` checks the pair against the loop (`handler_id(fd) == id`), so a pair read
    /// half-updated (two loops sharing one limit, which the docs rule out) resumes nothing.
    /// Two atomics rather than a `Mutex`: no lock, no poisoning, less code.
    listener_fd: AtomicI32,
    listener_id: AtomicU64,
    accepted: AtomicU64,
    pauses: AtomicU64,
    resumes: AtomicU64,
    high_water: AtomicU64,
}

/// [`AcceptLimit`]'s counters (a snapshot), from [`AcceptLimit::stats`]; the
/// [`AcceptLimit`] example reads them.
///
/// # Examples
///
/// ```
/// use ioloop::accept::{AcceptLimit, AcceptStats};
///
/// static LIMIT: AcceptLimit = AcceptLimit::new(8);
/// assert_eq!(LIMIT.stats(), AcceptStats::default());
/// assert!(!LIMIT.is_paused());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptStats {
    /// Connections accepted and handed to the callback.
    pub accepted: u64,
    /// Times accepting was paused for lack of room.
    pub paused: u64,
    /// Times it was re-armed.
    pub resumed: u64,
    /// Connections accepted and not yet released.
    pub current: u64,
    /// The most connections at once.
    pub high_water: u64,
}

impl AcceptLimit {
    /// A limit of `max` live connections (at least 1).
    ///
    /// ```
    /// use ioloop::accept::AcceptLimit;
    /// static LIMIT: AcceptLimit = AcceptLimit::new(100);
    /// assert_eq!(LIMIT.stats().current, 0);
    /// assert!(!LIMIT.is_paused());
    /// ```
    pub const fn new(max: usize) -> Self {
        AcceptLimit {
            max: AtomicUsize::new(if max == 0 { 1 } else { max }),
            current: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            listener_fd: AtomicI32::new(-1),
            listener_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
        }
    }

    /// The counters now (any thread, any time). The [`AcceptLimit`] example reads them after
    /// two connections.
    ///
    /// ```
    /// use ioloop::accept::AcceptLimit;
    /// static LIMIT: AcceptLimit = AcceptLimit::new(10);
    /// let s = LIMIT.stats();
    /// assert_eq!((s.accepted, s.current, s.high_water, s.paused), (0, 0, 0, 0));
    /// println!("{} live, {} at most, paused {} times", s.current, s.high_water, s.paused);
    /// ```
    pub fn stats(&self) -> AcceptStats {
        AcceptStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            paused: self.pauses.load(Ordering::Relaxed),
            resumed: self.resumes.load(Ordering::Relaxed),
            current: self.current.load(Ordering::Relaxed) as u64,
            high_water: self.high_water.load(Ordering::Relaxed),
        }
    }

    /// Whether accepting is paused now (the limit is reached: clients wait in the listen
    /// backlog). [`add_accept_handler_limited`]'s example pauses and resumes.
    ///
    /// ```
    /// use ioloop::accept::AcceptLimit;
    /// static LIMIT: AcceptLimit = AcceptLimit::new(10);
    /// assert!(!LIMIT.is_paused()); // nothing accepted yet
    /// // In a keep-alive connection, after answering a request:
    /// let close_now = LIMIT.is_paused(); // give a waiting client a turn
    /// # assert!(!close_now);
    /// ```
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// One connection ended: free its place and, if accepting was paused, re-arm the
    /// listener. Call it once per connection the callback received (more calls than
    /// connections are ignored).
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::accept::AcceptLimit;
    /// use ioloop::EventLoop;
    /// static LIMIT: AcceptLimit = AcceptLimit::new(2);
    /// let mut lp: EventLoop = EventLoop::new()?;
    /// LIMIT.release(&mut lp); // more releases than connections are ignored
    /// assert_eq!(LIMIT.stats().current, 0);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn release<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        &self,
        lp: &mut EventLoop<P, H, T, Q>,
    ) {
        let _ = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if self.paused.load(Ordering::Acquire) && self.has_room() {
            self.resume(lp);
        }
    }

    fn attach(&self, fd: RawFd, id: HandlerId) {
        self.listener_id.store(id.key(), Ordering::Relaxed);
        self.listener_fd.store(fd, Ordering::Release);
        // A new handler starts armed: a pause left by a handler removed while paused is over
        // (so the new handler's own pause is counted and reported).
        self.paused.store(false, Ordering::Release);
    }

    fn has_room(&self) -> bool {
        self.current.load(Ordering::Acquire) < self.max.load(Ordering::Relaxed)
    }

    fn acquire(&self) {
        let now = self.current.fetch_add(1, Ordering::AcqRel) as u64 + 1;
        self.high_water.fetch_max(now, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Disarm the listener. A pause for the handler table (`own_room`: the limit itself has
    /// room) re-arms after [`BACKOFF_MIN`], as no release of ours may come.
    fn pause<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        &'static self,
        lp: &mut EventLoop<P, H, T, Q>,
        fd: RawFd,
        own_room: bool,
    ) {
        if lp.update_handler(fd, Interest::empty()).is_err() {
            return;
        }
        if !self.paused.swap(true, Ordering::AcqRel) {
            let n = self.pauses.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "log")]
            if n == 0 {
                log::warn!("accept: connection limit or handler table reached; accepting paused (back-pressure)");
            } else {
                log::debug!("accept: accepting paused");
            }
            #[cfg(not(feature = "log"))]
            let _ = n;
        }
        if own_room {
            if let Some(id) = lp.handler_id(fd) {
                schedule_rearm(lp, fd, id, BACKOFF_MIN, Some(self));
            }
        }
    }

    fn resume<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
        &self,
        lp: &mut EventLoop<P, H, T, Q>,
    ) {
        let fd = self.listener_fd.load(Ordering::Acquire);
        if fd < 0 {
            return;
        }
        let id = HandlerId::from_key(self.listener_id.load(Ordering::Relaxed));
        if lp.handler_id(fd) != Some(id) {
            return;
        }
        if self.paused.swap(false, Ordering::AcqRel) {
            self.resumes.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "log")]
            log::debug!("accept: accepting resumed");
        }
        rearm(lp, fd, id);
    }
}

/// A timer that gives the listener its READ interest back, if the same registration is still
/// in place: through `limit` (counted as a resume) if it was the limit's pause and the limit
/// is still paused, else directly (the `EMFILE` back-off). One closure type for both, so one
/// timer thunk is compiled per loop type, not two. `false` if the loop refused the timer (its
/// table is full, or it is closed).
fn schedule_rearm<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
    fd: RawFd,
    id: HandlerId,
    delay: Duration,
    limit: Option<&'static AcceptLimit>,
) -> bool {
    lp.call_later(delay, move |lp| match limit {
        Some(limit) => {
            if lp.handler_id(fd) == Some(id) && limit.is_paused() {
                limit.resume(lp);
            }
        }
        None => rearm(lp, fd, id),
    })
    .is_ok()
}

fn rearm<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
    fd: RawFd,
    id: HandlerId,
) {
    if lp.handler_id(fd) != Some(id) {
        return;
    }
    if lp.update_handler(fd, Interest::READ).is_err() {
        // The kernel refused (ENOMEM): try again later rather than never accept again.
        schedule_rearm(lp, fd, id, BACKOFF_MAX, None);
    }
}

/// Errors that concern one connection only: skip it and accept the next. Linux passes the new
/// socket's pending network errors on from `accept` and asks to treat them like `EAGAIN`
/// (`accept(2)`, "Error handling"); unlike `EAGAIN` the queue made progress, so go on.
pub(crate) fn skippable(e: Errno) -> bool {
    let e = e.0;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if e == libc::ENONET {
        return true;
    }
    e == libc::ECONNABORTED
        || e == libc::EINTR
        || e == libc::EPROTO
        || e == libc::EPERM
        || e == libc::ENOPROTOOPT
        || e == libc::ENETDOWN
        || e == libc::ENETUNREACH
        || e == libc::EHOSTDOWN
        || e == libc::EHOSTUNREACH
}

/// Made non-blocking in place: `accept` must never block the loop.
fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::io::ioctl_fionbio(fd, true).map_err(errno)
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// One `accept`, with the peer's address read by the same call.
fn accept(listener: BorrowedFd<'_>) -> Result<(OwnedFd, Option<SocketAddr>), Errno> {
    let (conn, peer) = rustix::net::acceptfrom_with(listener, sys::FLAGS).map_err(errno)?;
    let conn = sys::ready(conn).map_err(errno)?;
    // IPv4 and IPv6 only; a Unix socket's peer is usually unnamed.
    Ok((conn, peer.and_then(|a| SocketAddr::try_from(a).ok())))
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`: close-on-exec from the first instant, so an `exec`
/// in another thread cannot inherit the connection.
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
mod sys {
    use super::*;

    pub(super) const FLAGS: SocketFlags = SocketFlags::NONBLOCK.union(SocketFlags::CLOEXEC);

    pub(super) fn ready(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
        Ok(fd)
    }
}

/// Apple has no `accept4`: `accept`, then non-blocking and close-on-exec. An `exec` in another
/// thread between the calls can inherit the connection; a single-threaded program (the loop's
/// model) is not affected.
#[cfg(any(target_os = "macos", target_os = "ios"))]
mod sys {
    use super::*;

    pub(super) const FLAGS: SocketFlags = SocketFlags::empty();

    pub(super) fn ready(fd: OwnedFd) -> rustix::io::Result<OwnedFd> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(fd)
    }
}
