//! Join handles: output, abort, detach, loop drop, panics, stale handles (under Miri too).

#[allow(clippy::wildcard_imports)]
use super::*;

fn join_loop(remote: &'static Remote<Lp, 4>, exec: &'static Executor<2, 256>) -> Lp {
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    lp.attach_remote(remote).unwrap();
    lp.attach_executor(exec).unwrap();
    lp
}

#[test]
fn a_join_handle_yields_the_output_kept_in_the_slot_and_frees_it() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let rc = Rc::new(7u32);
    let held = rc.clone();
    let h = lp
        .spawn_join(async move {
            sleep(ms(3)).await.unwrap();
            held
        })
        .map_err(|r| r.error)
        .unwrap();
    let id = h.id();
    let out = lp.run_sync(h, None).unwrap().unwrap();
    assert_eq!(*out, 7);
    assert!(!EXEC.is_alive(id));
    drop(out);
    assert_eq!(Rc::strong_count(&rc), 1);
    // Both slots are free again.
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn aborting_before_the_first_poll_and_while_pending_drops_the_future_once() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let h = lp
        .spawn_join(async move {
            let _held = held;
            1u8
        })
        .map_err(|r| r.error)
        .unwrap();
    h.abort();
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Aborted));
    let held = DropCount(drops.clone());
    let h = lp
        .spawn_join(async move {
            let _held = held;
            let _ = sleep(Duration::from_secs(60)).await;
            2u8
        })
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.timer_count(), 1);
    h.abort();
    h.abort();
    assert_eq!(drops.get(), 2);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.timer_count(), 0);
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Aborted));
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn dropping_the_handle_detaches_the_task_and_its_output_is_dropped_once() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let drops = Rc::new(Cell::new(0));
    let ran = Rc::new(Cell::new(false));
    let (d, r) = (drops.clone(), ran.clone());
    let h = lp
        .spawn_join(async move {
            sleep(ms(2)).await.unwrap();
            r.set(true);
            DropCount(d)
        })
        .map_err(|r| r.error)
        .unwrap();
    drop(h);
    lp.run_sync(sleep(ms(5)), None).unwrap().unwrap();
    assert!(ran.get());
    assert_eq!(drops.get(), 1);
    // A handle dropped after the task finished frees the slot and drops the output.
    let d = drops.clone();
    let h = lp
        .spawn_join(async move { DropCount(d) })
        .map_err(|r| r.error)
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(drops.get(), 1);
    drop(h);
    assert_eq!(drops.get(), 2);
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn dropping_the_loop_while_a_handle_waits_gives_closed() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let waiting = lp
        .spawn_join(async {
            let _ = sleep(Duration::from_secs(60)).await;
            1u32
        })
        .map_err(|r| r.error)
        .unwrap();
    let finished = lp.spawn_join(async { 2u32 }).map_err(|r| r.error).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    let mut waiting = core::pin::pin!(waiting);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    drop(lp);
    assert_eq!(
        waiting.as_mut().poll(&mut cx),
        Poll::Ready(Err(JoinError::Closed))
    );
    let mut finished = core::pin::pin!(finished);
    assert_eq!(
        finished.as_mut().poll(&mut cx),
        Poll::Ready(Err(JoinError::Closed))
    );
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn a_panicking_joined_task_gives_panicked() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let (drops, held) = drop_counter();
    let h = lp
        .spawn_join(async move {
            let _held = held;
            yield_now().await;
            if core::hint::black_box(true) {
                panic!("task");
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
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Panicked));
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn a_stale_handle_never_reads_the_output_of_the_task_that_reused_its_slot() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let first = lp.spawn_join(async { 1u64 }).map_err(|r| r.error).unwrap();
    let forged = JoinHandle::<u64> {
        q: first.q,
        epoch: first.epoch,
        id: first.id,
        take: first.take,
        done: false,
        _not_send: PhantomData,
    };
    assert_eq!(lp.run_sync(first, None).unwrap(), Ok(1));
    // The slot is reused by another joined task.
    let second = lp.spawn_join(async { 2u64 }).map_err(|r| r.error).unwrap();
    assert_eq!(second.id().index, forged.id().index);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.run_sync(forged, None).unwrap(), Err(JoinError::Closed));
    assert_eq!(lp.run_sync(second, None).unwrap(), Ok(2));
}

#[test]
fn a_task_aborting_itself_is_dropped_after_its_poll() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let slot: Rc<RefCell<Option<JoinHandle<u8>>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let drops = Rc::new(Cell::new(0));
    let held = DropCount(drops.clone());
    let h = lp
        .spawn_join(async move {
            let _held = held;
            if let Some(h) = s.borrow().as_ref() {
                h.abort();
            }
            yield_now().await;
            5u8
        })
        .map_err(|r| r.error)
        .unwrap();
    *slot.borrow_mut() = Some(h);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(drops.get(), 1);
    let h = slot.borrow_mut().take().unwrap();
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Aborted));
}

#[test]
fn a_task_that_owns_its_own_handle_and_panics_frees_its_slot() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    let cell: Rc<RefCell<Option<JoinHandle<u8>>>> = Rc::new(RefCell::new(None));
    let c = cell.clone();
    let h = lp
        .spawn_join(async move {
            let _me = c.borrow_mut().take();
            yield_now().await;
            if core::hint::black_box(true) {
                panic!("task");
            }
            0u8
        })
        .map_err(|r| r.error)
        .unwrap();
    *cell.borrow_mut() = Some(h);
    for _ in 0..3 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.run_once(Some(Duration::ZERO));
        }));
    }
    assert!(cell.borrow().is_none());
    assert!(EXEC.is_empty());
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}

#[test]
fn a_joined_task_whose_future_drop_panics_on_completion_drops_it_once() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    let mut lp = join_loop(&REMOTE, &EXEC);
    struct PanicOnDrop(Rc<Cell<u32>>);
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
            panic!("drop");
        }
    }
    let drops = Rc::new(Cell::new(0));
    let held = PanicOnDrop(drops.clone());
    // A future that is ready at once and whose drop (after `Ready`) panics.
    struct ReadyThenPanic(#[allow(dead_code)] PanicOnDrop);
    impl Future for ReadyThenPanic {
        type Output = u8;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
            Poll::Ready(7)
        }
    }
    let h = lp
        .spawn_join(ReadyThenPanic(held))
        .map_err(|r| r.error)
        .unwrap();
    for _ in 0..3 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lp.run_once(Some(Duration::ZERO));
        }));
    }
    assert_eq!(drops.get(), 1);
    assert_eq!(lp.run_sync(h, None).unwrap(), Err(JoinError::Panicked));
    assert!(EXEC
        .tasks
        .iter()
        .all(|t| t.state.load(Ordering::Relaxed) == EMPTY));
}
