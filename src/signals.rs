//! Unix signals as loop events: [`SignalExt::on_signal`] runs your handler on the loop's
//! thread when `SIGTERM`, `SIGHUP`, … arrives (Tornado's `add_signal_handler`), so a graceful
//! shutdown or a reload is ordinary loop code.
//!
//! This module holds the [`SIGACTION`] installer (the platform half, `sigaction` through
//! `libc`: rustix has no signal-handler API) and the OS-free half from [`loop_core::signal`]
//! re-exported here ([`deliver`], [`SignalInstaller`], [`MAX_SIGNAL_LOOPS`], ...), so there is
//! one `signal` module.
//!
//! [`SIGACTION`] installs one process handler per signal, shared by every loop that handles
//! it (a count of users per signal): it calls the handler it replaced, if that was a function,
//! then [`deliver`] (atomics and one notifier write per loop: async-signal-safe), which wakes
//! every loop that handles the signal. The disposition it replaced comes back when the last
//! loop removes the signal (`remove_signal_handler`, `close`, drop). [`SignalExt::on_signal`]
//! is the short form. The rules for several loops are in [`loop_core::signal`].
//!
//! A loop needs an attached [`Remote`](loop_core::Remote) to handle signals (the signal handler
//! wakes the loop through it).
//!
//! # Examples
//!
//! ```
//! use ioloop::{EventLoop, Remote, SignalExt};
//!
//! static REMOTE: Remote<EventLoop, 64> = Remote::new();
//! let mut lp: EventLoop = EventLoop::new()?;
//! lp.attach_remote(&REMOTE)?;
//! lp.on_signal(libc::SIGUSR1, |lp, signo| {
//!     assert_eq!(signo, libc::SIGUSR1);
//!     lp.stop();
//! })?;
//! // SAFETY: raise(3) has no preconditions; SIGUSR1 is handled by the loop now.
//! unsafe { libc::raise(libc::SIGUSR1) };
//! lp.run()?; // returns after SIGUSR1; the previous disposition comes back on drop
//! # Ok::<(), ioloop::Error>(())
//! ```
//!
//! # Errors
//!
//! Registration hands the handler back in a [`Refused`] with
//! [`Error::NoRemote`](loop_core::Error::NoRemote) (no attached remote),
//! [`Error::InvalidSignal`](loop_core::Error::InvalidSignal) (outside 1..=63, or already
//! handled by this loop), [`Error::Full`](loop_core::Error::Full) (this loop's signal table
//! or the process-wide registry is full), [`Error::Os`](loop_core::Error::Os) when `sigaction`
//! refuses the signal (`EINVAL` for the signals listed on [`SIGACTION`]), or
//! [`Error::Closed`](loop_core::Error::Closed) / [`Error::Forked`](loop_core::Error::Forked).

pub use loop_core::signal::*;

use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use loop_core::{Errno, EventLoop, Poller, Refused};

/// Signal numbers the installer accepts: 1..=63.
const SIGNALS: usize = 64;

/// One signal's installation: how many loops handle it, and the disposition our handler
/// replaced (put back when the count drops to zero).
#[derive(Clone, Copy)]
struct Installed {
    users: u32,
    saved: Option<libc::sigaction>,
}

/// Touched only outside signal handlers (install and restore), so a mutex is fine here.
static INSTALLED: Mutex<[Installed; SIGNALS]> = Mutex::new(
    [Installed {
        users: 0,
        saved: None,
    }; SIGNALS],
);

/// The handler function our handler replaced, readable from the signal handler: a seqlock
/// (`generation` is odd while it is written), because the address and its calling convention
/// are two words. Written under `INSTALLED`'s lock, before our handler is installed.
struct Prev {
    generation: AtomicU32,
    action: AtomicUsize,
    siginfo: AtomicBool,
}

static PREV: [Prev; SIGNALS] = [const {
    Prev {
        generation: AtomicU32::new(0),
        action: AtomicUsize::new(libc::SIG_DFL),
        siginfo: AtomicBool::new(false),
    }
}; SIGNALS];

impl Prev {
    /// Record `old` as the disposition to chain to. Under `INSTALLED`'s lock.
    fn set(&self, old: &libc::sigaction) {
        self.store(old.sa_sigaction, old.sa_flags & libc::SA_SIGINFO != 0);
    }

    /// Chain to nothing: our handler is no longer the process's, and a foreign handler that
    /// still calls it must not be called back by it.
    fn clear(&self) {
        self.store(libc::SIG_DFL, false);
    }

    fn store(&self, action: usize, siginfo: bool) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.action.store(action, Ordering::Relaxed);
        self.siginfo.store(siginfo, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Call the replaced handler if it was a function. Async-signal-safe. A read that races a
    /// write (only possible while another thread installs the first loop's handler for this
    /// signal) skips the chain rather than wait: the writer may be the thread this interrupted.
    ///
    /// # Safety
    /// `info` and `context` are the ones the kernel passed to our handler.
    unsafe fn call(
        &self,
        signo: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        let before = self.generation.load(Ordering::Acquire);
        let action = self.action.load(Ordering::Relaxed);
        let siginfo = self.siginfo.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if before % 2 == 1 || self.generation.load(Ordering::Relaxed) != before {
            return;
        }
        if action == libc::SIG_DFL || action == libc::SIG_IGN || action == handler_address() {
            return;
        }
        if siginfo {
            type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
            // SAFETY: `action` is the `sa_sigaction` of a disposition the kernel reported,
            // with `SA_SIGINFO` set: a three-argument handler.
            let f = unsafe { std::mem::transmute::<usize, Action>(action) };
            f(signo, info, context);
        } else {
            type Handler = extern "C" fn(libc::c_int);
            // SAFETY: `action` is the `sa_handler` of a disposition the kernel reported,
            // without `SA_SIGINFO`: a one-argument handler.
            let f = unsafe { std::mem::transmute::<usize, Handler>(action) };
            f(signo);
        }
    }
}

/// Per signal, the thread (`pthread_self`) inside our handler's call of the previous one; 0 if
/// none.
static CHAINING: [AtomicUsize; SIGNALS] = [const { AtomicUsize::new(0) }; SIGNALS];

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

/// The process's handler for every signal a loop handles: chains to the handler it replaced,
/// then records the signal for every loop that handles it and wakes them
/// ([`loop_core::signal::deliver`]: atomics and one notifier write per loop). Async-signal-safe.
extern "C" fn on_signal(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // The wakes may write(2) and change errno under the code this signal interrupted.
    let location = errno_location();
    // SAFETY: this thread's errno slot.
    let saved = unsafe { *location };
    if let Some(ix) = usize::try_from(signo).ok().filter(|&i| i < SIGNALS) {
        // A handler installed over ours that chains back to it, and that ours now chains to
        // (ours was removed and installed again in between), would recurse forever: on the
        // thread already inside the chain, skip it.
        // SAFETY: `pthread_self` only reads the calling thread's id.
        let me = unsafe { libc::pthread_self() } as usize;
        let inside = &CHAINING[ix];
        if inside.load(Ordering::Relaxed) != me {
            let owner = inside
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
            // SAFETY: `info` and `context` come from the kernel.
            unsafe { PREV[ix].call(signo, info, context) };
            if owner {
                inside.store(0, Ordering::Release);
            }
        }
    }
    loop_core::signal::deliver(signo);
    // SAFETY: as above.
    unsafe { *location = saved };
}

fn handler_address() -> usize {
    on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize
}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL),
    )
}

/// The disposition of `signo` now.
fn current(signo: i32) -> Result<libc::sigaction, Errno> {
    // SAFETY: a query (null new action) into a zero-initialised C struct.
    unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, std::ptr::null(), &mut now) != 0 {
            return Err(last_errno());
        }
        Ok(now)
    }
}

fn install(signo: i32) -> Result<(), Errno> {
    let ix = usize::try_from(signo).map_err(|_| Errno::EINVAL)?;
    // Faults re-run the faulting instruction when a handler returns: as loop events they
    // would spin forever.
    if ix == 0
        || ix >= SIGNALS
        || [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&signo)
    {
        return Err(Errno::EINVAL);
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let state = &mut installed[ix];
    if state.users > 0 {
        state.users += 1;
        return Ok(());
    }
    // Record what we chain to before our handler can run (signal-hook-registry's order).
    let before = current(signo)?;
    PREV[ix].set(&before);
    // SAFETY: plain sigaction calls with zero-initialised, then filled, C structs; the handler
    // is async-signal-safe (see `on_signal`).
    let replaced = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler_address();
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, &sa, &mut old) != 0 {
            return Err(last_errno());
        }
        old
    };
    // Another thread changed it between the two calls: chain to what we really replaced.
    if replaced.sa_sigaction != before.sa_sigaction || replaced.sa_flags != before.sa_flags {
        PREV[ix].set(&replaced);
    }
    state.saved = Some(replaced);
    state.users = 1;
    Ok(())
}

fn restore(signo: i32) {
    let Ok(ix) = usize::try_from(signo) else {
        return;
    };
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(state) = installed.get_mut(ix) else {
        return;
    };
    if state.users == 0 {
        return;
    }
    state.users -= 1;
    if state.users > 0 {
        return;
    }
    let Some(saved) = state.saved.take() else {
        return;
    };
    // If someone replaced our handler since (and may chain to it), leave theirs in place, and
    // ours still chaining to what it replaced.
    if current(signo).is_ok_and(|now| now.sa_sigaction == handler_address()) {
        // SAFETY: puts back the disposition `install` read from the kernel.
        unsafe { libc::sigaction(signo, &saved, std::ptr::null_mut()) };
        PREV[ix].clear();
    }
}

/// Installs `sigaction` handlers that feed [`loop_core::signal::deliver`], counting the loops
/// that handle each signal: the first installs the handler, the last to remove it restores the
/// disposition it replaced. A handler function that was in place is chained (called first, with
/// the same arguments), as `signal-hook-registry` does. `SIGSEGV`, `SIGBUS`, `SIGILL` and
/// `SIGFPE` are refused (`EINVAL`): a handler that returns re-runs the faulting instruction.
///
/// # Examples
///
/// ```
/// use ioloop::signal::SIGACTION;
/// use ioloop::{EventLoop, Remote};
///
/// static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// let mut lp: EventLoop = EventLoop::new()?;
/// lp.attach_remote(&REMOTE)?;
/// // The long form of `on_signal`: any installer can be passed.
/// lp.add_signal_handler(libc::SIGUSR2, SIGACTION, |lp, _| lp.stop())?;
/// // A fault signal is refused: its handler would return into the faulting instruction.
/// let refused = lp.add_signal_handler(libc::SIGSEGV, SIGACTION, |_, _| {}).unwrap_err();
/// assert!(matches!(refused.error, ioloop::Error::Os { .. }));
/// assert!(lp.remove_signal_handler(libc::SIGUSR2)); // the old disposition is back
/// # Ok::<(), ioloop::Error>(())
/// ```
pub const SIGACTION: SignalInstaller = SignalInstaller { install, restore };

/// Handle a Unix signal (`SIGTERM`, `SIGHUP`, `SIGUSR1`, …) as a loop callback:
/// `lp.on_signal(signo, |lp, signo| ..)` on any loop, the short form of
/// [`add_signal_handler`](loop_core::EventLoop::add_signal_handler) with [`SIGACTION`]. The
/// handler runs on the loop's thread, outside the signal handler, so it may do anything a
/// callback does. The loop needs an attached [`Remote`](loop_core::Remote).
///
/// # Examples
///
/// ```
/// use ioloop::{EventLoop, Remote, SignalExt};
///
/// static REMOTE: Remote<EventLoop, 64> = Remote::new();
/// let mut lp: EventLoop = EventLoop::new()?;
/// // Without a remote, the handler is handed back.
/// let refused = lp.on_signal(libc::SIGHUP, |_, _| {}).unwrap_err();
/// assert_eq!(refused.error, ioloop::Error::NoRemote);
/// lp.attach_remote(&REMOTE)?;
/// lp.on_signal(libc::SIGHUP, |_lp, _| { /* reload the configuration */ })?;
/// # Ok::<(), ioloop::Error>(())
/// ```
pub trait SignalExt: Sized {
    /// Run `handler(loop, signo)` on the loop thread when `signo` arrives. Needs an attached
    /// [`loop_core::Remote`]. Every loop that handles `signo` gets each arrival. Remove it
    /// with `remove_signal_handler` (or close or drop the loop); the previous disposition comes
    /// back when the last loop that handles `signo` removed it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use ioloop::{EventLoop, Remote, SignalExt};
    /// static REMOTE: Remote<EventLoop, 64> = Remote::new();
    /// static RELOADS: AtomicU32 = AtomicU32::new(0);
    /// let mut lp: EventLoop = EventLoop::new()?;
    /// lp.attach_remote(&REMOTE)?;
    /// lp.on_signal(libc::SIGHUP, |lp, signo| {
    ///     assert_eq!(signo, libc::SIGHUP);
    ///     RELOADS.fetch_add(1, Ordering::Relaxed); // e.g. reload the configuration
    ///     lp.stop();
    /// })?;
    /// // SAFETY: raise(3) has no preconditions; SIGHUP is handled by the loop now.
    /// unsafe { libc::raise(libc::SIGHUP) };
    /// lp.run()?; // the handler ran on this thread, as a loop callback
    /// assert_eq!(RELOADS.load(Ordering::Relaxed), 1);
    /// # Ok::<(), ioloop::Error>(())
    /// ```
    ///
    /// # Errors
    /// `handler` comes back inside [`Refused`] (nothing is installed), with the errors of
    /// [`EventLoop::add_signal_handler`] listed in the [module docs](self#errors):
    /// [`Error::NoRemote`](loop_core::Error::NoRemote) without an attached remote,
    /// [`Error::InvalidSignal`](loop_core::Error::InvalidSignal),
    /// [`Error::Full`](loop_core::Error::Full); and [`loop_core::Error::Os`] with `EINVAL` for
    /// `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGKILL` and `SIGSTOP`.
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
