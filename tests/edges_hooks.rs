//! The executor and signal steps, reached through hooks that `attach_executor` and
//! `add_signal_handler` set: attach, detach by closing the loop, re-attach to a new loop (with
//! the old loop dropped only afterwards), two loops with and without an executor, and a loop
//! whose signal handlers were all removed and then added again. Simulated poller; each test
//! uses its own signal number (the signal registry is process-wide).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use loop_core::signal::{deliver, SignalInstaller};
use loop_core::sim::SimPoller;
use loop_core::{sleep, yield_now, Error, EventLoop, Executor, Remote};

type Lp = EventLoop<SimPoller<4>, 4, 8, 8>;

const NO_OS: SignalInstaller = SignalInstaller {
    install: |_| Ok(()),
    restore: |_| {},
};

fn sim() -> Lp {
    EventLoop::with_poller(SimPoller::new())
}

/// A future counting its completion into `done` after a 1 s sleep.
async fn sleeper(done: Rc<Cell<u32>>) {
    sleep(Duration::from_secs(1)).await.unwrap();
    done.set(done.get() + 1);
}

/// An executor attached to a loop that is closed, then attached to a new loop that spawns a
/// task; dropping the old (closed) loop afterwards must not touch the new attachment's tasks.
#[test]
fn executor_reattached_to_a_new_loop_survives_the_old_loop_being_dropped() {
    static R1: Remote<Lp, 4> = Remote::new();
    static R2: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let done = Rc::new(Cell::new(0));
    let mut old = sim();
    old.attach_remote(&R1).unwrap();
    old.attach_executor(&EXEC).unwrap();
    old.spawn(sleeper(done.clone()))
        .map_err(|r| r.error)
        .unwrap();
    old.close(); // drops the task, detaches the executor
    assert!(EXEC.is_empty());
    let mut new = sim();
    new.attach_remote(&R2).unwrap();
    new.attach_executor(&EXEC).unwrap();
    new.spawn(sleeper(done.clone()))
        .map_err(|r| r.error)
        .unwrap();
    new.run_once(Some(Duration::ZERO)).unwrap(); // the task starts its sleep
    drop(old); // the closed loop's Drop: its teardown must leave the new attachment alone
    assert!(!EXEC.is_empty(), "the new loop's task is still there");
    new.call_later(Duration::from_secs(2), |lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    new.run().unwrap();
    assert_eq!(done.get(), 1, "only the new loop's task completed");
    assert!(EXEC.is_empty());
}

/// An executor detached by close, then re-attached: `run_sync` works on the new loop, and
/// the closed one refuses it.
#[test]
fn run_sync_after_reattaching_the_executor_to_a_new_loop() {
    static R1: Remote<Lp, 4> = Remote::new();
    static R2: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut a = sim();
    a.attach_remote(&R1).unwrap();
    a.attach_executor(&EXEC).unwrap();
    assert_eq!(a.run_sync(async { 1 }, None), Ok(1));
    a.close();
    assert_eq!(a.run_sync(async { 2 }, None), Err(Error::Closed));
    let mut b = sim();
    b.attach_remote(&R2).unwrap();
    b.attach_executor(&EXEC).unwrap();
    assert_eq!(
        b.run_sync(
            async {
                yield_now().await;
                3
            },
            None
        ),
        Ok(3)
    );
    drop(a);
    assert_eq!(b.run_sync(async { 4 }, None), Ok(4));
}

/// Two loops on one thread, one with an executor and one without: the one without runs its
/// callbacks and timers (no task step), the other its tasks; neither sees the other's work.
#[test]
fn two_loops_one_with_an_executor_one_without_each_run_their_own_work() {
    static R: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut with = sim();
    with.attach_remote(&R).unwrap();
    with.attach_executor(&EXEC).unwrap();
    let mut without = sim();
    assert_eq!(
        without.spawn(async {}).map(|_| ()).map_err(|r| r.error),
        Err(Error::NotAttached)
    );
    let (ticks, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let t = ticks.clone();
    without
        .call_later(Duration::from_secs(1), move |lp| {
            t.set(t.get() + 1);
            lp.stop();
        })
        .map_err(|r| r.error)
        .unwrap();
    with.spawn(sleeper(done.clone()))
        .map_err(|r| r.error)
        .unwrap();
    without.run().unwrap();
    assert_eq!((ticks.get(), done.get()), (1, 0));
    with.call_later(Duration::from_secs(2), |lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    with.run().unwrap();
    assert_eq!((ticks.get(), done.get()), (1, 1));
}

/// Every signal handler removed, then one added again: the signal step runs it (the hook is
/// still in place, the count right), and a removed one is not called.
#[test]
fn signal_handlers_all_removed_then_added_again_are_called() {
    const SIG_A: i32 = 40;
    const SIG_B: i32 = 41;
    static R: Remote<Lp, 4> = Remote::new();
    let mut lp = sim();
    lp.attach_remote(&R).unwrap();
    let calls = Rc::new(Cell::new(0));
    for signo in [SIG_A, SIG_B] {
        let c = calls.clone();
        lp.add_signal_handler(signo, NO_OS, move |_, _| c.set(c.get() + 100))
            .map_err(|r| r.error)
            .unwrap();
    }
    assert!(lp.remove_signal_handler(SIG_A));
    assert!(lp.remove_signal_handler(SIG_B));
    deliver(SIG_A);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), 0, "no handler left");
    let c = calls.clone();
    lp.add_signal_handler(SIG_B, NO_OS, move |_, s| c.set(c.get() + s as u32))
        .map_err(|r| r.error)
        .unwrap();
    deliver(SIG_A); // nobody wants it any more
    deliver(SIG_B);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(calls.get(), SIG_B as u32);
    lp.close();
    deliver(SIG_B);
    assert_eq!(lp.run_once(Some(Duration::ZERO)), Err(Error::Closed));
    assert_eq!(calls.get(), SIG_B as u32);
}

/// A signal handler on a closed loop's successor: a new loop adds the same signal after the
/// old one closed (its registry entry released), and only the new loop's handler runs, also
/// after the old loop is dropped.
#[test]
fn signal_handler_on_a_new_loop_after_the_old_one_closed() {
    const SIG: i32 = 42;
    static R1: Remote<Lp, 4> = Remote::new();
    static R2: Remote<Lp, 4> = Remote::new();
    let (old_calls, new_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let mut old = sim();
    old.attach_remote(&R1).unwrap();
    let o = old_calls.clone();
    old.add_signal_handler(SIG, NO_OS, move |_, _| o.set(o.get() + 1))
        .map_err(|r| r.error)
        .unwrap();
    old.close();
    let mut new = sim();
    new.attach_remote(&R2).unwrap();
    let n = new_calls.clone();
    new.add_signal_handler(SIG, NO_OS, move |_, _| n.set(n.get() + 1))
        .map_err(|r| r.error)
        .unwrap();
    drop(old); // must not release the new loop's registry entry or disposition
    deliver(SIG);
    new.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!((old_calls.get(), new_calls.get()), (0, 1));
}
