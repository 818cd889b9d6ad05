//! Signals as loop events: the platform half (`sigaction`, through `libc`: rustix has no
//! signal-handler API).
//!
//! [`SIGACTION`] installs a handler that only calls [`loop_core::signal::deliver`] (atomics and
//! one notifier write: async-signal-safe), remembering the disposition it replaced, and
//! restores that disposition when the loop's handler is removed, the loop is closed or
//! dropped. [`SignalExt::on_signal`] is the short form.
//!
//! ```no_run
//! use ioloop::{EventLoop, Remote, SignalExt};
//!
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.on_signal(libc::SIGTERM, |lp, _| lp.stop()).map_err(|r| r.error)?;
//! lp.run()?; // returns after SIGTERM, with the previous SIGTERM disposition restored on drop
//! # Ok::<(), ioloop::Error>(())
//! ```

use std::sync::Mutex;

use loop_core::{Errno, EventLoop, Poller, Refused, SignalInstaller};

/// The dispositions our handler replaced, by signal number.
static SAVED: Mutex<[Option<libc::sigaction>; 64]> = Mutex::new([None; 64]);

#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno slot; always valid.
    unsafe { libc::__errno_location() }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno slot; always valid.
    unsafe { libc::__error() }
}

extern "C" fn deliver(signo: libc::c_int) {
    // The wake may write(2) and change errno under the code this signal interrupted.
    let location = errno_location();
    // SAFETY: this thread's errno slot.
    let saved = unsafe { *location };
    loop_core::signal::deliver(signo);
    // SAFETY: as above.
    unsafe { *location = saved };
}

fn install(signo: i32) -> Result<(), Errno> {
    let signo_ix = usize::try_from(signo).map_err(|_| Errno::EINVAL)?;
    if signo_ix >= 64 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: plain sigaction calls with zero-initialised, then filled, C structs; the handler
    // is async-signal-safe (see `deliver`).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = deliver as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, &sa, &mut old) != 0 {
            return Err(Errno(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL),
            ));
        }
        let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
        // Installing twice keeps the first (the user's) disposition.
        if saved[signo_ix].is_none() {
            saved[signo_ix] = Some(old);
        }
    }
    Ok(())
}

fn restore(signo: i32) {
    let Ok(ix) = usize::try_from(signo) else {
        return;
    };
    let old = SAVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(ix)
        .and_then(Option::take);
    if let Some(old) = old {
        // SAFETY: puts back the disposition `install` read from the kernel.
        unsafe { libc::sigaction(signo, &old, std::ptr::null_mut()) };
    }
}

/// Installs `sigaction` handlers that feed [`loop_core::signal::deliver`], and restores the
/// previous disposition on removal.
pub const SIGACTION: SignalInstaller = SignalInstaller { install, restore };

/// `on_signal` for any loop: [`EventLoop::add_signal_handler`] with [`SIGACTION`].
pub trait SignalExt: Sized {
    /// Run `handler(loop, signo)` on the loop thread when `signo` arrives. Needs an attached
    /// [`loop_core::Remote`]. Remove it with `remove_signal_handler`, which restores the
    /// previous disposition (so does closing or dropping the loop).
    ///
    /// # Errors
    /// As [`EventLoop::add_signal_handler`].
    fn on_signal<F>(&mut self, signo: i32, handler: F) -> Result<(), Refused<F>>
    where
        F: FnMut(&mut Self, i32) + 'static;
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> SignalExt
    for EventLoop<P, H, T, Q>
{
    fn on_signal<F>(&mut self, signo: i32, handler: F) -> Result<(), Refused<F>>
    where
        F: FnMut(&mut Self, i32) + 'static,
    {
        self.add_signal_handler(signo, SIGACTION, handler)
    }
}
