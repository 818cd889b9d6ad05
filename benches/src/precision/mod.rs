//! Workload 5: timer precision (issue 3): how late a sleep through the loop wakes up.
//!
//! One timer at a time: schedule it `d` from now, run the loop until it fires, and record
//! `fired_at − deadline` on `CLOCK_MONOTONIC`, where `fired_at` is read first thing inside the
//! timer's callback and `deadline` is the exact deadline the loop was given. `d` is 100 µs
//! (below epoll_wait's and poll's millisecond) and 3.1 ms (not a whole millisecond). Between
//! sleeps the thread sleeps a pseudo-random 0–1 ms (the same sequence for every peer), so
//! each sleep starts at a random phase of any millisecond tick a peer may have, as in a real
//! server whose timers are set by traffic.
//!
//! Reported per peer: p50, p10–p90, p99 and the maximum lateness in µs, and how many sleeps
//! woke **early** (negative lateness). For ioloop's three pollers this must be 0: the pollers
//! round every timeout up (epoll: a `timerfd` at nanosecond precision; poll: milliseconds up;
//! select: microseconds up) and the loop only runs a timer once the clock shows it due. It is
//! printed, not asserted: a benchmark reports.
//!
//! Peers:
//! * **ioloop** on `loop_linux::Epoll`, `loop_select::Poll` and `loop_select::Select`: the same
//!   loop code, only the poller differs, so the rows show what each poller's timeout
//!   resolution costs.
//! * **raw `epoll_wait`** with a whole-millisecond timeout, rounded up (what rustix, tokio and
//!   Python do) and rounded down (C's `ns / 1000000`): the reference that shows why rounding
//!   matters. Rounded down, a sub-millisecond sleep returns at once: early, every time.
//! * **tokio** `sleep_until(deadline)` (= `sleep(d)`, which is `sleep_until(now + d)`), on a
//!   current_thread runtime: a 1 ms timer wheel over `epoll_wait` milliseconds.

pub mod ioloop_peer;
pub mod raw_epoll;
pub mod tokio_peer;

use std::sync::Arc;
use std::time::Duration;

use crate::harness::{num, run_rounds, Peer, Report, Role};
use crate::sys::XorShift;

/// Longest random gap between two sleeps.
pub const MAX_GAP: Duration = Duration::from_millis(1);

/// One precision case.
pub struct PrecisionCase {
    /// The sleep asked for.
    pub delay: Duration,
    /// Sleeps per call of a peer, the first of which is dropped as warm-up.
    pub sleeps: usize,
    /// The gap before each sleep (at least `sleeps` long), the same for every peer.
    pub gaps: Arc<Vec<Duration>>,
}

/// Lateness in µs (negative: early), one entry per sleep.
pub type PrecisionSamples = Vec<f64>;

/// `fired − deadline` in µs, signed.
#[inline]
pub fn lateness_us(fired_ns: u64, deadline_ns: u64) -> f64 {
    (fired_ns as i64 - deadline_ns as i64) as f64 / 1e3
}

/// The random gaps for `n` sleeps.
pub fn gaps(n: usize, seed: u64) -> Arc<Vec<Duration>> {
    let mut rng = XorShift::new(seed);
    let max = MAX_GAP.as_nanos() as u64;
    Arc::new(
        (0..n)
            .map(|_| Duration::from_nanos(rng.below(max)))
            .collect(),
    )
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<PrecisionCase, PrecisionSamples>> {
    vec![
        Peer::new("ioloop epoll", Role::Ioloop, ioloop_peer::run_epoll),
        Peer::new("ioloop poll", Role::Peer, ioloop_peer::run_poll),
        Peer::new("ioloop select", Role::Peer, ioloop_peer::run_select),
        Peer::new(
            "raw epoll_wait, ms rounded up (ref)",
            Role::Peer,
            raw_epoll::run_round_up,
        ),
        Peer::new(
            "raw epoll_wait, ms rounded down (ref)",
            Role::Peer,
            raw_epoll::run_round_down,
        ),
        Peer::new("tokio sleep", Role::Peer, tokio_peer::run),
    ]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<PrecisionCase, PrecisionSamples>]) -> Report {
    let rounds = 2;
    // (delay, sleeps in all per peer)
    let cases: [(Duration, usize); 2] = if quick {
        [
            (Duration::from_micros(100), 50),
            (Duration::from_micros(3100), 20),
        ]
    } else {
        [
            (Duration::from_micros(100), 500),
            (Duration::from_micros(3100), 200),
        ]
    };
    let mut report = Report::new(
        "precision",
        format!(
            "timer lateness (fired − deadline, CLOCK_MONOTONIC), one sleep at a time, random 0–{} ms gap before each; {rounds} interleaved rounds",
            MAX_GAP.as_millis()
        ),
        "µs late",
    );
    report.show_p99 = true;
    for (delay, total) in cases {
        let per_call = total / rounds;
        // +1: the first sleep of each call is dropped as warm-up.
        let case = PrecisionCase {
            delay,
            sleeps: per_call + 1,
            gaps: gaps(per_call + 1, 0x9e37_0000 + delay.as_micros() as u64),
        };
        let label = format!("{} x {}", fmt_delay(delay), per_call * rounds);
        for (p, r) in peers.iter().zip(run_rounds(peers, &case, rounds, 1, || {})) {
            match r {
                Ok(s) => {
                    let early = s.iter().filter(|&&x| x < 0.0).count();
                    let max = s.iter().copied().fold(f64::MIN, f64::max);
                    let n = s.len();
                    report.push(&label, p.name, p.role, s);
                    if let Some(row) = report.rows.last_mut() {
                        row.note = Some(format!("max {} µs, early {early}/{n}", num(max)));
                    }
                }
                Err(e) => report.push_missing(&label, p.name, p.role, format!("error: {e}")),
            }
        }
    }
    report.notes.push(
        "early must be 0 for every ioloop row (timeouts rounded up, timers run only when due); the ms-rounded-down reference shows what truncation does".into(),
    );
    report.notes.push(format!(
        "epoll: timerfd, nanoseconds, no timer slack; poll: whole ms rounded up; select: µs rounded up, plus the kernel's timer slack ({} here) on poll/select/epoll_wait sleeps; tokio: 1 ms wheel ticks over epoll_wait(ms)",
        timer_slack()
    ));
    report
}

/// The calling thread's timer slack (`/proc/self/timerslack_ns`), as text.
fn timer_slack() -> String {
    std::fs::read_to_string("/proc/self/timerslack_ns")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|ns| format!("{} µs", ns / 1000))
        .unwrap_or_else(|| "unknown".into())
}

/// `100 µs`, `3.1 ms`.
fn fmt_delay(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{} ms", us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer completes a few sleeps; the lateness is finite and never absurd, and
    /// ioloop's pollers are never early.
    #[test]
    fn every_peer_sleeps_a_few_times() {
        for delay in [Duration::from_micros(100), Duration::from_micros(1500)] {
            let case = PrecisionCase {
                delay,
                sleeps: 4,
                gaps: gaps(4, 3),
            };
            for p in peers() {
                let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                assert_eq!(s.len(), 4, "{}", p.name);
                // Rounded down, a sleep may return up to one millisecond early.
                assert!(
                    s.iter().all(|&x| x > -1000.0 && x < 1e6),
                    "{}: {s:?}",
                    p.name
                );
                if p.name.starts_with("ioloop") {
                    assert!(s.iter().all(|&x| x >= 0.0), "{} early: {s:?}", p.name);
                }
            }
        }
    }

    #[test]
    fn delay_labels() {
        assert_eq!(fmt_delay(Duration::from_micros(100)), "100 µs");
        assert_eq!(fmt_delay(Duration::from_micros(3100)), "3.1 ms");
    }
}
