//! Join handles (issue 15 item 1): `spawn_join` returns a handle whose `.await` yields the
//! task's output, kept in the task's own slot; `abort`, dropping the handle (detach), the
//! loop dropped while a handle waits, a panicking task, and a stale handle after slot reuse.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{sleep, yield_now, EventLoop, Executor, JoinError, Remote};

#[path = "common/drops.rs"]
mod drops;
use drops::counted;

type Lp = EventLoop<SimPoller<4>, 4, 8, 4>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn new_loop(remote: &'static Remote<Lp, 4>, exec: &'static Executor<4, 256>) -> Lp {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(remote).unwrap();
    lp.attach_executor(exec).unwrap();
    lp
}

#[test]
fn a_task_awaits_another_tasks_output_through_its_handle() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let out = lp
        .run_sync(
            async {
                let a = EXEC
                    .spawn_join(async {
                        sleep(ms(5)).await.unwrap();
                        [1u8, 2, 3]
                    })
                    .map_err(|r| r.error)
                    .unwrap();
                let b = EXEC
                    .spawn_join(async { String::from("b") })
                    .map_err(|r| r.error)
                    .unwrap();
                (a.await, b.await)
            },
            None,
        )
        .unwrap();
    assert_eq!(out, (Ok([1, 2, 3]), Ok(String::from("b"))));
    assert_eq!(lp.now().as_nanos(), 5_000_000);
    assert!(EXEC.is_empty());
}

#[test]
fn abort_before_the_first_poll_and_while_pending_yields_aborted() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let polled = Rc::new(Cell::new(false));
    let p = polled.clone();
    let h = lp
        .spawn_join(async move { p.set(true) })
        .map_err(|r| r.error)
        .unwrap();
    h.abort();
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Aborted));
    assert!(!polled.get());
    let drops = Rc::new(Cell::new(0));
    let held = counted(&drops);
    let h = lp
        .spawn_join(async move {
            let _held = held;
            let _ = sleep(Duration::from_secs(60)).await;
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert!(EXEC.is_alive(h.id()));
    h.abort();
    assert_eq!(drops.get(), 1);
    assert!(!EXEC.is_alive(h.id()));
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Aborted));
    assert_eq!(lp.timer_count(), 0);
}

#[test]
fn dropping_the_handle_lets_the_task_run_and_drops_its_output_once() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let h = lp
        .spawn_join(async move {
            sleep(ms(2)).await.unwrap();
            counted(&d)
        })
        .map_err(|r| r.error)
        .unwrap();
    let id = h.id();
    drop(h);
    assert!(EXEC.is_alive(id));
    lp.run_sync(sleep(ms(4)), None).unwrap().unwrap();
    assert_eq!(drops.get(), 1);
    assert!(EXEC.is_empty());
}

#[test]
fn dropping_the_loop_while_a_handle_waits_yields_closed() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let h = lp
        .spawn_join(async {
            let _ = sleep(Duration::from_secs(60)).await;
            1u8
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    drop(lp);
    // The handle is awaited on a new loop that re-attached the same executor.
    let mut lp = new_loop(&REMOTE, &EXEC);
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Closed));
}

#[test]
fn a_panicking_task_yields_panicked() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let h = lp
        .spawn_join(async {
            yield_now().await;
            if std::hint::black_box(true) {
                panic!("task fails");
            }
            0u8
        })
        .map_err(|r| r.error)
        .unwrap();
    for _ in 0..3 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.run_once(Some(Duration::ZERO));
        }));
    }
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Panicked));
    assert!(EXEC.is_empty());
}

#[test]
fn a_handle_keeps_its_slot_until_awaited_so_a_full_executor_refuses() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    let mut lp = new_loop(&REMOTE, &EXEC);
    let hs: Vec<_> = (0..4u32)
        .map(|i| {
            lp.spawn_join(async move { i })
                .map_err(|r| r.error)
                .unwrap()
        })
        .collect();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    // Finished, not alive, but their outputs hold the slots.
    assert!(EXEC.is_empty());
    assert!(lp.spawn(async {}).is_err());
    let outs: Vec<_> = hs
        .into_iter()
        .map(|h| lp.run_sync(h, None).unwrap().unwrap())
        .collect();
    assert_eq!(outs, [0, 1, 2, 3]);
    assert!(lp.spawn(async {}).is_ok());
}
