//! Edges of `ioloop::accept` with a listener borrowed as `&'static`: a limit whose handler was
//! removed while paused, reused by a new handler on the same listener (with deferred removal,
//! so the re-add takes the registration over); a back-off timer still pending when its handler
//! is replaced on the same fd number must not re-arm the newcomer. Real sockets, every poller.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioloop::accept::{add_accept_handler, add_accept_handler_limited, AcceptLimit};
use ioloop::{Interest, OpenPoller, Poller, Readiness};
use loop_core::EventLoop;

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

type Lp<P> = EventLoop<P, 8, 16, 16>;

/// The connections a callback received.
type Conns = Rc<RefCell<Vec<OwnedFd>>>;

/// A listener that lives as long as the program (leaked, as a `static` would be).
fn static_listener() -> (&'static TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (Box::leak(Box::new(l)), addr)
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

/// Limit 1: the first handler accepts one connection and pauses; it is removed while paused
/// and a second handler with the same limit takes the same `'static` listener over (deferred
/// removal on: one `modify`). The second stays paused while the first connection lives (the
/// limit counts connections, not handlers), and accepts the waiting client once it is
/// released; the first callback never runs again.
fn a_limit_reused_by_a_new_handler_after_removal_while_paused<P: Poller + OpenPoller + 'static>(
    limit: &'static AcceptLimit,
) {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    lp.set_deferred_removal(true);
    let (listener, addr) = static_listener();
    let first: Conns = Conns::default();
    let second: Conns = Conns::default();
    let f = first.clone();
    let handle = add_accept_handler_limited(&mut lp, listener, limit, move |_, conn, _| {
        f.borrow_mut().push(conn)
    })
    .map_err(|r| r.error)
    .unwrap();
    let _c1 = TcpStream::connect(addr).unwrap();
    let _c2 = TcpStream::connect(addr).unwrap();
    run_until(&mut lp, Duration::from_secs(5), || {
        first.borrow().len() == 1
    });
    run_for(&mut lp, Duration::from_millis(20));
    assert_eq!(first.borrow().len(), 1);
    assert!(limit.is_paused());
    assert!(handle.remove(&mut lp));
    let s = second.clone();
    let handle2 = add_accept_handler_limited(&mut lp, listener, limit, move |_, conn, _| {
        s.borrow_mut().push(conn)
    })
    .map_err(|r| r.error)
    .unwrap();
    assert_eq!(handle2.fd(), listener.as_raw_fd());
    run_for(&mut lp, Duration::from_millis(30));
    assert_eq!(
        (first.borrow().len(), second.borrow().len()),
        (1, 0),
        "no room while the first connection lives"
    );
    // The new handler paused on its own (the old handler's pause ended with it): counted.
    assert!(limit.is_paused());
    assert_eq!(limit.stats().paused, 2);
    drop(first.borrow_mut().pop());
    limit.release(&mut lp);
    run_until(&mut lp, Duration::from_secs(5), || {
        second.borrow().len() == 1
    });
    assert_eq!((first.borrow().len(), second.borrow().len()), (0, 1));
    assert_eq!(limit.stats().accepted, 2);
    assert!(handle2.remove(&mut lp));
}

/// An accept that fails (a readable UDP socket: `EOPNOTSUPP`) backs off: interest dropped, a
/// re-arm timer pending. The accept handler is then removed and a plain WRITE-only handler put
/// on the same fd number: when the stale timer fires it must not give the newcomer READ (the
/// UDP datagram is still waiting, so READ would be reported).
fn a_pending_back_off_timer_leaves_a_new_handler_on_the_same_fd_alone<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let udp: &'static UdpSocket = Box::leak(Box::new(UdpSocket::bind("127.0.0.1:0").unwrap()));
    udp.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    lp.set_error_hook(|_| {});
    let handle = add_accept_handler(&mut lp, udp, |_, _, _| panic!("nothing to accept"))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap(); // fails, backs off
    assert!(lp.timer_count() >= 1, "a re-arm timer is pending");
    assert!(handle.remove(&mut lp));
    let seen = Rc::new(Cell::new(Readiness::empty()));
    let s = seen.clone();
    lp.add_handler(udp, Interest::WRITE, move |_, _, r| {
        s.set(s.get() | r);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    // Past the back-off (BACKOFF_MIN), so the stale timer has fired.
    run_for(&mut lp, Duration::from_millis(300));
    assert_eq!(lp.timer_count(), 0, "the stale re-arm timer has fired");
    assert!(seen.get().contains(Readiness::WRITE));
    assert!(
        !seen.get().contains(Readiness::READ),
        "the stale back-off timer re-armed READ on another handler"
    );
    assert!(lp.remove_handler(udp));
}

for_each_poller!(cases: a_pending_back_off_timer_leaves_a_new_handler_on_the_same_fd_alone);

mod limited {
    use super::*;

    for_each_poller! {
        #[test]
        fn a_limit_reused_by_a_new_handler_after_removal_while_paused() {
            static LIMIT: AcceptLimit = AcceptLimit::new(1);
            super::super::a_limit_reused_by_a_new_handler_after_removal_while_paused::<P>(&LIMIT);
        }
    }
}
