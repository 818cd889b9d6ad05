//! `remove_handler` + `add_handler` of the same fd (libevent bench.c's `event_del` +
//! `event_add`), on real socketpairs, once per poller: what any coalescing of the two (libev's
//! `fdchanges`) must keep. The new handler alone is called, from the next poll on; a kernel
//! refusal of the add reaches the caller; a number closed and reused for another file in
//! between is watched as the new file. Every case runs with deferred removal off (each
//! removal deregisters at once) and on (`EventLoop::set_deferred_removal`: the removal's
//! deregistration waits for the next poll, and a re-add takes the registration over with one
//! `modify`).

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{Errno, Error, EventLoop, Interest, OpenPoller, Poller, Readiness};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
#[path = "common/fds.rs"]
mod fds;
use fds::{drain, pair};

type Log = Rc<RefCell<Vec<(&'static str, Readiness)>>>;

/// A handler that logs its name and readiness, and drains its fd when readable.
fn logger<P: Poller + 'static>(
    log: &Log,
    name: &'static str,
) -> impl FnMut(&mut EventLoop<P, 8, 8, 8>, i32, Readiness) -> Result<(), loop_core::HandlerError> {
    let log = log.clone();
    move |_, fd, r| {
        log.borrow_mut().push((name, r));
        if r.contains(Readiness::READ) {
            drain(fd);
        }
        Ok(())
    }
}

const PASS: Option<Duration> = Some(Duration::from_secs(5));

fn remove_then_add_between_passes_calls_only_the_new_handler_with<
    P: Poller + OpenPoller + 'static,
>(
    defer: bool,
) {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    lp.set_deferred_removal(defer);
    let (a, mut b) = pair();
    let fd = a.as_raw_fd();
    let log: Log = Rc::default();
    let old = lp
        .add_handler(fd, Interest::READ, logger(&log, "old"))
        .map_err(|r| r.error)
        .unwrap();
    for round in 0..3 {
        b.write_all(b"x").unwrap();
        assert!(lp.remove_handler(fd));
        let new = lp
            .add_handler(fd, Interest::READ, logger(&log, "new"))
            .map_err(|r| r.error)
            .unwrap();
        assert_ne!(new, old, "a new registration gets a new id");
        assert_eq!(lp.handler_id(fd), Some(new));
        lp.run_once(PASS).unwrap();
        assert_eq!(
            log.borrow().as_slice(),
            &[("new", Readiness::READ)],
            "round {round}"
        );
        log.borrow_mut().clear();
    }
    // With a different interest: the new one is in force at the next poll.
    assert!(lp.remove_handler(fd));
    lp.add_handler(fd, Interest::WRITE, logger(&log, "writer"))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(PASS).unwrap();
    assert_eq!(log.borrow().as_slice(), &[("writer", Readiness::WRITE)]);
    drop(b);
}

fn handler_that_replaces_itself_hands_over_at_the_next_poll_with<
    P: Poller + OpenPoller + 'static,
>(
    defer: bool,
) {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    lp.set_deferred_removal(defer);
    let (a, mut b) = pair();
    let fd = a.as_raw_fd();
    let log: Log = Rc::default();
    let l = log.clone();
    let replaced = Rc::new(Cell::new(false));
    let r2 = replaced.clone();
    lp.add_handler(fd, Interest::READ, move |lp, fd, r| {
        l.borrow_mut().push(("old", r));
        // Remove itself and add a successor for the same fd, without reading: the fd stays
        // readable, but this poll's event was the old handler's.
        assert!(lp.remove_handler(fd));
        let added = lp.add_handler(fd, Interest::READ, logger(&l, "new"));
        r2.set(added.is_ok());
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    b.write_all(b"x").unwrap();
    lp.run_once(PASS).unwrap();
    assert!(replaced.get());
    assert_eq!(log.borrow().as_slice(), &[("old", Readiness::READ)]);
    lp.run_once(PASS).unwrap();
    assert_eq!(
        log.borrow().as_slice(),
        &[("old", Readiness::READ), ("new", Readiness::READ)]
    );
    drop(b);
}

fn remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file_with<
    P: Poller + OpenPoller + 'static,
>(
    defer: bool,
) {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    lp.set_deferred_removal(defer);
    let (a, mut b) = pair();
    let (c, mut d) = pair();
    let log: Log = Rc::default();
    let fd = a.as_raw_fd();
    lp.add_handler(fd, Interest::READ, logger(&log, "old"))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(fd));
    // `dup2` closes the old file and reuses its number for `c`'s in one step (a close then an
    // open would race with other tests' threads for the number).
    let mut number = OwnedFd::from(a);
    rustix::io::dup2(&c, &mut number).unwrap();
    lp.add_handler(fd, Interest::READ, logger(&log, "new"))
        .map_err(|r| r.error)
        .unwrap();
    // The old file is closed: its peer's write fails (EPIPE), and nothing may reach "new".
    let _ = b.write_all(b"x");
    d.write_all(b"y").unwrap();
    lp.run_once(PASS).unwrap();
    assert_eq!(log.borrow().as_slice(), &[("new", Readiness::READ)]);
    assert!(lp.remove_handler(fd));
    drop((number, c));
}

fn add_refused_by_the_kernel_after_a_remove_reaches_the_caller_with<
    P: Poller + OpenPoller + 'static,
>(
    defer: bool,
) {
    let mut lp: EventLoop<P, 8, 8, 8> = EventLoop::new().unwrap();
    lp.set_deferred_removal(defer);
    let (a, b) = pair();
    let (other, mut other_peer) = pair();
    let log: Log = Rc::default();
    let fd = a.as_raw_fd();
    lp.add_handler(fd, Interest::READ, logger(&log, "old"))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(other.as_raw_fd(), Interest::READ, logger(&log, "other"))
        .map_err(|r| r.error)
        .unwrap();
    assert!(lp.remove_handler(fd));
    // The fd is closed (not reused: `a`'s number is taken over by a high, idle dup first
    // would be racy; a plain close may be reused by another test's thread, so the refusal
    // is only asserted when the number is still free).
    let closed = UnixStream::from(OwnedFd::from(a));
    drop(closed);
    match lp.add_handler(fd, Interest::READ, logger(&log, "new")) {
        Err(refused) => {
            assert!(
                matches!(
                    refused.error,
                    Error::Os {
                        errno: Errno::EBADF
                    }
                ),
                "{:?}",
                refused.error
            );
            assert_eq!(lp.handler_id(fd), None, "a refused add leaves no handler");
        }
        // Another thread opened a file under the freed number: watching it is right.
        Ok(_) => assert!(lp.remove_handler(fd)),
    }
    // The loop goes on serving the others.
    other_peer.write_all(b"z").unwrap();
    lp.run_once(PASS).unwrap();
    assert_eq!(log.borrow().as_slice(), &[("other", Readiness::READ)]);
    drop(b);
}

fn remove_then_add_between_passes_calls_only_the_new_handler<P: Poller + OpenPoller + 'static>() {
    remove_then_add_between_passes_calls_only_the_new_handler_with::<P>(false);
}

fn remove_then_add_between_passes_calls_only_the_new_handler_deferred<
    P: Poller + OpenPoller + 'static,
>() {
    remove_then_add_between_passes_calls_only_the_new_handler_with::<P>(true);
}

fn handler_that_replaces_itself_hands_over_at_the_next_poll<P: Poller + OpenPoller + 'static>() {
    handler_that_replaces_itself_hands_over_at_the_next_poll_with::<P>(false);
}

fn handler_that_replaces_itself_hands_over_at_the_next_poll_deferred<
    P: Poller + OpenPoller + 'static,
>() {
    handler_that_replaces_itself_hands_over_at_the_next_poll_with::<P>(true);
}

fn remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file<
    P: Poller + OpenPoller + 'static,
>() {
    remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file_with::<P>(false);
}

fn remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file_deferred<
    P: Poller + OpenPoller + 'static,
>() {
    remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file_with::<P>(true);
}

fn add_refused_by_the_kernel_after_a_remove_reaches_the_caller<P: Poller + OpenPoller + 'static>() {
    add_refused_by_the_kernel_after_a_remove_reaches_the_caller_with::<P>(false);
}

fn add_refused_by_the_kernel_after_a_remove_reaches_the_caller_deferred<
    P: Poller + OpenPoller + 'static,
>() {
    add_refused_by_the_kernel_after_a_remove_reaches_the_caller_with::<P>(true);
}

for_each_poller!(cases:
    remove_then_add_between_passes_calls_only_the_new_handler,
    remove_then_add_between_passes_calls_only_the_new_handler_deferred,
    handler_that_replaces_itself_hands_over_at_the_next_poll,
    handler_that_replaces_itself_hands_over_at_the_next_poll_deferred,
    remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file,
    remove_then_add_of_a_number_reused_by_another_file_watches_the_new_file_deferred,
    add_refused_by_the_kernel_after_a_remove_reaches_the_caller,
    add_refused_by_the_kernel_after_a_remove_reaches_the_caller_deferred,
);
