//! Construction: by value, in place (the tables are zero-initialised where they lie, never
//! on the stack) and boxed.

use super::*;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    /// A loop over `poller`, built by value. For large capacities use
    /// [`init_in`](Self::init_in) or (feature `alloc`) `with_poller_boxed`, which never place
    /// the tables on the stack.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop};
    ///
    /// // 8 fd handlers, 16 timers, 32 queued callbacks: every table inline, no allocation.
    /// let mut lp: EventLoop<SimPoller, 8, 16, 32> = EventLoop::with_poller(SimPoller::new());
    /// lp.call_later(Duration::from_secs(1), |lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(lp.now().as_nanos(), 1_000_000_000);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn with_poller(poller: P) -> Self {
        let mut slot = MaybeUninit::uninit();
        Self::init_in(&mut slot, poller);
        // SAFETY: `init_in` initialised every field.
        unsafe { slot.assume_init() }
    }

    /// Build a loop in place, in memory the caller provides (a `static`, a `Box`, a stack
    /// slot). Only the poller and a few words are written; the tables are zeroed in place, so a
    /// loop with 10^6 timer slots never passes through the stack.
    ///
    /// The slot is overwritten without dropping what was there.
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// type Big = EventLoop<SimPoller, 1024, 100_000, 1024>; // megabytes of timer slots
    /// let mut slot: Box<MaybeUninit<Big>> = Box::new_uninit();
    /// let lp = Big::init_in(&mut slot, SimPoller::new());
    /// lp.add_callback(|lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(lp.timer_count(), 0);
    /// // The caller owns the slot: drop the loop in place when done with it.
    /// // SAFETY: `init_in` initialised the slot, and it is not used again.
    /// unsafe { slot.assume_init_drop() };
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn init_in(slot: &mut MaybeUninit<Self>, poller: P) -> &mut Self {
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes of one `Self` (it comes from `&mut MaybeUninit<Self>`).
        // Each field is initialised exactly once through a raw field pointer, never read
        // before: the tables by zeroing (their `ZeroInit` impls make zero their empty state),
        // the rest by `write`. After the last write every field is initialised, so
        // `assume_init_mut` is sound.
        unsafe {
            zero_in_place(
                &mut *addr_of_mut!((*p).handlers)
                    .cast::<MaybeUninit<HandlerTable<HandlerFn<P, H, T, Q>, H>>>(),
            );
            zero_in_place(
                &mut *addr_of_mut!((*p).timers)
                    .cast::<MaybeUninit<TimerHeap<TimerFn<P, H, T, Q>, T>>>(),
            );
            zero_in_place(
                &mut *addr_of_mut!((*p).callbacks)
                    .cast::<MaybeUninit<CallbackQueue<CallbackFn<P, H, T, Q>, Q>>>(),
            );
            addr_of_mut!((*p).events).write([PollEvent::default(); EVENTS_PER_POLL]);
            addr_of_mut!((*p).running).write(false);
            addr_of_mut!((*p).stop_requested).write(false);
            addr_of_mut!((*p).error_hook).write(None);
            addr_of_mut!((*p).watchdog).write(None);
            addr_of_mut!((*p).watched_call).write(None);
            addr_of_mut!((*p).watched_timer).write(None);
            addr_of_mut!((*p).counters).write(Counters::default());
            addr_of_mut!((*p).idle_ns).write(0);
            addr_of_mut!((*p).closed).write(false);
            addr_of_mut!((*p).remote).write(None);
            addr_of_mut!((*p).remote_wake).write(None);
            addr_of_mut!((*p).signals).write([const { None }; MAX_SIGNAL_HANDLERS]);
            addr_of_mut!((*p).signal_count).write(0);
            addr_of_mut!((*p).suspects).write(heapless::Vec::new());
            addr_of_mut!((*p).executor).write(None);
            addr_of_mut!((*p).exec_hooks).write(None);
            addr_of_mut!((*p).run_remote).write(None);
            addr_of_mut!((*p).signal_hooks).write(None);
            addr_of_mut!((*p).caught).write(None);
            addr_of_mut!((*p).timer_drop_glue).write(false);
            addr_of_mut!((*p).clock).write(core::cell::Cell::new(None));
            addr_of_mut!((*p).poller).write(poller);
            slot.assume_init_mut()
        }
    }

    /// A loop over `poller` on the heap, built in place (no stack copy of the tables).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// // 10^6 timers: far too large for a stack, never passes through one.
    /// type Huge = EventLoop<SimPoller, 64, 1_000_000, 256>;
    /// let mut lp = Huge::with_poller_boxed(SimPoller::new());
    /// lp.add_callback(|lp| lp.stop())?;
    /// lp.run()?;
    /// assert_eq!(lp.counters().callbacks_run, 1);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[cfg(feature = "alloc")]
    pub fn with_poller_boxed(poller: P) -> alloc::boxed::Box<Self> {
        let mut b = alloc::boxed::Box::<Self>::new_uninit();
        Self::init_in(&mut b, poller);
        // SAFETY: `init_in` initialised every field.
        unsafe { b.assume_init() }
    }

    /// A loop over a freshly opened default poller.
    ///
    /// # Errors
    /// The OS error if the poller cannot be opened (`EMFILE`, `ENOMEM`).
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// // Any `OpenPoller` (the platform crates' epoll, kqueue and poll pollers; here the
    /// // simulated one, which never fails to open).
    /// let lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::new()?;
    /// assert_eq!(lp.handler_count(), 0);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error>
    where
        P: crate::OpenPoller,
    {
        Ok(Self::with_poller(P::open()?))
    }

    /// A loop over a freshly opened default poller, on the heap, built in place.
    ///
    /// # Errors
    /// The OS error if the poller cannot be opened.
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::EventLoop;
    ///
    /// let lp = EventLoop::<SimPoller, 64, 1_000_000, 256>::new_boxed()?;
    /// assert_eq!(lp.timer_count(), 0);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[cfg(feature = "alloc")]
    pub fn new_boxed() -> Result<alloc::boxed::Box<Self>, Error>
    where
        P: crate::OpenPoller,
    {
        Ok(Self::with_poller_boxed(P::open()?))
    }
}
