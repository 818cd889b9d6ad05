//! Edges of owned handlers (`add_owned_handler*`, whose handler borrows its fd) and of deferred
//! removal (`set_deferred_removal(true)`, libev's `fdchanges`), on every real poller: the fd a
//! handler borrows stays open for the whole call and is closed once after; a refusal hands the
//! fd back open; a deferred removal never lets the removed handler's file report again, even
//! when the number is closed, reused or `dup2`'d over before the next poll.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{Error, EventLoop, Interest, OpenPoller, Poller, Readiness};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
#[path = "common/fds.rs"]
mod fds;
use fds::{drain, pair};

type Lp<P> = EventLoop<P, 8, 8, 8>;

fn new_loop<P: Poller + OpenPoller + 'static>() -> Box<Lp<P>> {
    Lp::<P>::new_boxed().unwrap()
}

/// Whether `fd` still names the socket whose peer is `peer`: a byte written through a `dup` of
/// it arrives there.
fn names_the_socket_of(fd: BorrowedFd<'_>, peer: &UnixStream) -> bool {
    let Ok(dup) = fd.try_clone_to_owned() else {
        return false;
    };
    if (&UnixStream::from(dup)).write_all(b"!").is_err() {
        return false;
    }
    peer.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    matches!((&*peer).read(&mut byte), Ok(1)) && byte == *b"!"
}

/// The peer reads end-of-file (or a reset): every copy of the other end was closed.
fn peer_sees_eof(peer: &UnixStream) -> bool {
    peer.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    loop {
        match (&*peer).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            // Closed with our bytes unread: Linux reports the reset instead of end-of-file.
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A counter a handler bumps, and the handler (it drains its fd).
fn counting<P: Poller + 'static>(
    calls: &Rc<Cell<u32>>,
) -> impl FnMut(&mut Lp<P>, RawFd, Readiness) -> Result<(), loop_core::HandlerError> {
    let calls = calls.clone();
    move |_, fd, r| {
        calls.set(calls.get() + 1);
        if r.contains(Readiness::READ) {
            drain(fd);
        }
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------------
// owned handlers
// ----------------------------------------------------------------------------------------------

/// A handler that removes itself and then registers a new owned fd: the new fd cannot get the
/// old number (still open while the handler runs), the old fd still names its socket after
/// both, and it is closed once the handler returns.
fn owned_handler_removing_itself_then_adding_a_new_fd_keeps_its_fd_until_it_returns<
    P: Poller + OpenPoller + 'static,
>() {
    for deferred in [false, true] {
        let mut lp = new_loop::<P>();
        lp.set_deferred_removal(deferred);
        let (ours, peer) = pair();
        let old = ours.as_raw_fd();
        let peer = Rc::new(peer);
        let seen = Rc::new(Cell::new(None));
        let new_peer: Rc<Cell<Option<UnixStream>>> = Rc::new(Cell::new(None));
        let (s, p, np) = (seen.clone(), peer.clone(), new_peer.clone());
        lp.add_owned_handler(ours, Interest::READ, move |lp, fd, _| {
            assert!(lp.remove_handler(fd));
            let (next, next_peer) = pair();
            let new = next.as_raw_fd();
            lp.add_owned_handler(next, Interest::READ, |_, _, _| Ok(()))?;
            np.set(Some(next_peer));
            s.set(Some((new != fd.as_raw_fd(), names_the_socket_of(fd, &p))));
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        (&*peer).write_all(b"x").unwrap();
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            seen.get(),
            Some((true, true)),
            "deferred={deferred}: a new number, and the old fd open for the whole call"
        );
        assert!(
            peer_sees_eof(&peer),
            "deferred={deferred}: closed after the call"
        );
        assert_eq!(lp.handler_count(), 1);
        // The number may be reused now; the loop must not close it again.
        let (reuse, reuse_peer) = pair();
        lp.close();
        drop(lp);
        assert!(
            names_the_socket_of(reuse.as_fd(), &reuse_peer),
            "deferred={deferred}: a reused number ({old}) is not closed by the loop"
        );
        drop(new_peer);
    }
}

/// Every refusal of `add_owned_handler` hands the fd back open (a closed loop; a full table),
/// and `?` turns the refusal into the loop's error.
fn owned_handler_refusals_hand_the_fd_back_open<P: Poller + OpenPoller + 'static>() {
    // Full: a loop with room for one handler.
    let mut lp = EventLoop::<P, 1, 4, 4>::new_boxed().unwrap();
    let (first, _first_peer) = pair();
    lp.add_owned_handler(first, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    let (ours, peer) = pair();
    let refused = lp
        .add_owned_handler(ours, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert!(matches!(refused.error, Error::Full { .. }));
    let (fd, _handler): (OwnedFd, _) = refused.value;
    assert!(
        names_the_socket_of(fd.as_fd(), &peer),
        "full: handed back open"
    );

    // Closed.
    let mut lp = new_loop::<P>();
    lp.close();
    let refused = lp
        .add_owned_handler(fd, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(refused.error, Error::Closed);
    let (fd, _handler) = refused.value;
    assert!(
        names_the_socket_of(fd.as_fd(), &peer),
        "closed: handed back open"
    );

    // With state: the fd and the state come back.
    let refused = lp
        .add_owned_handler_with_state(fd, Interest::READ, 7u32, |_, _, _, _| Ok(()))
        .unwrap_err();
    let (fd, state, _handler) = refused.value;
    assert_eq!(state, 7);
    assert!(
        names_the_socket_of(fd.as_fd(), &peer),
        "with state: handed back open"
    );

    // `?` on the refusal.
    fn add<P: Poller + 'static>(lp: &mut Lp<P>, fd: OwnedFd) -> Result<(), Error> {
        lp.add_owned_handler(fd, Interest::READ, |_, _, _| Ok(()))?;
        Ok(())
    }
    assert_eq!(add(&mut lp, fd), Err(Error::Closed));
    // The refused fd was dropped by `?` (closed once): the peer sees end-of-file.
    assert!(peer_sees_eof(&peer));
}

/// A handler that panics after removing itself: its fd stays open until the unwind leaves the
/// handler, then is closed once; the loop runs on.
fn owned_handler_panicking_after_removing_itself_closes_its_fd_once<
    P: Poller + OpenPoller + 'static,
>() {
    for deferred in [false, true] {
        let mut lp = new_loop::<P>();
        lp.set_deferred_removal(deferred);
        let failures = Rc::new(Cell::new(0));
        let f = failures.clone();
        lp.set_error_hook(move |_| f.set(f.get() + 1));
        let (ours, peer) = pair();
        let peer = Rc::new(peer);
        let seen = Rc::new(Cell::new(false));
        let (s, p) = (seen.clone(), peer.clone());
        lp.add_owned_handler(ours, Interest::READ, move |lp, fd, _| {
            assert!(lp.remove_handler(fd));
            s.set(names_the_socket_of(fd, &p));
            panic!("after removing itself");
        })
        .map_err(|r| r.error)
        .unwrap();
        (&*peer).write_all(b"x").unwrap();
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
        assert!(seen.get(), "deferred={deferred}: open during the call");
        assert_eq!(failures.get(), 1);
        assert!(
            peer_sees_eof(&peer),
            "deferred={deferred}: closed after the unwind"
        );
        assert_eq!(lp.handler_count(), 0);
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
}

// ----------------------------------------------------------------------------------------------
// deferred removal
// ----------------------------------------------------------------------------------------------

/// With deferral on, removing an owned handler whose file lives on in a `dup` (a `try_clone`,
/// a forked child, an fd passed on) must not leave its registration behind: the deferral's own
/// documentation promises "an owned fd deregistered and closed at once". Had the loop closed
/// the fd first and deregistered later, epoll's registration would outlive the number (the dup
/// trap) and report the dup's readiness for a dead key.
fn deferred_removal_of_an_owned_handler_with_a_live_dup_reports_nothing_for_it<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (ours, peer) = pair();
    let raw = ours.as_raw_fd();
    let dup = ours.try_clone().unwrap();
    let calls = Rc::new(Cell::new(0u32));
    let c = calls.clone();
    lp.add_owned_handler(ours, Interest::READ, move |_, _, _| {
        c.set(c.get() + 1);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(lp.remove_handler(raw));
    // Readable through the dup, which keeps the file (and any registration of it) alive.
    (&peer).write_all(b"x").unwrap();
    for _ in 0..3 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            lp.counters().events_last_poll,
            0,
            "the removed owned fd's file reported an event"
        );
    }
    assert_eq!(calls.get(), 0);
    drop(dup);
}

/// Remove, close, and a new file gets the same number and is added before the next poll: the
/// new handler sees the new file's events, the old handler nothing.
fn deferred_remove_close_and_reuse_of_the_number_watches_the_new_file<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (ours, old_peer) = pair();
    let raw = ours.as_raw_fd();
    let (old, new) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    lp.add_handler(raw, Interest::READ, counting::<P>(&old))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(lp.remove_handler(raw));
    // Close and reuse in one step: `dup2` closes the old file (its last reference) and puts
    // the new one at the same number atomically, so a test running in parallel cannot take
    // the number in between (as "close, then the lowest free number" could).
    let (fresh, new_peer) = pair();
    let mut reused = OwnedFd::from(ours);
    rustix::io::dup2(&fresh, &mut reused).unwrap();
    drop(fresh);
    assert_eq!(reused.as_raw_fd(), raw);
    lp.add_handler(raw, Interest::READ, counting::<P>(&new))
        .map_err(|r| r.error)
        .unwrap();
    (&old_peer).write_all(b"old").unwrap_or(());
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        (old.get(), new.get()),
        (0, 0),
        "nothing readable on the new file yet"
    );
    (&new_peer).write_all(b"new").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!((old.get(), new.get()), (0, 1));
    drop(reused);
}

/// Remove, then `dup2` another file over the number (the removed file's last reference stays
/// in a dup), then add the number: only the new file's readiness reaches the new handler, and
/// the old file (readable through its dup) reports nothing, now or after a reset.
fn deferred_remove_then_dup2_over_the_number_watches_only_the_new_file<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (ours, old_peer) = pair();
    let raw = ours.as_raw_fd();
    let keep_old = ours.try_clone().unwrap();
    let (old, new) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    lp.add_handler(raw, Interest::READ, counting::<P>(&old))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(lp.remove_handler(raw));
    let (other, new_peer) = pair();
    // SAFETY: `raw` is `ours`, which is forgotten below (the number now names `other`'s file).
    let r = unsafe { libc::dup2(other.as_raw_fd(), raw) };
    assert_eq!(r, raw);
    std::mem::forget(ours);
    drop(other);
    lp.add_handler(raw, Interest::READ, counting::<P>(&new))
        .map_err(|r| r.error)
        .unwrap();
    (&old_peer).write_all(b"old").unwrap();
    for _ in 0..3 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(
        (old.get(), new.get()),
        (0, 0),
        "the old file's data reaches no handler"
    );
    (&new_peer).write_all(b"new").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!((old.get(), new.get()), (0, 1));
    lp.close();
    // SAFETY: `raw` is the dup2'd number, owned by nobody else now that the loop is closed.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    drop(keep_old);
}

/// More removals pending than the deferral list holds, each fd readable: none of the removed
/// handlers is called, every registration is gone from the poller, and re-adding them all works.
fn many_deferred_removals_at_once_are_all_applied<P: Poller + OpenPoller + 'static>() {
    let mut lp = EventLoop::<P, 64, 4, 4>::new_boxed().unwrap();
    lp.set_deferred_removal(true);
    let calls = Rc::new(Cell::new(0u32));
    let pairs: Vec<(UnixStream, UnixStream)> = (0..40).map(|_| pair()).collect();
    for (ours, _) in &pairs {
        let c = calls.clone();
        lp.add_handler(ours, Interest::READ, move |_, _, _| {
            c.set(c.get() + 1);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    for (_, peer) in &pairs {
        (&*peer).write_all(b"x").unwrap();
    }
    for (ours, _) in &pairs {
        assert!(lp.remove_handler(ours));
    }
    assert_eq!(lp.handler_count(), 0);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 0);
    assert_eq!(lp.counters().events_last_poll, 0);
    for (ours, _) in &pairs {
        let c = calls.clone();
        lp.add_handler(
            ours,
            Interest::READ,
            move |lp: &mut EventLoop<P, 64, 4, 4>, fd, _| {
                c.set(c.get() + 1);
                assert!(lp.remove_handler(fd));
                Ok(())
            },
        )
        .map_err(|r| r.error)
        .unwrap();
    }
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(calls.get(), 40, "each re-added handler once");
}

/// `update_handler` on a removed (deferred) fd is `NotRegistered` and changes nothing; the
/// removed handler is not called for the events of the interest it asked for.
fn update_handler_on_a_deferred_removal_is_not_registered<P: Poller + OpenPoller + 'static>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (ours, _peer) = pair();
    let calls = Rc::new(Cell::new(0));
    lp.add_handler(&ours, Interest::READ, counting::<P>(&calls))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(&ours));
    assert_eq!(
        lp.update_handler(&ours, Interest::WRITE),
        Err(Error::NotRegistered {
            fd: ours.as_raw_fd()
        })
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 0, "a writable socket, but no handler wants it");
    assert_eq!(lp.counters().events_last_poll, 0);
}

/// Remove (deferred), then close the loop: nothing is left registered, nothing called, and the
/// borrowed fd is not closed by the loop.
fn deferred_removal_then_loop_close_leaves_the_borrowed_fd_open<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (ours, peer) = pair();
    let calls = Rc::new(Cell::new(0));
    lp.add_handler(&ours, Interest::READ, counting::<P>(&calls))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(&ours));
    lp.close();
    assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Closed));
    drop(lp);
    assert_eq!(calls.get(), 0);
    assert!(names_the_socket_of(ours.as_fd(), &peer));
}

/// A handler removing another handler whose event is in the same poll: the removed one is not
/// called, with the deferral on, and neither is a handler added for that fd in the same pass.
fn deferred_removal_in_a_handler_drops_the_removed_handlers_pending_event<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp = new_loop::<P>();
    lp.set_deferred_removal(true);
    let (a, a_peer) = pair();
    let (b, b_peer) = pair();
    let (a_calls, b_calls, b2_calls) = (
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(0)),
    );
    let (ra, rb) = (a.as_raw_fd(), b.as_raw_fd());
    for (fd, calls) in [(ra, a_calls.clone()), (rb, b_calls.clone())] {
        let b2 = b2_calls.clone();
        let other = if fd == ra { rb } else { ra };
        lp.add_handler(fd, Interest::READ, move |lp: &mut Lp<P>, fd, _| {
            calls.set(calls.get() + 1);
            drain(fd);
            if lp.remove_handler(other) {
                let b2 = b2.clone();
                lp.add_handler(other, Interest::READ, move |_, fd, _| {
                    b2.set(b2.get() + 1);
                    drain(fd);
                    Ok(())
                })?;
            }
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    (&a_peer).write_all(b"x").unwrap();
    (&b_peer).write_all(b"x").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        a_calls.get() + b_calls.get(),
        1,
        "the first handler called removed the other, whose event is dropped"
    );
    assert_eq!(
        b2_calls.get(),
        0,
        "an add in this pass sees only later polls"
    );
    // The replacement sees the data still waiting on its fd, in the next pass.
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(b2_calls.get(), 1);
    drop((a, b));
}

/// A `dup` of `fd` at a number from 900 up (below select's `FD_SETSIZE`) that no other call in
/// this process ever gets, not even after it is closed: each call takes the next number from a
/// counter, and fds are otherwise allocated lowest first, far below.
fn high_dup(fd: &impl AsFd) -> OwnedFd {
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(900);
    let min = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: F_DUPFD of an open fd returns a new fd this process owns, or -1.
    let raw = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    assert!(raw >= min && raw < 1024, "F_DUPFD failed");
    // SAFETY: `raw` was just returned by F_DUPFD: open, and owned by nobody else.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}

/// Remove (deferred), close, then add the same number while it is still closed: the add is
/// refused with `EBADF` as a plain add of a closed fd is, on every poller (the take-over's
/// `modify` must not accept a closed fd that select would then fail every wait on, or poll
/// report as `POLLNVAL`), and the loop goes on.
fn deferred_remove_close_then_add_of_the_closed_number_is_refused<
    P: Poller + OpenPoller + 'static,
>() {
    for deferred in [false, true] {
        let mut lp = new_loop::<P>();
        lp.set_deferred_removal(deferred);
        let (ours, _peer) = pair();
        let high = high_dup(&ours);
        let raw = high.as_raw_fd();
        let calls = Rc::new(Cell::new(0));
        lp.add_handler(raw, Interest::READ, counting::<P>(&calls))
            .map_err(|r| r.error)
            .unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert!(lp.remove_handler(raw));
        drop(high);
        let added = lp
            .add_handler(raw, Interest::READ, counting::<P>(&calls))
            .map(|_| ())
            .map_err(|r| r.error);
        assert_eq!(
            added,
            Err(Error::Os {
                errno: loop_core::Errno::EBADF
            }),
            "deferred={deferred}: a closed fd is refused"
        );
        assert_eq!(lp.handler_id(raw), None);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 0);
    }
}

/// A handler that closes its loop (with deferral on or off): its fd stays open for the rest of
/// the call, the loop never calls it again, and it is closed once after the call.
fn owned_handler_closing_its_loop_keeps_its_fd_until_it_returns<
    P: Poller + OpenPoller + 'static,
>() {
    for deferred in [false, true] {
        let mut lp = new_loop::<P>();
        lp.set_deferred_removal(deferred);
        let (ours, peer) = pair();
        let peer = Rc::new(peer);
        let seen = Rc::new(Cell::new(None));
        let calls = Rc::new(Cell::new(0));
        let (s, p, c) = (seen.clone(), peer.clone(), calls.clone());
        lp.add_owned_handler(ours, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.close();
            s.set(Some(names_the_socket_of(fd, &p)));
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        (&*peer).write_all(b"x").unwrap();
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            seen.get(),
            Some(true),
            "deferred={deferred}: open during the call"
        );
        assert!(
            peer_sees_eof(&peer),
            "deferred={deferred}: closed after the call"
        );
        assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Closed));
        assert_eq!(calls.get(), 1);
    }
}

for_each_poller!(cases:
    owned_handler_removing_itself_then_adding_a_new_fd_keeps_its_fd_until_it_returns,
    owned_handler_refusals_hand_the_fd_back_open,
    owned_handler_panicking_after_removing_itself_closes_its_fd_once,
    deferred_removal_of_an_owned_handler_with_a_live_dup_reports_nothing_for_it,
    deferred_remove_close_and_reuse_of_the_number_watches_the_new_file,
    deferred_remove_then_dup2_over_the_number_watches_only_the_new_file,
    many_deferred_removals_at_once_are_all_applied,
    update_handler_on_a_deferred_removal_is_not_registered,
    deferred_removal_then_loop_close_leaves_the_borrowed_fd_open,
    deferred_removal_in_a_handler_drops_the_removed_handlers_pending_event,
    deferred_remove_close_then_add_of_the_closed_number_is_refused,
    owned_handler_closing_its_loop_keeps_its_fd_until_it_returns,
);

/// On the simulated poller: an owned handler's deregistration is not deferred (it happens in
/// `remove_handler`, before the fd is closed).
#[test]
fn deferred_removal_deregisters_an_owned_handler_at_once() {
    use loop_core::sim::SimPoller;
    let mut lp: EventLoop<SimPoller<8>, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    lp.set_deferred_removal(true);
    let (ours, _peer) = pair();
    let raw = ours.as_raw_fd();
    lp.add_owned_handler(ours, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(raw));
    assert_eq!(lp.poller().stats().deregisters, 1);
}
