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
//! Registrations use the loop polling the current task; make and drop them inside tasks or
//! `run_sync`. One dropped elsewhere cannot reach its loop: its handler slot stays until the
//! fd number is registered again (a new registration of that number replaces the stale one)
//! or the loop closes.

use core::future::poll_fn;
use core::task::{Context, Poll};

use crate::current::with_loop;
use crate::error::{Errno, Error, RawFd};
use crate::fd::Fd;
use crate::handler_table::HandlerId;
use crate::interest::{Interest, Readiness};

/// A persistent registration of an fd for async I/O; see the [module docs](self).
#[derive(Debug)]
pub struct IoRegistration {
    fd: RawFd,
    id: HandlerId,
}

impl IoRegistration {
    /// Register `fd` with the loop that polls the current task. The loop does not own `fd`:
    /// drop the registration before closing it.
    ///
    /// # Errors
    /// [`Error::NotAttached`] outside a task or `run_sync`; otherwise as
    /// [`EventLoop::add_handler`](crate::EventLoop::add_handler) (`AlreadyRegistered`,
    /// `Full`, `InvalidFd`, the kernel's `Os` error).
    pub fn new(fd: impl Into<Fd>) -> Result<Self, Error> {
        let fd = fd.into().raw();
        let id = with_loop(|lp| lp.io_register(fd)).unwrap_or(Err(Error::NotAttached))?;
        Ok(IoRegistration { fd, id })
    }

    /// The fd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Ready with what was seen (including `ERROR`/`HUP`) once `dir` (`Interest::READ` or
    /// `Interest::WRITE`) readiness arrived since it was last consumed; consumes the `dir`
    /// readiness. Pending otherwise, waking the task when it arrives.
    pub fn poll_ready(
        &self,
        dir: Interest,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Readiness, Error>> {
        with_loop(|lp| lp.io_poll(self.fd, self.id, dir, cx)).unwrap_or(Poll::Pending)
    }

    /// Wait for `dir` readiness (see [`poll_ready`](Self::poll_ready)).
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if the registration is gone (the loop was closed); the
    /// kernel's error if the poller refused to change the interest.
    pub async fn ready(&self, dir: Interest) -> Result<Readiness, Error> {
        poll_fn(|cx| self.poll_ready(dir, cx)).await
    }

    /// Run `op` (a non-blocking I/O call on the fd) until it does not fail with `EAGAIN`,
    /// waiting for `dir` readiness between attempts.
    ///
    /// # Errors
    /// `op`'s other errors as [`Error::Os`], or [`ready`](Self::ready)'s.
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
        let (fd, id) = (self.fd, self.id);
        let _ = with_loop(|lp| lp.io_deregister(fd, id));
    }
}
