//! The timer table: fixed capacity, FIFO among equal deadlines, O(1) insert, cancel and
//! re-arm for far timers (a hierarchical wheel), O(log n) in a small heap for near ones, and
//! O(1) for the commonest timeout pattern (every timer armed with the same delay).
//!
//! Timers are ordered by `(deadline, sequence)`: the sequence is taken at insert and re-arm,
//! so equal deadlines fire first-in first-out. A waiting timer sits in one of three places:
//!
//! * **the run**: a doubly linked list, sorted, that only ever grows at its tail. A timer whose
//!   deadline is at or after the run's last one is appended in O(1): its sequence is the
//!   newest, so the run stays sorted by `(deadline, sequence)`. With one delay for every
//!   timer (idle timeouts, keep-alives: `call_later(30 s)` and `reset_timer(now + 30 s)` on
//!   each activity), every insert and re-arm is an append, every cancel an unlink, every fire a
//!   pop from the front: libev's "timeout list" trick, done automatically.
//! * **the wheel** ([`wheel`]): timers due after the current 16 µs tick, unsorted, in buckets
//!   of a hierarchical timing wheel (64 buckets a level, ticks of `2^14` ns, nine levels
//!   cover every 64-bit deadline). Insert, cancel and re-arm are list operations. As time
//!   comes, a bucket's timers move down a level, and those of the current tick into the heap
//!   (their closures prefetched on the way, so the pops that follow find them in cache).
//! * **the heap**: the timers of the current tick (and any earlier), in libev's layout: a
//!   4-ary min-heap of 16-byte nodes
//!   (deadline and slot index, four children in one cache line). Nodes compare by deadline (one
//!   64-bit compare); the sequence, kept beside the slot, is read only on equal deadlines.
//!   Removal (cancel, fire) is bottom-up: the hole left by the removed node walks down to a
//!   leaf along the smaller children (three compares per level instead of four) and the heap's
//!   last node is sifted up from there, usually not at all.
//!
//! A table for at most [`WHEEL_ABOVE`] timers has neither the wheel nor the run (constants on
//! `T`, so none of their code is compiled in): every waiting timer is in the heap, which is
//! then at most four levels deep. Same order, same outcomes; only where a timer waits
//! differs.
//!
//! The next timer is the smaller of the heap's root and the run's head, once the wheel has
//! handed over every timer before it (each pop first advances the wheel that far). Each
//! timer's position (heap index, "in the run" or "in the wheel") is kept, so cancellation is a real removal, never a dead entry
//! left for later (ARCHITECTURE.md, "Traps").
//!
//! Per-timer state is split by how hot it is: `meta` (generation and position, 8 bytes: read by
//! every handle operation, written by every heap move), `seq` (8 bytes: the sequence and the
//! "closure needs drop" bit: ties, fire and cancel), `link` (the run's or the wheel's deadline
//! and neighbours, 16 bytes) and the closures. A cancel touches the closure only
//! when it has drop glue: one without is left in its slot unread (dropping it would do
//! nothing). Slots are
//! handed out last-freed first (the free list threads through `meta`), and from index 0
//! upwards again whenever the table empties, so a table that is filled, drained and refilled
//! stays dense instead of scattering over memory.
//!
//! A timer that is due is popped but keeps its slot while its closure runs, so the closure may
//! re-arm itself (periodic callbacks) under the same handle, or cancel itself.
//!
//! All-zero bytes are the empty table (generation 0 is even: free), so a table for 10^6
//! timers is made by zeroing memory in place.

use core::mem::MaybeUninit;

use crate::raw::inline_fn::InitInPlace;
use crate::raw::zeroed::ZeroInit;
use crate::time::Instant;

/// Identifies a scheduled timer. Cancelling a handle that has fired or was cancelled is a
/// no-op, even if its slot has since been reused.
///
/// # Examples
///
/// ```
/// use core::time::Duration;
/// use loop_core::{sim::SimPoller, EventLoop, TimerHandle};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// let first: TimerHandle = lp.call_later(Duration::from_secs(1), |_| {})?;
/// assert!(lp.remove_timeout(first));
/// // The freed slot is reused, but the old handle names nothing any more.
/// let second = lp.call_later(Duration::from_secs(1), |_| {})?;
/// assert_ne!(first, second);
/// assert!(!lp.remove_timeout(first));
/// assert!(lp.timer_pending(second));
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

impl TimerHandle {
    /// A handle that names no timer (generation 0 is never a live slot's).
    pub(crate) const NONE: TimerHandle = TimerHandle {
        index: u32::MAX,
        generation: 0,
    };
}

/// Positions below these are heap positions.
const RUNNING: u32 = u32::MAX;
const CANCELLED_WHILE_RUNNING: u32 = u32::MAX - 1;
/// Waiting in the run (the sorted list), not in the heap.
const IN_RUN: u32 = u32::MAX - 2;
/// Popped by [`TimerHeap::pop_due_slot`], its closure still in the slot until
/// [`TimerHeap::take_running`] (called right after: no other operation sees this state).
const POPPED: u32 = u32::MAX - 3;
/// Waiting in the wheel (see [`wheel`]), not in the heap.
const IN_WHEEL: u32 = u32::MAX - 4;

/// "No slot" in the run's links and the free list, which store `index + 1`.
const NIL: u32 = 0;

/// A heap entry: the deadline cached next to the slot it belongs to, so comparisons stay in
/// the heap array unless two deadlines are equal.
#[derive(Clone, Copy)]
struct Node {
    deadline: u64,
    slot: u32,
}

/// Per-slot handle state. `generation` is odd while the slot is live (scheduled or running)
/// and even while it is free, so a handle (always odd) matches only a live slot.
#[derive(Clone, Copy)]
struct Meta {
    generation: u32,
    /// Live: heap position, [`IN_RUN`], [`POPPED`], [`RUNNING`] or
    /// [`CANCELLED_WHILE_RUNNING`].
    /// Free: the next free slot + 1, or [`NIL`].
    pos: u32,
}

/// In a live slot's `seq` (whose low 63 bits are the sequence taken at its last insert or
/// re-arm: equal deadlines fire in its order): the slot's closure must be dropped (else a
/// cancel forgets it in place).
/// Sequences stay below it: one per insert or re-arm, 2^63 of them.
const NEEDS_DROP: u64 = 1 << 63;

/// A run member's deadline and neighbours (`index + 1`, [`NIL`] at the ends).
#[derive(Clone, Copy)]
struct Link {
    deadline: u64,
    prev: u32,
    next: u32,
}

/// The heap array, placed so that every group of four siblings (positions `4p + 1` to
/// `4p + 4`) fills exactly one 64-byte cache line: a sift reads one line per level.
#[repr(C, align(64))]
struct Nodes<const T: usize> {
    _pad: [u8; 48],
    nodes: [Node; T],
}

/// The closures, one per slot, starting on a cache line: a 64-byte closure (the loop's) is
/// then one line, not two.
#[repr(C, align(64))]
struct Closures<F, const T: usize>([MaybeUninit<F>; T]);

pub(crate) struct TimerHeap<F, const T: usize> {
    heap: Nodes<T>,
    meta: [Meta; T],
    /// Live slots: sequence | [`NEEDS_DROP`].
    seq: [u64; T],
    /// Run members' and wheel members' links, then the wheel's list heads.
    links: wheel::Links<T>,
    /// The wheel in front of the heap: far timers, unsorted, in buckets (see [`wheel`]).
    wheel: wheel::Wheel,
    /// Initialised exactly for live slots whose timer is waiting (not running).
    fns: Closures<F, T>,
    /// Nodes in the heap.
    len: u32,
    /// Live slots (waiting or running).
    live: u32,
    /// Timers in the run.
    run_len: u32,
    /// First and last run member, `index + 1` or [`NIL`].
    run_head: u32,
    run_tail: u32,
    /// Last freed slot + 1, or [`NIL`].
    free_head: u32,
    /// Slots at and above this index are free and not on the free list.
    fresh: u32,
    next_seq: u64,
}

// SAFETY: all-zero is the empty table: no heap node or run member in use, every generation 0
// (even: free), an empty free list with every slot fresh, and `fns` is `MaybeUninit`, never
// read for a free slot. Such a table owns no closure.
unsafe impl<F, const T: usize> ZeroInit for TimerHeap<F, T> {}

const ARITY: usize = 4;

/// Ask for the cache line holding `p` (a hint: it never faults, whatever the address), so
/// that independent misses of one operation overlap instead of queueing.
#[inline(always)]
fn prefetch<X>(p: *const X) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `prefetcht0` has no architectural effect and does not fault on any address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// What [`TimerHeap::cancel_hinted`] did.
pub(crate) enum Cancel<F> {
    /// The handle names no pending timer (fired, cancelled, never issued, or a running timer
    /// already cancelled): nothing changed.
    NotPending,
    /// The timer is running right now: it is freed as soon as its closure returns instead of
    /// being re-armed.
    Running,
    /// The timer was waiting and is gone; its closure needed no drop (it was inserted so).
    Removed,
    /// The timer was waiting and is gone; here is its closure, for the caller to drop.
    RemovedWith(F),
}

#[cfg(test)]
impl<F> Cancel<F> {
    /// The closure handed back, if any.
    pub(crate) fn removed(self) -> Option<F> {
        match self {
            Cancel::RemovedWith(f) => Some(f),
            _ => None,
        }
    }
}

/// What [`TimerHeap::cancel_quick`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quick {
    /// As [`Cancel::NotPending`].
    NotPending,
    /// As [`Cancel::Running`].
    Running,
    /// As [`Cancel::Removed`].
    Removed,
    /// Nothing changed: the timer is waiting and its closure needs a drop.
    NeedsDrop,
}

/// What a timer closure asks for after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Next {
    /// Free the timer.
    #[default]
    Done,
    /// Run again at this deadline, under the same handle.
    At(Instant),
}

/// Tables for at most this many timers have no wheel and no run: every waiting timer is in the
/// heap. With so few timers the heap is at most four levels deep, so the wheel and the run
/// would only add work (and code: a small loop's binary links none of it).
pub(crate) const WHEEL_ABOVE: usize = 64;

impl<F, const T: usize> TimerHeap<F, T> {
    /// Whether this table puts far timers in the wheel (`T` above [`WHEEL_ABOVE`]); a
    /// constant, so a table without one compiles none of the wheel's code.
    pub(super) const WHEEL: bool = T > WHEEL_ABOVE;

    /// Whether this table appends timers that go last to the run (`T` above [`WHEEL_ABOVE`],
    /// as for the wheel); a smaller table keeps every timer in the heap.
    pub(super) const RUN: bool = T > WHEEL_ABOVE;

    /// [`prefetch`] for a table too large to stay in the cache (one with a wheel); a smaller
    /// one (at most [`WHEEL_ABOVE`] timers) is cache-resident while in use, and the hints
    /// would only cost instructions.
    #[inline(always)]
    fn hint<X>(p: *const X) {
        if Self::WHEEL {
            prefetch(p);
        }
    }

    /// Compile-time guard: positions, markers and `index + 1` must fit in a `u32`.
    /// (The wheel's sentinels are link indices from `T`, below `IN_WHEEL` too.)
    const CAPACITY_FITS: () = assert!(
        T + wheel::BUCKETS < IN_WHEEL as usize,
        "timer capacity must be below 2^32 - 600"
    );

    /// Number of live timers (scheduled or running).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.live as usize
    }

    /// Number of timers waiting (in the heap or the run).
    #[inline]
    pub(crate) fn scheduled(&self) -> usize {
        let run = if Self::RUN { self.run_len } else { 0 };
        (self.len + run + self.wheel_len()) as usize
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

    /// `(deadline, sequence)` order; the sequence is read only on equal deadlines.
    #[inline(always)]
    fn less(&self, a: Node, b: Node) -> bool {
        if a.deadline != b.deadline {
            a.deadline < b.deadline
        } else {
            self.seq_of(a.slot) < self.seq_of(b.slot)
        }
    }

    /// The sequence of a live slot.
    #[inline(always)]
    fn seq_of(&self, slot: u32) -> u64 {
        debug_assert!((slot as usize) < T);
        // SAFETY: slots are only ever handed out below `T` (`alloc`), and only live slots'
        // sequences are read (heap nodes and run members name live slots).
        unsafe { *self.seq.get_unchecked(slot as usize) & !NEEDS_DROP }
    }

    /// Give a live slot a fresh sequence, keeping its needs-drop bit.
    #[inline(always)]
    fn stamp(&mut self, slot: u32) {
        let seq = self.take_seq();
        debug_assert!((slot as usize) < T);
        // SAFETY: only live slots, below `T`, are stamped.
        let s = unsafe { self.seq.get_unchecked_mut(slot as usize) };
        *s = (*s & NEEDS_DROP) | seq;
    }

    /// The heap node at `pos`.
    ///
    /// # Safety
    /// `pos < self.len` (which is at most `T`).
    #[inline(always)]
    unsafe fn node(&self, pos: usize) -> Node {
        debug_assert!(pos < self.len as usize);
        // SAFETY: `pos < len <= T` (the caller's promise).
        unsafe { *self.heap.nodes.get_unchecked(pos) }
    }

    /// Put `node` at heap position `pos` and record the position in its slot.
    ///
    /// # Safety
    /// `pos < T` and `node.slot` is a live slot (below `T`).
    #[inline(always)]
    unsafe fn put(&mut self, pos: usize, node: Node) {
        debug_assert!(pos < T && (node.slot as usize) < T);
        // SAFETY: both indices are below `T` (the caller's promise).
        unsafe {
            *self.heap.nodes.get_unchecked_mut(pos) = node;
            self.meta.get_unchecked_mut(node.slot as usize).pos = pos as u32;
        }
    }

    /// The smaller of the children starting at `first`, of a heap `len` long.
    ///
    /// # Safety
    /// `first < len <= self.len`.
    #[inline(always)]
    unsafe fn min_child(&self, first: usize, len: usize) -> usize {
        if first + ARITY <= len {
            // SAFETY: `first + 3 < len <= self.len` (checked above, and the caller's promise).
            unsafe { self.min4(first) }
        } else {
            let mut best = first;
            for c in first + 1..len {
                // SAFETY: `c < len <= self.len` and `best < len`.
                if unsafe { self.less(self.node(c), self.node(best)) } {
                    best = c;
                }
            }
            best
        }
    }

    /// The smallest of the four children starting at `first`.
    ///
    /// # Safety
    /// `first + 3 < self.len`.
    #[inline(always)]
    unsafe fn min4(&self, first: usize) -> usize {
        // Deadlines only, branch-free; equal deadlines (rare outside the run) take the exact
        // path below.
        // SAFETY: `first + 3 < self.len <= T` (the caller's promise).
        let d = |i: usize| unsafe { self.heap.nodes.get_unchecked(first + i).deadline };
        let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
        let a = (d1 < d0) as usize;
        let da = if d1 < d0 { d1 } else { d0 };
        let b = 2 + (d3 < d2) as usize;
        let db = if d3 < d2 { d3 } else { d2 };
        let tie = (d0 == d1) as u8 | (d2 == d3) as u8 | (da == db) as u8;
        if tie == 0 {
            return first + if db < da { b } else { a };
        }
        // SAFETY: as above.
        let c = |i: usize| unsafe { self.node(first + i) };
        let a = if self.less(c(1), c(0)) { 1 } else { 0 };
        let b = if self.less(c(3), c(2)) { 3 } else { 2 };
        first + if self.less(c(b), c(a)) { b } else { a }
    }

    /// Move `node` up from `pos` (no higher than `top`) to its place.
    ///
    /// # Safety
    /// `top <= pos < self.len` and `node.slot` is live.
    #[inline(always)]
    unsafe fn sift_up_from(&mut self, mut pos: usize, top: usize, node: Node) {
        while pos > top {
            let parent = (pos - 1) / ARITY;
            // SAFETY: `parent < pos < self.len`.
            let p = unsafe { self.node(parent) };
            if !self.less(node, p) {
                break;
            }
            // SAFETY: `pos < self.len <= T` and `p` is a heap node (live slot).
            unsafe { self.put(pos, p) };
            pos = parent;
        }
        // SAFETY: `pos < self.len <= T`, `node.slot` live (the caller's promise).
        unsafe { self.put(pos, node) };
    }

    /// Move `node` down from `pos` to its place (stops as soon as no child is smaller).
    ///
    /// # Safety
    /// `pos < self.len` and `node.slot` is live.
    unsafe fn sift_down_from(&mut self, mut pos: usize, node: Node) {
        let len = self.len as usize;
        loop {
            let first = ARITY * pos + 1;
            if first >= len {
                break;
            }
            // SAFETY: `first < len`.
            let best = unsafe { self.min_child(first, len) };
            // SAFETY: `best < len`.
            let b = unsafe { self.node(best) };
            if !self.less(b, node) {
                break;
            }
            // SAFETY: `pos < len <= T`, `b` is a heap node.
            unsafe { self.put(pos, b) };
            pos = best;
        }
        // SAFETY: `pos < len <= T`, `node.slot` live (the caller's promise).
        unsafe { self.put(pos, node) };
    }

    /// Remove the node at `pos` (bottom-up: the hole goes down to a leaf along the smaller
    /// children, then the last node is sifted up into it).
    ///
    /// # Safety
    /// `pos < self.len`.
    unsafe fn remove_at(&mut self, pos: usize) {
        self.len -= 1;
        let len = self.len as usize;
        if pos == len {
            return;
        }
        // Every access below: positions are below the old length, which is at most `T`;
        // `len` is the old last position, still holding a valid node.
        // SAFETY: `len` < old length <= `T`, a valid node (see above).
        let moved = unsafe { *self.heap.nodes.get_unchecked(len) };
        // Both are needed later whatever the path: the slot of the node that moves (its
        // position is written last) and the first children of `pos`. Start their misses now,
        // beside the parent's below.
        Self::hint(self.meta.as_ptr().wrapping_add(moved.slot as usize));
        Self::hint(self.heap.nodes.as_ptr().wrapping_add(ARITY * pos + 1));
        // SAFETY: `0 < pos < len`, so its parent is a heap position below `len`.
        if pos > 0 && self.less(moved, unsafe { self.node((pos - 1) / ARITY) }) {
            // SAFETY: `pos < len <= T`; `moved` is a valid node whose slot is live.
            unsafe { self.sift_up_from(pos, 0, moved) };
            return;
        }
        let mut hole = pos;
        // Full groups of four children.
        loop {
            let first = ARITY * hole + 1;
            if first + ARITY > len {
                break;
            }
            // The next level's candidates: the children of these four siblings are 16
            // consecutive nodes (four cache lines). Asking for all four now overlaps the next
            // level's miss with this level's compares; the hole always goes to the bottom.
            // (Past the end of the heap, or of the array, a prefetch is a no-op.)
            let grand = self.heap.nodes.as_ptr().wrapping_add(ARITY * first + 1);
            for k in 0..ARITY {
                Self::hint(grand.wrapping_add(ARITY * k));
            }
            // SAFETY: `first + 3 < len <= self.len`: the children are heap positions.
            let best = unsafe { self.min4(first) };
            // SAFETY: `hole < best < len <= T`, both heap positions; `best` holds a valid node.
            unsafe { self.put(hole, self.node(best)) };
            hole = best;
        }
        // At most one group of fewer than four, the heap's last: its members have no
        // children (the first child of `len - 3` is past `len`).
        let first = ARITY * hole + 1;
        if first < len {
            // SAFETY: `first < len`, as `min_child` needs.
            let best = unsafe { self.min_child(first, len) };
            // SAFETY: `hole < best < len <= T`, both heap positions; `best` holds a valid node.
            unsafe { self.put(hole, self.node(best)) };
            hole = best;
        }
        // SAFETY: `pos <= hole < len <= T`; `moved` is a valid node whose slot is live.
        unsafe { self.sift_up_from(hole, pos, moved) };
    }

    /// The link of slot `slot`.
    ///
    /// # Safety
    /// `slot < T` (every slot the table hands out is).
    #[inline(always)]
    unsafe fn link(&self, slot: u32) -> Link {
        debug_assert!((slot as usize) < T);
        // SAFETY: `slot < T` (the caller's promise).
        unsafe { *self.links.slots.get_unchecked(slot as usize) }
    }

    /// [`link`](Self::link), to write.
    ///
    /// # Safety
    /// As [`link`](Self::link).
    #[inline(always)]
    unsafe fn link_mut(&mut self, slot: u32) -> &mut Link {
        debug_assert!((slot as usize) < T);
        // SAFETY: `slot < T` (the caller's promise).
        unsafe { self.links.slots.get_unchecked_mut(slot as usize) }
    }

    /// Append live slot `slot` to the run.
    #[inline]
    fn run_push(&mut self, slot: u32, deadline: u64) {
        let tail = self.run_tail;
        // SAFETY: `slot` is live: below `T`.
        unsafe {
            *self.link_mut(slot) = Link {
                deadline,
                prev: tail,
                next: NIL,
            }
        };
        match tail {
            NIL => self.run_head = slot + 1,
            // SAFETY: a non-empty run's tail (`t - 1`) is a live slot, below `T`.
            t => unsafe { self.link_mut(t - 1) }.next = slot + 1,
        }
        debug_assert!((slot as usize) < T);
        // SAFETY: `slot` is live: below `T`.
        unsafe { self.meta.get_unchecked_mut(slot as usize) }.pos = IN_RUN;
        self.run_tail = slot + 1;
        self.run_len += 1;
    }

    /// Take `slot` out of the run.
    #[inline]
    fn run_unlink(&mut self, slot: u32) {
        let Link { prev, next, .. } = self.links.slots[slot as usize];
        match prev {
            NIL => self.run_head = next,
            p => self.links.slots[(p - 1) as usize].next = next,
        }
        match next {
            NIL => self.run_tail = prev,
            n => self.links.slots[(n - 1) as usize].prev = prev,
        }
        self.run_len -= 1;
    }

    /// Re-arm run member `slot` at `deadline` in place when it goes last (the common case
    /// of one delay for every timer: the re-armed timer moves to the run's tail, with a fresh
    /// sequence). `false`, with nothing changed, when it does not go last.
    #[inline(always)]
    fn run_requeue(&mut self, slot: u32, deadline: u64) -> bool {
        // Every link read or written below is a run member's: `slot`, its neighbours
        // (`prev - 1`, `next - 1`) and the tail (`tail - 1`), each read only when not NIL.
        // Run members are live slots, below `T`.
        let tail = self.run_tail;
        let me = slot + 1;
        // SAFETY: a run member (above).
        let Link { prev, next, .. } = unsafe { self.link(slot) };
        if tail == me {
            // Already last: it stays last if it does not go before its predecessor.
            if prev != NIL {
                // SAFETY: a run member, not NIL (above).
                let before = unsafe { self.link(prev - 1) }.deadline;
                if deadline < before {
                    return false;
                }
            }
            // SAFETY: a run member (above).
            unsafe { self.link_mut(slot) }.deadline = deadline;
        } else {
            // `tail` is another member (the run holds `slot`, so it is not empty), and `next`
            // is not NIL (`slot` is not last).
            if tail == NIL || next == NIL {
                return false;
            }
            // SAFETY: a run member, not NIL (above).
            if deadline < unsafe { self.link(tail - 1) }.deadline {
                return false;
            }
            match prev {
                NIL => self.run_head = next,
                // SAFETY: a run member, not NIL (above).
                p => unsafe { self.link_mut(p - 1) }.next = next,
            }
            // SAFETY: a run member, not NIL (above).
            unsafe { self.link_mut(next - 1) }.prev = prev;
            // SAFETY: a run member (above).
            unsafe {
                *self.link_mut(slot) = Link {
                    deadline,
                    prev: tail,
                    next: NIL,
                }
            };
            // SAFETY: a run member, not NIL (above).
            unsafe { self.link_mut(tail - 1) }.next = me;
            self.run_tail = me;
        }
        self.stamp(slot);
        true
    }

    /// File a live slot with a fresh sequence at `deadline`: appended to the run when it goes
    /// last, else into the heap.
    #[inline]
    fn file(&mut self, slot: u32, deadline: u64) {
        self.stamp(slot);
        self.file_stamped(slot, deadline);
    }

    /// [`file`](Self::file) for a slot whose sequence was just taken.
    #[inline(always)]
    fn file_stamped(&mut self, slot: u32, deadline: u64) {
        let tail = self.run_tail;
        // SAFETY: a non-empty run's tail (`tail - 1`) is a live slot, below `T`.
        if Self::RUN && (tail == NIL || deadline >= unsafe { self.link(tail - 1) }.deadline) {
            self.run_push(slot, deadline);
        } else if self.wheel_takes(deadline) {
            self.wheel_push(slot, deadline);
        } else {
            self.heap_push(slot, deadline);
        }
    }

    /// Put live slot `slot` in the heap at `deadline`. Out of line: one copy for every insert
    /// and re-arm site (the run's append is the inlined fast path).
    #[inline(never)]
    fn heap_push(&mut self, slot: u32, deadline: u64) {
        let pos = self.len as usize;
        self.len += 1;
        // SAFETY: `pos < self.len` now, and `slot` is live.
        unsafe { self.sift_up_from(pos, 0, Node { deadline, slot }) };
    }

    /// A free slot, made live (odd generation), and its new generation; `None` when all `T`
    /// are live.
    #[inline(always)]
    fn alloc(&mut self) -> Option<(u32, u32)> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_FITS;
        // One test for a full table: every slot is live, on the free list, or fresh (at or
        // above `fresh`): `free` puts each freed slot on the list unless it empties the
        // table, which makes every slot fresh again. So with a slot not live, the list or the
        // fresh range has one.
        if self.live as usize >= T {
            return None;
        }
        let slot = if self.free_head != NIL {
            let s = self.free_head - 1;
            debug_assert!((s as usize) < T);
            // SAFETY: the free list holds only slots below `T` (`free` pushes live slots).
            self.free_head = unsafe { self.meta.get_unchecked(s as usize).pos };
            s
        } else {
            self.fresh += 1;
            self.fresh - 1
        };
        debug_assert!((slot as usize) < T);
        // SAFETY: a free-list slot is below `T` (above); a fresh one is below `T` because
        // the table is not full and the free list is empty (see the top).
        let m = unsafe { self.meta.get_unchecked_mut(slot as usize) };
        m.generation = m.generation.wrapping_add(1);
        self.live += 1;
        Some((slot, m.generation))
    }

    /// Free a live slot whose closure is already out. Once no slot is live, slots are handed
    /// out from index 0 again (generations are kept, so old handles stay dead).
    #[inline]
    fn free(&mut self, slot: u32) {
        self.live -= 1;
        let m = &mut self.meta[slot as usize];
        m.generation = m.generation.wrapping_add(1);
        if self.live == 0 {
            self.free_head = NIL;
            self.fresh = 0;
        } else {
            m.pos = self.free_head;
            self.free_head = slot + 1;
        }
    }

    /// The slot's position if `h` names a live slot.
    #[inline]
    fn live_pos(&self, h: TimerHandle) -> Option<u32> {
        let m = self.meta.get(h.index as usize)?;
        (m.generation == h.generation && h.generation & 1 == 1).then_some(m.pos)
    }

    /// Move the closure out of a waiting slot.
    ///
    /// # Safety
    /// `slot` is live and waiting (in the heap or the run), so its closure is initialised; the
    /// caller makes it not waiting (running or free) before the slot is read again.
    #[inline]
    unsafe fn take_fn(&mut self, slot: u32) -> F {
        debug_assert!((slot as usize) < T);
        // SAFETY: the caller guarantees the closure is initialised (so the slot is live, below
        // `T`), and it is read once.
        unsafe { self.fns.0.get_unchecked(slot as usize).assume_init_read() }
    }

    /// Schedule `f` at `deadline`, to be handed back by a cancel; the closure comes back when
    /// the table is full.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, deadline: Instant, f: F) -> Result<TimerHandle, F> {
        self.insert_flagged(deadline, f, true)
    }

    /// Schedule the closure `init` builds at `deadline`, building it straight into its slot
    /// (no copy of the closure through the stack); `init` comes back, unrun, when the table
    /// is full. `needs_drop` as for [`insert_flagged`](Self::insert_flagged).
    #[inline(always)]
    pub(crate) fn insert_in_place<I: InitInPlace<F>>(
        &mut self,
        deadline: Instant,
        init: I,
        needs_drop: bool,
    ) -> Result<TimerHandle, I> {
        let Some((index, generation)) = self.alloc() else {
            return Err(init);
        };
        // SAFETY: `alloc` hands out slots below `T`. `InitInPlace` promises the slot is
        // initialised when `init` returns (it cannot unwind), as a waiting slot's closure is.
        init.init(unsafe { self.fns.0.get_unchecked_mut(index as usize) });
        let seq = self.take_seq();
        // SAFETY: as above.
        unsafe {
            *self.seq.get_unchecked_mut(index as usize) =
                if needs_drop { NEEDS_DROP | seq } else { seq };
        }
        self.file_stamped(index, deadline.as_nanos());
        Ok(TimerHandle { index, generation })
    }

    /// Schedule `f` at `deadline`; the closure comes back when the table is full.
    /// `needs_drop` false says that dropping `f` does nothing (its captures have no drop
    /// glue, though `F` itself may have a `Drop` impl, as `InlineFn` does): a cancel then
    /// leaves it in its slot, unread, and hands nothing back.
    #[inline]
    pub(crate) fn insert_flagged(
        &mut self,
        deadline: Instant,
        f: F,
        needs_drop: bool,
    ) -> Result<TimerHandle, F> {
        let Some((index, generation)) = self.alloc() else {
            return Err(f);
        };
        self.fns.0[index as usize].write(f);
        self.seq[index as usize] = if needs_drop { NEEDS_DROP } else { 0 };
        self.file(index, deadline.as_nanos());
        Ok(TimerHandle { index, generation })
    }

    /// [`cancel_hinted`](Self::cancel_hinted) for every timer whose closure needs no drop
    /// (nothing to hand back, so nothing is moved): [`Quick::NeedsDrop`], with nothing
    /// changed, for a waiting timer whose closure does; cancel that one with `cancel_hinted`.
    #[inline]
    pub(crate) fn cancel_quick(&mut self, h: TimerHandle, any_needs_drop: bool) -> Quick {
        let Some(m) = self.meta.get(h.index as usize) else {
            return Quick::NotPending;
        };
        if m.generation != h.generation || h.generation & 1 == 0 {
            return Quick::NotPending;
        }
        match m.pos {
            RUNNING => {
                self.meta[h.index as usize].pos = CANCELLED_WHILE_RUNNING;
                Quick::Running
            }
            // POPPED: not observable (`take_running` follows `pop_due_slot` at once).
            CANCELLED_WHILE_RUNNING | POPPED => Quick::NotPending,
            p => {
                if any_needs_drop && self.seq[h.index as usize] & NEEDS_DROP != 0 {
                    return Quick::NeedsDrop;
                }
                // SAFETY: `h` names a live slot (its generation matched) that waits at `p` (not
                // running, popped or cancelled: the arms above).
                unsafe { self.unlink_waiting(h.index, p) };
                // The closure is left where it is, unread: forgetting it is what dropping it
                // would do.
                self.free(h.index);
                Quick::Removed
            }
        }
    }

    /// Take waiting slot `slot` out of the structure its position `p` names: the wheel, the
    /// run of equal delays or the heap.
    ///
    /// # Safety
    /// `slot` is live and waiting, and `p` is its position (`IN_WHEEL`, `IN_RUN`, or its
    /// index in the heap).
    #[inline(always)]
    unsafe fn unlink_waiting(&mut self, slot: u32, p: u32) {
        if p == IN_WHEEL {
            // (Only a table with a wheel has timers there.)
            if Self::WHEEL {
                // SAFETY: the slot is in the wheel (its position says so, the caller's
                // promise).
                unsafe { self.wheel_unlink(slot) };
            }
        } else if p == IN_RUN {
            if Self::RUN {
                self.run_unlink(slot);
            }
        } else {
            // SAFETY: a live, waiting slot's heap position is below `self.len`.
            unsafe { self.remove_at(p as usize) };
        }
    }

    /// Cancel `h`: see [`Cancel`] for the outcomes.
    #[cfg(test)]
    pub(crate) fn cancel(&mut self, h: TimerHandle) -> Cancel<F> {
        self.cancel_hinted(h, true)
    }

    /// Cancel `h` (see [`Cancel`] for the outcomes), told whether any live closure may need
    /// a drop: with `any_needs_drop` false (no closure with drop glue was inserted since the table was
    /// last empty of them) the slot's needs-drop bit is not even read.
    #[inline]
    pub(crate) fn cancel_hinted(&mut self, h: TimerHandle, any_needs_drop: bool) -> Cancel<F> {
        let Some(m) = self.meta.get(h.index as usize) else {
            return Cancel::NotPending;
        };
        if m.generation != h.generation || h.generation & 1 == 0 {
            return Cancel::NotPending;
        }
        let p = m.pos;
        if any_needs_drop {
            // The needs-drop bit is read after the removal: start its miss now, to overlap it.
            Self::hint(self.seq.as_ptr().wrapping_add(h.index as usize));
        }
        match p {
            RUNNING => {
                self.meta[h.index as usize].pos = CANCELLED_WHILE_RUNNING;
                Cancel::Running
            }
            // POPPED: not observable (`take_running` follows `pop_due_slot` at once).
            CANCELLED_WHILE_RUNNING | POPPED => Cancel::NotPending,
            p => {
                // SAFETY: `h` names a live slot (its generation matched) that waits at `p` (not
                // running, popped or cancelled: the arms above).
                unsafe { self.unlink_waiting(h.index, p) };
                if any_needs_drop && self.seq[h.index as usize] & NEEDS_DROP != 0 {
                    // SAFETY: the slot is live and was waiting; it is freed right below.
                    let f = unsafe { self.take_fn(h.index) };
                    self.free(h.index);
                    Cancel::RemovedWith(f)
                } else {
                    // A closure without drop glue is left where it is, unread: forgetting it
                    // is what dropping it would do.
                    self.free(h.index);
                    Cancel::Removed
                }
            }
        }
    }

    /// Move a scheduled timer to a new deadline, as if it had just been inserted there (it
    /// goes after timers already due at the same instant). Returns `false` for a handle that
    /// is not waiting.
    ///
    /// The commonest case, a run member that goes to the run's tail again (one delay for
    /// every timer), is inlined; the rest is out of line.
    #[inline(always)]
    pub(crate) fn reset(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        let deadline = deadline.as_nanos();
        let Some(p) = self.live_pos(h) else {
            return false;
        };
        if Self::WHEEL && p == IN_WHEEL {
            return self.reset_in_wheel(h.index, deadline);
        }
        if Self::RUN && p == IN_RUN && self.run_requeue(h.index, deadline) {
            return true;
        }
        self.reset_from(h, p, deadline)
    }

    /// [`reset`](Self::reset) of wheel member `slot`.
    #[inline(never)]
    fn reset_in_wheel(&mut self, slot: u32, deadline: u64) -> bool {
        // SAFETY: the slot is in the wheel (the caller saw its position say so).
        let requeued = unsafe { self.wheel_requeue(slot, deadline) };
        if requeued {
            self.stamp(slot);
        } else {
            // SAFETY: still in the wheel (`wheel_requeue` changed nothing).
            unsafe { self.wheel_unlink(slot) };
            self.file(slot, deadline);
        }
        true
    }

    /// [`reset`](Self::reset) of live slot `h` at position `p`, past the inlined case (a
    /// run member is here because it does not go last).
    #[inline(never)]
    fn reset_from(&mut self, h: TimerHandle, p: u32, deadline: u64) -> bool {
        match Some(p) {
            None | Some(RUNNING | CANCELLED_WHILE_RUNNING | POPPED) => false,
            Some(IN_RUN) => {
                // (Only with a run: without one no position is `IN_RUN`.)
                if !Self::RUN {
                    return false;
                }
                self.run_unlink(h.index);
                self.file(h.index, deadline);
                true
            }
            // (Only with a wheel: without one no position is `IN_WHEEL`.)
            Some(IN_WHEEL) => Self::WHEEL && self.reset_in_wheel(h.index, deadline),
            Some(p) if self.wheel_takes(deadline) => {
                // Far now: out of the heap (which keeps only near timers), into the wheel
                // (or the run).
                // SAFETY: a live, waiting slot's heap position is below `self.len`.
                unsafe { self.remove_at(p as usize) };
                self.file(h.index, deadline);
                true
            }
            Some(p) => {
                self.stamp(h.index);
                let pos = p as usize;
                let node = Node {
                    deadline,
                    slot: h.index,
                };
                // SAFETY: a live, waiting slot's heap position is below `self.len`, and so is
                // its parent's.
                unsafe {
                    if pos > 0 && self.less(node, self.node((pos - 1) / ARITY)) {
                        self.sift_up_from(pos, 0, node);
                    } else {
                        self.sift_down_from(pos, node);
                    }
                }
                true
            }
        }
    }

    /// Whether `h` is scheduled or running (and not cancelled).
    pub(crate) fn is_pending(&self, h: TimerHandle) -> bool {
        self.live_pos(h)
            .is_some_and(|p| p != CANCELLED_WHILE_RUNNING)
    }

    /// Drop every timer (closing the loop). Handles issued before must not be used again
    /// (they stay dead: generations are kept).
    pub(crate) fn clear(&mut self) {
        let fresh = self.fresh as usize;
        // Reset first: if a closure's drop panics, the table is already empty (the rest leak).
        self.len = 0;
        self.live = 0;
        self.run_len = 0;
        self.run_head = NIL;
        self.run_tail = NIL;
        self.free_head = NIL;
        self.fresh = 0;
        self.wheel_clear();
        for i in 0..fresh {
            let m = &mut self.meta[i];
            if m.generation & 1 == 0 {
                continue;
            }
            m.generation = m.generation.wrapping_add(1);
            if m.pos < CANCELLED_WHILE_RUNNING {
                // SAFETY: the slot was live and waiting, so its closure is initialised; the
                // slot is now free (even generation), so it is not dropped again.
                unsafe { self.fns.0[i].assume_init_drop() };
            }
        }
    }

    /// The run's head as a node, if the run is not empty.
    #[inline(always)]
    fn run_first(&self) -> Option<Node> {
        if !Self::RUN {
            return None;
        }
        match self.run_head {
            NIL => None,
            h => Some(Node {
                deadline: self.links.slots[(h - 1) as usize].deadline,
                slot: h - 1,
            }),
        }
    }

    /// The next timer to fire and whether it is the heap's root (else the run's head).
    #[inline(always)]
    fn first(&self) -> Option<(Node, bool)> {
        let run = self.run_first();
        if self.len == 0 {
            return run.map(|n| (n, false));
        }
        let root = self.heap.nodes[0];
        match run {
            Some(r) if self.less(r, root) => Some((r, false)),
            _ => Some((root, true)),
        }
    }

    /// The earliest deadline, if any timer is scheduled.
    #[inline]
    pub(crate) fn peek_deadline(&self) -> Option<Instant> {
        let near = self.near_min();
        let next = if self.settled() {
            near
        } else {
            // Exact all the same: the earliest wheel bucket, walked. The loop peeks right after
            // popping its due timers (a pop advances the wheel), except in an iteration that
            // began with no timer at all: then every wheel member was added in it, and the
            // walk costs at most one step per such timer.
            match (near, self.wheel_min()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        next.map(Instant::from_nanos)
    }

    /// Pop the next timer if it is due at `now` and was scheduled before `seq_limit`. Its
    /// slot stays allocated (marked running) until [`finish`](Self::finish).
    #[inline]
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        seq_limit: u64,
    ) -> Option<(TimerHandle, F, Instant)> {
        let (h, deadline) = self.pop_due_slot(now, seq_limit)?;
        let f = self.take_running(h)?;
        Some((h, f, deadline))
    }

    /// [`pop_due`](Self::pop_due) without moving the closure: take it with
    /// [`take_running`](Self::take_running) right after (the loop moves it once, straight to
    /// where it is called from).
    #[inline]
    pub(crate) fn pop_due_slot(
        &mut self,
        now: Instant,
        seq_limit: u64,
    ) -> Option<(TimerHandle, Instant)> {
        self.note_now(now);
        // The heap's and the run's first, once the wheel has handed over everything before it.
        let (node, in_heap) = loop {
            let first = self.first();
            if self.settled_at(first.map(|(n, _)| n.deadline)) {
                break first?;
            }
            self.advance();
        };
        if node.deadline > now.as_nanos() {
            return None;
        }
        let slot = node.slot as usize;
        Self::hint(self.fns.0.as_ptr().wrapping_add(slot));
        Self::hint(self.meta.as_ptr().wrapping_add(slot));
        // Only a timer filed after the limit was taken has a sequence at or above it: when
        // none was, the sequence need not be read.
        if self.next_seq > seq_limit && self.seq_of(node.slot) >= seq_limit {
            return None;
        }
        if in_heap {
            // SAFETY: the root exists (`first` found the heap non-empty).
            unsafe { self.remove_at(0) };
        } else {
            self.run_unlink(node.slot);
        }
        debug_assert!((node.slot as usize) < T);
        // SAFETY: heap nodes and run members name live slots, below `T`.
        let m = unsafe { self.meta.get_unchecked_mut(node.slot as usize) };
        m.pos = POPPED;
        Some((
            TimerHandle {
                index: node.slot,
                generation: m.generation,
            },
            Instant::from_nanos(node.deadline),
        ))
    }

    /// The closure of a timer just popped by [`pop_due_slot`](Self::pop_due_slot), now marked
    /// running; `None` for any other handle.
    #[inline]
    pub(crate) fn take_running(&mut self, h: TimerHandle) -> Option<F> {
        if self.live_pos(h)? != POPPED {
            return None;
        }
        self.meta[h.index as usize].pos = RUNNING;
        // SAFETY: a popped slot is live and its closure still initialised (pop_due_slot does
        // not read it); it is marked running above, so it is not read again until `finish`
        // writes it back.
        Some(unsafe { self.take_fn(h.index) })
    }

    /// [`pop_due`](Self::pop_due), moving the closure into `out` (the loop's call guard):
    /// the timer is marked running at once.
    #[inline(always)]
    pub(crate) fn pop_due_into(
        &mut self,
        now: Instant,
        seq_limit: u64,
        out: &mut Option<F>,
    ) -> Option<(TimerHandle, Instant)> {
        let (h, deadline) = self.pop_due_slot(now, seq_limit)?;
        debug_assert!((h.index as usize) < T);
        // SAFETY: a popped timer's slot is below `T` (a heap node's or run member's).
        unsafe { self.meta.get_unchecked_mut(h.index as usize) }.pos = RUNNING;
        // SAFETY: just popped: live, its closure still initialised; marked running above, so
        // it is not read again until `finish` writes it back.
        *out = Some(unsafe { self.take_fn(h.index) });
        Some((h, deadline))
    }

    /// Free a timer popped by [`pop_due`](Self::pop_due) whose closure is spent (or was
    /// cancelled while it ran); the caller drops the closure. Does nothing for any other
    /// handle (stale: the table was cleared meanwhile).
    #[inline]
    pub(crate) fn finish_done(&mut self, h: TimerHandle) {
        if let Some(RUNNING | CANCELLED_WHILE_RUNNING) = self.live_pos(h) {
            self.free(h.index);
        }
    }

    /// Settle a timer popped by [`pop_due`](Self::pop_due) after its closure ran: re-arm it at
    /// `next`, or free it (returning the closure to drop) when it asked to stop or was
    /// cancelled while running.
    pub(crate) fn finish(&mut self, h: TimerHandle, f: F, next: Next) -> Option<F> {
        let pos = self.live_pos(h);
        match (pos, next) {
            (Some(RUNNING), Next::At(deadline)) => {
                self.fns.0[h.index as usize].write(f);
                self.file(h.index, deadline.as_nanos());
                None
            }
            (Some(RUNNING | CANCELLED_WHILE_RUNNING), _) => {
                self.free(h.index);
                Some(f)
            }
            // Stale (the table was cleared meanwhile) or not a running timer: not ours.
            _ => Some(f),
        }
    }
}

impl<F, const T: usize> Drop for TimerHeap<F, T> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests;
mod wheel;
