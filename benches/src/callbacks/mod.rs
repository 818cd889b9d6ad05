//! Workload 3: callbacks, ns per callback for add + run.
//!
//! 10^6 trivial callbacks (each bumps a counter), added in batches of 1000 and run by one loop
//! iteration per batch: what a loop does when handlers queue follow-up work for the next
//! iteration (Tornado's `add_callback`). Batching keeps the queue at a realistic size instead of
//! measuring a 10^6-entry queue's cache misses; every peer uses the same batch size. The number
//! is (time to add and run all) / 10^6, median over iterations, first dropped.

pub mod floor;
pub mod ioloop_peer;
pub mod tokio_peer;

use std::cell::Cell;
use std::io;
use std::time::Instant;

use crate::harness::{run_rounds, Peer, Report, Role};

/// The sample of one iteration that started at `t0` and ran `case.total` callbacks, each of
/// which bumped `counter`: ns per callback.
///
/// # Errors
/// "lost callbacks" when `counter` did not reach `case.total`.
pub fn sample(case: &CallbackCase, counter: &Cell<u64>, t0: Instant) -> io::Result<f64> {
    let t1 = Instant::now();
    std::hint::black_box(counter.get());
    if counter.get() != case.total as u64 {
        return Err(io::Error::other("lost callbacks"));
    }
    Ok((t1 - t0).as_nanos() as f64 / case.total as f64)
}

/// The batch sizes of one iteration: `case.batch` each, the last one what remains of
/// `case.total`.
pub fn batches(case: &CallbackCase) -> impl Iterator<Item = usize> + '_ {
    (0..case.total)
        .step_by(case.batch.max(1))
        .map(|added| case.batch.min(case.total - added))
}

/// Times `case.iters` iterations of a synchronous peer: `batch(k)` adds `k` callbacks that
/// bump `counter` and runs one loop iteration, until `case.total` have been added.
///
/// # Errors
/// The first error of `batch`, or a lost callback.
pub fn time_batches(
    case: &CallbackCase,
    counter: &Cell<u64>,
    mut batch: impl FnMut(usize) -> io::Result<()>,
) -> io::Result<CallbackSamples> {
    let mut out = Vec::with_capacity(case.iters);
    for _ in 0..case.iters {
        counter.set(0);
        let t0 = Instant::now();
        for k in batches(case) {
            batch(k)?;
        }
        out.push(sample(case, counter, t0)?);
    }
    Ok(out)
}

/// One callbacks case.
pub struct CallbackCase {
    /// Callbacks in all.
    pub total: usize,
    /// Callbacks added before each loop iteration.
    pub batch: usize,
    /// Iterations per call of a peer (each runs all `total`), the first dropped.
    pub iters: usize,
}

/// ns per callback, one entry per iteration.
pub type CallbackSamples = Vec<f64>;

/// The peers, reference first.
pub fn peers() -> Vec<Peer<CallbackCase, CallbackSamples>> {
    vec![
        Peer::ioloop(ioloop_peer::run),
        Peer::new("VecDeque<fn> (floor)", Role::Floor, floor::run),
        Peer::new("tokio LocalSet spawn_local", Role::Peer, tokio_peer::run),
    ]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<CallbackCase, CallbackSamples>]) -> Report {
    let (rounds, iters) = if quick { (2, 4) } else { (4, 6) };
    let case = CallbackCase {
        total: if quick { 100_000 } else { 1_000_000 },
        batch: 1000,
        iters,
    };
    let mut report = Report::new(
        "callbacks",
        format!(
            "add + run {} trivial callbacks in batches of {}; {rounds} interleaved rounds x {} (+1 warm-up each)",
            case.total,
            case.batch,
            iters - 1
        ),
        "ns/callback",
    );
    let label = format!("{} callbacks", case.total);
    for (p, r) in peers.iter().zip(run_rounds(peers, &case, rounds, 1, || {})) {
        match r {
            Ok(s) => report.push(&label, p.name, p.role, s),
            Err(e) => report.push_missing(&label, p.name, p.role, format!("error: {e}")),
        }
    }
    report.notes.push(
        "floor: a VecDeque of fn pointers, no allocation per callback; tokio: one task (one allocation) per callback".into(),
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_runs_a_small_case() {
        let case = CallbackCase {
            total: 2500,
            batch: 1000,
            iters: 2,
        };
        for p in peers() {
            let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(s.len(), 2, "{}", p.name);
        }
    }
}
