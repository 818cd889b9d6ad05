//! A panic in user code never bricks the loop, leaks a slot or loses a capture (issue 10,
//! defects 5–7; ARCHITECTURE.md). With `std` (as here) a panic in a handler, timer, callback,
//! remote callback or signal handler is caught; with an error hook set it is reported as
//! `Failure::Panicked` and the loop goes on (Tornado's model), without one it unwinds on out
//! of `run` with the loop already put right.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{
    Error, EventLoop, Failure, Interest, PanicMessage, Periodic, Readiness, Refused, Remote,
    SignalInstaller, Source,
};

#[path = "common/drops.rs"]
mod drops;
use drops::{counted, panic_on_drop};

type Lp = EventLoop<SimPoller<16>, 4, 8, 4>;

fn sim() -> Lp {
    EventLoop::with_poller(SimPoller::new())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `lp` until a timer `d` from now stops it.
fn run_for(lp: &mut Lp, d: Duration) {
    lp.call_later(d, |lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    lp.run().unwrap();
}

/// A fresh simulated loop that records its failures (see [`record_failures`]).
fn recording_sim() -> (Lp, Rc<RefCell<Vec<Failure>>>) {
    let mut lp = sim();
    let seen = record_failures(&mut lp);
    (lp, seen)
}

fn record_failures(lp: &mut Lp) -> Rc<RefCell<Vec<Failure>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_error_hook(move |f| s.borrow_mut().push(f));
    seen
}

fn panic_messages(seen: &RefCell<Vec<Failure>>) -> Vec<String> {
    seen.borrow()
        .iter()
        .filter_map(|f| match f {
            Failure::Panicked { message, .. } => Some(message.to_string()),
            _ => None,
        })
        .collect()
}

/// `run` after a panic: it must not say `AlreadyRunning`, and it must run new work.
fn runs_again(lp: &mut Lp) {
    assert!(!lp.is_running());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.add_callback(move |lp| {
        r.set(true);
        lp.stop();
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run().unwrap();
    assert!(ran.get());
}

static INSTALLED: AtomicU64 = AtomicU64::new(0);
static RESTORED: AtomicU64 = AtomicU64::new(0);

/// Records instead of touching the process's signal dispositions.
const FAKE_SIGNALS: SignalInstaller = SignalInstaller {
    install: |s| {
        INSTALLED.fetch_or(1 << s, Ordering::SeqCst);
        Ok(())
    },
    restore: |s| {
        RESTORED.fetch_or(1 << s, Ordering::SeqCst);
    },
};

#[test]
fn loop_runs_again_after_a_panicking_callback() {
    let (mut lp, seen) = recording_sim();
    lp.add_callback(|_| panic!("callback boom"))
        .map_err(|r| r.error)
        .unwrap();
    lp.add_callback(|lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    lp.run().unwrap();
    assert_eq!(panic_messages(&seen), ["callback boom"]);
    runs_again(&mut lp);
}

#[test]
fn loop_runs_again_after_a_panicking_timer() {
    let (mut lp, seen) = recording_sim();
    lp.call_later(ms(5), |_| panic!("timer boom"))
        .map_err(|r| r.error)
        .unwrap();
    run_for(&mut lp, ms(6));
    assert_eq!(panic_messages(&seen), ["timer boom"]);
    assert_eq!(lp.timer_count(), 0);
    runs_again(&mut lp);
}

#[test]
fn loop_runs_again_after_a_panicking_handler() {
    let (mut lp, seen) = recording_sim();
    lp.add_handler(3, Interest::READ, |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        lp.stop();
        panic!("handler boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run().unwrap();
    assert_eq!(panic_messages(&seen), ["handler boom"]);
    runs_again(&mut lp);
}

#[test]
fn loop_runs_again_after_a_panicking_signal_handler() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    // 50: a signal number no other test of this binary registers (the pending mask is global).
    const SIGNO: i32 = 50;
    let mut lp = sim();
    lp.attach_remote(&REMOTE).unwrap();
    let seen = record_failures(&mut lp);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_signal_handler(SIGNO, FAKE_SIGNALS, move |lp, signo| {
        assert_eq!(signo, SIGNO);
        c.set(c.get() + 1);
        lp.stop();
        panic!("signal boom")
    })
    .map_err(|r| r.error)
    .unwrap();
    for round in 1..=2 {
        loop_core::signal::deliver(SIGNO);
        lp.run().unwrap();
        assert_eq!(calls.get(), round, "still registered after a panic");
    }
    assert_eq!(panic_messages(&seen), ["signal boom", "signal boom"]);
    assert!(matches!(
        seen.borrow()[0],
        Failure::Panicked {
            source: Source::Signal { signo: SIGNO },
            ..
        }
    ));
    runs_again(&mut lp);
    assert!(lp.remove_signal_handler(SIGNO));
    assert_ne!(RESTORED.load(Ordering::SeqCst) & (1 << SIGNO), 0);
}

#[test]
fn loop_runs_again_after_a_panicking_remote_callback() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let mut lp = sim();
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let seen = record_failures(&mut lp);
    std::thread::spawn(move || {
        handle
            .add_callback(|_| panic!("remote boom"))
            .map_err(|r| r.error)
            .unwrap();
        handle
            .add_callback(|lp| lp.stop())
            .map_err(|r| r.error)
            .unwrap();
    })
    .join()
    .unwrap();
    lp.run().unwrap();
    assert_eq!(panic_messages(&seen), ["remote boom"]);
    assert_eq!(lp.counters().remote_callbacks_run, 2);
    runs_again(&mut lp);
}

#[test]
fn loop_runs_again_after_a_panic_unwinds_out_of_run_with_no_error_hook() {
    let mut lp = sim();
    lp.add_callback(|_| panic!("nobody catches this"))
        .map_err(|r| r.error)
        .unwrap();
    let escaped = catch_unwind(AssertUnwindSafe(|| lp.run())).unwrap_err();
    assert_eq!(
        escaped.downcast_ref::<&str>(),
        Some(&"nobody catches this"),
        "the original payload"
    );
    assert_eq!(lp.counters().panics, 1);
    runs_again(&mut lp);
}

#[test]
fn loop_runs_again_after_a_panic_in_the_error_hook() {
    let mut lp = sim();
    let hook_calls = Rc::new(Cell::new(0));
    let h = hook_calls.clone();
    lp.set_error_hook(move |_| {
        h.set(h.get() + 1);
        panic!("hook boom")
    });
    lp.add_callback(|_| panic!("callback boom"))
        .map_err(|r| r.error)
        .unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| lp.run())).is_err());
    assert_eq!(
        hook_calls.get(),
        1,
        "the hook's panic is not reported to itself"
    );
    runs_again(&mut lp);
}

#[test]
fn panicking_timer_frees_its_heap_slot() {
    const T: usize = 8;
    let (mut lp, seen) = recording_sim();
    for _ in 0..T {
        lp.call_later(ms(1), |_| panic!("timer boom"))
            .map_err(|r| r.error)
            .unwrap();
    }
    lp.call_later(ms(1), |_| ())
        .map_err(|r| r.error)
        .unwrap_err(); // full
    for _ in 0..2 {
        lp.run_once(Some(ms(1))).unwrap();
    }
    assert_eq!(seen.borrow().len(), T);
    assert_eq!(lp.timer_count(), 0);
    for _ in 0..T {
        lp.call_later(ms(1), |_| ())
            .map_err(|r| r.error)
            .expect("every slot is free again");
    }
}

#[test]
fn panicking_periodic_callback_stays_scheduled_on_its_grid() {
    let (mut lp, seen) = recording_sim();
    let h = lp
        .add_periodic(Periodic::every(ms(10)), |_| panic!("tick boom"))
        .map_err(|r| r.error)
        .unwrap();
    run_for(&mut lp, ms(35));
    // Tornado's PeriodicCallback schedules the next call also after an exception.
    assert_eq!(panic_messages(&seen).len(), 3, "at 10, 20 and 30 ms");
    assert!(lp.timer_pending(h));
    assert!(lp.remove_timeout(h));
}

#[test]
fn panicking_handler_leaves_a_consistent_table() {
    let (mut lp, seen) = recording_sim();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let id = lp
        .add_handler(3, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.poller_mut().clear_ready(fd);
            panic!("handler boom")
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(ms(0))).unwrap();
    // Tornado keeps a handler whose call raised: it stays, with its closure, and the next event
    // reaches it.
    assert_eq!(lp.handler_id(3), Some(id));
    assert_eq!(
        lp.poller().interest(3),
        Some(Interest::READ | Interest::ERROR)
    );
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(ms(0))).unwrap();
    assert_eq!(calls.get(), 2, "events still dispatched");
    assert!(matches!(
        seen.borrow()[1],
        Failure::Panicked { source: Source::Handler { id: i, fd: 3 }, .. } if i == id
    ));
    // Re-adding is refused while it is registered, and accepted once it is removed.
    assert!(matches!(
        lp.add_handler(3, Interest::READ, |_, _, _| Ok(())),
        Err(Refused {
            error: Error::AlreadyRegistered { fd: 3 },
            ..
        })
    ));
    assert!(lp.remove_handler(3));
    assert!(lp.poller().interest(3).is_none());
    let again = lp
        .add_handler(3, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
    assert_ne!(again, id);
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.run_once(Some(ms(0))).unwrap();
    assert_eq!(lp.counters().panics, 2);
}

#[test]
fn every_capture_dropped_exactly_once_after_panics() {
    let drops = Rc::new(Cell::new(0));
    let made = Rc::new(Cell::new(0));
    let capture = || {
        made.set(made.get() + 1);
        counted(&drops)
    };
    {
        let (mut lp, seen) = recording_sim();
        let c = capture();
        lp.add_callback(move |_| {
            let _c = c;
            panic!("callback")
        })
        .map_err(|r| r.error)
        .unwrap();
        let c = capture();
        lp.call_later(ms(1), move |_| {
            let _c = c;
            panic!("timer")
        })
        .map_err(|r| r.error)
        .unwrap();
        let c = capture();
        let p = lp
            .add_periodic(Periodic::every(ms(1)), move |_| {
                let _ = &c;
                panic!("periodic")
            })
            .map_err(|r| r.error)
            .unwrap();
        // fd 3 clears its readiness, fd 4 removes itself; then each panics.
        for (fd, removes_itself) in [(3, false), (4, true)] {
            let c = capture();
            lp.add_handler(fd, Interest::READ, move |lp, fd, _| {
                let _ = &c;
                if removes_itself {
                    lp.remove_handler(fd);
                    panic!("self-removing handler")
                }
                lp.poller_mut().clear_ready(fd);
                panic!("handler")
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp.poller_mut().set_ready(4, Readiness::READ);
        for _ in 0..4 {
            lp.run_once(Some(ms(1))).unwrap();
        }
        assert_eq!(drops.get(), 3, "callback, timer and self-removed handler");
        assert!(lp.remove_timeout(p));
        assert_eq!(drops.get(), 4);
        assert!(seen.borrow().len() >= 5);
        // The fd handler and everything else still held go with the loop.
    }
    assert_eq!(drops.get(), made.get(), "each capture dropped once");
}

#[test]
fn panic_in_drop_of_a_capture_still_restores_signals_and_closes_remote() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    const SIGNO: i32 = 51;
    let drops = Rc::new(Cell::new(0));
    let mut lp = sim();
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let seen = record_failures(&mut lp);
    let c = counted(&drops);
    lp.add_signal_handler(SIGNO, FAKE_SIGNALS, move |_, _| {
        let _ = &c;
    })
    .map_err(|r| r.error)
    .unwrap();
    let (c, p) = (counted(&drops), panic_on_drop());
    lp.add_handler(3, Interest::READ, move |_, _, _| {
        let _ = (&c, &p);
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    let (c, p) = (counted(&drops), panic_on_drop());
    lp.call_later(ms(1), move |_| drop((c, p)))
        .map_err(|r| r.error)
        .unwrap();
    let c = counted(&drops);
    lp.add_callback(move |_| drop(c))
        .map_err(|r| r.error)
        .unwrap();
    let c = counted(&drops);
    lp.add_handler(4, Interest::WRITE, move |_, _, _| {
        let _ = &c;
        Ok(())
    })
    .map_err(|r| r.error)
    .unwrap();
    handle.add_callback(|_| ()).map_err(|r| r.error).unwrap();

    drop(lp); // does not unwind: both panics are caught and reported

    assert_ne!(
        RESTORED.load(Ordering::SeqCst) & (1 << SIGNO),
        0,
        "signal disposition restored"
    );
    let refused = handle.add_callback(|_| ());
    assert!(
        matches!(
            refused,
            Err(Refused {
                error: Error::Closed,
                ..
            })
        ),
        "remote closed"
    );
    assert_eq!(drops.get(), 5, "every other capture released");
    assert_eq!(
        panic_messages(&seen),
        ["capture's drop failed", "capture's drop failed"]
    );
}

#[test]
fn panic_is_reported_to_error_hook_with_source_name_and_message() {
    fn make_timer() -> impl FnOnce(&mut Lp) {
        |_| panic!("deadline {} missed by {}", "t0", "long message ".repeat(10))
    }
    let (mut lp, seen) = recording_sim();
    let h = lp
        .call_later(ms(1), make_timer())
        .map_err(|r| r.error)
        .unwrap();
    for _ in 0..2 {
        lp.run_once(Some(ms(1))).unwrap();
    }
    let seen = seen.borrow();
    let Failure::Panicked {
        source,
        name,
        message,
    } = seen[0]
    else {
        panic!("not a panic: {:?}", seen[0]);
    };
    assert_eq!(source, Source::Timer { handle: h });
    assert!(
        name.contains("make_timer"),
        "closure named for where it was written: {name}"
    );
    assert!(message
        .as_str()
        .starts_with("deadline t0 missed by long message"));
    assert!(message.is_truncated());
    assert_eq!(message.as_str().len(), loop_core::PANIC_MESSAGE_BYTES);
    assert_eq!(
        seen[0],
        Failure::Panicked {
            source,
            name,
            message: PanicMessage::new(&format!(
                "deadline t0 missed by {}",
                "long message ".repeat(10)
            )),
        }
    );
    assert_eq!(lp.counters().panics, 1);
}
