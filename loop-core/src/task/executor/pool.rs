//! The executors behind `EventLoop::attach_owned_executor`, from the crate's pool of leaked
//! objects (`crate::raw::pool`).

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::raw::pool;

/// Attach an executor from the process-wide pool: a detached one of this type, or a newly
/// leaked one (published once attached). Memory is bounded by the most executors of each
/// type attached at once; wakers made by a pooled executor stay valid for the life of the
/// process.
pub(crate) fn attach_pooled<const N: usize, const S: usize>(wake: &'static WakeEntry) -> ExecRef {
    let mut attached = None;
    pool::find::<Executor<N, S>>(|exec| {
        attached = exec.attach(wake).ok();
        attached.is_some()
    });
    if let Some(r) = attached {
        return r;
    }
    let exec: &'static Executor<N, S> =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(Executor::new()));
    let r = exec.attach_fresh(wake);
    pool::publish(exec);
    r
}
