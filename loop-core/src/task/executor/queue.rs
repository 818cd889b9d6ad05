//! The loop's side of the executor ([`ExecQueue`]): choosing and polling the ready tasks,
//! deferred cleanups, reserving slots, dropping every task at teardown.

use super::*;

impl<const N: usize, const S: usize> ExecQueue for Executor<N, S> {
    fn begin_iteration(&self, epoch: u32) {
        if self.attached_epoch() != Some(epoch) {
            return;
        }
        // Wakes from here on are seen by the next iteration.
        self.shared.ready_any.store(false, Ordering::SeqCst);
        for t in &self.tasks {
            if t.state.load(Ordering::Relaxed) == OCCUPIED && t.header.take_ready() {
                t.scheduled.set(true);
            }
        }
        // `run_sync`'s future is polled by `run_sync`, not here: keep the loop from sleeping.
        if self.main.ready.load(Ordering::SeqCst) {
            self.shared.ready_any.store(true, Ordering::SeqCst);
        }
    }

    fn run_ready(
        &self,
        lp: &mut (dyn LoopOps + 'static),
        me: ExecRef,
        threshold: Option<core::time::Duration>,
        slow: &mut heapless::Vec<SlowPoll, SLOW_POLLS_PER_ITERATION>,
    ) -> core::time::Duration {
        let mut longest = core::time::Duration::ZERO;
        if !me.attached() {
            return longest;
        }
        self.drain_deferred(lp, &me);
        if self.tasks.iter().all(|t| !t.scheduled.get()) {
            return longest;
        }
        let lp: *mut dyn LoopOps = lp;
        // SAFETY: `lp` comes from the loop's `&mut`, which is not used again until the guard
        // is dropped at the end of this function; the guard stays on this stack.
        let _current = unsafe { current::enter(lp, me) };
        for (index, t) in self.tasks.iter().enumerate() {
            if !me.attached() {
                // The loop was closed by a task: it dropped the other tasks.
                break;
            }
            if !t.scheduled.replace(false) || t.state.load(Ordering::Relaxed) != OCCUPIED {
                continue;
            }
            // Taken before the poll: a task that finishes gets a new generation.
            let id = TaskId {
                index: index as u32,
                generation: t.generation.load(Ordering::Relaxed),
            };
            let vtable = t.vtable.get();
            let started = threshold.and_then(|_| current::with_loop(|l| l.now()));
            // With `std` a panic is caught here, after `poll_slot`'s guard dropped the task
            // and freed its slot, and reported by the loop's policy (which may unwind on).
            if let Err(caught) = crate::panic::catch(|| self.poll_slot(t, &me)) {
                let name = vtable.map_or("", |v| (v.name)());
                let _ = current::with_loop(move |l| l.task_panicked(id, name, caught));
                continue;
            }
            let Some(threshold) = threshold else {
                continue;
            };
            let name = vtable.map_or("", |v| (v.name)());
            let ended = current::with_loop(|l| l.now());
            if let (Some(a), Some(b)) = (started, ended) {
                let duration = b - a;
                longest = longest.max(duration);
                if duration >= threshold {
                    let _ = slow.push(SlowPoll { id, name, duration });
                }
            }
        }
        longest
    }

    fn any_ready(&self) -> bool {
        self.shared.ready_any.load(Ordering::SeqCst)
    }

    fn live(&self) -> usize {
        self.len()
    }

    fn set_sleeping(&self, sleeping: bool) {
        self.shared.sleeping.store(sleeping, Ordering::SeqCst);
    }

    fn main_header(&'static self) -> &'static TaskHeader {
        &self.main
    }

    fn drop_all(&self, lp: &mut (dyn LoopOps + 'static), me: ExecRef) {
        if !me.attached() {
            return;
        }
        self.drain_deferred(lp, &me);
        self.closing.store(true, Ordering::Release);
        {
            let lp: *mut dyn LoopOps = lp;
            // SAFETY: as in `run_ready`: the loop's `&mut` is not used while the guard lives.
            let _current = unsafe { current::enter(lp, me) };
            // Futures may cancel timers and fd watches as they drop: the loop is current.
            for t in &self.tasks {
                // A RUNNING task (it closed its loop) is dropped when its poll returns.
                match t.state.load(Ordering::Relaxed) {
                    OCCUPIED => {
                        if let Some(vtable) = t.vtable.get() {
                            self.finish(t, vtable);
                        }
                    }
                    // A joined task's kept outcome: its handle then yields `Closed`.
                    DONE => {
                        let joiner = t.joiner.take();
                        self.free_done(t);
                        if let Some(w) = joiner {
                            w.wake();
                        }
                    }
                    _ => {}
                }
            }
        }
        self.drain_deferred(lp, &me);
        // Detach: the executor may serve another loop from now on.
        critical_section::with(|cs| {
            #[cfg(feature = "std")]
            self.owner_thread.store(0, Ordering::Release);
            self.shared.wake.store(ptr::null_mut(), Ordering::Release);
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.deferred.borrow_ref_mut(cs).clear();
            self.has_deferred.store(false, Ordering::Release);
            self.closing.store(false, Ordering::Release);
            self.state.store(me.epoch << 1, Ordering::Release);
        });
    }

    fn current_epoch(&self) -> Option<u32> {
        self.attached_epoch()
    }

    fn defer(&self, epoch: u32, op: Deferred) -> bool {
        critical_section::with(|cs| {
            // Checked inside the critical section that `drop_all` detaches in: an op is never
            // queued for a loop that is gone.
            if self.attached_epoch() != Some(epoch) {
                return false;
            }
            let pushed = self
                .deferred
                .borrow_ref_mut(cs)
                .push_back((epoch, op))
                .is_ok();
            self.has_deferred.store(true, Ordering::Release);
            pushed
        })
    }

    fn take_deferred(&self, epoch: u32) -> Option<Deferred> {
        // Called on every `with_loop`: without pending cleanups, no critical section. A push
        // racing with this load is picked up by the next call (the loop's next iteration).
        if !self.has_deferred.load(Ordering::Acquire) {
            return None;
        }
        critical_section::with(|cs| {
            let mut q = self.deferred.borrow_ref_mut(cs);
            while let Some((e, op)) = q.pop_front() {
                if e == epoch {
                    return Some(op);
                }
            }
            self.has_deferred.store(false, Ordering::Release);
            None
        })
    }

    unsafe fn reserve(
        &self,
        epoch: u32,
        size: usize,
        align: usize,
    ) -> Result<(usize, *mut u8), Error> {
        if self.attached_epoch() != Some(epoch) {
            return Err(Error::NotAttached);
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if size > S || align > SLOT_ALIGN {
            return Err(Error::TooLarge {
                size,
                align,
                max: S,
            });
        }
        let Some((index, slot)) = self
            .tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.state.load(Ordering::Relaxed) == EMPTY)
        else {
            return Err(Error::Full {
                what: Resource::Tasks,
            });
        };
        slot.state.store(RESERVED, Ordering::Relaxed);
        Ok((index, slot.storage_ptr()))
    }

    unsafe fn commit(&self, index: usize, vtable: &'static TaskVTable, join: bool) -> TaskId {
        let slot = &self.tasks[index];
        slot.vtable.set(Some(vtable));
        slot.handle.set(join);
        slot.abort.set(false);
        slot.outcome.set(OUT_NONE);
        slot.scheduled.set(false);
        self.live.fetch_add(1, Ordering::AcqRel);
        slot.state.store(OCCUPIED, Ordering::Release);
        // Polled in the next iteration: `begin_iteration` picks it up.
        slot.header.wake();
        TaskId {
            index: index as u32,
            generation: slot.generation.load(Ordering::Relaxed),
        }
    }

    fn join_poll(
        &self,
        id: TaskId,
        epoch: u32,
        waker: &core::task::Waker,
        take: &mut dyn FnMut(*mut u8),
    ) -> core::task::Poll<Result<(), JoinError>> {
        use core::task::Poll;
        let Some(slot) = self.joined(id, epoch) else {
            return Poll::Ready(Err(JoinError::Closed));
        };
        if slot.state.load(Ordering::Relaxed) != DONE {
            let mut w = slot.joiner.take();
            match &mut w {
                Some(w) if w.will_wake(waker) => {}
                _ => w = Some(waker.clone()),
            }
            slot.joiner.set(w);
            return Poll::Pending;
        }
        let r = match slot.outcome.get() {
            OUT_READY => {
                if slot.vtable.get().is_some() {
                    take(slot.storage_ptr());
                }
                Ok(())
            }
            OUT_ABORTED => Err(JoinError::Aborted),
            OUT_PANICKED => Err(JoinError::Panicked),
            _ => Err(JoinError::Closed),
        };
        self.free_done(slot);
        Poll::Ready(r)
    }

    fn join_abort(&self, id: TaskId, epoch: u32) {
        let Some(slot) = self.joined(id, epoch) else {
            return;
        };
        match slot.state.load(Ordering::Relaxed) {
            OCCUPIED => {
                if let Some(vtable) = slot.vtable.get() {
                    self.complete(slot, vtable, OUT_ABORTED);
                }
            }
            // Aborting itself: dropped when this poll returns (`poll_slot`).
            RUNNING => slot.abort.set(true),
            _ => {}
        }
    }

    fn join_detach(&self, id: TaskId, epoch: u32) {
        let Some(slot) = self.joined(id, epoch) else {
            return;
        };
        if slot.state.load(Ordering::Relaxed) == DONE {
            self.free_done(slot);
        } else {
            slot.handle.set(false);
            slot.joiner.set(None);
        }
    }
}

/// The loop's view of its executor, with the sizes erased.
pub(crate) trait ExecQueue: Sync {
    fn begin_iteration(&self, epoch: u32);
    fn run_ready(
        &self,
        lp: &mut (dyn LoopOps + 'static),
        me: ExecRef,
        threshold: Option<core::time::Duration>,
        slow: &mut SlowPolls,
    ) -> core::time::Duration;
    fn any_ready(&self) -> bool;
    /// Tasks alive (spawned and not yet dropped).
    fn live(&self) -> usize;
    fn set_sleeping(&self, sleeping: bool);
    fn main_header(&'static self) -> &'static TaskHeader;
    fn drop_all(&self, lp: &mut (dyn LoopOps + 'static), me: ExecRef);
    fn current_epoch(&self) -> Option<u32>;
    fn defer(&self, epoch: u32, op: Deferred) -> bool;
    fn take_deferred(&self, epoch: u32) -> Option<Deferred>;
    /// A free slot's storage for a future of `size` bytes aligned to `align`.
    ///
    /// # Safety
    /// On the loop's thread (see [`ExecRef::spawn`]); `commit` must follow once the storage
    /// holds the future.
    unsafe fn reserve(
        &self,
        epoch: u32,
        size: usize,
        align: usize,
    ) -> Result<(usize, *mut u8), Error>;
    /// # Safety
    /// Slot `index` was `reserve`d and now holds a live future `vtable` was made for.
    unsafe fn commit(&self, index: usize, vtable: &'static TaskVTable, join: bool) -> TaskId;
    /// Poll a joined task's outcome: `take` moves the output out of the slot's storage.
    fn join_poll(
        &self,
        id: TaskId,
        epoch: u32,
        waker: &Waker,
        take: &mut dyn FnMut(*mut u8),
    ) -> core::task::Poll<Result<(), JoinError>>;
    /// Abort a joined task (see [`JoinHandle::abort`]).
    fn join_abort(&self, id: TaskId, epoch: u32);
    /// The handle is gone: free a `DONE` slot, or let the task run on unjoined.
    fn join_detach(&self, id: TaskId, epoch: u32);
}

/// Drops the task whose poll is unwinding and frees its slot.
pub(super) struct FinishOnUnwind<'a, const N: usize, const S: usize> {
    pub(super) exec: &'a Executor<N, S>,
    pub(super) slot: &'a TaskSlot<S>,
    pub(super) vtable: &'static TaskVTable,
}

impl<const N: usize, const S: usize> Drop for FinishOnUnwind<'_, N, S> {
    fn drop(&mut self) {
        self.exec.complete(self.slot, self.vtable, OUT_PANICKED);
    }
}
