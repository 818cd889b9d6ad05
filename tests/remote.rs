//! Other threads hand work to the loop through a `LoopHandle`: bounded, lossless (a refused
//! callback comes back to its sender), coalesced wakes, clear errors after close.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{Error, EventLoop, LoopHandle, Poller, Remote};

/// Counts runs and drops of the closures that carry it.
struct Token {
    dropped: Arc<AtomicU64>,
}

impl Drop for Token {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A remote callback that adds one to `ran` when it runs and, run or not, one to `dropped`
/// when it is dropped.
fn counted_callback<L>(
    ran: &Arc<AtomicU64>,
    dropped: &Arc<AtomicU64>,
) -> impl FnOnce(&mut L) + Send + 'static {
    let token = Token {
        dropped: dropped.clone(),
    };
    let ran = ran.clone();
    move |_| {
        let _keep = &token;
        ran.fetch_add(1, Ordering::Relaxed);
    }
}

type Epl = EventLoop<ioloop::DefaultPoller, 4, 4, 4>;

#[test]
fn storm_of_four_threads_loses_nothing_and_runs_every_accepted_callback_once() {
    static REMOTE: Remote<Epl, 64> = Remote::new();
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250_000;
    let mut lp: Epl = EventLoop::new().unwrap();
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let returned = Arc::new(AtomicU64::new(0));
    // A hang becomes a failure instead of a stuck test run.
    lp.call_later(Duration::from_secs(120), |_| {
        panic!("storm did not finish in 120 s")
    })
    .unwrap();

    let coordinator = {
        let (ran, dropped, returned) = (ran.clone(), dropped.clone(), returned.clone());
        std::thread::spawn(move || {
            let senders: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (ran, dropped, returned) = (ran.clone(), dropped.clone(), returned.clone());
                    std::thread::spawn(move || {
                        for _ in 0..PER_THREAD {
                            let cb = counted_callback::<Epl>(&ran, &dropped);
                            if let Err(refused) = handle.add_callback(cb) {
                                assert_eq!(
                                    refused.error,
                                    Error::Full {
                                        what: loop_core::Resource::Callbacks
                                    }
                                );
                                // The sender has its callback back; it drops it here, unrun.
                                drop(refused.into_inner());
                                returned.fetch_add(1, Ordering::Relaxed);
                                std::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for s in senders {
                s.join().unwrap();
            }
            handle.stop().unwrap();
        })
    };
    lp.run().unwrap();
    coordinator.join().unwrap();
    // Anything published after the stop snapshot runs now.
    lp.run_once(Some(Duration::ZERO)).unwrap();

    let (ran, returned, dropped) = (
        ran.load(Ordering::Relaxed),
        returned.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    );
    let total = THREADS * PER_THREAD;
    assert_eq!(
        ran + returned,
        total,
        "every callback either ran or came back: ran {ran}, returned {returned}"
    );
    assert_eq!(dropped, total, "each closure was dropped exactly once");
    assert!(
        ran > 0 && returned > 0,
        "the small queue both accepted and refused: ran {ran}, returned {returned}"
    );
    assert_eq!(lp.counters().remote_callbacks_run, ran);
    assert!(lp.counters().remote_high_water <= 64);
    println!(
        "storm: {ran} ran, {returned} refused and returned, high water {}",
        lp.counters().remote_high_water
    );
}

#[test]
fn a_burst_of_adds_costs_one_wake() {
    static REMOTE: Remote<EventLoop<SimPoller, 4, 4, 4>, 1024> = Remote::new();
    let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    std::thread::spawn(move || {
        for _ in 0..1000 {
            handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(
        lp.poller().notifier().count(),
        1,
        "one notifier write for 1000 adds"
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().remote_callbacks_run, 1000);
    // The loop looked: the next add wakes again.
    handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    assert_eq!(lp.poller().notifier().count(), 2);
}

#[test]
fn remote_callbacks_run_fifo_after_local_ones_in_the_next_iteration() {
    static REMOTE: Remote<EventLoop<SimPoller, 4, 4, 4>, 8> = Remote::new();
    let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..3 {
        let l = log.clone();
        handle
            .add_callback(move |_| l.lock().unwrap().push(format!("remote {i}")))
            .map_err(|r| r.error)
            .unwrap();
    }
    let l = log.clone();
    lp.add_callback(move |_| l.lock().unwrap().push("local".into()))
        .unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["local", "remote 0", "remote 1", "remote 2"]
    );
}

#[test]
fn after_close_or_drop_handles_get_closed_errors_and_their_callbacks_back() {
    static REMOTE: Remote<EventLoop<SimPoller, 4, 4, 4>, 8> = Remote::new();
    static REMOTE2: Remote<EventLoop<SimPoller, 4, 4, 4>, 8> = Remote::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let token = Token {
        dropped: dropped.clone(),
    };
    handle
        .add_callback(move |_| drop(token))
        .map_err(|r| r.error)
        .unwrap();
    lp.close();
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        1,
        "a queued callback is dropped by close"
    );
    let refused = handle.add_callback(|_| {}).unwrap_err();
    assert_eq!(refused.error, Error::Closed);
    assert_eq!(handle.stop(), Err(Error::Closed));
    assert_eq!(handle.wake(), Err(Error::Closed));

    let mut lp2: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    let h2 = lp2.attach_remote(&REMOTE2).unwrap();
    let mut lp3: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    assert_eq!(
        lp3.attach_remote(&REMOTE2).unwrap_err(),
        Error::AlreadyAttached,
        "a remote serves one loop at a time"
    );
    assert_eq!(
        lp2.attach_remote(&REMOTE).unwrap_err(),
        Error::AlreadyAttached,
        "a loop has one remote"
    );
    drop(lp2);
    assert_eq!(h2.add_callback(|_| {}).unwrap_err().error, Error::Closed);
}

#[test]
fn stop_from_another_thread_wakes_a_loop_asleep_in_epoll() {
    static REMOTE: Remote<Epl, 8> = Remote::new();
    let mut lp: Epl = EventLoop::new().unwrap();
    let handle = lp.attach_remote(&REMOTE).unwrap();
    lp.call_later(Duration::from_secs(120), |_| panic!("not woken"))
        .unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle.stop().unwrap();
    });
    lp.run().unwrap();
    t.join().unwrap();
}

#[test]
fn remote_close_finishes_while_many_threads_hammer_the_handle() {
    static REMOTE: Remote<Epl, 64> = Remote::new();
    const THREADS: usize = 16;
    let mut lp: Epl = EventLoop::new().unwrap();
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let [made, dropped, ran, accepted] = std::array::from_fn(|_| Arc::new(AtomicU64::new(0)));
    let halt = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (made, dropped, ran, accepted, halt) = (
                made.clone(),
                dropped.clone(),
                ran.clone(),
                accepted.clone(),
                halt.clone(),
            );
            std::thread::spawn(move || {
                // Each thread calls in a tight loop until the loop is gone *and* it has seen
                // the refusal: the calls keep coming during the whole drop.
                let mut closed_seen = false;
                while !(closed_seen && halt.load(Ordering::Acquire)) {
                    made.fetch_add(1, Ordering::Relaxed);
                    let cb = counted_callback::<Epl>(&ran, &dropped);
                    // A refused closure comes back and is dropped here, unrun.
                    match handle.add_callback(cb).map_err(|r| r.error) {
                        Ok(()) => {
                            assert!(!closed_seen, "accepted after a Closed refusal");
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Closed) => closed_seen = true,
                        Err(Error::Full { .. }) => assert!(!closed_seen),
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    while made.load(Ordering::Relaxed) < 16 * THREADS as u64 {
        std::thread::yield_now();
    }
    for _ in 0..8 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    // The drop under test: it must return while 16 threads keep calling the handle.
    drop(lp);
    halt.store(true, Ordering::Release);
    for h in hammers {
        h.join().unwrap();
    }
    let (made, dropped, ran, accepted) = (
        made.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        ran.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed),
    );
    assert_eq!(dropped, made, "every closure was dropped exactly once");
    assert!(
        ran > 0 && ran <= accepted,
        "ran {ran} of {accepted} accepted"
    );
    assert_eq!(handle.wake(), Err(Error::Closed));
}

type Sim = EventLoop<SimPoller, 4, 4, 4>;

/// A simulated loop with `remote` attached, and the handle.
fn sim_attached(remote: &'static Remote<Sim, 8>) -> (Sim, LoopHandle<Sim, 8>) {
    let mut lp: Sim = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(remote).unwrap();
    (lp, handle)
}

#[test]
fn remote_can_be_attached_again_after_its_loop_closed() {
    static REMOTE: Remote<Sim, 8> = Remote::new();
    let ran = Arc::new(AtomicU64::new(0));
    // Create, close, create again with the same static (the closed loop still alive).
    let (mut first, h1) = sim_attached(&REMOTE);
    let r = ran.clone();
    h1.add_callback(move |_| {
        r.fetch_add(1, Ordering::Relaxed);
    })
    .map_err(|r| r.error)
    .unwrap();
    first.run_once(Some(Duration::ZERO)).unwrap();
    first.close();
    let (mut second, h2) = sim_attached(&REMOTE);
    drop(first); // must not close the new attachment
    let r = ran.clone();
    std::thread::spawn(move || {
        h2.add_callback(move |lp| {
            r.fetch_add(1, Ordering::Relaxed);
            lp.stop();
        })
        .map_err(|r| r.error)
        .unwrap()
    })
    .join()
    .unwrap();
    second.run().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 2);
    drop(second);
    // And again, with a real epoll loop and a real notifier (a new eventfd dup each time).
    static EREMOTE: Remote<Epl, 8> = Remote::new();
    for _ in 0..3 {
        let mut lp: Epl = EventLoop::new().unwrap();
        let h = lp.attach_remote(&EREMOTE).unwrap();
        lp.call_later(Duration::from_secs(120), |_| panic!("not woken"))
            .unwrap();
        let t = std::thread::spawn(move || h.stop().unwrap());
        lp.run().unwrap();
        t.join().unwrap();
    }
}

#[test]
fn stale_handle_from_a_previous_loop_is_refused_after_reattach() {
    static REMOTE: Remote<Sim, 8> = Remote::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let (lp, stale) = sim_attached(&REMOTE);
    drop(lp);
    let (mut lp, fresh) = sim_attached(&REMOTE);
    let token = Token {
        dropped: dropped.clone(),
    };
    let refused = stale
        .add_callback(move |lp: &mut Sim| {
            let _keep = &token;
            lp.stop();
        })
        .unwrap_err();
    assert_eq!(refused.error, Error::Closed);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        0,
        "handed back to the caller"
    );
    drop(refused.into_inner());
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
    assert_eq!(stale.stop(), Err(Error::Closed));
    assert_eq!(stale.wake(), Err(Error::Closed));
    assert_eq!(
        lp.poller().notifier().count(),
        0,
        "the stale handle never woke the new loop"
    );
    fresh.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().remote_callbacks_run, 1);
    assert_eq!(lp.poller().notifier().count(), 1);
}

#[test]
fn queued_closures_are_dropped_once_at_close() {
    static REMOTE: Remote<Sim, 8> = Remote::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let ran = Arc::new(AtomicU64::new(0));
    let (mut lp, handle) = sim_attached(&REMOTE);
    for _ in 0..5 {
        handle
            .add_callback(counted_callback(&ran, &dropped))
            .map_err(|r| r.error)
            .unwrap();
    }
    lp.close();
    assert_eq!(dropped.load(Ordering::Relaxed), 5);
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    drop(lp);
    let (mut lp, _handle) = sim_attached(&REMOTE);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    drop(lp);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        5,
        "dropped once, not again by a later loop"
    );
    assert_eq!(ran.load(Ordering::Relaxed), 0, "never run by a later loop");
}
