//! Workload 2: timers, ns per timer (thread CPU time), four phases timed separately.
//!
//! * **schedule**: `N` timers at 10 s + U(0, 10 s) (or all at 10 s in the "same" variant),
//!   each as its API takes it: tokio's `sleep(d)` reads the clock per timer; libev's
//!   `ev_timer_start` counts from the loop's cached `ev_now`, and so does ioloop's
//!   `call_later(d)`, called (as a server's handlers call it) from a callback inside the loop;
//!   ioloop's `call_at(now + d)` ("ioloop call_at") takes one reading per phase.
//! * **rearm**: every timer moved to a fresh random timeout (same variant: 10 s again):
//!   libev's `ev_timer_again`, ioloop's `reset_timer_later(h, d)` (cached time) or
//!   `reset_timer(h, now + d)`.
//! * **cancel**: every timer cancelled, in a random order.
//! * **fire**: `N` timers due within 5 ms (same variant: all at 5 ms) are scheduled (untimed),
//!   the thread sleeps until all are due plus a 3 ms margin (tokio rounds up to 1 ms ticks),
//!   then the loop is run until every callback ran: this is the cost of expiring and
//!   dispatching, not of waiting.
//!
//! Each phase is timed in this thread's CPU time (the machine is shared: time other processes
//! held the core is not charged) and bracketed by callgrind client requests, so
//! `--only timers-callgrind` (see `callgrind.rs`) counts the instructions of exactly the same
//! code.
//!
//! The random inputs (durations, cancel order) come from a fixed-seed xorshift and are the
//! same for every peer. Iterations reuse the peer's structure (a warm loop, as in a long-lived
//! server); the first is dropped.
//!
//! Designs compared: libev's 4-ary heap (the anchor: `libev_peer.rs`, over Debian's
//! `libev-dev`; a "libev not installed" row without it), tokio's hierarchical timing wheel
//! (O(1) insert/cancel, 1 ms resolution, lazy re-arm to a later deadline), a binary heap with
//! lazy cancellation (Tornado's design, O(log n) insert, O(1) cancel plus amortised
//! compaction), and ioloop's own timer table.
//! calloop is not included: its `Timer` is one event source per timer (a slab entry and a
//! registration each) over a plain `BinaryHeap`, and cancelling one (`TimerWheel::cancel`,
//! calloop 0.14) is `BinaryHeap::retain`, O(n) per timer: the cancel phase alone would be
//! 10^12 steps at N = 10^6. The heap baseline below is the same data structure done right.

pub mod callgrind;
pub mod heap;
pub mod ioloop_peer;
pub mod libev_peer;
pub mod manual_clock;
pub mod tokio_peer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{run_rounds, Peer, Report, Role, Samples};
use crate::sys::XorShift;

/// How far apart the fire-phase deadlines are spread.
pub const FIRE_SPAN: Duration = Duration::from_millis(5);
/// Slack after the last deadline before the fire phase is timed.
pub const FIRE_MARGIN: Duration = Duration::from_millis(3);

/// The inputs of one case, identical for every peer.
pub struct Inputs {
    /// Schedule-phase durations.
    pub schedule: Vec<Duration>,
    /// Re-arm-phase durations.
    pub rearm: Vec<Duration>,
    /// Cancel order: indices into the timers.
    pub cancel: Vec<u32>,
    /// Fire-phase durations (all within [`FIRE_SPAN`]).
    pub fire: Vec<Duration>,
}

impl Inputs {
    /// Random (`same == false`) or identical timeouts for `n` timers.
    pub fn new(n: usize, same: bool, seed: u64) -> Inputs {
        let mut rng = XorShift::new(seed);
        let ten = Duration::from_secs(10);
        let far = |rng: &mut XorShift| {
            if same {
                ten
            } else {
                ten + Duration::from_nanos(rng.below(ten.as_nanos() as u64))
            }
        };
        let schedule = (0..n).map(|_| far(&mut rng)).collect();
        let rearm = (0..n).map(|_| far(&mut rng)).collect();
        let cancel = rng.permutation(n);
        let span = FIRE_SPAN.as_nanos() as u64;
        let fire = (0..n)
            .map(|_| {
                if same {
                    FIRE_SPAN
                } else {
                    Duration::from_nanos(rng.below(span))
                }
            })
            .collect();
        Inputs {
            schedule,
            rearm,
            cancel,
            fire,
        }
    }
}

/// One timer case.
pub struct TimerCase {
    /// Number of timers.
    pub n: usize,
    /// Iterations per call of a peer, the first dropped.
    pub iters: usize,
    /// The inputs (`n` long).
    pub inputs: Arc<Inputs>,
}

/// ns per timer for each phase, one entry per iteration (warm-up included).
#[derive(Default)]
pub struct TimerSamples {
    /// Schedule phase.
    pub schedule: Vec<f64>,
    /// Re-arm phase.
    pub rearm: Vec<f64>,
    /// Cancel phase.
    pub cancel: Vec<f64>,
    /// Fire phase.
    pub fire: Vec<f64>,
}

impl TimerSamples {
    /// Room for `iters` iterations.
    pub fn with_capacity(iters: usize) -> TimerSamples {
        TimerSamples {
            schedule: Vec::with_capacity(iters),
            rearm: Vec::with_capacity(iters),
            cancel: Vec::with_capacity(iters),
            fire: Vec::with_capacity(iters),
        }
    }
}

impl Samples for TimerSamples {
    fn drop_warmup(&mut self, k: usize) {
        self.schedule.drop_warmup(k);
        self.rearm.drop_warmup(k);
        self.cancel.drop_warmup(k);
        self.fire.drop_warmup(k);
    }

    fn append(&mut self, o: Self) {
        Samples::append(&mut self.schedule, o.schedule);
        Samples::append(&mut self.rearm, o.rearm);
        Samples::append(&mut self.cancel, o.cancel);
        Samples::append(&mut self.fire, o.fire);
    }
}

/// This thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`): on a shared machine a phase is
/// not charged for the time other processes held the core.
#[inline(always)]
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The start of a timed phase: a thread-CPU-time reading.
#[derive(Clone, Copy)]
pub struct PhaseStart(u64);

/// Starts a timed phase: zeroes callgrind's counters (a no-op outside valgrind), then reads
/// the thread's CPU time.
#[inline(always)]
pub fn start() -> PhaseStart {
    callgrind::zero();
    PhaseStart(thread_cpu_ns())
}

/// Ends a timed phase started at `t0`: reads the thread's CPU time, dumps callgrind's counters
/// under the phase's name, and returns CPU ns per timer.
#[inline(always)]
pub fn stop(t0: PhaseStart, n: usize, phase: &'static str) -> f64 {
    let t1 = thread_cpu_ns();
    let name: &std::ffi::CStr = match phase {
        "schedule" => c"schedule",
        "rearm" => c"rearm",
        "cancel" => c"cancel",
        _ => c"fire",
    };
    callgrind::dump(name);
    t1.saturating_sub(t0.0) as f64 / n as f64
}

/// Sleeps until every fire-phase timer scheduled by `scheduled_by` is due.
pub fn wait_until_due(scheduled_by: Instant) {
    let due = scheduled_by + FIRE_SPAN + FIRE_MARGIN;
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<TimerCase, TimerSamples>> {
    vec![
        Peer::ioloop(ioloop_peer::run),
        Peer::new("ioloop call_at", Role::Peer, ioloop_peer::run_call_at),
        Peer::new("libev", Role::Peer, libev_peer::run),
        Peer::new("BinaryHeap+lazy cancel", Role::Floor, heap::run),
        Peer::new("tokio timer wheel", Role::Peer, tokio_peer::run),
    ]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<TimerCase, TimerSamples>]) -> Report {
    // (N, rounds, iterations per round including the dropped warm-up)
    let cases: &[(usize, usize, usize)] = if quick {
        &[(10_000, 2, 4)]
    } else {
        &[(10_000, 5, 8), (100_000, 3, 6), (1_000_000, 2, 4)]
    };
    let mut report = Report::new(
        "timers",
        "schedule / re-arm / cancel / fire; interleaved rounds, first iteration of each dropped; thread CPU time"
            .into(),
        "ns/timer",
    );
    for same in [false, true] {
        for &(n, rounds, iters) in cases {
            let inputs = Arc::new(Inputs::new(n, same, 0x5eed_0000 + n as u64));
            let case = TimerCase { n, iters, inputs };
            let variant = if same { "same" } else { "random" };
            let label = |phase: &str| format!("{variant} N={} {phase}", pow10(n));
            let results = run_rounds(peers, &case, rounds, 1, || {});
            type Pick = fn(&TimerSamples) -> &Vec<f64>;
            let phases: [(&str, Pick); 4] = [
                ("schedule", |s| &s.schedule),
                ("rearm", |s| &s.rearm),
                ("cancel", |s| &s.cancel),
                ("fire", |s| &s.fire),
            ];
            for (phase, pick) in phases {
                for (peer, r) in peers.iter().zip(&results) {
                    match r {
                        Ok(s) => report.push(&label(phase), peer.name, peer.role, pick(s).clone()),
                        Err(e) => report.push_missing(
                            &label(phase),
                            peer.name,
                            peer.role,
                            format!("error: {e}"),
                        ),
                    }
                }
            }
        }
    }
    report.notes.push(
        "random: 10 s + U(0,10 s), re-armed to fresh draws; same: every timer 10 s (fire: 5 ms)"
            .into(),
    );
    report.notes.push(
        "libev (ev_now) and \"ioloop\" (call_later / reset_timer_later from a callback inside the loop) count from the loop's cached time; \"ioloop call_at\" reads the clock once per phase; tokio reads it per timer".into(),
    );
    report.notes.push(
        "tokio re-arms lazily when the new deadline is later (the wheel re-files the entry when it comes due); the heap re-arms as cancel + insert, as Tornado does".into(),
    );
    report
}

/// `100000` as `1e5`.
fn pow10(n: usize) -> String {
    let mut e = 0;
    let mut m = n;
    while m >= 10 && m.is_multiple_of(10) {
        m /= 10;
        e += 1;
    }
    if m == 1 && e > 0 {
        format!("1e{e}")
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_runs_a_small_case() {
        for same in [false, true] {
            let case = TimerCase {
                n: 200,
                iters: 2,
                inputs: Arc::new(Inputs::new(200, same, 1)),
            };
            for p in peers() {
                if p.name == "libev" && !cfg!(have_libev) {
                    let e = (p.run)(&case).err().expect("no libev: an error row");
                    assert!(e.to_string().contains("libev not installed"), "{e}");
                    continue;
                }
                let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                assert_eq!(s.fire.len(), 2, "{}", p.name);
            }
        }
    }

    #[test]
    fn labels() {
        assert_eq!(pow10(100_000), "1e5");
        assert_eq!(pow10(1_000_000), "1e6");
        assert_eq!(pow10(1500), "1500");
    }
}
