//! fd number → handler slot, in a fixed open-addressing table.
//!
//! Capacity `H` handlers get `2·H` positions (an array of `H` two-entry buckets, since const
//! generics cannot say `2 * H`), so the load factor never passes ½ and linear probing stays
//! short. fds are small, dense integers, so the "hash" is the fd itself modulo the table size:
//! consecutive fds land in consecutive positions and never collide until the table wraps.
//! Deletion shifts later entries back (Knuth's algorithm R) instead of leaving tombstones, so
//! a long-running loop never degrades.
//!
//! An entry stores `fd + 1` (0 = empty), so all-zero bytes are an empty index.

use crate::error::RawFd;
use crate::raw::zeroed::ZeroInit;

#[derive(Clone, Copy)]
struct Entry {
    /// `fd + 1`, or 0 for an empty position.
    fd_plus_one: u32,
    slot: u32,
}

/// A position past the end: where [`FdIndex::probe`] finds no room (a zero-capacity table;
/// the loop refuses negative fds before).
const NOWHERE: usize = usize::MAX;

pub(crate) struct FdIndex<const H: usize> {
    buckets: [[Entry; 2]; H],
}

// SAFETY: all-zero entries are empty positions (`fd_plus_one == 0`); plain integers.
unsafe impl<const H: usize> ZeroInit for FdIndex<H> {}

impl<const H: usize> FdIndex<H> {
    const POSITIONS: usize = 2 * H;

    /// Position `pos` of the flat table (the buckets seen as `2·H` entries: one index
    /// computation instead of a bucket and a half).
    #[inline]
    fn at(&self, pos: usize) -> Entry {
        self.buckets.as_flattened()[pos]
    }

    #[inline]
    fn at_mut(&mut self, pos: usize) -> &mut Entry {
        &mut self.buckets.as_flattened_mut()[pos]
    }

    #[inline]
    fn home(fd: RawFd) -> usize {
        fd as u32 as usize % Self::POSITIONS
    }

    /// The slot registered for `fd`.
    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<u32> {
        if H == 0 || fd < 0 {
            return None;
        }
        let want = fd as u32 + 1;
        let mut pos = Self::home(fd);
        // The common case first, without the loop: fds are dense, so `fd` sits at home.
        let e = self.at(pos);
        if e.fd_plus_one == want {
            return Some(e.slot);
        }
        for _ in 0..Self::POSITIONS {
            let e = self.at(pos);
            if e.fd_plus_one == want {
                return Some(e.slot);
            }
            if e.fd_plus_one == 0 {
                return None;
            }
            pos = (pos + 1) % Self::POSITIONS;
        }
        None
    }

    /// One probe for an add: `Err(slot)` if `fd` is recorded, else `Ok(position)`, the
    /// position where [`set`](Self::set) records it (while nothing else changes the index in
    /// between). Saves the second probe of a `get` followed by an `insert`.
    #[inline]
    pub(crate) fn probe(&self, fd: RawFd) -> Result<usize, u32> {
        if H == 0 || fd < 0 {
            return Ok(NOWHERE);
        }
        let want = fd as u32 + 1;
        let mut pos = Self::home(fd);
        for _ in 0..Self::POSITIONS {
            let e = self.at(pos);
            if e.fd_plus_one == want {
                return Err(e.slot);
            }
            if e.fd_plus_one == 0 {
                return Ok(pos);
            }
            pos = (pos + 1) % Self::POSITIONS;
        }
        Ok(NOWHERE)
    }

    /// Record `fd → slot` at the position [`probe`](Self::probe) returned for `fd`. The
    /// caller has checked that fewer than `H` fds are recorded (so the probe found a free
    /// position; [`NOWHERE`] records nothing).
    #[inline]
    pub(crate) fn set(&mut self, pos: usize, fd: RawFd, slot: u32) {
        debug_assert!(fd >= 0 && pos < Self::POSITIONS && self.get(fd).is_none());
        if let Some(e) = self.buckets.as_flattened_mut().get_mut(pos) {
            *e = Entry {
                fd_plus_one: fd as u32 + 1,
                slot,
            };
        }
    }

    /// Record `fd → slot` (tests: the table probes once and [`set`](Self::set)s).
    #[cfg(test)]
    pub(crate) fn insert(&mut self, fd: RawFd, slot: u32) {
        if let Ok(pos) = self.probe(fd) {
            self.set(pos, fd, slot);
        }
    }

    /// Forget `fd`, returning its slot. Inlined: the common case is a few instructions, the
    /// rest is out of line.
    #[inline]
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<u32> {
        if H == 0 || fd < 0 {
            return None;
        }
        let want = fd as u32 + 1;
        let n = Self::POSITIONS;
        let pos = Self::home(fd);
        // The common case first: `fd` at home with nothing after it to shift back.
        let e = self.at(pos);
        if e.fd_plus_one == want && self.at((pos + 1) % n).fd_plus_one == 0 {
            *self.at_mut(pos) = Entry {
                fd_plus_one: 0,
                slot: 0,
            };
            return Some(e.slot);
        }
        self.remove_probing(fd)
    }

    /// [`remove`](Self::remove) past its common case: probe, then shift back.
    #[inline(never)]
    fn remove_probing(&mut self, fd: RawFd) -> Option<u32> {
        let want = fd as u32 + 1;
        let n = Self::POSITIONS;
        let mut pos = Self::home(fd);
        let mut found = None;
        for _ in 0..n {
            let e = self.at(pos);
            if e.fd_plus_one == 0 {
                return None;
            }
            if e.fd_plus_one == want {
                found = Some(e.slot);
                break;
            }
            pos = (pos + 1) % n;
        }
        let slot = found?;
        // Backward-shift deletion: move later members of the probe run into the hole when
        // their home position does not lie (cyclically) between the hole and themselves.
        let mut hole = pos;
        let mut next = (hole + 1) % n;
        loop {
            let e = self.at(next);
            if e.fd_plus_one == 0 {
                break;
            }
            let home = Self::home((e.fd_plus_one - 1) as RawFd);
            let dist_home = (next + n - home) % n;
            let dist_hole = (next + n - hole) % n;
            if dist_home >= dist_hole {
                *self.at_mut(hole) = e;
                hole = next;
            }
            next = (next + 1) % n;
        }
        *self.at_mut(hole) = Entry {
            fd_plus_one: 0,
            slot: 0,
        };
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::zeroed::zeroed;

    #[test]
    fn finds_what_was_inserted_and_forgets_what_was_removed() {
        let mut ix: FdIndex<4> = zeroed();
        ix.insert(3, 30);
        ix.insert(11, 110); // same home as 3 (11 % 8)
        ix.insert(0, 0);
        assert_eq!(ix.get(3), Some(30));
        assert_eq!(ix.get(11), Some(110));
        assert_eq!(ix.get(0), Some(0));
        assert_eq!(ix.get(19), None);
        assert_eq!(ix.remove(3), Some(30));
        assert_eq!(
            ix.get(11),
            Some(110),
            "backward shift keeps the colliding fd reachable"
        );
        assert_eq!(ix.get(3), None);
        assert_eq!(ix.remove(3), None);
        assert_eq!(ix.get(-1), None);
    }

    #[test]
    fn probe_finds_a_recorded_fd_or_the_position_set_records_it_at() {
        let mut ix: FdIndex<4> = zeroed();
        assert_eq!(ix.probe(3), Ok(3), "an empty index: the fd's home");
        ix.set(3, 3, 30);
        assert_eq!(ix.probe(3), Err(30));
        // 11 has the same home (11 % 8): the next free position after it.
        let pos = ix.probe(11).unwrap();
        assert_eq!(pos, 4);
        ix.set(pos, 11, 110);
        assert_eq!((ix.get(3), ix.get(11)), (Some(30), Some(110)));
        assert_eq!(ix.probe(11), Err(110));
        // Removing the first keeps the second reachable (shifted back), and probing agrees.
        assert_eq!(ix.remove(3), Some(30));
        assert_eq!(ix.probe(11), Err(110));
        assert_eq!(ix.probe(3), Ok(4), "3's run now ends after 11");
        assert!(
            ix.probe(-1).is_ok_and(|p| p == NOWHERE),
            "a negative fd: nowhere"
        );
        let empty: FdIndex<0> = zeroed();
        assert_eq!(empty.probe(0), Ok(NOWHERE), "no room at all");
    }

    #[test]
    fn full_load_with_wrapping_collisions_stays_consistent() {
        let mut ix: FdIndex<8> = zeroed();
        let fds = [15, 31, 47, 63, 14, 0, 1, 2];
        for (i, fd) in fds.iter().enumerate() {
            ix.insert(*fd, i as u32);
        }
        for (i, fd) in fds.iter().enumerate() {
            assert_eq!(ix.get(*fd), Some(i as u32));
        }
        for fd in [31, 0, 63] {
            ix.remove(fd);
        }
        for (i, fd) in fds.iter().enumerate() {
            let want = if [31, 0, 63].contains(fd) {
                None
            } else {
                Some(i as u32)
            };
            assert_eq!(ix.get(*fd), want, "fd {fd}");
        }
    }
}
