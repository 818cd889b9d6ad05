//! Fault injection through the simulated poller (issue 7, part 3; ARCHITECTURE.md).
//!
//! Each test builds a loop with work in every table (handlers, pending timers, queued
//! callbacks), injects one kind of fault, and checks two things: the fault is handled as the
//! contract says (`EINTR` retried; other wait errors returned by `run`; register errors
//! refused with `Error::Os` and the closure handed back; spurious events ignored; a failing
//! handler reported and kept), and no state is lost: counts, pending timers and queued
//! callbacks are intact afterwards and the loop keeps working.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{
    Errno, Error, EventLoop, Failure, HandlerError, Instant, Interest, RawFd, Readiness, Resource,
    TimerHandle,
};

type Lp = EventLoop<SimPoller<16>, 4, 8, 4>;

fn sim() -> Lp {
    EventLoop::with_poller(SimPoller::new())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn counter() -> Rc<Cell<u32>> {
    Rc::new(Cell::new(0))
}

/// A handler that counts its calls and drains its fd ("reads until EAGAIN").
fn draining(
    c: &Rc<Cell<u32>>,
) -> impl FnMut(&mut Lp, RawFd, Readiness) -> Result<(), HandlerError> {
    let c = c.clone();
    move |lp, fd, _| {
        c.set(c.get() + 1);
        lp.poller_mut().clear_ready(fd);
        Ok(())
    }
}

/// What a loop holds, to compare before and after a fault.
#[derive(Debug, PartialEq, Eq)]
struct State {
    handlers: usize,
    timers: usize,
    callbacks: usize,
    pending: Vec<bool>,
    interests: Vec<Option<Interest>>,
}

fn state(lp: &Lp, timers: &[TimerHandle], fds: &[RawFd]) -> State {
    State {
        handlers: lp.handler_count(),
        timers: lp.timer_count(),
        callbacks: lp.callback_count(),
        pending: timers.iter().map(|h| lp.timer_pending(*h)).collect(),
        interests: fds.iter().map(|fd| lp.poller().interest(*fd)).collect(),
    }
}

/// A loop with two handlers (fd 3 ready), a far timer, and a callback that queues another
/// callback (so one is queued after any iteration).
struct Setup {
    lp: Lp,
    calls: Rc<Cell<u32>>,
    far: TimerHandle,
    ran: Rc<Cell<u32>>,
}

fn setup() -> Setup {
    let mut lp = sim();
    let calls = counter();
    lp.add_handler(3, Interest::READ, draining(&calls)).unwrap();
    lp.add_handler(4, Interest::WRITE, draining(&calls))
        .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    let far = lp.call_later(Duration::from_secs(3600), |_| {}).unwrap();
    let ran = counter();
    let r = ran.clone();
    lp.add_callback(move |lp| {
        r.set(r.get() + 1);
        let r2 = r.clone();
        lp.add_callback(move |_| r2.set(r2.get() + 100)).unwrap();
    })
    .unwrap();
    Setup {
        lp,
        calls,
        far,
        ran,
    }
}

// ------------------------------------------------------------------------------------------
// wait() faults
// ------------------------------------------------------------------------------------------

#[test]
fn eintr_from_wait_is_retried_by_run_and_nothing_is_lost() {
    let Setup {
        mut lp,
        calls,
        far,
        ran,
    } = setup();
    lp.poller_mut().fail_next_wait(Errno::EINTR);
    lp.poller_mut().fail_next_wait(Errno::EINTR);
    let fired = counter();
    let f = fired.clone();
    lp.call_later(ms(5), move |lp| {
        f.set(f.get() + 1);
        lp.stop();
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(fired.get(), 1, "the loop went on past two EINTRs");
    assert_eq!(
        calls.get(),
        1,
        "the ready fd was dispatched once, after the retries"
    );
    assert_eq!(ran.get(), 101, "both callbacks ran");
    assert!(lp.poller().stats().waits >= 3);
    assert_eq!(
        state(&lp, &[far], &[3, 4]),
        State {
            handlers: 2,
            timers: 1,
            callbacks: 0,
            pending: vec![true],
            interests: vec![
                Some(Interest::READ | Interest::ERROR),
                Some(Interest::WRITE | Interest::ERROR)
            ],
        }
    );
}

#[test]
fn eintr_ends_a_run_once_without_dispatch_and_the_next_one_dispatches() {
    let Setup {
        mut lp,
        calls,
        far,
        ran,
    } = setup();
    lp.poller_mut().fail_next_wait(Errno::EINTR);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 0, "the interrupted poll reported nothing");
    assert_eq!(ran.get(), 1, "the iteration's callback ran before the poll");
    let before = state(&lp, &[far], &[3, 4]);
    assert_eq!(before.callbacks, 1, "the callback it queued is kept");
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(ran.get(), 101);
    assert!(lp.timer_pending(far));
}

#[test]
fn eagain_and_enomem_from_wait_end_run_with_the_error_and_the_loop_stays_usable() {
    for errno in [Errno::EAGAIN, Errno::ENOMEM] {
        let Setup {
            mut lp,
            calls,
            far,
            ran,
        } = setup();
        let near = lp.call_later(ms(10), |lp| lp.stop()).unwrap();
        lp.poller_mut().fail_next_wait(errno);
        assert_eq!(lp.run(), Err(Error::Os { errno }), "{errno:?}");
        assert!(!lp.is_running());
        assert_eq!(
            calls.get(),
            0,
            "{errno:?}: the failed poll dispatched nothing"
        );
        assert_eq!(ran.get(), 1);
        assert_eq!(
            state(&lp, &[far, near], &[3, 4]),
            State {
                handlers: 2,
                timers: 2,
                callbacks: 1,
                pending: vec![true, true],
                interests: vec![
                    Some(Interest::READ | Interest::ERROR),
                    Some(Interest::WRITE | Interest::ERROR)
                ],
            },
            "{errno:?}: nothing lost"
        );
        // Usable after: run again until the near timer stops it.
        lp.run().unwrap();
        assert_eq!(calls.get(), 1, "{errno:?}");
        assert_eq!(ran.get(), 101, "{errno:?}");
        assert!(!lp.timer_pending(near));
        assert!(lp.timer_pending(far));
        assert_eq!(lp.now(), Instant::from_nanos(10_000_000), "{errno:?}");
    }
}

#[test]
fn faults_in_a_row_are_each_handled_and_the_first_non_eintr_is_returned() {
    let Setup {
        mut lp, calls, far, ..
    } = setup();
    for e in [Errno::EINTR, Errno::EINTR, Errno::ENOMEM, Errno::EAGAIN] {
        lp.poller_mut().fail_next_wait(e);
    }
    assert_eq!(
        lp.run(),
        Err(Error::Os {
            errno: Errno::ENOMEM
        })
    );
    assert_eq!(lp.poller().stats().waits, 3);
    assert_eq!(
        lp.run_once(Some(Duration::ZERO)),
        Err(Error::Os {
            errno: Errno::EAGAIN
        })
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 1);
    assert!(lp.timer_pending(far));
    assert_eq!(lp.handler_count(), 2);
}

#[test]
fn wait_fault_does_not_swallow_a_due_timer_or_run_it_twice() {
    let mut lp = sim();
    let fired = counter();
    let f = fired.clone();
    let h = lp.call_later(ms(1), move |_| f.set(f.get() + 1)).unwrap();
    // The first poll sleeps 1 ms (the clock moves), the second one fails.
    lp.run_once(None).unwrap();
    lp.poller_mut().fail_next_wait(Errno::ENOMEM);
    assert!(lp.run_once(None).is_err());
    assert_eq!(fired.get(), 1, "the due timer ran before the failed poll");
    assert!(!lp.timer_pending(h));
    lp.add_callback(|_| {}).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(fired.get(), 1, "and not again");
    assert_eq!(lp.timer_count(), 0);
}

// ------------------------------------------------------------------------------------------
// register() faults
// ------------------------------------------------------------------------------------------

#[test]
fn register_faults_refuse_add_handler_with_the_os_error_and_leave_nothing_behind() {
    for errno in [Errno::EBADF, Errno::ENOMEM, Errno::ENOSPC] {
        let mut lp = sim();
        let calls = counter();
        // 0, 8 and 16 share a home position in the fd index (2·H = 8 positions).
        for fd in [0, 8, 16] {
            lp.add_handler(fd, Interest::READ, draining(&calls))
                .unwrap();
        }
        let t = lp.call_later(ms(50), |_| {}).unwrap();
        lp.add_callback(|_| {}).unwrap();
        let before = state(&lp, &[t], &[0, 8, 16, 24]);
        let registers = lp.poller().stats().registers;

        lp.poller_mut().fail_next_register(errno);
        let refused_calls = counter();
        let refused = lp
            .add_handler(24, Interest::READ, draining(&refused_calls))
            .unwrap_err();
        assert_eq!(refused.error, Error::Os { errno }, "{errno:?}");
        assert_eq!(lp.poller().stats().registers, registers + 1);
        assert_eq!(lp.poller().stats().deregisters, 0, "nothing was registered");
        assert_eq!(lp.handler_id(24), None, "{errno:?}: no slot left behind");
        assert_eq!(state(&lp, &[t], &[0, 8, 16, 24]), before, "{errno:?}");
        for fd in [0, 8, 16] {
            assert!(
                lp.handler_id(fd).is_some(),
                "{errno:?}: fd {fd} still found"
            );
        }
        // The closure comes back and is the one that was refused.
        let mut f = refused.into_inner();
        f(&mut lp, 24, Readiness::READ).unwrap();
        assert_eq!(refused_calls.get(), 1);

        // The freed slot is usable: the table fills to H, then refuses.
        lp.add_handler(24, Interest::READ, f).unwrap();
        assert_eq!(lp.handler_count(), 4);
        let full = lp
            .add_handler(32, Interest::READ, |_, _, _| Ok(()))
            .unwrap_err();
        assert_eq!(
            full.error,
            Error::Full {
                what: Resource::Handlers
            }
        );
        // Everything still works: a removal in the middle of the collision chain, events.
        assert!(lp.remove_handler(8));
        for fd in [0, 16, 24] {
            lp.poller_mut().set_ready(fd, Readiness::READ);
        }
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 2, "{errno:?}: fds 0 and 16");
        assert_eq!(
            refused_calls.get(),
            2,
            "{errno:?}: fd 24, by the re-added closure"
        );
        assert!(lp.timer_pending(t));
        assert_eq!(lp.callback_count(), 0);
    }
}

#[test]
fn poller_table_full_refuses_add_handler_and_leaves_nothing_behind() {
    // A poller with its own fixed table (poll, select, the simulation) can fill up before the
    // loop's handler table does.
    let mut lp: EventLoop<SimPoller<2>, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    let calls = Rc::new(Cell::new(0));
    for fd in [1, 2] {
        let c = calls.clone();
        lp.add_handler(fd, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .unwrap();
    }
    let refused = lp
        .add_handler(3, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::PollerSlots
        }
    );
    assert_eq!(lp.handler_count(), 2);
    assert_eq!(lp.handler_id(3), None);
    // Room again after a removal: the refused closure goes in.
    assert!(lp.remove_handler(2));
    lp.add_handler(3, Interest::READ, refused.into_inner())
        .unwrap();
    lp.poller_mut().set_ready(1, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 1);
}

#[test]
fn register_fault_on_an_owned_fd_hands_back_the_fd_still_open_and_the_handler() {
    let mut lp = sim();
    let (a, mut b) = UnixStream::pair().unwrap();
    let raw = a.as_raw_fd();
    lp.poller_mut().fail_next_register(Errno::ENOMEM);
    let refused = lp
        .add_owned_handler(OwnedFd::from(a), Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Os {
            errno: Errno::ENOMEM
        }
    );
    let (fd, _handler) = refused.into_inner();
    assert_eq!(fd.as_raw_fd(), raw);
    assert!(fd.try_clone().is_ok(), "handed back open");
    assert_eq!(lp.handler_count(), 0);
    // Still open: its peer can write to it.
    b.write_all(b"x").unwrap();
    // And the next attempt takes it.
    lp.add_owned_handler(fd, Interest::READ, |_, _, _| Ok(()))
        .unwrap();
    assert!(lp.remove_handler(raw));
    // Closed by the `OwnedFd` the handler's closure held (the loop has no way to close an fd).
    // Closed with the "x" unread: its peer sees a reset (or end-of-file).
    let seen = b.read(&mut [0u8; 1]);
    assert!(
        matches!(&seen, Ok(0))
            || matches!(&seen, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{seen:?}"
    );
}

#[test]
fn update_refused_by_the_kernel_keeps_the_old_interest() {
    let mut lp = sim();
    let calls = counter();
    lp.add_handler(5, Interest::READ, draining(&calls)).unwrap();
    // The kernel dropped the registration (the fd was closed behind the loop's back).
    lp.poller_mut().close(5);
    assert_eq!(
        lp.update_handler(5, Interest::WRITE),
        Err(Error::Os {
            errno: Errno::ENOENT
        })
    );
    let modifies = lp.poller().stats().modifies;
    lp.update_handler(5, Interest::READ).unwrap();
    assert_eq!(
        lp.poller().stats().modifies,
        modifies,
        "READ is still the interest on record: no system call"
    );
    assert_eq!(lp.handler_count(), 1);
    assert!(lp.remove_handler(5), "removal works, the ENOENT is ignored");
    assert_eq!(lp.handler_count(), 0);
}

// ------------------------------------------------------------------------------------------
// spurious readiness
// ------------------------------------------------------------------------------------------

#[test]
fn events_for_unknown_and_removed_keys_are_ignored() {
    let mut lp = sim();
    let (a, b, c) = (counter(), counter(), counter());
    lp.add_handler(3, Interest::READ, draining(&a)).unwrap();
    let old = lp.add_handler(4, Interest::READ, draining(&b)).unwrap();
    assert!(lp.remove_handler(4));
    // fd 5's handler takes the freed slot under a new generation.
    let new = lp.add_handler(5, Interest::READ, draining(&c)).unwrap();
    assert_ne!(old, new);
    let far = lp.call_later(ms(100), |_| {}).unwrap();
    let before = state(&lp, &[far], &[3, 4, 5]);

    let p = lp.poller_mut();
    p.inject_event(old.key(), Readiness::READ | Readiness::ERROR);
    p.inject_event(u64::MAX, Readiness::READ);
    p.inject_event(0xFFFF_FFFF_0000_0000, Readiness::HUP);
    p.inject_event(old.key() + (7 << 32), Readiness::READ);
    p.set_ready(9, Readiness::READ); // no handler
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!((a.get(), b.get(), c.get()), (0, 0, 0));
    assert_eq!(state(&lp, &[far], &[3, 4, 5]), before);

    // The loop is unharmed.
    lp.poller_mut().set_ready(5, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(c.get(), 1);
}

#[test]
fn events_with_no_visible_readiness_are_ignored_but_errors_always_get_through() {
    let mut lp = sim();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for (fd, i) in [(3, Interest::READ), (4, Interest::empty())] {
        let s = seen.clone();
        lp.add_handler(fd, i, move |_, fd, r| {
            s.borrow_mut().push((fd, r));
            Ok(())
        })
        .unwrap();
    }
    let k3 = lp.handler_id(3).unwrap().key();
    let k4 = lp.handler_id(4).unwrap().key();
    // Level readiness the interest does not cover: never reported.
    lp.poller_mut().set_ready(3, Readiness::WRITE);
    lp.poller_mut()
        .set_ready(4, Readiness::READ | Readiness::WRITE);
    // Spurious events the interest does not cover: dropped by the loop.
    lp.poller_mut().inject_event(k3, Readiness::WRITE);
    lp.poller_mut()
        .inject_event(k4, Readiness::READ | Readiness::WRITE);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());

    // Mixed: only the visible part is shown; ERROR and HUP reach every handler.
    lp.poller_mut()
        .inject_event(k3, Readiness::WRITE | Readiness::READ);
    lp.poller_mut()
        .inject_event(k4, Readiness::WRITE | Readiness::HUP);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        *seen.borrow(),
        [(3, Readiness::READ), (4, Readiness::HUP)],
        "only visible readiness"
    );
    seen.borrow_mut().clear();
    lp.poller_mut().clear_ready(3);
    lp.poller_mut().clear_ready(4);
    lp.poller_mut().set_ready(4, Readiness::ERROR);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*seen.borrow(), [(4, Readiness::ERROR)]);
}

// ------------------------------------------------------------------------------------------
// failing handlers
// ------------------------------------------------------------------------------------------

#[test]
fn handler_failing_every_time_is_reported_each_time_and_the_loop_keeps_running() {
    let mut lp = sim();
    let failures = Rc::new(RefCell::new(Vec::new()));
    let f = failures.clone();
    lp.set_error_hook(move |failure| f.borrow_mut().push(failure));
    let (bad_calls, good_calls, ticks) = (counter(), counter(), counter());
    let b = bad_calls.clone();
    // Level-triggered and never drained: called in every iteration, failing every time.
    let bad = lp
        .add_handler(3, Interest::READ, move |_, _, _| {
            b.set(b.get() + 1);
            Err(HandlerError::Os(Errno(5)))
        })
        .unwrap();
    let g = good_calls.clone();
    lp.add_handler(4, Interest::READ, move |_, _, _| {
        g.set(g.get() + 1);
        Ok(())
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.poller_mut().set_ready(4, Readiness::READ);
    let t = ticks.clone();
    // Callbacks keep flowing around the failures.
    fn tick(lp: &mut Lp, t: Rc<Cell<u32>>) {
        t.set(t.get() + 1);
        if t.get() < 10 {
            lp.add_callback(move |lp| tick(lp, t)).unwrap();
        } else {
            lp.stop();
        }
    }
    lp.add_callback(move |lp| tick(lp, t)).unwrap();
    let later = lp.call_later(Duration::from_secs(1), |_| {}).unwrap();
    lp.run().unwrap();

    assert_eq!(ticks.get(), 10);
    assert_eq!(bad_calls.get(), 9, "called in every polled iteration");
    assert_eq!(good_calls.get(), 9, "the other handler kept working");
    assert_eq!(
        *failures.borrow(),
        vec![
            Failure::Handler {
                id: bad,
                fd: 3,
                error: HandlerError::Os(Errno(5))
            };
            9
        ],
        "each failure reported"
    );
    assert_eq!(lp.handler_count(), 2, "a failing handler stays registered");
    assert!(lp.timer_pending(later));
    assert_eq!(lp.callback_count(), 0);
}

#[test]
fn failures_without_an_error_hook_are_dropped_quietly() {
    let mut lp = sim();
    let calls = counter();
    let c = calls.clone();
    lp.add_handler(3, Interest::READ, move |_, _, _| {
        c.set(c.get() + 1);
        Err(HandlerError::Other("always"))
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    for _ in 0..3 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(calls.get(), 3);
    assert_eq!(lp.handler_count(), 1);
}
