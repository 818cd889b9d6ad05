//! A forked child using the loop it inherited: every entry point (`run`, `run_once` with any
//! timeout, `stop` then `run_once`, `add_handler`, `remove_handler` then a re-add, `close`) on a
//! loop with only fds (whose passes leave the fork check to the poller's wait), with deferred
//! removals pending, and with timers, is refused with `Error::Forked` or touches only the
//! child's copy; nothing runs in the child, the child never blocks, and the parent's
//! registrations and data are untouched, on every poller.
//!
//! Real forks: its own process with its own `main` (`harness = false`), as `tests/fork.rs`.
//! Before each fork a byte is already waiting on the watched socket: a child that polled would
//! see it (and its handler would drain it, stealing the parent's data).

use std::cell::Cell;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{Error, EventLoop, Interest, OpenPoller, Poller};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
use pollers::Row;

#[path = "common/forking.rs"]
mod forking;
use forking::{exit_child, fork, wait_child};

type Lp<P> = EventLoop<P, 8, 8, 8>;

/// A loop watching one end of a socketpair (READ) whose handler counts the bytes it drains, a
/// byte already written to it, the pair and the count.
struct Watched<P: Poller + 'static> {
    lp: Box<Lp<P>>,
    ours: UnixStream,
    theirs: UnixStream,
    drained: Rc<Cell<usize>>,
}

fn watched<P: Poller + OpenPoller + 'static>() -> Watched<P> {
    let lp = Lp::<P>::new_boxed().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut w = Watched {
        lp,
        ours,
        theirs,
        drained: Rc::new(Cell::new(0)),
    };
    let drained = w.drained.clone();
    w.lp.add_handler(&w.ours, Interest::READ, move |_, fd, _| {
        let mut buf = [0u8; 64];
        // SAFETY: the handler's own fd, open while it is registered.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        while let Ok(n @ 1..) = rustix::io::read(fd, &mut buf) {
            drained.set(drained.get() + n);
        }
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    (&w.theirs).write_all(b"x").unwrap();
    w
}

/// The parent after the child is gone: the byte written before the fork is still there, and
/// its handler drains it.
fn parent_still_gets_the_byte<P: Poller + 'static>(w: &mut Watched<P>) {
    w.lp.run_once(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(w.drained.get(), 1, "the parent's handler drains the byte");
}

/// In the child: exit 0 if every check passed, else 10 + the index of the first that failed.
fn exit_with(checks: &[bool]) -> ! {
    let failed = checks
        .iter()
        .position(|ok| !ok)
        .map_or(0, |i| 10 + i as i32);
    exit_child(failed)
}

fn forked<V, T>(r: Result<V, T>) -> bool
where
    Error: From<T>,
{
    matches!(r.map_err(Error::from), Err(Error::Forked))
}

/// A loop with only fds: every run entry point in the child is refused (none blocks: the wait
/// is refused before it starts), with a pending `stop()` too, and no handler runs.
fn child_run_entry_points_on_an_io_only_loop_are_refused<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let pid = fork();
    if pid == 0 {
        let mut checks = vec![
            forked(w.lp.run_once(Some(Duration::ZERO))),
            forked(w.lp.run_once(None)),
            forked(w.lp.run_once(Some(Duration::from_secs(3600)))),
            forked(w.lp.run()),
        ];
        w.lp.stop();
        checks.push(forked(w.lp.run_once(Some(Duration::ZERO))));
        checks.push(forked(w.lp.run()));
        // No executor attached: still `Forked` first, not `NotAttached`.
        checks.push(forked(w.lp.run_sync(async { 1 }, None)));
        checks.push(w.drained.get() == 0);
        exit_with(&checks);
    }
    assert_eq!(wait_child(pid), 0);
    parent_still_gets_the_byte(&mut w);
}

/// In the child: adding a handler is refused with `Forked` (the fd handed back), removing one
/// and adding it again (a take-over under deferral, a fresh register without) is refused, and
/// the loop still refuses to run; `close` then works on the child's copy alone.
fn child_add_remove_and_close_leave_the_parent_alone<P: Poller + OpenPoller + 'static>() {
    for deferred in [false, true] {
        let mut w = watched::<P>();
        w.lp.set_deferred_removal(deferred);
        let pid = fork();
        if pid == 0 {
            let (other, _peer) = UnixStream::pair().unwrap();
            let added = w.lp.add_handler(&other, Interest::READ, |_, _, _| Ok(()));
            let removed = w.lp.remove_handler(&w.ours);
            let readded = w.lp.add_handler(&w.ours, Interest::READ, |_, _, _| Ok(()));
            let checks = [
                forked(added),
                removed,
                forked(readded),
                forked(w.lp.run_once(Some(Duration::ZERO))),
                forked(w.lp.run_once(None)),
                w.drained.get() == 0,
                {
                    w.lp.close();
                    w.lp.run_once(Some(Duration::ZERO)) == Err(Error::Closed)
                },
            ];
            exit_with(&checks);
        }
        assert_eq!(wait_child(pid), 0, "deferred={deferred}");
        parent_still_gets_the_byte(&mut w);
    }
}

/// Deferred removals pending at the fork (in the parent's loop): the child's pass is refused
/// (its flush of them touches nothing of the parent's), and the parent's own flush still
/// applies them: the removed handler never runs, the kept one does.
fn child_with_deferred_removals_pending_is_refused<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    w.lp.set_deferred_removal(true);
    let (gone, gone_peer) = UnixStream::pair().unwrap();
    let gone_calls = Rc::new(Cell::new(0));
    let g = gone_calls.clone();
    w.lp.add_handler(&gone, Interest::READ, move |_, _, _| {
        g.set(g.get() + 1);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    assert!(w.lp.remove_handler(&gone));
    (&gone_peer).write_all(b"y").unwrap();
    let pid = fork();
    if pid == 0 {
        let checks = [
            forked(w.lp.run_once(Some(Duration::ZERO))),
            forked(w.lp.run_once(None)),
            forked(w.lp.run()),
            w.drained.get() == 0,
            gone_calls.get() == 0,
        ];
        exit_with(&checks);
    }
    assert_eq!(wait_child(pid), 0);
    parent_still_gets_the_byte(&mut w);
    w.lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(gone_calls.get(), 0, "the removed handler never runs");
    assert_eq!(
        w.lp.counters().events_last_poll,
        0,
        "and its fd reports nothing"
    );
}

/// Timers (one due, one periodic) and a callback: the child's run entry points are refused
/// before any of them runs; the parent's still run.
fn child_with_timers_and_callbacks_runs_none_of_them<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let ran = Rc::new(Cell::new(0));
    let (a, b, c) = (ran.clone(), ran.clone(), ran.clone());
    w.lp.call_later(Duration::ZERO, move |_| a.set(a.get() + 1))
        .map_err(|r| r.error)
        .unwrap();
    w.lp.add_periodic(
        loop_core::Periodic::every(Duration::from_millis(1)),
        move |_| b.set(b.get() + 1),
    )
    .map_err(|r| r.error)
    .unwrap();
    w.lp.add_callback(move |_| c.set(c.get() + 1))
        .map_err(|r| r.error)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let pid = fork();
    if pid == 0 {
        let mut checks = vec![
            forked(w.lp.run_once(Some(Duration::ZERO))),
            forked(w.lp.run_once(None)),
            forked(w.lp.run()),
        ];
        w.lp.stop();
        checks.push(forked(w.lp.run_once(Some(Duration::ZERO))));
        checks.push(ran.get() == 0);
        checks.push(w.drained.get() == 0);
        exit_with(&checks);
    }
    assert_eq!(wait_child(pid), 0);
    w.lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(ran.get() >= 2, "the parent's callback and due timers run");
    assert_eq!(w.drained.get(), 1);
}

/// A handler that forks during `run` (an I/O-only loop): in the child, `run` comes back with
/// `Forked` at its next pass (the poller's wait refuses) instead of polling the parent's fds.
fn fork_inside_a_handler_ends_the_childs_run_with_forked<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let child = Rc::new(Cell::new(None));
    let c = child.clone();
    let (trigger, trigger_peer) = UnixStream::pair().unwrap();
    w.lp.add_handler(&trigger, Interest::READ, move |lp, _, _| {
        if c.get().is_some() {
            return Ok(());
        }
        let pid = fork();
        c.set(Some(pid));
        if pid != 0 {
            lp.stop();
        }
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    // Only the trigger is readable at first: the watched byte is read only after the fork.
    w.lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(w.drained.get(), 1);
    (&w.theirs).write_all(b"z").unwrap();
    (&trigger_peer).write_all(b"t").unwrap();
    let result = w.lp.run();
    if child.get() == Some(0) {
        // The event fetched with the trigger's may be dispatched before the refusal; the next
        // pass must be refused.
        exit_with(&[forked(result)]);
    }
    assert_eq!(result, Ok(()));
    let pid = child.get().expect("the handler forked");
    assert_eq!(wait_child(pid), 0);
    let _ = w.drained.get();
    drop(trigger);
}

/// A handler that forks during `run` after scheduling a timer and a callback (so the next pass
/// is not I/O-only): in the child, `run` comes back with `Forked` before either runs, as every
/// pass that has callbacks or timers checks first.
fn fork_inside_a_handler_runs_no_timer_or_callback_in_the_child<
    P: Poller + OpenPoller + 'static,
>() {
    let mut w = watched::<P>();
    w.lp.run_once(Some(Duration::ZERO)).unwrap();
    let child = Rc::new(Cell::new(None));
    let ran = Rc::new(Cell::new(0));
    let (c, r) = (child.clone(), ran.clone());
    let (trigger, trigger_peer) = UnixStream::pair().unwrap();
    w.lp.add_handler(&trigger, Interest::READ, move |lp, _, _| {
        if c.get().is_some() {
            return Ok(());
        }
        let (r1, r2) = (r.clone(), r.clone());
        lp.call_later(Duration::ZERO, move |_| r1.set(r1.get() + 1))?;
        lp.add_callback(move |_| r2.set(r2.get() + 1))?;
        let pid = fork();
        c.set(Some(pid));
        if pid != 0 {
            lp.stop();
        }
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    (&trigger_peer).write_all(b"t").unwrap();
    let result = w.lp.run();
    if child.get() == Some(0) {
        exit_with(&[forked(result), ran.get() == 0]);
    }
    assert_eq!(result, Ok(()));
    assert_eq!(ran.get(), 2, "the parent runs them before stopping");
    let pid = child.get().expect("the handler forked");
    assert_eq!(wait_child(pid), 0);
    drop(trigger);
}

/// A loop with a remote and an executor (owned by the loop): in the child, `run_sync` and the
/// run entry points are refused, no task is polled, and a callback queued through the
/// `LoopHandle` from the child never runs there; the parent's task and callback still run.
fn child_run_sync_with_an_executor_is_refused<P: Poller + OpenPoller + 'static>() {
    let mut w = watched::<P>();
    let handle = w.lp.attach_owned_remote::<4>().unwrap();
    w.lp.attach_owned_executor::<2, 256>().unwrap();
    let polled = Rc::new(Cell::new(0));
    let p = polled.clone();
    w.lp.spawn(async move { p.set(p.get() + 1) })
        .map_err(|r| r.error)
        .unwrap();
    let pid = fork();
    if pid == 0 {
        // Queued in the child's copy (or refused): either way it must never run there.
        let _ = handle.add_callback(|_| panic!("never in the child"));
        let checks = [
            forked(w.lp.run_sync(async { 1 }, None)),
            forked(w.lp.run_sync(async { 1 }, Some(Duration::from_secs(3600)))),
            forked(w.lp.run_once(Some(Duration::ZERO))),
            forked(w.lp.run_once(None)),
            forked(w.lp.run()),
            polled.get() == 0,
            w.drained.get() == 0,
        ];
        exit_with(&checks);
    }
    assert_eq!(wait_child(pid), 0);
    assert_eq!(w.lp.run_sync(async { 7 }, None), Ok(7));
    assert_eq!(polled.get(), 1, "the parent's task ran");
}

/// Every case on one poller, reported in the test harness's words.
fn run_all<P: Poller + OpenPoller + Row + 'static>() {
    let cases: [(fn(), &str); 7] = [
        (
            child_run_entry_points_on_an_io_only_loop_are_refused::<P>,
            "child_run_entry_points_on_an_io_only_loop_are_refused",
        ),
        (
            child_add_remove_and_close_leave_the_parent_alone::<P>,
            "child_add_remove_and_close_leave_the_parent_alone",
        ),
        (
            child_with_deferred_removals_pending_is_refused::<P>,
            "child_with_deferred_removals_pending_is_refused",
        ),
        (
            child_with_timers_and_callbacks_runs_none_of_them::<P>,
            "child_with_timers_and_callbacks_runs_none_of_them",
        ),
        (
            fork_inside_a_handler_ends_the_childs_run_with_forked::<P>,
            "fork_inside_a_handler_ends_the_childs_run_with_forked",
        ),
        (
            fork_inside_a_handler_runs_no_timer_or_callback_in_the_child::<P>,
            "fork_inside_a_handler_runs_no_timer_or_callback_in_the_child",
        ),
        (
            child_run_sync_with_an_executor_is_refused::<P>,
            "child_run_sync_with_an_executor_is_refused",
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
