//! The hierarchical wheel in front of the heap: far timers wait here, unsorted, so that the
//! heap holds only the near ones and stays small (cache-resident) however many timers wait.
//!
//! Deadlines are counted in level-0 ticks of `2^G` ns. Level `l` has 64 buckets of `64^l`
//! ticks each; a timer goes to the level of the highest base-64 digit in which its tick
//! differs from the wheel's current tick `cur`, in the bucket of that digit (the classic
//! hierarchical wheel, as Linux's and tokio's, but in nanoseconds and with 64-bit deadlines
//! covered entirely by `LEVELS` levels: no overflow list). Invariants:
//!
//! * every wheel member's tick is above `cur` (its deadline is at or after `H`, the end of
//!   the current tick), and it sits in the bucket its deadline gives against `cur`;
//! * a timer whose tick is at or below `cur` goes to the heap (or the run) instead.
//!
//! The heap and the run are exact, so their earliest timer is the next to fire whenever it
//! is before `H`. When it is not (or they are empty) and the wheel holds timers, the wheel
//! *advances* (at each pop, [`TimerHeap::advance`]): `cur` jumps to the start of the earliest
//! non-empty bucket, whose timers are refiled: into lower levels, or into the heap once their
//! tick is `cur` (their closures prefetched then: they fire within the batch). Order among
//! equal deadlines is kept by the sequence numbers, which the heap compares once the timers
//! reach it; a bucket's list order does not matter.
//!
//! An empty wheel restarts at the latest time it was told (each pop's `now`, and
//! `call_later`'s base), so the timers of the coming moments land in its lowest levels.
//!
//! Buckets are circular doubly linked lists through the timers' [`Link`]s, each with a
//! sentinel after the `T` slots' links (indices `T..T + BUCKETS`), so unlinking a timer needs
//! neither its bucket nor a branch on the list's ends. A bucket's bit in `occupied` says
//! whether its list is in use: the sentinel's contents are meaningless while the bit is
//! clear, which keeps the all-zero table empty.

use super::{prefetch, Link, Node, TimerHeap, IN_WHEEL};
use crate::time::Instant;

/// A level-0 tick is `2^G` ns (16.4 µs): level 0 spans 1 ms, level 1 67 ms, level 2 4.3 s,
/// level 3 4.6 min (chosen by timing the fire phase at 10^4 to 10^6 timers against 12 and 16).
pub(super) const G: u32 = 14;
/// Buckets per level: one base-64 digit of the tick.
const BITS: u32 = 6;
/// Enough levels for every 64-bit deadline: `64 - G` bits of ticks, 6 per level.
pub(super) const LEVELS: usize = (64 - G as usize).div_ceil(BITS as usize);
/// Buckets in all.
pub(super) const BUCKETS: usize = LEVELS << BITS;

/// The links of the `T` slots, then the wheel buckets' sentinels: one index space, so a list
/// step never asks which of the two it is in.
#[repr(C)]
pub(super) struct Links<const T: usize> {
    pub(super) slots: [Link; T],
    heads: [Link; BUCKETS],
}

impl<const T: usize> Links<T> {
    /// Link `i` of the shared index space (a slot below `T`, a sentinel from `T`).
    ///
    /// # Safety
    /// `i < T + BUCKETS`. (Every index the wheel stores is: slots come from `alloc`, below
    /// `T`, and sentinels are `T + bucket_of(..)`, below `T + BUCKETS`.)
    #[inline(always)]
    unsafe fn at(&mut self, i: u32) -> &mut Link {
        debug_assert!((i as usize) < T + BUCKETS);
        // SAFETY: `Links` is `repr(C)` with two arrays of `Link` and nothing else: the arrays
        // are contiguous (a `Link`'s size is a multiple of its alignment, so no padding sits
        // between them), so the struct is `T + BUCKETS` links in a row, and `i` is below that
        // (the caller's promise). The pointer is derived from `&mut self`, covering the whole
        // struct.
        unsafe { &mut *(self as *mut Self).cast::<Link>().add(i as usize) }
    }

    /// As [`at`](Self::at), shared.
    ///
    /// # Safety
    /// As [`at`](Self::at).
    #[inline(always)]
    unsafe fn get(&self, i: u32) -> Link {
        debug_assert!((i as usize) < T + BUCKETS);
        // SAFETY: as in `at`.
        unsafe { *(self as *const Self).cast::<Link>().add(i as usize) }
    }
}

/// The wheel's state besides the links.
#[derive(Clone, Copy)]
pub(super) struct Wheel {
    /// Non-empty buckets, one bit per bucket, one word per level.
    occupied: [u64; LEVELS],
    /// The current tick (`deadline >> G`): wheel members' ticks are above it.
    cur: u64,
    /// Timers in the wheel.
    pub(super) len: u32,
    /// The latest `now` a pop was asked about: where an empty wheel restarts from.
    pub(super) last_now: u64,
}

/// The bucket (`level * 64 + digit`) of a deadline whose tick is above `cur`.
#[inline(always)]
fn bucket_of(cur: u64, deadline: u64) -> usize {
    let tick = deadline >> G;
    // `| 1`: never zero (the tick is above `cur`, so they differ; this only keeps the
    // arithmetic total).
    let differ = (tick ^ cur) | 1;
    let level = (63 - differ.leading_zeros()) / BITS;
    let digit = (tick >> (level * BITS)) & 63;
    ((level as usize) << BITS) | digit as usize
}

impl<F, const T: usize> TimerHeap<F, T> {
    /// Timers in the wheel.
    #[inline(always)]
    pub(super) fn wheel_len(&self) -> u32 {
        if Self::WHEEL {
            self.wheel.len
        } else {
            0
        }
    }

    /// Tell the wheel what time it is (a hint: where an empty wheel restarts from).
    #[inline(always)]
    pub(crate) fn note_now(&mut self, now: Instant) {
        if Self::WHEEL {
            self.wheel.last_now = now.as_nanos();
        }
    }

    /// Whether a deadline belongs to the wheel (its tick is past the current one). An empty
    /// wheel first restarts at the latest `now` seen, so that it serves the timers of the
    /// coming moments however far it had advanced (or not) before.
    #[inline(always)]
    pub(super) fn wheel_takes(&mut self, deadline: u64) -> bool {
        if !Self::WHEEL {
            return false;
        }
        if self.wheel.len == 0 {
            self.wheel.cur = self.wheel.last_now >> G;
        }
        deadline >> G > self.wheel.cur
    }

    /// Put live slot `slot` in the wheel at `deadline` (whose tick is above the current one).
    #[inline(always)]
    pub(super) fn wheel_push(&mut self, slot: u32, deadline: u64) {
        debug_assert!((slot as usize) < T);
        // SAFETY: `slot` is a live slot, below `T`.
        unsafe { self.wheel_link(slot, deadline, bucket_of(self.wheel.cur, deadline)) };
        self.wheel.len += 1;
        self.meta[slot as usize].pos = IN_WHEEL;
    }

    /// Append `slot` to bucket `b`'s list (its position and the count are the caller's).
    ///
    /// # Safety
    /// `slot < T` and `b < BUCKETS`.
    #[inline(always)]
    unsafe fn wheel_link(&mut self, slot: u32, deadline: u64, b: usize) {
        let sentinel = (T + b) as u32;
        let (level, bit) = (b >> BITS, 1u64 << (b & 63));
        let occupied = &mut self.wheel.occupied[level];
        // SAFETY: `slot < T` and `sentinel < T + BUCKETS` (the caller's promise); `tail`, a
        // sentinel's neighbour in a list in use, is a slot or that sentinel.
        unsafe {
            if *occupied & bit == 0 {
                *occupied |= bit;
                *self.links.at(sentinel) = Link {
                    deadline: 0,
                    prev: slot,
                    next: slot,
                };
                *self.links.at(slot) = Link {
                    deadline,
                    prev: sentinel,
                    next: sentinel,
                };
            } else {
                let tail = self.links.get(sentinel).prev;
                *self.links.at(slot) = Link {
                    deadline,
                    prev: tail,
                    next: sentinel,
                };
                self.links.at(tail).next = slot;
                self.links.at(sentinel).prev = slot;
            }
        }
    }

    /// Take wheel member `slot` out of its bucket (the count is the caller's).
    ///
    /// # Safety
    /// `slot` is a wheel member (so below `T`, and its neighbours are slots or its bucket's
    /// sentinel).
    #[inline(always)]
    unsafe fn wheel_detach(&mut self, slot: u32) {
        // SAFETY: `slot` and its neighbours are in the index space (the caller's promise).
        unsafe {
            let Link { prev, next, .. } = self.links.get(slot);
            self.links.at(prev).next = next;
            self.links.at(next).prev = prev;
            if prev == next && prev as usize >= T {
                // The sentinel's own neighbours: the bucket is empty now.
                let b = prev as usize - T;
                self.wheel.occupied[b >> BITS] &= !(1u64 << (b & 63));
            }
        }
    }

    /// Take wheel member `slot` out of the wheel.
    ///
    /// # Safety
    /// `slot` is a wheel member (its position is [`IN_WHEEL`]).
    #[inline(always)]
    pub(super) unsafe fn wheel_unlink(&mut self, slot: u32) {
        // SAFETY: the caller's promise.
        unsafe { self.wheel_detach(slot) };
        self.wheel.len -= 1;
    }

    /// Re-arm wheel member `slot` at `deadline` within the wheel: in place when the bucket
    /// stays the same (only its deadline changes), else moved to its new bucket. The caller
    /// stamps the new sequence. `false`, with nothing changed, when `deadline` is not for the
    /// wheel any more (its tick is the current one or before).
    ///
    /// # Safety
    /// `slot` is a wheel member (its position is [`IN_WHEEL`]).
    #[inline(always)]
    pub(super) unsafe fn wheel_requeue(&mut self, slot: u32, deadline: u64) -> bool {
        let cur = self.wheel.cur;
        if deadline >> G <= cur {
            return false;
        }
        let b = bucket_of(cur, deadline);
        let link = &mut self.links.slots[slot as usize];
        let old = link.deadline;
        if b == bucket_of(cur, old) {
            link.deadline = deadline;
        } else {
            // SAFETY: `slot` is a wheel member (the caller's promise), below `T`, and
            // `b < BUCKETS`.
            unsafe {
                self.wheel_detach(slot);
                self.wheel_link(slot, deadline, b);
            }
        }
        true
    }

    /// The earliest deadline of the heap and the run.
    #[inline(always)]
    pub(super) fn near_min(&self) -> Option<u64> {
        let run = self.run_first().map(|n| n.deadline);
        let root = (self.len > 0).then(|| self.heap.nodes[0].deadline);
        match (run, root) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the heap and the run hold the next timer: the wheel is empty, or their
    /// earliest timer is before every wheel member.
    #[inline(always)]
    pub(super) fn settled(&self) -> bool {
        self.settled_at(self.near_min())
    }

    /// [`settled`](Self::settled), given the earliest deadline of the heap and the run.
    #[inline(always)]
    pub(super) fn settled_at(&self, near: Option<u64>) -> bool {
        self.wheel_len() == 0 || near.is_some_and(|d| d >> G <= self.wheel.cur)
    }

    /// The earliest non-empty bucket after the current tick: `(level, digit)`.
    #[inline]
    fn next_bucket(&self) -> Option<(usize, u32)> {
        let cur = self.wheel.cur;
        for (level, &occupied) in self.wheel.occupied.iter().enumerate() {
            let digit = (cur >> (level as u32 * BITS)) & 63;
            // Buckets after the current digit (the current one is empty at every level: its
            // timers would be at a lower level, or in the heap).
            let after = occupied & ((u64::MAX << digit) << 1);
            if after != 0 {
                return Some((level, after.trailing_zeros()));
            }
        }
        None
    }

    /// Jump to the earliest non-empty bucket and refile its timers (into lower levels, or
    /// into the heap once their tick is the current one).
    #[cold]
    #[inline(never)]
    pub(super) fn advance(&mut self) {
        let Some((level, digit)) = self.next_bucket() else {
            // Not reached: `occupied` is exact, so a non-empty wheel has a next bucket. Keep
            // the count honest rather than loop.
            self.wheel.len = 0;
            return;
        };
        let shift = (level as u32 + 1) * BITS;
        let high = self.wheel.cur.checked_shr(shift).unwrap_or(0);
        let high = high.checked_shl(shift).unwrap_or(0);
        self.wheel.cur = high | (u64::from(digit) << (level as u32 * BITS));
        let b = (level << BITS) | digit as usize;
        self.wheel.occupied[level] &= !(1u64 << digit);
        let sentinel = (T + b) as u32;
        let cur = self.wheel.cur;
        // The list is walked from both ends at once: two independent chains of loads instead
        // of one, so two misses are in flight (the order does not matter: the heap and the
        // lower buckets sort it out). The members still to refile are `a` to `b` along the
        // list.
        // Every `get` below: the sentinel is below `T + BUCKETS` (`b < BUCKETS`); the list's
        // members are slots (below `T`) linked in a circle back to it, and refiling one
        // rewrites only its own link and another bucket's list.
        // SAFETY: see above.
        let head = unsafe { self.links.get(sentinel) };
        let (mut a, mut b) = (head.next, head.prev);
        loop {
            // SAFETY: see above.
            let la = unsafe { self.links.get(a) };
            if a == b {
                self.refile(a, la.deadline, cur);
                break;
            }
            // SAFETY: see above.
            let lb = unsafe { self.links.get(b) };
            self.refile(a, la.deadline, cur);
            self.refile(b, lb.deadline, cur);
            if la.next == b {
                break;
            }
            (a, b) = (la.next, lb.prev);
        }
    }

    /// Refile `slot`, a member of the bucket just reached (tick `cur` at its level): into the
    /// heap once its tick is the current one, else into a lower level.
    #[inline(always)]
    fn refile(&mut self, slot: u32, deadline: u64, cur: u64) {
        if deadline >> G <= cur {
            // Into the heap: it fires within this tick's batch, so start fetching its
            // closure now (a hint), well before the pop that needs it.
            prefetch(self.fns.0.as_ptr().wrapping_add(slot as usize));
            self.wheel.len -= 1;
            let pos = self.len as usize;
            self.len += 1;
            // SAFETY: `pos < self.len <= T` (every timer in the heap is live, at most `T`),
            // and `slot` is a live slot (a wheel member).
            unsafe { self.sift_up_from(pos, 0, Node { deadline, slot }) };
        } else {
            // SAFETY: `slot` is a slot (below `T`), and the bucket is below `BUCKETS`.
            unsafe { self.wheel_link(slot, deadline, bucket_of(cur, deadline)) };
        }
    }

    /// The earliest wheel deadline, found without moving anything (the earliest non-empty
    /// bucket walked): for a peek at a wheel that was not advanced since timers were added.
    #[cold]
    #[inline(never)]
    pub(super) fn wheel_min(&self) -> Option<u64> {
        let (level, digit) = self.next_bucket()?;
        let sentinel = (T + ((level << BITS) | digit as usize)) as u32;
        // Both `get`s: the sentinel is below `T + BUCKETS`, and its list's members are
        // slots, below `T`, linked in a circle back to it.
        // SAFETY: see above.
        let mut i = unsafe { self.links.get(sentinel) }.next;
        let mut min = u64::MAX;
        while i != sentinel {
            // SAFETY: see above.
            let l = unsafe { self.links.get(i) };
            min = min.min(l.deadline);
            i = l.next;
        }
        Some(min)
    }

    /// Forget every wheel member (the table is being cleared).
    #[inline]
    pub(super) fn wheel_clear(&mut self) {
        self.wheel = Wheel {
            occupied: [0; LEVELS],
            cur: 0,
            len: 0,
            last_now: 0,
        };
    }
}
