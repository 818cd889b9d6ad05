//! Tornado's coroutine behaviours as async/await on the loop, on the simulated clock where
//! time matters (exact and instant) and on epoll for cross-thread wakes and fd readiness.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{
    join, join_array, readable, select, sleep, timeout, writable, yield_now, Either, Error,
    EventLoop, Executor, Remote, Resource,
};

type Sim = EventLoop<SimPoller, 8, 16, 8>;

/// A simulated loop with its own remote and executor (statics attach once, so each test
/// names its own).
macro_rules! sim_loop {
    ($tasks:literal) => {{
        static REMOTE: Remote<Sim, 16> = Remote::new();
        static EXEC: Executor<$tasks, 512> = Executor::new();
        let mut lp: Sim = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        (lp, &EXEC)
    }};
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn run_sync_returns_the_futures_output() {
    let (mut lp, _) = sim_loop!(4);
    let v = lp
        .run_sync(
            async {
                sleep(secs(3)).await.unwrap();
                "done"
            },
            None,
        )
        .unwrap();
    assert_eq!(v, "done");
    assert_eq!(lp.now().as_nanos(), 3_000_000_000);
}

#[test]
fn run_sync_times_out_and_drops_the_future() {
    let (mut lp, _) = sim_loop!(4);
    let r = lp.run_sync(sleep(secs(10)), Some(secs(2)));
    assert_eq!(r, Err(Error::TimedOut));
    assert_eq!(lp.now().as_nanos(), 2_000_000_000);
    assert_eq!(
        lp.timer_count(),
        0,
        "the sleep's timer was cancelled when the future was dropped"
    );
}

#[test]
fn run_sync_reports_a_stop_before_the_future_finished() {
    // Tornado 6 test_stop_no_timeout: RuntimeError("Event loop stopped before Future completed.")
    let (mut lp, _) = sim_loop!(4);
    lp.call_later(secs(1), |lp| lp.stop()).unwrap();
    assert_eq!(lp.run_sync(sleep(secs(5)), None), Err(Error::Stopped));
    // And the loop works afterwards.
    assert_eq!(lp.run_sync(async { 7 }, None), Ok(7));
}

#[test]
fn yield_now_costs_exactly_one_iteration_so_two_tasks_alternate() {
    // Tornado test_moment.
    let (mut lp, exec) = sim_loop!(4);
    let log = Rc::new(RefCell::new(String::new()));
    for name in ['a', 'b'] {
        let log = log.clone();
        exec.spawn(async move {
            for _ in 0..3 {
                log.borrow_mut().push(name);
                yield_now().await;
            }
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    let before = lp.counters().iterations;
    lp.run_sync(
        async {
            while !exec.is_empty() {
                yield_now().await;
            }
        },
        None,
    )
    .unwrap();
    assert_eq!(*log.borrow(), "ababab");
    assert!(lp.counters().iterations - before >= 3);
}

#[test]
fn join_keeps_input_order_and_waits_for_all_even_after_a_failure() {
    // Tornado multi: results in input order; one failure does not cut the others short.
    let (mut lp, _) = sim_loop!(4);
    let finished = Rc::new(Cell::new(0));
    let f = |delay: u64, ok: bool| {
        let finished = finished.clone();
        async move {
            sleep(secs(delay)).await.unwrap();
            finished.set(finished.get() + 1);
            if ok {
                Ok(delay)
            } else {
                Err(delay)
            }
        }
    };
    let out = lp.run_sync(join(f(3, false), f(1, true)), None).unwrap();
    assert_eq!(out, (Err(3), Ok(1)));
    assert_eq!(finished.get(), 2);
    assert_eq!(
        lp.now().as_nanos(),
        3_000_000_000,
        "total = the longest, not the sum"
    );

    let start = lp.now();
    let out = lp
        .run_sync(join_array([f(4, true), f(2, true), f(3, true)]), None)
        .unwrap();
    assert_eq!(out, [Ok(4), Ok(2), Ok(3)]);
    assert_eq!((lp.now() - start).as_secs(), 4);
}

#[test]
fn dropping_a_sleep_frees_its_timer_at_once() {
    let (mut lp, _) = sim_loop!(4);
    lp.run_sync(
        async {
            let mut s = sleep(secs(3600));
            // Poll it once so it registers its timer, then drop it.
            let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll(cx))).await;
            assert!(polled.is_pending());
            drop(s);
        },
        None,
    )
    .unwrap();
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn timeout_returns_elapsed_and_select_returns_the_first() {
    let (mut lp, _) = sim_loop!(4);
    let r = lp.run_sync(timeout(secs(2), sleep(secs(5))), None).unwrap();
    assert_eq!(r, Err(Error::TimedOut));
    assert_eq!(lp.timer_count(), 0, "the losing sleep was cancelled");
    let r = lp
        .run_sync(
            timeout(secs(5), async {
                sleep(secs(1)).await.unwrap();
                9
            }),
            None,
        )
        .unwrap();
    assert_eq!(r, Ok(9));
    let r = lp
        .run_sync(
            select(sleep(secs(3)), async {
                sleep(secs(1)).await.unwrap();
                'b'
            }),
            None,
        )
        .unwrap();
    assert_eq!(r, Either::Second('b'));
}

#[test]
fn spawn_on_a_full_executor_hands_the_future_back() {
    let (mut lp, exec) = sim_loop!(2);
    exec.spawn(async { sleep(secs(1)).await.unwrap() })
        .map_err(|r| r.error)
        .unwrap();
    exec.spawn(async { sleep(secs(1)).await.unwrap() })
        .map_err(|r| r.error)
        .unwrap();
    let refused = exec
        .spawn(async { sleep(secs(7)).await.unwrap() })
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Tasks
        }
    );
    // The future comes back intact and can be awaited elsewhere.
    let back = refused.into_inner();
    lp.run_sync(back, None).unwrap();
    assert_eq!(lp.now().as_nanos(), 7_000_000_000);
    assert_eq!(exec.len(), 0, "the two tasks finished meanwhile");
    exec.spawn(async {}).map_err(|r| r.error).unwrap();
}

#[test]
fn spawn_from_another_thread_is_refused() {
    let (_lp, exec) = sim_loop!(2);
    let r = std::thread::spawn(move || exec.spawn(async {}).map_err(|r| r.error).err())
        .join()
        .unwrap();
    assert_eq!(r, Some(Error::NotAttached));
}

#[test]
fn tasks_are_dropped_with_the_loop_releasing_their_captures() {
    let rc = Rc::new(());
    {
        let (_lp, exec) = sim_loop!(2);
        let held = rc.clone();
        exec.spawn(async move {
            sleep(secs(100)).await.unwrap();
            drop(held);
        })
        .map_err(|r| r.error)
        .unwrap();
        assert_eq!(Rc::strong_count(&rc), 2);
    }
    assert_eq!(Rc::strong_count(&rc), 1);
}

type Epl = EventLoop<ioloop::DefaultPoller, 8, 16, 8>;

/// A future completed from another thread through its waker.
struct Flag {
    done: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Future for Flag {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.done.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_wake_from_another_thread_reaches_a_loop_asleep_in_epoll() {
    static REMOTE: Remote<Epl, 16> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp: Epl = EventLoop::new().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let waker = Arc::new(Mutex::new(None::<Waker>));
    let (d, w) = (done.clone(), waker.clone());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        d.store(true, Ordering::Release);
        if let Some(w) = w.lock().unwrap().take() {
            w.wake();
        }
    });
    // No timer, no fd: only the cross-thread wake can end this (or the 30 s bound).
    let r = lp.run_sync(Flag { done, waker }, Some(Duration::from_secs(30)));
    t.join().unwrap();
    assert_eq!(r, Ok(()));
}

#[test]
fn readable_and_writable_on_a_socketpair() {
    static REMOTE: Remote<Epl, 16> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp: Epl = EventLoop::new().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    // Writable right away.
    lp.run_sync(writable(fd), Some(secs(5))).unwrap().unwrap();
    assert_eq!(lp.handler_count(), 0, "the one-shot watch removed itself");
    // Readable only after the peer writes (from a timer 20 ms later).
    let mut b2 = b.try_clone().unwrap();
    lp.call_later(Duration::from_millis(20), move |_| {
        b2.write_all(b"x").unwrap()
    })
    .unwrap();
    let start = lp.now();
    lp.run_sync(readable(fd), Some(secs(5))).unwrap().unwrap();
    assert!(lp.now() - start >= Duration::from_millis(20));
    // A wait that times out leaves no handler behind.
    let mut buf = [0u8; 8];
    let _ = std::io::Read::read(&mut &a, &mut buf);
    assert_eq!(
        lp.run_sync(readable(fd), Some(Duration::from_millis(10))),
        Err(Error::TimedOut)
    );
    assert_eq!(lp.handler_count(), 0);
    // A bad fd is an error, not a hang.
    assert!(matches!(
        lp.run_sync(readable(-5), None),
        Ok(Err(Error::InvalidFd { fd: -5 }))
    ));
    b.flush().unwrap();
}

#[test]
fn add_future_calls_back_one_iteration_after_completion() {
    // Tornado add_future: the callback always comes one iteration later, even for a future
    // that is ready at once.
    static REMOTE: Remote<Sim, 16> = Remote::new();
    static EXEC: Executor<4, 512> = Executor::new();
    let mut lp: Sim = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    lp.add_future(async { 21 }, move |lp: &mut Sim, v| {
        l.borrow_mut().push((v * 2, lp.counters().iterations))
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 1: the task runs and completes
    assert!(
        log.borrow().is_empty(),
        "not in the iteration the future completed in"
    );
    lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 2: the callback
    assert_eq!(*log.borrow(), [(42, 2)]);
}

#[test]
fn interval_ticks_on_the_grid_and_skips_missed_ticks() {
    let (mut lp, _) = sim_loop!(4);
    let ticks = lp
        .run_sync(
            async {
                let mut ticks = Vec::new();
                let mut iv = loop_core::interval(loop_core::Periodic::every(secs(10)));
                for i in 0..4 {
                    ticks.push(iv.tick().await.unwrap().as_nanos() / 1_000_000_000);
                    if i == 1 {
                        // Busy for 25 s: the ticks at 30 and 40 are missed.
                        sleep(secs(25)).await.unwrap();
                    }
                }
                ticks
            },
            None,
        )
        .unwrap();
    assert_eq!(ticks, [10, 20, 50, 60]);
}

#[test]
fn watchdog_names_a_task_that_blocks_inside_a_poll() {
    let (mut lp, exec) = sim_loop!(4);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_watchdog(Duration::from_millis(100), move |b| s.borrow_mut().push(b));
    async fn blocking_step() {
        // "Blocks" the loop for 300 ms of simulated time inside one poll.
        loop_core::with_current_loop(|lp: &mut Sim| {
            lp.poller().advance(Duration::from_millis(300))
        });
        yield_now().await;
    }
    let id = exec.spawn(blocking_step()).map_err(|r| r.error).unwrap();
    lp.run_sync(async { sleep(secs(1)).await }, None)
        .unwrap()
        .unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].source, loop_core::Source::Task { id });
    assert_eq!(seen[0].duration, Duration::from_millis(300));
    assert!(seen[0].name.contains("blocking_step"), "{}", seen[0].name);
}
