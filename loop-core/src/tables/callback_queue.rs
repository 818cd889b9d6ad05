//! The callback queue: a fixed-capacity FIFO ring.
//!
//! Each iteration runs only the callbacks that were queued when it started (Tornado's
//! snapshot), so a callback that queues another cannot starve the poller.
//!
//! Slots are `MaybeUninit`: exactly the `len` slots starting at `head` (wrapping) are
//! initialised. All-zero bytes are an empty queue.

use core::mem::MaybeUninit;

use crate::raw::zeroed::ZeroInit;

pub(crate) struct CallbackQueue<F, const Q: usize> {
    buf: [MaybeUninit<F>; Q],
    head: usize,
    len: usize,
}

// SAFETY: zero is `len = 0`: no slot is in use, so the `MaybeUninit` buffer is never read.
unsafe impl<F, const Q: usize> ZeroInit for CallbackQueue<F, Q> {}

impl<F, const Q: usize> CallbackQueue<F, Q> {
    /// Queued callbacks; always 0 (a constant) in a queue of no capacity.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        if Q == 0 {
            0
        } else {
            self.len
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append `f`, or hand it back when the queue is full.
    #[inline]
    pub(crate) fn push(&mut self, f: F) -> Result<(), F> {
        if self.len == Q {
            return Err(f);
        }
        let tail = (self.head + self.len) % Q;
        self.buf[tail].write(f);
        self.len += 1;
        Ok(())
    }

    /// Take the oldest callback.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<F> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: with `len > 0` the slot at `head` is initialised; advancing `head` below
        // marks it uninitialised again, so it is read exactly once.
        let f = unsafe { self.buf[self.head].assume_init_read() };
        self.head = (self.head + 1) % Q;
        self.len -= 1;
        Some(f)
    }
}

impl<F, const Q: usize> Drop for CallbackQueue<F, Q> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::raw::zeroed::zeroed;
    use std::rc::Rc;

    #[test]
    fn fifo_across_wraparound() {
        let mut q: CallbackQueue<u32, 3> = zeroed();
        let mut next_in = 0;
        let mut next_out = 0;
        for _ in 0..10 {
            while q.push(next_in).is_ok() {
                next_in += 1;
            }
            assert_eq!(q.pop(), Some(next_out));
            next_out += 1;
        }
        while let Some(v) = q.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
    }

    #[test]
    fn full_queue_hands_the_callback_back() {
        let mut q: CallbackQueue<u8, 1> = zeroed();
        q.push(1).unwrap();
        assert_eq!(q.push(2), Err(2));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn dropping_the_queue_drops_what_is_left_once() {
        let rc = Rc::new(());
        {
            let mut q: CallbackQueue<Rc<()>, 4> = zeroed();
            for _ in 0..4 {
                q.push(rc.clone()).unwrap();
            }
            drop(q.pop());
            q.push(rc.clone()).unwrap();
            assert_eq!(Rc::strong_count(&rc), 5);
        }
        assert_eq!(Rc::strong_count(&rc), 1);
    }
}
