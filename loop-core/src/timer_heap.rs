//! The timer heap: fixed capacity, O(log n) insert, cancel and re-arm, FIFO among equal
//! deadlines.
//!
//! The design is libev's: a 4-ary min-heap whose nodes cache the deadline next to the slot
//! index (16 bytes, four children in one cache line), so sifting compares deadlines without
//! touching the timer slots. Each timer's heap position is kept, which makes cancellation a
//! real O(log n) removal rather than Tornado's lazy "mark and compact later": a full heap means
//! that many live timers, never dead entries (DESIGN.md §3).
//!
//! Positions live in a dense side array (4 bytes per timer), not in the slots that hold the
//! closures: every step of a sift writes a moved timer's position, and at 10^5–10^6 timers a
//! write into a ~90-byte slot is a cache miss per level while the dense array stays mostly
//! cached. The slot itself is touched once per insert, cancel and fire.
//!
//! Ties are broken by a sequence number taken at insert (and re-arm), so equal deadlines fire
//! first-in first-out. It sits in the node beside the deadline, so the smallest of four
//! children is found by branch-free 128-bit compares (random deadlines make every branch a
//! coin toss).
//!
//! A timer that is due is popped from the heap but keeps its slot while its closure runs, so
//! the closure may re-arm itself (periodic callbacks) under the same handle, or cancel itself.

use crate::slab::Slab;
use crate::time::Instant;
use crate::zeroed::ZeroInit;

/// Identifies a scheduled timer. Cancelling a handle that has fired or was cancelled is a
/// no-op, even if its slot has since been reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// Positions below this are heap positions; the two values above mark a running timer.
const RUNNING: u32 = u32::MAX;
const CANCELLED_WHILE_RUNNING: u32 = u32::MAX - 1;

/// A timer's closure; `None` while it runs.
struct TimerSlot<F> {
    f: Option<F>,
}

/// A heap entry: the ordering key `(deadline, seq)` cached next to the slot it belongs to, so
/// comparisons never leave the heap array.
#[derive(Clone, Copy)]
struct Node {
    deadline: u64,
    seq: u64,
    slot: u32,
}

impl Node {
    /// `(deadline, seq)` as one integer: compares without branches.
    #[inline(always)]
    fn key(self) -> u128 {
        ((self.deadline as u128) << 64) | self.seq as u128
    }
}

pub(crate) struct TimerHeap<F, const T: usize> {
    slots: Slab<TimerSlot<F>, T>,
    /// Slot index → heap position (or a running marker); valid for occupied slots.
    pos: [u32; T],
    heap: [Node; T],
    len: u32,
    next_seq: u64,
}

// SAFETY: the slab is zero-valid, nodes, positions and sequences are plain integers read only
// for slots in use, `len = 0` means no node is in use, and `next_seq = 0` is a valid start.
unsafe impl<F, const T: usize> ZeroInit for TimerHeap<F, T> {}
// SAFETY: plain integers.
unsafe impl ZeroInit for Node {}

const ARITY: usize = 4;

/// What a timer closure asks for after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Next {
    /// Free the timer.
    #[default]
    Done,
    /// Run again at this deadline, under the same handle.
    At(Instant),
}

impl<F, const T: usize> TimerHeap<F, T> {
    /// Number of live timers (scheduled or running).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Number of timers waiting in the heap.
    #[inline]
    pub(crate) fn scheduled(&self) -> usize {
        self.len as usize
    }

    /// The sequence number the next insert will get; timers with a sequence at or above a
    /// limit taken before running callbacks were added during this iteration.
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    #[inline]
    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// `(deadline, sequence)` order.
    #[inline(always)]
    fn less(&self, a: Node, b: Node) -> bool {
        a.key() < b.key()
    }

    #[inline]
    fn place(&mut self, pos: usize, node: Node) {
        self.heap[pos] = node;
        self.pos[node.slot as usize] = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            let p = self.heap[parent];
            if !self.less(node, p) {
                break;
            }
            self.place(pos, p);
            pos = parent;
        }
        self.place(pos, node);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.len as usize;
        let node = self.heap[pos];
        loop {
            let first = ARITY * pos + 1;
            if first >= len {
                break;
            }
            let best = if first + ARITY <= len {
                // All four children exist: a branch-free tournament.
                let k = |i: usize| self.heap[first + i].key();
                let (k0, k1, k2, k3) = (k(0), k(1), k(2), k(3));
                let a = if k1 < k0 { 1 } else { 0 };
                let ka = if k1 < k0 { k1 } else { k0 };
                let b = if k3 < k2 { 3 } else { 2 };
                let kb = if k3 < k2 { k3 } else { k2 };
                first + if kb < ka { b } else { a }
            } else {
                let mut best = first;
                for c in first + 1..len {
                    if self.less(self.heap[c], self.heap[best]) {
                        best = c;
                    }
                }
                best
            };
            if !self.less(self.heap[best], node) {
                break;
            }
            self.place(pos, self.heap[best]);
            pos = best;
        }
        self.place(pos, node);
    }

    /// Restore the heap property for the node at `pos` after its key changed either way.
    fn fix(&mut self, pos: usize) {
        if pos > 0 && self.less(self.heap[pos], self.heap[(pos - 1) / ARITY]) {
            self.sift_up(pos);
        } else {
            self.sift_down(pos);
        }
    }

    fn remove_at(&mut self, pos: usize) {
        self.len -= 1;
        let last = self.len as usize;
        if pos != last {
            let moved = self.heap[last];
            self.place(pos, moved);
            self.fix(pos);
        }
    }

    fn push_node(&mut self, deadline: Instant, slot: u32) {
        let pos = self.len as usize;
        self.len += 1;
        let seq = self.take_seq();
        self.heap[pos] = Node {
            deadline: deadline.as_nanos(),
            seq,
            slot,
        };
        self.sift_up(pos);
    }

    /// Schedule `f` at `deadline`; the closure comes back when the heap is full.
    pub(crate) fn insert(&mut self, deadline: Instant, f: F) -> Result<TimerHandle, F> {
        let (index, generation) = match self.slots.insert(TimerSlot { f: Some(f) }) {
            Ok(ig) => ig,
            Err(TimerSlot { f }) => {
                return f.map_or_else(|| unreachable!("built with a closure"), Err)
            }
        };
        self.push_node(deadline, index);
        Ok(TimerHandle { index, generation })
    }

    /// Cancel `h`. Returns the closure for the caller to drop, or `None` when the handle is
    /// stale (fired, cancelled, never issued) or the timer is running right now, in which case
    /// it is freed as soon as its closure returns instead of being re-armed.
    pub(crate) fn cancel(&mut self, h: TimerHandle) -> Option<F> {
        self.slots.get(h.index, h.generation)?;
        match self.pos[h.index as usize] {
            RUNNING => {
                self.pos[h.index as usize] = CANCELLED_WHILE_RUNNING;
                None
            }
            CANCELLED_WHILE_RUNNING => None,
            p => {
                self.remove_at(p as usize);
                self.slots.remove(h.index, h.generation).and_then(|s| s.f)
            }
        }
    }

    /// Move a scheduled timer to a new deadline, as if it had just been inserted there (it
    /// goes after timers already due at the same instant). Returns `false` for a handle that
    /// is not waiting in the heap.
    pub(crate) fn reset(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        if self.slots.get(h.index, h.generation).is_none() {
            return false;
        }
        let pos = self.pos[h.index as usize];
        if pos >= CANCELLED_WHILE_RUNNING {
            return false;
        }
        let seq = self.take_seq();
        let node = &mut self.heap[pos as usize];
        node.deadline = deadline.as_nanos();
        node.seq = seq;
        self.fix(pos as usize);
        true
    }

    /// Whether `h` is scheduled or running (and not cancelled).
    pub(crate) fn is_pending(&self, h: TimerHandle) -> bool {
        self.slots.get(h.index, h.generation).is_some()
            && self.pos[h.index as usize] != CANCELLED_WHILE_RUNNING
    }

    /// Drop every timer (closing the loop). Handles issued before must not be used again.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.slots.clear();
    }

    /// The earliest deadline, if any timer is scheduled.
    #[inline]
    pub(crate) fn peek_deadline(&self) -> Option<Instant> {
        (self.len > 0).then(|| Instant::from_nanos(self.heap[0].deadline))
    }

    /// Pop the head if it is due at `now` and was scheduled before `seq_limit`. Its slot stays
    /// allocated (marked running) until [`finish`](Self::finish).
    #[inline]
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        seq_limit: u64,
    ) -> Option<(TimerHandle, F, Instant)> {
        if self.len == 0 {
            return None;
        }
        let head = self.heap[0];
        if head.deadline > now.as_nanos() || head.seq >= seq_limit {
            return None;
        }
        self.remove_at(0);
        self.pos[head.slot as usize] = RUNNING;
        let (_, generation) = self.slots.get_by_index(head.slot)?;
        let f = self.slots.get_mut(head.slot, generation)?.f.take()?;
        Some((
            TimerHandle {
                index: head.slot,
                generation,
            },
            f,
            Instant::from_nanos(head.deadline),
        ))
    }

    /// Settle a timer popped by [`pop_due`](Self::pop_due) after its closure ran: re-arm it at
    /// `next`, or free it (returning the closure to drop) when it asked to stop or was
    /// cancelled while running.
    pub(crate) fn finish(&mut self, h: TimerHandle, f: F, next: Next) -> Option<F> {
        let rearm = matches!(next, Next::At(_)) && self.pos[h.index as usize] == RUNNING;
        let Some(slot) = self.slots.get_mut(h.index, h.generation) else {
            return Some(f);
        };
        match next {
            Next::At(deadline) if rearm => {
                slot.f = Some(f);
                self.push_node(deadline, h.index);
                None
            }
            _ => {
                self.slots.remove(h.index, h.generation);
                Some(f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::zeroed::zeroed;
    use std::vec::Vec;

    fn at(n: u64) -> Instant {
        Instant::from_nanos(n)
    }

    fn drain<const T: usize>(h: &mut TimerHeap<u32, T>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((handle, f, _)) = h.pop_due(at(now), u64::MAX) {
            out.push(f);
            h.finish(handle, f, Next::Done);
        }
        out
    }

    #[test]
    fn fires_in_deadline_order_and_fifo_among_equal_deadlines() {
        let mut h: TimerHeap<u32, 16> = zeroed();
        for (i, d) in [(1, 50), (2, 10), (3, 50), (4, 10), (5, 30), (6, 50)] {
            h.insert(at(d), i).unwrap();
        }
        assert_eq!(drain(&mut h, 100), [2, 4, 5, 1, 3, 6]);
    }

    #[test]
    fn not_due_timers_stay() {
        let mut h: TimerHeap<u32, 4> = zeroed();
        h.insert(at(10), 1).unwrap();
        h.insert(at(20), 2).unwrap();
        assert_eq!(drain(&mut h, 15), [1]);
        assert_eq!(h.peek_deadline(), Some(at(20)));
    }

    #[test]
    fn cancel_removes_for_real_and_stale_cancel_is_a_noop() {
        let mut h: TimerHeap<u32, 4> = zeroed();
        let a = h.insert(at(10), 1).unwrap();
        let b = h.insert(at(20), 2).unwrap();
        assert_eq!(h.cancel(a), Some(1));
        assert_eq!(h.cancel(a), None);
        assert_eq!(h.len(), 1);
        let c = h.insert(at(5), 3).unwrap(); // reuses a's slot
        assert_eq!(
            h.cancel(a),
            None,
            "stale handle must not cancel the slot's new timer"
        );
        assert!(h.is_pending(c));
        assert_eq!(drain(&mut h, 100), [3, 2]);
        assert_eq!(h.cancel(b), None, "cancelling a fired timer is a no-op");
    }

    #[test]
    fn full_heap_hands_the_closure_back() {
        let mut h: TimerHeap<u32, 2> = zeroed();
        h.insert(at(1), 1).unwrap();
        h.insert(at(1), 2).unwrap();
        assert_eq!(h.insert(at(1), 3), Err(3));
    }

    #[test]
    fn timers_added_after_the_limit_wait_for_the_next_round() {
        let mut h: TimerHeap<u32, 4> = zeroed();
        h.insert(at(10), 1).unwrap();
        let limit = h.next_seq();
        h.insert(at(0), 2).unwrap();
        assert!(
            h.pop_due(at(100), limit).is_none(),
            "the newer head blocks this round"
        );
        assert_eq!(drain(&mut h, 100), [2, 1]);
    }

    #[test]
    fn reset_moves_a_timer_and_reorders_it_after_equal_deadlines() {
        let mut h: TimerHeap<u32, 8> = zeroed();
        let a = h.insert(at(10), 1).unwrap();
        h.insert(at(30), 2).unwrap();
        assert!(h.reset(a, at(30)));
        assert_eq!(drain(&mut h, 100), [2, 1]);
        assert!(!h.reset(a, at(1)), "fired timer cannot be reset");
    }

    #[test]
    fn running_timer_can_rearm_or_be_cancelled_under_the_same_handle() {
        let mut h: TimerHeap<u32, 4> = zeroed();
        let a = h.insert(at(10), 7).unwrap();
        let (ha, f, d) = h.pop_due(at(10), u64::MAX).unwrap();
        assert_eq!((ha, f, d), (a, 7, at(10)));
        assert!(h.is_pending(a));
        assert!(h.finish(ha, f, Next::At(at(20))).is_none());
        assert_eq!(h.peek_deadline(), Some(at(20)));
        let (ha, f, _) = h.pop_due(at(20), u64::MAX).unwrap();
        assert_eq!(h.cancel(ha), None);
        assert!(!h.is_pending(a));
        assert_eq!(
            h.finish(ha, f, Next::At(at(30))),
            Some(7),
            "cancelled while running: freed"
        );
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn many_random_operations_keep_the_heap_ordered() {
        let mut h: TimerHeap<u32, 512> = zeroed();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut live = Vec::new();
        for i in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 3 {
                0 | 1 if h.len() < 512 => live.push(h.insert(at(x % 1000), i).unwrap()),
                _ if !live.is_empty() => {
                    let k = (x as usize / 3) % live.len();
                    let victim = live.swap_remove(k);
                    if x.is_multiple_of(2) {
                        assert!(h.cancel(victim).is_some());
                    } else {
                        assert!(h.reset(victim, at(x % 977)));
                        live.push(victim);
                    }
                }
                _ => {}
            }
        }
        let mut last = 0;
        let mut n = 0;
        while let Some((handle, f, d)) = h.pop_due(Instant::MAX, u64::MAX) {
            assert!(d.as_nanos() >= last);
            last = d.as_nanos();
            h.finish(handle, f, Next::Done);
            n += 1;
        }
        assert_eq!(n, live.len());
    }
}
