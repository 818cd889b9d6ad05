//! libev: libev's own bench.c (its `native` variant, the per-fd timers left out), the anchor of
//! the re-registering phases.
//!
//! One `ev_io` per read end on libev's epoll backend (level-triggered, as ioloop), created and
//! started once (`chain/libev_shim.c`). A pass is `ev_run(EVRUN_NOWAIT)`; the watcher callback
//! calls the shared Rust handler [`Chain::on_readable`](super::Chain::on_readable) through one
//! function pointer. "total" and "bench.c del+add" are both bench.c's per-pass loop,
//! `ev_io_stop` + `ev_io_set` +
//! `ev_io_start` per fd (libev has no other way to re-arm an interest; its `fdchanges` list
//! folds a stop + start of the same fd into at most one `epoll_ctl` at the next `ev_run`).

use std::io;

use super::{ChainCase, ChainSamples};

/// Runs one chain case.
#[cfg(not(have_libev))]
pub fn run(_case: &ChainCase) -> io::Result<ChainSamples> {
    Err(io::Error::other(
        "libev not installed (apt-get install libev-dev, then rebuild)",
    ))
}

#[cfg(have_libev)]
mod ffi {
    use std::ffi::{c_int, c_void};
    /// The handler the shim's watcher callback calls: `(ctx, fd, pair index)`.
    pub type Handler = unsafe extern "C" fn(ctx: *mut c_void, fd: c_int, i: usize);
    extern "C" {
        pub fn lc_new(fds: *const c_int, n: usize, f: Handler, ctx: *mut c_void) -> *mut c_void;
        pub fn lc_free(c: *mut c_void);
        pub fn lc_readd(c: *mut c_void);
        pub fn lc_run_nowait(c: *mut c_void);
    }
}

/// The watcher callback's Rust half.
///
/// # Safety
///
/// `ctx` points to a live [`super::Chain`] and `fd` is an open read end of its pairs.
#[cfg(have_libev)]
unsafe extern "C" fn on_readable(ctx: *mut std::ffi::c_void, fd: std::ffi::c_int, i: usize) {
    // SAFETY: the caller's contract (the shim passes back the `ctx` given to `lc_new`, a
    // `Chain` that outlives the libev loop, and a watcher's fd, a read end of the case).
    let (chain, fd) = unsafe {
        (
            &*(ctx as *const super::Chain),
            std::os::fd::BorrowedFd::borrow_raw(fd),
        )
    };
    chain.on_readable(fd, i);
}

/// Runs one chain case.
#[cfg(have_libev)]
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    use super::{run_phases, Chain};

    /// The shim's loop, freed once.
    struct Loop(*mut std::ffi::c_void);
    impl Drop for Loop {
        fn drop(&mut self) {
            // SAFETY: created by lc_new, freed once, after its last use.
            unsafe { ffi::lc_free(self.0) }
        }
    }

    let pairs = &*case.pairs;
    let chain = Box::new(Chain::new(pairs));
    let fds = pairs.raw_rd();
    // SAFETY: `fds` and `chain` outlive the loop (dropped after `lp`, declared later), and
    // `on_readable`'s contract holds for the `ctx` and fds given here.
    let c = unsafe {
        ffi::lc_new(
            fds.as_ptr(),
            fds.len(),
            on_readable,
            &*chain as *const Chain as *mut std::ffi::c_void,
        )
    };
    if c.is_null() {
        return Err(io::Error::other("ev_loop_new(EVBACKEND_EPOLL) failed"));
    }
    let mut lp = Loop(c);
    let readd = |lp: &mut Loop| {
        // SAFETY: `lp.0` is the live shim loop (freed only when `lp` drops, after the run).
        unsafe { ffi::lc_readd(lp.0) };
        Ok(())
    };
    run_phases(
        &chain,
        case,
        &mut lp,
        Some(readd),
        Some(readd),
        |lp: &mut Loop| {
            // SAFETY: as above, `lp.0` is the live shim loop.
            unsafe { ffi::lc_run_nowait(lp.0) };
            Ok(())
        },
    )
}
