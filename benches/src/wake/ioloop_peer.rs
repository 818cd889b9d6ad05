//! ioloop: the remote thread calls `LoopHandle::add_callback`; the loop, asleep in `run()`,
//! wakes and runs the callback, which answers.
//!
//! This is ioloop's cross-thread API as users call it: the closure is stored inline in a cell
//! of the bounded lock-free `Remote` ring (no allocation), and the first add after the loop last
//! looked writes the eventfd once (later adds see the "wake pending" flag and skip the
//! syscall). The loop drains the ring at the start of its next iteration. Each run leaks one
//! fresh `Remote` (a remote serves one loop for good).

use std::io;

use loop_core::{EventLoop, Remote};
use loop_linux::Epoll;

use super::{join, spawn_remote, Shared, WakeCase, WakeSamples};
use crate::sys::io_err;

type Lp = EventLoop<Epoll, 4, 4, 4>;

/// Runs the case.
pub fn run(case: &WakeCase) -> io::Result<WakeSamples> {
    let mut lp = Lp::new_boxed().map_err(io_err)?;
    let queue: &'static Remote<Lp, 64> = Box::leak(Box::new(Remote::new()));
    let handle = lp.attach_remote(queue).map_err(io_err)?;
    let shared = Shared::leak();
    let remote = spawn_remote(shared, case, move |_| {
        // The ring never fills here (one request in flight), so a refusal cannot happen; if it
        // did, the remote would spin until its ack timed out rather than lose the request.
        let _ = handle.add_callback(move |lp: &mut Lp| {
            if !shared.answer() {
                lp.stop();
            }
        });
    });
    lp.run().map_err(io_err)?;
    join(remote)
}
