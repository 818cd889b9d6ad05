//! Teardown: `close` and `Drop`, one path, kernel state first, then the closures.

use super::*;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// Close the loop (Tornado's `close(all_fds=True)` for the fds it owns): every handler is
    /// removed, closing the fds handed over with `add_owned_handler` (borrowed fds are only
    /// deregistered), every signal disposition is restored, the [`Remote`] is closed
    /// ([`LoopHandle::add_callback`] returns [`Error::Closed`]), every task, timer and queued
    /// callback is dropped, and from now on `run`, `run_once` and every `add_*` return
    /// [`Error::Closed`] (closures handed back). Called from inside the loop, the loop leaves
    /// after the current step. Closing twice is a no-op. Dropping the loop does the same.
    ///
    /// The kernel-facing state goes first, then the closures one at a time: a capture whose
    /// drop panics is reported to the error hook (feature `std`) and the rest is still dropped
    /// (see the panic policy on [`EventLoop`]).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Interest, Remote};
    ///
    /// type Lp = EventLoop<SimPoller, 4, 4, 4>;
    /// static REMOTE: Remote<Lp, 4> = Remote::new();
    ///
    /// let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
    /// let handle = lp.attach_remote(&REMOTE)?;
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.call_later(Duration::from_secs(1), |_| {})?;
    /// lp.close();
    /// assert!(lp.is_closed());
    /// assert_eq!((lp.handler_count(), lp.timer_count()), (0, 0));
    /// assert_eq!(lp.poller().interest(3), None); // deregistered
    /// assert_eq!(lp.run(), Err(Error::Closed));
    /// assert_eq!(handle.add_callback(|_| {}).unwrap_err().error, Error::Closed);
    /// lp.close(); // a no-op
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.teardown();
    }

    /// The one teardown of `close` and `Drop`. Idempotent: after a panic unwound out of it
    /// (without `std`), calling it again finishes the job.
    pub(super) fn teardown(&mut self) {
        self.closed = true;
        // Without `std` a drop may unwind out of here: the guard finishes the teardown on the
        // way out (a second panic meanwhile aborts). With `std` every drop is caught.
        let resume = Resume(self);
        resume.0.release_kernel_state();
        if let Some(hooks) = resume.0.exec_hooks {
            (hooks.drop_tasks)(&mut *resume.0);
        }
        resume.0.drop_closures();
        core::mem::forget(resume);
    }

    /// Teardown, first step: nothing that could panic in user code runs before every signal
    /// disposition is restored and every fd deregistered (and closed if owned). The remote
    /// closes last: its queued closures are dropped inside `Remote::close`.
    pub(super) fn release_kernel_state(&mut self) {
        // Each disposition restored and the loop's registry entry released exactly once, also
        // if teardown runs again (a released entry may already be another loop's).
        if let Some(hooks) = self.signal_hooks {
            (hooks.release)(self);
        }
        self.flush_deferred(); // the deregistrations `remove_handler` left for the next poll
        let poller = &mut self.poller;
        self.handlers.release_all(|slot| {
            let _ = poller.deregister(slot.fd);
        });
        // `take`: once closed, the remote may serve another loop; this one must not close (or
        // pop from) that attachment later, e.g. in `drop`. `Remote::close` refuses producers,
        // releases the notifier and drops every queued closure, each exactly once, also when
        // one of their drops panics.
        if let Some(r) = self.remote.take() {
            if let Err(caught) = panic::catch(|| r.close()) {
                self.panicked(Source::Callback, "ioloop::Remote::close", caught);
            }
        }
        // The wake entry is the remote's: it may serve another loop from now on.
        self.remote_wake = None;
    }

    /// Teardown, second step: every closure the loop keeps, one at a time, each dropped under
    /// `catch` (feature `std`), so one panicking capture does not keep the others alive.
    pub(super) fn drop_closures(&mut self) {
        let mut cursor = 0;
        while let Some((id, slot)) = self.handlers.take_next(&mut cursor) {
            if let Some(f) = slot.handler {
                self.release(f, Source::Handler { id, fd: slot.fd });
            }
        }
        // Every waiting timer, in heap order, when one may run user code as it is dropped.
        // That costs a heap pop each (about 70 ms for 10^5 timers, against 0.2 ms for
        // `clear`), so it is skipped when no timer closure ever had drop glue: then nothing
        // can panic. `clear` then frees the rest, and the slot of a timer running right now
        // (its closure is held by the call site, which drops it when `finish` finds no slot).
        if self.timer_drop_glue {
            while let Some((handle, f, _)) = self.timers.pop_due(Instant::MAX, u64::MAX) {
                if let Some(f) = self.timers.finish(handle, f, Next::Done) {
                    self.release(f, Source::Timer { handle });
                }
            }
            self.timer_drop_glue = false;
        }
        self.timers.clear();
        while let Some(cb) = self.callbacks.pop() {
            self.release(cb, Source::Callback);
        }
        if let Some(hooks) = self.signal_hooks {
            (hooks.drop)(self);
        }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for EventLoop<P, H, T, Q>
{
    /// [`close`](EventLoop::close), then the error hook and the watchdog hook are dropped
    /// (a panic there is caught and dropped with `std`: there is no hook left to tell).
    fn drop(&mut self) {
        // Before the poller goes: no handle may write to a notifier whose reader is closed
        // (`teardown` closes the remote).
        self.teardown();
        let hooks = (self.error_hook.take(), self.watchdog.take());
        self.watched_call = None;
        self.watched_timer = None;
        if panic::catch(move || drop(hooks)).is_err() {
            self.counters.panics += 1;
        }
    }
}

/// Finishes a teardown that a panicking drop interrupted (without `std`).
struct Resume<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    &'a mut EventLoop<P, H, T, Q>,
);

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for Resume<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.0.release_kernel_state();
        self.0.drop_closures();
    }
}
