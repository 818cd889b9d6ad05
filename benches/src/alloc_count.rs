//! A counting global allocator for the footprint workload: how many heap allocations a server
//! makes while it serves requests in its steady state.
//!
//! Counting is off by default. A measurement takes a fresh session number ([`session`]),
//! marks the threads it wants counted with it ([`track_this_thread`]: the echo server's
//! thread and the load generator's) and opens a window for that session ([`start`]): only
//! allocations made on threads of that session are counted. Every other allocation (other
//! workloads, other tests running in parallel threads of `cargo test`, even their own counted
//! threads) is passed straight to the system allocator after one relaxed load of a global, so
//! the counter costs the other workloads nothing measurable.
//!
//! The thread-local session is a `const`-initialised `Cell<u64>` with no destructor: reading
//! it never allocates and never registers anything, so it is safe inside the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// The allocator installed by `main.rs`: the system allocator plus the counters.
pub struct Counting;

/// The session whose window is open (0: none).
static ACTIVE: AtomicU64 = AtomicU64::new(0);
/// The last session handed out.
static SESSIONS: AtomicU64 = AtomicU64::new(0);
/// Allocations (including reallocations) counted in the window.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by them.
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACKED: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn note(size: usize) {
    let active = ACTIVE.load(Relaxed);
    if active != 0 && TRACKED.try_with(Cell::get).unwrap_or(0) == active {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A new session number (never 0).
pub fn session() -> u64 {
    SESSIONS.fetch_add(1, Relaxed) + 1
}

/// Counts this thread's allocations in `session`'s windows (0: never).
pub fn track_this_thread(session: u64) {
    TRACKED.with(|t| t.set(session));
}

/// One window at a time (tests run in parallel threads).
static WINDOW: Mutex<()> = Mutex::new(());

/// An open counting window; [`Window::stop`] closes it.
pub struct Window {
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// Opens a window: resets the counters and starts counting on `session`'s threads. Waits
/// while another window is open.
pub fn start(session: u64) -> Window {
    let guard = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    ACTIVE.store(session, Relaxed);
    Window {
        _one_at_a_time: guard,
    }
}

impl Window {
    /// Closes the window: `(allocations, bytes)` counted since [`start`].
    pub fn stop(self) -> (u64, u64) {
        ACTIVE.store(0, Relaxed);
        (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the session's threads' allocations, and ignores another session's.
    #[test]
    fn counts_only_the_sessions_threads() {
        let (mine, other) = (session(), session());
        // On a new thread tracked for `thread`: what `counting` counts of a 100-byte Vec.
        let alloc_on = |thread, counting| {
            std::thread::spawn(move || {
                track_this_thread(thread);
                let w = start(counting);
                let v: Vec<u8> = Vec::with_capacity(100);
                std::hint::black_box(&v);
                w.stop()
            })
            .join()
            .unwrap()
        };
        let counted = alloc_on(mine, mine);
        assert!(counted.0 >= 1 && counted.1 >= 100, "{counted:?}");
        let ignored = alloc_on(other, mine);
        assert_eq!(ignored, (0, 0));
    }
}
