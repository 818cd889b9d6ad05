//! The async bridge: the loop as the task layer sees it (`LoopOps`).

use super::*;

impl<P: Poller + 'static, const H: usize, const T: usize, const Q: usize> LoopOps
    for EventLoop<P, H, T, Q>
{
    fn now(&self) -> Instant {
        EventLoop::now(self)
    }

    fn wake_at(&mut self, deadline: Instant, waker: Waker) -> Result<TimerHandle, Error> {
        self.call_at(deadline, move |_| waker.wake())
            .map_err(|r| r.error)
    }

    fn cancel_timer(&mut self, h: TimerHandle) {
        self.remove_timeout(h);
    }

    fn timer_pending(&self, h: TimerHandle) -> bool {
        self.timer_pending(h)
    }

    fn watch_once(&mut self, fd: RawFd, want: Readiness, waker: Waker) -> Result<HandlerId, Error> {
        let interest = if want.contains(Readiness::WRITE) {
            Interest::WRITE
        } else {
            Interest::READ
        };
        self.add_handler(fd, interest, move |lp, fd, _| {
            waker.wake_by_ref();
            lp.remove_handler(fd);
            Ok(())
        })
        .map_err(|r| r.error)
    }

    fn watching(&self, fd: RawFd, id: HandlerId) -> bool {
        self.handler_id(fd) == Some(id)
    }

    fn unwatch(&mut self, fd: RawFd, id: HandlerId) {
        if self.handler_id(fd) == Some(id) {
            self.remove_handler(fd);
        }
    }

    fn io_register(&mut self, fd: RawFd) -> Result<HandlerId, Error> {
        // An I/O registration already on this fd number belongs to an fd that was closed
        // without deregistering (its owner was dropped outside a task): the number can only
        // be reused after a close, so the old registration is stale. Replace it.
        if fd >= 0
            && self.usable().is_ok()
            && self
                .handlers
                .lookup(fd)
                .is_some_and(|(_, slot)| slot.io.is_some())
        {
            self.remove_handler(fd);
        }
        let edge = self.poller.capabilities().supports(Mode::Edge);
        let (interest, mode) = if edge {
            (Interest::READ | Interest::WRITE, Mode::Edge)
        } else {
            (Interest::empty(), Mode::Level)
        };
        let id = self.reserve_registered(fd, interest, false, mode)?;
        self.handlers.set_io(id, edge);
        Ok(id)
    }

    fn io_poll(
        &mut self,
        fd: RawFd,
        id: HandlerId,
        dir: Interest,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Readiness, Error>> {
        let Some(slot) = self.handlers.io_slot(id) else {
            return Poll::Ready(Err(Error::NotRegistered { fd }));
        };
        let Some(io) = slot.io.as_mut() else {
            return Poll::Ready(Err(Error::NotRegistered { fd }));
        };
        let want = Readiness::from_bits_truncate(dir.bits()) & (Readiness::READ | Readiness::WRITE);
        let seen = io.ready & (want | Readiness::ERROR | Readiness::HUP);
        if !seen.is_empty() {
            io.ready.remove(want);
            return Poll::Ready(Ok(seen));
        }
        let waiter = if want.contains(Readiness::WRITE) {
            &mut io.write
        } else {
            &mut io.read
        };
        if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waiter = Some(cx.waker().clone());
        }
        if !io.edge && !io.parked {
            let interest = slot.interest | dir | Interest::ERROR;
            if interest != slot.interest {
                if let Err(e) = self.poller.modify(fd, id.key(), interest, Mode::Level) {
                    return Poll::Ready(Err(e));
                }
                slot.interest = interest;
            }
        }
        Poll::Pending
    }

    fn task_panicked(
        &mut self,
        id: crate::task::executor::TaskId,
        name: &'static str,
        caught: panic::Caught,
    ) {
        self.panicked(Source::Task { id }, name, caught);
    }

    fn loop_type(&self) -> core::any::TypeId {
        core::any::TypeId::of::<Self>()
    }

    fn as_untyped(&mut self) -> *mut () {
        self as *mut Self as *mut ()
    }
}
