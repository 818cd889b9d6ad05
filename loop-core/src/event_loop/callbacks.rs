//! The callback queue: `add_callback` and the callbacks' step of the iteration.

use super::*;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    // ---------------------------------------------------------------------------------------
    // callbacks
    // ---------------------------------------------------------------------------------------

    /// Run `f` in the next iteration (or in this one, if the loop is not inside an iteration).
    /// Callbacks run first-in first-out; one added while callbacks run waits for the next
    /// iteration, and makes the next poll non-blocking.
    ///
    /// # Errors
    /// [`Error::Full`] (with `f` handed back) when `Q` callbacks are queued; [`Error::Closed`]
    /// after [`close`](Self::close).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Resource};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 2> = EventLoop::with_poller(SimPoller::new());
    /// let order = Rc::new(RefCell::new(Vec::new()));
    /// let o = order.clone();
    /// lp.add_callback(move |lp| {
    ///     o.borrow_mut().push(1);
    ///     let o = o.clone();
    ///     // Added while callbacks run: waits for the next iteration.
    ///     lp.add_callback(move |lp| {
    ///         o.borrow_mut().push(3);
    ///         lp.stop();
    ///     })
    ///     .ok();
    /// })?;
    /// let o = order.clone();
    /// lp.add_callback(move |_| o.borrow_mut().push(2))?;
    /// let refused = lp.add_callback(|_| {}).unwrap_err(); // Q = 2
    /// assert_eq!(refused.error, Error::Full { what: Resource::Callbacks });
    /// lp.run()?;
    /// assert_eq!(*order.borrow(), [1, 2, 3]);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_callback<F>(&mut self, f: F) -> Result<(), Refused<F>>
    where
        F: FnOnce(&mut Self) + 'static,
    {
        if self.closed {
            return Err(Refused {
                error: Error::Closed,
                value: f,
            });
        }
        if self.callbacks.len() >= Q {
            return Err(Refused {
                error: self.full(Resource::Callbacks),
                value: f,
            });
        }
        let queued = self
            .callbacks
            .push(InlineFn::once_named::<F, _>(move |lp: &mut Self, ()| f(lp)));
        debug_assert!(queued.is_ok(), "callback capacity checked before push");
        Ok(())
    }

    /// How many callbacks are queued.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 2> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_callback(|_| {})?;
    /// lp.add_callback(|_| {})?;
    /// assert_eq!(lp.callback_count(), 2);
    /// lp.run_once(Some(Duration::ZERO))?;
    /// assert_eq!(lp.callback_count(), 0);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn callback_count(&self) -> usize {
        self.callbacks.len()
    }

    /// Run the `n` callbacks that were queued when the iteration began, first-in first-out.
    /// A callback is out of the queue before it runs and consumed by its call: a panic leaves
    /// nothing to restore (its captures are dropped while unwinding).
    #[inline]
    pub(super) fn run_callbacks(&mut self, n: usize) {
        if Q == 0 {
            return; // no capacity: `add_callback` refuses every callback, none is ever queued
        }
        for _ in 0..n {
            let Some(cb) = self.callbacks.pop() else {
                break; // emptied by `close()`
            };
            self.counters.callbacks_run += 1;
            self.call_callback(cb);
        }
    }

    /// Call one callback, local or remote: consumed by its call, timed by the watchdog, a
    /// caught panic reported.
    #[inline(always)]
    pub(super) fn call_callback(&mut self, mut cb: CallbackFn<P, H, T, Q>) {
        let started = self.watch_start(|| cb.name());
        let outcome = panic::catch(|| cb.call(self, ()));
        self.watch_end(started, Source::Callback, || cb.name());
        if let Err(caught) = outcome {
            self.panicked(Source::Callback, cb.name(), caught);
        }
    }
}
