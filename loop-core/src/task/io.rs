//! Async I/O on the loop: a persistent fd registration whose readiness wakes tasks.
//!
//! An [`IoRegistration`] is made once per fd (say, when an async socket is created) and lives
//! as long as the fd. Where the poller offers edge triggering (epoll, kqueue) the fd is
//! registered for READ and WRITE once, edge-triggered, and never modified again: steady-state
//! I/O costs no `epoll_ctl`. Elsewhere (poll, select) it is level-triggered and watches only
//! the directions a task is waiting for (changing a poll/select interest is not a system call).
//!
//! Readiness is sticky: an edge that arrives while no task waits is remembered and returned by
//! the next [`poll_ready`](IoRegistration::poll_ready), which consumes it. The pattern is
//! "try the I/O; on `EAGAIN`, wait for readiness, try again" — [`IoRegistration::io`] does it.
//! Errors and hang-ups stay set once seen, so every later wait returns at once and the next
//! I/O reports them.
//!
//! **One loop per registration.** A registration belongs to the loop that polled the task
//! that made it (it records that loop's identity). It — and the sockets of `ioloop::net` built
//! on it — may be moved to another thread or another loop (they are `Send`), but used there
//! they fail with [`Error::WrongLoop`] instead of touching tables they do not belong to: make
//! a new registration (a new socket) on that loop. Dropping one anywhere frees its handler
//! slot in its own loop: at once when that loop is current, otherwise the removal is queued
//! for the owning loop, which applies it in its next iteration (see `current.rs`; if that
//! bounded queue is full, the slot is reclaimed when its fd number is registered again, and at
//! the latest when the loop closes).

use core::future::poll_fn;
use core::task::{Context, Poll};

use crate::error::{Errno, Error, RawFd};
use crate::fd::Fd;
use crate::interest::{Interest, Readiness};
use crate::tables::handler_table::HandlerId;
use crate::task::current::{apply_or_defer, current_owner, with_loop, with_loop_owned, Deferred};
use crate::task::executor::ExecRef;

/// A persistent registration of an fd for async I/O; see the [module docs](self).
///
/// ```
/// use core::time::Duration;
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, Interest, IoRegistration, Readiness};
///
/// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
/// lp.attach_owned_remote::<4>()?;
/// lp.attach_owned_executor::<4, 256>()?;
/// // A peer writes to virtual fd 3 after one second.
/// lp.call_later(Duration::from_secs(1), |lp| lp.poller_mut().set_ready(3, Readiness::READ))?;
/// let seen = lp.run_sync(
///     async {
///         let reg = IoRegistration::new(3)?;
///         reg.ready(Interest::READ).await
///     },
///     None,
/// )??;
/// assert!(seen.contains(Readiness::READ));
/// assert_eq!(lp.now().as_nanos(), 1_000_000_000);
/// assert_eq!(lp.handler_count(), 0); // dropping the registration freed the fd's slot
/// # Ok::<(), loop_core::Error>(())
/// ```
#[derive(Debug)]
pub struct IoRegistration {
    fd: RawFd,
    id: HandlerId,
    /// The loop it is registered with.
    owner: ExecRef,
}

impl IoRegistration {
    /// Register `fd` with the loop that polls the current task. The loop does not own `fd`:
    /// drop the registration before closing it.
    ///
    /// # Errors
    /// [`Error::NotAttached`] outside a task or `run_sync`; otherwise as
    /// [`EventLoop::add_handler`](crate::EventLoop::add_handler) (`AlreadyRegistered`,
    /// `Full`, `InvalidFd`, the kernel's `Os` error).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Error, EventLoop, Interest, IoRegistration};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// assert_eq!(IoRegistration::new(3).err(), Some(Error::NotAttached)); // not in a task
    /// lp.add_handler(4, Interest::READ, |_, _, _| Ok(()))?;
    /// let (fd, taken) = lp.run_sync(
    ///     async {
    ///         let reg = IoRegistration::new(3)?;
    ///         Ok::<_, Error>((reg.fd(), IoRegistration::new(4).err()))
    ///     },
    ///     None,
    /// )??;
    /// assert_eq!((fd, taken), (3, Some(Error::AlreadyRegistered { fd: 4 })));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub fn new(fd: impl Into<Fd>) -> Result<Self, Error> {
        let fd = fd.into().raw();
        let (id, owner) = with_loop_owned(|lp, owner| lp.io_register(fd).map(|id| (id, owner)))
            .unwrap_or(Err(Error::NotAttached))?;
        Ok(IoRegistration { fd, id, owner })
    }

    /// The fd. See [`new`](Self::new) for an example.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Ready with what was seen (including `ERROR`/`HUP`) once `dir` (`Interest::READ` or
    /// `Interest::WRITE`) readiness arrived since it was last consumed; consumes the `dir`
    /// readiness. Pending otherwise, waking the task when it arrives. The building block of
    /// hand-written `Future`s and I/O traits; in `async` code use [`ready`](Self::ready).
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, IoRegistration, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// use core::future::poll_fn;
    ///
    /// lp.poller_mut().set_ready(3, Readiness::WRITE);
    /// let seen = lp.run_sync(
    ///     async {
    ///         let reg = IoRegistration::new(3)?;
    ///         // A hand-written future: until the fd is writable.
    ///         poll_fn(|cx| reg.poll_ready(Interest::WRITE, cx)).await
    ///     },
    ///     None,
    /// )??;
    /// assert!(seen.contains(Readiness::WRITE));
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::WrongLoop`] when polled by another loop than the one it was registered with;
    /// [`Error::NotAttached`] outside a task or `run_sync` (or inside a `with_current_loop`
    /// closure); as [`ready`](Self::ready).
    pub fn poll_ready(
        &self,
        dir: Interest,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Readiness, Error>> {
        match current_owner() {
            None => return Poll::Ready(Err(Error::NotAttached)),
            Some(o) if !o.same(&self.owner) => return Poll::Ready(Err(Error::WrongLoop)),
            Some(_) => {}
        }
        with_loop(|lp| lp.io_poll(self.fd, self.id, dir, cx))
            .unwrap_or(Poll::Ready(Err(Error::NotAttached)))
    }

    /// Wait for `dir` readiness (see [`poll_ready`](Self::poll_ready)).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if the registration is gone (the loop was closed); the
    /// kernel's error if the poller refused to change the interest; as
    /// [`poll_ready`](Self::poll_ready). See [`IoRegistration`] for an example.
    pub async fn ready(&self, dir: Interest) -> Result<Readiness, Error> {
        poll_fn(|cx| self.poll_ready(dir, cx)).await
    }

    /// Run `op` (a non-blocking I/O call on the fd) until it does not fail with `EAGAIN`,
    /// waiting for `dir` readiness between attempts.
    ///
    /// # Errors
    /// `op`'s other errors as [`Error::Os`], or [`ready`](Self::ready)'s.
    ///
    /// ```
    /// use core::time::Duration;
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{Errno, Error, EventLoop, Interest, IoRegistration, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller> = EventLoop::with_poller(SimPoller::new());
    /// lp.attach_owned_remote::<4>()?;
    /// lp.attach_owned_executor::<4, 256>()?;
    /// lp.call_later(Duration::from_secs(2), |lp| lp.poller_mut().set_ready(3, Readiness::READ))?;
    /// let read = lp.run_sync(
    ///     async {
    ///         let reg = IoRegistration::new(3)?;
    ///         let mut calls = 0;
    ///         // A non-blocking read that has nothing until the peer wrote, then 5 bytes.
    ///         let n = reg
    ///             .io(Interest::READ, || {
    ///                 calls += 1;
    ///                 if calls == 1 { Err(Errno::EAGAIN) } else { Ok(5) }
    ///             })
    ///             .await?;
    ///         let failed = reg.io(Interest::READ, || Err::<usize, _>(Errno::EBADF)).await;
    ///         Ok::<_, Error>((n, calls, failed))
    ///     },
    ///     None,
    /// )??;
    /// assert_eq!(read, (5, 2, Err(Error::Os { errno: Errno::EBADF })));
    /// assert_eq!(lp.now().as_nanos(), 2_000_000_000);
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    pub async fn io<T>(
        &self,
        dir: Interest,
        mut op: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, Error> {
        loop {
            match op() {
                Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                    if e == Errno::EAGAIN {
                        self.ready(dir).await?;
                    }
                }
                Err(errno) => return Err(Error::Os { errno }),
                Ok(v) => return Ok(v),
            }
        }
    }
}

impl Drop for IoRegistration {
    fn drop(&mut self) {
        apply_or_defer(self.owner, Deferred::Unwatch(self.fd, self.id));
    }
}
