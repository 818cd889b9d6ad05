//! A process-wide pool of objects leaked once and reused (feature `alloc`): the storage behind
//! `EventLoop::attach_owned_executor` and `attach_owned_remote`.
//!
//! An executor or remote that a loop owns must still outlive every `Waker` or `LoopHandle`
//! made from it, and those may outlive the loop. So it is leaked, never freed, and put in this
//! pool when first made; a later loop of the same type takes a free one (one that is not
//! attached) instead of leaking another. Memory is bounded by the most objects of each type in
//! use at once. Entries are pushed with a compare-and-swap and never removed or changed, so
//! readers walk the list without locks.

use core::any::TypeId;
use core::sync::atomic::Ordering;
use portable_atomic::AtomicPtr;

/// One pooled object: its type and address. Immutable once published.
struct Entry {
    type_id: TypeId,
    object: *const (),
    next: *const Entry,
}

static HEAD: AtomicPtr<Entry> = AtomicPtr::new(core::ptr::null_mut());

/// Call `take` on each pooled `T`, newest first, until it returns `true`; whether one did.
pub(crate) fn find<T: 'static>(mut take: impl FnMut(&'static T) -> bool) -> bool {
    let type_id = TypeId::of::<T>();
    let mut entry = HEAD.load(Ordering::Acquire).cast_const();
    while !entry.is_null() {
        // SAFETY: entries are leaked (never freed) and immutable once published (the
        // Acquire load pairs with the Release of `publish`).
        let e = unsafe { &*entry };
        if e.type_id == type_id {
            // SAFETY: `publish::<T>` stored a `&'static T` under `TypeId::of::<T>()`.
            let object: &'static T = unsafe { &*e.object.cast::<T>() };
            if take(object) {
                return true;
            }
        }
        entry = e.next;
    }
    false
}

/// Add `object` (leaked by the caller) to the pool, for later loops to reuse. Publish it
/// only once it is attached, so that no other thread can take it first.
pub(crate) fn publish<T: Sync + 'static>(object: &'static T) {
    use alloc::boxed::Box;
    let new: &'static mut Entry = Box::leak(Box::new(Entry {
        type_id: TypeId::of::<T>(),
        object: (object as *const T).cast(),
        next: core::ptr::null(),
    }));
    let mut head = HEAD.load(Ordering::Acquire);
    loop {
        new.next = head;
        match HEAD.compare_exchange_weak(
            head,
            &mut *new as *mut Entry,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// How many `T` the pool holds (tests).
#[cfg(test)]
pub(crate) fn count<T: 'static>() -> usize {
    let mut n = 0;
    find::<T>(|_| {
        n += 1;
        false
    });
    n
}
