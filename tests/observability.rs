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
            polls: 2,
            idle_time: Duration::ZERO,
            events_last_poll: 0,
            events_max_poll: 2,
            handlers_high_water: 2,
            timers_high_water: 2,
            callbacks_high_water: 3,
            tasks_high_water: 0,
        },
        "EPIPE is not an error; the 1 s timer has not fired"
    );
}

#[test]
fn idle_time_is_the_time_spent_in_the_pollers_wait_and_gives_utilisation() {
    let mut lp = sim();
    // 30 ms of work, then 70 ms asleep until the timer: 30 % utilisation.
    lp.add_callback(|lp: &mut Sim| lp.poller().advance(Duration::from_millis(30)))
        .unwrap();
    lp.call_later(Duration::from_millis(100), |lp: &mut Sim| lp.stop())
        .unwrap();
    let t0 = lp.now();
    let before = lp.counters();
    lp.run().unwrap();
    let c = lp.counters();
    let wall = lp.now() - t0;
    let idle = c.idle_time - before.idle_time;
    assert_eq!(idle, Duration::from_millis(70));
    assert_eq!(wall, Duration::from_millis(100));
    let busy_percent = 100 - idle.as_millis() * 100 / wall.as_millis();
    assert_eq!(busy_percent, 30);
    assert_eq!(c.polls, 1, "the stop came before a second poll: {c:?}");
}

#[test]
fn events_per_poll_keep_the_last_and_the_largest_count() {
    let mut lp = sim();
    for fd in 10..13 {
        lp.add_handler(fd, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .unwrap();
        lp.poller_mut().set_ready(fd, Readiness::READ);
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().events_last_poll, 3);
    lp.poller_mut().set_ready(11, Readiness::READ);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let c = lp.counters();
    assert_eq!((c.events_last_poll, c.events_max_poll), (1, 3));
}

#[test]
fn high_water_marks_keep_the_most_handlers_timers_and_callbacks_held_at_once() {
    let mut lp = sim();
    for fd in 20..25 {
        lp.add_handler(fd, Interest::READ, |_, _, _| Ok(()))
            .unwrap();
    }
    let timers: Vec<_> = (0..7)
        .map(|i| lp.call_later(Duration::from_secs(i + 1), |_| {}).unwrap())
        .collect();
    for _ in 0..6 {
        lp.add_callback(quick_callback).unwrap();
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    for fd in 20..25 {
        assert!(lp.remove_handler(fd));
    }
    for t in timers {
        lp.remove_timeout(t);
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let c = lp.counters();
    assert_eq!(lp.handler_count(), 0);
    assert_eq!(
        (
            c.handlers_high_water,
            c.timers_high_water,
            c.callbacks_high_water
        ),
        (5, 7, 6),
        "the marks stay after the tables emptied"
    );
}

#[test]
fn tasks_high_water_keeps_the_most_tasks_alive_at_once() {
    static REMOTE: loop_core::Remote<Sim, 16> = loop_core::Remote::new();
    static EXEC: loop_core::Executor<4, 256> = loop_core::Executor::new();
    let mut lp = sim();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    for _ in 0..3 {
        lp.spawn(async { loop_core::yield_now().await })
            .map_err(|r| r.error)
            .unwrap();
    }
    for _ in 0..4 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(EXEC.len(), 0, "the tasks finished");
    assert_eq!(lp.counters().tasks_high_water, 3);
}

#[test]
fn high_water_mark_sees_callbacks_queued_during_an_iteration() {
    let mut lp = sim();
    lp.add_callback(|lp: &mut Sim| {
        for _ in 0..4 {
            lp.add_callback(|_: &mut Sim| {}).unwrap();
        }
    })
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().callbacks_high_water, 4);
}

/// The `log` records an operator sees (`cargo test --test observability --features log`),
/// captured by a test logger that keeps each thread's records apart (tests run in parallel).
#[cfg(feature = "log")]
mod log_records {
    use super::*;
    use std::sync::Once;

    struct Capture;

    thread_local! {
        static RECORDS: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            RECORDS.with(|r| {
                r.borrow_mut()
                    .push((record.level(), record.args().to_string()))
            });
        }
        fn flush(&self) {}
    }

    fn capture() {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            log::set_logger(&Capture).unwrap();
            log::set_max_level(log::LevelFilter::Trace);
        });
        RECORDS.with(|r| r.borrow_mut().clear());
    }

    fn records() -> Vec<(log::Level, String)> {
        RECORDS.with(|r| r.borrow().clone())
    }

    fn has(level: log::Level, needle: &str) -> bool {
        records()
            .iter()
            .any(|(l, m)| *l == level && m.contains(needle))
    }

    #[test]
    fn loop_start_and_stop_are_logged_at_info() {
        capture();
        let mut lp = sim();
        lp.add_callback(|lp: &mut Sim| lp.stop()).unwrap();
        lp.run().unwrap();
        assert!(has(log::Level::Info, "loop running"), "{:?}", records());
        assert!(has(log::Level::Info, "loop stopped"), "{:?}", records());
    }

    #[test]
    fn a_failed_handler_without_an_error_hook_is_logged_at_warn() {
        capture();
        let mut lp = sim();
        lp.add_handler(3, Interest::READ, |lp, fd, _| {
            lp.poller_mut().clear_ready(fd);
            Err(HandlerError::Other("bad frame"))
        })
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert!(has(log::Level::Warn, "fd 3 failed"), "{:?}", records());
    }

    #[test]
    fn a_panic_without_an_error_hook_is_logged_before_it_unwinds() {
        capture();
        let mut lp = sim();
        lp.add_callback(|_: &mut Sim| panic!("boom")).unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.run_once(Some(Duration::ZERO))
        }));
        assert!(unwound.is_err());
        assert!(has(log::Level::Warn, "panicked"), "{:?}", records());
    }

    #[test]
    fn capacity_refusals_are_logged_at_warn() {
        capture();
        let mut lp: EventLoop<SimPoller, 1, 1, 1> = EventLoop::with_poller(SimPoller::new());
        lp.add_callback(|_| {}).unwrap();
        assert!(lp.add_callback(|_| {}).is_err());
        lp.call_later(Duration::from_secs(1), |_| {}).unwrap();
        assert!(lp.call_later(Duration::from_secs(1), |_| {}).is_err());
        lp.add_handler(3, Interest::READ, |_, _, _| Ok(())).unwrap();
        assert!(lp.add_handler(4, Interest::READ, |_, _, _| Ok(())).is_err());
        for what in ["Callbacks", "Timers", "Handlers"] {
            assert!(
                has(log::Level::Warn, &format!("refused: {what} at capacity")),
                "{what}: {:?}",
                records()
            );
        }
    }

    #[test]
    fn a_forked_loop_refusing_to_run_is_logged_at_warn() {
        capture();
        let mut lp = sim();
        lp.poller_mut().set_forked(true);
        assert_eq!(lp.run(), Err(loop_core::Error::Forked));
        assert!(has(log::Level::Warn, "after fork"), "{:?}", records());
    }

    #[test]
    fn a_call_over_the_watchdog_threshold_is_logged_at_warn_naming_it() {
        capture();
        let mut lp = sim();
        let _seen = watch(&mut lp);
        lp.add_callback(slow_callback).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert!(
            has(
                log::Level::Warn,
                "slow_callback blocked the loop for 250000 us"
            ),
            "{:?}",
            records()
        );
    }
}
