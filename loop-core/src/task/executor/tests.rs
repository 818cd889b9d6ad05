//! Inside the crate so Miri checks the executor's `unsafe` (type-erased futures in fixed slots,
//! the waker vtable, drops, the current-loop frame), including a waker that outlives its task.

extern crate std;
use super::*;
use crate::sim::SimPoller;
use crate::{sleep, with_current_loop, yield_now, EventLoop, Remote};
use core::pin::Pin;
use core::task::{Poll, Waker};
use core::time::Duration;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::vec::Vec;

type Lp = EventLoop<SimPoller<4>, 4, 8, 4>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A drop counter and one capture counted by it.
fn drop_counter() -> (Rc<Cell<u32>>, DropCount) {
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    (drops, held)
}

/// Counts its drops: every capture must be dropped exactly once.
struct DropCount(Rc<Cell<u32>>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn tasks_run_finish_and_free_their_slots_and_captures() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let rc = Rc::new(());
    let held = rc.clone();
    let id = lp
        .spawn(async move {
            yield_now().await;
            sleep(ms(5)).await.unwrap();
            drop(held);
        })
        .map_err(|r| r.error)
        .unwrap();
    assert!(EXEC.is_alive(id));
    lp.run_sync(sleep(ms(10)), None).unwrap().unwrap();
    assert!(!EXEC.is_alive(id));
    assert_eq!(Rc::strong_count(&rc), 1);
    // A waker kept after its task finished only marks a free slot ready: harmless.
    let stale = EXEC.tasks[id.index as usize].header.waker();
    stale.wake_by_ref();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let held = rc.clone();
    lp.spawn(async move { drop(held) })
        .map_err(|r| r.error)
        .unwrap();
    stale.wake();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(Rc::strong_count(&rc), 1);
    assert!(EXEC.is_empty());
}

#[test]
fn closing_the_loop_drops_pending_tasks() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let rc = Rc::new(());
    let held = rc.clone();
    lp.spawn(async move {
        let _ = sleep(Duration::from_secs(60)).await;
        drop(held);
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.timer_count(), 1);
    lp.close();
    assert_eq!(Rc::strong_count(&rc), 1);
    assert!(EXEC.is_empty());
}

#[test]
fn nested_with_current_loop_gets_none_and_leaf_futures_dropped_inside_are_cleaned_up() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 512> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let out = lp
        .run_sync(
            async {
                // Arm a sleep, a one-shot watch and an I/O registration.
                let mut s = sleep(Duration::from_secs(60));
                let mut r = crate::readable(5);
                let reg = crate::IoRegistration::new(6).unwrap();
                core::future::poll_fn(|cx| {
                    assert!(Pin::new(&mut s).poll(cx).is_pending());
                    assert!(Pin::new(&mut r).poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                let before =
                    with_current_loop(|lp: &mut Lp| (lp.timer_count(), lp.handler_count()));
                // Inside the closure: nested calls see no loop, drops are deferred.
                let inside = with_current_loop(|lp: &mut Lp| {
                    let nested = with_current_loop(|lp2: &mut Lp| lp2.timer_count());
                    drop(s);
                    drop(r);
                    drop(reg);
                    (nested, lp.timer_count(), lp.handler_count())
                });
                let after = with_current_loop(|lp: &mut Lp| (lp.timer_count(), lp.handler_count()));
                (before, inside, after)
            },
            None,
        )
        .unwrap();
    let (before, inside, after) = out;
    assert_eq!(before, Some((1, 2)));
    // Nothing was cleaned up while the loop's `&mut` was out; nested got `None`.
    assert_eq!(inside, Some((None, 1, 2)));
    // Applied as soon as the closure returned.
    assert_eq!(after, Some((0, 0)));
    assert_eq!((lp.timer_count(), lp.handler_count()), (0, 0));
}

#[test]
fn run_sync_drops_its_future_in_place_when_its_poll_panics() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lp.run_sync(
            async move {
                let _held = held;
                let _ = sleep(ms(5)).await;
                panic!("boom");
            },
            None,
        )
    }));
    assert!(caught.is_err());
    assert_eq!(drops.get(), 1);
    // The sleep's timer went with the future and the loop can run again.
    assert_eq!(lp.timer_count(), 0);
    assert!(!lp.is_running());
    assert_eq!(lp.run_sync(async { 7 }, None).unwrap(), 7);
}

#[test]
fn run_sync_drops_its_future_when_a_callback_panics() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let _ = lp.call_later(ms(1), |_| panic!("callback"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lp.run_sync(
            async move {
                let _held = held;
                let _ = sleep(ms(5)).await;
            },
            None,
        )
    }));
    // Whether the loop reports the panic and goes on or lets it escape, the future is
    // dropped exactly once, and its own sleep is cancelled.
    let _ = caught;
    assert_eq!(drops.get(), 1);
    assert!(!lp.is_running());
}

#[test]
fn a_task_that_panics_is_dropped_once_and_its_slot_freed() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<1, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let id = lp
        .spawn(async move {
            let _held = held;
            let _ = sleep(ms(1)).await;
            panic!("task");
        })
        .map_err(|r| r.error)
        .unwrap();
    for _ in 0..4 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.run_once(Some(ms(1)));
        }));
    }
    assert_eq!(drops.get(), 1);
    assert!(!EXEC.is_alive(id));
    assert!(EXEC.is_empty());
    assert_eq!(lp.timer_count(), 0);
    // The one slot is free again.
    assert!(lp.spawn(async {}).is_ok());
}

#[test]
fn a_panicking_task_is_reported_to_the_error_hook_and_the_loop_goes_on() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    lp.set_error_hook(move |f| {
        if let crate::Failure::Panicked {
            source, message, ..
        } = f
        {
            s.borrow_mut()
                .push((source, std::string::String::from(message.as_str())));
        }
    });
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let id = lp
        .spawn(async move {
            let _held = held;
            yield_now().await;
            panic!("task failed");
        })
        .map_err(|r| r.error)
        .unwrap();
    let out = lp.run_sync(
        async {
            sleep(ms(3)).await.unwrap();
            5
        },
        None,
    );
    assert_eq!(out, Ok(5));
    assert_eq!(drops.get(), 1);
    assert!(EXEC.is_empty());
    assert_eq!(
        *seen.borrow(),
        [(
            crate::Source::Task { id },
            std::string::String::from("task failed")
        )]
    );
}

#[test]
fn spawn_after_the_loop_is_dropped_is_refused_and_hands_the_future_back() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    drop(lp);
    assert!(!EXEC.is_attached());
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let refused = EXEC
        .spawn(async move {
            let _held = held;
        })
        .err()
        .unwrap();
    assert_eq!(refused.error, Error::NotAttached);
    assert_eq!(drops.get(), 0);
    drop(refused);
    assert_eq!(drops.get(), 1);
}

#[test]
fn an_executor_reattaches_to_a_new_loop_after_close_and_drop() {
    static REMOTES: [Remote<Lp, 4>; 3] = [const { Remote::new() }; 3];
    static EXEC: Executor<2, 256> = Executor::new();
    for remote in &REMOTES {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(remote).unwrap();
        lp.attach_executor(&EXEC).unwrap();
        let n = lp
            .run_sync(
                async {
                    sleep(ms(1)).await.unwrap();
                    3
                },
                None,
            )
            .unwrap();
        assert_eq!(n, 3);
        lp.spawn(async {
            let _ = sleep(Duration::from_secs(9)).await;
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.close();
        assert!(!EXEC.is_attached());
        assert!(EXEC.is_empty());
        // Dropping the closed loop does not touch the executor again.
    }
}

#[test]
fn two_loops_on_one_thread_each_keep_their_executor() {
    static RA: Remote<Lp, 4> = Remote::new();
    static RB: Remote<Lp, 4> = Remote::new();
    static EA: Executor<2, 256> = Executor::new();
    static EB: Executor<2, 256> = Executor::new();
    let mut a: Lp = EventLoop::with_poller(SimPoller::new());
    let mut b: Lp = EventLoop::with_poller(SimPoller::new());
    a.attach_remote(&RA).unwrap();
    a.attach_executor(&EA).unwrap();
    b.attach_remote(&RB).unwrap();
    b.attach_executor(&EB).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (la, lb) = (log.clone(), log.clone());
    lp_spawn(&mut a, async move { la.borrow_mut().push('a') });
    lp_spawn(&mut b, async move { lb.borrow_mut().push('b') });
    a.run_once(Some(Duration::ZERO)).unwrap();
    a.run_once(Some(Duration::ZERO)).unwrap();
    b.run_once(Some(Duration::ZERO)).unwrap();
    b.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(*log.borrow(), ['a', 'b']);
    #[cfg(feature = "std")]
    {
        // Both executors accept spawns from their (common) thread.
        assert!(EA.spawn(async {}).is_ok());
        assert!(EB.spawn(async {}).is_ok());
    }
}

fn lp_spawn(lp: &mut Lp, f: impl Future<Output = ()> + 'static) {
    lp.spawn(f).map_err(|r| r.error).unwrap();
}

#[test]
fn a_task_spawned_from_a_callback_is_first_polled_in_the_next_iteration() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let polled_in = Rc::new(Cell::new(0u64));
    let p = polled_in.clone();
    lp.add_callback(move |lp: &mut Lp| {
        let p = p.clone();
        lp.spawn(async move {
            let it = with_current_loop(|lp: &mut Lp| lp.counters().iterations).unwrap();
            p.set(it);
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(polled_in.get(), 0, "polled in the callback's own iteration");
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(polled_in.get(), 2);
}

#[test]
fn a_task_woken_by_a_callback_runs_in_the_next_iteration() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let waker: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
    let resumed = Rc::new(Cell::new(0u64));
    let (w, r) = (waker.clone(), resumed.clone());
    lp.spawn(async move {
        let mut first = true;
        core::future::poll_fn(|cx| {
            if first {
                first = false;
                *w.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        r.set(with_current_loop(|lp: &mut Lp| lp.counters().iterations).unwrap());
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 1: first poll
    let w = waker.clone();
    lp.add_callback(move |_: &mut Lp| w.borrow_mut().take().unwrap().wake())
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap(); // iteration 2: the callback wakes it
    assert_eq!(resumed.get(), 0);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(resumed.get(), 3);
}

#[test]
fn run_sync_runs_the_callbacks_queued_before_it_first() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    lp.add_callback(move |_: &mut Lp| l.borrow_mut().push("init"))
        .map_err(|r| r.error)
        .unwrap();
    let l = log.clone();
    lp.run_sync(async move { l.borrow_mut().push("main") }, None)
        .unwrap();
    assert_eq!(*log.borrow(), ["init", "main"]);
}

#[test]
fn sleep_zero_and_sleep_until_the_past_yield_one_iteration() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let start = lp.counters().iterations;
    lp.run_sync(
        async {
            for _ in 0..5 {
                sleep(Duration::ZERO).await.unwrap();
            }
            let past = with_current_loop(|lp: &mut Lp| lp.now()).unwrap();
            for _ in 0..5 {
                crate::sleep_until(past).await.unwrap();
            }
        },
        None,
    )
    .unwrap();
    // Ten yields: at least ten more iterations (and no time passed).
    assert!(lp.counters().iterations - start >= 10);
    assert_eq!(lp.now().as_nanos(), 0);
}

#[test]
fn sleep_with_a_full_timer_heap_fails_with_full_instead_of_spinning() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    for _ in 0..8 {
        let _ = lp.call_later(Duration::from_secs(100), |_| {});
    }
    assert_eq!(lp.timer_count(), 8);
    let start = lp.counters().iterations;
    let out = lp.run_sync(sleep(ms(5)), None).unwrap();
    assert_eq!(
        out,
        Err(Error::Full {
            what: Resource::Timers
        })
    );
    // One iteration to run the future, no busy loop.
    assert!(lp.counters().iterations - start <= 2);
    let t = lp.run_sync(crate::timeout(ms(5), core::future::pending::<()>()), None);
    assert_eq!(
        t.unwrap(),
        Err(Error::Full {
            what: Resource::Timers
        })
    );
}

#[cfg(feature = "alloc")]
#[test]
fn an_owned_executor_is_reused_after_its_loop_is_dropped() {
    static REMOTES: [Remote<Lp, 4>; 3] = [const { Remote::new() }; 3];
    fn pooled() -> usize {
        crate::raw::pool::count::<Executor<3, 200>>()
    }
    let drops = Rc::new(Cell::new(0));
    for remote in &REMOTES {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_remote(remote).unwrap();
        lp.attach_owned_executor::<3, 200>().unwrap();
        let held = DropCount(drops.clone());
        lp.spawn(async move {
            let _held = held;
            let _ = sleep(Duration::from_secs(9)).await;
        })
        .map_err(|r| r.error)
        .unwrap();
        assert_eq!(lp.run_sync(async { 1 }, None).unwrap(), 1);
    }
    assert_eq!(drops.get(), 3);
    assert_eq!(pooled(), 1);
}

#[test]
fn a_registration_used_by_another_loop_fails_and_its_slot_is_freed_in_its_own() {
    static RA: Remote<Lp, 4> = Remote::new();
    static RB: Remote<Lp, 4> = Remote::new();
    static EA: Executor<2, 256> = Executor::new();
    static EB: Executor<2, 256> = Executor::new();
    let mut a: Lp = EventLoop::with_poller(SimPoller::new());
    let mut b: Lp = EventLoop::with_poller(SimPoller::new());
    a.attach_remote(&RA).unwrap();
    a.attach_executor(&EA).unwrap();
    b.attach_remote(&RB).unwrap();
    b.attach_executor(&EB).unwrap();
    let reg = a
        .run_sync(async { crate::IoRegistration::new(9) }, None)
        .unwrap()
        .unwrap();
    assert_eq!(a.handler_count(), 1);
    let (res, reg) = b
        .run_sync(
            async move {
                let r = reg.ready(crate::Interest::READ).await;
                (r, reg)
            },
            None,
        )
        .unwrap();
    assert_eq!(res, Err(Error::WrongLoop));
    assert_eq!(b.handler_count(), 0);
    // Dropped while `b` is current: queued for `a`, freed by `a`'s next iteration.
    b.run_sync(async move { drop(reg) }, None).unwrap();
    assert_eq!(a.handler_count(), 1);
    a.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(a.handler_count(), 0);
}

#[cfg(feature = "std")]
#[test]
fn is_alive_and_len_are_race_free_from_other_threads() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<4, 256> = Executor::new();
    use std::sync::atomic::AtomicBool;
    static STOP: AtomicBool = AtomicBool::new(false);
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let id = EXEC.spawn(async {}).map_err(|r| r.error).unwrap();
    let watcher = std::thread::spawn(move || {
        let mut seen = 0usize;
        while !STOP.load(Ordering::Acquire) {
            seen += usize::from(EXEC.is_alive(id)) + EXEC.len();
            // Another thread may not spawn here.
            assert!(EXEC.spawn(async {}).is_err());
        }
        seen
    });
    for _ in 0..200 {
        let _ = EXEC.spawn(async { yield_now().await });
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    STOP.store(true, Ordering::Release);
    let _ = watcher.join().unwrap();
    lp.close();
    assert!(EXEC.is_empty());
}

#[cfg(not(feature = "std"))]
#[test]
fn without_std_executor_spawn_is_accepted_only_inside_a_poll_of_its_loop() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    assert_eq!(
        EXEC.spawn(async {}).err().unwrap().error,
        Error::NotAttached
    );
    let inside = lp
        .run_sync(async { EXEC.spawn(async {}).is_ok() }, None)
        .unwrap();
    assert!(inside);
}

/// The join-handle tests.
mod join;
