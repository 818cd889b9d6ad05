//! Model-based property tests of the timer API (issue 7, part 1).
//!
//! Random sequences of `call_at`, `call_later`, `add_periodic`, `remove_timeout` (also of
//! fired, cancelled and reused-slot handles), `reset_timer`, timers and callbacks that cancel
//! other timers, clock moves (forwards, backwards, to the far future) and `run_once` are
//! applied both to a loop on the simulated poller and to a plain reference model: a list of
//! `(deadline, sequence, id)` where the due entries fire in `(deadline, sequence)` order
//! (ARCHITECTURE.md). After every step the two must agree exactly (what fired, in which order, at
//! which instant, what each cancel returned, the clock, the poll timeout), and a few
//! properties are checked on their own for clearer failures: nothing fires early, nothing
//! fires twice in one iteration, a cancelled timer never fires, `Error::Full` comes exactly at
//! `T` live timers with the closure handed back.
//!
//! The capacity is small (`T = 8`) so that `Full` is hit often; one property uses 64 timers so
//! the 4-ary heap grows past three levels, and one 72, a table large enough for the timer
//! wheel and the run of equal delays (the others, at most 64 timers, keep every timer in the
//! heap). Cases: 512 per property by default; set
//! `PROPTEST_CASES` for longer runs.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{Error, EventLoop, Instant, Periodic, Resource, TimerHandle};
use proptest::prelude::*;

const T: usize = 8;
const Q: usize = 4;
/// The loop under test, with room for `N` timers (`T` for most properties).
type Lp<const N: usize> = EventLoop<SimPoller<8>, 4, N, Q>;

/// The id given to closures that are expected to be refused (they never get a handle).
const REFUSED: usize = usize::MAX;

#[path = "common/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

// ------------------------------------------------------------------------------------------
// What the closures record
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    Timer(usize),
    Callback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Timer `id` ran when the clock read `at`.
    Fired { id: usize, at: u64 },
    /// `remove_timeout(victim)` called from inside the loop returned `pending`.
    Cancelled {
        by: By,
        victim: usize,
        pending: bool,
    },
}

/// What the closures share with the test: the event log and every issued handle (by id), so
/// that a periodic callback can find its own handle.
#[derive(Default)]
struct Shared {
    log: RefCell<Vec<Event>>,
    handles: RefCell<Vec<TimerHandle>>,
}

impl Shared {
    fn push(&self, e: Event) {
        self.log.borrow_mut().push(e);
    }
    fn handle(&self, id: usize) -> Option<TimerHandle> {
        self.handles.borrow().get(id).copied()
    }
}

// ------------------------------------------------------------------------------------------
// Operations
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// `call_at(now + rel)`: negative `rel` is a deadline in the past.
    CallAt {
        rel: i64,
    },
    CallLater {
        delay: u64,
    },
    /// `call_at(Instant::MAX)`: "never" (until the clock saturates).
    CallAtNever,
    /// A one-shot timer that cancels timer `victim` when it runs.
    Cancelling {
        rel: i64,
        victim: usize,
    },
    /// `add_periodic` (period 0 is refused); it stops itself after `stop_after` calls.
    Periodic {
        period: u64,
        stop_after: Option<u32>,
    },
    /// A callback (next iteration, before the timers) that cancels `victim`.
    CallbackCancels {
        victim: usize,
    },
    Remove {
        victim: usize,
    },
    Reset {
        victim: usize,
        rel: i64,
    },
    Advance {
        by: u64,
    },
    AdvanceFar,
    StepBack {
        by: u64,
    },
    Run {
        cap: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-20i64..40).prop_map(|rel| Op::CallAt { rel }),
        3 => (0u64..40).prop_map(|delay| Op::CallLater { delay }),
        1 => Just(Op::CallAtNever),
        2 => ((-10i64..30), any::<usize>()).prop_map(|(rel, victim)| Op::Cancelling { rel, victim }),
        2 => ((0u64..25), proptest::option::of(1u32..4))
            .prop_map(|(period, stop_after)| Op::Periodic { period, stop_after }),
        2 => any::<usize>().prop_map(|victim| Op::CallbackCancels { victim }),
        3 => any::<usize>().prop_map(|victim| Op::Remove { victim }),
        3 => (any::<usize>(), -20i64..40).prop_map(|(victim, rel)| Op::Reset { victim, rel }),
        2 => (0u64..30).prop_map(|by| Op::Advance { by }),
        1 => Just(Op::AdvanceFar),
        1 => (0u64..30).prop_map(|by| Op::StepBack { by }),
        6 => (0u64..30).prop_map(|cap| Op::Run { cap }),
    ]
}

/// Mostly adds and few runs, so the heap sits at its capacity.
fn op_crowded() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (-5i64..10).prop_map(|rel| Op::CallAt { rel }),
        3 => (1u64..5).prop_map(|period| Op::Periodic { period, stop_after: Some(2) }),
        2 => any::<usize>().prop_map(|victim| Op::Remove { victim }),
        2 => (0u64..5).prop_map(|cap| Op::Run { cap }),
    ]
}

/// Many timers on few distinct deadlines, cancels and resets in the middle of a big heap.
fn op_deep() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (-5i64..20).prop_map(|rel| Op::CallAt { rel }),
        1 => ((1u64..8), proptest::option::of(1u32..4))
            .prop_map(|(period, stop_after)| Op::Periodic { period, stop_after }),
        1 => ((-5i64..20), any::<usize>()).prop_map(|(rel, victim)| Op::Cancelling { rel, victim }),
        2 => any::<usize>().prop_map(|victim| Op::Remove { victim }),
        2 => (any::<usize>(), -5i64..20).prop_map(|(victim, rel)| Op::Reset { victim, rel }),
        1 => (0u64..4).prop_map(|by| Op::Advance { by }),
        1 => (0u64..4).prop_map(|cap| Op::Run { cap }),
    ]
}

// ------------------------------------------------------------------------------------------
// The reference model
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Once,
    Cancels(usize),
    Periodic {
        period: u64,
        stop_after: Option<u32>,
        calls: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct MTimer {
    id: usize,
    deadline: u64,
    seq: u64,
    kind: Kind,
}

/// Live timers as a plain list; the earliest `(deadline, seq)` is found by scanning.
#[derive(Default)]
struct Model {
    now: u64,
    next_seq: u64,
    live: Vec<MTimer>,
    callbacks: VecDeque<usize>,
    /// Ids whose timer was cancelled (never to fire again).
    cancelled: Vec<usize>,
}

/// Tornado 5.1's `PeriodicCallback._update_next`: the next grid point strictly after `now`.
fn periodic_next(last: u64, now: u64, period: u64) -> u64 {
    if last <= now {
        let steps = (now - last) / period + 1;
        last.saturating_add(steps.saturating_mul(period))
    } else {
        last.saturating_add(period)
    }
}

impl Model {
    fn schedule(&mut self, id: usize, deadline: u64, kind: Kind) {
        self.live.push(MTimer {
            id,
            deadline,
            seq: self.next_seq,
            kind,
        });
        self.next_seq += 1;
    }

    fn is_live(&self, id: usize) -> bool {
        self.live.iter().any(|t| t.id == id)
    }

    fn cancel(&mut self, id: usize) -> bool {
        match self.live.iter().position(|t| t.id == id) {
            Some(i) => {
                self.live.remove(i);
                self.cancelled.push(id);
                true
            }
            None => false,
        }
    }

    fn reset(&mut self, id: usize, deadline: u64) -> bool {
        let seq = self.next_seq;
        match self.live.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                t.deadline = deadline;
                t.seq = seq;
                self.next_seq += 1;
                true
            }
            None => false,
        }
    }

    fn deadline_of(&self, id: usize) -> Option<(u64, u64)> {
        self.live
            .iter()
            .find(|t| t.id == id)
            .map(|t| (t.deadline, t.seq))
    }

    /// One iteration: the snapshot of callbacks, then the timers due at `now` that existed
    /// before the iteration, in `(deadline, seq)` order; then the poll, which (nothing being
    /// ready) moves the clock by its timeout. Returns the events and the poll timeout.
    fn run_once(&mut self, cap: u64) -> (Vec<Event>, u64) {
        let mut out = Vec::new();
        let n = self.callbacks.len();
        let limit = self.next_seq;
        for _ in 0..n {
            let victim = self.callbacks.pop_front().expect("counted");
            let pending = self.cancel(victim);
            out.push(Event::Cancelled {
                by: By::Callback,
                victim,
                pending,
            });
        }
        while let Some(i) =
            (0..self.live.len()).min_by_key(|&i| (self.live[i].deadline, self.live[i].seq))
        {
            let head = self.live[i];
            if head.deadline > self.now || head.seq >= limit {
                break;
            }
            self.live.remove(i);
            out.push(Event::Fired {
                id: head.id,
                at: self.now,
            });
            match head.kind {
                Kind::Once => {}
                Kind::Cancels(victim) => {
                    let pending = self.cancel(victim);
                    out.push(Event::Cancelled {
                        by: By::Timer(head.id),
                        victim,
                        pending,
                    });
                }
                Kind::Periodic {
                    period,
                    stop_after,
                    calls,
                } => {
                    let calls = calls + 1;
                    if stop_after.is_some_and(|k| calls >= k) {
                        // Cancelling itself while running: still pending until it returns.
                        out.push(Event::Cancelled {
                            by: By::Timer(head.id),
                            victim: head.id,
                            pending: true,
                        });
                        self.cancelled.push(head.id);
                    } else {
                        let next = periodic_next(head.deadline, self.now, period);
                        let kind = Kind::Periodic {
                            period,
                            stop_after,
                            calls,
                        };
                        self.schedule(head.id, next, kind);
                    }
                }
            }
        }
        let timeout = if !self.callbacks.is_empty() {
            0
        } else {
            self.live
                .iter()
                .map(|t| t.deadline.saturating_sub(self.now))
                .min()
                .map_or(cap, |t| t.min(cap))
        };
        self.now = self.now.saturating_add(timeout);
        (out, timeout)
    }
}

// ------------------------------------------------------------------------------------------
// The closures
// ------------------------------------------------------------------------------------------

fn once<const N: usize>(s: &Rc<Shared>, id: usize) -> impl FnOnce(&mut Lp<N>) + 'static {
    let s = s.clone();
    move |lp: &mut Lp<N>| {
        s.push(Event::Fired {
            id,
            at: lp.now().as_nanos(),
        })
    }
}

fn cancelling<const N: usize>(
    s: &Rc<Shared>,
    id: usize,
    victim: usize,
) -> impl FnOnce(&mut Lp<N>) + 'static {
    let s = s.clone();
    let h = s.handle(victim).expect("victims are issued handles");
    move |lp: &mut Lp<N>| {
        s.push(Event::Fired {
            id,
            at: lp.now().as_nanos(),
        });
        let pending = lp.remove_timeout(h);
        s.push(Event::Cancelled {
            by: By::Timer(id),
            victim,
            pending,
        });
    }
}

fn periodic<const N: usize>(
    s: &Rc<Shared>,
    id: usize,
    stop_after: Option<u32>,
) -> impl FnMut(&mut Lp<N>) + 'static {
    let s = s.clone();
    let mut calls = 0u32;
    move |lp: &mut Lp<N>| {
        calls += 1;
        s.push(Event::Fired {
            id,
            at: lp.now().as_nanos(),
        });
        if stop_after.is_some_and(|k| calls >= k) {
            if let Some(me) = s.handle(id) {
                let pending = lp.remove_timeout(me);
                s.push(Event::Cancelled {
                    by: By::Timer(id),
                    victim: id,
                    pending,
                });
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The harness
// ------------------------------------------------------------------------------------------

struct Harness<const N: usize> {
    lp: Lp<N>,
    shared: Rc<Shared>,
    model: Model,
    kinds: Vec<Kind>,
}

fn full_timers() -> Error {
    Error::Full {
        what: Resource::Timers,
    }
}

impl<const N: usize> Harness<N> {
    fn new() -> Self {
        Harness {
            lp: EventLoop::with_poller(SimPoller::new()),
            shared: Rc::new(Shared::default()),
            model: Model::default(),
            kinds: Vec::new(),
        }
    }

    fn issued(&self) -> usize {
        self.shared.handles.borrow().len()
    }

    fn pick(&self, victim: usize) -> Option<usize> {
        let n = self.issued();
        (n > 0).then(|| victim % n)
    }

    fn at(&self, rel: i64) -> u64 {
        self.model.now.saturating_add_signed(rel)
    }

    fn take_log(&self) -> Vec<Event> {
        std::mem::take(&mut *self.shared.log.borrow_mut())
    }

    /// The model's id for a new timer, with the closure's result checked against the model.
    fn scheduled<F>(
        &mut self,
        result: Result<TimerHandle, loop_core::Refused<F>>,
        deadline: u64,
        kind: Kind,
        run_refused: impl FnOnce(F, &mut Lp<N>),
    ) -> Result<(), TestCaseError> {
        let full = self.model.live.len() >= N;
        match result {
            Ok(h) => {
                prop_assert!(!full, "a {N}th+1 timer was accepted");
                let id = self.issued();
                self.shared.handles.borrow_mut().push(h);
                self.kinds.push(kind);
                self.model.schedule(id, deadline, kind);
            }
            Err(refused) => {
                prop_assert!(full, "refused below capacity: {:?}", refused.error);
                prop_assert_eq!(refused.error, full_timers());
                // Nothing is lost: the closure comes back and still works.
                run_refused(refused.into_inner(), &mut self.lp);
                let log = self.take_log();
                prop_assert!(
                    matches!(log.first(), Some(Event::Fired { id: REFUSED, .. })),
                    "the handed-back closure is the one that was refused: {:?}",
                    log
                );
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let s = self.shared.clone();
        let full = self.model.live.len() >= N;
        let id = if full { REFUSED } else { self.issued() };
        match *op {
            Op::CallAt { rel } => {
                let d = self.at(rel);
                let r = self.lp.call_at(Instant::from_nanos(d), once(&s, id));
                self.scheduled(r, d, Kind::Once, |f, lp| f(lp))?;
            }
            Op::CallLater { delay } => {
                let d = self.model.now.saturating_add(delay);
                let r = self
                    .lp
                    .call_later(Duration::from_nanos(delay), once(&s, id));
                self.scheduled(r, d, Kind::Once, |f, lp| f(lp))?;
            }
            Op::CallAtNever => {
                let r = self.lp.call_at(Instant::MAX, once(&s, id));
                self.scheduled(r, u64::MAX, Kind::Once, |f, lp| f(lp))?;
            }
            Op::Cancelling { rel, victim } => {
                let Some(victim) = self.pick(victim) else {
                    return Ok(());
                };
                let d = self.at(rel);
                let r = self
                    .lp
                    .call_at(Instant::from_nanos(d), cancelling(&s, id, victim));
                match r {
                    // Do not run it by hand: it would cancel its victim outside the model.
                    Err(refused) => {
                        prop_assert!(full, "refused below capacity: {:?}", refused.error);
                        prop_assert_eq!(refused.error, full_timers());
                        let before = Rc::strong_count(&self.shared);
                        drop(refused.into_inner());
                        prop_assert_eq!(
                            Rc::strong_count(&self.shared),
                            before - 1,
                            "the handed-back value is the closure"
                        );
                    }
                    ok => self.scheduled(ok, d, Kind::Cancels(victim), |f, lp| f(lp))?,
                }
            }
            Op::Periodic { period, stop_after } => {
                let r = self.lp.add_periodic(
                    Periodic::every(Duration::from_nanos(period)),
                    periodic(&s, id, stop_after),
                );
                if period == 0 {
                    let refused = r.err();
                    prop_assert!(refused.is_some(), "a zero period was accepted");
                    let refused = refused.expect("checked");
                    prop_assert_eq!(refused.error, Error::InvalidPeriod);
                    let mut f = refused.into_inner();
                    f(&mut self.lp);
                    let log = self.take_log();
                    let ran = matches!(log.as_slice(), [Event::Fired { .. }]);
                    prop_assert!(ran, "the handed-back closure runs: {:?}", log);
                } else {
                    let d = self.model.now.saturating_add(period);
                    let kind = Kind::Periodic {
                        period,
                        stop_after,
                        calls: 0,
                    };
                    self.scheduled(r, d, kind, |mut f, lp| f(lp))?;
                }
            }
            Op::CallbackCancels { victim } => {
                let Some(victim) = self.pick(victim) else {
                    return Ok(());
                };
                let h = s.handle(victim).expect("issued");
                let s2 = s.clone();
                let r = self.lp.add_callback(move |lp| {
                    let pending = lp.remove_timeout(h);
                    s2.push(Event::Cancelled {
                        by: By::Callback,
                        victim,
                        pending,
                    });
                });
                if self.model.callbacks.len() >= Q {
                    prop_assert!(r.is_err(), "callback {Q}+1 accepted");
                } else {
                    prop_assert!(r.is_ok(), "callback refused below capacity");
                    self.model.callbacks.push_back(victim);
                }
            }
            Op::Remove { victim } => {
                let Some(victim) = self.pick(victim) else {
                    return Ok(());
                };
                let got = self.lp.remove_timeout(s.handle(victim).expect("issued"));
                let want = self.model.cancel(victim);
                prop_assert_eq!(got, want, "remove_timeout({}) result", victim);
            }
            Op::Reset { victim, rel } => {
                let Some(victim) = self.pick(victim) else {
                    return Ok(());
                };
                let d = self.at(rel);
                let got = self
                    .lp
                    .reset_timer(s.handle(victim).expect("issued"), Instant::from_nanos(d));
                let want = self.model.reset(victim, d);
                prop_assert_eq!(got, want, "reset_timer({}) result", victim);
            }
            Op::Advance { by } => {
                self.lp.poller().advance(Duration::from_nanos(by));
                self.model.now = self.model.now.saturating_add(by);
            }
            Op::AdvanceFar => {
                let by = u64::MAX / 4;
                self.lp.poller().advance(Duration::from_nanos(by));
                self.model.now = self.model.now.saturating_add(by);
            }
            Op::StepBack { by } => {
                let t = self.model.now.saturating_sub(by);
                self.lp.poller().set_time(Instant::from_nanos(t));
                self.model.now = t;
            }
            Op::Run { cap } => self.run(cap)?,
        }
        self.check_state()
    }

    fn run(&mut self, cap: u64) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let before: HashMap<usize, (u64, u64)> = (0..self.issued())
            .filter_map(|id| self.model.deadline_of(id).map(|d| (id, d)))
            .collect();
        let cancelled_before = self.model.cancelled.clone();
        self.lp
            .run_once(Some(Duration::from_nanos(cap)))
            .map_err(|e| TestCaseError::fail(format!("run_once failed: {e:?}")))?;
        let got = self.take_log();
        let (want, timeout) = self.model.run_once(cap);

        // Properties on their own, before the exact comparison.
        let mut last: Option<(u64, u64)> = None;
        let mut fired = Vec::new();
        for e in &got {
            if let Event::Fired { id, at } = *e {
                prop_assert_eq!(at, now, "timer {} ran with the clock moved", id);
                let Some(&(deadline, seq)) = before.get(&id) else {
                    return Err(TestCaseError::fail(format!(
                        "timer {id} fired but was not pending before this iteration \
                         (cancelled before: {}): {got:?}",
                        cancelled_before.contains(&id)
                    )));
                };
                prop_assert!(
                    at >= deadline,
                    "timer {} fired early: {} < {}",
                    id,
                    at,
                    deadline
                );
                prop_assert!(
                    !fired.contains(&id),
                    "timer {} fired twice in one iteration",
                    id
                );
                if let Some(prev) = last {
                    prop_assert!(
                        prev < (deadline, seq),
                        "out of (deadline, seq) order: {:?}",
                        got
                    );
                }
                last = Some((deadline, seq));
                fired.push(id);
            }
        }
        prop_assert_eq!(&got, &want, "what ran in this iteration");
        prop_assert_eq!(
            self.lp.poller().stats().last_timeout,
            Some(Some(Duration::from_nanos(timeout))),
            "poll timeout"
        );
        Ok(())
    }

    fn check_state(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.lp.timer_count(), self.model.live.len(), "timer_count");
        prop_assert_eq!(
            self.lp.callback_count(),
            self.model.callbacks.len(),
            "callback_count"
        );
        prop_assert_eq!(self.lp.now().as_nanos(), self.model.now, "clock");
        for id in 0..self.issued() {
            let h = self.shared.handle(id).expect("issued");
            prop_assert_eq!(
                self.lp.timer_pending(h),
                self.model.is_live(id),
                "timer_pending({}) ({:?})",
                id,
                self.kinds[id]
            );
        }
        Ok(())
    }
}

fn check<const N: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::<N>::new();
    for op in ops {
        h.step(op)?;
    }
    // Drain: everything not cancelled and not "never" eventually fires, in model order.
    for _ in 0..64 {
        h.step(&Op::Run { cap: 1000 })?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn due_timers_fire_exactly_once_in_deadline_then_fifo_order_and_never_early(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        check::<T>(&ops)?;
    }

    #[test]
    fn a_deep_heap_of_64_timers_keeps_deadline_then_fifo_order(
        ops in prop::collection::vec(op_deep(), 1..200)
    ) {
        // Three levels of the 4-ary heap and more: sift paths the 8-timer loop never takes.
        check::<64>(&ops)?;
    }

    #[test]
    fn a_loop_whose_timer_table_has_a_wheel_fires_in_the_same_order(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        // Tables above 64 timers keep far timers in a wheel in front of the heap, and timers
        // that go last in the run (the ones above have neither): the far jumps of the clock
        // put timers in the wheel, equal and growing deadlines in the run.
        check::<72>(&ops)?;
    }

    #[test]
    fn full_heap_refuses_exactly_at_capacity_and_hands_the_closure_back(
        ops in prop::collection::vec(op_crowded(), 1..60)
    ) {
        check::<T>(&ops)?;
    }
}

/// The model itself, on the Tornado examples it is meant to reproduce.
#[test]
fn model_fires_equal_deadlines_fifo_and_periodic_on_the_grid() {
    let mut m = Model::default();
    m.schedule(0, 10, Kind::Once);
    m.schedule(1, 5, Kind::Once);
    m.schedule(2, 10, Kind::Once);
    m.now = 10;
    let (ev, _) = m.run_once(0);
    let ids: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Fired { id, .. } => Some(*id),
            Event::Cancelled { .. } => None,
        })
        .collect();
    assert_eq!(ids, [1, 0, 2]);
    assert_eq!(periodic_next(100, 130, 10), 140);
    assert_eq!(periodic_next(100, 20, 10), 110);
}
