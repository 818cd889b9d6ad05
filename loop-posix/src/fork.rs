//! Fork detection without a system call per check: a process-wide **fork generation** that is
//! different in a forked child from every generation of its ancestors. A poller (or notifier)
//! records the generation it was created in ([`ForkGuard`]); a different one means it is a
//! copy in a forked child, which must not touch the kernel objects it shares with the parent
//! (an epoll instance, its timerfd, the waker's eventfd or pipe).
//!
//! The loop asks at every `run_once`, so a check must be cheaper than `getpid(2)` (a real
//! syscall since glibc 2.25 stopped caching it: ~0.2 µs, measurable in the dispatch benchmark).
//!
//! * **Linux, Android**: a page mapped with `MADV_WIPEONFORK` (Linux 4.14), through rustix, so
//!   without libc. The page holds the generation + 1; the kernel hands a child the page filled
//!   with zeros, and the first check there takes a new generation from a counter the child
//!   inherited, one above any its ancestors handed out. A check is two atomic loads. This sees
//!   every fork, even a raw `clone` that bypasses libc. Where the kernel lacks the advice
//!   (before 4.14, or a sandbox refusing `mmap`), the generation is the process id: a
//!   `getpid` syscall per check, the price of correctness on those kernels.
//! * **Elsewhere** (the BSDs, macOS): a `pthread_atfork` child handler bumps the counter
//!   (libc, which rustix links there anyway). A `fork` that bypasses libc is not seen;
//!   `fork(2)`, `posix_spawn` children that exec, and `std::process::Command` go through libc.

use core::sync::atomic::AtomicU32;

use loop_core::{Errno, Error, RawFd};

/// Generations handed out in this process (and, inherited, in its children).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The current fork generation; sets the detection up on first use. Every poller of the
/// workspace (epoll, kqueue, poll, select) shares this one counter.
///
/// ```
/// let g = loop_posix::fork::generation();
/// assert_eq!(loop_posix::fork::generation(), g); // stable until a fork
/// assert!(!loop_posix::fork::forked_since(g));
/// ```
#[inline]
pub fn generation() -> u32 {
    imp::generation()
}

/// How this process detects a fork (see the module docs).
///
/// # Examples
///
/// ```
/// use loop_posix::fork::{mechanism, Mechanism};
///
/// match mechanism() {
///     Mechanism::WipeOnFork | Mechanism::AtFork => {} // cheap checks
///     Mechanism::ProcessId => eprintln!("old kernel: a getpid per check"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// A `MADV_WIPEONFORK` page: two atomic loads per check (Linux 4.14+, Android).
    WipeOnFork,
    /// The process id: a `getpid` syscall per check (Linux kernels without the advice).
    ProcessId,
    /// A `pthread_atfork` child handler: one atomic load per check (the BSDs, macOS).
    AtFork,
}

/// The mechanism in use (sets detection up if it was not yet).
pub fn mechanism() -> Mechanism {
    let _ = generation();
    imp::mechanism()
}

/// Whether an object created in generation `created` now lives in a forked child.
///
/// ```
/// let created = loop_posix::fork::generation(); // recorded when an object is made
/// // ... later, before touching a kernel object shared with the parent:
/// if loop_posix::fork::forked_since(created) {
///     unreachable!("we did not fork");
/// }
/// ```
#[inline]
pub fn forked_since(created: u32) -> bool {
    generation() != created
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use core::ffi::c_void;
    use core::ptr;
    use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

    use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

    use super::COUNTER;

    /// The wiped-on-fork word (`generation + 1`, 0 = not yet set in this process), null until
    /// mapped; [`NO_PAGE`] when the kernel has no `MADV_WIPEONFORK`.
    static PAGE: AtomicPtr<AtomicU32> = AtomicPtr::new(ptr::null_mut());
    /// A non-null, never page-aligned address that is never dereferenced: "no page, use the
    /// process id".
    const NO_PAGE: *mut AtomicU32 = ptr::dangling_mut();
    const PAGE_LEN: usize = 4096;

    pub(super) fn mechanism() -> super::Mechanism {
        if PAGE.load(Ordering::Acquire) == NO_PAGE {
            super::Mechanism::ProcessId
        } else {
            super::Mechanism::WipeOnFork
        }
    }

    // Always inlined: read once per poll (the poller's fork check), where a call would cost
    // more than the two loads and three tests it makes.
    #[inline(always)]
    pub(super) fn generation() -> u32 {
        let mut page = PAGE.load(Ordering::Acquire);
        if page.is_null() {
            page = map();
        }
        if page == NO_PAGE {
            return pid();
        }
        // SAFETY: `page` came from `map`: a live, never unmapped, page-aligned anonymous
        // mapping, so it holds an initialised (zeroed, or written below) `AtomicU32`.
        let word = unsafe { &*page };
        match word.load(Ordering::Acquire) {
            0 => fresh(word),
            stored => stored - 1,
        }
    }

    #[cold]
    fn pid() -> u32 {
        rustix::process::getpid().as_raw_nonzero().get() as u32
    }

    /// First check in this process (the first ever, or the first in a forked child, whose
    /// page the kernel zeroed): take a generation above every one handed out before.
    #[cold]
    fn fresh(word: &AtomicU32) -> u32 {
        // Stored as generation + 1; never 0 (a wrap after 2^32 generations skips it).
        let generation = COUNTER.fetch_add(1, Ordering::AcqRel).wrapping_add(1) % u32::MAX;
        match word.compare_exchange(0, generation + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => generation,
            // Another thread of this process was first: use its generation.
            Err(stored) => stored - 1,
        }
    }

    /// Map the page (or record that there is none); another thread may win the race.
    #[cold]
    fn map() -> *mut AtomicU32 {
        let mapped = {
            let flags = MapFlags::PRIVATE;
            let prot = ProtFlags::READ | ProtFlags::WRITE;
            // SAFETY: a fresh private anonymous mapping at an address the kernel picks; no
            // existing memory is touched.
            unsafe { mmap_anonymous(ptr::null_mut(), PAGE_LEN, prot, flags) }
        };
        let ours = match mapped {
            Ok(addr) => {
                // SAFETY: `addr` is the mapping made just above, `PAGE_LEN` long.
                if unsafe { madvise(addr, PAGE_LEN, Advice::LinuxWipeOnFork) }.is_ok() {
                    addr.cast::<AtomicU32>()
                } else {
                    // SAFETY: our own mapping, unused, unmapped once.
                    let _ = unsafe { munmap(addr, PAGE_LEN) };
                    NO_PAGE
                }
            }
            Err(_) => NO_PAGE,
        };
        match PAGE.compare_exchange(ptr::null_mut(), ours, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => ours,
            Err(winner) => {
                if ours != NO_PAGE {
                    // SAFETY: our page lost the race and was never published or used.
                    let _ = unsafe { munmap(ours.cast::<c_void>(), PAGE_LEN) };
                }
                winner
            }
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use core::sync::atomic::{AtomicBool, Ordering};

    use super::COUNTER;

    static REGISTERED: AtomicBool = AtomicBool::new(false);

    extern "C" fn in_child() {
        COUNTER.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn mechanism() -> super::Mechanism {
        super::Mechanism::AtFork
    }

    #[inline]
    pub(super) fn generation() -> u32 {
        if !REGISTERED.load(Ordering::Relaxed) && !REGISTERED.swap(true, Ordering::AcqRel) {
            // SAFETY: registers a handler that only increments an atomic (async-signal-safe,
            // as handlers run in the child right after fork must be); no prepare/parent
            // handlers.
            unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        }
        COUNTER.load(Ordering::Relaxed)
    }
}

/// The fork generation a poller (or notifier) was created in: after `fork`, every operation
/// that would touch a kernel object shared with the parent checks it first and becomes a
/// refusal ([`Error::Forked`], or `ECHILD` for `wait` and its `Errno`) or a no-op.
///
/// # Examples
///
/// ```
/// use loop_posix::fork::ForkGuard;
///
/// let guard = ForkGuard::new(); // stored next to the kernel object it protects
/// assert!(!guard.forked());
/// guard.check()?; // Err(Error::Forked) in a forked child
/// guard.check_wait()?; // Err(Errno::ECHILD) there
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkGuard {
    created: u32,
}

impl ForkGuard {
    /// A guard for an object created now, in this process.
    pub fn new() -> ForkGuard {
        ForkGuard {
            created: generation(),
        }
    }

    /// Whether this is a forked child's copy of the object.
    #[inline]
    pub fn forked(self) -> bool {
        forked_since(self.created)
    }

    /// `Err(Error::Forked)` in a forked child.
    ///
    /// # Errors
    /// [`Error::Forked`] when the object was created in another process.
    #[inline]
    pub fn check(self) -> Result<(), Error> {
        if self.forked() {
            Err(Error::Forked)
        } else {
            Ok(())
        }
    }

    /// `Err(Errno::ECHILD)` in a forked child: what `Poller::wait` returns there.
    ///
    /// # Errors
    /// [`Errno::ECHILD`] when the object was created in another process.
    #[inline(always)]
    pub fn check_wait(self) -> Result<(), Errno> {
        self.check().map_err(|_| Errno::ECHILD)
    }

    /// [`check`](Self::check), then `Err(Error::InvalidFd)` for a negative `fd`: how every
    /// poller's `register` and `modify` begin.
    ///
    /// # Errors
    /// [`Error::Forked`] in a forked child, [`Error::InvalidFd`] for `fd < 0`.
    #[inline]
    pub fn check_fd(self, fd: RawFd) -> Result<(), Error> {
        self.check()?;
        if fd < 0 {
            return Err(Error::InvalidFd { fd });
        }
        Ok(())
    }
}

impl Default for ForkGuard {
    fn default() -> Self {
        ForkGuard::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_stable_within_a_process() {
        let guard = ForkGuard::new();
        for _ in 0..1000 {
            assert!(!guard.forked());
        }
        assert_eq!(guard.check(), Ok(()));
        assert_eq!(guard.check_wait(), Ok(()));
        assert_eq!(generation(), generation());
    }

    /// On a Linux of this century the cheap path is the one in use (if this fails, the
    /// kernel is older than 4.14 or a sandbox refuses the advice: detection still works, at
    /// a syscall per check).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn linux_detects_forks_with_a_wipe_on_fork_page() {
        assert_eq!(mechanism(), Mechanism::WipeOnFork);
    }

    #[test]
    fn threads_agree_on_the_generation() {
        let here = generation();
        let there: std::vec::Vec<u32> = (0..4)
            .map(|_| std::thread::spawn(generation))
            .collect::<std::vec::Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(there.iter().all(|g| *g == here));
    }
}
