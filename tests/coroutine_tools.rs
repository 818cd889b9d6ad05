//! Tornado's remaining coroutine tools on the loop: `WaitIterator` ([`wait_each`]), an async
//! periodic callback ([`every`]), exact jitter ([`Periodic::with_jitter_seed`]), blocking work on
//! a user-owned thread (`ioloop::offload`, Tornado's `run_in_executor`), and `embassy-sync`'s
//! channel and signal between tasks. Simulated clock where time matters.

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use ioloop::offload::{worker, OffloadError};
use loop_core::sim::SimPoller;
use loop_core::{every, sleep, wait_each, EventLoop, Executor, Periodic, Remote};

type Sim = EventLoop<SimPoller, 8, 16, 8>;

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

/// A real loop (the platform's poller): cross-thread results need a poller that sleeps.
macro_rules! real_loop {
    () => {{
        static REMOTE: Remote<ioloop::EventLoop, 16> = Remote::new();
        static EXEC: Executor<2, 512> = Executor::new();
        let mut lp: ioloop::EventLoop = ioloop::EventLoop::new().unwrap();
        lp.attach_remote(&REMOTE).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        lp
    }};
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn after(d: u64, v: &'static str) -> &'static str {
    sleep(ms(d)).await.unwrap();
    v
}

// Tornado: test_gen.WaitIteratorTest.test_iterator — results come in completion order, each
// with the index it had in the input.
#[test]
fn wait_each_yields_in_completion_order_with_input_index() {
    let (mut lp, _) = sim_loop!(2);
    let got = lp
        .run_sync(
            async {
                let mut each = pin!(wait_each([after(30, "a"), after(10, "b"), after(20, "c")]));
                let mut got = Vec::new();
                while let Some((i, v)) = each.as_mut().next().await {
                    got.push((i, v, loop_core::with_current_loop(|lp: &mut Sim| lp.now())));
                }
                got
            },
            None,
        )
        .unwrap();
    let got: Vec<_> = got
        .into_iter()
        .map(|(i, v, t)| (i, v, t.unwrap().as_nanos() / 1_000_000))
        .collect();
    assert_eq!(got, vec![(1, "b", 10), (2, "c", 20), (0, "a", 30)]);
}

#[test]
fn wait_each_hands_out_simultaneous_results_in_input_order_one_per_call() {
    let (mut lp, _) = sim_loop!(2);
    let got = lp
        .run_sync(
            async {
                let mut each = pin!(wait_each([after(10, "x"), after(5, "y"), after(10, "z")]));
                let mut got = Vec::new();
                while let Some((i, _)) = each.as_mut().next().await {
                    got.push((i, each.remaining()));
                }
                got
            },
            None,
        )
        .unwrap();
    assert_eq!(got, vec![(1, 2), (0, 1), (2, 0)]);
}

#[test]
fn wait_each_drops_a_finished_future_at_once_and_the_rest_with_itself() {
    let (mut lp, _) = sim_loop!(2);
    lp.run_sync(
        async {
            let mut each = pin!(wait_each([after(10, "a"), after(1_000, "b")]));
            assert_eq!(each.as_mut().next().await, Some((0, "a")));
        },
        None,
    )
    .unwrap();
    // The unfinished sleep was dropped with the WaitEach: its timer is gone.
    assert_eq!(lp.timer_count(), 0);
}

// Tornado 5.1: a PeriodicCallback whose callback is a coroutine waits for it before scheduling
// the next call; ticks it covered are skipped.
#[test]
fn async_periodic_runs_never_overlap_and_skip_covered_ticks() {
    let (mut lp, _) = sim_loop!(2);
    let running = Rc::new(Cell::new(false));
    let starts = Rc::new(RefCell::new(Vec::new()));
    let (r, s) = (running.clone(), starts.clone());
    let out = lp
        .run_sync(
            every(Periodic::every(ms(10)), move |tick| {
                assert!(!r.get(), "a tick started while the previous one ran");
                r.set(true);
                s.borrow_mut().push(tick.as_nanos() / 1_000_000);
                let n = s.borrow().len();
                let r = r.clone();
                async move {
                    // Runs alternate between 25 ms (covers two ticks) and 3 ms (on time).
                    sleep(ms(if n % 2 == 1 { 25 } else { 3 })).await.unwrap();
                    r.set(false);
                    if n == 4 {
                        ControlFlow::Break(n)
                    } else {
                        ControlFlow::Continue(())
                    }
                }
            }),
            None,
        )
        .unwrap();
    assert_eq!(out, Ok(4));
    assert_eq!(*starts.borrow(), vec![10, 40, 50, 80]);
    assert!(!running.get());
}

#[test]
fn seeded_jitter_gives_exactly_the_documented_periods() {
    let (mut lp, _) = sim_loop!(2);
    let p = Periodic::every(ms(100))
        .with_jitter_ppm(200_000)
        .with_jitter_seed(0x1234_5678);
    let fired = Rc::new(RefCell::new(Vec::new()));
    let f = fired.clone();
    lp.add_periodic(p, move |lp| {
        f.borrow_mut().push(lp.now().as_nanos());
        if f.borrow().len() == 6 {
            lp.stop();
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run().unwrap();
    let mut expected = Vec::new();
    let mut t = 0u64;
    for period in p.periods().take(6) {
        t += period.as_nanos() as u64;
        expected.push(t);
    }
    assert_eq!(*fired.borrow(), expected);
    // The jitter is real: not every period is the nominal one, and each is within ±10 %.
    let periods: Vec<_> = p.periods().take(6).collect();
    assert!(periods.iter().any(|&d| d != ms(100)));
    assert!(periods.iter().all(|&d| d >= ms(90) && d < ms(110)));
}

#[test]
fn seeded_jitter_is_the_same_for_the_async_interval() {
    let (mut lp, _) = sim_loop!(2);
    let p = Periodic::every(ms(50))
        .with_jitter_ppm(500_000)
        .with_jitter_seed(99);
    let ticks = lp
        .run_sync(
            async move {
                let mut iv = loop_core::interval(p);
                let mut ticks = Vec::new();
                for _ in 0..4 {
                    ticks.push(iv.tick().await.unwrap().as_nanos());
                }
                ticks
            },
            None,
        )
        .unwrap();
    let mut t = 0u64;
    let expected: Vec<u64> = p
        .periods()
        .take(4)
        .map(|d| {
            t += d.as_nanos() as u64;
            t
        })
        .collect();
    assert_eq!(ticks, expected);
}

// The answer to http_demo's `/blocking`: the blocking call runs on the user's thread while the
// loop keeps running timers. The job blocks until a loop timer releases it, so a stalled loop
// would deadlock this test instead of passing it.
#[test]
fn offloaded_blocking_call_does_not_stall_timers() {
    let mut lp = real_loop!();
    let (jobs, thread) = worker(4);
    let runner = std::thread::spawn(move || thread.run());
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    lp.call_later(ms(5), move |_| {
        o.borrow_mut().push("timer");
        release.send(()).unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    let pending = jobs
        .submit(move || {
            wait.recv().unwrap(); // blocks this worker thread, not the loop
            42
        })
        .map_err(|r| r.error)
        .unwrap();
    let v = lp.run_sync(pending, Some(Duration::from_secs(30))).unwrap();
    order.borrow_mut().push("result");
    assert_eq!(v, Ok(42));
    assert_eq!(*order.borrow(), vec!["timer", "result"]);
    drop(jobs);
    runner.join().unwrap();
}

#[test]
fn offloaded_panic_is_reported_and_the_worker_goes_on() {
    let (jobs, thread) = worker(2);
    let runner = std::thread::spawn(move || thread.run());
    let mut lp = real_loop!();
    let p = jobs
        .submit(|| -> u32 { panic!("disk on fire") })
        .map_err(|r| r.error)
        .unwrap();
    let r = lp.run_sync(p, None).unwrap();
    assert_eq!(r, Err(OffloadError::Panicked("disk on fire".into())));
    let p = jobs.submit(|| 7u32).map_err(|r| r.error).unwrap();
    assert_eq!(lp.run_sync(p, None).unwrap(), Ok(7));
    drop(jobs);
    runner.join().unwrap();
}

#[test]
fn offload_queue_full_hands_the_closure_back_and_no_worker_means_worker_gone() {
    let (jobs, thread) = worker(1);
    let first = jobs.submit(|| 1).map_err(|r| r.error).unwrap();
    let refused = jobs.submit(|| 2).unwrap_err();
    assert!(matches!(refused.error, loop_core::Error::Full { .. }));
    assert_eq!((refused.value)(), 2);
    // The thread end goes away without running the queued job: the awaiting side learns it.
    drop(thread);
    let mut lp = real_loop!();
    assert_eq!(
        lp.run_sync(first, None).unwrap(),
        Err(OffloadError::WorkerGone)
    );
    let gone = jobs.submit(|| 3).unwrap_err();
    assert_eq!(gone.error, loop_core::Error::Closed);
}

// embassy-sync's primitives need nothing from the executor but wakers: they work between
// ioloop tasks with no allocation (NoopRawMutex: single-threaded, like the loop).
#[test]
fn embassy_sync_channel_and_signal_between_two_tasks() {
    let (mut lp, exec) = sim_loop!(4);
    let chan: &'static Channel<NoopRawMutex, u32, 2> = Box::leak(Box::new(Channel::new()));
    let done: &'static Signal<NoopRawMutex, u32> = Box::leak(Box::new(Signal::new()));
    let received = Rc::new(RefCell::new(Vec::new()));
    let r = received.clone();
    exec.spawn(async move {
        for i in 0..5u32 {
            chan.send(i).await; // waits when the 2-slot channel is full
            sleep(ms(1)).await.unwrap();
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    exec.spawn(async move {
        let mut sum = 0;
        for _ in 0..5 {
            let v = chan.receive().await;
            r.borrow_mut().push(v);
            sum += v;
        }
        done.signal(sum);
    })
    .map_err(|r| r.error)
    .unwrap();
    let sum = lp.run_sync(done.wait(), None).unwrap();
    assert_eq!(sum, 10);
    assert_eq!(*received.borrow(), vec![0, 1, 2, 3, 4]);
}
