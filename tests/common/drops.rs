//! Drop probes for the capture tests: [`OnDrop`] runs a closure when a capture is dropped.
//! `counted(&n)` adds one to `n`, `panic_on_drop()` panics (not while unwinding: that would
//! abort). Include with `#[path = "common/drops.rs"] mod drops;`.
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;

/// Runs its closure once, when dropped.
pub struct OnDrop<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// A capture that adds one to `drops` when dropped.
pub fn counted(drops: &Rc<Cell<u32>>) -> OnDrop<impl FnMut()> {
    let drops = drops.clone();
    OnDrop(move || drops.set(drops.get() + 1))
}

/// A capture whose drop panics (unless the thread is already unwinding).
pub fn panic_on_drop() -> OnDrop<impl FnMut()> {
    OnDrop(|| assert!(std::thread::panicking(), "capture's drop failed"))
}
