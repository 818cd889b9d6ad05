//! tokio: `LocalSet::spawn_local` of a trivial task per callback, current_thread runtime.
//!
//! The closest tokio has to `add_callback`: a `!Send` task on the local set, run on its next
//! turn. Each spawn allocates the task (header + future + output slot), which is how tokio
//! schedules work, so it is part of the cost. Per batch, the timing task spawns `batch` tasks
//! and awaits the last one's `JoinHandle` (the local queue is FIFO, so the last to finish is the
//! last spawned); the other handles are dropped at once (detached). Each task captures one
//! `&'static Cell` counter, as ioloop's closures do.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use tokio::task::LocalSet;

use super::{batches, sample, CallbackCase, CallbackSamples};

/// Runs the case.
pub fn run(case: &CallbackCase) -> io::Result<CallbackSamples> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let local = LocalSet::new();
    let counter: &'static Cell<u64> = Box::leak(Box::new(Cell::new(0)));
    let out = local.block_on(&rt, async {
        let mut out = Vec::with_capacity(case.iters);
        for _ in 0..case.iters {
            counter.set(0);
            let t0 = Instant::now();
            for k in batches(case) {
                let mut last = None;
                for _ in 0..k {
                    last = Some(tokio::task::spawn_local(async move {
                        counter.set(counter.get() + 1);
                    }));
                }
                if let Some(h) = last {
                    let _ = h.await;
                }
            }
            out.push(sample(case, counter, t0)?);
        }
        Ok::<_, io::Error>(out)
    })?;
    Ok(out)
}
