//! The process-wide pool behind `EventLoop::attach_owned_executor`: executors leaked once
//! and reused by later loops of the same type.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One leaked executor in the pool behind `attach_pooled` (never freed, so wakers made by
/// it stay valid for the life of the process).
#[cfg(feature = "alloc")]
pub(super) struct PoolEntry {
    pub(super) type_id: core::any::TypeId,
    /// The `Executor<N, S>` `type_id` names.
    pub(super) exec: *const (),
    pub(super) next: *const PoolEntry,
}

#[cfg(feature = "alloc")]
pub(super) static POOL: AtomicPtr<PoolEntry> = AtomicPtr::new(ptr::null_mut());

/// Attach an executor from the process-wide pool: a detached one of this type, or a newly
/// leaked one (pushed on the pool). Memory is bounded by the most executors of each type
/// attached at once.
#[cfg(feature = "alloc")]
pub(crate) fn attach_pooled<const N: usize, const S: usize>(wake: &'static WakeEntry) -> ExecRef {
    use alloc::boxed::Box;
    let type_id = core::any::TypeId::of::<Executor<N, S>>();
    let mut entry = POOL.load(Ordering::Acquire).cast_const();
    while !entry.is_null() {
        // SAFETY: pool entries are leaked (never freed) and immutable once published.
        let e = unsafe { &*entry };
        if e.type_id == type_id {
            // SAFETY: the entry's type id says `exec` is a leaked `Executor<N, S>`.
            let exec: &'static Executor<N, S> = unsafe { &*e.exec.cast::<Executor<N, S>>() };
            if let Ok(r) = exec.attach(wake) {
                return r;
            }
        }
        entry = e.next;
    }
    let exec: &'static Executor<N, S> = Box::leak(Box::new(Executor::new()));
    let attached = exec.attach_fresh(wake);
    let new: &'static mut PoolEntry = Box::leak(Box::new(PoolEntry {
        type_id,
        exec: (exec as *const Executor<N, S>).cast(),
        next: ptr::null(),
    }));
    let mut head = POOL.load(Ordering::Acquire);
    loop {
        new.next = head;
        match POOL.compare_exchange_weak(
            head,
            &mut *new as *mut PoolEntry,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return attached,
            Err(h) => head = h,
        }
    }
}
