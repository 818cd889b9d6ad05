//! tokio: `Handle::spawn` from the remote thread onto a current_thread runtime.
//!
//! The way tokio code gets work onto a runtime from a foreign thread: the remote spawns a task
//! (an allocation, a push on the runtime's inject queue, and an unpark of its driver through
//! mio's eventfd waker); the runtime, parked in `block_on`, wakes, polls the task, and the task
//! answers. The `block_on` future itself only waits for the stop task.

use std::io;
use std::sync::Mutex;
use std::task::Waker;

use crate::sys::flag_set;

use super::{join, spawn_remote, Shared, WakeCase, WakeSamples};

/// Runs the case.
pub fn run(case: &WakeCase) -> io::Result<WakeSamples> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let handle = rt.handle().clone();
    let shared = Shared::leak();
    // The waker of the `block_on` future, for the stop task (leaked, like `shared`).
    let stopper: &'static Mutex<Option<Waker>> = Box::leak(Box::new(Mutex::new(None)));
    let remote = spawn_remote(shared, case, move |_| {
        handle.spawn(async move {
            if !shared.answer() {
                if let Some(w) = stopper.lock().unwrap().take() {
                    w.wake();
                }
            }
        });
    });
    rt.block_on(flag_set(&shared.stop, stopper));
    join(remote)
}
