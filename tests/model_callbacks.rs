//! Model-based property tests of the callback queue through the loop (issue 7, part 1).
//!
//! Callbacks that add callbacks (a tree of bounded fan-out), timers that add callbacks, and
//! `run_once` with and without a timeout cap, applied both to a loop on the simulated poller
//! and to a plain FIFO model. When the queue is full (`Q = 4`, hit often) the refused callback
//! comes back inside `Refused` and is run by hand on the spot, so nothing is ever lost.
//!
//! Checked after every step: the exact record of what ran (and what was queued, refused, run
//! by hand); on its own, the snapshot rule of ARCHITECTURE.md: the callbacks an iteration runs
//! from the queue are exactly those queued when it started, first-in first-out, and none
//! added during it; the poll does not block while callbacks are queued (an unbounded
//! `run_once` with callbacks left is a zero-timeout poll, not a wait forever);
//! `callback_count` and `timer_count` match. Cases: 512 per property by default; set
//! `PROPTEST_CASES` for longer runs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use loop_core::sim::SimPoller;
use loop_core::{Error, EventLoop, Resource};
use proptest::prelude::*;

const Q: usize = 4;
const T: usize = 8;
type Lp = EventLoop<SimPoller<8>, 4, T, Q>;

#[path = "common/proptest_config.rs"]
mod proptest_config;
use proptest_config::config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rec {
    /// Callback `tag` ran.
    Ran { tag: u32 },
    /// Callback `tag` was queued by callback or timer `by` (`None`: by the test).
    Queued { by: Option<u32>, tag: u32 },
    /// The queue was full: `tag` came back inside `Refused` with this error.
    Refused {
        by: Option<u32>,
        tag: u32,
        error: Error,
    },
    /// The handed-back `tag` is run by hand, right now (its `Ran` follows).
    ByHand { tag: u32 },
    /// Timer `tag` ran (and offers one callback).
    TimerFired { tag: u32 },
}

#[derive(Default)]
struct Shared {
    log: RefCell<Vec<Rec>>,
    next_tag: Cell<u32>,
}

impl Shared {
    fn push(&self, r: Rec) {
        self.log.borrow_mut().push(r);
    }
    fn new_tag(&self) -> u32 {
        let t = self.next_tag.get();
        self.next_tag.set(t + 1);
        t
    }
}

/// A callback that records itself and offers `fanout` children of fan-out `fanout - 1`.
fn callback(s: Rc<Shared>, tag: u32, fanout: u8) -> impl FnOnce(&mut Lp) + 'static {
    move |lp: &mut Lp| {
        s.push(Rec::Ran { tag });
        for _ in 0..fanout {
            let child = s.new_tag();
            offer(lp, &s, Some(tag), child, fanout - 1);
        }
    }
}

/// `add_callback`, and if it is refused, run the handed-back callback by hand.
fn offer(lp: &mut Lp, s: &Rc<Shared>, by: Option<u32>, tag: u32, fanout: u8) {
    match lp.add_callback(callback(s.clone(), tag, fanout)) {
        Ok(()) => s.push(Rec::Queued { by, tag }),
        Err(refused) => {
            s.push(Rec::Refused {
                by,
                tag,
                error: refused.error,
            });
            s.push(Rec::ByHand { tag });
            (refused.into_inner())(lp);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        fanout: u8,
    },
    /// `call_later(0)`: a timer that offers one callback when it fires.
    AddViaTimer {
        fanout: u8,
    },
    /// `run_once(Some(1 ms))`.
    Run,
    /// `run_once(None)`: blocks forever (a simulated-poller error) unless something is left.
    RunUnbounded,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..4).prop_map(|fanout| Op::Add { fanout }),
        2 => (0u8..3).prop_map(|fanout| Op::AddViaTimer { fanout }),
        4 => Just(Op::Run),
        1 => Just(Op::RunUnbounded),
    ]
}

/// Wide trees and few runs: the queue at its capacity all the time.
fn op_crowded() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (2u8..4).prop_map(|fanout| Op::Add { fanout }),
        2 => (1u8..4).prop_map(|fanout| Op::AddViaTimer { fanout }),
        2 => Just(Op::Run),
    ]
}

/// Unbounded runs, to pin the zero poll timeout while callbacks are queued.
fn op_unbounded() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(|fanout| Op::Add { fanout }),
        1 => (0u8..2).prop_map(|fanout| Op::AddViaTimer { fanout }),
        4 => Just(Op::RunUnbounded),
    ]
}

// ------------------------------------------------------------------------------------------
// The reference model: a FIFO of (tag, fan-out) and a FIFO of zero-delay timers.
// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct Model {
    queue: VecDeque<(u32, u8)>,
    timers: Vec<(u32, u8)>,
    next_tag: u32,
}

fn full_callbacks() -> Error {
    Error::Full {
        what: Resource::Callbacks,
    }
}

impl Model {
    fn new_tag(&mut self) -> u32 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    fn offer(&mut self, by: Option<u32>, tag: u32, fanout: u8, out: &mut Vec<Rec>) {
        if self.queue.len() < Q {
            self.queue.push_back((tag, fanout));
            out.push(Rec::Queued { by, tag });
        } else {
            out.push(Rec::Refused {
                by,
                tag,
                error: full_callbacks(),
            });
            out.push(Rec::ByHand { tag });
            self.exec(tag, fanout, out);
        }
    }

    fn exec(&mut self, tag: u32, fanout: u8, out: &mut Vec<Rec>) {
        out.push(Rec::Ran { tag });
        for _ in 0..fanout {
            let child = self.new_tag();
            self.offer(Some(tag), child, fanout - 1, out);
        }
    }

    /// One iteration: the callbacks queued at its start, then every timer (all are due: they
    /// were set for "now" before the iteration), then the poll timeout: zero while anything is
    /// left to run, else the cap (`None`: the simulated poller refuses to block forever).
    fn run_once(&mut self, cap: Option<Duration>) -> (Vec<Rec>, Option<Duration>) {
        let mut out = Vec::new();
        for _ in 0..self.queue.len() {
            let (tag, fanout) = self.queue.pop_front().expect("counted");
            self.exec(tag, fanout, &mut out);
        }
        for (timer, fanout) in std::mem::take(&mut self.timers) {
            out.push(Rec::TimerFired { tag: timer });
            let tag = self.new_tag();
            self.offer(Some(timer), tag, fanout, &mut out);
        }
        let timeout = if self.queue.is_empty() {
            cap
        } else {
            Some(Duration::ZERO)
        };
        (out, timeout)
    }
}

// ------------------------------------------------------------------------------------------
// The harness
// ------------------------------------------------------------------------------------------

struct Harness {
    lp: Lp,
    s: Rc<Shared>,
    model: Model,
}

impl Harness {
    fn new() -> Self {
        Harness {
            lp: EventLoop::with_poller(SimPoller::new()),
            s: Rc::new(Shared::default()),
            model: Model::default(),
        }
    }

    fn take_log(&self) -> Vec<Rec> {
        std::mem::take(&mut *self.s.log.borrow_mut())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Add { fanout } => {
                let tag = self.s.new_tag();
                prop_assert_eq!(self.model.new_tag(), tag);
                offer(&mut self.lp, &self.s, None, tag, fanout);
                let mut want = Vec::new();
                self.model.offer(None, tag, fanout, &mut want);
                prop_assert_eq!(self.take_log(), want, "add_callback from outside the loop");
            }
            Op::AddViaTimer { fanout } => {
                let timer = self.s.new_tag();
                prop_assert_eq!(self.model.new_tag(), timer);
                let s = self.s.clone();
                let r = self.lp.call_later(Duration::ZERO, move |lp| {
                    s.push(Rec::TimerFired { tag: timer });
                    let tag = s.new_tag();
                    offer(lp, &s, Some(timer), tag, fanout);
                });
                if self.model.timers.len() < T {
                    prop_assert!(r.is_ok(), "timer refused below capacity");
                    self.model.timers.push((timer, fanout));
                } else {
                    prop_assert!(r.is_err(), "timer accepted above capacity");
                }
            }
            Op::Run => self.run(Some(Duration::from_millis(1)))?,
            Op::RunUnbounded => self.run(None)?,
        }
        prop_assert_eq!(
            self.lp.callback_count(),
            self.model.queue.len(),
            "callback_count"
        );
        prop_assert_eq!(
            self.lp.timer_count(),
            self.model.timers.len(),
            "timer_count"
        );
        Ok(())
    }

    fn run(&mut self, cap: Option<Duration>) -> Result<(), TestCaseError> {
        let snapshot: Vec<u32> = self.model.queue.iter().map(|(t, _)| *t).collect();
        let result = self.lp.run_once(cap);
        let got = self.take_log();
        let (want, timeout) = self.model.run_once(cap);

        // The snapshot rule on its own: what ran from the queue (not by hand) is exactly what
        // was queued when the iteration started, in order.
        let mut from_queue = Vec::new();
        let mut by_hand = false;
        for r in &got {
            match *r {
                Rec::ByHand { .. } => by_hand = true,
                Rec::Ran { tag } if !by_hand => from_queue.push(tag),
                Rec::Ran { .. } => by_hand = false,
                _ => {}
            }
        }
        prop_assert_eq!(
            &from_queue,
            &snapshot,
            "callbacks run from the queue vs the queue at the start: {:?}",
            got
        );
        prop_assert_eq!(&got, &want, "what ran in this iteration");
        prop_assert_eq!(
            self.lp.poller().stats().last_timeout,
            Some(timeout),
            "poll timeout"
        );
        match timeout {
            Some(_) => prop_assert!(result.is_ok(), "run_once failed: {:?}", result),
            None => prop_assert_eq!(
                result,
                Err(Error::Os {
                    errno: SimPoller::<8>::WOULD_BLOCK_FOREVER
                }),
                "nothing to do and no timeout: the simulated poller refuses to block"
            ),
        }
        Ok(())
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.step(op)?;
    }
    // Drain: every callback eventually runs, and the queue ends empty.
    for _ in 0..32 {
        h.step(&Op::Run)?;
    }
    prop_assert_eq!(h.lp.callback_count(), 0, "the queue drains");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn callbacks_run_first_in_first_out_and_only_those_queued_before_the_iteration(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        check(&ops)?;
    }

    #[test]
    fn full_queue_refuses_exactly_at_capacity_and_the_handed_back_callback_still_runs(
        ops in prop::collection::vec(op_crowded(), 1..40)
    ) {
        check(&ops)?;
    }

    #[test]
    fn poll_never_blocks_while_callbacks_are_queued(
        ops in prop::collection::vec(op_unbounded(), 1..60)
    ) {
        check(&ops)?;
    }
}
