//! Loop-level tests inside the crate, so that Miri (which runs only this crate's tests) checks
//! the in-place constructor and the take-call-restore path of handlers and timers.

extern crate std;
use super::*;
use crate::sim::SimPoller;
use std::boxed::Box;
use std::cell::Cell;
use std::rc::Rc;

type Lp = EventLoop<SimPoller<8>, 4, 8, 4>;

#[test]
fn built_in_place_it_runs_handlers_timers_and_callbacks() {
    let mut mem = Box::new(MaybeUninit::<Lp>::uninit());
    let lp = Lp::init_in(&mut mem, SimPoller::new());
    let hits = Rc::new(Cell::new(0u32));
    let h = hits.clone();
    lp.add_handler(3, Interest::READ, move |lp, fd, _| {
        h.set(h.get() + 1);
        lp.poller_mut().clear_ready(fd);
        let h2 = h.clone();
        lp.add_callback(move |_| h2.set(h2.get() + 10))
            .map_err(|_| HandlerError::Other("full"))
    })
    .map_err(|r| r.error)
    .unwrap();
    let h = hits.clone();
    lp.call_later(Duration::from_millis(1), move |lp| {
        h.set(h.get() + 100);
        lp.poller_mut().set_ready(3, Readiness::READ);
    })
    .map_err(|r| r.error)
    .unwrap();
    let h = hits.clone();
    let p = lp
        .add_periodic(Periodic::every(Duration::from_millis(2)), move |_| {
            h.set(h.get() + 1000)
        })
        .map_err(|r| r.error)
        .unwrap();
    for _ in 0..6 {
        lp.run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(lp.remove_timeout(p));
    assert_eq!(
        hits.get() % 1000,
        111,
        "timer, handler and its callback each ran once"
    );
    assert!(
        hits.get() >= 2000,
        "the periodic callback ran: {}",
        hits.get()
    );
    // SAFETY: `init_in` initialised the loop; drop it before the box frees the memory.
    unsafe { mem.assume_init_drop() };
}

#[test]
fn handler_that_removes_and_readds_its_own_fd_keeps_only_the_new_closure() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let rc = Rc::new(());
    let held = rc.clone();
    lp.add_handler(5, Interest::READ, move |lp, fd, _| {
        let _keep = &held;
        lp.remove_handler(fd);
        lp.add_handler(fd, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|_| HandlerError::Other("re-add"))?;
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(5, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        Rc::strong_count(&rc),
        1,
        "the removed handler was dropped after its call"
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.handler_count(), 1);
}

#[test]
fn dropping_a_loop_with_everything_pending_releases_every_capture() {
    let rc = Rc::new(());
    {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let c = rc.clone();
        lp.add_handler(1, Interest::READ, move |_, _, _| {
            let _ = &c;
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        let c = rc.clone();
        lp.call_later(Duration::from_secs(1), move |_| drop(c))
            .map_err(|r| r.error)
            .unwrap();
        let c = rc.clone();
        lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |_| {
            let _ = &c;
        })
        .map_err(|r| r.error)
        .unwrap();
        let c = rc.clone();
        lp.add_callback(move |_| drop(c))
            .map_err(|r| r.error)
            .unwrap();
        lp.set_error_hook({
            let c = rc.clone();
            move |_| {
                let _ = &c;
            }
        });
        assert_eq!(Rc::strong_count(&rc), 6);
    }
    assert_eq!(Rc::strong_count(&rc), 1);
}

// -------------------------------------------------------------------------------------
// Panics in user closures (ARCHITECTURE.md, "Failure model"). Test builds catch as with `std`;
// `panic::testing::without_catching` lets the panic unwind, as without `std`.
// -------------------------------------------------------------------------------------

use crate::panic::testing::without_catching;
use crate::remote::Remote;
use std::cell::RefCell;
use std::vec::Vec;

/// Counts its drops.
struct Counted(Rc<Cell<u32>>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Panics when dropped (not while unwinding: that would abort).
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop failed");
        }
    }
}

fn record_failures(lp: &mut Lp) -> Rc<RefCell<Vec<Failure>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_error_hook(move |f| s.borrow_mut().push(f));
    seen
}

fn unwinds(f: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
}

fn run_unwinds(lp: &mut Lp, timeout: Option<Duration>) -> bool {
    unwinds(|| {
        let _ = lp.run_once(timeout);
    })
}

#[test]
fn caught_panic_in_a_callback_is_reported_and_the_loop_runs_again() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let seen = record_failures(&mut lp);
    let drops = Rc::new(Cell::new(0));
    let c = Counted(drops.clone());
    lp.add_callback(move |_| {
        let _c = c;
        panic!("callback boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(drops.get(), 1, "captures dropped once, by the unwinding");
    assert_eq!(lp.counters().panics, 1);
    let seen = seen.borrow();
    let (source, name, message) = match seen[0] {
        Failure::Panicked {
            source,
            name,
            message,
        } => (source, name, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(source, Source::Callback);
    assert!(name.contains("caught_panic_in_a_callback"), "{name}");
    assert_eq!(message.as_str(), "callback boom");
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.add_callback(move |_| r.set(true))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(ran.get());
}

#[test]
fn caught_panic_in_a_handler_keeps_it_registered_with_its_closure() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let seen = record_failures(&mut lp);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let id = lp
        .add_handler(3, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                panic!("handler boom");
            }
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        seen.borrow()[0],
        Failure::Panicked {
            source: Source::Handler { id, fd: 3 },
            name: seen.borrow()[0].panicked_name(),
            message: PanicMessage::new("handler boom"),
        }
    );
    assert_eq!(lp.handler_id(3), Some(id), "still registered");
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 2, "the next event reaches the same closure");
    assert!(lp.remove_handler(3));
    assert!(lp.poller().interest(3).is_none(), "deregistered");
}

impl Failure {
    fn panicked_name(&self) -> &'static str {
        match self {
            Failure::Panicked { name, .. } => name,
            _ => "",
        }
    }
}

#[test]
fn caught_panic_in_a_timer_frees_its_slot() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let _seen = record_failures(&mut lp);
    let drops = Rc::new(Cell::new(0));
    for _ in 0..8 {
        let c = Counted(drops.clone());
        lp.call_later(Duration::from_millis(1), move |_| {
            let _c = c;
            panic!("timer boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    lp.run_once(Some(Duration::from_millis(1))).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().panics, 8);
    assert_eq!(lp.timer_count(), 0);
    assert_eq!(drops.get(), 8);
    for _ in 0..8 {
        lp.call_later(Duration::from_millis(1), |_| {})
            .map_err(|r| r.error)
            .unwrap();
    }
}

#[test]
fn caught_panic_in_a_periodic_callback_keeps_it_on_its_grid() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let seen = record_failures(&mut lp);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let h = lp
        .add_periodic(Periodic::every(Duration::from_millis(10)), move |_| {
            c.set(c.get() + 1);
            panic!("tick boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    // The first iteration only sleeps until the first tick.
    for _ in 0..4 {
        lp.run_once(None).unwrap();
    }
    assert_eq!(calls.get(), 3, "re-armed after each panic");
    assert_eq!(lp.now().as_nanos(), 40_000_000, "on its grid");
    assert!(matches!(
        seen.borrow()[2],
        Failure::Panicked { source: Source::Timer { handle }, .. } if handle == h
    ));
    assert!(lp.remove_timeout(h));
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn without_an_error_hook_a_caught_panic_unwinds_on_with_the_loop_put_right() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let p = lp
        .add_periodic(Periodic::every(Duration::from_millis(10)), move |_| {
            c.set(c.get() + 1);
            panic!("tick boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.add_handler(3, Interest::READ, |_, _, _| panic!("handler boom"))
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(None).unwrap(); // sleeps until the first tick
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)), "tick panics");
    assert!(lp.timer_pending(p), "re-armed before unwinding on");
    assert!(!lp.is_running());
    lp.poller_mut().set_ready(3, Readiness::READ);
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)), "handler panics");
    assert!(lp.handler_id(3).is_some());
    assert!(lp.remove_handler(3));
    lp.run_once(None).unwrap(); // sleeps until the next tick
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    assert_eq!((calls.get(), lp.counters().panics), (2, 3));
}

#[test]
fn uncaught_panic_in_a_handler_leaves_the_loop_runnable_with_the_closure_restored() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(3, Interest::READ, move |lp, fd, _| {
        c.set(c.get() + 1);
        if c.get() == 1 {
            panic!("handler boom");
        }
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    {
        let _unwind = without_catching();
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    }
    assert!(!lp.is_running());
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 2, "closure back in its slot");
    assert_eq!(lp.counters().panics, 0, "nothing was caught");
}

#[test]
fn uncaught_panic_in_timers_and_callbacks_frees_their_slots() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let drops = Rc::new(Cell::new(0));
    let _unwind = without_catching();
    for _ in 0..8 {
        let c = Counted(drops.clone());
        lp.call_later(Duration::from_millis(1), move |_| {
            let _c = c;
            panic!("timer boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    let c = Counted(drops.clone());
    lp.add_periodic(Periodic::every(Duration::from_millis(1)), move |_| {
        let _c = &c;
        panic!("tick boom")
    })
    .map_err(|_| ())
    .unwrap_err(); // the heap is full: the periodic is refused, and handed back
    assert_eq!(drops.get(), 1);
    let mut panics = 0;
    while lp.timer_count() > 0 {
        if run_unwinds(&mut lp, Some(Duration::from_millis(1))) {
            panics += 1;
        }
        assert!(panics <= 8, "no timer ran twice");
    }
    assert_eq!(panics, 8);
    assert_eq!(drops.get(), 9);
    let c = Counted(drops.clone());
    let p = lp
        .add_periodic(Periodic::every(Duration::from_millis(1)), move |_| {
            let _c = &c;
            panic!("tick boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    let mut unwound = 0;
    for _ in 0..2 {
        unwound += u32::from(run_unwinds(&mut lp, None));
    }
    assert_eq!(unwound, 1);
    assert!(!lp.timer_pending(p), "an uncaught panic stops a periodic");
    assert_eq!(drops.get(), 10);
    let c = Counted(drops.clone());
    lp.add_callback(move |_| {
        let _c = c;
        panic!("cb boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    assert_eq!(drops.get(), 11);
    assert_eq!(lp.callback_count(), 0);
    lp.run_once(Some(Duration::ZERO)).unwrap();
}

#[test]
fn panic_in_the_error_hook_unwinds_once_and_leaves_the_loop_runnable() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let hook_calls = Rc::new(Cell::new(0));
    let h = hook_calls.clone();
    lp.set_error_hook(move |_| {
        h.set(h.get() + 1);
        panic!("hook boom");
    });
    lp.add_handler(3, Interest::READ, |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        panic!("handler boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    assert_eq!(hook_calls.get(), 1, "no recursion through the hook");
    assert!(!lp.is_running());
    assert!(lp.handler_id(3).is_some());
    lp.run_once(Some(Duration::ZERO)).unwrap();
}

#[test]
fn panic_in_the_watchdog_hook_still_puts_the_handler_back() {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.set_watchdog(Duration::ZERO, |_| panic!("watchdog boom"));
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_handler(3, Interest::READ, move |lp, fd, _| {
        c.set(c.get() + 1);
        lp.poller_mut().clear_ready(fd);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    lp.clear_watchdog();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 2, "the closure went back to its slot");
}

#[test]
fn panicking_signal_handler_stays_registered_caught_or_not() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    const SIGNO: i32 = 42;
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    let seen = record_failures(&mut lp);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_signal_handler(SIGNO, fake_installer(), move |_, _| {
        c.set(c.get() + 1);
        panic!("signal boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    crate::signal::deliver(SIGNO);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(seen.borrow().len(), 1);
    {
        let _unwind = without_catching();
        crate::signal::deliver(SIGNO);
        assert!(run_unwinds(&mut lp, Some(Duration::ZERO)));
    }
    crate::signal::deliver(SIGNO);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 3);
    assert!(lp.remove_signal_handler(SIGNO));
}

static INSTALLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RESTORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fake_installer() -> crate::SignalInstaller {
    use std::sync::atomic::Ordering::SeqCst;
    crate::SignalInstaller {
        install: |s| {
            INSTALLED.fetch_or(1u64 << s, SeqCst);
            Ok(())
        },
        restore: |s| {
            RESTORED.fetch_or(1u64 << s, SeqCst);
        },
    }
}

/// A loop holding two handlers (one on an owned fd), a timer, a periodic callback, a
/// callback and a signal handler, each with a counted capture; the callback's capture
/// panics when dropped, and with `more_panics` the second handler's and the periodic's.
fn loaded_loop(
    remote: &'static Remote<Lp, 4>,
    drops: &Rc<Cell<u32>>,
    signo: i32,
    more_panics: bool,
) -> (Lp, crate::LoopHandle<Lp, 4>) {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(remote).unwrap();
    let c = Counted(drops.clone());
    lp.register_then(4, Interest::READ, true, (), |()| {
        InlineFn::new(move |_: &mut Lp, _| {
            let _ = &c;
            Ok(())
        })
    })
    .map_err(|r| r.error)
    .unwrap();
    let (c, p) = (
        Counted(drops.clone()),
        if more_panics { Some(PanicOnDrop) } else { None },
    );
    lp.add_handler(5, Interest::READ, move |_, _, _| {
        let _ = (&c, &p);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    let c = Counted(drops.clone());
    lp.call_later(Duration::from_secs(1), move |_| drop(c))
        .map_err(|r| r.error)
        .unwrap();
    let (c, p) = (
        Counted(drops.clone()),
        if more_panics { Some(PanicOnDrop) } else { None },
    );
    lp.add_periodic(Periodic::every(Duration::from_secs(1)), move |_| {
        let _ = (&c, &p);
    })
    .map_err(|r| r.error)
    .unwrap();
    let (c, p) = (Counted(drops.clone()), PanicOnDrop);
    lp.add_callback(move |_| drop((c, p)))
        .map_err(|r| r.error)
        .unwrap();
    let c = Counted(drops.clone());
    lp.add_signal_handler(signo, fake_installer(), move |_, _| {
        let _ = &c;
    })
    .map_err(|r| r.error)
    .unwrap();
    (lp, handle)
}

#[test]
fn panicking_captures_at_close_are_reported_and_everything_else_released() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let drops = Rc::new(Cell::new(0));
    let (mut lp, handle) = loaded_loop(&REMOTE, &drops, 40, true);
    let seen = record_failures(&mut lp);
    lp.close();
    assert_eq!(drops.get(), 6, "every counted capture dropped once");
    assert_eq!(lp.counters().panics, 3);
    assert_eq!(seen.borrow().len(), 3);
    assert!(lp.poller().interest(4).is_none() && lp.poller().interest(5).is_none());
    assert_ne!(
        RESTORED.load(std::sync::atomic::Ordering::SeqCst) & (1u64 << 40),
        0
    );
    assert!(matches!(
        handle.add_callback(|_| {}),
        Err(Refused {
            error: Error::Closed,
            ..
        })
    ));
    assert_eq!(
        (lp.handler_count(), lp.timer_count(), lp.callback_count()),
        (0, 0, 0)
    );
    drop(lp);
    assert_eq!(drops.get(), 6, "nothing dropped twice");
}

#[test]
fn uncaught_panic_while_dropping_the_loop_still_finishes_the_teardown() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let drops = Rc::new(Cell::new(0));
    // One panicking capture only: a second panic while unwinding aborts.
    let (lp, handle) = loaded_loop(&REMOTE, &drops, 41, false);
    let _unwind = without_catching();
    assert!(unwinds(move || drop(lp)));
    assert_eq!(drops.get(), 6);
    assert_ne!(
        RESTORED.load(std::sync::atomic::Ordering::SeqCst) & (1u64 << 41),
        0
    );
    assert!(handle.add_callback(|_| {}).is_err());
}
