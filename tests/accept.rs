//! `ioloop::accept::add_accept_handler` (Tornado's `netutil.add_accept_handler`, TORNADO.md
//! §4.4) on real loopback sockets, once per poller. Timing is asserted only as generous bounds
//! that tell "backs off" from "spins". Running out of fds (`EMFILE`) needs a process-wide
//! limit and lives in `tests/fd_hygiene.rs`.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioloop::accept::{add_accept_handler, Listener, ACCEPTS_PER_EVENT};
use ioloop::{Error, Failure, HandlerError, OpenPoller, Poller, Resource};
use loop_core::EventLoop;

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

#[cfg(target_os = "linux")]
#[path = "common/hooks.rs"]
mod hooks;

type Lp<P> = EventLoop<P, 8, 16, 16>;

/// A connection and its peer, as the callback received them.
type Accepted = (OwnedFd, Option<SocketAddr>);

fn local_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Run `lp` until `done()` or `limit` (a bound for a broken build, not a timing assertion).
fn run_until<P: Poller + 'static>(lp: &mut Lp<P>, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
}

fn run_for<P: Poller + 'static>(lp: &mut Lp<P>, d: Duration) {
    lp.call_later(d, |lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    lp.run().unwrap();
}

fn accepted_connections_are_nonblocking_cloexec_and_carry_the_peer_address<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    let got: Rc<RefCell<Vec<Accepted>>> = Rc::default();
    let g = got.clone();
    add_accept_handler(&mut lp, listener, move |_, conn, peer| {
        g.borrow_mut().push((conn, peer))
    })
    .map_err(|r| r.error)
    .unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    run_until(&mut lp, Duration::from_secs(5), || got.borrow().len() == 1);

    let (conn, peer) = got.borrow_mut().pop().expect("one connection accepted");
    assert_eq!(peer, Some(client.local_addr().unwrap()));
    let fd_flags = rustix::io::fcntl_getfd(&conn).unwrap();
    assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
    let fl = rustix::fs::fcntl_getfl(&conn).unwrap();
    assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
    // It is the client's connection.
    client.write_all(b"hi").unwrap();
    let mut stream = TcpStream::from(conn);
    stream.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

fn unix_socket_connections_are_accepted_without_a_peer_address<P: Poller + OpenPoller + 'static>() {
    let dir = std::env::temp_dir().join(format!(
        "ioloop-accept-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&dir);
    let listener = UnixListener::bind(&dir).unwrap();
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let peers: Rc<RefCell<Vec<Option<SocketAddr>>>> = Rc::default();
    let p = peers.clone();
    add_accept_handler(&mut lp, listener, move |_, conn, peer| {
        drop(conn);
        p.borrow_mut().push(peer)
    })
    .map_err(|r| r.error)
    .unwrap();
    let _client = UnixStream::connect(&dir).unwrap();
    run_until(&mut lp, Duration::from_secs(5), || {
        peers.borrow().len() == 1
    });
    let _ = std::fs::remove_file(&dir);
    assert_eq!(*peers.borrow(), vec![None]);
}

/// Tornado: "to prevent starvation of other tasks" at most `_DEFAULT_BACKLOG` (128) accepts per
/// READ event; the rest wait for the next iteration.
fn one_readiness_accepts_at_most_128_connections<P: Poller + OpenPoller + 'static>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    // std listens with a backlog of 128; 200 pending connections need more.
    rustix::net::listen(&listener, 512).unwrap();
    let count = Rc::new(Cell::new(0usize));
    let c = count.clone();
    add_accept_handler(&mut lp, listener, move |_, conn, _| {
        drop(conn);
        c.set(c.get() + 1)
    })
    .map_err(|r| r.error)
    .unwrap();
    // Connects complete in the kernel's queue before anything is accepted.
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let before = lp.counters().events_dispatched;
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(lp.counters().events_dispatched - before, 1);
    assert_eq!(count.get(), ACCEPTS_PER_EVENT);
    run_until(&mut lp, Duration::from_secs(5), || count.get() == 200);
    assert_eq!(count.get(), 200);
    drop(clients);
}

/// Tornado 5.0+: the returned remover, called inside the callback, stops the batch.
fn removing_the_handle_inside_the_callback_ends_the_batch_and_closes_an_owned_listener<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let count = Rc::new(Cell::new(0usize));
    let c = count.clone();
    let handle = Rc::new(Cell::new(None));
    let h = handle.clone();
    let id = add_accept_handler(&mut lp, listener, move |lp, conn, _| {
        drop(conn);
        c.set(c.get() + 1);
        let handle: Option<ioloop::AcceptHandle> = h.get();
        assert!(handle.expect("set before the loop runs").remove(lp));
    })
    .map_err(|r| r.error)
    .unwrap();
    handle.set(Some(id));
    run_for(&mut lp, Duration::from_millis(50));
    assert_eq!(count.get(), 1, "the batch ended with the removal");
    assert!(!id.is_active(&lp));
    assert_eq!(lp.handler_count(), 0);
    // The loop closed the owned listener: new connections are refused.
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(clients);
}

/// A listener that lives as long as the program (leaked here, as a `static` would be).
fn static_listener() -> (&'static TcpListener, SocketAddr) {
    let (l, addr) = local_listener();
    (Box::leak(Box::new(l)), addr)
}

/// The one safe way to borrow a listener (`&'static`) accepts like an owned one, and the loop
/// leaves it open when the handler goes.
fn a_static_borrowed_listener_accepts_and_stays_open_after_its_handler_is_removed<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = static_listener();
    let got: Rc<RefCell<Vec<Accepted>>> = Rc::default();
    let g = got.clone();
    let handle = add_accept_handler(&mut lp, listener, move |lp, conn, peer| {
        g.borrow_mut().push((conn, peer));
        lp.stop();
    })
    .map_err(|r| r.error)
    .unwrap();
    assert_eq!(handle.fd(), listener.as_raw_fd());
    let mut client = TcpStream::connect(addr).unwrap();
    run_until(&mut lp, Duration::from_secs(5), || got.borrow().len() == 1);
    {
        let got = got.borrow();
        assert_eq!(got.len(), 1, "accepted through the borrowed listener");
        assert_eq!(got[0].1, Some(client.local_addr().unwrap()));
        let mut conn = std::net::TcpStream::from(got[0].0.try_clone().unwrap());
        conn.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
    assert!(handle.remove(&mut lp));
    assert_eq!(lp.handler_count(), 0);
    drop(lp); // dropping the loop does not close it either
              // Still listening: the loop never closes a borrowed listener.
    let _again = TcpStream::connect(addr).unwrap();
    listener.set_nonblocking(false).unwrap();
    let (conn, _) = listener.accept().unwrap();
    drop(conn);
}

fn a_borrowed_listener_stays_open_after_its_handler_is_removed<P: Poller + OpenPoller + 'static>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = static_listener();
    let handle = add_accept_handler(&mut lp, listener, |_, _, _| panic!("never runs"))
        .map_err(|r| r.error)
        .unwrap();
    assert!(handle.remove(&mut lp));
    assert!(!handle.remove(&mut lp), "removing twice is a no-op");
    let _client = TcpStream::connect(addr).unwrap();
    run_for(&mut lp, Duration::from_millis(20));
    // Still listening, and now non-blocking (add_accept_handler switched it).
    let (conn, _) = listener.accept().unwrap();
    drop(conn);
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

/// A refusal hands back the listener and the callback, as the loop's own `add_*` do.
fn a_refused_accept_handler_hands_back_the_listener_and_the_callback<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: EventLoop<P, 1, 4, 4> = EventLoop::new().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    lp.add_handler(&a, ioloop::Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    let (listener, _) = local_listener();
    let raw = listener.as_raw_fd();
    let refused = add_accept_handler(&mut lp, listener, |_, _, _| {}).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Handlers
        }
    );
    let (listener, _callback) = refused.into_inner();
    let owned = listener
        .into_owned()
        .expect("the owned listener comes back");
    assert_eq!(owned.as_raw_fd(), raw);

    // The same fd twice: the first handler stays.
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, _) = static_listener();
    let first = add_accept_handler(&mut lp, listener, |_, _, _| {})
        .map_err(|r| r.error)
        .unwrap();
    let refused = add_accept_handler(&mut lp, listener, |_, _, _| {}).unwrap_err();
    assert_eq!(
        refused.error,
        Error::AlreadyRegistered {
            fd: raw_of(listener)
        }
    );
    assert!(matches!(refused.value, (Listener::Borrowed(_), _)));
    assert!(first.is_active(&lp));
}

fn raw_of(l: &TcpListener) -> i32 {
    l.as_raw_fd()
}

/// A listener whose `accept` keeps failing (here a readable UDP socket: `EOPNOTSUPP`) is
/// disarmed and retried after a growing delay, each failure reported to the error hook: a few
/// handler calls over 500 ms where a level-triggered retry would make thousands.
fn a_failing_accept_backs_off_instead_of_spinning<P: Poller + OpenPoller + 'static>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    let reports: Rc<RefCell<Vec<HandlerError>>> = Rc::default();
    let r = reports.clone();
    lp.set_error_hook(move |f| {
        let Failure::Handler { error, .. } = f else {
            return;
        };
        r.borrow_mut().push(error);
    });
    let handle = add_accept_handler(&mut lp, OwnedFd::from(udp), |_, _, _| {
        panic!("nothing to accept")
    })
    .map_err(|r| r.error)
    .unwrap();
    let before = lp.counters();
    run_for(&mut lp, Duration::from_millis(500));
    let after = lp.counters();
    let reports = reports.borrow();
    // Reported at about 0, 100 and 300 ms (delays 100, 200, 400 ms): retried, not spun.
    assert!(
        (2..=6).contains(&reports.len()),
        "back-offs reported: {}",
        reports.len()
    );
    assert!(reports
        .iter()
        .all(|e| *e == HandlerError::Os(ioloop::Errno(libc::EOPNOTSUPP))));
    assert!(
        after.events_dispatched - before.events_dispatched < 20,
        "handler calls: {}",
        after.events_dispatched - before.events_dispatched
    );
    assert!(
        after.iterations - before.iterations < 1000,
        "no spinning: {} iterations",
        after.iterations - before.iterations
    );
    assert!(handle.is_active(&lp), "backing off keeps the handler");
}

for_each_poller!(cases:
    accepted_connections_are_nonblocking_cloexec_and_carry_the_peer_address,
    unix_socket_connections_are_accepted_without_a_peer_address,
    one_readiness_accepts_at_most_128_connections,
    removing_the_handle_inside_the_callback_ends_the_batch_and_closes_an_owned_listener,
    a_static_borrowed_listener_accepts_and_stays_open_after_its_handler_is_removed,
    a_borrowed_listener_stays_open_after_its_handler_is_removed,
    a_refused_accept_handler_hands_back_the_listener_and_the_callback,
    a_failing_accept_backs_off_instead_of_spinning,
);

/// epoll reports a TCP socket that never listened as HUP (no READ): the handler removes itself
/// and says why, instead of being called every iteration by the level-triggered HUP.
#[cfg(target_os = "linux")]
#[test]
fn a_socket_that_cannot_accept_removes_its_handler_instead_of_spinning() {
    use ioloop::accept::LISTENER_FAILED;
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    let mut lp: Lp<ioloop::linux::Epoll> = EventLoop::new().unwrap();
    let sock = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let reports = hooks::handler_errors(&mut lp);
    let handle = add_accept_handler(&mut lp, sock, |_, _, _| panic!("nothing to accept"))
        .map_err(|r| r.error)
        .unwrap();
    run_for(&mut lp, Duration::from_millis(50));
    assert_eq!(
        *reports.borrow(),
        vec![HandlerError::Other(LISTENER_FAILED)]
    );
    assert!(!handle.is_active(&lp));
    assert_eq!(lp.handler_count(), 0);
}

// ---- Back-pressure: add_accept_handler_limited ------------------------------------------------

use ioloop::accept::{add_accept_handler_limited, AcceptLimit};

/// Whether a client's connection is still open and unanswered (not reset, not closed).
fn still_waiting(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    matches!((&*c).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn the_limit_pauses_accepting_and_release_resumes<P: Poller + OpenPoller + 'static>(
    limit: &'static AcceptLimit,
) {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    let got: Rc<RefCell<Vec<OwnedFd>>> = Rc::default();
    let g = got.clone();
    add_accept_handler_limited(&mut lp, listener, limit, move |_, conn, _| {
        g.borrow_mut().push(conn)
    })
    .map_err(|r| r.error)
    .unwrap();
    let clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    run_until(&mut lp, Duration::from_secs(5), || got.borrow().len() == 2);
    run_for(&mut lp, Duration::from_millis(30));
    assert_eq!(got.borrow().len(), 2, "no accept beyond the limit");
    let s = limit.stats();
    assert_eq!((s.accepted, s.current, s.paused, s.resumed), (2, 2, 1, 0));
    assert!(limit.is_paused());
    assert!(
        clients.iter().all(still_waiting),
        "the excess waits in the backlog: nobody is reset or closed"
    );
    // Each connection that ends lets one more in, until all were served.
    for served in 3..=5 {
        drop(got.borrow_mut().remove(0));
        limit.release(&mut lp);
        run_until(&mut lp, Duration::from_secs(5), || {
            limit.stats().accepted == served
        });
        assert_eq!(limit.stats().accepted, served);
    }
    let s = limit.stats();
    assert_eq!((s.accepted, s.high_water), (5, 2), "{s:?}");
    assert!(s.resumed >= 3);
}

fn a_full_handler_table_pauses_accepting_instead_of_dropping<P: Poller + OpenPoller + 'static>(
    limit: &'static AcceptLimit,
) {
    // 8 handler slots: the listener and 7 connections.
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    let fds: Rc<RefCell<Vec<i32>>> = Rc::default();
    let refused = Rc::new(Cell::new(0));
    let (f, r) = (fds.clone(), refused.clone());
    add_accept_handler_limited(&mut lp, listener, limit, move |lp, conn, _| {
        let fd = conn.as_raw_fd();
        match lp.add_owned_handler(conn, ioloop::Interest::READ, |_, _, _| Ok(())) {
            Ok(_) => f.borrow_mut().push(fd),
            Err(_) => r.set(r.get() + 1),
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    let clients: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    run_until(&mut lp, Duration::from_secs(5), || fds.borrow().len() == 7);
    run_for(&mut lp, Duration::from_millis(30));
    assert_eq!(fds.borrow().len(), 7);
    assert_eq!(refused.get(), 0, "never accepted without a handler slot");
    assert!(limit.stats().paused >= 1);
    assert!(
        clients.iter().all(still_waiting),
        "accepted or waiting in the backlog: nobody is reset or closed"
    );
    // Three connections end: the pause re-checks and the rest are accepted.
    for _ in 0..3 {
        let fd = fds.borrow_mut().remove(0);
        assert!(lp.remove_handler(fd));
        limit.release(&mut lp);
    }
    run_until(&mut lp, Duration::from_secs(5), || {
        limit.stats().accepted == 10
    });
    assert_eq!(limit.stats().accepted, 10);
    assert_eq!(refused.get(), 0);
}

mod limited {
    use super::*;

    for_each_poller! {
        #[test]
        fn the_limit_pauses_accepting_and_release_resumes() {
            static LIMIT: AcceptLimit = AcceptLimit::new(2);
            super::super::the_limit_pauses_accepting_and_release_resumes::<P>(&LIMIT);
        }

        #[test]
        fn a_full_handler_table_pauses_accepting_instead_of_dropping() {
            static LIMIT: AcceptLimit = AcceptLimit::new(100);
            super::super::a_full_handler_table_pauses_accepting_instead_of_dropping::<P>(&LIMIT);
        }
    }
}

/// The limit names its listener by fd and registration: once that accept handler is gone,
/// `release` re-arms nothing (not a handler that later took the same fd number) and the
/// limit stays paused, counting no resume.
#[test]
fn release_after_the_accept_handler_is_gone_resumes_nothing() {
    use ioloop::accept::{add_accept_handler_limited, AcceptLimit};
    static LIMIT: AcceptLimit = AcceptLimit::new(1);
    let mut lp: Lp<ioloop::DefaultPoller> = EventLoop::new().unwrap();
    let (listener, addr) = local_listener();
    let fd = listener.as_raw_fd();
    let got: Rc<RefCell<Vec<OwnedFd>>> = Rc::default();
    let g = got.clone();
    let handle = add_accept_handler_limited(&mut lp, listener, &LIMIT, move |_, conn, _| {
        g.borrow_mut().push(conn)
    })
    .map_err(|r| r.error)
    .unwrap();
    let _clients: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    run_until(&mut lp, Duration::from_secs(5), || got.borrow().len() == 1);
    run_for(&mut lp, Duration::from_millis(20));
    assert!(LIMIT.is_paused());
    assert!(handle.remove(&mut lp)); // closes the listener: its fd number is free again
                                     // Another socket takes the number, with a handler watching nothing yet.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let reused = other.as_raw_fd() == fd;
    lp.add_handler(&other, ioloop::Interest::empty(), |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    drop(got.borrow_mut().pop());
    LIMIT.release(&mut lp);
    let s = LIMIT.stats();
    assert_eq!((s.current, s.resumed), (0, 0), "{s:?}");
    assert!(LIMIT.is_paused());
    if reused {
        // The newcomer keeps the interest it asked for: nothing was re-armed for READ.
        run_for(&mut lp, Duration::from_millis(5));
    }
    assert!(lp.remove_handler(&other));
}
