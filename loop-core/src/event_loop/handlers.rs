//! fd handlers: adding, updating and removing them, and the async I/O registrations' readiness.

use super::*;
use crate::tables::handler_table::Taken;

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
        // Not `owned` in the table: the closure owns the fd, so it is closed when the closure
        // is dropped (after the poller forgot it), never while a call has it borrowed.
        self.register_then(raw, interest, false, (fd, handler), |(fd, mut handler)| {
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
        match self.reserve_registered(fd, interest, owned, Mode::Level) {
            Ok(id) => {
                self.handlers.set_handler(id, wrap(value));
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
        if let Err(error) = self.poller.register(fd, id.key(), interest, mode) {
            self.handlers.remove_id(id);
            return Err(error);
        }
        Ok(id)
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
            false,
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
    pub fn update_handler(&mut self, fd: impl Into<Fd>, interest: Interest) -> Result<(), Error> {
        let fd = fd.into().raw();
        let interest = interest.registered();
        let Some((id, slot)) = self.handlers.lookup_mut(fd) else {
            return Err(Error::NotRegistered { fd });
        };
        if slot.interest == interest {
            return Ok(());
        }
        self.poller.modify(fd, id.key(), interest, Mode::Level)?;
        if let Some((_, slot)) = self.handlers.lookup_mut(fd) {
            slot.interest = interest;
        }
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
    /// error hook. More than a few such removals pending at once reset right away.
    pub fn remove_handler(&mut self, fd: impl Into<Fd>) -> bool {
        let fd = fd.into().raw();
        let Some((id, slot)) = self.handlers.remove(fd) else {
            return false;
        };
        // A parked I/O registration is already deregistered.
        if !slot.io.as_ref().is_some_and(|io| io.parked) {
            if let Err(Error::Os {
                errno: Errno::EBADF,
            }) = self.poller.deregister(fd)
            {
                // Closed before it was removed: a trap only if a stale event shows up.
                if self.suspects.push((id.key(), fd)).is_err() {
                    self.suspects.clear();
                    self.recover_from_failed_deregister(id, fd, Errno::EBADF);
                }
            }
        }
        if slot.owned {
            // SAFETY: `owned` is set only by `add_owned_handler*`, which took the fd out of an
            // `OwnedFd` (`into_raw_fd`); the slot was just removed, so this is the one close
            // and the loop never uses the number again.
            unsafe { self.poller.close_fd(fd) };
        }
        if let Some(f) = slot.handler {
            self.release(f, Source::Handler { id, fd });
        }
        true
    }

    /// An event that reached no handler: if its key is one whose deregistration failed with
    /// `EBADF`, the registration outlived its fd (epoll's dup trap): reset the poller.
    #[cold]
    fn stale_event(&mut self, key: u64) {
        let Some(&(key, fd)) = self.suspects.iter().find(|(k, _)| *k == key) else {
            return;
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
            Ok(true) => {}
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
    pub fn handler_id(&self, fd: impl Into<Fd>) -> Option<HandlerId> {
        self.handlers.lookup(fd.into().raw()).map(|(id, _)| id)
    }

    /// How many fd handlers are registered.
    pub fn handler_count(&self) -> usize {
        self.handlers.len()
    }

    /// Call `ev`'s handler (or wake the tasks of its I/O registration) once.
    #[inline]
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
        let (fd, readiness) = match call.lp.handlers.take_into(id, ev.readiness, &mut call.f) {
            Taken::Call(fd, readiness) => (fd, readiness),
            Taken::Io => {
                core::mem::forget(call); // holds nothing: `take_into` left `f` empty
                self.dispatch_io(id, ev.readiness);
                return;
            }
            Taken::Nothing => {
                core::mem::forget(call); // holds nothing: `take_into` left `f` empty
                if !self.suspects.is_empty() {
                    self.stale_event(ev.key);
                }
                return;
            }
        };
        call.fd = fd;
        call.lp.counters.events_dispatched += 1;
        let source = Source::Handler { id, fd };
        let started = call
            .lp
            .watch_start(|| call.f.as_ref().map_or("", |f| f.name()));
        let mut outcome = Ok(Ok(()));
        if let Some(f) = call.f.as_mut() {
            let lp = &mut *call.lp;
            outcome = panic::catch(|| f.call(lp, (fd, readiness)));
        }
        let name = || call.f.as_ref().map_or("", |f| f.name());
        call.lp.watch_end(started, source, name);
        let name = outcome.is_err().then(name);
        call.put_back();
        core::mem::forget(call); // holds nothing any more
        match outcome {
            Ok(Ok(()) | Err(HandlerError::Os(Errno::EPIPE))) => {}
            Ok(Err(error)) => {
                self.counters.handler_errors += 1;
                self.report(Failure::Handler { id, fd, error });
            }
            Err(caught) => self.panicked(source, name.unwrap_or(""), caught),
        }
    }

    /// Wake the tasks waiting on an async I/O registration. `false` if `id` is not one.
    #[inline]
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

/// An fd handler's closure, out of its slot for the call; put back on drop.
struct HandlerCall<'a, P: Poller + 'static, const H: usize, const T: usize, const Q: usize> {
    lp: &'a mut EventLoop<P, H, T, Q>,
    id: HandlerId,
    fd: RawFd,
    f: Option<HandlerFn<P, H, T, Q>>,
}

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>
    HandlerCall<'_, P, H, T, Q>
{
    /// What `Drop` does. The normal way out calls it at the call site and forgets the guard,
    /// so the drop glue only serves the unwinding path.
    #[inline(always)]
    fn put_back(&mut self) {
        self.lp.handlers.restore_from(self.id, &mut self.f);
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
