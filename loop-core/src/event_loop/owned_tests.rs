//! Owned handlers receive a `BorrowedFd`: the fd must stay open for as long as that borrow
//! lives, whatever the handler does to its registration or to the loop (remove itself, close
//! the loop, replace and drop the loop, panic), and be closed exactly once afterwards.
//!
//! Real sockets on the simulated poller: the simulation reports readiness, the kernel carries
//! the bytes. "Closed" is checked on the kernel side: the peer sees end-of-file (the loop's end
//! was closed). "Exactly once" holds by construction: the `OwnedFd` in the handler's closure
//! is the only thing that closes it (the `Poller` trait has no way to close an fd).

extern crate std;
use super::*;
use crate::panic::testing::without_catching;
use crate::sim::SimPoller;
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

type Lp = EventLoop<SimPoller<8>, 4, 4, 4>;

fn sim() -> Lp {
    EventLoop::with_poller(SimPoller::new())
}

/// Whether `fd` still names the socket whose peer is `peer`: a byte written through a `dup`
/// of it arrives there. A closed fd fails the `dup`; a reused number names another file.
fn names_the_socket_of(fd: BorrowedFd<'_>, peer: &UnixStream) -> bool {
    let Ok(dup) = fd.try_clone_to_owned() else {
        return false;
    };
    if (&UnixStream::from(dup)).write_all(b"!").is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!((&*peer).read(&mut byte), Ok(1)) && byte == *b"!"
}

/// The loop's end of a pair was closed: its peer reads end-of-file.
fn closed(peer: &UnixStream) -> bool {
    peer.set_nonblocking(true).unwrap();
    matches!((&*peer).read(&mut [0u8; 8]), Ok(0))
}

/// A loop with the owned end of a socket pair registered (READ, reported ready), the handler
/// doing `during` and then checking its fd; returns the loop, the peer and what the handler
/// saw (`Some(true)`: still the same socket after `during`).
fn run_owned(during: fn(&mut Lp, BorrowedFd<'_>)) -> (Lp, Rc<UnixStream>, Option<bool>) {
    let mut lp = sim();
    let (ours, peer) = UnixStream::pair().unwrap();
    let (raw, peer) = (ours.as_raw_fd(), Rc::new(peer));
    let seen = Rc::new(Cell::new(None));
    let (s, p) = (seen.clone(), peer.clone());
    lp.add_owned_handler(ours, Interest::READ, move |lp, fd, _| {
        during(lp, fd);
        s.set(Some(names_the_socket_of(fd, &p)));
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(raw, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    (lp, peer, seen.get())
}

#[test]
fn owned_handler_that_removes_itself_keeps_its_fd_until_it_returns() {
    let (lp, peer, seen) = run_owned(|lp, fd| assert!(lp.remove_handler(fd)));
    assert_eq!(seen, Some(true), "the borrowed fd named the same socket");
    assert_eq!(lp.handler_count(), 0);
    assert!(closed(&peer), "closed once the handler returned");
}

#[test]
fn owned_handler_that_closes_its_loop_keeps_its_fd_until_it_returns() {
    let (lp, peer, seen) = run_owned(|lp, _| lp.close());
    assert_eq!(seen, Some(true));
    assert!(lp.is_closed() && lp.handler_count() == 0);
    assert!(closed(&peer));
}

#[test]
fn owned_handler_that_drops_its_loop_keeps_its_fd_until_it_returns() {
    // `&mut` is enough to drop the loop: swap another in and drop the old one.
    let (lp, peer, seen) = run_owned(|lp, _| drop(core::mem::replace(lp, sim())));
    assert_eq!(seen, Some(true));
    assert!(closed(&peer));
    assert_eq!(lp.handler_count(), 0, "the new loop did not adopt it");
}

#[test]
fn owned_handler_fd_stays_open_while_registered_and_closes_with_the_loop() {
    let (mut lp, peer, seen) = run_owned(|_, _| {});
    assert_eq!(seen, Some(true));
    assert!(!closed(&peer), "still registered, still open");
    assert_eq!(lp.handler_count(), 1);
    lp.close();
    assert_eq!(lp.handler_count(), 0);
    assert!(closed(&peer));
}

/// The owned end of a pair, its handler removing itself and then panicking.
fn removes_itself_then_panics() -> (Lp, UnixStream, RawFd) {
    let mut lp = sim();
    let (ours, peer) = UnixStream::pair().unwrap();
    let raw = ours.as_raw_fd();
    lp.add_owned_handler(ours, Interest::READ, |lp, fd, _| {
        lp.remove_handler(fd);
        panic!("handler failed after removing itself");
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(raw, Readiness::READ);
    (lp, peer, raw)
}

#[test]
fn owned_handler_that_panics_after_removing_itself_has_its_fd_closed_once() {
    let (mut lp, peer, _) = removes_itself_then_panics();
    lp.set_error_hook(|_| {}); // caught and reported, not resumed
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().panics, 1, "caught and reported");
    assert_eq!(lp.handler_count(), 0);
    assert!(closed(&peer));
    drop(lp);
}

#[test]
fn owned_handler_that_unwinds_after_removing_itself_has_its_fd_closed_once() {
    let (mut lp, peer, _) = removes_itself_then_panics();
    let unwound = {
        let _unwind = without_catching();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.run_once(Some(Duration::ZERO));
        }))
        .is_err()
    };
    assert!(unwound);
    assert_eq!(lp.handler_count(), 0);
    assert!(
        closed(&peer),
        "the guard dropped the closure on the way out"
    );
}

#[test]
fn owned_handler_that_panics_stays_registered_with_its_fd_open() {
    let mut lp = sim();
    let (ours, peer) = UnixStream::pair().unwrap();
    let raw = ours.as_raw_fd();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.set_error_hook(|_| {});
    lp.add_owned_handler(ours, Interest::READ, move |_, _, _| {
        c.set(c.get() + 1);
        panic!("handler failed");
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(raw, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!((calls.get(), lp.counters().panics), (2, 2));
    assert!(!closed(&peer));
    drop(lp);
    assert!(closed(&peer), "dropping the loop closed it");
}

#[test]
fn owned_handler_with_state_gets_the_borrowed_fd_and_refusal_hands_everything_back() {
    let mut lp = sim();
    let (ours, peer) = UnixStream::pair().unwrap();
    let raw = ours.as_raw_fd();
    let seen = Rc::new(Cell::new(None));
    let handler = |seen: &mut Rc<Cell<Option<bool>>>, lp: &mut Lp, fd: BorrowedFd<'_>, _| {
        lp.close();
        seen.set(Some(fd.as_raw_fd() >= 0));
        Ok(())
    };
    lp.poller_mut().fail_next_register(crate::Errno::ENOMEM);
    let refused = lp
        .add_owned_handler_with_state(ours, Interest::READ, seen.clone(), handler)
        .unwrap_err();
    let (fd, state, handler) = refused.into_inner();
    assert_eq!(fd.as_raw_fd(), raw, "handed back open");
    assert!(!closed(&peer));
    lp.add_owned_handler_with_state(fd, Interest::READ, state, handler)
        .map_err(|r| r.error)
        .unwrap();
    lp.poller_mut().set_ready(raw, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.get(), Some(true));
    assert!(closed(&peer));
}

#[test]
fn owned_handler_removal_is_not_deferred_so_its_fd_closes_after_the_poller_forgot_it() {
    let mut lp = sim();
    lp.set_deferred_removal(true);
    let (ours, peer) = UnixStream::pair().unwrap();
    let raw = ours.as_raw_fd();
    lp.add_owned_handler(ours, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(7, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(7));
    assert!(
        lp.poller().interest(7).is_some(),
        "a borrowed fd's removal is deferred"
    );
    assert!(lp.remove_handler(raw));
    assert_eq!(lp.poller().interest(raw), None, "deregistered at once");
    assert!(closed(&peer), "then closed, with its closure");
}
