//! After `fork`, nothing the child does to the loop it inherited touches the kernel objects it
//! shares with the parent (issue 10, defect 13): dropping, closing or updating the child's copy
//! must leave the parent's handlers firing, on every poller.
//!
//! Real forks, so this is its own process with its own `main` (`harness = false`): the child
//! runs on the only thread there is, never returns into a test harness, and `_exit`s with a
//! status the parent checks. Nothing here is timed: the parent waits (up to 5 s, which only a
//! failure ever reaches) for data it wrote itself.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{Errno, Error, EventLoop, Interest, OpenPoller, PollEvent, Poller, Readiness};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
use pollers::Row;

#[path = "common/forking.rs"]
mod forking;
use forking::{exit_child, fork, wait_child};

type Lp<P> = EventLoop<P, 8, 8, 8>;

/// A loop with a READ handler on one end of a socketpair that records what it saw (and
/// drains the socket), the socketpair, and the record.
struct Watched<P: Poller + 'static> {
    lp: Box<Lp<P>>,
    ours: UnixStream,
    theirs: UnixStream,
    seen: Rc<Cell<Readiness>>,
}

fn watched<P: Poller + OpenPoller + 'static>() -> Watched<P> {
    let lp = Lp::<P>::new_boxed().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut w = Watched {
        lp,
        ours,
        theirs,
        seen: Rc::new(Cell::new(Readiness::empty())),
    };
    let seen = w.seen.clone();
    w.lp.add_handler(&w.ours, Interest::READ, move |_, fd, r| {
        seen.set(seen.get() | r);
        let mut buf = [0u8; 64];
        // SAFETY: the handler's own fd, open while it is registered.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    w
}

/// The parent's side after the child is gone: its handler still fires, for READ.
fn parent_handler_still_fires<P: Poller + 'static>(w: &mut Watched<P>) {
    // Nothing written yet: a spurious report (a child's EPOLL_CTL_MOD to WRITE) would show.
    w.lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(w.seen.get(), Readiness::empty(), "nothing was written yet");
    w.theirs.write_all(b"x").unwrap();
    w.lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        w.seen.get(),
        Readiness::READ,
        "the parent's READ handler fires after the child is gone"
    );
}

fn child_dropping_inherited_loop_leaves_parent_handlers_firing<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let pid = fork();
    if pid == 0 {
        // Deregisters every handler (in the child's copy only) and drops the poller.
        drop(w.lp);
        exit_child(0);
    }
    assert_eq!(wait_child(pid), 0);
    parent_handler_still_fires(&mut w);
}

fn child_closing_loop_does_not_touch_parent<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    // An owned fd too: the child closes its own copy, which the parent does not see.
    let (owned, _peer) = UnixStream::pair().unwrap();
    w.lp.add_owned_handler(owned, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    let pid = fork();
    if pid == 0 {
        w.lp.close();
        let refused = w.lp.run_once(Some(Duration::ZERO)) == Err(Error::Closed);
        drop(w.lp);
        exit_child(if refused { 0 } else { 1 });
    }
    assert_eq!(wait_child(pid), 0);
    parent_handler_still_fires(&mut w);
}

fn child_updating_a_handler_does_not_touch_parent<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let pid = fork();
    if pid == 0 {
        let updated = w.lp.update_handler(&w.ours, Interest::WRITE);
        let removed = w.lp.remove_handler(&w.ours);
        let code = match (updated, removed) {
            (Err(Error::Forked), true) => 0,
            (Err(_), _) => 2,
            (Ok(()), _) => 3,
        };
        exit_child(code);
    }
    assert_eq!(wait_child(pid), 0);
    parent_handler_still_fires(&mut w);
}

/// The poller itself, used directly in the child: every kernel operation is refused, and a
/// notification from the child does nothing (it would wake the parent).
fn child_poller_refuses_every_kernel_operation<P: Poller + OpenPoller + 'static>() {
    let mut poller = P::open().unwrap();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ours.as_fd());
    let read = Interest::READ.registered();
    poller
        .register(fd, 1, read, loop_core::Mode::Level)
        .unwrap();
    let pid = fork();
    if pid == 0 {
        let mut events = [PollEvent::default(); 4];
        let checks = [
            poller.forked(),
            poller.register(fd, 2, read, loop_core::Mode::Level) == Err(Error::Forked),
            poller.modify(fd, 1, Interest::WRITE.registered(), loop_core::Mode::Level)
                == Err(Error::Forked),
            poller.deregister(fd) == Err(Error::Forked),
            poller.wait(&mut events, Some(Duration::ZERO)) == Err(Errno::ECHILD),
            loop_core::Notify::notify(poller.notifier()).is_ok(),
        ];
        drop(poller);
        let failed = checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32);
        exit_child(failed);
    }
    assert_eq!(wait_child(pid), 0);
    assert!(!poller.forked());
    // The parent's registration is intact and nothing woke it: nothing to report yet.
    let mut events = [PollEvent::default(); 4];
    assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)), Ok(0));
    assert_eq!(poller.deregister(fd), Ok(()));
}

/// Every case on one poller, reported in the test harness's words.
fn run_all<P: Poller + OpenPoller + Row + 'static>() {
    let cases: [(fn(), &str); 4] = [
        (
            child_dropping_inherited_loop_leaves_parent_handlers_firing::<P>,
            "child_dropping_inherited_loop_leaves_parent_handlers_firing",
        ),
        (
            child_closing_loop_does_not_touch_parent::<P>,
            "child_closing_loop_does_not_touch_parent",
        ),
        (
            child_updating_a_handler_does_not_touch_parent::<P>,
            "child_updating_a_handler_does_not_touch_parent",
        ),
        (
            child_poller_refuses_every_kernel_operation::<P>,
            "child_poller_refuses_every_kernel_operation",
        ),
    ];
    for (case, name) in cases {
        case();
        println!("test {}::{name} ... ok", P::NAME);
    }
}

fn main() {
    for_each_poller!(call: run_all);
}
