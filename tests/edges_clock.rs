//! Edges of the cached clock `call_later` and `reset_timer_later` count from (libev's `ev_now`):
//! a timer never fires before `d` has passed since a time the caller was shown (`now()`, or any
//! reading outside a run), across `run_once` passes separated by idle gaps, `run_once(ZERO)`
//! loops, re-entrant scheduling, periodic callbacks, `run_sync` timeouts and `sleep` in tasks,
//! two loops on one thread, and a loop closed and built again. All on the simulated poller and
//! clock: no timing thresholds.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{sleep, Error, EventLoop, Executor, Instant, Periodic, Remote};

type Lp = EventLoop<SimPoller<4>, 4, 16, 8>;
type Times = Rc<RefCell<Vec<u64>>>;

fn sim() -> Lp {
    EventLoop::with_poller(SimPoller::new())
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(secs: u64) -> Instant {
    Instant::from_nanos(secs * 1_000_000_000)
}

/// A timer recording the second it ran at.
fn record(times: &Times) -> impl FnOnce(&mut Lp) + 'static {
    let times = times.clone();
    move |lp: &mut Lp| times.borrow_mut().push(lp.now().as_nanos() / 1_000_000_000)
}

/// Drive the loop one `run_once(Some(ZERO))` pass at a time until `until` (simulated time
/// advancing 1 s between passes, as an idle caller would), at most `passes` passes.
fn step_until(lp: &mut Lp, until: Instant, passes: usize) {
    for _ in 0..passes {
        lp.run_once(Some(Duration::ZERO)).unwrap();
        if lp.now() >= until {
            return;
        }
        lp.poller().advance(s(1));
    }
}

/// `run_once` with a blocking wait leaves a reading behind; after an idle gap, a callback in the
/// next `run_once` (a pass with work, whose first step reads no clock when no timer waits)
/// must not count from that old reading: the caller saw the time after the gap.
#[test]
fn call_later_in_a_run_once_after_an_idle_gap_never_counts_from_the_previous_pass() {
    let mut lp = sim();
    let times = Times::default();
    lp.run_once(Some(s(1))).unwrap(); // a blocking wait: the pass read 1 s
    lp.poller().advance(s(10));
    assert_eq!(lp.now(), at(11)); // the caller sees 11 s
    let t = times.clone();
    lp.add_callback(move |lp| {
        lp.call_later(s(2), record(&t)).unwrap();
    })
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    step_until(&mut lp, at(20), 20);
    assert_eq!(*times.borrow(), [13], "11 s + 2 s, never 1 s + 2 s");
}

/// The same for `reset_timer_later` from a callback of a later `run_once`.
#[test]
fn reset_timer_later_in_a_run_once_after_an_idle_gap_never_counts_from_the_previous_pass() {
    let mut lp = sim();
    let times = Times::default();
    let h = lp.call_later(s(100), record(&times)).unwrap();
    lp.run_once(Some(s(1))).unwrap(); // reads 1 s after its wait
    lp.poller().advance(s(10));
    assert_eq!(lp.now(), at(11));
    lp.add_callback(move |lp| assert!(lp.reset_timer_later(h, s(2))))
        .unwrap();
    step_until(&mut lp, at(20), 20);
    assert_eq!(*times.borrow(), [13]);
}

/// A run that ended, an idle gap, then `run`: the new run's first callback counts from a
/// reading of its own.
#[test]
fn call_later_after_run_returned_and_the_loop_sat_idle_counts_from_a_fresh_reading() {
    let mut lp = sim();
    let times = Times::default();
    lp.call_later(s(1), |lp| lp.stop()).unwrap();
    lp.run().unwrap();
    lp.poller().advance(s(30)); // idle: 31 s
    let t = times.clone();
    lp.add_callback(move |lp| {
        lp.call_later(s(2), record(&t)).unwrap();
        lp.call_later(s(5), |lp| lp.stop()).unwrap();
    })
    .unwrap();
    lp.run().unwrap();
    assert_eq!(*times.borrow(), [33]);
}

/// `call_at(now() + d)` then `call_later(d)` in a handler of a `run_once(ZERO)` busy loop: the
/// `call_later` never runs first, whatever passes took no reading.
#[test]
fn call_later_after_call_at_now_plus_d_in_a_run_once_zero_loop_runs_second() {
    let mut lp = sim();
    let log = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..3 {
        lp.add_callback(|lp| lp.poller().advance(s(1))).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    let l = log.clone();
    lp.add_callback(move |lp| {
        lp.poller().advance(s(2)); // unread
        let (a, b) = (l.clone(), l.clone());
        let deadline = lp.now() + s(3);
        lp.call_at(deadline, move |_| a.borrow_mut().push("call_at"))
            .unwrap();
        lp.call_later(s(3), move |_| b.borrow_mut().push("call_later"))
            .unwrap();
    })
    .unwrap();
    step_until(&mut lp, at(20), 30);
    assert_eq!(*log.borrow(), ["call_at", "call_later"]);
}

/// A timer callback scheduling `call_later(ZERO)` (re-entrantly, again and again): each runs in
/// a later pass, one per `run_once`, and none before the time it was scheduled at.
#[test]
fn timer_scheduling_call_later_zero_runs_once_per_pass_never_early() {
    fn again(n: u32, count: Rc<Cell<u32>>, times: Times) -> impl FnOnce(&mut Lp) {
        move |lp: &mut Lp| {
            count.set(count.get() + 1);
            times.borrow_mut().push(lp.now().as_nanos() / 1_000_000_000);
            lp.poller().advance(s(1));
            if n < 5 {
                lp.call_later(Duration::ZERO, again(n + 1, count, times))
                    .unwrap();
            }
        }
    }
    let mut lp = sim();
    let (count, times) = (Rc::new(Cell::new(0)), Times::default());
    lp.call_later(Duration::ZERO, again(1, count.clone(), times.clone()))
        .unwrap();
    for pass in 1..=5 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(count.get(), pass, "one generation per pass");
    }
    assert_eq!(*times.borrow(), [0, 1, 2, 3, 4]);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(count.get(), 5);
}

/// A periodic callback added from a callback after unread time passed: its first call is a full
/// period after a time the caller could see, and ticks follow the grid.
#[test]
fn periodic_added_after_unread_time_never_fires_before_its_period() {
    let mut lp = sim();
    let times = Times::default();
    lp.run_once(Some(s(1))).unwrap();
    lp.poller().advance(s(10)); // 11 s
    let t = times.clone();
    lp.add_callback(move |lp| {
        lp.poller().advance(s(1)); // 12 s, unread
        let t = t.clone();
        lp.add_periodic(Periodic::every(s(3)), move |lp| {
            t.borrow_mut().push(lp.now().as_nanos() / 1_000_000_000);
            if t.borrow().len() == 3 {
                lp.stop();
            }
        })
        .unwrap();
    })
    .unwrap();
    lp.run().unwrap();
    let first = times.borrow()[0];
    assert!(first >= 15, "first tick at {first} s, before 12 s + 3 s");
    assert_eq!(*times.borrow(), [15, 18, 21]);
}

/// `run_sync` with a timeout after an idle gap: the deadline counts from a fresh reading.
#[test]
fn run_sync_timeout_after_an_idle_gap_counts_from_a_fresh_reading() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = sim();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    lp.run_once(Some(s(1))).unwrap();
    lp.poller().advance(s(10));
    let r = lp.run_sync(core::future::pending::<()>(), Some(s(2)));
    assert_eq!(r, Err(Error::TimedOut));
    assert_eq!(lp.now(), at(13));
    // And a sleep in the future: after another gap, it counts from the task's own reading.
    lp.poller().advance(s(7)); // 20 s
    let woke = lp
        .run_sync(
            async {
                loop_core::with_current_loop(|lp: &mut Lp| lp.poller().advance(s(1))).unwrap();
                sleep(s(2)).await.unwrap();
                loop_core::with_current_loop(|lp: &mut Lp| lp.now()).unwrap()
            },
            None,
        )
        .unwrap();
    assert_eq!(woke, at(23));
}

/// Two loops on one thread, one run inside a callback of the other: each counts from its own
/// readings; the inner loop's run neither takes nor leaves the outer loop's cached time.
#[test]
fn two_loops_on_one_thread_keep_their_own_cached_time() {
    let mut outer = sim();
    let inner = Rc::new(RefCell::new(sim()));
    let times = Times::default();
    outer.run_once(Some(s(1))).unwrap(); // outer at 1 s
    inner.borrow().poller().advance(s(50)); // inner's clock: 50 s
    let (i, t) = (inner.clone(), times.clone());
    outer
        .add_callback(move |outer| {
            let mut inner = i.borrow_mut();
            let t2 = t.clone();
            inner
                .add_callback(move |inner: &mut Lp| {
                    inner.call_later(s(2), record(&t2)).unwrap();
                })
                .unwrap();
            inner.call_at(at(60), |lp: &mut Lp| lp.stop()).unwrap();
            inner.run().unwrap();
            // The outer loop's time is its own: 1 s + 2 s.
            let _ = outer.now();
            outer.call_later(s(2), record(&t)).unwrap();
            outer.call_later(s(3), |lp| lp.stop()).unwrap();
        })
        .unwrap();
    outer.run().unwrap();
    assert_eq!(*times.borrow(), [52, 3]);
}

/// A loop closed and another built in its place: the new loop starts with no cached time.
#[test]
fn a_loop_closed_and_built_again_counts_from_a_fresh_reading() {
    let mut lp = sim();
    lp.run_once(Some(s(5))).unwrap();
    lp.close();
    assert_eq!(
        lp.call_later(s(1), |_| {}).map(|_| ()).map_err(|r| r.error),
        Err(Error::Closed)
    );
    let poller = SimPoller::new();
    poller.advance(s(100));
    let mut lp: Lp = EventLoop::with_poller(poller);
    let times = Times::default();
    let t = times.clone();
    lp.add_callback(move |lp| {
        lp.call_later(s(1), record(&t)).unwrap();
    })
    .unwrap();
    step_until(&mut lp, at(110), 20);
    assert_eq!(*times.borrow(), [101]);
}
