//! fd handlers: adding, updating and removing them, and the async I/O registrations' readiness.

use super::*;
use crate::tables::handler_table::{alias_delta, Deferred, Taken};

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> EventLoop<P, H, T, Q> {
    // ---------------------------------------------------------------------------------------
    // fd handlers
    // ---------------------------------------------------------------------------------------

    /// Call `handler(loop, fd, readiness)` whenever `fd` is ready for `interest`.
    ///
    /// `ERROR` is always added to `interest`: the handler is also called for errors and
    /// hang-ups ([`Readiness::ERROR`], [`Readiness::HUP`]). It is never shown READ or WRITE it
    /// did not ask for. The loop does not own `fd`: keep it open until the handler is removed.
    /// A handler that returns an error is reported to the error hook (`EPIPE` is ignored) and
    /// stays registered.
    ///
    /// The handler receives the fd as a number ([`RawFd`]), not as a `BorrowedFd`: the loop
    /// does not own it, so it cannot vouch that the fd is still open when the handler runs
    /// (safe code may have closed it, and the number may name another file by now), and a
    /// `BorrowedFd` is exactly that promise. Use the number to name the registration
    /// (`update_handler`, `remove_handler`); to read or write, use what owns the fd: capture
    /// the socket in the closure, or hand it to the loop with
    /// [`add_owned_handler`](Self::add_owned_handler), whose handler receives a `BorrowedFd`.
    ///
    /// # Errors
    /// The handler comes back inside [`Refused`] with:
    /// [`Error::InvalidFd`] for a negative fd or one the poller cannot represent;
    /// [`Error::AlreadyRegistered`] if `fd` has a handler (which is left untouched);
    /// [`Error::Full`] when `H` handlers are registered;
    /// [`Error::Os`] when the kernel refuses (`EBADF` for a closed fd, `EPERM` for a regular
    /// file on epoll, `ENOSPC` at the kernel's watch limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |lp, fd, ready| {
    ///     assert_eq!((fd, ready), (3, Readiness::READ));
    ///     lp.stop();
    ///     Ok(())
    /// })?;
    /// // A second handler for the same fd is refused and handed back; the first stays.
    /// let refused = lp.add_handler(3, Interest::READ, |_, _, _| Ok(())).unwrap_err();
    /// assert_eq!(refused.error, loop_core::Error::AlreadyRegistered { fd: 3 });
    /// lp.poller_mut().set_ready(3, Readiness::READ);
    /// lp.run()?;
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_handler<F>(
        &mut self,
        fd: impl Into<Fd>,
        interest: Interest,
        handler: F,
    ) -> Result<HandlerId, Refused<F>>
    where
        F: FnMut(&mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.add_handler_inner(fd.into().raw(), interest, false, handler)
    }

    /// As [`add_handler`](Self::add_handler), but the loop takes ownership of `fd` (an
    /// [`OwnedFd`](std::os::fd::OwnedFd), or anything that converts into one: a `TcpStream`,
    /// `UnixStream`, `File`, …) and closes it when the handler is removed or the loop is closed
    /// or dropped. Because the loop owns the fd, the handler receives it as a
    /// [`BorrowedFd`](std::os::fd::BorrowedFd): read and write through it with no `unsafe`.
    ///
    /// The fd is stored with the handler's closure and closed when that closure is dropped:
    /// a handler that removes itself (or closes the loop) keeps a valid fd until it returns,
    /// and the fd is closed right after, exactly once (also when the handler panics). The
    /// closure may capture up to [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES) − 8
    /// bytes (the fd is stored with it).
    ///
    /// ```
    /// use loop_core::{sim::SimPoller, EventLoop, Interest, Readiness};
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let mut lp: EventLoop<SimPoller<8>, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let (ours, mut peer) = UnixStream::pair()?;
    /// let raw = ours.as_raw_fd();
    /// lp.add_owned_handler(ours, Interest::READ, |lp, fd, _| {
    ///     let mut buf = [0; 8];
    ///     let n = (&UnixStream::from(fd.try_clone_to_owned()?)).read(&mut buf)?;
    ///     assert_eq!(&buf[..n], b"hi");
    ///     lp.remove_handler(fd); // closed once this call returns
    ///     Ok(())
    /// })
    /// .map_err(|r| r.error)?;
    /// peer.write_all(b"hi")?;
    /// lp.poller_mut().set_ready(raw, Readiness::READ); // the simulation's "data arrived"
    /// lp.run_once(None)?;
    /// assert_eq!(lp.handler_count(), 0);
    /// assert_eq!(peer.read(&mut [0; 1])?, 0, "the loop closed its end");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The `BorrowedFd` lives only for the call: a handler cannot keep it for later (when the
    /// fd may be closed).
    ///
    /// ```compile_fail,E0521
    /// use loop_core::{sim::SimPoller, EventLoop, Interest};
    /// use std::{cell::Cell, os::fd::BorrowedFd, rc::Rc};
    ///
    /// let mut lp: EventLoop<SimPoller<8>, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let (ours, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let kept: Rc<Cell<Option<BorrowedFd<'static>>>> = Rc::default();
    /// let k = kept.clone();
    /// let _ = lp.add_owned_handler(ours, Interest::READ, move |_, fd, _| {
    ///     k.set(Some(fd)); // error[E0521]: borrowed data escapes outside of closure
    ///     Ok(())
    /// });
    /// ```
    ///
    /// # Errors
    /// As `add_handler`; the fd (as an `OwnedFd`, still open) and the handler come back
    /// inside [`Refused`].
    #[cfg(all(feature = "std", unix))]
    pub fn add_owned_handler<F>(
        &mut self,
        fd: impl Into<std::os::fd::OwnedFd>,
        interest: Interest,
        handler: F,
    ) -> Result<HandlerId, Refused<(std::os::fd::OwnedFd, F)>>
    where
        F: for<'a> FnMut(&mut Self, std::os::fd::BorrowedFd<'a>, Readiness) -> HandlerResult
            + 'static,
    {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        // `owned`: the closure owns the fd, so it is closed when the closure is dropped (after
        // the poller forgot it: the removal is never deferred), never while a call has it
        // borrowed. The loop itself closes nothing.
        self.register_then(raw, interest, true, (fd, handler), |(fd, mut handler)| {
            InlineFn::named::<F, _>(move |lp: &mut Self, (_, r)| handler(lp, fd.as_fd(), r))
        })
    }

    pub(super) fn add_handler_inner<F>(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        handler: F,
    ) -> Result<HandlerId, Refused<F>>
    where
        F: FnMut(&mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.register_then(fd, interest, owned, handler, |mut handler| {
            InlineFn::named::<F, _>(move |lp: &mut Self, (fd, r)| handler(lp, fd, r))
        })
    }

    /// Reserve a slot and register `fd` with the poller; only then turn `value` into the
    /// stored handler with `wrap`, so every refusal hands `value` back untouched.
    pub(super) fn register_then<V>(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        value: V,
        wrap: impl FnOnce(V) -> HandlerFn<P, H, T, Q>,
    ) -> Result<HandlerId, Refused<V>> {
        match self.reserve_registered_as(fd, interest, owned, Mode::Level, true) {
            Ok((id, alias)) => {
                if let Some(place) = self.handlers.handler_place(id, alias) {
                    *place = Some(wrap(value));
                }
                Ok(id)
            }
            Err(error) => Err(Refused { error, value }),
        }
    }

    /// The one way into the handler table (handlers and async I/O registrations alike):
    /// check the loop and `fd`, reserve a slot, register `fd` with the poller for
    /// `interest` (plus `ERROR`), and free the slot again if the poller refuses.
    pub(super) fn reserve_registered(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        mode: Mode,
    ) -> Result<HandlerId, Error> {
        // Not an fd handler: never an alias.
        self.reserve_registered_as(fd, interest, owned, mode, false)
            .map(|(id, _)| id)
    }

    /// [`reserve_registered`](Self::reserve_registered); `handler`: for an fd handler (not an
    /// async I/O registration), which may take over a deferred registration without moving
    /// it to its own key: then the alias distance comes back with the id, for
    /// [`HandlerTable::handler_place`](crate::tables::handler_table) (0: none).
    fn reserve_registered_as(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        mode: Mode,
        handler: bool,
    ) -> Result<(HandlerId, u8), Error> {
        self.usable()?;
        if fd < 0 {
            return Err(Error::InvalidFd { fd });
        }
        let interest = interest.registered();
        let id = match self.handlers.reserve(fd, interest, owned) {
            Ok(id) => id,
            Err(InsertError::Duplicate) => return Err(Error::AlreadyRegistered { fd }),
            Err(InsertError::Full) => return Err(self.full(Resource::Handlers)),
        };
        let registered = if let Some(old) = self.handlers.take_deferred(fd) {
            self.take_over_registration(fd, id, interest, mode, old, handler)
        } else {
            self.poller
                .register(fd, id.key(), interest, mode)
                .map(|()| 0)
        };
        let alias = match registered {
            Ok(alias) => alias,
            Err(error) => {
                self.handlers.remove_id(id);
                return Err(error);
            }
        };
        // Raised here rather than before each poll: an I/O-only iteration samples nothing.
        let c = &mut self.counters;
        c.handlers_high_water = c.handlers_high_water.max(self.handlers.len());
        Ok((id, alias))
    }

    /// Register `fd` for a new handler while the registration of its removed handler is still
    /// with the poller (the removal was deferred, [`Changes`](crate::tables::handler_table)).
    ///
    /// An fd handler with the old interest, in the old slot, on a poller whose `EEXIST` is
    /// exact ([`Poller::register_eexist_is_exact`], epoll) does what libev does: a `register`,
    /// which the kernel refuses with `EEXIST` while the file is still registered (it then
    /// stays as it is, and the table maps the old key to the new handler, from the next
    /// poll on: the alias distance returned, which the caller gives the table with the
    /// handler), or accepts if the number now names another file (the old registration is
    /// gone with its file, or outlives it behind a `dup`: the next stale event tells). A
    /// refused register costs the kernel half of what a `modify` does (measured at 10^4 fds).
    ///
    /// Otherwise one `modify` to the new key and interest. If the poller refuses (the fd was
    /// closed, or its number now names another file, which has no registration), do what the
    /// removal deferred and register afresh, so the caller sees exactly the errors a plain
    /// registration gives.
    #[inline]
    fn take_over_registration(
        &mut self,
        fd: RawFd,
        id: HandlerId,
        interest: Interest,
        mode: Mode,
        old: Deferred,
        handler: bool,
    ) -> Result<u8, Error> {
        let key = id.key();
        let keep = handler && mode == Mode::Level && old.interest == interest;
        if let Some(delta) = keep.then(|| alias_delta(id, old.key)).flatten() {
            if self.poller.register_eexist_is_exact() {
                match self.poller.register(fd, key, interest, mode) {
                    Ok(()) => {
                        self.handlers.note_possible_orphan();
                        return Ok(0);
                    }
                    Err(Error::Os {
                        errno: Errno::EEXIST,
                    }) => return Ok(delta),
                    Err(_) => {} // closed, or refused: as below
                }
            }
        }
        self.move_registration(fd, key, interest, mode).map(|()| 0)
    }

    /// [`take_over_registration`](Self::take_over_registration) by `modify`, and if that is
    /// refused, by the deferred deregistration and a fresh registration.
    #[inline(never)]
    fn move_registration(
        &mut self,
        fd: RawFd,
        key: u64,
        interest: Interest,
        mode: Mode,
    ) -> Result<(), Error> {
        if self.poller.modify(fd, key, interest, mode).is_ok() {
            return Ok(());
        }
        self.deregister_deferred(fd);
        self.poller.register(fd, key, interest, mode)
    }

    /// The deferred kernel side of a removal. `EBADF` (closed since) or `ENOENT` (the number
    /// was reused by a file that has no registration): if a `dup` keeps the old file open, its
    /// registration lives on; an event for a dead key from a later poll will prove it.
    fn deregister_deferred(&mut self, fd: RawFd) {
        if let Err(Error::Os {
            errno: Errno::EBADF | Errno::ENOENT,
        }) = self.poller.deregister(fd)
        {
            self.handlers.note_possible_orphan();
        }
    }

    /// Apply the deferred deregistrations (before a poll, and before the poller is handed out).
    #[cold]
    #[inline(never)]
    pub(super) fn flush_deferred(&mut self) {
        while let Some(fd) = self.handlers.pop_deferred() {
            self.deregister_deferred(fd);
        }
    }

    /// Before each poll: apply the deferred deregistrations, and note that the events about to
    /// be fetched postdate every removal so far.
    #[inline(always)]
    pub(super) fn changes_before_poll(&mut self) {
        if self.handlers.has_deferred() {
            self.flush_deferred();
        }
        self.handlers.poll_begins();
    }

    /// As [`add_handler`](Self::add_handler), with the handler split into a function and the
    /// state it works on: `handler(&mut state, loop, fd, readiness)`. On refusal the state
    /// comes back as it was given (with the function), so code that keeps a caller's value
    /// inside its handler's state can return that value — which a refused closure, being
    /// opaque, cannot offer. State and function together may capture up to
    /// [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES).
    ///
    /// # Errors
    /// As [`add_handler`](Self::add_handler); `(state, handler)` come back inside [`Refused`].
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let mut lp: EventLoop<SimPoller, 1, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler_with_state(3, Interest::READ, 0u32, |n, lp, _fd, _ready| {
    ///     *n += 1;
    ///     if *n == 2 {
    ///         lp.stop();
    ///     }
    ///     Ok(())
    /// })?;
    /// // The table (one handler) is full: the state comes back with the function.
    /// let refused = lp
    ///     .add_handler_with_state(4, Interest::READ, String::from("mine"), |_, _, _, _| Ok(()))
    ///     .unwrap_err();
    /// assert_eq!(refused.value.0, "mine");
    /// lp.poller_mut().set_ready(3, Readiness::READ); // level-triggered: twice
    /// lp.run()?;
    /// # let _ = Duration::ZERO;
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn add_handler_with_state<S, F>(
        &mut self,
        fd: impl Into<Fd>,
        interest: Interest,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(S, F)>>
    where
        S: 'static,
        F: FnMut(&mut S, &mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    {
        self.with_state_inner(fd.into().raw(), interest, false, state, handler)
    }

    /// [`add_handler_with_state`](Self::add_handler_with_state) for an fd the loop takes
    /// ownership of (closed when the handler is removed, as
    /// [`add_owned_handler`](Self::add_owned_handler), whose handler also receives a
    /// [`BorrowedFd`](std::os::fd::BorrowedFd)): `handler(&mut state, loop, fd, readiness)`.
    /// State and function together may capture up to
    /// [`INLINE_CAPTURE_BYTES`](crate::INLINE_CAPTURE_BYTES) − 8 bytes.
    ///
    /// # Errors
    /// As `add_owned_handler`; the fd (as an `OwnedFd`, still open), the state and the
    /// function come back inside [`Refused`].
    #[cfg(all(feature = "std", unix))]
    pub fn add_owned_handler_with_state<S, F>(
        &mut self,
        fd: impl Into<std::os::fd::OwnedFd>,
        interest: Interest,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(std::os::fd::OwnedFd, S, F)>>
    where
        S: 'static,
        F: for<'a> FnMut(
                &mut S,
                &mut Self,
                std::os::fd::BorrowedFd<'a>,
                Readiness,
            ) -> HandlerResult
            + 'static,
    {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        // As `add_owned_handler`: the closure owns the fd.
        self.register_then(
            raw,
            interest,
            true,
            (fd, state, handler),
            |(fd, mut state, mut handler)| {
                InlineFn::named::<F, _>(move |lp: &mut Self, (_, r)| {
                    handler(&mut state, lp, fd.as_fd(), r)
                })
            },
        )
    }

    pub(super) fn with_state_inner<
        S: 'static,
        F: FnMut(&mut S, &mut Self, RawFd, Readiness) -> HandlerResult + 'static,
    >(
        &mut self,
        fd: RawFd,
        interest: Interest,
        owned: bool,
        state: S,
        handler: F,
    ) -> Result<HandlerId, Refused<(S, F)>> {
        self.register_then(
            fd,
            interest,
            owned,
            (state, handler),
            |(mut state, mut handler)| {
                InlineFn::named::<F, _>(move |lp: &mut Self, (fd, r)| {
                    handler(&mut state, lp, fd, r)
                })
            },
        )
    }

    /// Change what the handler of `fd` is called for. `ERROR` is always added. An unchanged
    /// interest costs no system call.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if `fd` has no handler; [`Error::Os`] if the kernel refuses
    /// (the old interest then stays in force).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.update_handler(3, Interest::READ | Interest::WRITE)?;
    /// assert!(lp.poller().interest(3).unwrap().contains(Interest::WRITE));
    /// assert!(lp.update_handler(4, Interest::READ).is_err()); // no handler for fd 4
    /// # let _ = (Duration::ZERO, Readiness::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[inline]
    pub fn update_handler(&mut self, fd: impl Into<Fd>, interest: Interest) -> Result<(), Error> {
        self.update_handler_raw(fd.into().raw(), interest)
    }

    /// [`update_handler`](Self::update_handler) past the fd conversion: one copy whatever
    /// the callers' fd types. Inlined where the optimizer finds it worth it (not for size).
    #[inline]
    fn update_handler_raw(&mut self, fd: RawFd, interest: Interest) -> Result<(), Error> {
        let interest = interest.registered();
        let Some((id, slot, tag, epoch)) = self.handlers.lookup_mut(fd) else {
            return Err(Error::NotRegistered { fd });
        };
        if slot.interest == interest {
            return Ok(());
        }
        self.poller.modify(fd, id.key(), interest, Mode::Level)?;
        slot.interest = interest;
        // The poller has the handler's own key now: an old key it took over dies with this
        // poll (an event this poll fetched under it is still the handler's, as it would have
        // been under its own key; a key the poller no longer holds never reaches a handler
        // in a later poll).
        slot.retire_alias(tag, epoch);
        Ok(())
    }

    /// Stop watching `fd` and drop its handler (closing the fd if the loop owns it). Returns
    /// whether `fd` had a handler; removing an unknown fd is a no-op, as in Tornado.
    ///
    /// An event already fetched for `fd` in this iteration is dropped: the handler is never
    /// called after this returns. A handler may remove itself. Remove the handler before
    /// closing a borrowed fd: epoll watches the open file description, and a `dup` of it would
    /// keep reporting events. Should the removal come after the close anyway (the kernel then
    /// answers `EBADF`), the loop remembers the registration's key. Usually the kernel forgot
    /// the registration with the fd and nothing more happens; if a stale event for that key
    /// arrives (a `dup` keeps the file open: epoll's dup trap), the loop resets the poller
    /// ([`Poller::reset`]: epoll gets a fresh instance) and registers every live handler again,
    /// so the stale registration cannot keep the loop busy. That costs a system call per live
    /// handler, once per trap; a handler that cannot be registered again is reported to the
    /// error hook. More than a few such removals pending at once reset right away. With
    /// [`set_deferred_removal`](Self::set_deferred_removal) on, the deregistration of a
    /// borrowed fd waits for the next poll (or an add of the same fd, which takes it over).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |lp, fd, _| {
    ///     assert!(lp.remove_handler(fd)); // a handler may remove itself
    ///     Ok(())
    /// })?;
    /// lp.poller_mut().set_ready(3, Readiness::READ);
    /// lp.run_once(Some(Duration::ZERO))?; // called once, removed
    /// lp.run_once(Some(Duration::ZERO))?; // still ready, but nothing to call
    /// assert_eq!(lp.handler_count(), 0);
    /// assert!(!lp.remove_handler(3)); // unknown fd: a no-op
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[inline]
    pub fn remove_handler(&mut self, fd: impl Into<Fd>) -> bool {
        self.remove_handler_raw(fd.into().raw())
    }

    /// [`remove_handler`](Self::remove_handler) past the fd conversion: one copy whatever
    /// the callers' fd types. Inlined where the optimizer finds it worth it (not for size).
    #[inline]
    fn remove_handler_raw(&mut self, fd: RawFd) -> bool {
        let Some((id, mut slot)) = self.handlers.remove(fd) else {
            return false;
        };
        self.handlers.note_removal();
        let parked = slot.io.as_ref().is_some_and(|io| io.parked);
        // A parked I/O registration is already deregistered. With deferred removal on, a
        // borrowed fd's deregistration waits for the next poll (an add of the same fd before
        // it takes the registration over); otherwise it happens now: for an owned fd (closed
        // when its closure is dropped, below or by the call site if it is running) and for an
        // async I/O registration (its stream closes the fd right after dropping it), so no
        // registration outlives its fd while a `dup` or a forked child keeps the file open.
        let key = slot.kernel_key(id);
        if slot.io.is_none() && !slot.owned && self.handlers.deferring() {
            let interest = slot.interest;
            let d = Deferred { fd, interest, key };
            if !self.handlers.defer_deregister(d) {
                self.flush_deferred();
                let _deferred = self.handlers.defer_deregister(d); // room: the list is empty
            }
        } else if !parked {
            if let Err(Error::Os {
                errno: Errno::EBADF,
            }) = self.poller.deregister(fd)
            {
                // Closed before it was removed: a trap only if a stale event shows up.
                if self.suspects.push((key, fd)).is_err() {
                    self.suspects.clear();
                    self.recover_from_failed_deregister(id, fd, Errno::EBADF);
                }
            }
        }
        self.release_in_place(&mut slot.handler, Source::Handler { id, fd });
        true
    }

    /// [`release`](Self::release) for a closure kept in an `Option`, dropped where it is
    /// (`None` afterwards, also if its drop panicked): no copy of the 64 bytes into the
    /// guarded call, and the closure's name read only if its drop panicked.
    #[inline]
    fn release_in_place(&mut self, f: &mut Option<HandlerFn<P, H, T, Q>>, source: Source) {
        let Some(name) = f.as_ref().map(InlineFn::namer) else {
            return;
        };
        // An assignment drops the old value in place; should that drop panic, the new value
        // is written on the unwinding path too, so `f` is `None` either way.
        if let Err(caught) = panic::catch(|| *f = None) {
            self.panicked(source, name(), caught);
        }
    }

    /// Defer the kernel side of [`remove_handler`](Self::remove_handler) to the next poll
    /// (libev's `fdchanges`; off by default). A removal followed, before the next poll, by an
    /// add of the same fd (libevent bench.c's `event_del` + `event_add`) then costs one
    /// `Poller::modify` (to the new handler's key and interest) instead of a `deregister` and
    /// a `register`; a removal not followed by an add is deregistered before the next poll
    /// (and before [`poller_mut`](Self::poller_mut) hands the poller out, and by `close`).
    /// On a poller whose `EEXIST` is exact ([`Poller::register_eexist_is_exact`]: epoll), an
    /// add with the removed handler's interest costs what libev's does instead: one
    /// `register` the kernel refuses with `EEXIST` (half the kernel time of a modify at 10^4
    /// fds); the registration stays under the removed handler's key, which the loop maps to
    /// the new handler for the polls after the add.
    ///
    /// What stays as without it: the removed handler is never called after
    /// `remove_handler` returns, its id is dead, its closure dropped, an owned fd
    /// deregistered and closed at once, and an async I/O registration (a stream's) deregistered
    /// at once, since its owner closes the fd right after; the new handler is called only for events of polls
    /// after its add; an add the poller refuses returns the error a plain add would (if the
    /// `modify` is refused, because the fd was closed or its number now names another file,
    /// the loop deregisters and registers afresh, and the registration's error is the one
    /// returned).
    ///
    /// The cost: until the next poll the poller still holds the removed fd. If the fd is
    /// closed in between while another copy keeps the file open (a `dup`, a forked child, an
    /// fd passed over a socket), the deferred deregistration finds it closed and the
    /// registration lives on, out of reach of any fd number (epoll's dup trap): the first
    /// event it reports makes the loop reset the poller and register every live handler
    /// again (as libev recreates its epoll set). Without deferral, removing before closing
    /// never costs that. Switching it off applies what is deferred.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.set_deferred_removal(true);
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.run_once(Some(Duration::ZERO))?;
    /// lp.remove_handler(3);
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?; // takes the registration over
    /// lp.run_once(Some(Duration::ZERO))?;
    /// let stats = lp.poller().stats();
    /// assert_eq!((stats.registers, stats.deregisters), (1, 0)); // one modify instead
    /// # let _ = Readiness::READ;
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn set_deferred_removal(&mut self, on: bool) {
        if !on && self.handlers.has_deferred() {
            self.flush_deferred();
        }
        self.handlers.set_deferring(on);
    }

    /// An event for a dead key: if it is one whose deregistration failed with `EBADF`, or if a
    /// deferred deregistration found its fd closed and no handler was removed since this poll
    /// (so the event cannot be one fetched before a removal), the registration outlived its
    /// fd (epoll's dup trap): reset the poller.
    #[cold]
    fn stale_event(&mut self, key: u64) {
        let fd = match self.suspects.iter().find(|(k, _)| *k == key) {
            Some(&(_, fd)) => fd,
            None if self.handlers.orphan_proven() => -1,
            None => return,
        };
        self.suspects.clear();
        self.recover_from_failed_deregister(HandlerId::from_key(key), fd, Errno::EBADF);
    }

    /// After a `deregister` of a live registration that failed with `EBADF` (the fd was
    /// closed) or `ENOENT` (closed, and the number reused): on epoll a `dup` of the old file
    /// may keep the registration alive, reachable by no fd number, firing forever for a key
    /// no handler owns (the dup trap, ARCHITECTURE.md "Traps"). Reset the poller and register every live
    /// handler again; pollers without the trap decline (`Ok(false)`) and nothing happens.
    /// Failures go to the error hook as the removed (or un-re-registrable) handler's.
    pub(super) fn recover_from_failed_deregister(
        &mut self,
        removed: HandlerId,
        fd: RawFd,
        errno: Errno,
    ) {
        match self.poller.reset() {
            Ok(true) => self.handlers.poller_was_reset(),
            Ok(false) | Err(Error::Forked) => return,
            Err(error) => {
                let errno = match error {
                    Error::Os { errno } => errno,
                    _ => errno,
                };
                let (id, error) = (removed, HandlerError::Os(errno));
                return self.report(Failure::Handler { id, fd, error });
            }
        }
        // The first few failures are reported one by one, the rest (if any) in one report.
        let (poller, mut lost, mut more) = (&mut self.poller, heapless::Vec::<_, 4>::new(), 0);
        self.handlers.for_each_mut(|id, slot| {
            slot.alias = 0; // registered again under its own key, or not at all: the old key dies
            let (interest, mode) = match &slot.io {
                Some(io) if io.parked => return,
                Some(io) if io.edge => {
                    ((Interest::READ | Interest::WRITE).registered(), Mode::Edge)
                }
                _ => (slot.interest, Mode::Level),
            };
            if let Err(Error::Os { errno }) = poller.register(slot.fd, id.key(), interest, mode) {
                if lost.push((id, slot.fd, errno)).is_err() {
                    more += 1;
                }
            }
        });
        for (id, fd, errno) in lost {
            let error = HandlerError::Os(errno);
            self.report(Failure::Handler { id, fd, error });
        }
        if more > 0 {
            let error = HandlerError::Other("more handlers lost their registration in a reset");
            self.report(Failure::Handler {
                id: removed,
                fd,
                error,
            });
        }
    }

    /// The handler registered for `fd`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// let id = lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// assert_eq!(lp.handler_id(3), Some(id));
    /// lp.remove_handler(3);
    /// assert_eq!(lp.handler_id(3), None);
    /// // A new handler for the same fd has a new id.
    /// assert_ne!(lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?, id);
    /// # let _ = (Duration::ZERO, Readiness::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn handler_id(&self, fd: impl Into<Fd>) -> Option<HandlerId> {
        self.handlers.lookup(fd.into().raw()).map(|(id, _)| id)
    }

    /// How many fd handlers are registered.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    /// lp.add_handler(4, Interest::WRITE, |_, _, _| Ok(()))?;
    /// assert_eq!(lp.handler_count(), 2);
    /// # let _ = (Duration::ZERO, Readiness::READ);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn handler_count(&self) -> usize {
        self.handlers.len()
    }

    /// Call `ev`'s handler (or wake the tasks of its I/O registration) once. Always inlined
    /// into the dispatch loop (its only caller): a call would cost ~10 instructions per event.
    #[inline(always)]
    pub(super) fn dispatch(&mut self, ev: PollEvent) {
        let id = HandlerId::from_key(ev.key);
        // The guard puts the closure back (or drops it if the handler removed itself), also
        // when a panic unwinds through here: no fd stays registered without its closure.
        let mut call = HandlerCall {
            lp: self,
            id,
            fd: -1,
            f: None,
        };
        let (f, fd, readiness) = match call.lp.handlers.take_into(id, ev.readiness, &mut call.f) {
            Taken::Call(f, fd, readiness, generation) => {
                // The handler's own id (the key may be the old one of a registration it took
                // over): the closure goes back to it.
                call.id = id.with_generation(generation);
                (f, fd, readiness)
            }
            Taken::Io => {
                core::mem::forget(call); // holds nothing: `take_into` left `f` empty
                                         // Only the task layer makes I/O registrations, and it is reached through the
                                         // executor's hooks (set for good when one is attached): a program without
                                         // one does not link this step.
                if let Some(hooks) = self.exec_hooks {
                    (hooks.dispatch_io)(self, id, ev.readiness);
                }
                return;
            }
            Taken::Stale => {
                core::mem::forget(call); // holds nothing: `take_into` left `f` empty
                if !self.suspects.is_empty() || self.handlers.orphan_proven() {
                    self.stale_event(ev.key);
                }
                return;
            }
            Taken::Nothing => {
                core::mem::forget(call); // holds nothing: `take_into` left `f` empty
                return;
            }
        };
        call.fd = fd;
        call.lp.counters.events_dispatched += 1;
        let outcome = match call.lp.watched_call {
            None => {
                let lp = &mut *call.lp;
                panic::catch(|| f.call(lp, (fd, readiness)))
            }
            Some(watched) => watched(&mut call, readiness),
        };
        match outcome {
            Ok(Ok(())) => {
                call.put_back();
                core::mem::forget(call); // holds nothing any more
            }
            outcome => call.finish_failed(outcome),
        }
    }

    /// Wake the tasks waiting on an async I/O registration. `false` if `id` is not one.
    /// Reached through `ExecHooks::dispatch_io`.
    pub(super) fn dispatch_io(&mut self, id: HandlerId, readiness: Readiness) -> bool {
        let Some(slot) = self.handlers.io_slot(id) else {
            return false;
        };
        let fd = slot.fd;
        let Some(io) = slot.io.as_mut() else {
            return false;
        };
        io.ready |= readiness;
        let trouble = readiness.intersects(Readiness::ERROR | Readiness::HUP);
        if readiness.contains(Readiness::READ) || trouble {
            if let Some(w) = io.read.take() {
                w.wake();
            }
        }
        if readiness.contains(Readiness::WRITE) || trouble {
            if let Some(w) = io.write.take() {
                w.wake();
            }
        }
        if !io.edge {
            // Level-triggered: watch only what someone waits for, or nothing at all after an
            // error or hang-up that would otherwise be reported at every poll.
            let mut want = Interest::empty();
            if io.read.is_some() {
                want |= Interest::READ;
            }
            if io.write.is_some() {
                want |= Interest::WRITE;
            }
            let want = want.registered();
            if trouble && want == Interest::ERROR {
                io.parked = true;
                slot.interest = want;
                let _ = self.poller.deregister(fd);
            } else if want != slot.interest {
                slot.interest = want;
                let _ = self.poller.modify(fd, id.key(), want, Mode::Level);
            }
        }
        self.counters.events_dispatched += 1;
        true
    }
}

/// [`HandlerCall::call_watched`], kept by the loop while a watchdog or beacon is set.
pub(super) type WatchedCall<P, const H: usize, const T: usize, const Q: usize> =
    for<'a, 'b> fn(&'b mut HandlerCall<'a, P, H, T, Q>, Readiness) -> Result<HandlerResult, Caught>;

/// An fd handler's closure, out of its slot for the call; put back on drop.
pub(super) struct HandlerCall<
    'a,
    P: Poller + 'static,
    const H: usize,
    const T: usize,
    const Q: usize,
> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    id: HandlerId,
    fd: RawFd,
    f: Option<HandlerFn<P, H, T, Q>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    HandlerCall<'_, P, H, T, Q>
{
    /// The call under the watchdog: its beacon names the handler while it runs, and a call
    /// longer than the threshold is reported. Apart from the plain call so that a loop with
    /// no watchdog pays one test per event for it, and reached through
    /// [`WatchedCall`] so that a loop that never sets one does not link it.
    #[inline]
    pub(super) fn call_watched(&mut self, readiness: Readiness) -> Result<HandlerResult, Caught> {
        let (id, fd) = (self.id, self.fd);
        let started = self
            .lp
            .watch_start(|| self.f.as_ref().map_or("", |f| f.name()));
        let mut outcome = Ok(Ok(()));
        if let Some(f) = self.f.as_mut() {
            let lp = &mut *self.lp;
            outcome = panic::catch(|| f.call(lp, (fd, readiness)));
        }
        let name = || self.f.as_ref().map_or("", |f| f.name());
        self.lp.watch_end(started, Source::Handler { id, fd }, name);
        outcome
    }

    /// After a call that returned an error or panicked: put the closure back, then report.
    #[cold]
    #[inline(never)]
    fn finish_failed(mut self, outcome: Result<HandlerResult, Caught>) {
        let (id, fd) = (self.id, self.fd);
        let source = Source::Handler { id, fd };
        let name = outcome
            .is_err()
            .then(|| self.f.as_ref().map_or("", |f| f.name()));
        // The closure goes back before the report (the error hook may remove the handler);
        // the guard's drop then finds nothing left to do.
        self.put_back();
        let lp = &mut *self.lp;
        match outcome {
            Ok(Ok(()) | Err(HandlerError::Os(Errno::EPIPE))) => {}
            Ok(Err(error)) => {
                lp.counters.handler_errors += 1;
                lp.report(Failure::Handler { id, fd, error });
            }
            Err(caught) => lp.panicked(source, name.unwrap_or(""), caught),
        }
    }

    /// What `Drop` does. The normal way out calls it at the call site and forgets the guard,
    /// so the drop glue only serves the unwinding path.
    #[inline(always)]
    fn put_back(&mut self) {
        if self.lp.handlers.restore_from(self.id, &mut self.f) {
            return;
        }
        // If the handler removed itself (or the loop was closed), its closure goes now.
        if let Some(f) = self.f.take() {
            let source = Source::Handler {
                id: self.id,
                fd: self.fd,
            };
            self.lp.release(f, source);
        }
    }
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> Drop
    for HandlerCall<'_, P, H, T, Q>
{
    fn drop(&mut self) {
        self.put_back();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sim::SimPoller;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_handler_call_is_watched_exactly_while_a_watchdog_or_beacon_is_set() {
        static BEACON: Beacon = Beacon::new();
        let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
        let seen = Rc::new(Cell::new(None::<bool>));
        let s = seen.clone();
        lp.add_handler(3, Interest::READ, move |_, _, _| {
            s.set(Some(BEACON.running().is_some()));
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        let reports = Rc::new(Cell::new(0));
        let r = reports.clone();
        lp.set_watchdog(Duration::ZERO, move |_| r.set(r.get() + 1));
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!((reports.get(), seen.get()), (1, Some(false)));
        lp.clear_watchdog();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(reports.get(), 1);
        lp.set_beacon(Some(&BEACON));
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(seen.get(), Some(true));
        lp.set_beacon(None);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!((reports.get(), seen.get()), (1, Some(false)));
        assert!(lp.watched_call.is_none());
    }

    type Lp = EventLoop<SimPoller<8>, 4, 4, 4>;

    #[test]
    fn a_non_blocking_poll_reads_no_clock_and_counts_no_idle_time() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        lp.add_handler(3, Interest::READ, move |lp, fd, _| {
            c.set(c.get() + 1);
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        lp.poller_mut().set_ready(3, Readiness::READ);
        let reads = lp.poller().stats().clock_reads;
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(lp.poller().stats().clock_reads, reads, "no clock read");
        assert_eq!(lp.counters().idle_time, Duration::ZERO);
        assert_eq!(lp.counters().handlers_high_water, 1);
        // A wait that may block is idle time (the simulated wait advances the clock).
        lp.run_once(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(lp.counters().idle_time, Duration::from_millis(5));
        assert_eq!(lp.counters().polls, 2);
    }

    /// A loop with deferred removal on and a handler on fd 3 that logs its tag.
    fn deferring(log: &Rc<Cell<u32>>) -> Lp {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.set_deferred_removal(true);
        add_tagged(&mut lp, log, 1).unwrap();
        lp
    }

    /// Add a handler for fd 3 that appends `tag` to `log`'s digits (any poller: the alias
    /// tests use it with an exact-`EEXIST` one).
    pub(super) fn add_tagged<
        P: Poller + 'static,
        const H: usize,
        const T: usize,
        const Q: usize,
    >(
        lp: &mut EventLoop<P, H, T, Q>,
        log: &Rc<Cell<u32>>,
        tag: u32,
    ) -> Result<HandlerId, Error> {
        let l = log.clone();
        lp.add_handler(3, Interest::READ, move |_, _, _| {
            l.set(l.get() * 10 + tag);
            Ok(())
        })
        .map_err(|r| r.error)
    }

    #[test]
    fn deferred_remove_then_add_of_the_same_fd_costs_one_modify_and_calls_only_the_new_handler() {
        let log = Rc::new(Cell::new(0));
        let mut lp = deferring(&log);
        lp.poller_mut().set_ready(3, Readiness::READ);
        let before = lp.poller().stats();
        assert!(lp.remove_handler(3));
        assert_eq!(lp.handler_id(3), None, "the table side is not deferred");
        let new = add_tagged(&mut lp, &log, 2).unwrap();
        let after = lp.poller().stats();
        assert_eq!(after.deregisters, before.deregisters);
        assert_eq!(after.registers, before.registers);
        assert_eq!(after.modifies, before.modifies + 1);
        assert_eq!(lp.poller().interest(3), Some(Interest::READ.registered()));
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2, "only the new handler");
        assert_eq!(lp.handler_id(3), Some(new));
        assert_eq!(lp.poller().resets(), 0);
    }

    #[test]
    fn deferred_removal_is_applied_before_the_next_poll() {
        let log = Rc::new(Cell::new(0));
        let mut lp = deferring(&log);
        assert!(lp.remove_handler(3));
        assert_eq!(lp.poller().stats().deregisters, 0);
        assert!(lp.poller().interest(3).is_some(), "still with the poller");
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller().stats().deregisters, 1);
        assert_eq!(lp.poller().interest(3), None);
        // poller_mut applies them too.
        add_tagged(&mut lp, &log, 2).unwrap();
        assert!(lp.remove_handler(3));
        assert_eq!(lp.poller_mut().interest(3), None);
    }

    /// Counts its drops, and panics in the first one.
    struct PanicsOnDrop(Rc<Cell<u32>>);

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
            if self.0.get() == 1 {
                panic!("capture drop");
            }
        }
    }

    #[test]
    fn a_removed_handler_whose_capture_panics_on_drop_is_reported_named_and_dropped_once() {
        for deferred in [false, true] {
            let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
            lp.set_deferred_removal(deferred);
            let failures = Rc::new(Cell::new((0, false)));
            let f = failures.clone();
            lp.set_error_hook(move |failure| {
                if let Failure::Panicked { name, source, .. } = failure {
                    let named = name.contains("handlers")
                        && source
                            == Source::Handler {
                                id: HandlerId::from_key(0),
                                fd: 3,
                            };
                    f.set((f.get().0 + 1, named));
                }
            });
            let drops = Rc::new(Cell::new(0));
            let capture = PanicsOnDrop(drops.clone());
            lp.add_handler(3, Interest::READ, move |_, _, _| {
                let _ = &capture;
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
            assert!(lp.remove_handler(3));
            assert_eq!(drops.get(), 1, "dropped once, at removal");
            assert_eq!(
                failures.get(),
                (1, true),
                "reported once, by name and source"
            );
            assert_eq!(lp.counters().panics, 1);
            assert_eq!(lp.handler_count(), 0);
            // The loop goes on: the fd can be added again, and a poll runs.
            add_tagged(&mut lp, &Rc::new(Cell::new(0)), 1).unwrap();
            lp.run_once(Some(Duration::ZERO)).unwrap();
            drop(lp);
            assert_eq!(drops.get(), 1, "never dropped again");
        }
    }

    /// A handler for fd 3 that logs 1, removes itself and adds a replacement that logs 2
    /// (`log` collects the digits in call order).
    pub(super) fn add_self_replacing<
        P: Poller + 'static,
        const H: usize,
        const T: usize,
        const Q: usize,
    >(
        lp: &mut EventLoop<P, H, T, Q>,
        log: &Rc<Cell<u32>>,
    ) {
        let l = log.clone();
        lp.add_handler(3, Interest::READ, move |lp, fd, _| {
            l.set(l.get() * 10 + 1);
            assert!(lp.remove_handler(fd));
            let l2 = l.clone();
            lp.add_handler(fd, Interest::READ, move |_, _, _| {
                l2.set(l2.get() * 10 + 2);
                Ok(())
            })
            .map(drop)
            .map_err(|_| HandlerError::Other("re-add refused"))
        })
        .map_err(|r| r.error)
        .unwrap();
    }

    #[test]
    fn a_handler_replacing_itself_under_deferral_is_not_called_again_in_the_same_pass() {
        let log = Rc::new(Cell::new(0));
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.set_deferred_removal(true);
        add_self_replacing(&mut lp, &log);
        // The same event twice in one poll (e.g. fetched before the replacement).
        let key = lp.handler_id(3).unwrap().key();
        lp.poller_mut().inject_event(key, Readiness::READ);
        lp.poller_mut().inject_event(key, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            log.get(),
            1,
            "the old event reaches neither the old nor the new handler"
        );
        lp.poller_mut().set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 12);
        assert_eq!(lp.poller().stats().modifies, 1);
        assert_eq!(lp.poller().resets(), 0);
    }

    #[test]
    fn deferred_remove_then_add_of_a_closed_fd_returns_the_registration_error() {
        let log = Rc::new(Cell::new(0));
        let mut lp = deferring(&log);
        assert!(lp.remove_handler(3));
        // Closed between the removal and the add (on the poller itself: `poller_mut` would
        // apply the deferred deregistration first).
        lp.poller.close(3);
        let before = lp.poller().stats();
        assert_eq!(
            add_tagged(&mut lp, &log, 2),
            Err(Error::Os {
                errno: Errno::EBADF
            })
        );
        let after = lp.poller().stats();
        assert_eq!(
            after.modifies,
            before.modifies + 1,
            "the take-over was tried"
        );
        assert_eq!(
            after.registers,
            before.registers + 1,
            "then a plain registration"
        );
        assert_eq!(lp.handler_id(3), None);
        assert_eq!(lp.handler_count(), 0);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 0);
    }

    #[test]
    fn deferred_remove_then_close_with_a_live_dup_resets_only_when_the_orphan_fires() {
        let log = Rc::new(Cell::new(0));
        let mut lp = deferring(&log);
        let other = Rc::new(Cell::new(0));
        let o = other.clone();
        lp.add_handler(4, Interest::READ, move |lp, fd, _| {
            o.set(o.get() + 1);
            lp.poller_mut().clear_ready(fd);
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        assert!(lp.remove_handler(3));
        // Closed while a dup keeps the file open, before the deferred deregistration (on the
        // poller itself: `poller_mut` would apply the deregistration first).
        lp.poller.close_keeping_registration(3);
        lp.run_once(Some(Duration::ZERO)).unwrap(); // the deferred deregister: EBADF
        assert_eq!(lp.poller().resets(), 0, "nothing fired: no reset");
        lp.poller.set_ready(3, Readiness::READ); // the orphan reports its dead key
        lp.poller.set_ready(4, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller().resets(), 1);
        assert_eq!(other.get(), 1, "the live handler still ran");
        lp.poller.set_ready(4, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller().resets(), 1, "the orphan is gone");
        assert_eq!(other.get(), 2, "registered again after the reset");
        assert_eq!(log.get(), 0, "the removed handler never ran");
    }
}

#[cfg(test)]
mod io_registration_tests {
    use super::*;
    use crate::sim::SimPoller;
    use crate::task::current::with_current_loop;
    use crate::IoRegistration;

    type Lp = EventLoop<SimPoller<8>, 4, 4, 4>;

    /// An async I/O registration's stream closes its fd right after dropping the
    /// registration: with deferred removal on, its deregistration must still happen at once,
    /// or a `dup` (or a forked child) keeping the file open leaves a registration no fd number
    /// reaches (epoll's dup trap, a poller reset per dropped stream).
    #[test]
    fn deferred_removal_never_defers_an_io_registrations_deregistration() {
        let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
        lp.attach_owned_remote::<4>().unwrap();
        lp.attach_owned_executor::<4, 256>().unwrap();
        lp.set_deferred_removal(true);
        let seen = lp
            .run_sync(
                async {
                    let reg = IoRegistration::new(5)?;
                    let before = with_current_loop(|lp: &mut Lp| lp.poller().interest(5));
                    drop(reg);
                    let after = with_current_loop(|lp: &mut Lp| {
                        (lp.handler_id(5), lp.poller().interest(5))
                    });
                    Ok::<_, Error>((before, after))
                },
                None,
            )
            .unwrap()
            .unwrap();
        let (before, after) = seen;
        assert!(before.flatten().is_some(), "registered with the poller");
        assert_eq!(
            after,
            Some((None, None)),
            "gone from the table and the poller at once"
        );
    }
}

/// Deferred removal on a poller whose `EEXIST` is exact (epoll's, as
/// [`Poller::register_eexist_is_exact`] says): a handler removed and re-added with the same
/// interest keeps the kernel registration, and the old key becomes the new handler's.
#[cfg(test)]
mod alias_tests {
    extern crate std;
    use super::tests::add_tagged;
    use super::*;
    use crate::sim::{SimNotifier, SimPoller};
    use std::cell::Cell;
    use std::rc::Rc;

    /// The simulated poller, claiming an exact `EEXIST` (true of it while no test reuses a
    /// number whose file a `dup` keeps registered).
    struct Exact(SimPoller<8>);

    impl crate::time::Clock for Exact {
        fn now(&self) -> crate::time::Instant {
            self.0.now()
        }
    }

    impl Poller for Exact {
        type Notifier = SimNotifier;
        fn capabilities(&self) -> crate::interest::Capabilities {
            self.0.capabilities()
        }
        fn register(&mut self, fd: RawFd, key: u64, i: Interest, m: Mode) -> Result<(), Error> {
            self.0.register(fd, key, i, m)
        }
        fn modify(&mut self, fd: RawFd, key: u64, i: Interest, m: Mode) -> Result<(), Error> {
            self.0.modify(fd, key, i, m)
        }
        fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
            self.0.deregister(fd)
        }
        fn wait(&mut self, ev: &mut [PollEvent], t: Option<Duration>) -> Result<usize, Errno> {
            self.0.wait(ev, t)
        }
        fn notifier(&self) -> &SimNotifier {
            self.0.notifier()
        }
        fn forked(&self) -> bool {
            self.0.forked()
        }
        fn reset(&mut self) -> Result<bool, Error> {
            self.0.reset()
        }
        fn register_eexist_is_exact(&self) -> bool {
            true
        }
    }

    type Lp = EventLoop<Exact, 4, 4, 4>;

    fn exact(log: &Rc<Cell<u32>>) -> Lp {
        let mut lp: Lp = EventLoop::with_poller(Exact(SimPoller::new()));
        lp.set_deferred_removal(true);
        add_tagged(&mut lp, log, 1).unwrap();
        lp
    }

    fn sim(lp: &mut Lp) -> &mut SimPoller<8> {
        &mut lp.poller.0
    }

    #[test]
    fn a_deferred_remove_then_add_with_the_same_interest_keeps_the_registration_under_the_old_key()
    {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        let old = lp.handler_id(3).unwrap();
        let before = lp.poller.0.stats();
        assert!(lp.remove_handler(3));
        let new = add_tagged(&mut lp, &log, 2).unwrap();
        assert_ne!(new, old, "a new id all the same");
        let after = lp.poller.0.stats();
        assert_eq!(
            after.registers,
            before.registers + 1,
            "one refused register"
        );
        assert_eq!(after.modifies, before.modifies, "no modify");
        assert_eq!(after.deregisters, before.deregisters);
        // The kernel still reports the old key: it reaches the new handler only.
        sim(&mut lp).set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2);
        // Removed and re-added again: still the first registration, still one handler.
        assert!(lp.remove_handler(3));
        add_tagged(&mut lp, &log, 3).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 23);
        assert_eq!(lp.poller.0.stats().modifies, 0);
        // Removed for good: deregistered before the next poll, the old key is dead.
        assert!(lp.remove_handler(3));
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller.0.interest(3), None);
        sim(&mut lp).inject_event(old.key(), Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 23);
        assert_eq!(lp.poller.0.resets(), 0);
    }

    #[test]
    fn an_aliased_handler_is_not_called_for_events_fetched_before_it_was_added() {
        let log = Rc::new(Cell::new(0));
        let mut lp: Lp = EventLoop::with_poller(Exact(SimPoller::new()));
        lp.set_deferred_removal(true);
        super::tests::add_self_replacing(&mut lp, &log);
        let key = lp.handler_id(3).unwrap().key();
        sim(&mut lp).inject_event(key, Readiness::READ);
        sim(&mut lp).inject_event(key, Readiness::READ); // fetched before the replacement
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            log.get(),
            1,
            "the second event is the old handler's: dropped"
        );
        sim(&mut lp).inject_event(key, Readiness::READ); // a later poll: the new handler's
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 12);
        assert_eq!(lp.poller.0.stats().modifies, 0, "the registration was kept");
        assert_eq!(lp.poller.0.resets(), 0);
    }

    #[test]
    fn an_aliased_handler_whose_interest_changes_moves_to_its_own_key() {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        let old = lp.handler_id(3).unwrap();
        assert!(lp.remove_handler(3));
        let new = add_tagged(&mut lp, &log, 2).unwrap();
        lp.update_handler(3, Interest::READ | Interest::WRITE)
            .unwrap();
        assert_eq!(lp.poller.0.stats().modifies, 1);
        // The poller no longer holds the old key: an event under it is stale, and the
        // handler is called once, for its own key.
        sim(&mut lp).inject_event(old.key(), Readiness::READ);
        sim(&mut lp).inject_event(new.key(), Readiness::WRITE);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2, "only the handler's own key reaches it");
        // Removed (not deferred now): a dup trap is found under the handler's own key.
        lp.set_deferred_removal(false);
        lp.poller.0.close_keeping_registration(3);
        assert!(lp.remove_handler(3));
        sim(&mut lp).inject_event(new.key(), Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller.0.resets(), 1);
        assert_eq!(log.get(), 2);
    }

    #[test]
    fn an_event_fetched_under_the_old_key_still_reaches_a_handler_whose_interest_changes_in_that_pass(
    ) {
        let log = Rc::new(Cell::new(0));
        let mut lp: Lp = EventLoop::with_poller(Exact(SimPoller::new()));
        lp.set_deferred_removal(true);
        // Fd 1's handler, registered (so reported) first, changes fd 3's interest: the poller
        // gets fd 3's own key while fd 3's event, fetched under the old one, is still to be
        // dispatched.
        lp.add_handler(1, Interest::READ, |lp, _, _| {
            lp.update_handler(3, Interest::READ | Interest::WRITE)?;
            Ok(())
        })
        .map_err(|r| r.error)
        .unwrap();
        let old = add_tagged(&mut lp, &log, 1).unwrap();
        assert!(lp.remove_handler(3));
        add_tagged(&mut lp, &log, 2).unwrap();
        lp.run_once(Some(Duration::ZERO)).unwrap(); // the take-over is from an earlier poll
        assert_eq!(lp.poller.0.key(3), Some(old.key()), "taken over, not moved");
        sim(&mut lp).set_ready(1, Readiness::READ);
        sim(&mut lp).set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            log.get(),
            2,
            "called in the pass its event was fetched, once"
        );
        // From the next poll on the old key is dead.
        sim(&mut lp).clear_ready(1);
        sim(&mut lp).clear_ready(3);
        sim(&mut lp).inject_event(old.key(), Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2, "the old key reaches nothing any more");
    }

    #[test]
    fn a_dup_trapped_aliased_handler_is_suspected_under_the_key_the_kernel_reports() {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        let old = lp.handler_id(3).unwrap();
        assert!(lp.remove_handler(3));
        add_tagged(&mut lp, &log, 2).unwrap();
        lp.set_deferred_removal(false);
        lp.poller.0.close_keeping_registration(3);
        assert!(lp.remove_handler(3)); // EBADF: a suspect
        sim(&mut lp).inject_event(old.key(), Readiness::READ); // what the orphan reports
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(lp.poller.0.resets(), 1, "the trap was recognised");
        assert_eq!(log.get(), 0);
    }

    #[test]
    fn a_deferred_remove_then_add_of_a_reused_number_registers_the_new_file() {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        assert!(lp.remove_handler(3));
        lp.poller.0.close(3); // its registration goes with it
        lp.poller.0.reopen(3); // a new file under the same number
        let new = add_tagged(&mut lp, &log, 2).unwrap();
        let stats = lp.poller.0.stats();
        assert_eq!(
            (stats.registers, stats.modifies),
            (2, 0),
            "registered afresh"
        );
        sim(&mut lp).set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2);
        assert_eq!(lp.handler_id(3), Some(new));
        assert_eq!(lp.poller.0.resets(), 0);
    }

    #[test]
    fn a_take_over_chain_longer_than_the_alias_reach_moves_to_the_new_key_once() {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        for _ in 0..200 {
            assert!(lp.remove_handler(3));
            add_tagged(&mut lp, &log, 2).unwrap();
        }
        // 127 generations are reachable from the first key; the 128th re-add modifies (the
        // kernel then holds that handler's own key) and the chain starts again from there.
        assert_eq!(lp.poller.0.stats().modifies, 1);
        log.set(0);
        sim(&mut lp).set_ready(3, Readiness::READ);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            log.get(),
            2,
            "the key the kernel holds reaches the last handler"
        );
    }

    #[test]
    fn a_deferred_remove_then_add_with_another_interest_modifies_as_before() {
        let log = Rc::new(Cell::new(0));
        let mut lp = exact(&log);
        assert!(lp.remove_handler(3));
        let l = log.clone();
        let new = lp
            .add_handler(3, Interest::WRITE, move |_, _, _| {
                l.set(l.get() * 10 + 2);
                Ok(())
            })
            .map_err(|r| r.error)
            .unwrap();
        let stats = lp.poller.0.stats();
        assert_eq!((stats.registers, stats.modifies), (1, 1));
        sim(&mut lp).inject_event(new.key(), Readiness::WRITE);
        lp.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(log.get(), 2);
    }
}
