//! The watchdog (Tornado's blocking threshold) and the loop's counters, on the simulated
//! clock: a "slow" callback advances the clock inside its call, so durations are exact.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{Blocked, Counters, EventLoop, HandlerError, Interest, Readiness, Source};

type Sim = EventLoop<SimPoller, 8, 16, 8>;

fn sim() -> Sim {
    EventLoop::with_poller(SimPoller::new())
}

fn slow_callback(lp: &mut Sim) {
    lp.poller().advance(Duration::from_millis(250));
}

fn quick_callback(lp: &mut Sim) {
    lp.poller().advance(Duration::from_millis(5));
}

fn watch(lp: &mut Sim) -> Rc<RefCell<Vec<Blocked>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_watchdog(Duration::from_millis(100), move |b| s.borrow_mut().push(b));
    seen
}

#[test]
fn watchdog_names_the_slow_callback_and_its_duration() {
    let mut lp = sim();
    let seen = watch(&mut lp);
    lp.add_callback(quick_callback).unwrap();
    lp.add_callback(slow_callback).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "only the slow one: {seen:?}");
    assert_eq!(seen[0].source, Source::Callback);
    assert_eq!(seen[0].duration, Duration::from_millis(250));
    assert!(seen[0].name.ends_with("slow_callback"), "{}", seen[0].name);
}

#[test]
fn watchdog_names_a_slow_timer_by_handle_and_a_slow_handler_by_fd() {
    let mut lp = sim();
    let seen = watch(&mut lp);
    let h = lp.call_later(Duration::ZERO, slow_callback).unwrap();
    let id = lp
        .add_handler(7, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            lp.poller().advance(Duration::from_millis(120));
            Ok(())
        })
        .unwrap();
    lp.poller_mut().set_ready(7, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].source, Source::Timer { handle: h });
    assert!(seen[0].name.ends_with("slow_callback"));
    assert_eq!(seen[1].source, Source::Handler { id, fd: 7 });
    assert_eq!(seen[1].duration, Duration::from_millis(120));
    assert!(
        seen[1].name.contains("watchdog_names_a_slow_timer"),
        "{}",
        seen[1].name
    );
}

#[test]
fn cleared_watchdog_reports_nothing() {
    let mut lp = sim();
    let seen = watch(&mut lp);
    lp.clear_watchdog();
    lp.add_callback(slow_callback).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(seen.borrow().is_empty());
    assert_eq!(
        lp.counters().max_run_time,
        Duration::ZERO,
        "not measured without a watchdog"
    );
}

#[test]
fn counters_count_iterations_events_callbacks_timers_and_errors() {
    let mut lp = sim();
    let _seen = watch(&mut lp);
    lp.add_handler(3, Interest::READ, |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        Err(HandlerError::Other("always fails"))
    })
    .unwrap();
    lp.add_handler(4, Interest::READ, |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        Err(HandlerError::Os(loop_core::Errno::EPIPE))
    })
    .unwrap();
    lp.poller_mut().set_ready(3, Readiness::READ);
    lp.poller_mut().set_ready(4, Readiness::READ);
    for _ in 0..3 {
        lp.add_callback(quick_callback).unwrap();
    }
    lp.call_later(Duration::ZERO, slow_callback).unwrap();
    lp.call_later(Duration::from_secs(1), |_| {}).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        lp.counters(),
        Counters {
            iterations: 2,
            events_dispatched: 2,
            callbacks_run: 3,
            timers_fired: 1,
            handler_errors: 1,
            remote_callbacks_run: 0,
            remote_high_water: 0,
            max_run_time: Duration::from_millis(250),
            panics: 0,
        },
        "EPIPE is not an error; the 1 s timer has not fired"
    );
}
