//! The fd handler table: fixed capacity, slots tagged with a generation.
//!
//! A handler's poller key is `generation << 32 | slot`. When a handler is removed its slot's
//! generation moves on, so an event already fetched for it (or for an earlier handler of the
//! same fd number, closed and reopened in the same iteration) no longer matches and is
//! dropped: a removed handler is never called.
//!
//! While a handler runs, its closure is moved out of the slot (so the handler can take `&mut`
//! of the loop, including this table) and moved back afterwards unless the slot was freed or
//! reused in the meantime.

use crate::error::RawFd;
use crate::interest::{Interest, Readiness};
use crate::raw::slab::Slab;
use crate::raw::zeroed::ZeroInit;
use crate::tables::fd_index::FdIndex;

/// Identifies one registration of one handler. Stays unique across removal and re-adding of
/// the same fd.
///
/// # Examples
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, HandlerId, Interest};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// let id: HandlerId = lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
/// // The key the poller reports for the handler's events names the same registration.
/// assert_eq!(HandlerId::from_key(id.key()), id);
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HandlerId {
    index: u32,
    generation: u32,
}

impl HandlerId {
    /// The key the loop registers with the poller for this handler.
    #[inline]
    pub const fn key(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// The same slot with generation `generation`.
    #[inline]
    pub(crate) const fn with_generation(self, generation: u32) -> HandlerId {
        HandlerId {
            index: self.index,
            generation,
        }
    }

    /// The handler id a poller key stands for.
    #[inline]
    pub const fn from_key(key: u64) -> HandlerId {
        HandlerId {
            index: key as u32,
            generation: (key >> 32) as u32,
        }
    }
}

/// `repr(C)`, in this order: what an event reads and writes (the closure, the fd, the
/// interest, the flags) is contiguous, right after the slab's generation, so a dispatch
/// touches two cache lines of the slot; the async I/O waiters, cold for an fd handler, come
/// last.
#[repr(C)]
pub(crate) struct Slot<F> {
    /// `None` while the handler is running (and always for an I/O registration).
    pub(crate) handler: Option<F>,
    pub(crate) fd: RawFd,
    pub(crate) interest: Interest,
    /// The handler's closure owns the fd (`add_owned_handler*`) and closes it when dropped:
    /// its deregistration is never deferred, so the fd is closed only after the poller forgot
    /// it.
    pub(crate) owned: bool,
    /// Closing the loop has deregistered the fd; the slot only
    /// waits for its closure to be dropped.
    pub(crate) released: bool,
    /// This handler took over the kernel registration of a handler removed before it was
    /// added ([`HandlerTable::set_handler`]): how many generations that handler's key is behind
    /// this one's (0: no alias; at most 127), while the kernel still reports that key, and
    /// events under it are this handler's. When the loop gives the poller this handler's own
    /// key, the alias is retired ([`Slot::retire_alias`]): [`DYING`] is set, and the
    /// old key stays this handler's only for the events the current poll already fetched
    /// under it (as they would have been under its own key), never in a later poll. One
    /// byte: it fills the slot's padding.
    pub(crate) alias: u8,
    /// For an async I/O registration (`crate::task::io`): who waits, and what was seen.
    pub(crate) io: Option<IoWaiters>,
}

/// How many generations the key `old` is behind `id`, if `id` may take its registration over
/// as an alias ([`HandlerTable::set_handler`]): the same slot, 1 to 127 generations behind
/// (`None` beyond: the registration is moved to `id`'s key instead, and a chain of
/// take-overs starts again from there).
#[inline]
pub(crate) fn alias_delta(id: HandlerId, old: u64) -> Option<u8> {
    let old = HandlerId::from_key(old);
    let delta = id.generation.wrapping_sub(old.generation);
    (old.index == id.index && delta != 0 && delta <= ALIAS_DELTA_MAX).then_some(delta as u8)
}

/// The largest generation distance an alias spans ([`Slot::alias`]).
const ALIAS_DELTA_MAX: u32 = 0x7f;

/// In [`Slot::alias`]: the poller has the handler's own key now; the old key (the distance in
/// the low bits) is good only for events of the poll the slot's tag names.
const DYING: u8 = 0x80;

impl<F> Slot<F> {
    /// The loop gave the poller this handler's own key (an interest change): an alias it had
    /// ([`alias`](Self::alias)) retires (`tag` is the slot's tag, `epoch` the current poll).
    /// Events the current poll fetched under the old key stay the handler's (none can come
    /// under its own key in the same poll: the poller held only the old one when they were
    /// fetched), unless the alias was made during this very poll, whose events under that
    /// key were the removed handler's; from the next poll on the old key is dead.
    #[inline]
    pub(crate) fn retire_alias(&mut self, tag: &mut u32, epoch: u32) {
        if self.alias == 0 || self.alias & DYING != 0 {
            return; // none, or already retired in this poll (or dead)
        }
        if *tag == epoch {
            self.alias = 0; // made during this poll: nothing fetched is its
        } else {
            self.alias |= DYING;
            *tag = epoch;
        }
    }

    /// The key the poller reports this registration's events under: its own id's, or the
    /// key of the removed handler whose registration it took over.
    #[inline]
    pub(crate) fn kernel_key(&self, id: HandlerId) -> u64 {
        if self.alias != 0 && self.alias & DYING == 0 {
            HandlerId {
                index: id.index,
                generation: id.generation.wrapping_sub(u32::from(self.alias)),
            }
            .key()
        } else {
            id.key()
        }
    }
}

/// The tasks waiting on an async I/O registration, and the readiness seen since they last
/// looked (sticky until consumed, so an edge that arrives while nobody waits is not lost).
pub(crate) struct IoWaiters {
    pub(crate) read: Option<core::task::Waker>,
    pub(crate) write: Option<core::task::Waker>,
    pub(crate) ready: Readiness,
    /// Registered edge-triggered (no interest changes needed), else level-triggered.
    pub(crate) edge: bool,
    /// Level-triggered and deregistered after an error/hang-up nobody waited for (it would
    /// otherwise be reported at every poll); errors are sticky, so waiters see `ready`.
    pub(crate) parked: bool,
}

pub(crate) struct HandlerTable<F, const H: usize> {
    slots: Slab<Slot<F>, H>,
    index: FdIndex<H>,
    changes: Changes,
    /// Moves on when a poll begins (wrapping): tells the events of the poll during which an
    /// alias was made (not the new handler's) from later ones.
    epoch: u32,
}

// SAFETY: the slab and the index are zero-valid (see their impls); `Changes` is integers and
// booleans (and `Interest` bit sets, for which zero is empty), all-zero an empty list with
// every flag clear; `epoch` is an integer.
unsafe impl<F, const H: usize> ZeroInit for HandlerTable<F, H> {}

/// How many deregistrations may wait for the next poll (see [`Changes`]).
pub(crate) const DEFERRED: usize = 16;

/// libev's `fdchanges`: the kernel side of `remove_handler`, deferred to the next poll so that
/// a removal followed by an add of the same fd (libevent bench.c's `event_del` + `event_add`)
/// costs one `modify` (the new key, the new interest) instead of a `deregister` and a
/// `register`. The table side of a removal is never deferred: the handler is gone, its id dead
/// and its closure dropped when `remove_handler` returns.
pub(crate) struct Changes {
    /// fds whose handler was removed while their registration stays with the poller.
    fds: [Deferred; DEFERRED],
    len: u32,
    /// A deferred deregistration found the fd closed, or a re-add found its number naming
    /// another file: if a `dup` keeps the old file open, its registration outlives the handler
    /// (epoll's dup trap), and an event for a dead key from a later poll proves it.
    orphan_possible: bool,
    /// A handler was removed since the last poll began: a dead key among this poll's events
    /// may be its (an event fetched before the removal), which proves nothing.
    removed_since_poll: bool,
    /// Deferring is switched on (`EventLoop::set_deferred_removal`).
    enabled: bool,
}

/// A registration whose deregistration waits: the fd, and the key and interest the poller
/// holds for it.
#[derive(Clone, Copy)]
pub(crate) struct Deferred {
    pub(crate) fd: RawFd,
    pub(crate) interest: Interest,
    pub(crate) key: u64,
}

/// What [`HandlerTable::take_into`] found for an event.
pub(crate) enum Taken<'o, F> {
    /// The handler was moved out (into the caller's `out`, lent back here so the call needs
    /// no second test that it is there) for a call with this fd and the readiness it may see;
    /// the handler's generation (the key's, unless the key is the old one of a registration
    /// the handler took over, [`HandlerTable::set_handler`]).
    Call(&'o mut F, RawFd, Readiness, u32),
    /// An async I/O registration: wake its tasks instead.
    Io,
    /// A dead id: its handler was removed (the slot is free or serves a later handler).
    Stale,
    /// Handler already running, or nothing it asked for is ready.
    Nothing,
}

/// Why an insert was refused.
pub(crate) enum InsertError {
    Duplicate,
    Full,
}

impl<F, const H: usize> HandlerTable<F, H> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The handler registered for `fd`.
    #[inline]
    pub(crate) fn lookup(&self, fd: RawFd) -> Option<(HandlerId, &Slot<F>)> {
        let index = self.index.get(fd)?;
        let (slot, generation) = self.slots.get_by_index(index)?;
        Some((HandlerId { index, generation }, slot))
    }

    /// The slot for `fd`, mutably, with its tag and the current poll (an interest change
    /// needs both for [`Slot::retire_alias`]).
    #[inline]
    pub(crate) fn lookup_mut(
        &mut self,
        fd: RawFd,
    ) -> Option<(HandlerId, &mut Slot<F>, &mut u32, u32)> {
        let epoch = self.epoch;
        let index = self.index.get(fd)?;
        let (_, generation) = self.slots.get_by_index(index)?;
        let (slot, tag) = self.slots.get_mut_tagged(index, generation)?;
        Some((HandlerId { index, generation }, slot, tag, epoch))
    }

    /// Reserve a slot for `fd` with no handler yet (it is set once the poller accepted the
    /// fd, so a refusal can hand the caller's closure back untouched). The fd must be
    /// non-negative (the loop checks). Inlined into the loop's one caller (saves the call's
    /// register spills on every add).
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
    ) -> Result<HandlerId, InsertError> {
        let Ok(pos) = self.index.probe(fd) else {
            return Err(InsertError::Duplicate);
        };
        let slot = Slot {
            fd,
            interest,
            owned,
            handler: None,
            io: None,
            released: false,
            alias: 0,
        };
        let (index, generation) = self.slots.insert(slot).map_err(|_| InsertError::Full)?;
        self.index.set(pos, fd, index);
        Ok(HandlerId { index, generation })
    }

    /// Make a reserved slot an async I/O registration.
    pub(crate) fn set_io(&mut self, id: HandlerId, edge: bool) {
        if let Some(slot) = self.slots.get_mut(id.index, id.generation) {
            slot.io = Some(IoWaiters {
                read: None,
                write: None,
                ready: Readiness::empty(),
                edge,
                parked: false,
            });
        }
    }

    /// The slot of `id`, if it is an async I/O registration.
    #[inline]
    pub(crate) fn io_slot(&mut self, id: HandlerId) -> Option<&mut Slot<F>> {
        self.slots
            .get_mut(id.index, id.generation)
            .filter(|s| s.io.is_some())
    }

    /// The place for a reserved slot's handler, with (`alias` not 0) the registration it took
    /// over recorded: one lookup for both. The caller builds the closure straight into the
    /// place (no 64-byte copy from the stack); this part is out of line, one copy for every
    /// kind of handler. `None` if `id` is not live (never, right after a reserve).
    ///
    /// With `alias` (an [`alias_delta`]) the handler took over the registration the poller
    /// holds under an old key `alias` generations behind (the key of a removed handler of the
    /// same fd, in the same slot, with the same interest): events reported under that key by
    /// polls that begin from now on are its. (One that began before, whose events may still
    /// be dispatched, fetched them for the removed handler: they stay dead.)
    ///
    /// The epoch is a `u32`: were an alias's first event to come exactly 2^32 polls after
    /// it was made, it would be taken for an old one and dropped (the level-triggered
    /// registration reports it again at the next poll).
    #[inline(never)]
    pub(crate) fn handler_place(&mut self, id: HandlerId, alias: u8) -> Option<&mut Option<F>> {
        let epoch = self.epoch;
        let (slot, tag) = self.slots.get_mut_tagged(id.index, id.generation)?;
        if alias != 0 {
            slot.alias = alias;
            *tag = epoch;
        }
        Some(&mut slot.handler)
    }

    /// [`handler_place`](Self::handler_place) filled with `make()` (tests).
    #[cfg(test)]
    pub(crate) fn set_handler(&mut self, id: HandlerId, make: impl FnOnce() -> F, alias: u8) {
        if let Some(place) = self.handler_place(id, alias) {
            *place = Some(make());
        }
    }

    /// Reserve and set in one step (tests).
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        f: F,
    ) -> Result<HandlerId, (InsertError, F)> {
        match self.reserve(fd, interest, owned) {
            Ok(id) => {
                self.set_handler(id, || f, 0);
                Ok(id)
            }
            Err(e) => Err((e, f)),
        }
    }

    /// Remove the handler of `fd`; its id is dead from now on.
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<(HandlerId, Slot<F>)> {
        let index = self.index.remove(fd)?;
        let (_, generation) = self.slots.get_by_index(index)?;
        let slot = self.slots.remove(index, generation)?;
        Some((HandlerId { index, generation }, slot))
    }

    /// Remove by id (used to undo an insert the poller refused).
    pub(crate) fn remove_id(&mut self, id: HandlerId) -> Option<Slot<F>> {
        let slot = self.slots.get(id.index, id.generation)?;
        let fd = slot.fd;
        self.index.remove(fd);
        self.slots.remove(id.index, id.generation)
    }

    /// Take the handler of `id` out for a call, into `out` (which the caller keeps, e.g. in a
    /// drop guard: moving it there directly saves a copy per event), with the fd and the
    /// readiness it may see. `None` (and `out` untouched) if the id is stale, the handler is
    /// already out (running), or nothing visible is ready.
    ///
    /// One generation-checked lookup per event: an async I/O registration is told apart here
    /// too ([`Taken::Io`], `out` untouched).
    ///
    /// An old key of a registration a later handler took over ([`Slot::alias`]) is that
    /// handler's from the poll after the take-over on, until the poll after it was retired
    /// ([`Slot::retire_alias`]), tested in the same lookup.
    #[inline]
    pub(crate) fn take_into<'o>(
        &mut self,
        id: HandlerId,
        ready: Readiness,
        out: &'o mut Option<F>,
    ) -> Taken<'o, F> {
        let epoch = self.epoch;
        // A live alias: from the poll after it was made on; a dying one: only in the poll
        // during which it was retired (the slot's tag says which, in both cases).
        let aliased = |slot: &Slot<F>, generation: u32, tag: u32| {
            let delta = slot.alias & !DYING;
            delta != 0
                && generation.wrapping_sub(u32::from(delta)) == id.generation
                && (tag == epoch) == (slot.alias & DYING != 0)
        };
        let Some((slot, generation)) = self.slots.get_mut_or(id.index, id.generation, aliased)
        else {
            return Taken::Stale;
        };
        // The closure's test first: an I/O registration never has one (`handler` is always
        // `None` there), so a handler's event skips the `io` test.
        let visible = ready & slot.interest.visible();
        if !visible.is_empty() {
            if let Some(f) = slot.handler.take() {
                return Taken::Call(out.insert(f), slot.fd, visible, generation);
            }
        }
        if slot.io.is_some() {
            return Taken::Io;
        }
        Taken::Nothing
    }

    /// Put a handler back from `from` after its call: `true` if it went back (`from` is
    /// empty). If its registration was removed meanwhile, `from` keeps it, for the caller to
    /// drop (`false`).
    #[inline]
    pub(crate) fn restore_from(&mut self, id: HandlerId, from: &mut Option<F>) -> bool {
        match self.slots.get_mut(id.index, id.generation) {
            Some(slot) if slot.handler.is_none() => {
                slot.handler = from.take();
                true
            }
            _ => false,
        }
    }

    /// Whether removals defer their deregistration.
    #[inline(always)]
    pub(crate) fn deferring(&self) -> bool {
        self.changes.enabled
    }

    /// Switch deferring on or off (the caller flushes what is deferred before switching off).
    pub(crate) fn set_deferring(&mut self, on: bool) {
        self.changes.enabled = on;
    }

    /// Defer the deregistration of `d.fd`, whose handler was just removed, to the next poll
    /// (or to a re-add of the fd). `false` if the list is full: deregister now.
    #[inline]
    pub(crate) fn defer_deregister(&mut self, d: Deferred) -> bool {
        let c = &mut self.changes;
        c.removed_since_poll = true;
        match c.fds.get_mut(c.len as usize) {
            Some(free) => {
                *free = d;
                c.len += 1;
                true
            }
            None => false,
        }
    }

    /// A handler was removed (whether or not its deregistration is deferred).
    #[inline]
    pub(crate) fn note_removal(&mut self) {
        self.changes.removed_since_poll = true;
    }

    /// Take `fd` off the deferred list: `Some` if it was there, i.e. its old registration is
    /// still with the poller (under the key and interest returned), for the caller to take
    /// over.
    #[inline]
    pub(crate) fn take_deferred(&mut self, fd: RawFd) -> Option<Deferred> {
        let c = &mut self.changes;
        let len = c.len as usize;
        // The latest removal first: bench.c removes and adds one fd after the other, so the
        // fd is the last one, found without the search.
        let last = len.checked_sub(1)?;
        let at = if c.fds.get(last).is_some_and(|d| d.fd == fd) {
            last
        } else {
            c.fds.get(..last)?.iter().rposition(|d| d.fd == fd)?
        };
        let found = c.fds[at];
        c.fds[at] = c.fds[last];
        c.len = last as u32;
        Some(found)
    }

    /// Whether deregistrations wait for the next poll.
    #[inline(always)]
    pub(crate) fn has_deferred(&self) -> bool {
        self.changes.len != 0
    }

    /// Take the last deferred deregistration off the list.
    pub(crate) fn pop_deferred(&mut self) -> Option<RawFd> {
        let c = &mut self.changes;
        let len = c.len.checked_sub(1)?;
        c.len = len;
        Some(c.fds[len as usize].fd)
    }

    /// A poll begins: the events it reports were fetched after every removal so far.
    #[inline(always)]
    pub(crate) fn poll_begins(&mut self) {
        self.changes.removed_since_poll = false;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// A registration may have outlived its handler (see [`Changes::orphan_possible`]).
    pub(crate) fn note_possible_orphan(&mut self) {
        self.changes.orphan_possible = true;
    }

    /// Whether an event for a dead key proves an orphaned registration: one may exist, and no
    /// handler was removed since the poll that reported the event.
    #[inline]
    pub(crate) fn orphan_proven(&self) -> bool {
        self.changes.orphan_possible && !self.changes.removed_since_poll
    }

    /// The poller was reset: no registration of a removed handler survives, none is deferred.
    pub(crate) fn poller_was_reset(&mut self) {
        let c = &mut self.changes;
        c.len = 0;
        c.orphan_possible = false;
    }

    /// Every live registration, in place (for registering them all again with a poller that
    /// was reset).
    pub(crate) fn for_each_mut(&mut self, mut each: impl FnMut(HandlerId, &mut Slot<F>)) {
        for (index, generation, slot) in self.slots.iter_mut() {
            each(HandlerId { index, generation }, slot);
        }
    }

    /// [`take_into`](Self::take_into), by value.
    #[cfg(test)]
    fn take_for_call(&mut self, id: HandlerId, ready: Readiness) -> Option<(F, RawFd, Readiness)> {
        let mut out = None;
        let Taken::Call(_, fd, r, _) = self.take_into(id, ready, &mut out) else {
            return None;
        };
        out.map(|f| (f, fd, r))
    }

    /// [`restore_from`](Self::restore_from), by value.
    #[cfg(test)]
    fn restore(&mut self, id: HandlerId, f: F) -> Result<(), F> {
        let mut from = Some(f);
        self.restore_from(id, &mut from);
        from.map_or(Ok(()), Err)
    }

    /// Closing the loop, first step: `each` sees every registration not yet released once
    /// (to deregister its fd), which is then marked released. The
    /// closures stay: [`take_next`](Self::take_next) hands them out one by one afterwards, so
    /// a closure whose drop panics cannot keep a later fd registered. One pass over the table
    /// (it used to rescan it for each batch of ids, which made dropping a loop with 10^4
    /// handlers quadratic); calling it again only visits what was added since.
    pub(crate) fn release_all(&mut self, mut each: impl FnMut(&Slot<F>)) {
        for (_, _, slot) in self.slots.iter_mut() {
            if !slot.released {
                each(slot);
                slot.released = true;
            }
        }
    }

    /// Closing the loop, second step: remove the next registration at or after `*cursor`
    /// (start at 0) and move the cursor past it. Removing one at a time keeps the table
    /// consistent between two drops, whatever a drop does. O(capacity) over a whole drain.
    pub(crate) fn take_next(&mut self, cursor: &mut u32) -> Option<(HandlerId, Slot<F>)> {
        while self.len() > 0 && (*cursor as usize) < H {
            let index = *cursor;
            *cursor += 1;
            if let Some((_, generation)) = self.slots.get_by_index(index) {
                let id = HandlerId { index, generation };
                return self.remove_id(id).map(|slot| (id, slot));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::zeroed::zeroed;

    #[test]
    fn duplicate_fd_is_refused_and_first_handler_kept() {
        let mut t: HandlerTable<&str, 4> = zeroed();
        let id = t.insert(5, Interest::READ, false, "first").ok().unwrap();
        let Err((InsertError::Duplicate, back)) = t.insert(5, Interest::WRITE, false, "second")
        else {
            panic!("duplicate accepted")
        };
        assert_eq!(back, "second");
        let (found, slot) = t.lookup(5).unwrap();
        assert_eq!(found, id);
        assert_eq!(slot.handler, Some("first"));
        assert_eq!(slot.interest, Interest::READ);
    }

    #[test]
    fn full_table_hands_the_handler_back() {
        let mut t: HandlerTable<u8, 2> = zeroed();
        t.insert(1, Interest::READ, false, 1).ok().unwrap();
        t.insert(2, Interest::READ, false, 2).ok().unwrap();
        assert!(matches!(
            t.insert(3, Interest::READ, false, 3),
            Err((InsertError::Full, 3))
        ));
        assert!(t.lookup(3).is_none());
    }

    #[test]
    fn stale_id_after_remove_and_readd_of_same_fd_gets_nothing() {
        let mut t: HandlerTable<&str, 4> = zeroed();
        let old = t.insert(7, Interest::READ, false, "old").ok().unwrap();
        t.remove(7).unwrap();
        let new = t.insert(7, Interest::READ, false, "new").ok().unwrap();
        assert_ne!(old, new);
        assert!(t.take_for_call(old, Readiness::READ).is_none());
        let (f, fd, r) = t.take_for_call(new, Readiness::READ).unwrap();
        assert_eq!((f, fd, r), ("new", 7, Readiness::READ));
    }

    #[test]
    fn io_registration_is_told_apart_by_the_take_and_keeps_nothing_taken() {
        let mut t: HandlerTable<u8, 4> = zeroed();
        let io = t.reserve(3, Interest::READ, false).ok().unwrap();
        t.set_io(io, false);
        let mut out = None;
        assert!(matches!(
            t.take_into(io, Readiness::READ, &mut out),
            Taken::Io
        ));
        assert!(out.is_none());
        assert!(t.io_slot(io).is_some());
        t.remove(3).unwrap();
        assert!(matches!(
            t.take_into(io, Readiness::READ, &mut out),
            Taken::Stale
        ));
    }

    #[test]
    fn read_only_handler_is_not_shown_write() {
        let mut t: HandlerTable<u8, 2> = zeroed();
        let id = t.insert(1, Interest::READ, false, 1).ok().unwrap();
        assert!(t.take_for_call(id, Readiness::WRITE).is_none());
        let (_, _, r) = t
            .take_for_call(id, Readiness::WRITE | Readiness::READ)
            .unwrap();
        assert_eq!(r, Readiness::READ);
    }

    #[test]
    fn restore_after_removal_hands_the_handler_back_for_dropping() {
        let mut t: HandlerTable<u8, 2> = zeroed();
        let id = t.insert(1, Interest::READ, false, 9).ok().unwrap();
        let (f, _, _) = t.take_for_call(id, Readiness::READ).unwrap();
        t.remove(1);
        assert_eq!(t.restore(id, f), Err(9));
    }

    #[test]
    fn take_deferred_finds_any_entry_latest_first_and_keeps_the_rest() {
        let mut t: HandlerTable<u8, 4> = zeroed();
        for fd in [5, 6, 7] {
            let key = fd as u64;
            assert!(t.defer_deregister(Deferred {
                fd,
                interest: Interest::READ,
                key
            }));
        }
        assert!(t.take_deferred(9).is_none(), "never deferred");
        assert_eq!(t.take_deferred(7).map(|d| d.key), Some(7), "the last one");
        assert_eq!(
            t.take_deferred(5).map(|d| d.key),
            Some(5),
            "one before the last"
        );
        assert!(t.take_deferred(5).is_none(), "taken once");
        assert_eq!(t.pop_deferred(), Some(6));
        assert!(!t.has_deferred());
        assert!(t.take_deferred(6).is_none(), "an empty list");
    }

    #[test]
    fn set_handler_with_an_alias_maps_the_old_key_from_the_next_poll_on() {
        let mut t: HandlerTable<u8, 4> = zeroed();
        let old = t.insert(3, Interest::READ, false, 1).ok().unwrap();
        t.remove(3).unwrap();
        let new = t.reserve(3, Interest::READ, false).ok().unwrap();
        let delta = alias_delta(new, old.key()).unwrap();
        t.set_handler(new, || 2, delta);
        // Events of the poll during which the alias was made are the removed handler's.
        assert!(t.take_for_call(old, Readiness::READ).is_none());
        t.poll_begins();
        let mut out = None;
        let Taken::Call(_, fd, _, generation) = t.take_into(old, Readiness::READ, &mut out) else {
            panic!("the old key of the next poll reaches the new handler")
        };
        assert_eq!(
            (out, fd, new.with_generation(generation)),
            (Some(2), 3, new)
        );
        // Without an alias the old key stays dead.
        let mut u: HandlerTable<u8, 4> = zeroed();
        let old = u.insert(3, Interest::READ, false, 1).ok().unwrap();
        u.remove(3).unwrap();
        let new = u.reserve(3, Interest::READ, false).ok().unwrap();
        u.set_handler(new, || 2, 0);
        u.poll_begins();
        assert!(u.take_for_call(old, Readiness::READ).is_none());
        assert_eq!(u.take_for_call(new, Readiness::READ).map(|c| c.0), Some(2));
    }

    #[test]
    fn key_round_trips_through_u64() {
        let id = HandlerId {
            index: 0xDEAD,
            generation: 0xBEEF,
        };
        assert_eq!(HandlerId::from_key(id.key()), id);
    }

    #[test]
    fn release_all_visits_every_registration_once_even_when_called_again() {
        let mut t: HandlerTable<u32, 64> = zeroed();
        for fd in 0..40 {
            t.insert(fd, Interest::READ, false, fd as u32).ok().unwrap();
        }
        let mut seen = 0u64;
        t.release_all(|s| seen |= 1 << s.fd);
        assert_eq!(seen, (1u64 << 40) - 1);
        assert_eq!(t.len(), 40, "closures stay until taken");
        t.insert(50, Interest::READ, false, 50).ok().unwrap();
        let mut again = 0u64;
        t.release_all(|s| again |= 1 << s.fd);
        assert_eq!(again, 1 << 50, "only the registration added since");
    }

    #[test]
    fn take_next_removes_one_at_a_time_and_leaves_the_table_usable() {
        let mut t: HandlerTable<u32, 64> = zeroed();
        for fd in 0..40 {
            t.insert(fd, Interest::READ, false, fd as u32).ok().unwrap();
        }
        t.remove(7);
        let mut cursor = 0;
        let (_, first) = t.take_next(&mut cursor).unwrap();
        assert_eq!(first.handler, Some(0));
        assert_eq!(t.len(), 38);
        assert!(t.lookup(0).is_none(), "its fd is free again");
        let mut seen = 1u64;
        while let Some((id, slot)) = t.take_next(&mut cursor) {
            assert!(t.take_for_call(id, Readiness::READ).is_none(), "id is dead");
            seen |= 1 << slot.fd;
        }
        assert_eq!(seen, ((1u64 << 40) - 1) & !(1 << 7));
        assert_eq!(t.len(), 0);
        t.insert(3, Interest::READ, false, 3).ok().unwrap();
        assert_eq!(t.lookup(3).map(|(_, s)| s.handler), Some(Some(3)));
    }
}
