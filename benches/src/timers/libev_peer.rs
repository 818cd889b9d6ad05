//! libev's timers (the anchor of the timer table), through a small C shim
//! (`libev_shim.c`, built by `build.rs` when libev is installed).
//!
//! libev keeps timers in a 4-ary heap with the deadline cached next to the watcher pointer;
//! the watchers here live in one array, as a C server embeds them in its connection structs.
//!
//! * schedule = `ev_timer_set(w, after, 0)` + `ev_timer_start`: the deadline is the loop's
//!   cached `ev_now` + after (no clock read per timer; `ev_now_update` once before the phase);
//! * rearm = `w->repeat = after; ev_timer_again`, libev's in-place move;
//! * cancel = `ev_timer_stop`, in the shared random order;
//! * fire = `ev_run(EVRUN_NOWAIT)` until every callback ran.
//!
//! Each phase is one call into a C loop (libev as its users call it, from C).

use std::io;

use super::{TimerCase, TimerSamples};

#[cfg(have_libev)]
mod ffi {
    use std::ffi::c_void;
    extern "C" {
        pub fn lb_new(n: usize) -> *mut c_void;
        pub fn lb_free(b: *mut c_void);
        pub fn lb_now_update(b: *mut c_void);
        pub fn lb_schedule(b: *mut c_void, after: *const f64, n: usize);
        pub fn lb_rearm(b: *mut c_void, after: *const f64, n: usize);
        pub fn lb_cancel(b: *mut c_void, order: *const u32, n: usize);
        pub fn lb_run_nowait(b: *mut c_void) -> std::ffi::c_ulong;
        pub fn lb_reset_fired(b: *mut c_void);
        pub fn lb_active_timers(b: *mut c_void) -> std::ffi::c_int;
        pub fn lb_version_major() -> std::ffi::c_uint;
        pub fn lb_version_minor() -> std::ffi::c_uint;
    }
}

/// The linked libev's version, or why there is none.
pub fn version() -> String {
    #[cfg(have_libev)]
    {
        // SAFETY: plain getters without arguments.
        let (a, b) = unsafe { (ffi::lb_version_major(), ffi::lb_version_minor()) };
        format!("libev {a}.{b}")
    }
    #[cfg(not(have_libev))]
    {
        "libev not installed (apt-get install libev-dev, then rebuild)".into()
    }
}

/// Runs one timer case.
#[cfg(not(have_libev))]
pub fn run(_case: &TimerCase) -> io::Result<TimerSamples> {
    Err(io::Error::other(
        "libev not installed (apt-get install libev-dev, then rebuild)",
    ))
}

/// Runs one timer case.
#[cfg(have_libev)]
pub fn run(case: &TimerCase) -> io::Result<TimerSamples> {
    use super::{start, stop, wait_until_due};
    use std::time::Instant;

    struct Loop(*mut std::ffi::c_void);
    impl Drop for Loop {
        fn drop(&mut self) {
            // SAFETY: created by lb_new, freed once.
            unsafe { ffi::lb_free(self.0) }
        }
    }

    let n = case.n;
    let inp = &*case.inputs;
    let secs = |v: &[std::time::Duration]| v.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>();
    let (schedule, rearm, fire) = (secs(&inp.schedule), secs(&inp.rearm), secs(&inp.fire));
    // SAFETY: lb_new allocates; null means failure.
    let b = unsafe { ffi::lb_new(n) };
    if b.is_null() {
        return Err(io::Error::other("ev_loop_new failed"));
    }
    let lp = Loop(b);
    let mut out = TimerSamples::with_capacity(case.iters);
    // SAFETY (every call below): `lp.0` is a live shim object for `n` timers and every slice
    // passed is `n` long; the shim only reads them.
    for _ in 0..case.iters {
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        unsafe { ffi::lb_now_update(lp.0) };
        let t0 = start();
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        unsafe { ffi::lb_schedule(lp.0, schedule.as_ptr(), n) };
        out.schedule.push(stop(t0, n, "schedule"));

        let t0 = start();
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        unsafe { ffi::lb_rearm(lp.0, rearm.as_ptr(), n) };
        out.rearm.push(stop(t0, n, "rearm"));

        let t0 = start();
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        unsafe { ffi::lb_cancel(lp.0, inp.cancel.as_ptr(), n) };
        out.cancel.push(stop(t0, n, "cancel"));
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        if unsafe { ffi::lb_active_timers(lp.0) } != 0 {
            return Err(io::Error::other("timers left after cancelling all"));
        }

        // SAFETY: as above (a live shim object; slices `n` long, only read).
        unsafe {
            ffi::lb_reset_fired(lp.0);
            ffi::lb_now_update(lp.0);
            ffi::lb_schedule(lp.0, fire.as_ptr(), n);
        }
        wait_until_due(Instant::now());
        let t0 = start();
        // SAFETY: as above (a live shim object; slices `n` long, only read).
        while (unsafe { ffi::lb_run_nowait(lp.0) } as usize) < n {}
        out.fire.push(stop(t0, n, "fire"));
    }
    Ok(out)
}
