//! A fixed-capacity slab with generation-tagged slots.
//!
//! Handles are `(index, generation)`. Removing a value bumps its slot's generation, so a handle
//! to a removed value can never reach the value that reuses the slot: this is what makes stale
//! poller events and stale timer handles harmless.
//!
//! Storage is `[MaybeUninit<Entry>; N]` with a high-water mark: entries below `hwm` are
//! initialised, the rest have never been touched. All-zero bytes are an empty slab (the free
//! list stores `index + 1`, 0 meaning none), so a slab of 10^6 slots can be made by zeroing
//! memory in place (`zeroed.rs`) without ever passing through the stack.

use core::mem::MaybeUninit;

use crate::raw::zeroed::ZeroInit;

/// "No slot" in the free list, which stores `index + 1`.
const NONE: u32 = 0;

/// A slot: a generation and either a value or the next free slot. `repr(C)`: the generation
/// (read first by every lookup) sits right before the value's first bytes.
#[repr(C)]
struct Entry<T> {
    generation: u32,
    /// A word for the slab's user, kept across removal (it fills what would be padding next to
    /// `generation` for the handler table's slots).
    tag: u32,
    state: State<T>,
}

enum State<T> {
    Occupied(T),
    /// `next_free` is the next vacant index + 1, or [`NONE`].
    Vacant {
        next_free: u32,
    },
}

pub(crate) struct Slab<T, const N: usize> {
    /// Invariant: `hwm <= N`; `entries[..hwm]` are initialised; `entries[hwm..]` are not.
    entries: [MaybeUninit<Entry<T>>; N],
    hwm: u32,
    /// Index + 1 of the first vacant slot, or [`NONE`].
    free_head: u32,
    len: u32,
}

// SAFETY: all-zero is `hwm = 0` (no entry in use, the `MaybeUninit` array is never read),
// an empty free list and `len = 0`; such a slab owns nothing.
unsafe impl<T, const N: usize> ZeroInit for Slab<T, N> {}

impl<T, const N: usize> Slab<T, N> {
    /// Compile-time guard: indices and `index + 1` must fit in a `u32`.
    const CAPACITY_FITS: () = assert!(
        N < u32::MAX as usize,
        "slab capacity must be below 2^32 - 1"
    );

    /// An empty slab (by value: for small `N`).
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        crate::raw::zeroed::zeroed()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    fn entry(&self, index: u32) -> Option<&Entry<T>> {
        if index < self.hwm {
            // SAFETY: `index < hwm <= N` (`insert` never raises `hwm` past `N`), so the index
            // is in bounds, and entries below `hwm` are initialised (the type's invariant).
            // One comparison per lookup instead of two: this runs twice per dispatched event.
            Some(unsafe { self.entries.get_unchecked(index as usize).assume_init_ref() })
        } else {
            None
        }
    }

    #[inline]
    fn entry_mut(&mut self, index: u32) -> Option<&mut Entry<T>> {
        if index < self.hwm {
            // SAFETY: as in `entry`: in bounds (`hwm <= N`) and initialised.
            Some(unsafe {
                self.entries
                    .get_unchecked_mut(index as usize)
                    .assume_init_mut()
            })
        } else {
            None
        }
    }

    /// Insert `value`, returning its `(index, generation)`, or the value back when full.
    pub(crate) fn insert(&mut self, value: T) -> Result<(u32, u32), T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_FITS;
        if self.free_head != NONE {
            let index = self.free_head - 1;
            let Some(entry) = self.entry_mut(index) else {
                return Err(value);
            };
            let State::Vacant { next_free } = entry.state else {
                return Err(value);
            };
            // Replaced, not assigned: the old state is `Vacant` (tested above), which owns
            // nothing, and an assignment would still call the state's drop glue on it.
            core::mem::forget(core::mem::replace(&mut entry.state, State::Occupied(value)));
            let generation = entry.generation;
            self.free_head = next_free;
            self.len += 1;
            Ok((index, generation))
        } else if (self.hwm as usize) < N {
            let index = self.hwm;
            self.entries[index as usize].write(Entry {
                generation: 0,
                tag: 0,
                state: State::Occupied(value),
            });
            self.hwm += 1;
            self.len += 1;
            Ok((index, 0))
        } else {
            Err(value)
        }
    }

    /// The value at `index` if it is occupied with generation `generation`.
    #[inline]
    pub(crate) fn get(&self, index: u32, generation: u32) -> Option<&T> {
        match self.entry(index) {
            Some(Entry {
                generation: g,
                state: State::Occupied(v),
                ..
            }) if *g == generation => Some(v),
            _ => None,
        }
    }

    /// The value at `index` if it is occupied with generation `generation`.
    #[inline]
    pub(crate) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let entry = self
            .entry_mut(index)
            .filter(|e| e.generation == generation)?;
        match &mut entry.state {
            State::Occupied(v) => Some(v),
            _ => None,
        }
    }

    /// The value and generation at `index`, if occupied.
    #[inline]
    pub(crate) fn get_by_index(&self, index: u32) -> Option<(&T, u32)> {
        match self.entry(index) {
            Some(Entry {
                generation,
                state: State::Occupied(v),
                ..
            }) => Some((v, *generation)),
            _ => None,
        }
    }

    /// The value at `index` and its generation, mutably, if it is occupied and its
    /// generation is `generation` or `alt(value, its generation, its tag)` holds (tested only
    /// when the generations differ).
    #[inline]
    pub(crate) fn get_mut_or(
        &mut self,
        index: u32,
        generation: u32,
        alt: impl FnOnce(&T, u32, u32) -> bool,
    ) -> Option<(&mut T, u32)> {
        let entry = self.entry_mut(index)?;
        let g = entry.generation;
        let tag = entry.tag;
        match &mut entry.state {
            State::Occupied(v) if g == generation || alt(v, g, tag) => Some((v, g)),
            _ => None,
        }
    }

    /// The value at `(index, generation)` and its tag, mutably.
    #[inline]
    pub(crate) fn get_mut_tagged(
        &mut self,
        index: u32,
        generation: u32,
    ) -> Option<(&mut T, &mut u32)> {
        let entry = self
            .entry_mut(index)
            .filter(|e| e.generation == generation)?;
        match &mut entry.state {
            State::Occupied(v) => Some((v, &mut entry.tag)),
            _ => None,
        }
    }

    /// Remove the value at `(index, generation)`; the slot's generation moves on so the handle
    /// is dead from now on.
    pub(crate) fn remove(&mut self, index: u32, generation: u32) -> Option<T> {
        let free_head = self.free_head;
        let entry = self.entry_mut(index)?;
        if entry.generation != generation || !matches!(entry.state, State::Occupied(_)) {
            return None;
        }
        let old = core::mem::replace(
            &mut entry.state,
            State::Vacant {
                next_free: free_head,
            },
        );
        entry.generation = entry.generation.wrapping_add(1);
        self.free_head = index + 1;
        self.len -= 1;
        match old {
            State::Occupied(v) => Some(v),
            State::Vacant { .. } => None,
        }
    }

    /// Every occupied slot as `(index, generation, &mut value)`.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut T)> {
        let hwm = self.hwm as usize;
        self.entries[..hwm]
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| {
                // SAFETY: entries below `hwm` are initialised (the type's invariant).
                let e = unsafe { e.assume_init_mut() };
                match &mut e.state {
                    State::Occupied(v) => Some((i as u32, e.generation, v)),
                    State::Vacant { .. } => None,
                }
            })
    }
}

impl<T, const N: usize> Drop for Slab<T, N> {
    fn drop(&mut self) {
        let hwm = self.hwm as usize;
        for e in &mut self.entries[..hwm] {
            // SAFETY: entries below `hwm` are initialised and each is dropped once, here.
            unsafe { e.assume_init_drop() };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::rc::Rc;

    #[test]
    fn removed_handle_never_reaches_the_value_that_reuses_its_slot() {
        let mut s: Slab<&str, 4> = Slab::new();
        let (i, g) = s.insert("old").unwrap();
        assert_eq!(s.remove(i, g), Some("old"));
        let (i2, g2) = s.insert("new").unwrap();
        assert_eq!(i2, i, "the freed slot is reused");
        assert_ne!(g2, g);
        assert_eq!(s.get(i, g), None);
        assert_eq!(s.remove(i, g), None);
        assert_eq!(s.get(i2, g2), Some(&"new"));
    }

    #[test]
    fn full_slab_hands_the_value_back() {
        let mut s: Slab<u8, 2> = Slab::new();
        s.insert(1).unwrap();
        s.insert(2).unwrap();
        assert_eq!(s.insert(3), Err(3));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn out_of_range_and_vacant_lookups_are_none() {
        let mut s: Slab<u8, 2> = Slab::new();
        assert_eq!(s.get(0, 0), None);
        assert_eq!(s.get(7, 0), None);
        assert!(s.get_by_index(1).is_none());
        let (i, g) = s.insert(5).unwrap();
        s.remove(i, g);
        assert!(s.get_by_index(i).is_none());
    }

    #[test]
    fn dropping_the_slab_drops_each_live_value_once() {
        let rc = Rc::new(());
        {
            let mut s: Slab<Rc<()>, 8> = Slab::new();
            for _ in 0..5 {
                s.insert(rc.clone()).unwrap();
            }
            let (i, g) = s.insert(rc.clone()).unwrap();
            drop(s.remove(i, g));
            assert_eq!(Rc::strong_count(&rc), 6);
        }
        assert_eq!(Rc::strong_count(&rc), 1);
    }

    #[test]
    fn zeroed_in_place_slab_is_empty_and_usable() {
        let mut m = std::boxed::Box::new(MaybeUninit::<Slab<u64, 1000>>::uninit());
        let s = crate::raw::zeroed::zero_in_place(&mut m);
        assert_eq!(s.len(), 0);
        let (i, g) = s.insert(7).unwrap();
        assert_eq!(s.get(i, g), Some(&7));
        let n: usize = s.iter_mut().count();
        assert_eq!(n, 1);
        // SAFETY: initialised above; drop it properly before the box frees the memory.
        unsafe { m.assume_init_drop() };
    }
}
