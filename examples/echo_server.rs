//! A small TCP echo server: one loop, the callback API, a connection limit with back-pressure.
//! Built to be small (see `benches/size.sh`, which compares it with a mio server of the same
//! function); `examples/echo.rs` is the full-featured one (a loop per core, idle timeouts,
//! graceful shutdown, a built-in client).
//!
//! ```text
//! echo_server [PORT [MAX_CONNS [IP]]]   # defaults: 7000, 1024, 127.0.0.1
//! ```
//!
//! * [`add_accept_handler_limited`] accepts (non-blocking, close-on-exec) and counts
//!   connections against an [`AcceptLimit`]: at `MAX_CONNS` it stops watching the listener, so
//!   new clients wait in the kernel's listen backlog until a connection ends (nothing is
//!   accepted and then dropped). Out of fds (`EMFILE`) it backs off instead of spinning.
//! * Each connection is an owned fd handler (the loop closes the socket when the handler is
//!   removed) whose state is a 4 KiB buffer from a pool allocated once at start-up: nothing
//!   is allocated per connection or per request.
//! * A connection's handler writes back what it read; a short write keeps the rest and
//!   switches the handler to WRITE, reading nothing meanwhile (a client that does not read
//!   its echo holds one buffer, no more). End of stream or an error closes it.
//! * Exit status 2 for bad arguments, 1 if the socket or the loop cannot be set up.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use ioloop::accept::{add_accept_handler_limited, AcceptLimit};
use ioloop::{Errno as LoopErrno, Error, HandlerResult, Interest, Readiness};
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketFlags, SocketType};

/// The most connections this binary is built for (its handler table); `MAX_CONNS` picks the
/// limit up to it.
const CAPACITY: usize = 1024;
/// Bytes read per call, and held per connection.
const BUF: usize = 4096;

#[path = "shared/echo_step.rs"]
mod echo_step;
use echo_step::{echo, Next};

/// Handlers: the connections and the listener. Timers: the accept back-off. No callbacks.
type Loop = ioloop::EventLoop<{ CAPACITY + 1 }, 2, 0>;

/// One connection's buffer and its unwritten bytes: `buf[start..end]`.
struct Conn {
    start: usize,
    end: usize,
    buf: [u8; BUF],
}

/// The free connection buffers, allocated once at start-up and kept for the life of the
/// process (borrowed only inside `pop`/`give_back`, never across a call into the loop).
type Pool = &'static RefCell<Vec<Box<Conn>>>;

#[path = "shared/server_args.rs"]
mod server_args;
use server_args::server_args;

fn main() {
    let (addr, max) = server_args("echo_server", CAPACITY);
    if let Err(e) = serve(addr, max) {
        // The kernel's reason; the loop's own errors (a full table...) cannot happen here.
        match e {
            Error::Os { errno } => {
                let e = std::io::Error::from_raw_os_error(errno.raw());
                eprintln!("echo_server: {e}");
            }
            _ => eprintln!("echo_server: the loop failed"),
        }
        std::process::exit(1);
    }
}

/// A listening socket on `addr`: non-blocking, close-on-exec, `SO_REUSEADDR`.
fn listen(addr: SocketAddr) -> Result<OwnedFd, Error> {
    let os = |e: Errno| Error::from(LoopErrno(e.raw_os_error()));
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let fd = net::socket_with(family, SocketType::STREAM, flags, None).map_err(os)?;
    net::sockopt::set_socket_reuseaddr(&fd, true).map_err(os)?;
    net::bind(&fd, &addr).map_err(os)?;
    net::listen(&fd, 128).map_err(os)?;
    Ok(fd)
}

/// Listens on `addr` and serves at most `max` connections at once until the loop fails.
fn serve(addr: SocketAddr, max: usize) -> Result<(), Error> {
    let listener = listen(addr)?;
    // One pool and one limit for the life of the process.
    let pool: Pool = Box::leak(Box::new(RefCell::new(
        (0..max)
            .map(|_| {
                Box::new(Conn {
                    start: 0,
                    end: 0,
                    buf: [0; BUF],
                })
            })
            .collect(),
    )));
    let limit: &'static AcceptLimit = Box::leak(Box::new(AcceptLimit::new(max)));
    // Never dropped: `serve` returns only on a failure, and the process exits right after,
    // when the kernel closes every fd; the loop's teardown (deregister and close each fd,
    // drop each closure) would only delay that exit.
    let lp: &mut Loop = Box::leak(Loop::new_boxed()?);
    add_accept_handler_limited(lp, listener, limit, move |lp, fd, _peer| {
        let conn = pool.borrow_mut().pop();
        let Some(mut conn) = conn else {
            // Cannot happen (the limit is the pool's size): refuse it all the same.
            limit.release(lp);
            return;
        };
        // Nothing left over from the buffer's previous connection (one that closed with a
        // backlog, after a write error).
        (conn.start, conn.end) = (0, 0);
        let _ = net::sockopt::set_tcp_nodelay(&fd, true);
        if let Err(refused) =
            lp.add_owned_handler_with_state(fd, Interest::READ, Some(conn), on_conn(pool, limit))
        {
            // The fd comes back and is closed here; the buffer and the place are freed.
            let (_fd, conn, _) = refused.value;
            give_back(pool, conn);
            limit.release(lp);
        }
    })
    .map_err(|refused| refused.error)?;
    lp.run()
}

/// Puts a connection's buffer back in the pool.
fn give_back(pool: Pool, conn: Option<Box<Conn>>) {
    pool.borrow_mut().extend(conn);
}

/// A connection's handler (its state: the connection's buffer, back in `pool` once it
/// closes), releasing its place in `limit` when it closes.
fn on_conn(
    pool: Pool,
    limit: &'static AcceptLimit,
) -> impl FnMut(&mut Option<Box<Conn>>, &mut Loop, BorrowedFd<'_>, Readiness) -> HandlerResult {
    move |conn, lp, fd, ready| {
        let next = match conn {
            Some(c) if ready.contains(Readiness::READ) || !ready.contains(Readiness::ERROR) => {
                echo(&mut c.buf, &mut c.start, &mut c.end, fd)
            }
            _ => Next::Close,
        };
        let interest = match next {
            Next::Read => Interest::READ,
            Next::Write => Interest::WRITE,
            Next::Close => Interest::empty(),
        };
        // No system call unless the interest changes; should the kernel refuse, close.
        if interest.is_empty() || lp.update_handler(fd, interest).is_err() {
            give_back(pool, conn.take());
            // Closes the socket (the loop owns it) once this call returns.
            lp.remove_handler(fd);
            limit.release(lp);
        }
        Ok(())
    }
}
