//! A poller whose clock the benchmark moves: the instruction counts of ioloop's timer phases
//! under callgrind (`--only timers-callgrind`) are then the same in every run.
//!
//! With the poller's own clock, what a phase executes depends on the wall-clock instants it
//! runs at: a timer's place in the wheel depends on where its deadline falls against the
//! wheel's tick boundaries, and the fire pass crosses as many ticks as real time advanced
//! since the previous pass (under valgrind, itself slowed 50 times). The random-deadline
//! "fire" rows moved by about ±5% between runs of one binary. [`ManualClock`] reads a time the
//! benchmark moves instead (everything else goes to the wrapped poller unchanged), so the same
//! inputs run the same instructions.
//!
//! Only the callgrind child uses it (see `callgrind.rs`); the timed runs keep the real clock.
//! Its waits are the wrapped poller's, in real time, so the benchmark passes zero timeouts
//! (`run_once(Some(Duration::ZERO))`): a timeout the loop computed from this clock would block
//! for that long on the real one.
//! The per-timer code does not change: the loop reads its clock once per pass, and every
//! per-timer operation uses that cached reading either way.

use std::cell::Cell;
use std::time::Duration;

use loop_core::{
    Capabilities, Clock, Errno, Error, Instant, Interest, Mode, OpenPoller, PollEvent, Poller,
    RawFd,
};

/// `P` with a clock moved by hand ([`ManualClock::advance`]); every other operation is `P`'s.
pub struct ManualClock<P> {
    inner: P,
    now: Cell<Instant>,
}

impl<P> ManualClock<P> {
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get() + d);
    }
}

/// Where the clock starts: far enough from zero that nothing saturates, and the same in every
/// run.
pub const START: Instant = Instant::from_nanos(1_000_000_000_000);

impl<P> Clock for ManualClock<P> {
    fn now(&self) -> Instant {
        self.now.get()
    }
}

impl<P: Poller> Poller for ManualClock<P> {
    type Notifier = P::Notifier;

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn register(
        &mut self,
        fd: RawFd,
        key: u64,
        interest: Interest,
        mode: Mode,
    ) -> Result<(), Error> {
        self.inner.register(fd, key, interest, mode)
    }

    fn modify(&mut self, fd: RawFd, key: u64, interest: Interest, mode: Mode) -> Result<(), Error> {
        self.inner.modify(fd, key, interest, mode)
    }

    fn deregister(&mut self, fd: RawFd) -> Result<(), Error> {
        self.inner.deregister(fd)
    }

    #[inline(always)]
    fn wait(
        &mut self,
        events: &mut [PollEvent],
        timeout: Option<Duration>,
    ) -> Result<usize, Errno> {
        self.inner.wait(events, timeout)
    }

    fn notifier(&self) -> &Self::Notifier {
        self.inner.notifier()
    }

    fn forked(&self) -> bool {
        self.inner.forked()
    }

    fn reset(&mut self) -> Result<bool, Error> {
        self.inner.reset()
    }

    fn register_eexist_is_exact(&self) -> bool {
        self.inner.register_eexist_is_exact()
    }
}

impl<P: OpenPoller> OpenPoller for ManualClock<P> {
    fn open() -> Result<Self, Errno> {
        Ok(Self {
            inner: P::open()?,
            now: Cell::new(START),
        })
    }
}

/// How a timer benchmark's clock moves between phases: the real one by itself, a
/// [`ManualClock`] by the fixed steps below.
pub trait PhaseClock {
    /// Before each timed phase that runs inside a loop pass (schedule, re-arm, cancel).
    fn next_phase(&self) {}

    /// Between scheduling the fire phase's timers and expiring them: until all are due.
    fn until_due(&self, scheduled_by: std::time::Instant) {
        super::wait_until_due(scheduled_by);
    }
}

impl PhaseClock for loop_linux::Epoll {}

impl<P> PhaseClock for ManualClock<P> {
    /// One millisecond on, as a phase of the timed run takes about that long.
    fn next_phase(&self) {
        self.advance(Duration::from_millis(1));
    }

    /// The timed run's sleep, without sleeping.
    fn until_due(&self, _: std::time::Instant) {
        self.advance(super::FIRE_SPAN + super::FIRE_MARGIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_linux::Epoll;

    #[test]
    fn the_clock_reads_its_start_and_moves_only_when_told() {
        let mut p = ManualClock::<Epoll>::open().unwrap();
        assert_eq!(p.now(), START);
        let mut events = [PollEvent::default(); 4];
        assert_eq!(p.wait(&mut events, Some(Duration::ZERO)), Ok(0));
        assert_eq!(p.now(), START);
        p.next_phase();
        p.until_due(std::time::Instant::now());
        assert_eq!(
            p.now(),
            START + Duration::from_millis(1) + super::super::FIRE_SPAN + super::super::FIRE_MARGIN
        );
    }
}
