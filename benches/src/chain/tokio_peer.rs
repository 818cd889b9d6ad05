//! tokio, current_thread runtime, one task per read end awaiting an `AsyncFd`.
//!
//! This is how the workload is written in tokio: `n` spawned tasks, each
//! `loop { afd.readable().await; recv ... }`, and the timing task awaiting "all bytes read".
//! tokio's driver is edge-triggered: a task reads until a short read and then clears the
//! readiness it observed (`clear_ready`, which only clears if no newer event arrived). The
//! timing task sleeps on a waker that the reader finishing the run wakes; it is not polled in
//! between. tokio has no "one non-blocking pass" call, so a run is the runtime running until
//! the chain completes; per hop that is the driver's `epoll_wait`, the wake of one task, its
//! poll and the handler's `recv` + `send`.
//!
//! Only loop time is reported: tokio has no "re-arm this fd's interest" operation, and
//! re-creating `n` `AsyncFd`s (deregister + register + slab churn) is a different thing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{cpu_us, Chain, ChainCase, ChainSamples};

/// A read end seen by tokio; it does not own the fd (the case's `Pairs` does, and outlives
/// the runtime).
struct Rd(RawFd);

impl AsRawFd for Rd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The chain state plus the waker of the task timing the run.
struct Shared {
    chain: Chain,
    waiter: Mutex<Option<Waker>>,
}

impl Shared {
    /// Called by a reader after handling bytes: wakes the timing task once the run is over.
    fn after_read(&self) {
        if self.chain.done() {
            if let Some(w) = self.waiter.lock().unwrap().take() {
                w.wake();
            }
        }
    }
}

async fn reader(afd: AsyncFd<Rd>, i: usize, sh: Arc<Shared>) {
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return;
        };
        // SAFETY: the fd outlives the runtime (see `Rd`).
        let fd = unsafe { BorrowedFd::borrow_raw(afd.get_ref().0) };
        sh.chain.on_readable(fd, i);
        guard.clear_ready();
        sh.after_read();
    }
}

/// Runs one chain case.
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    let pairs = &*case.pairs;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let sh = Arc::new(Shared {
        chain: Chain::new(pairs),
        waiter: Mutex::new(None),
    });

    let loop_us = rt.block_on(async {
        for (i, fd) in pairs.rd.iter().enumerate() {
            // SAFETY: the fd stays open until the runtime (and with it every AsyncFd) is
            // dropped at the end of this function.
            let afd =
                unsafe { AsyncFd::register_with_interest(Rd(fd.as_raw_fd()), Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            tokio::spawn(reader(afd, i, sh.clone()));
        }
        // Let every reader run to its first `readable().await` before timing.
        tokio::task::yield_now().await;

        let mut loop_us = Vec::with_capacity(case.iters);
        for _ in 0..case.iters {
            sh.chain.start(case.active, case.writes);
            crate::timers::callgrind::zero();
            let t1 = cpu_us();
            std::future::poll_fn(|cx| {
                if sh.chain.done() {
                    return Poll::Ready(());
                }
                *sh.waiter.lock().unwrap() = Some(cx.waker().clone());
                if sh.chain.done() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let t2 = cpu_us();
            crate::timers::callgrind::dump(c"loop");
            std::hint::black_box(sh.chain.count());
            loop_us.push(t2 - t1);
        }
        Ok::<_, io::Error>(loop_us)
    })?;
    // Dropping the runtime cancels the readers and deregisters their AsyncFds.
    drop(rt);
    sh.chain.check()?;
    Ok(ChainSamples {
        loop_us,
        total_us: None,
        literal_us: None,
    })
}
