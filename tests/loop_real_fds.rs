//! The loop behaviours that touch real fds, on real socketpairs, once per poller (as mio runs
//! its suite again with the fallback backend). Timing is never asserted beyond "not early".

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{Errno, Error, EventLoop, HandlerError, Interest, OpenPoller, Poller, Readiness};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
#[path = "common/fds.rs"]
mod fds;
use fds::{drain, pair};

#[path = "common/fd_identity.rs"]
mod fd_identity;
use fd_identity::{identity, still_open};

fn read_only_handler_on_a_writable_socket_sees_read_only<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, mut b) = pair();
    let seen = Rc::new(Cell::new(Readiness::empty()));
    let s = seen.clone();
    lp.add_handler(&a, Interest::READ, move |_, fd, r| {
        s.set(s.get() | r);
        drain(fd);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(
        seen.get(),
        Readiness::empty(),
        "a writable socket does not wake a READ handler"
    );
    b.write_all(b"x").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(seen.get(), Readiness::READ);
}

fn write_handler_sees_write_and_update_handler_switches_it_off<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, _b) = pair();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(&a, Interest::WRITE, move |lp, fd, r| {
        assert!(r.contains(Readiness::WRITE));
        c.set(c.get() + 1);
        lp.update_handler(fd, Interest::READ)
            .map_err(|_| HandlerError::Other("update"))
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    lp.run_once(Some(Duration::from_millis(10))).unwrap();
    assert_eq!(calls.get(), 1);
}

fn closed_peer_reports_hangup<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, b) = pair();
    let seen = Rc::new(Cell::new(Readiness::empty()));
    let s = seen.clone();
    lp.add_handler(&a, Interest::READ, move |lp, fd, r| {
        s.set(r);
        lp.remove_handler(fd);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    drop(b);
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    // epoll and poll say HUP; select can only say READ (read returns 0).
    assert!(
        seen.get().intersects(Readiness::READ | Readiness::HUP),
        "{:?}",
        seen.get()
    );
}

fn handler_that_removes_another_ready_fds_handler_prevents_its_call<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a1, mut b1) = pair();
    let (a2, mut b2) = pair();
    let fds = [a1.as_raw_fd(), a2.as_raw_fd()];
    let calls = Rc::new(Cell::new(0));
    for (me, other) in [(fds[0], fds[1]), (fds[1], fds[0])] {
        let c = calls.clone();
        lp.add_handler(me, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            drain(fd);
            lp.remove_handler(other);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    b1.write_all(b"x").unwrap();
    b2.write_all(b"x").unwrap();
    // Both are ready before the loop polls: one poll reports both.
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(calls.get(), 1);
    drop((a1, a2));
}

fn reused_fd_number_does_not_get_the_old_registrations_event<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a1, mut b1) = pair();
    let (a2, mut b2) = pair();
    let victim = a2.as_raw_fd();
    let victim_owned: Rc<RefCell<Option<UnixStream>>> = Rc::new(RefCell::new(Some(a2)));
    let keep_alive: Rc<RefCell<Vec<OwnedFd>>> = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::new(RefCell::new(Vec::<&str>::new()));
    let (v, k, l) = (victim_owned.clone(), keep_alive.clone(), log.clone());
    let first = a1.as_raw_fd().min(victim);
    let other = if first == victim {
        a1.as_raw_fd()
    } else {
        victim
    };
    // Whichever of the two is dispatched first replaces the victim (if it is not the victim)
    // with a new socket under the same number. `dup2` closes the old file and reuses the
    // number in one step: a close followed by an open would race with the other tests'
    // threads for the freed number (which the kernel hands to the lowest-numbered open).
    let make = move |me: i32| {
        let (v, k, l) = (v.clone(), k.clone(), l.clone());
        move |lp: &mut EventLoop<P, 8, 8, 8>, fd: i32, _r: Readiness| -> Result<(), HandlerError> {
            drain(fd);
            if me == victim {
                l.borrow_mut().push("old handler of the victim");
                return Ok(());
            }
            lp.remove_handler(victim);
            let Some(old) = v.borrow_mut().take() else {
                return Ok(());
            };
            let mut reused = OwnedFd::from(old);
            let (new_a, new_b) = pair();
            rustix::io::dup2(&new_a, &mut reused).map_err(|_| HandlerError::Other("dup2"))?;
            assert_eq!(reused.as_raw_fd(), victim, "dup2 keeps the number");
            let l2 = l.clone();
            lp.add_handler(victim, Interest::READ | Interest::WRITE, move |_, _, _| {
                l2.borrow_mut().push("new handler of the victim");
                Ok(())
            })
            .map_err(|_| HandlerError::Other("re-add"))?;
            k.borrow_mut().extend([reused, new_a.into(), new_b.into()]);
            Ok(())
        }
    };
    lp.add_handler(first, Interest::READ, make(first))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(other, Interest::READ, make(other))
        .map_err(|r| r.error)
        .unwrap();
    b1.write_all(b"x").unwrap();
    b2.write_all(b"x").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    let got = log.borrow().clone();
    // If the victim ran first nothing was replaced; otherwise its event was dropped.
    assert!(
        got.is_empty() || got == ["old handler of the victim"],
        "a new handler of a reused fd number got the old registration's event: {got:?}"
    );
    drop(keep_alive);
}

/// Adds a READ handler on `fd` that drains it and counts its calls; returns the count.
fn counting_drainer<P: Poller + 'static>(
    lp: &mut EventLoop<P, 8, 8, 8>,
    fd: impl Into<loop_core::Fd>,
) -> Rc<Cell<u32>> {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(fd, Interest::READ, move |_, fd, _| {
        c.set(c.get() + 1);
        drain(fd);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    calls
}

fn duplicate_add_is_refused_and_the_first_handler_still_fires<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, mut b) = pair();
    let first = counting_drainer(&mut lp, &a);
    let refused = lp
        .add_handler(&a, Interest::READ, |_, _, _| panic!("second handler ran"))
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::AlreadyRegistered { fd: a.as_raw_fd() }
    );
    b.write_all(b"x").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.get(), 1);
}

/// An fd number that is closed and stays closed while this test binary runs, though its tests
/// open and close fds on other threads at the same time.
///
/// Dropping a freshly opened fd is not enough: another test's `socketpair` gets the lowest free
/// number, very likely the one just closed (the flake of issue 10, defect 16). The kernel
/// hands out the *lowest* free number, so a number high above everything in use is reused only
/// once every number below it is open: `F_DUPFD_CLOEXEC` finds the first free number at or
/// above 1000 (select's `FD_SETSIZE` is 1024, and the number must be representable there too),
/// and closing it leaves a hole that only a process holding ~1000 fds could fill. This binary
/// holds a few dozen at most (8 tests in parallel, each a loop and two socketpairs).
fn certainly_closed_fd() -> i32 {
    let (a, _b) = pair();
    // Smaller floors only if RLIMIT_NOFILE is below 1001 (F_DUPFD then fails with EINVAL).
    for floor in [1000, 900, 500] {
        if let Ok(high) = rustix::io::fcntl_dupfd_cloexec(&a, floor) {
            let n = high.as_raw_fd();
            drop(high);
            return n;
        }
    }
    panic!("RLIMIT_NOFILE below 501: no room for a number nobody else will open");
}

fn closed_fd_is_refused_with_the_kernels_error<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let n = certainly_closed_fd();
    let refused = lp
        .add_handler(n, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            refused.error,
            Error::Os {
                errno: Errno::EBADF
            }
        ),
        "closed fd: {:?}",
        refused.error
    );
    assert_eq!(lp.handler_count(), 0);
}

/// The epoll dup trap (issue 10, defect 15): a handler's fd is `dup`ed, the original closed
/// without removing the handler, data arrives, and `remove_handler`'s `EPOLL_CTL_DEL` fails with
/// `EBADF`. The registration lives on through the dup and would be reported at every wait —
/// a loop spinning with no handler. After the removal no wait may report anything (checked
/// on the poller itself with a zero timeout: an immediate answer, no timing), and the other
/// handlers still fire.
fn dup_trap_does_not_spin<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, mut a_peer) = pair();
    let (c, mut c_peer) = pair();
    let calls = Rc::new(Cell::new(0));
    let k = calls.clone();
    // Never drains: level-triggered, its registration stays ready for good.
    lp.add_handler(&a, Interest::READ, move |_, _, _| {
        k.set(k.get() + 1);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    let other = counting_drainer(&mut lp, &c);
    let number = a.as_raw_fd();
    let dup = a.try_clone().unwrap();
    drop(a);
    a_peer.write_all(b"x").unwrap();

    assert!(lp.remove_handler(number));
    // epoll: the stale event for the removed key arrives once and makes the loop reset the
    // poller; poll and select forgot the fd with the handler.
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let mut events = [loop_core::PollEvent::default(); 8];
    assert_eq!(
        lp.poller_mut().wait(&mut events, Some(Duration::ZERO)),
        Ok(0),
        "no stale event after the handler is removed"
    );
    assert_eq!(calls.get(), 0);

    c_peer.write_all(b"y").unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(other.get(), 1, "the live handler still fires");
    assert_eq!(calls.get(), 0);
    drop(dup);
}

fn owned_fds_are_closed_on_removal_and_borrowed_ones_are_not<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, _b) = pair();
    let (c, _d) = pair();
    let owned: OwnedFd = a.into();
    let owned_no = owned.as_raw_fd();
    let borrowed_no = c.as_fd().as_raw_fd();
    let (owned_id, borrowed_id) = (identity(owned_no), identity(borrowed_no));
    lp.add_owned_handler(owned, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(&c, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(owned_no));
    assert!(lp.remove_handler(borrowed_no));
    assert!(
        !still_open(owned_no, owned_id),
        "the loop closes what it owns"
    );
    assert!(still_open(borrowed_no, borrowed_id), "and nothing else");
    // Dropping the loop closes owned fds still registered.
    let (e, _f) = pair();
    let e: OwnedFd = e.into();
    let e_no = e.as_raw_fd();
    let e_id = identity(e_no);
    lp.add_owned_handler(e, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    drop(lp);
    assert!(!still_open(e_no, e_id));
}

/// The `BorrowedFd` an owned handler receives stays valid for the whole call, even after the
/// handler removed itself (which used to close the fd at once); the fd closes on return.
fn owned_handler_that_removes_itself_keeps_its_fd_until_it_returns<
    P: Poller + OpenPoller + 'static,
>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, mut b) = pair();
    let raw = a.as_raw_fd();
    let before = identity(raw);
    b.write_all(b"x").unwrap();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    lp.add_owned_handler(a, Interest::READ, move |lp, fd, _| {
        assert!(lp.remove_handler(fd));
        let after = identity(fd.as_raw_fd());
        let mut buf = [0u8; 4];
        let read = rustix::io::read(fd, &mut buf).map(|n| buf[..n].to_vec());
        *s.borrow_mut() = Some((after, read));
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::from_secs(5))).unwrap();
    let (after, read) = seen.borrow_mut().take().expect("the handler ran");
    assert_eq!(after, before, "still the same socket after removing itself");
    assert_eq!(read, Ok(b"x".to_vec()), "and still readable");
    assert_eq!(lp.handler_count(), 0);
    assert!(!still_open(raw, before), "closed once the handler returned");
}

fn timers_fire_not_early_and_callbacks_run_on_the_real_clock<P: Poller + OpenPoller + 'static>() {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    let start = lp.now();
    let fired_at = Rc::new(Cell::new(None));
    let f = fired_at.clone();
    lp.call_later(Duration::from_millis(3), move |lp| {
        f.set(Some(lp.now()));
        lp.add_callback(|lp| lp.stop()).map_err(drop).unwrap();
    })
    .unwrap();
    lp.run().unwrap();
    let elapsed = fired_at.get().unwrap() - start;
    assert!(
        elapsed >= Duration::from_millis(3),
        "fired early: {elapsed:?}"
    );
}

for_each_poller!(cases:
    read_only_handler_on_a_writable_socket_sees_read_only,
    write_handler_sees_write_and_update_handler_switches_it_off,
    closed_peer_reports_hangup,
    handler_that_removes_another_ready_fds_handler_prevents_its_call,
    reused_fd_number_does_not_get_the_old_registrations_event,
    duplicate_add_is_refused_and_the_first_handler_still_fires,
    closed_fd_is_refused_with_the_kernels_error,
    dup_trap_does_not_spin,
    owned_fds_are_closed_on_removal_and_borrowed_ones_are_not,
    owned_handler_that_removes_itself_keeps_its_fd_until_it_returns,
    timers_fire_not_early_and_callbacks_run_on_the_real_clock,
);

#[cfg(target_os = "linux")]
#[test]
fn epoll_refuses_a_regular_file_with_eperm() {
    let mut lp: EventLoop<ioloop::linux::Epoll, 8, 8, 8> = EventLoop::new().unwrap();
    let f = std::fs::File::open("Cargo.toml").unwrap();
    let refused = lp
        .add_handler(&f, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Os {
            errno: Errno::EPERM
        }
    );
}

#[test]
fn read_drains_what_the_peer_wrote() {
    // Sanity for the helpers above: drain() really reads.
    let (a, mut b) = pair();
    b.write_all(b"hello").unwrap();
    drain(a.as_raw_fd());
    let mut buf = [0u8; 1];
    assert!((&a).read(&mut buf).is_err());
}
