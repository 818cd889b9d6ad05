//! The floor: a `VecDeque<fn(&Cell<u64>)>`, pushed to and drained front to back.
//!
//! No allocation per callback (the deque is sized once) and no captured state: this is the
//! least any callback queue can do (a store on add; a load and an indirect call on run). A
//! loop storing closures inline pays for their size and for dispatching through a vtable on
//! top of this.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;

use super::{time_batches, CallbackCase, CallbackSamples};

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Runs the case.
pub fn run(case: &CallbackCase) -> io::Result<CallbackSamples> {
    let mut q: VecDeque<fn(&Cell<u64>)> = VecDeque::with_capacity(case.batch);
    let counter = Cell::new(0u64);
    // Hidden from the optimiser so each call stays an indirect call through the queue.
    let f: fn(&Cell<u64>) = std::hint::black_box(bump);
    time_batches(case, &counter, |k| {
        for _ in 0..k {
            q.push_back(f);
        }
        // One loop iteration: run what was queued when it started.
        for _ in 0..q.len() {
            let cb = q.pop_front().unwrap();
            cb(&counter);
        }
        Ok(())
    })
}
