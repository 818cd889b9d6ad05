//! The loop's contract (ARCHITECTURE.md, Tornado 4.5 `PollIOLoop`), pinned on the simulated
//! poller: exact and instant, no sleeping. Each test names the behaviour it pins; where it comes
//! from a Tornado test, the comment says which.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{
    Errno, Error, EventLoop, Failure, HandlerError, Instant, Interest, Periodic, Readiness,
    Resource,
};

type Sim = EventLoop<SimPoller, 16, 64, 16>;
type Log = Rc<RefCell<Vec<String>>>;

fn sim() -> Sim {
    EventLoop::with_poller(SimPoller::new())
}

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ------------------------------------------------------------------------------------------
// callbacks
// ------------------------------------------------------------------------------------------

#[test]
fn callbacks_added_during_an_iteration_run_in_the_next_one() {
    let mut lp = sim();
    let l = log();
    let l2 = l.clone();
    lp.add_callback(move |lp| {
        push(&l2, "first");
        let l3 = l2.clone();
        lp.add_callback(move |_| push(&l3, "added by first"))
            .unwrap();
    })
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*l.borrow(), ["first"]);
    assert_eq!(lp.callback_count(), 1);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*l.borrow(), ["first", "added by first"]);
}

#[test]
fn callback_that_requeues_itself_forever_does_not_starve_io() {
    // Tornado commit 1591ade4 "Improve callback scheduling" (#947).
    fn again(lp: &mut Sim) {
        lp.add_callback(again).unwrap();
    }
    let mut lp = sim();
    let hits = Rc::new(Cell::new(0));
    let h = hits.clone();
    lp.add_handler(3, Interest::READ, move |lp, fd, _| {
        h.set(h.get() + 1);
        lp.poller_mut().clear_ready(fd);
        lp.stop();
        Ok(())
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.add_callback(again).unwrap();
    lp.run().unwrap();
    assert_eq!(hits.get(), 1);
}

#[test]
fn callbacks_run_before_timers_in_one_iteration() {
    let mut lp = sim();
    let l = log();
    let (a, b) = (l.clone(), l.clone());
    lp.call_later(Duration::ZERO, move |_| push(&a, "timer"))
        .unwrap();
    lp.add_callback(move |_| push(&b, "callback")).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*l.borrow(), ["callback", "timer"]);
}

#[test]
fn full_callback_queue_hands_the_callback_back() {
    let mut lp: EventLoop<SimPoller, 4, 4, 2> = EventLoop::with_poller(SimPoller::new());
    let ran = Rc::new(Cell::new(0));
    for _ in 0..2 {
        let r = ran.clone();
        lp.add_callback(move |_| r.set(r.get() + 1)).unwrap();
    }
    let r = ran.clone();
    let refused = lp.add_callback(move |_| r.set(r.get() + 100)).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Callbacks
        }
    );
    // Nothing is lost: the caller still has the callback and can run it itself.
    let cb = refused.into_inner();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.get(), 2);
    lp.add_callback(cb).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.get(), 102);
}

// ------------------------------------------------------------------------------------------
// timers
// ------------------------------------------------------------------------------------------

#[test]
fn equal_deadlines_fire_first_in_first_out() {
    // Tornado 4.5 test_timeout_with_arguments: add_timeout(now) / add_timeout(timedelta 0) /
    // call_at(now) / call_later(0) run as [1, 2, 3, 4].
    let mut lp = sim();
    let order = Rc::new(RefCell::new(Vec::new()));
    let now = lp.now();
    for i in 1..=4 {
        let o = order.clone();
        if i % 2 == 1 {
            lp.call_at(now, move |_| o.borrow_mut().push(i)).unwrap();
        } else {
            lp.call_later(Duration::ZERO, move |_| o.borrow_mut().push(i))
                .unwrap();
        }
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*order.borrow(), [1, 2, 3, 4]);
}

#[test]
fn timers_fire_in_deadline_order_at_their_deadline() {
    let mut lp = sim();
    let l = log();
    for (name, at) in [("c", 30), ("a", 10), ("b", 20)] {
        let l = l.clone();
        lp.call_later(ms(at), move |lp| {
            push(&l, format!("{name}@{}", lp.now().as_nanos() / 1_000_000))
        })
        .unwrap();
    }
    let l2 = l.clone();
    lp.call_later(ms(40), move |lp| {
        push(&l2, "stop");
        lp.stop()
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(*l.borrow(), ["a@10", "b@20", "c@30", "stop"]);
}

#[test]
fn timer_cancelled_by_an_earlier_timer_in_the_same_iteration_does_not_run() {
    // Tornado test_remove_timeout_from_timeout (#1148, commit 7bf3b143).
    let mut lp = sim();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let now = lp.now();
    let victim = Rc::new(Cell::new(None));
    let v = victim.clone();
    lp.call_at(now, move |lp| {
        assert!(lp.remove_timeout(v.get().unwrap()));
    })
    .unwrap();
    victim.set(Some(lp.call_at(now, move |_| r.set(true)).unwrap()));
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(!ran.get());
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn timer_cancelled_by_a_callback_in_the_same_iteration_does_not_run() {
    let mut lp = sim();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = lp.call_later(Duration::ZERO, move |_| r.set(true)).unwrap();
    lp.add_callback(move |lp| {
        lp.remove_timeout(h);
    })
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(!ran.get());
}

#[test]
fn timer_scheduled_in_the_past_during_an_iteration_runs_in_the_next_one() {
    // "timeouts that call add_timeout cannot schedule anything in this iteration"
    let mut lp = sim();
    let l = log();
    let l2 = l.clone();
    lp.call_later(Duration::ZERO, move |lp| {
        push(&l2, "outer");
        let l3 = l2.clone();
        let past = Instant::ZERO;
        lp.call_at(past, move |_| push(&l3, "inner")).unwrap();
    })
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*l.borrow(), ["outer"]);
    assert_eq!(
        lp.poller().stats().last_timeout,
        Some(Some(Duration::ZERO)),
        "a due timer makes the poll non-blocking"
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*l.borrow(), ["outer", "inner"]);
}

#[test]
fn two_thousand_added_and_removed_hour_timers_leave_the_heap_empty_and_the_loop_healthy() {
    // Tornado test_remove_timeout_cleanup: there, lazy cancellation needs a compaction; here
    // removal is real, so the heap is empty at once and a small heap never fills.
    let mut lp: EventLoop<SimPoller, 4, 8, 4> = EventLoop::with_poller(SimPoller::new());
    for _ in 0..2000 {
        let h = lp
            .call_later(Duration::from_secs(3600), |_| panic!("cancelled timer ran"))
            .unwrap();
        assert!(lp.remove_timeout(h));
    }
    assert_eq!(lp.timer_count(), 0);
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    lp.call_later(ms(1), move |lp| {
        f.set(true);
        lp.stop();
    })
    .unwrap();
    lp.run().unwrap();
    assert!(fired.get());
    assert_eq!(lp.now().as_nanos(), 1_000_000);
}

#[test]
fn removing_a_fired_or_unknown_timer_is_a_noop() {
    // Tornado test_remove_timeout_after_fire.
    let mut lp = sim();
    let h = lp.call_later(Duration::ZERO, |_| {}).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(!lp.remove_timeout(h));
    assert!(!lp.remove_timeout(h));
    // The fired timer's slot is reused; the stale handle must not cancel the new timer.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h2 = lp.call_later(Duration::ZERO, move |_| r.set(true)).unwrap();
    assert!(!lp.remove_timeout(h));
    assert!(lp.timer_pending(h2));
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(ran.get());
}

#[test]
fn full_timer_heap_hands_the_closure_back() {
    let mut lp: EventLoop<SimPoller, 4, 2, 4> = EventLoop::with_poller(SimPoller::new());
    lp.call_later(ms(1), |_| {}).unwrap();
    lp.call_later(ms(1), |_| {}).unwrap();
    let refused = lp.call_later(ms(1), |_| {}).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Timers
        }
    );
    let refused = lp.add_periodic(Periodic::every(ms(1)), |_| {}).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Timers
        }
    );
}

#[test]
fn reset_timeout_moves_a_pending_timer() {
    let mut lp = sim();
    let at = Rc::new(Cell::new(0));
    let a = at.clone();
    let h = lp
        .call_later(ms(10), move |lp| {
            a.set(lp.now().as_nanos());
            lp.stop()
        })
        .unwrap();
    assert!(lp.reset_timer(h, Instant::from_nanos(25_000_000)));
    lp.run().unwrap();
    assert_eq!(at.get(), 25_000_000);
    assert!(
        !lp.reset_timer(h, Instant::ZERO),
        "a fired timer cannot be reset"
    );
}

// ------------------------------------------------------------------------------------------
// poll timeout
// ------------------------------------------------------------------------------------------

#[test]
fn poll_timeout_is_zero_with_callbacks_queued() {
    let mut lp = sim();
    lp.call_later(Duration::from_secs(5), |_| {}).unwrap();
    lp.add_callback(|lp| lp.add_callback(|_| {}).map_err(drop).unwrap())
        .unwrap();
    lp.run_once(None).unwrap();
    assert_eq!(lp.poller().stats().last_timeout, Some(Some(Duration::ZERO)));
}

#[test]
fn poll_timeout_is_the_time_to_the_next_timer_read_after_callbacks_ran() {
    let mut lp = sim();
    lp.call_later(ms(50), |_| {}).unwrap();
    // A callback that "takes" 20 ms: the timeout must be computed with a fresh clock.
    lp.add_callback(|lp| lp.poller().advance(ms(20))).unwrap();
    lp.run_once(None).unwrap();
    assert_eq!(lp.poller().stats().last_timeout, Some(Some(ms(30))));
}

#[test]
fn poll_timeout_is_unbounded_when_idle_and_capped_by_run_once() {
    let mut lp = sim();
    lp.add_handler(1, Interest::READ, |_, _, _| Ok(())).unwrap();
    lp.run_once(Some(ms(7))).unwrap();
    assert_eq!(lp.poller().stats().last_timeout, Some(Some(ms(7))));
    // With no cap and nothing scheduled the loop would sleep forever: the simulated poller
    // reports that instead of hanging.
    assert_eq!(
        lp.run_once(None),
        Err(Error::Os {
            errno: SimPoller::<64>::WOULD_BLOCK_FOREVER
        })
    );
    assert_eq!(lp.poller().stats().last_timeout, Some(None));
}

#[test]
fn overdue_timer_gives_a_zero_timeout_not_a_negative_one() {
    let mut lp = sim();
    lp.call_later(ms(5), |_| {}).unwrap();
    lp.add_callback(|lp| lp.poller().advance(ms(9))).unwrap();
    lp.run_once(None).unwrap();
    assert_eq!(lp.poller().stats().last_timeout, Some(Some(Duration::ZERO)));
}

// ------------------------------------------------------------------------------------------
// fd handlers
// ------------------------------------------------------------------------------------------

#[test]
fn read_only_handler_on_a_writable_fd_sees_read_only() {
    let mut lp = sim();
    let seen = Rc::new(Cell::new(Readiness::empty()));
    let s = seen.clone();
    lp.add_handler(4, Interest::READ, move |lp, fd, r| {
        s.set(s.get() | r);
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .unwrap();
    lp.poller_mut().set_ready(4, Readiness::WRITE);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        seen.get(),
        Readiness::empty(),
        "writable only: a READ handler is not called"
    );
    lp.poller_mut().set_ready(4, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.get(), Readiness::READ);
}

#[test]
fn error_is_always_registered_and_delivered() {
    let mut lp = sim();
    let seen = Rc::new(Cell::new(Readiness::empty()));
    let s = seen.clone();
    lp.add_handler(4, Interest::WRITE, move |lp, fd, r| {
        s.set(r);
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        lp.poller().interest(4),
        Some(Interest::WRITE | Interest::ERROR)
    );
    lp.poller_mut()
        .set_ready(4, Readiness::HUP | Readiness::ERROR | Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.get(), Readiness::HUP | Readiness::ERROR);
}

#[test]
fn handler_that_removes_another_ready_fds_handler_prevents_its_call() {
    // Tornado test_remove_handler_from_handler.
    let mut lp = sim();
    let calls = log();
    for (me, other) in [(5, 6), (6, 5)] {
        let c = calls.clone();
        lp.add_handler(me, Interest::READ, move |lp, fd, _| {
            push(&c, format!("{fd}"));
            lp.poller_mut().clear_ready(fd);
            lp.remove_handler(other);
            Ok(())
        })
        .unwrap();
    }
    lp.poller_mut().set_ready(5, Readiness::READ);
    lp.poller_mut().set_ready(6, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.borrow().len(), 1, "{:?}", calls.borrow());
}

#[test]
fn same_fd_number_reregistered_after_removal_in_one_iteration_does_not_get_the_old_event() {
    let mut lp = sim();
    let calls = log();
    let c = calls.clone();
    // fd 5's handler closes fd 6 and "opens" a new fd that gets number 6 again.
    lp.add_handler(5, Interest::READ, move |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        lp.remove_handler(6);
        lp.poller_mut().close(6);
        lp.poller_mut().reopen(6);
        let c2 = c.clone();
        lp.add_handler(6, Interest::READ, move |_, _, _| {
            push(&c2, "new handler of fd 6");
            Ok(())
        })
        .map_err(|_| HandlerError::Other("re-add refused"))?;
        Ok(())
    })
    .unwrap();
    let c = calls.clone();
    lp.add_handler(6, Interest::READ, move |_, _, _| {
        push(&c, "old handler of fd 6");
        Ok(())
    })
    .unwrap();
    let old_key = lp.handler_id(6).unwrap().key();
    lp.poller_mut().set_ready(5, Readiness::READ);
    // The old registration's event is already in the poll result, behind fd 5's.
    let key5 = lp.handler_id(5).unwrap().key();
    lp.poller_mut().inject_event(key5, Readiness::READ);
    lp.poller_mut().inject_event(old_key, Readiness::READ);
    lp.poller_mut().clear_ready(5);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(calls.borrow().is_empty(), "{:?}", calls.borrow());
    assert_ne!(lp.handler_id(6).unwrap().key(), old_key);
}

#[test]
fn duplicate_add_is_an_error_and_the_first_handler_still_fires() {
    // Tornado test_multiple_add; 6.x semantics: nothing is mutated by the refused add.
    let mut lp = sim();
    let calls = log();
    let c = calls.clone();
    lp.add_handler(8, Interest::READ, move |lp, fd, _| {
        push(&c, "first");
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .unwrap();
    let c = calls.clone();
    let refused = lp
        .add_handler(8, Interest::WRITE, move |_, _, _| {
            push(&c, "second");
            Ok(())
        })
        .unwrap_err();
    assert_eq!(refused.error, Error::AlreadyRegistered { fd: 8 });
    assert_eq!(
        lp.poller().interest(8),
        Some(Interest::READ | Interest::ERROR)
    );
    lp.poller_mut()
        .set_ready(8, Readiness::READ | Readiness::WRITE);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*calls.borrow(), ["first"]);
}

#[test]
fn removing_an_unknown_fd_is_a_noop() {
    // Tornado test_remove_without_add.
    let mut lp = sim();
    assert!(!lp.remove_handler(42));
    assert_eq!(lp.poller().stats().deregisters, 0);
}

#[test]
fn handler_may_remove_itself() {
    let mut lp = sim();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(3, Interest::READ, move |lp, fd, _| {
        c.set(c.get() + 1);
        assert!(lp.remove_handler(fd));
        Ok(())
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(lp.handler_count(), 0);
}

#[test]
fn unchanged_interest_costs_no_syscall() {
    let mut lp = sim();
    lp.add_handler(3, Interest::READ, |_, _, _| Ok(())).unwrap();
    lp.update_handler(3, Interest::READ).unwrap();
    lp.update_handler(3, Interest::READ | Interest::ERROR)
        .unwrap();
    assert_eq!(lp.poller().stats().modifies, 0);
    lp.update_handler(3, Interest::WRITE).unwrap();
    assert_eq!(lp.poller().stats().modifies, 1);
    assert_eq!(
        lp.poller().interest(3),
        Some(Interest::WRITE | Interest::ERROR)
    );
}

#[test]
fn update_of_an_unknown_fd_is_an_error() {
    let mut lp = sim();
    assert_eq!(
        lp.update_handler(9, Interest::READ),
        Err(Error::NotRegistered { fd: 9 })
    );
}

#[test]
fn narrowing_interest_hides_an_already_fetched_write() {
    // Tornado delivers a WRITE fetched before update_handler removed WRITE; here the handler
    // only ever sees what it is registered for at dispatch time.
    let mut lp = sim();
    let seen = log();
    let s = seen.clone();
    lp.add_handler(5, Interest::READ, move |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        lp.update_handler(6, Interest::READ)
            .map_err(|_| HandlerError::Other("update"))
    })
    .unwrap();
    let s2 = s.clone();
    lp.add_handler(6, Interest::READ | Interest::WRITE, move |lp, fd, r| {
        push(&s2, format!("{r:?}"));
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .unwrap();
    let k5 = lp.handler_id(5).unwrap().key();
    let k6 = lp.handler_id(6).unwrap().key();
    lp.poller_mut().inject_event(k5, Readiness::READ);
    lp.poller_mut().inject_event(k6, Readiness::WRITE);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
}

#[test]
fn full_handler_table_and_bad_fds_are_refused_with_the_handler_back() {
    let mut lp: EventLoop<SimPoller, 2, 4, 4> = EventLoop::with_poller(SimPoller::new());
    lp.add_handler(1, Interest::READ, |_, _, _| Ok(())).unwrap();
    lp.add_handler(2, Interest::READ, |_, _, _| Ok(())).unwrap();
    let r = lp
        .add_handler(3, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(
        r.error,
        Error::Full {
            what: Resource::Handlers
        }
    );
    let r = lp
        .add_handler(-1, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(r.error, Error::InvalidFd { fd: -1 });
    lp.remove_handler(2);
    lp.poller_mut().close(2);
    let r = lp
        .add_handler(2, Interest::READ, |_, _, _| Ok(()))
        .unwrap_err();
    assert_eq!(
        r.error,
        Error::Os {
            errno: Errno::EBADF
        },
        "the kernel's EBADF comes through"
    );
    assert_eq!(
        lp.handler_count(),
        1,
        "a refused registration leaves no slot behind"
    );
    lp.add_handler(5, Interest::READ, |_, _, _| Ok(())).unwrap();
}

#[test]
fn handler_error_goes_to_the_error_hook_and_the_loop_goes_on() {
    let mut lp = sim();
    let failures = Rc::new(RefCell::new(Vec::new()));
    let f = failures.clone();
    lp.set_error_hook(move |failure| f.borrow_mut().push(failure));
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let id = lp
        .add_handler(3, Interest::READ, move |_, _, _| {
            c.set(c.get() + 1);
            Err(HandlerError::Os(Errno::ENOMEM))
        })
        .unwrap();
    lp.add_handler(4, Interest::READ, |_, _, _| {
        Err(HandlerError::Os(Errno::EPIPE))
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.poller_mut().set_ready(4, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 2, "a failing handler stays registered");
    assert_eq!(
        *failures.borrow(),
        [Failure::Handler {
            id,
            fd: 3,
            error: HandlerError::Os(Errno::ENOMEM)
        }; 2],
        "EPIPE is ignored, as in Tornado"
    );
}

// ------------------------------------------------------------------------------------------
// start / stop
// ------------------------------------------------------------------------------------------

#[test]
fn stop_before_run_makes_run_return_at_once() {
    let mut lp = sim();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.add_callback(move |_| r.set(true)).unwrap();
    lp.stop();
    lp.run().unwrap();
    assert!(!ran.get(), "nothing runs");
    // The stop was consumed: the next run runs.
    lp.add_callback(|lp| lp.stop()).unwrap();
    lp.run().unwrap();
    assert!(ran.get());
}

#[test]
fn loop_can_be_run_again_after_it_stopped() {
    // Tornado test_non_current: three start/stop cycles.
    let mut lp = sim();
    let n = Rc::new(Cell::new(0));
    for _ in 0..3 {
        let n = n.clone();
        lp.call_later(ms(1), move |lp| {
            n.set(n.get() + 1);
            lp.stop()
        })
        .unwrap();
        lp.run().unwrap();
    }
    assert_eq!(n.get(), 3);
    assert!(!lp.is_running());
}

#[test]
fn run_inside_the_running_loop_is_an_error_not_a_deadlock() {
    // Tornado test_reentrant.
    let mut lp = sim();
    let inner = Rc::new(Cell::new(None));
    let i = inner.clone();
    lp.add_callback(move |lp| {
        i.set(Some((lp.run(), lp.run_once(None), lp.is_running())));
        lp.stop();
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(
        inner.get(),
        Some((Err(Error::AlreadyRunning), Err(Error::AlreadyRunning), true))
    );
}

#[test]
fn stop_from_a_handler_finishes_dispatch_and_the_next_iterations_work() {
    // Tornado #672 / TestPeriodicCallback.test_basic: after stop(), the rest of this poll's
    // events are dispatched, and the next iteration's callbacks and due timers still run.
    let mut lp = sim();
    let l = log();
    for fd in [1, 2] {
        let l = l.clone();
        lp.add_handler(fd, Interest::READ, move |lp, fd, _| {
            push(&l, format!("fd{fd}"));
            lp.poller_mut().clear_ready(fd);
            lp.stop();
            let l2 = l.clone();
            lp.add_callback(move |_| push(&l2, "callback"))
                .map_err(|_| HandlerError::Other("full"))?;
            Ok(())
        })
        .unwrap();
    }
    let l2 = l.clone();
    lp.call_later(Duration::ZERO, move |_| push(&l2, "timer"))
        .unwrap();
    lp.poller_mut().set_ready(1, Readiness::READ);
    lp.poller_mut().set_ready(2, Readiness::READ);
    // First iteration's timer runs before the poll; then stop() inside dispatch.
    lp.run().unwrap();
    let got = l.borrow().clone();
    assert_eq!(got[0], "timer");
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[3..], ["callback", "callback"]);
    assert_eq!(lp.poller().stats().waits, 1, "no poll after the stop");
}

#[test]
fn eintr_from_the_poller_is_retried() {
    let mut lp = sim();
    lp.poller_mut().fail_next_wait(Errno::EINTR);
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    lp.call_later(ms(3), move |lp| {
        f.set(true);
        lp.stop()
    })
    .unwrap();
    lp.run().unwrap();
    assert!(fired.get());
    assert_eq!(lp.poller().stats().waits, 2);
}

#[test]
fn other_poller_errors_end_run_and_leave_the_loop_usable() {
    let mut lp = sim();
    lp.poller_mut().fail_next_wait(Errno::ENOMEM);
    lp.call_later(ms(1), |lp| lp.stop()).unwrap();
    assert_eq!(
        lp.run(),
        Err(Error::Os {
            errno: Errno::ENOMEM
        })
    );
    assert!(!lp.is_running());
    lp.run().unwrap();
}

// ------------------------------------------------------------------------------------------
// periodic callbacks (Tornado 5.1 PeriodicCallback)
// ------------------------------------------------------------------------------------------

fn periodic_times(
    lp: &mut Sim,
    period: Duration,
    body: impl Fn(&mut Sim, usize) + 'static,
    calls: usize,
) -> Vec<u64> {
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    let body = Rc::new(body);
    lp.add_periodic(Periodic::every(period), move |lp| {
        t.borrow_mut().push(lp.now().as_nanos() / 1_000_000);
        let n = t.borrow().len();
        body(lp, n);
        if n == calls {
            lp.stop();
        }
    })
    .unwrap();
    lp.run().unwrap();
    let v = times.borrow().clone();
    v
}

#[test]
fn periodic_first_call_is_one_period_after_start_and_stays_on_the_grid() {
    let mut lp = sim();
    lp.poller().advance(ms(3));
    let times = periodic_times(&mut lp, ms(10), |_, _| {}, 4);
    assert_eq!(times, [13, 23, 33, 43]);
}

#[test]
fn periodic_skips_missed_ticks_instead_of_catching_up() {
    let mut lp = sim();
    // The second call takes 35 ms: ticks at 30, 40 and 50 are missed; the next is at 60.
    let times = periodic_times(
        &mut lp,
        ms(10),
        |lp, n| {
            if n == 2 {
                lp.poller().advance(ms(35))
            }
        },
        4,
    );
    assert_eq!(times, [10, 20, 60, 70]);
}

#[test]
fn periodic_never_repeats_a_call_when_the_clock_steps_back() {
    // Tornado #2333 / PR #2338.
    let mut lp = sim();
    let times = periodic_times(
        &mut lp,
        ms(10),
        |lp, n| {
            if n == 2 {
                lp.poller().set_time(Instant::from_nanos(5_000_000))
            }
        },
        4,
    );
    // After the call at 20 the clock reads 5: the next call is still one period after 20 by
    // the grid (30), which the clock reaches 25 ms later.
    assert_eq!(times, [10, 20, 30, 40]);
}

#[test]
fn periodic_can_stop_itself_and_its_slot_is_freed() {
    let mut lp = sim();
    let handle = Rc::new(Cell::new(None));
    let h = handle.clone();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    handle.set(Some(
        lp.add_periodic(Periodic::every(ms(5)), move |lp| {
            c.set(c.get() + 1);
            if c.get() == 3 {
                assert!(lp.remove_timeout(h.get().unwrap()));
            }
        })
        .unwrap(),
    ));
    lp.call_later(ms(100), |lp| lp.stop()).unwrap();
    lp.run().unwrap();
    assert_eq!(calls.get(), 3);
    assert_eq!(lp.timer_count(), 0);
    assert!(!lp.timer_pending(handle.get().unwrap()));
}

#[test]
fn periodic_with_jitter_stays_within_the_window() {
    let mut lp = sim();
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    lp.add_periodic(
        Periodic::every(ms(100)).with_jitter_ppm(200_000),
        move |lp| {
            t.borrow_mut().push(lp.now().as_nanos());
            if t.borrow().len() == 50 {
                lp.stop();
            }
        },
    )
    .unwrap();
    lp.run().unwrap();
    let t = times.borrow();
    let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (90_000_000..110_000_000).contains(g)),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().any(|g| *g != 100_000_000),
        "jitter varies the period"
    );
}

#[test]
fn periodic_with_zero_period_is_refused() {
    let mut lp = sim();
    let r = lp
        .add_periodic(Periodic::every(Duration::ZERO), |_| {})
        .unwrap_err();
    assert_eq!(r.error, Error::InvalidPeriod);
}

// ------------------------------------------------------------------------------------------
// construction, ownership
// ------------------------------------------------------------------------------------------

#[test]
fn a_loop_for_a_million_timers_is_built_without_touching_the_stack() {
    // A 64 KiB stack: building the ~100 MB tables by value would overflow it at once.
    let t = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| {
            let mut lp =
                EventLoop::<SimPoller, 4, 1_000_000, 4>::with_poller_boxed(SimPoller::new());
            for i in 0..1_000_000u64 {
                lp.call_at(Instant::from_nanos(1_000_000 - i), |_| {})
                    .map_err(|r| r.error)
                    .unwrap();
            }
            assert_eq!(
                lp.call_later(ms(1), |_| {})
                    .map_err(|r| r.error)
                    .unwrap_err(),
                Error::Full {
                    what: Resource::Timers
                }
            );
            lp.poller().advance(ms(1));
            lp.run_once(Some(Duration::ZERO)).unwrap();
            lp.timer_count()
        })
        .unwrap();
    assert_eq!(t.join().unwrap(), 0);
}

#[test]
fn init_in_builds_a_loop_in_caller_provided_memory() {
    let mut slot = std::mem::MaybeUninit::<Sim>::uninit();
    let lp = Sim::init_in(&mut slot, SimPoller::new());
    lp.add_callback(|lp| lp.stop()).unwrap();
    lp.run().unwrap();
    // SAFETY: init_in initialised the loop; drop it before the slot goes away.
    unsafe { slot.assume_init_drop() };
}

#[test]
fn dropping_the_loop_closes_owned_fds_only_and_drops_every_closure() {
    let rc = Rc::new(());
    let mut lp = sim();
    for fd in [10, 11] {
        let held = rc.clone();
        lp.add_handler(fd, Interest::READ, move |_, _, _| {
            let _ = &held;
            Ok(())
        })
        .unwrap();
    }
    let held = rc.clone();
    lp.call_later(ms(1), move |_| drop(held)).unwrap();
    let held = rc.clone();
    lp.add_callback(move |_| drop(held)).unwrap();
    assert_eq!(Rc::strong_count(&rc), 5);
    drop(lp);
    assert_eq!(Rc::strong_count(&rc), 1);
}

#[test]
fn add_handler_with_state_hands_the_state_back_on_refusal_and_keeps_it_between_calls() {
    type Lp2 = EventLoop<SimPoller, 2, 4, 4>;
    // State: a private count, and where it is published after each call.
    type Counted = (u32, Rc<Cell<u32>>);
    fn count(state: &mut Counted, lp: &mut Lp2, fd: i32, _: Readiness) -> loop_core::HandlerResult {
        state.0 += 1;
        state.1.set(state.0);
        lp.poller_mut().clear_ready(fd);
        Ok(())
    }
    fn ignore(_: &mut String, _: &mut Lp2, _: i32, _: Readiness) -> loop_core::HandlerResult {
        Ok(())
    }
    let mut lp: Lp2 = EventLoop::with_poller(SimPoller::new());
    let published = Rc::new(Cell::new(0));
    lp.add_handler_with_state(1, Interest::READ, (0, published.clone()), count)
        .unwrap();
    lp.add_handler(2, Interest::READ, |_, _, _| Ok(())).unwrap();
    let refused = lp
        .add_handler_with_state(3, Interest::READ, String::from("mine"), ignore)
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Handlers
        }
    );
    let (state, _f) = refused.into_inner();
    assert_eq!(state, "mine", "the caller's value comes back as it was");
    for _ in 0..3 {
        lp.poller_mut().set_ready(1, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(
        published.get(),
        3,
        "the state persisted across the three calls"
    );
}
