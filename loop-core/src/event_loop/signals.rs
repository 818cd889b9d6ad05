//! Signals as loop events: the per-loop handler slots and their step of the iteration.

use super::*;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// Run the handler of each signal in `mask` (the signals that arrived since the last
    /// iteration) once.
    #[inline]
    pub(super) fn run_signal_handlers(&mut self, mask: u64) {
        if mask == 0 {
            return;
        }
        if let Some(hooks) = self.signal_hooks {
            (hooks.run)(self, mask);
        }
    }

    /// What [`signal_hooks`](Self::signal_hooks) points to once a handler was added.
    const SIGNAL_HOOKS: SignalHooks<Self> = SignalHooks {
        run: Self::run_signal_handlers_in,
        take_pending: signal::take_pending,
        any_pending: signal::any_pending,
        release: Self::release_signals,
        drop: Self::drop_signal_handlers,
    };

    /// Teardown, kernel state: restore each disposition and release the loop's registry
    /// entry, exactly once, also if teardown runs again (a released entry may already be
    /// another loop's).
    fn release_signals(&mut self) {
        let mut entry = None;
        for slot in self.signals.iter_mut().flatten() {
            if slot.released {
                continue;
            }
            slot.released = true;
            signal::unwant(slot.entry, slot.signo);
            (slot.restore)(slot.signo);
            entry = Some(slot.entry);
        }
        if let Some(entry) = entry {
            signal::release(entry);
        }
    }

    /// Teardown, closures: drop every signal handler.
    fn drop_signal_handlers(&mut self) {
        for i in 0..MAX_SIGNAL_HANDLERS {
            if let Some(slot) = self.signals[i].take() {
                self.signal_count -= 1;
                if let Some(f) = slot.handler {
                    self.release(f, Source::Signal { signo: slot.signo });
                }
            }
        }
    }

    #[inline(never)]
    fn run_signal_handlers_in(&mut self, mask: u64) {
        for i in 0..MAX_SIGNAL_HANDLERS {
            let Some(slot) = self.signals[i].as_mut() else {
                continue;
            };
            let signo = slot.signo;
            if mask & (1 << signo) == 0 || self.closed {
                continue;
            }
            let Some(f) = slot.handler.take() else {
                continue;
            };
            let source = Source::Signal { signo };
            // The guard puts the closure back (unless the handler removed or replaced itself),
            // also when a panic unwinds through here.
            let mut call = SignalCall {
                lp: self,
                i,
                signo,
                f: Some(f),
            };
            let started = call
                .lp
                .watch_start(|| call.f.as_ref().map_or("", |f| f.name()));
            let outcome = match call.f.as_mut() {
                Some(f) => {
                    let lp = &mut *call.lp;
                    panic::catch(|| f.call(lp, signo))
                }
                None => Ok(()),
            };
            let name = || call.f.as_ref().map_or("", |f| f.name());
            call.lp.watch_end(started, source, name);
            let name = outcome.is_err().then(name);
            drop(call);
            if let (Err(caught), Some(name)) = (outcome, name) {
                self.panicked(source, name, caught);
            }
        }
    }

    /// Run `handler(loop, signo)` on the loop thread whenever signal `signo` arrives
    /// (Tornado's `signal.set_wakeup_fd` pattern, as loop events). `installer` puts the OS
    /// handler in place and later restores the previous disposition; the `ioloop` facade
    /// provides one (`ioloop::signals::SIGACTION`, or `ioloop::SignalExt::on_signal`).
    /// Several arrivals between two iterations run the handler once. Needs an attached
    /// [`Remote`]: the signal wakes the loop through it.
    ///
    /// Any number of loops, on any threads, may handle the same or different signals (up to
    /// [`MAX_SIGNAL_LOOPS`](crate::signal::MAX_SIGNAL_LOOPS) loops at once): every loop that
    /// registered `signo` gets each arrival, and removing it from one loop leaves it, and the
    /// process's handler, in place for the others. See [`crate::signal`] for the rules.
    ///
    /// # Errors
    /// The handler comes back inside [`Refused`] with [`Error::NoRemote`],
    /// [`Error::InvalidSignal`] (outside 1..=63 or already handled here),
    /// [`Error::Full`] with [`Resource::SignalHandlers`] (this loop's `MAX_SIGNAL_HANDLERS`
    /// are taken, or `MAX_SIGNAL_LOOPS` other loops already handle signals), [`Error::Os`]
    /// from the installer, or [`Error::Closed`] / [`Error::Forked`].
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::signal::{deliver, SignalInstaller};
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// // The facade passes `ioloop::signals::SIGACTION`; a simulation installs nothing.
    /// const NO_OS: SignalInstaller = SignalInstaller { install: |_| Ok(()), restore: |_| {} };
    /// const SIGTERM: i32 = 15;
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let refused = lp.add_signal_handler(SIGTERM, NO_OS, |lp, _| lp.stop()).unwrap_err();
    /// assert_eq!(refused.error, Error::NoRemote); // signals wake the loop through its remote
    /// lp.attach_remote(&REMOTE)?;
    /// lp.add_signal_handler(SIGTERM, NO_OS, |lp, _| lp.stop())?;
    /// lp.call_later(Duration::from_secs(1), |_| deliver(SIGTERM))?; // as the OS handler would
    /// lp.call_later(Duration::from_secs(9), |_| {})?;
    /// lp.run()?; // stopped by the "signal" at 1 s, not at 9 s
    /// assert_eq!(lp.now().as_nanos(), 1_000_000_000);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_signal_handler<F>(
        &mut self,
        signo: i32,
        installer: SignalInstaller,
        handler: F,
    ) -> Result<(), Refused<F>>
    where
        F: FnMut(&mut Self, i32) + 'static,
    {
        let refuse = |error, value| Err(Refused { error, value });
        if let Err(e) = self.usable() {
            return refuse(e, handler);
        }
        let Some(wake) = self.remote_wake else {
            return refuse(Error::NoRemote, handler);
        };
        if !(1..=63).contains(&signo) || self.signals.iter().flatten().any(|s| s.signo == signo) {
            return refuse(Error::InvalidSignal { signo }, handler);
        }
        let full = Error::Full {
            what: Resource::SignalHandlers,
        };
        let Some(free) = self.signals.iter().position(Option::is_none) else {
            return refuse(full, handler);
        };
        // The loop's first signal claims its registry entry; the entry is released when the
        // last one goes (here on failure, or in `remove_signal_handler` / close / drop).
        let Some(entry) = signal::claim(wake) else {
            return refuse(full, handler);
        };
        if let Err(errno) = (installer.install)(signo) {
            if self.signal_count == 0 {
                signal::release(entry);
            }
            return refuse(Error::Os { errno }, handler);
        }
        signal::want(entry, signo);
        let mut handler = handler;
        self.signals[free] = Some(SignalSlot {
            signo,
            handler: Some(InlineFn::named::<F, _>(move |lp: &mut Self, s| {
                handler(lp, s)
            })),
            restore: installer.restore,
            entry,
            released: false,
        });
        self.signal_count += 1;
        self.signal_hooks = Some(&Self::SIGNAL_HOOKS);
        Ok(())
    }

    /// Remove the handler of `signo`. The process's disposition goes back to what it was
    /// before the first loop added `signo` only when no other loop handles it any more (tokio
    /// never restores it: tokio#7905); other loops keep receiving `signo`. Returns whether
    /// there was one. A handler may remove itself.
    ///
    /// ```
    /// use core::{cell::Cell, time::Duration};
    /// use std::rc::Rc;
    /// use loop_core::signal::{deliver, SignalInstaller};
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    /// const NO_OS: SignalInstaller = SignalInstaller { install: |_| Ok(()), restore: |_| {} };
    /// const SIGHUP: i32 = 1;
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_remote(&REMOTE)?;
    /// let reloads = Rc::new(Cell::new(0));
    /// let r = reloads.clone();
    /// lp.add_signal_handler(SIGHUP, NO_OS, move |_, _| r.set(r.get() + 1))?;
    /// deliver(SIGHUP);
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert!(lp.remove_signal_handler(SIGHUP));
    /// assert!(!lp.remove_signal_handler(SIGHUP)); // already gone
    /// deliver(SIGHUP);
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(reloads.get(), 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn remove_signal_handler(&mut self, signo: i32) -> bool {
        let Some(i) = self
            .signals
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.signo == signo))
        else {
            return false;
        };
        if let Some(slot) = self.signals[i].take() {
            signal::unwant(slot.entry, signo);
            (slot.restore)(signo);
            self.signal_count -= 1;
            if self.signal_count == 0 {
                signal::release(slot.entry);
            }
            if let Some(f) = slot.handler {
                self.release(f, Source::Signal { signo });
            }
        }
        true
    }
}

/// The signal steps of the iteration and of teardown, reached through a pointer that only
/// `add_signal_handler` sets (see `EventLoop::signal_hooks`).
pub(super) struct SignalHooks<L> {
    /// Run the handlers of the signals in the mask.
    pub(super) run: fn(&mut L, u64),
    /// Take the signals that arrived for the loop with this remote wake entry.
    pub(super) take_pending: fn(Option<&'static WakeEntry>) -> u64,
    /// Whether signals arrived for it that it has not taken yet.
    pub(super) any_pending: fn(Option<&'static WakeEntry>) -> bool,
    /// Restore the dispositions, release the registry entry.
    pub(super) release: fn(&mut L),
    /// Drop the handlers.
    pub(super) drop: fn(&mut L),
}

/// A signal handler's closure, out of its slot for the call; put back on drop unless the
/// handler removed or replaced itself.
struct SignalCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    i: usize,
    signo: i32,
    f: Option<InlineFn<EventLoop<P, H, T, Q>, i32, ()>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for SignalCall<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        let Some(f) = self.f.take() else { return };
        match self.lp.signals[self.i].as_mut() {
            Some(slot) if slot.signo == self.signo && slot.handler.is_none() => {
                slot.handler = Some(f);
            }
            _ => {
                let source = Source::Signal { signo: self.signo };
                self.lp.release(f, source);
            }
        }
    }
}
