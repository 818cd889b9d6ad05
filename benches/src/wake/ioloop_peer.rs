//! ioloop: the remote calls `notify()` on a clone of the poller's notifier; the loop, blocked
//! in `run_once(None)`, wakes and the code driving it answers.
//!
//! That is ioloop's cross-thread path as designed: the loop is not `Send`, and other threads
//! reach it only through the poller's notifier (an eventfd, level-triggered, drained inside
//! `wait`: one `write` on the remote, `epoll_wait` + one `read` on the loop). `run_once(None)`
//! returns after the iteration the wake ended, and the answer runs right there, where a
//! facade's thread-safe callback queue would be drained.

use std::io;

use loop_core::{EventLoop, Notify, Poller};
use loop_linux::Epoll;

use super::{join, spawn_remote, Shared, WakeCase, WakeSamples};
use crate::sys::io_err;

type Lp = EventLoop<Epoll, 4, 4, 4>;

/// Runs the case.
pub fn run(case: &WakeCase) -> io::Result<WakeSamples> {
    let mut lp = Lp::new_boxed().map_err(io_err)?;
    let notifier = lp
        .poller()
        .notifier()
        .try_clone()
        .map_err(|e| io_err(e.into()))?;
    let shared = Shared::leak();
    let remote = spawn_remote(shared, case.trips, move |_| {
        let _ = notifier.notify();
    });
    loop {
        lp.run_once(None).map_err(io_err)?;
        if !shared.answer() {
            break;
        }
    }
    join(remote)
}
