//! Executors and I/O registrations across loops and threads, on real epoll loops: a
//! registration moved to another thread's loop fails clearly and its slot is freed in its own
//! loop; executors (static or loop-owned) are re-attached by loops created again, on any
//! thread; any number of loops per thread.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use loop_core::{sleep, Error, EventLoop, Executor, Interest, IoRegistration, Remote};

type Lp = EventLoop<ioloop::DefaultPoller, 8, 16, 8>;

#[test]
fn a_registration_moved_to_another_threads_loop_fails_with_wrong_loop_and_frees_its_slot() {
    static RA: Remote<Lp, 16> = Remote::new();
    static RB: Remote<Lp, 16> = Remote::new();
    static EA: Executor<2, 512> = Executor::new();
    static EB: Executor<2, 512> = Executor::new();
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut lp: Lp = EventLoop::new().unwrap();
    lp.attach_remote(&RA).unwrap();
    lp.attach_executor(&EA).unwrap();
    let reg = lp
        .run_sync(async { IoRegistration::new(&a) }, None)
        .unwrap()
        .unwrap();
    assert_eq!(lp.handler_count(), 1);
    // Used and dropped by a loop on another thread.
    let r = std::thread::spawn(move || {
        let mut other: Lp = EventLoop::new().unwrap();
        other.attach_remote(&RB).unwrap();
        other.attach_executor(&EB).unwrap();
        let r = other
            .run_sync(
                async move {
                    let r = reg.ready(Interest::READ).await;
                    drop(reg);
                    r
                },
                None,
            )
            .unwrap();
        assert_eq!(
            other.handler_count(),
            0,
            "nothing registered in the wrong loop"
        );
        r
    })
    .join()
    .unwrap();
    assert_eq!(r, Err(Error::WrongLoop));
    // The removal was queued for the owning loop: its next iteration frees the slot.
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.handler_count(), 0);
}

#[test]
fn loops_are_created_run_and_dropped_again_on_many_threads_reusing_one_executor() {
    static EXEC: Executor<4, 512> = Executor::new();
    static REMOTES: [Remote<Lp, 16>; 6] = [const { Remote::new() }; 6];
    for remote in &REMOTES {
        std::thread::spawn(move || {
            let mut lp: Lp = EventLoop::new().unwrap();
            lp.attach_remote(remote).unwrap();
            lp.attach_executor(&EXEC).unwrap();
            EXEC.spawn(async {
                let _ = sleep(Duration::from_secs(60)).await;
            })
            .map_err(|r| r.error)
            .unwrap();
            let v = lp
                .run_sync(
                    async {
                        sleep(Duration::from_millis(1)).await.unwrap();
                        5
                    },
                    None,
                )
                .unwrap();
            assert_eq!(v, 5);
        })
        .join()
        .unwrap();
        // The loop is gone: its task was dropped and the executor detached.
        assert!(EXEC.is_empty());
        assert!(!EXEC.is_attached());
        let refused = EXEC.spawn(async {}).err().unwrap();
        assert_eq!(refused.error, Error::NotAttached);
    }
}

#[test]
fn loop_owned_executors_need_no_static_and_many_loops_share_a_thread() {
    static REMOTES: [Remote<Lp, 16>; 3] = [const { Remote::new() }; 3];
    let mut loops: Vec<Lp> = REMOTES
        .iter()
        .map(|r| {
            let mut lp: Lp = EventLoop::new().unwrap();
            lp.attach_remote(r).unwrap();
            lp.attach_owned_executor::<2, 512>().unwrap();
            lp
        })
        .collect();
    for (i, lp) in loops.iter_mut().enumerate() {
        lp.spawn(async {
            let _ = sleep(Duration::from_secs(60)).await;
        })
        .map_err(|r| r.error)
        .unwrap();
        let v = lp.run_sync(async move { i }, None).unwrap();
        assert_eq!(v, i);
    }
}

// Issue 10, defect 9: with `alloc`/`std` a loop owns its remote and executor, no static at
// all; loops alive at once each get their own, a closed loop's go back to the pool, and a
// handle kept from a closed loop never reaches the next one.
#[test]
fn loop_owned_remotes_and_executors_need_no_static_on_many_threads() {
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let mut stale = None;
                for round in 0..4 {
                    let mut lp: Lp = EventLoop::new().unwrap();
                    let handle = lp.attach_owned_remote::<16>().unwrap();
                    lp.attach_owned_executor::<2, 512>().unwrap();
                    if let Some(old) = stale.take() {
                        let old: ioloop::LoopHandle<Lp, 16> = old;
                        let refused = old.add_callback(|lp: &mut Lp| lp.stop()).unwrap_err();
                        assert_eq!(refused.error, ioloop::Error::Closed);
                    }
                    let from = std::thread::spawn(move || {
                        handle
                            .add_callback(|lp: &mut Lp| lp.stop())
                            .map_err(|r| r.error)
                            .unwrap()
                    });
                    lp.run().unwrap();
                    from.join().unwrap();
                    let v = lp.run_sync(async move { t * 10 + round }, None).unwrap();
                    assert_eq!(v, t * 10 + round);
                    stale = Some(handle);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn two_loops_on_one_thread_each_keep_spawning_on_their_own_executor() {
    static REMOTES: [Remote<Lp, 16>; 2] = [Remote::new(), Remote::new()];
    static EXECS: [Executor<2, 512>; 2] = [Executor::new(), Executor::new()];
    let [(ra, ea), (rb, eb)] = [0, 1].map(|i| (&REMOTES[i], &EXECS[i]));
    let mut a: Lp = EventLoop::new().unwrap();
    a.attach_remote(ra).unwrap();
    a.attach_executor(ea).unwrap();
    let mut b: Lp = EventLoop::new().unwrap();
    b.attach_remote(rb).unwrap();
    b.attach_executor(eb).unwrap();
    // Attaching the second executor does not take the first one's thread away.
    ea.spawn(async {}).map_err(|r| r.error).unwrap();
    eb.spawn(async {}).map_err(|r| r.error).unwrap();
    assert_eq!((ea.len(), eb.len()), (1, 1));
    a.run_once(Some(Duration::ZERO)).unwrap();
    b.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!((ea.len(), eb.len()), (0, 0));
    drop(b);
    // The first loop's executor still works after the second loop is gone.
    ea.spawn(async {}).map_err(|r| r.error).unwrap();
    assert_eq!(
        eb.spawn(async {}).err().map(|r| r.error),
        Some(Error::NotAttached)
    );
}

#[test]
fn a_task_spawned_by_a_drop_while_the_loop_closes_is_refused_and_dropped_once() {
    use std::cell::Cell;
    use std::rc::Rc;
    static REMOTE: Remote<Lp, 16> = Remote::new();
    static EXEC: Executor<4, 512> = Executor::new();
    struct SpawnOnDrop(Rc<Cell<u32>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let dropped = self.0.clone();
            struct Count(Rc<Cell<u32>>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.set(self.0.get() + 1);
                }
            }
            let c = Count(dropped);
            let r = EXEC.spawn(async move {
                let _c = c;
                let _ = sleep(Duration::from_secs(1)).await;
            });
            // Refused while the loop drops its tasks: handed back and dropped here.
            assert_eq!(r.err().map(|r| r.error), Some(Error::Closed));
        }
    }
    let dropped = Rc::new(Cell::new(0));
    let mut lp: Lp = EventLoop::new().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let guard = SpawnOnDrop(dropped.clone());
    EXEC.spawn(async move {
        let _g = guard;
        let _ = sleep(Duration::from_secs(60)).await;
    })
    .map_err(|r| r.error)
    .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    drop(lp);
    assert_eq!(dropped.get(), 1);
    assert!(EXEC.is_empty());
    assert!(!EXEC.is_attached());
}
