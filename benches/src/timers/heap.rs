//! The baseline: Tornado's timer design in Rust, a binary heap with lazy cancellation.
//!
//! Tornado keeps `_timeouts`, a heap of `(deadline, tiebreaker)` objects; `remove_timeout`
//! only marks the object cancelled and counts it, the loop pops and skips cancelled entries as
//! they surface, and the heap is rebuilt without them once more than 512 are cancelled and
//! they are more than half of it. Here the heap holds `(deadline, seq, slot, generation)`
//! (16 + 8 bytes, `Copy`), callbacks live in a slab of slots (no allocation per timer once
//! warm: freed slots are reused), and "cancelled" is a generation mismatch, i.e. a
//! constant-time cancelled-set. Re-arm is cancel + insert, as in Tornado. The callback is a
//! plain `fn` pointer, so nothing but the data structure is measured.
//!
//! This is the floor row of the timer table: the simplest structure a careful loop author would
//! write, with std's `BinaryHeap` (a sift-up on push, sift-down-to-bottom on pop).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use super::{start, stop, wait_until_due, TimerCase, TimerSamples};

/// One heap entry. Ordered by deadline, then insertion order (Tornado's tiebreaker).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: u64,
    seq: u64,
    slot: u32,
    gen: u32,
}

/// A timer callback: bumps the counter it is handed.
pub type Callback = fn(&Cell<u64>);

struct Slot {
    gen: u32,
    cb: Option<Callback>,
}

/// A scheduled timer, as returned by [`HeapTimers::call_later`].
#[derive(Clone, Copy)]
pub struct Handle {
    slot: u32,
    gen: u32,
}

/// Tornado's timer heap.
pub struct HeapTimers {
    base: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    cancellations: usize,
    seq: u64,
}

impl HeapTimers {
    /// Room for `n` live timers (and as many cancelled entries) without reallocating.
    pub fn with_capacity(n: usize) -> HeapTimers {
        HeapTimers {
            base: Instant::now(),
            heap: BinaryHeap::with_capacity(2 * n + 1024),
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            cancellations: 0,
            seq: 0,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Schedules `cb` to run `d` from now (reads the clock, as `call_later` does).
    #[inline]
    pub fn call_later(&mut self, d: Duration, cb: Callback) -> Handle {
        let deadline = self.now() + d.as_nanos() as u64;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, cb: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.cb = Some(cb);
        let gen = s.gen;
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            deadline,
            seq: self.seq,
            slot,
            gen,
        }));
        Handle { slot, gen }
    }

    /// Cancels a timer that has not run (a no-op for one that ran or was cancelled).
    #[inline]
    pub fn remove_timeout(&mut self, h: Handle) {
        let s = &mut self.slots[h.slot as usize];
        if s.gen != h.gen || s.cb.is_none() {
            return;
        }
        s.cb = None;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(h.slot);
        self.cancellations += 1;
        // Tornado's rule (checked once per loop iteration there; here where the work is done,
        // so that the cancel phase pays for the compaction it causes).
        if self.cancellations > 512 && self.cancellations > self.heap.len() >> 1 {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse(e)| slots[e.slot as usize].gen == e.gen);
            self.cancellations = 0;
        }
    }

    /// One loop iteration's timer work: runs every timer due now. Returns how many ran.
    #[inline]
    pub fn run_due(&mut self, ctx: &Cell<u64>) -> usize {
        let now = self.now();
        let mut ran = 0;
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.deadline > now {
                break;
            }
            let Reverse(e) = self.heap.pop().unwrap();
            let s = &mut self.slots[e.slot as usize];
            if s.gen == e.gen {
                if let Some(cb) = s.cb.take() {
                    s.gen = s.gen.wrapping_add(1);
                    self.free.push(e.slot);
                    cb(ctx);
                    ran += 1;
                }
            } else {
                self.cancellations = self.cancellations.saturating_sub(1);
            }
        }
        ran
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Runs one timer case.
pub fn run(case: &TimerCase) -> io::Result<TimerSamples> {
    let n = case.n;
    let inp = &*case.inputs;
    let mut t = HeapTimers::with_capacity(n);
    let mut handles: Vec<Handle> = Vec::with_capacity(n);
    let fired = Cell::new(0u64);
    // Hidden from the optimiser so the callback stays an indirect call, as a real loop's is.
    let cb: Callback = std::hint::black_box(bump);
    let mut out = TimerSamples::with_capacity(case.iters);

    for _ in 0..case.iters {
        handles.clear();
        let t0 = start();
        for d in &inp.schedule {
            handles.push(t.call_later(*d, cb));
        }
        out.schedule.push(stop(t0, n, "schedule"));

        let t0 = start();
        for (h, d) in handles.iter_mut().zip(&inp.rearm) {
            t.remove_timeout(*h);
            *h = t.call_later(*d, cb);
        }
        out.rearm.push(stop(t0, n, "rearm"));

        let t0 = start();
        for &i in &inp.cancel {
            t.remove_timeout(handles[i as usize]);
        }
        out.cancel.push(stop(t0, n, "cancel"));

        fired.set(0);
        for d in &inp.fire {
            t.call_later(*d, cb);
        }
        wait_until_due(Instant::now());
        let t0 = start();
        while fired.get() < n as u64 {
            t.run_due(&fired);
        }
        out.fire.push(stop(t0, n, "fire"));
        std::hint::black_box(fired.get());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_skips_cancelled() {
        let mut t = HeapTimers::with_capacity(4);
        let c = Cell::new(0);
        let a = t.call_later(Duration::ZERO, bump);
        let _b = t.call_later(Duration::ZERO, bump);
        t.remove_timeout(a);
        t.remove_timeout(a);
        assert_eq!(t.run_due(&c), 1);
        assert_eq!(c.get(), 1);
        assert_eq!(t.cancellations, 0);
    }

    #[test]
    fn compaction_keeps_live_timers() {
        let mut t = HeapTimers::with_capacity(2000);
        let hs: Vec<_> = (0..2000)
            .map(|_| t.call_later(Duration::ZERO, bump))
            .collect();
        for h in &hs[..1500] {
            t.remove_timeout(*h);
        }
        assert!(t.heap.len() < 2000, "compacted");
        let c = Cell::new(0);
        assert_eq!(t.run_due(&c), 500);
    }
}
