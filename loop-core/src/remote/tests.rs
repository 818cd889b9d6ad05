//! Inside the crate so Miri (which runs only this crate's tests) checks the lock-free ring
//! with real threads.

extern crate std;
use super::*;
use crate::poller::{Notify, Poller};
use crate::sim::SimPoller;
use crate::EventLoop;
use core::time::Duration;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

type Lp = EventLoop<SimPoller<4>, 2, 2, 2>;

#[test]
fn producers_on_threads_deliver_each_accepted_callback_exactly_once() {
    static REMOTE: Remote<Lp, 8> = Remote::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let per_thread = if cfg!(miri) { 20 } else { 2000 };
    let producers: std::vec::Vec<_> = (0..2)
        .map(|_| {
            let ran = ran.clone();
            std::thread::spawn(move || {
                let mut refused = 0u64;
                for _ in 0..per_thread {
                    let ran = ran.clone();
                    if handle
                        .add_callback(move |_: &mut Lp| {
                            ran.fetch_add(1, Ordering::Relaxed);
                        })
                        .is_err()
                    {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    let mut done = 0;
    while done < producers.len() {
        lp.run_once(Some(Duration::ZERO)).unwrap();
        done = producers.iter().filter(|p| p.is_finished()).count();
    }
    for p in producers {
        refused += p.join().unwrap();
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed) + refused, 2 * per_thread);
}

#[test]
fn full_ring_hands_the_closure_back_and_frees_up_after_draining() {
    static REMOTE: Remote<Lp, 2> = Remote::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    let refused = handle.add_callback(|_| {}).unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::Callbacks
        }
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    handle
        .add_callback(refused.into_inner())
        .map_err(|r| r.error)
        .unwrap();
    lp.close();
}

/// Counts drops of the closures that carry it.
struct Token(Arc<AtomicU64>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn remote_close_finishes_while_many_threads_hammer_the_handle() {
    static REMOTE: Remote<Lp, 8> = Remote::new();
    let threads = if cfg!(miri) { 4 } else { 16 };
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let made = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let ran = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(AtomicBool::new(false));
    let hammers: std::vec::Vec<_> = (0..threads)
        .map(|_| {
            let (made, dropped, ran, accepted, halt) = (
                made.clone(),
                dropped.clone(),
                ran.clone(),
                accepted.clone(),
                halt.clone(),
            );
            std::thread::spawn(move || {
                // Bounded by the flag, which is set only after the loop is gone: the
                // calls keep coming during the whole close (then each thread goes on
                // until it saw the refusal, which is its next call).
                let mut closed_seen = false;
                while !(closed_seen && halt.load(Ordering::Acquire)) {
                    made.fetch_add(1, Ordering::Relaxed);
                    let token = Token(dropped.clone());
                    let ran = ran.clone();
                    match handle.add_callback(move |_: &mut Lp| {
                        let _keep = &token;
                        ran.fetch_add(1, Ordering::Relaxed);
                    }) {
                        Ok(()) => {
                            assert!(!closed_seen, "accepted after a Closed refusal");
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(refused) => {
                            match refused.error {
                                Error::Closed => closed_seen = true,
                                Error::Full { .. } => assert!(!closed_seen),
                                e => panic!("unexpected {e:?}"),
                            }
                            drop(refused.into_inner());
                        }
                    }
                }
                closed_seen
            })
        })
        .collect();
    // Let every thread get going, and the loop run some of their closures.
    while made.load(Ordering::Relaxed) < 4 * threads as u64 {
        std::thread::yield_now();
    }
    for _ in 0..4 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    drop(lp); // the close under test: must return while the threads keep calling
    halt.store(true, Ordering::Release);
    for h in hammers {
        assert!(h.join().unwrap());
    }
    assert_eq!(
        handle.add_callback(|_| {}).map_err(|r| r.error),
        Err(Error::Closed)
    );
    let (made, dropped, ran, accepted) = (
        made.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        ran.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed),
    );
    assert_eq!(dropped, made, "every closure dropped exactly once");
    assert!(ran <= accepted, "ran {ran} of {accepted} accepted");
    assert!(accepted > 0);
}

#[test]
fn remote_can_be_attached_again_after_its_loop_closed() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let ran = Arc::new(AtomicU64::new(0));
    for round in 0..3u64 {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let handle = lp.attach_remote(&REMOTE).unwrap();
        let r = ran.clone();
        std::thread::spawn(move || {
            handle
                .add_callback(move |_: &mut Lp| {
                    r.fetch_add(1, Ordering::Relaxed);
                })
                .map_err(|r| r.error)
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lp.poller().notifier().count(), 1, "the new loop is woken");
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(ran.load(Ordering::Relaxed), round + 1);
        // Alternate between an explicit close (the loop lives on) and a drop.
        if round % 2 == 0 {
            lp.close();
            let mut other: Lp = EventLoop::with_poller(SimPoller::new());
            let h = other.attach_remote(&REMOTE).unwrap();
            // The closed loop's later drop must not close the new attachment.
            drop(lp);
            h.add_callback(|lp| lp.stop()).map_err(|r| r.error).unwrap();
            other.run().unwrap();
        } else {
            drop(lp);
        }
    }
}

#[test]
fn stale_handle_from_a_previous_loop_is_refused_after_reattach() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let old = lp.attach_remote(&REMOTE).unwrap();
    lp.close();
    let mut lp2: Lp = EventLoop::with_poller(SimPoller::new());
    let new = lp2.attach_remote(&REMOTE).unwrap();
    // Every producer call of the old handle is refused, its closure handed back.
    let token = Token(dropped.clone());
    let refused =
        std::thread::spawn(move || old.add_callback(move |_: &mut Lp| drop(token)).unwrap_err())
            .join()
            .unwrap();
    assert_eq!(refused.error, Error::Closed);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        0,
        "handed back, not dropped"
    );
    drop(refused.into_inner());
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
    assert_eq!(old.stop(), Err(Error::Closed));
    assert_eq!(old.wake(), Err(Error::Closed));
    // Nothing from the old handle reached the new loop: no wake, no stop, no callback.
    assert_eq!(lp2.poller().notifier().count(), 0);
    new.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    lp2.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp2.counters().remote_callbacks_run, 1);
    // And a third attachment refuses both earlier handles.
    drop(lp2);
    let mut lp3: Lp = EventLoop::with_poller(SimPoller::new());
    let third = lp3.attach_remote(&REMOTE).unwrap();
    assert_eq!(old.wake(), Err(Error::Closed));
    assert_eq!(new.wake(), Err(Error::Closed));
    third.wake().unwrap();
    drop(lp);
}

#[test]
fn queued_closures_are_dropped_once_at_close() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let ran = Arc::new(AtomicU64::new(0));
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    // Wrap the ring once so the queue's positions are not at zero when it is reset.
    for _ in 0..3 {
        handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    }
    lp.run_once(Some(Duration::ZERO)).unwrap();
    for _ in 0..4 {
        let token = Token(dropped.clone());
        let ran = ran.clone();
        handle
            .add_callback(move |_: &mut Lp| {
                let _keep = &token;
                ran.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(|r| r.error)
            .unwrap();
    }
    handle.stop().unwrap();
    lp.close();
    assert_eq!(dropped.load(Ordering::Relaxed), 4, "dropped at close");
    assert_eq!(ran.load(Ordering::Relaxed), 0, "not run");
    drop(lp);
    assert_eq!(dropped.load(Ordering::Relaxed), 4, "and only once");
    // The next loop starts with an empty queue, no pending stop and a fresh high water.
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    assert_eq!(handle.high_water(), 0);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().remote_callbacks_run, 0);
    for _ in 0..4 {
        handle.add_callback(|_| {}).map_err(|r| r.error).unwrap();
    }
    assert_eq!(
        handle.add_callback(|_| {}).map_err(|r| r.error),
        Err(Error::Full {
            what: Resource::Callbacks
        }),
        "the full capacity is available again"
    );
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(lp.counters().remote_callbacks_run, 4);
}

#[test]
fn close_drops_every_queued_closure_and_frees_the_remote_when_a_drop_panics() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop of a queued closure panicked");
        }
    }
    let dropped = Arc::new(AtomicU64::new(0));
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let token = Token(dropped.clone());
    handle
        .add_callback(move |_: &mut Lp| drop(token))
        .map_err(|r| r.error)
        .unwrap();
    let bomb = PanicOnDrop;
    handle
        .add_callback(move |_: &mut Lp| drop(bomb))
        .map_err(|r| r.error)
        .unwrap();
    let token = Token(dropped.clone());
    handle
        .add_callback(move |_: &mut Lp| drop(token))
        .map_err(|r| r.error)
        .unwrap();
    let closed = std::panic::catch_unwind(|| REMOTE.close());
    assert!(closed.is_err(), "the panic reaches the caller");
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        2,
        "the others were dropped"
    );
    assert_eq!(handle.wake(), Err(Error::Closed));
    // The loop's own close finds the remote already closed.
    drop(lp);
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    handle
        .add_callback(|lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    lp.run().unwrap();
}

#[test]
fn signal_wake_after_close_touches_nothing_and_after_reattach_wakes_the_new_loop() {
    static REMOTE: Remote<Lp, 4> = Remote::new();
    let entry = &REMOTE.wake_entry;
    let signal = || (entry.wake)(entry.ctx.load(Ordering::Acquire));
    signal(); // never attached: nothing to wake
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let _handle = lp.attach_remote(&REMOTE).unwrap();
    signal();
    assert_eq!(lp.poller().notifier().count(), 1);
    let first = lp.poller().notifier().try_clone().unwrap();
    drop(lp); // the remote's notifier clone is gone
    signal();
    assert_eq!(first.count(), 1, "no write after close");
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let _handle = lp.attach_remote(&REMOTE).unwrap();
    signal();
    assert_eq!(lp.poller().notifier().count(), 1, "the new loop is woken");
    assert_eq!(first.count(), 1);
}

#[test]
fn a_push_after_the_loop_cleared_the_wake_flag_writes_the_notifier_again() {
    static REMOTE: Remote<Lp, 8> = Remote::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    let count = |lp: &Lp| lp.poller().notifier().count();
    // A burst before the loop looks: one write.
    handle.add_callback(|_| {}).unwrap();
    handle.add_callback(|_| {}).unwrap();
    assert_eq!(count(&lp), 1);
    // The iteration clears the flag before it drains, and consumes that write in its poll.
    lp.run_once(Some(Duration::ZERO)).unwrap();
    // The next push finds the flag clear: it must write again (no lost wake).
    handle.add_callback(|_| {}).unwrap();
    assert_eq!(count(&lp), 2);
    // A push from inside the iteration, after the loop cleared the flag (here: from a remote
    // callback it is running), also writes, and the poll does not block: it runs next time.
    let inner = handle;
    handle
        .add_callback(move |_| {
            inner.add_callback(|lp| lp.stop()).unwrap();
        })
        .unwrap();
    assert_eq!(
        count(&lp),
        2,
        "flag still set: the burst costs no second write"
    );
    lp.run_once(None).unwrap();
    assert_eq!(count(&lp), 3, "pushed after the clear: written");
    assert_eq!(lp.poller().stats().last_timeout, Some(Some(Duration::ZERO)));
    lp.run().unwrap(); // the stop queued from inside runs in the next iteration
}

#[test]
fn high_water_counts_the_largest_queue_and_an_empty_check_does_not_raise_it() {
    static REMOTE: Remote<Lp, 8> = Remote::new();
    let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    let handle = lp.attach_remote(&REMOTE).unwrap();
    for _ in 0..3 {
        handle.add_callback(|_| {}).unwrap();
    }
    assert_eq!(REMOTE.high_water(), 0, "not sampled before the loop looks");
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(REMOTE.high_water(), 3);
    handle.add_callback(|_| {}).unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(REMOTE.high_water(), 3, "a smaller queue leaves the mark");
    assert_eq!(lp.counters().remote_high_water, 3);
}
