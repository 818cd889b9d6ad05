//! `close()` (Tornado's `close(all_fds=True)` for what the loop owns) and fork detection.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{Error, EventLoop, Interest, Periodic};

#[path = "common/fd_identity.rs"]
mod fd_identity;
use fd_identity::{identity, still_open};

#[test]
fn close_closes_owned_fds_only_and_refuses_everything_after() {
    let mut lp: EventLoop<ioloop::DefaultPoller, 8, 8, 8> = EventLoop::new().unwrap();
    let (a, _a_peer) = UnixStream::pair().unwrap();
    let (b, _b_peer) = UnixStream::pair().unwrap();
    let owned: OwnedFd = a.into();
    let owned_no = owned.as_raw_fd();
    let borrowed_no = b.as_raw_fd();
    let (owned_id, borrowed_id) = (identity(owned_no), identity(borrowed_no));
    lp.add_owned_handler(owned, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(&b, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    let rc = Rc::new(());
    let held = rc.clone();
    lp.call_later(Duration::from_secs(60), move |_| drop(held))
        .unwrap();
    let held = rc.clone();
    lp.add_callback(move |_| drop(held)).unwrap();

    lp.close();
    assert!(!still_open(owned_no, owned_id), "owned fd closed");
    assert!(
        still_open(borrowed_no, borrowed_id),
        "borrowed fd left open"
    );
    assert_eq!(Rc::strong_count(&rc), 1, "timers and callbacks dropped");
    assert_eq!(
        (lp.handler_count(), lp.timer_count(), lp.callback_count()),
        (0, 0, 0)
    );

    assert_eq!(lp.run(), Err(Error::Closed));
    assert_eq!(lp.run_once(None), Err(Error::Closed));
    assert_eq!(lp.add_callback(|_| {}).unwrap_err().error, Error::Closed);
    assert_eq!(
        lp.call_later(Duration::ZERO, |_| {}).unwrap_err().error,
        Error::Closed
    );
    assert_eq!(
        lp.add_periodic(Periodic::every(Duration::from_secs(1)), |_| {})
            .unwrap_err()
            .error,
        Error::Closed
    );
    assert_eq!(
        lp.add_handler(&b, Interest::READ, |_, _, _| Ok(()))
            .unwrap_err()
            .error,
        Error::Closed
    );
    lp.close(); // twice: a no-op
    assert!(lp.is_closed());
}

#[test]
fn close_from_inside_a_callback_stops_the_rest_of_the_iteration() {
    let mut lp: EventLoop<SimPoller, 8, 8, 8> = EventLoop::with_poller(SimPoller::new());
    let ran = Rc::new(std::cell::Cell::new(0));
    lp.add_callback(|lp| lp.close()).unwrap();
    let r = ran.clone();
    lp.add_callback(move |_| r.set(r.get() + 1)).unwrap();
    let r = ran.clone();
    lp.call_later(Duration::ZERO, move |_| r.set(r.get() + 10))
        .unwrap();
    lp.run().unwrap();
    assert_eq!(ran.get(), 0, "nothing runs after close");
    assert_eq!(lp.run(), Err(Error::Closed));
}

#[test]
fn a_loop_inherited_across_fork_refuses_to_run_or_register() {
    let mut lp: EventLoop<SimPoller, 8, 8, 8> = EventLoop::with_poller(SimPoller::new());
    lp.poller_mut().set_forked(true);
    assert_eq!(lp.run(), Err(Error::Forked));
    assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Forked));
    assert_eq!(
        lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))
            .unwrap_err()
            .error,
        Error::Forked
    );
}

#[test]
fn real_fork_child_gets_forked_errors_and_a_new_loop_works() {
    let mut lp: EventLoop<ioloop::DefaultPoller, 8, 8, 8> = EventLoop::new().unwrap();
    lp.add_callback(|lp| lp.stop()).unwrap();
    // SAFETY: the child only makes syscalls and `_exit`s; it never returns into the test
    // harness (which holds locks in other threads).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let old = lp.run_once(Some(Duration::ZERO));
        let reg = lp
            .add_handler(0, Interest::READ, |_, _, _| Ok(()))
            .map_err(|r| r.error);
        let fresh = EventLoop::<ioloop::DefaultPoller, 8, 8, 8>::new().and_then(|mut new| {
            new.add_callback(|lp| lp.stop()).map_err(|r| r.error)?;
            new.run()
        });
        let code = match (old, reg, fresh) {
            (Err(Error::Forked), Err(Error::Forked), Ok(())) => 0,
            _ => 1,
        };
        // SAFETY: ends the child without running the parent's destructors or harness code.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    // The parent's loop is unaffected.
    lp.run().unwrap();
}
