//! A TCP server building block: Tornado's `TCPServer.handle_stream`, with the connection
//! limit, back-pressure and deadlines Tornado left out.
//!
//! A [`Server<MAX>`] is the shared, `'static` state of one server (a `static`, or leaked once
//! per loop thread): at most `MAX` live connections, their counters, and the shutdown switch.
//! [`Server::serve`] runs the accept loop on the current loop: every accepted connection
//! becomes a [`BufStream`] (with the configured [`Timeouts`]) handed to your handler, whose
//! future runs as a task on your [`Executor`].
//!
//! A line server and one client, on 127.0.0.1 with a port the kernel picks:
//!
//! ```
//! use std::time::Duration;
//! use ioloop::net::{TcpListener, TcpStream};
//! use ioloop::server::{Server, ServerConfig};
//! use ioloop::stream::BufStream;
//! use ioloop::{EventLoop, Executor, Remote};
//!
//! // Sized for the example; an appliance uses e.g. `EventLoop<1100, 1100>`,
//! // `Executor<1025, 12288>` and `Server<1024>` (see the README on capacities).
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! static EXEC: Executor<9, 12288> = Executor::new();
//! static SERVER: Server<8> = Server::new();
//!
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.attach_executor(&EXEC)?;
//! let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = listener.local_addr()?;
//! let config = ServerConfig { max_connections: 8, ..ServerConfig::default() };
//! // Each connection: answer every line with "ok" until the client closes.
//! let serving = SERVER.serve(listener, &EXEC, config, |mut s: BufStream<TcpStream>, _peer| async move {
//!     while s.read_until(b"\n", 4096).await.is_ok() {
//!         if s.write(b"ok\n").await.is_err() || s.flush().await.is_err() {
//!             break;
//!         }
//!     }
//! });
//! let client = async {
//!     let mut c: BufStream<TcpStream> = BufStream::new(TcpStream::connect(addr).await?);
//!     c.write(b"hello\n").await?;
//!     c.flush().await?;
//!     let answer = c.read_until(b"\n", 64).await?.to_vec();
//!     drop(c);
//!     SERVER.shutdown(); // serve returns once the connection has ended
//!     Ok::<_, ioloop::stream::StreamError>(answer)
//! };
//! let (stats, answer) = lp.run_sync(ioloop::join(serving, client), Some(Duration::from_secs(30)))?;
//! assert_eq!(answer?, b"ok\n");
//! let stats = stats?;
//! assert_eq!((stats.accepted, stats.current), (1, 0));
//! # Ok::<(), ioloop::Error>(())
//! ```
//!
//! # Back-pressure, not accept-then-drop
//!
//! Before each `accept` the server checks that it can take the connection: fewer than
//! `min(config.max_connections, MAX)` connections are live and the executor has a free task
//! slot. If not, it **stops accepting** — it no longer waits on the listener, so the listener's
//! read interest is gone (level-triggered pollers stop watching it; epoll's edge-triggered
//! registration stays quiet) and new connections wait in the kernel's listen backlog — until a
//! connection ends and frees a slot. Right after `accept` the stream is registered with the
//! loop; if the loop's handler table is full, the server holds that one connection and waits
//! for room as well. No connection the server accepted is ever dropped for lack of a slot.
//! Each pause and resume is counted ([`ServerStats::paused`] / `resumed`) and, with the `log`
//! feature, logged (`debug`, and one `warn` for the first pause): never one line per
//! connection.
//!
//! When the pause comes from outside the server (the executor or handler table full of other
//! work), no connection of this server may end to wake it, so it also re-checks every
//! [`RECHECK`] (100 ms).
//!
//! # Graceful shutdown
//!
//! [`Server::shutdown`] (from a signal handler, a callback, another task or another thread)
//! stops accepting and closes the listener (connections still in its backlog are reset, as
//! with Tornado's `stop()`), lets the running connections finish for up to
//! [`ServerConfig::shutdown_grace`], then closes those left: their handler futures are
//! dropped (the streams' fds close) at their next wake, which the server triggers. `serve`
//! returns the final [`ServerStats`].

use core::future::{poll_fn, Future};
use core::task::{Poll, Waker};
use core::time::Duration;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use loop_core::{select, sleep, Either, Error, Executor, Resource};

use crate::net::{TcpListener, TcpStream};
use crate::stream::{BufStream, Timeouts};

/// How often a server paused for reasons outside itself (executor or handler table full of
/// other work, out of fds) looks again.
pub const RECHECK: Duration = Duration::from_millis(100);

macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "log")]
        {
            ::log::$level!($($arg)*);
        }
        #[cfg(not(feature = "log"))]
        {
            let _ = format_args!($($arg)*);
        }
    }};
}

/// Bind a listener for [`Server::serve`]: `SO_REUSEADDR`, `SO_REUSEPORT` if `reuse_port` (one
/// listener per loop, one loop per core, on the same port: the kernel spreads connections),
/// and a listen backlog of `backlog` (where clients wait while the server applies
/// back-pressure; capped by `net.core.somaxconn`).
///
/// # Examples
///
/// ```
/// let listener = ioloop::server::bind("127.0.0.1:0".parse().unwrap(), true, 1024)?;
/// assert_ne!(listener.local_addr()?.port(), 0);
/// # Ok::<(), ioloop::Error>(())
/// ```
///
/// # Errors
/// As [`TcpListener::bind`]: `EADDRINUSE`, `EACCES`, ….
pub fn bind(addr: SocketAddr, reuse_port: bool, backlog: u32) -> Result<TcpListener, Error> {
    TcpListener::bind_with_backlog(addr, reuse_port, backlog)
}

/// A server's settings: start from [`Default`] and change what you need.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::server::ServerConfig;
/// use ioloop::stream::Timeouts;
///
/// let config = ServerConfig {
///     max_connections: 100,
///     timeouts: Timeouts { idle: Some(Duration::from_secs(5)), ..ServerConfig::default().timeouts },
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.shutdown_grace, Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// At most this many live connections (also bounded by the server's `MAX` and the
    /// executor's free slots). Default 1024.
    pub max_connections: usize,
    /// Every connection's stream deadlines. Default: idle 60 s, read 10 s, write 10 s.
    pub timeouts: Timeouts,
    /// How long running connections may go on after [`Server::shutdown`]. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            timeouts: Timeouts {
                idle: Some(Duration::from_secs(60)),
                read: Some(Duration::from_secs(10)),
                write: Some(Duration::from_secs(10)),
            },
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A server's counters (a snapshot), from [`Server::stats`] or returned by
/// [`Server::serve`]; the [module example](self) checks them.
///
/// # Examples
///
/// ```
/// use ioloop::server::{Server, ServerStats};
///
/// static SERVER: Server<4> = Server::new();
/// assert_eq!(SERVER.stats(), ServerStats::default()); // nothing served yet
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted and handed to a handler.
    pub accepted: u64,
    /// Times the server stopped accepting for lack of room.
    pub paused: u64,
    /// Times it started accepting again.
    pub resumed: u64,
    /// Live connections now.
    pub current: u64,
    /// The most live connections at once.
    pub high_water: u64,
    /// `accept` failures that were not about one connection (`EMFILE`, `ENFILE`, …), each
    /// followed by a [`RECHECK`] back-off.
    pub accept_errors: u64,
    /// Accepted connections whose registration with the loop failed for another reason than
    /// a full table (closed at once; not handed to a handler).
    pub register_errors: u64,
    /// Connections closed by a shutdown after its grace period.
    pub forced_closed: u64,
}

/// A TCP server with room for `MAX` live connections (Tornado's `TCPServer`):
/// [`serve`](Self::serve) accepts on a listener and runs your handler for each connection as a
/// task, with a connection limit, back-pressure and a graceful shutdown. Use it for a
/// request/response service on the loop; `const`, so put it in a `static`. The
/// [module docs](self) run a server and shut it down.
///
/// Methods: [`serve`](Self::serve) runs it; [`shutdown`](Self::shutdown) (from any thread)
/// ends it gracefully; [`stats`](Self::stats), [`limit`](Self::limit),
/// [`is_paused`](Self::is_paused) and [`is_shutting_down`](Self::is_shutting_down) observe it.
///
/// # Examples
///
/// A shutdown asked before `serve` makes it return at once:
///
/// ```
/// use ioloop::net::{TcpListener, TcpStream};
/// use ioloop::server::{Server, ServerConfig};
/// use ioloop::stream::BufStream;
/// # use ioloop::{EventLoop, Executor, Remote};
/// #
/// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// # static EXEC: Executor<4, 1024> = Executor::new();
/// # let mut lp: EventLoop = EventLoop::new()?;
/// # lp.attach_remote(&REMOTE)?;
/// # lp.attach_executor(&EXEC)?;
/// #
///
/// static SERVER: Server<4> = Server::new();
/// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
/// SERVER.shutdown();
/// assert!(SERVER.is_shutting_down());
/// let stats = lp.run_sync(
///     SERVER.serve(listener, &EXEC, ServerConfig::default(), |_s: BufStream<TcpStream, 64, 64>, _| async {}),
///     None,
/// )??;
/// assert_eq!(stats.accepted, 0);
/// # Ok::<(), ioloop::Error>(())
/// ```
pub struct Server<const MAX: usize> {
    /// Whether slot `i` holds a live connection.
    live: [AtomicBool; MAX],
    /// Per live connection, the waker of its task (to close it at shutdown).
    wakers: [Mutex<Option<Waker>>; MAX],
    /// The accept loop's waker: woken when a slot frees or at shutdown.
    acceptor: Mutex<Option<Waker>>,
    stop: AtomicBool,
    force: AtomicBool,
    /// The accept loop is paused for lack of room.
    waiting: AtomicBool,
    limit: AtomicUsize,
    current: AtomicUsize,
    accepted: AtomicU64,
    paused: AtomicU64,
    resumed: AtomicU64,
    high_water: AtomicU64,
    accept_errors: AtomicU64,
    register_errors: AtomicU64,
    forced_closed: AtomicU64,
}

impl<const MAX: usize> Default for Server<MAX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const MAX: usize> core::fmt::Debug for Server<MAX> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A connection's task: the handler's future (stored once, in place: an `async` block
/// wrapping it would keep a second copy of it in its state) and its slot, freed after the
/// future is dropped.
struct ConnTask<Fut, const MAX: usize> {
    fut: Option<Fut>,
    guard: Option<SlotGuard<MAX>>,
}

impl<Fut: Future<Output = ()>, const MAX: usize> Future for ConnTask<Fut, MAX> {
    type Output = ();

    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of `fut`: it is never moved out; it is only polled in
        // place and dropped in place (`set(None)` below, or with the task). `guard` is not
        // structurally pinned (it is `Unpin` and moved freely).
        let this = unsafe { self.get_unchecked_mut() };
        let Some(guard) = this.guard.as_ref() else {
            return Poll::Ready(());
        };
        let (server, index) = (guard.server, guard.index);
        let forced = server.force.load(Ordering::Acquire);
        let done = if forced {
            Self::count_forced(server);
            true
        } else if let Some(fut) = this.fut.as_mut() {
            // SAFETY: see above: `fut` stays where it is until dropped in place.
            unsafe { core::pin::Pin::new_unchecked(fut) }
                .poll(cx)
                .is_ready()
        } else {
            true
        };
        if done {
            // SAFETY: dropping in place (through `Pin::set`) is what pinning allows.
            unsafe { core::pin::Pin::new_unchecked(&mut this.fut) }.set(None);
            // The handler's future (and its stream) is gone before the slot is freed.
            this.guard = None;
            return Poll::Ready(());
        }
        // Keep this task's waker, so a forced shutdown can wake it.
        if let Ok(mut w) = server.wakers[index].lock() {
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl<Fut, const MAX: usize> ConnTask<Fut, MAX> {
    fn count_forced(server: &Server<MAX>) {
        server.forced_closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl<Fut, const MAX: usize> Drop for ConnTask<Fut, MAX> {
    fn drop(&mut self) {
        // The future first (closing its stream), then the slot.
        self.fut = None;
        self.guard = None;
    }
}

/// Frees a connection's slot when its task ends (or is dropped), and wakes the accept loop.
struct SlotGuard<const MAX: usize> {
    server: &'static Server<MAX>,
    index: usize,
}

impl<const MAX: usize> Drop for SlotGuard<MAX> {
    fn drop(&mut self) {
        let s = self.server;
        if let Ok(mut w) = s.wakers[self.index].lock() {
            *w = None;
        }
        s.live[self.index].store(false, Ordering::Release);
        s.current.fetch_sub(1, Ordering::AcqRel);
        s.wake_acceptor();
    }
}

impl<const MAX: usize> Server<MAX> {
    /// A server with no connections (`const`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ioloop::server::Server;
    /// static SERVER: Server<64> = Server::new(); // room for 64 connections, no allocation
    /// assert_eq!(SERVER.limit(), 64);
    /// assert!(!SERVER.is_paused() && !SERVER.is_shutting_down());
    /// ```
    pub const fn new() -> Self {
        Server {
            live: [const { AtomicBool::new(false) }; MAX],
            wakers: [const { Mutex::new(None) }; MAX],
            acceptor: Mutex::new(None),
            stop: AtomicBool::new(false),
            force: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            limit: AtomicUsize::new(MAX),
            current: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            paused: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            register_errors: AtomicU64::new(0),
            forced_closed: AtomicU64::new(0),
        }
    }

    /// The counters now.
    ///
    /// ```
    /// use ioloop::server::Server;
    /// static SERVER: Server<8> = Server::new();
    /// let stats = SERVER.stats(); // any thread, any time
    /// assert_eq!((stats.accepted, stats.current, stats.high_water), (0, 0, 0));
    /// ```
    pub fn stats(&self) -> ServerStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: l(&self.accepted),
            paused: l(&self.paused),
            resumed: l(&self.resumed),
            current: self.current.load(Ordering::Relaxed) as u64,
            high_water: l(&self.high_water),
            accept_errors: l(&self.accept_errors),
            register_errors: l(&self.register_errors),
            forced_closed: l(&self.forced_closed),
        }
    }

    /// The connection limit in force: `MAX` until [`serve`](Self::serve) starts, then
    /// `min(config.max_connections, MAX)` (the last `serve`'s, also after it returned).
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
    /// use ioloop::server::{Server, ServerConfig};
    /// use ioloop::stream::BufStream;
    /// static SERVER: Server<8> = Server::new();
    /// assert_eq!(SERVER.limit(), 8);
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// SERVER.shutdown(); // so that `serve` returns at once in this example
    /// let config = ServerConfig { max_connections: 2, ..ServerConfig::default() };
    /// let handler = |_s: BufStream<TcpStream, 64, 64>, _| async {};
    /// lp.run_sync(SERVER.serve(listener, &EXEC, config, handler), None)??;
    /// assert_eq!(SERVER.limit(), 2);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Ask [`serve`](Self::serve) to shut down gracefully (see the [module docs](self)). Any
    /// thread, any context that may take a lock (not a signal handler itself: use the loop's
    /// signal handlers, which run as loop callbacks).
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
    /// use ioloop::server::{Server, ServerConfig};
    /// use ioloop::stream::BufStream;
    /// static SERVER: Server<4> = Server::new();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// // Another thread (a control socket, a watchdog...) ends the server.
    /// // (Asked before `serve` starts, the shutdown makes it return at once; asked while it
    /// // runs, it stops accepting and drains the connections.)
    /// let stopper = std::thread::spawn(|| SERVER.shutdown());
    /// let handler = |_s: BufStream<TcpStream, 64, 64>, _| async {};
    /// let stats = lp.run_sync(SERVER.serve(listener, &EXEC, ServerConfig::default(), handler), None)??;
    /// stopper.join().unwrap();
    /// assert_eq!(stats.current, 0);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake_acceptor();
    }

    /// Whether the server is paused for lack of room right now (clients may be waiting in
    /// the listen backlog). A keep-alive protocol can close connections after their current
    /// request while this holds, so waiting clients get a turn (what HTTP servers do under
    /// pressure).
    ///
    /// ```
    /// use ioloop::server::Server;
    /// static SERVER: Server<16> = Server::new();
    /// // In a keep-alive handler, after answering a request:
    /// let close_after_this_request = SERVER.is_paused() || SERVER.is_shutting_down();
    /// assert!(!close_after_this_request);
    /// ```
    pub fn is_paused(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether a shutdown was asked for and [`serve`](Self::serve) has not yet returned
    /// (it clears the request when it returns, so the server can serve again).
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
    /// use ioloop::server::{Server, ServerConfig};
    /// use ioloop::stream::BufStream;
    /// static SERVER: Server<4> = Server::new();
    /// assert!(!SERVER.is_shutting_down());
    /// SERVER.shutdown();
    /// assert!(SERVER.is_shutting_down());
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// let handler = |_s: BufStream<TcpStream, 64, 64>, _| async {};
    /// lp.run_sync(SERVER.serve(listener, &EXEC, ServerConfig::default(), handler), None)??;
    /// assert!(!SERVER.is_shutting_down()); // ready to serve again
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn wake_acceptor(&self) {
        let waker = self.acceptor.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Pending until `ready()` holds; woken by a freed slot or a shutdown.
    async fn wait_for(&self, mut ready: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            if let Ok(mut w) = self.acceptor.lock() {
                match w.as_ref() {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Wait until `ready()` holds, looking again every [`RECHECK`] as well.
    async fn wait_or_recheck(&self, mut ready: impl FnMut() -> bool) {
        while !ready() {
            let _ = select(self.wait_for(&mut ready), sleep(RECHECK)).await;
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn count(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// Serve `listener` until [`shutdown`](Self::shutdown): accept with back-pressure, hand
    /// each connection to `handler` as a [`BufStream`] with `config.timeouts`, run the
    /// handler's future as a task on `exec`. Run it inside `run_sync` or a task of the loop
    /// `exec` is attached to. Returns the counters once every connection has ended.
    ///
    /// One `serve` at a time per `Server` (the slots are its own); a `Server` can serve again
    /// after `serve` returned. A [`shutdown`](Self::shutdown) asked before `serve` starts
    /// makes it return at once. The counters are cumulative over every `serve`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ioloop::{EventLoop, Executor, Remote};
    /// # static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// # static EXEC: Executor<5, 4096> = Executor::new();
    /// # let mut lp: EventLoop = EventLoop::new()?;
    /// # lp.attach_remote(&REMOTE)?;
    /// # lp.attach_executor(&EXEC)?;
    /// use ioloop::net::{TcpListener, TcpStream};
    /// use ioloop::server::{Server, ServerConfig};
    /// use ioloop::stream::BufStream;
    /// static SERVER: Server<4> = Server::new();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// let addr = listener.local_addr()?;
    /// let handler = |mut s: BufStream<TcpStream, 256, 256>, _peer| async move {
    ///     let _ = s.write(b"hello\n").await;
    ///     let _ = s.flush().await;
    ///     SERVER.shutdown(); // one connection is enough for this example
    /// };
    /// let client = async {
    ///     let c = TcpStream::connect(addr).await?;
    ///     let mut buf = [0u8; 6];
    ///     let n = c.read(&mut buf).await?;
    ///     Ok::<_, ioloop::Error>(buf[..n].to_vec())
    /// };
    /// let config = ServerConfig { max_connections: 4, ..ServerConfig::default() };
    /// let (stats, greeting) = lp.run_sync(ioloop::join(SERVER.serve(listener, &EXEC, config, handler), client), None)?;
    /// assert_eq!(greeting?, b"hello\n");
    /// assert_eq!(stats?.accepted, 1);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotAttached`] if `exec` is not attached to this thread's loop (or `serve` runs
    /// outside the loop); the kernel's error for an `accept` failure that is neither about
    /// one connection (skipped) nor about fds or memory (backed off) — `EBADF`, `EINVAL`,
    /// `ENOTSOCK`: the listener is unusable. A full handler table is back-pressure, not an
    /// error. Running connections are drained (as at a shutdown) before an error is
    /// returned.
    pub async fn serve<const N: usize, const SZ: usize, const R: usize, const W: usize, F, Fut>(
        &'static self,
        listener: TcpListener,
        exec: &'static Executor<N, SZ>,
        config: ServerConfig,
        mut handler: F,
    ) -> Result<ServerStats, Error>
    where
        F: FnMut(BufStream<TcpStream, R, W>, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let limit = config.max_connections.clamp(1, MAX.max(1));
        self.limit.store(limit, Ordering::Relaxed);
        let result = self
            .accept_loop(&listener, exec, config, limit, &mut handler)
            .await;
        // Stop accepting: connections left in the backlog are reset, as Tornado's stop().
        drop(listener);
        self.drain(config.shutdown_grace).await;
        let stats = self.stats();
        // Ready to serve again; a shutdown asked before `serve` started is not lost (it ends
        // the next `serve` at once).
        self.stop.store(false, Ordering::Release);
        self.force.store(false, Ordering::Release);
        self.waiting.store(false, Ordering::Relaxed);
        result.map(|()| stats)
    }

    async fn accept_loop<const N: usize, const SZ: usize, const R: usize, const W: usize, F, Fut>(
        &'static self,
        listener: &TcpListener,
        exec: &'static Executor<N, SZ>,
        config: ServerConfig,
        limit: usize,
        handler: &mut F,
    ) -> Result<(), Error>
    where
        F: FnMut(BufStream<TcpStream, R, W>, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let own_room = || self.current.load(Ordering::Acquire) < limit;
        let exec_room = || exec.len() < N;
        loop {
            if self.stopping() {
                return Ok(());
            }
            if !(own_room() && exec_room()) {
                self.pause();
                if !own_room() {
                    // Our own connections fill the limit: one of them ending wakes us.
                    self.wait_for(|| self.stopping() || own_room()).await;
                }
                self.wait_or_recheck(|| self.stopping() || exec_room())
                    .await;
                if self.stopping() {
                    return Ok(());
                }
                self.resume();
                continue;
            }
            let accepted = match select(listener.accept(), self.wait_for(|| self.stopping())).await
            {
                Either::First(r) => r,
                Either::Second(()) => return Ok(()),
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(Error::Os { errno })
                    if [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM]
                        .contains(&errno.raw()) =>
                {
                    // Out of fds or memory: the connection stays queued; back off.
                    Self::count(&self.accept_errors);
                    log_at!(warn, "server: accept failed ({}); backing off", errno);
                    let _ = select(sleep(RECHECK), self.wait_for(|| self.stopping())).await;
                    continue;
                }
                // One connection's failure (ECONNABORTED is skipped by `accept` itself).
                Err(Error::Os { errno }) if crate::accept::skippable(errno) => continue,
                // No room in the loop's handler table for the listener: as for a connection.
                Err(Error::Full { .. }) => {
                    self.pause();
                    let _ = select(sleep(RECHECK), self.wait_for(|| self.stopping())).await;
                    self.resume();
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Register now: a full handler table is back-pressure, not a lost connection.
            let registered = loop {
                match stream.register() {
                    Ok(()) => break true,
                    Err(Error::Full { .. }) => {
                        self.pause();
                        let _ = select(sleep(RECHECK), self.wait_for(|| self.stopping())).await;
                        if self.stopping() {
                            return Ok(());
                        }
                        self.resume();
                    }
                    Err(e) => {
                        Self::count(&self.register_errors);
                        log_at!(warn, "server: registering a connection failed: {}", e);
                        break false;
                    }
                }
            };
            if !registered {
                continue;
            }
            let Some(index) = self.live.iter().position(|l| !l.load(Ordering::Acquire)) else {
                // `current < limit <= MAX` was checked: a free slot exists.
                continue;
            };
            self.live[index].store(true, Ordering::Release);
            let now = self.current.fetch_add(1, Ordering::AcqRel) as u64 + 1;
            self.high_water.fetch_max(now, Ordering::Relaxed);
            Self::count(&self.accepted);
            let guard = SlotGuard {
                server: self,
                index,
            };
            let fut = handler(BufStream::new(stream).with_timeouts(config.timeouts), peer);
            let task = self.connection(guard, fut);
            let mut refused = match exec.spawn(task) {
                Ok(_) => continue,
                Err(r) => r,
            };
            // Full despite the check (another task spawned meanwhile): hold this connection
            // and wait for room rather than drop it.
            loop {
                match refused.error {
                    Error::Full {
                        what: Resource::Tasks,
                    } => {}
                    e => return Err(e),
                }
                self.pause();
                self.wait_or_recheck(|| self.stopping() || exec_room())
                    .await;
                if self.stopping() {
                    return Ok(());
                }
                self.resume();
                refused = match exec.spawn(refused.into_inner()) {
                    Ok(_) => break,
                    Err(r) => r,
                };
            }
        }
    }

    /// One connection's task: the handler's future, ended early by a forced shutdown.
    fn connection<Fut: Future<Output = ()> + 'static>(
        &'static self,
        guard: SlotGuard<MAX>,
        fut: Fut,
    ) -> ConnTask<Fut, MAX> {
        ConnTask {
            fut: Some(fut),
            guard: Some(guard),
        }
    }

    fn pause(&self) {
        self.waiting.store(true, Ordering::Relaxed);
        let n = self.paused.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            log_at!(
                warn,
                "server: connection limit or task/handler table reached; accepting paused (back-pressure)"
            );
        } else {
            log_at!(debug, "server: accepting paused");
        }
    }

    fn resume(&self) {
        self.waiting.store(false, Ordering::Relaxed);
        Self::count(&self.resumed);
        log_at!(debug, "server: accepting resumed");
    }

    /// Let live connections finish within `grace`, then close the rest.
    async fn drain(&self, grace: Duration) {
        let idle = || self.current.load(Ordering::Acquire) == 0;
        if idle() {
            return;
        }
        log_at!(
            info,
            "server: shutting down; waiting up to {} ms for {} connections",
            grace.as_millis() as u64,
            self.current.load(Ordering::Relaxed)
        );
        let _ = select(self.wait_for(idle), sleep(grace)).await;
        if idle() {
            return;
        }
        self.force.store(true, Ordering::Release);
        for w in &self.wakers {
            let waker = w.lock().ok().and_then(|mut w| w.take());
            if let Some(w) = waker {
                w.wake();
            }
        }
        self.wait_or_recheck(idle).await;
    }
}
