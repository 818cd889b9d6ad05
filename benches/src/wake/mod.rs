//! Workload 4: cross-thread wake, the round trip other thread → loop → back.
//!
//! The loop runs on the main thread, blocked in its poller. A second ("remote") thread, for
//! each round trip: stores the trip's sequence number, reads the clock, sends the peer's wake,
//! and spins on an atomic until the loop's callback has stored the same number back; then it
//! reads the clock again. The ack is the same for every peer (an atomic the remote spins on,
//! so no second kernel wake-up blurs the number): only the wake path differs. Between trips the
//! remote waits 20 µs (untimed) so that the loop is back asleep in its poller, which is the
//! case that matters on an idle appliance. The first 5% of each peer call's trips are dropped as warm-up.
//! Reported: p50 and p99 of the round-trip times, and p10–p90.
//!
//! Two cases:
//! * **one core** (the process's own affinity: `benches/tables.sh` pins it to one core, so
//!   both threads share it). The remote runs only while the loop thread sleeps, so a trip
//!   also includes everything the loop does after answering until it blocks in its poller
//!   again, and two context switches. This is the appliance case (one core), and it is
//!   dominated by the kernel: the system calls are the same for every peer (one eventfd
//!   `write`, one `epoll_wait`). On the VM the tables come from, a function return after a
//!   system call that switched threads costs about 0.3 µs per side, and the floor makes none
//!   (its write and wait are inline in the timing loop): `IOLOOP_BENCH_WAKE_DIAG=1` adds the
//!   floor with its write, its wait or both behind a call (see [`diag`]).
//! * **two cores**: the loop (this thread) on the first CPU of the process's affinity mask,
//!   the remote on another online CPU, each pinned for the case (overriding a one-core pin
//!   for this case only). No context switch between the two: a trip is the eventfd write, the
//!   cross-CPU wake-up of the sleeping loop, its work up to the answer, and the ack's cache
//!   line coming back; what the loop does after answering is off the timed path. Skipped on a
//!   machine with one online CPU.

pub mod diag;
pub mod ioloop_peer;
pub mod mio_peer;
pub mod raw_eventfd;
pub mod throughput;
pub mod tokio_peer;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{run_rounds, spin_until, Peer, Report, Role};
use crate::sys::pin_to_cpu;

/// A new epoll instance watching a new non-blocking eventfd, edge-triggered for reading
/// (key 1): the hand-written floors' wake-up channel. Returns `(epoll, eventfd)`.
///
/// # Errors
/// The kernel's, from `epoll_create1`, `eventfd` or `epoll_ctl`.
pub fn epoll_with_eventfd() -> io::Result<(OwnedFd, Arc<OwnedFd>)> {
    let ep = epoll::create(CreateFlags::CLOEXEC)?;
    let efd: Arc<OwnedFd> = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    epoll::add(
        &ep,
        efd.as_fd(),
        EventData::new_u64(1),
        EventFlags::IN | EventFlags::ET,
    )?;
    Ok((ep, efd))
}

/// Gap between round trips, so each wake finds the loop asleep.
pub const GAP: Duration = Duration::from_micros(20);

/// One wake case.
pub struct WakeCase {
    /// Round trips per call of a peer, warm-up included.
    pub trips: usize,
    /// `Some(cpu)`: the remote thread pins itself to `cpu` (the two-core case, where the
    /// loop's thread is pinned to another CPU by [`run`]); `None`: it inherits the process's
    /// affinity.
    pub remote_cpu: Option<usize>,
}

/// Round-trip times in ns, warm-up included.
pub type WakeSamples = Vec<f64>;

/// The state shared by the remote thread and the loop's callback. Leaked once per peer run
/// (a few bytes), so that callbacks and tasks capture a plain `&'static` rather than an `Arc`
/// whose count would bounce between the two threads inside the timed region.
#[derive(Default)]
pub struct Shared {
    /// The trip in flight.
    pub req: AtomicU64,
    /// The last trip the loop answered.
    pub ack: AtomicU64,
    /// Set by the remote after the last trip, before its final wake.
    pub stop: AtomicBool,
}

impl Shared {
    /// A fresh, leaked state.
    pub fn leak() -> &'static Shared {
        Box::leak(Box::default())
    }

    /// The loop side of a trip: answer the request in flight. Returns `false` once the remote
    /// asked the loop to stop.
    #[inline]
    pub fn answer(&self) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        self.ack
            .store(self.req.load(Ordering::Acquire), Ordering::Release);
        true
    }
}

/// The remote side: `trips` round trips through `wake`, then `stop` and a last wake. Runs on
/// its own thread; returns the round-trip times in ns.
pub fn remote(shared: &Shared, trips: usize, mut wake: impl FnMut(u64)) -> Vec<f64> {
    let mut out = Vec::with_capacity(trips);
    for seq in 1..=trips as u64 {
        spin_until(Instant::now() + GAP);
        shared.req.store(seq, Ordering::Release);
        let t0 = Instant::now();
        wake(seq);
        while shared.ack.load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
        }
        let t1 = Instant::now();
        out.push((t1 - t0).as_nanos() as f64);
    }
    shared.stop.store(true, Ordering::Release);
    wake(u64::MAX);
    out
}

/// Spawns the remote thread, which sends its wakes through `wake`.
pub fn spawn_remote<W: FnMut(u64) + Send + 'static>(
    shared: &'static Shared,
    case: &WakeCase,
    wake: W,
) -> std::thread::JoinHandle<Vec<f64>> {
    let (trips, cpu) = (case.trips, case.remote_cpu);
    std::thread::Builder::new()
        .name("bench-remote".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            remote(shared, trips, wake)
        })
        .expect("spawn remote thread")
}

/// For the two-core case: the CPU the loop's thread runs on (the first of the process's
/// affinity mask) and another online CPU for the remote, if the machine has one.
fn loop_and_remote_cpus() -> Option<(usize, usize)> {
    let mask = rustix::thread::sched_getaffinity(None).ok()?;
    let first = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| mask.is_set(c))?;
    // "0-1", "0,2-3": the online CPUs, whatever this process's mask says.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let other = online.trim().split(',').find_map(|range| {
        let mut ends = range.split('-').map(|n| n.parse::<usize>().ok());
        let lo = ends.next()??;
        let hi = ends.next().unwrap_or(Some(lo))?;
        (lo..=hi).find(|&c| c != first)
    })?;
    Some((first, other))
}

/// Joins the remote thread.
pub fn join(h: std::thread::JoinHandle<Vec<f64>>) -> io::Result<Vec<f64>> {
    h.join()
        .map_err(|_| io::Error::other("remote thread panicked"))
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<WakeCase, WakeSamples>> {
    let mut peers = vec![
        Peer::ioloop(ioloop_peer::run),
        Peer::new("eventfd+epoll (floor)", Role::Floor, raw_eventfd::run),
        Peer::new("mio Waker", Role::Peer, mio_peer::run),
        Peer::new("tokio Handle::spawn", Role::Peer, tokio_peer::run),
    ];
    // Only with IOLOOP_BENCH_WAKE_DIAG set: see `diag`.
    peers.extend(diag::peers());
    peers
}

/// Adds one case's rows (µs) to the report.
fn push_case(
    report: &mut Report,
    label: &str,
    peers: &[Peer<WakeCase, WakeSamples>],
    results: Vec<io::Result<WakeSamples>>,
) {
    for (p, r) in peers.iter().zip(results) {
        match r {
            Ok(s) => report.push(
                label,
                p.name,
                p.role,
                s.into_iter().map(|x| x / 1e3).collect(),
            ),
            Err(e) => report.push_missing(label, p.name, p.role, format!("error: {e}")),
        }
    }
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<WakeCase, WakeSamples>]) -> Report {
    let rounds = 2;
    let trips = if quick { 500 } else { 5_000 };
    let warm = trips / 20;
    let kept = rounds * (trips - warm);
    let mut report = Report::new(
        "wake",
        format!(
            "cross-thread round trip, {rounds} interleaved rounds x {trips} trips ({warm} warm-up dropped each); the remote spins on an atomic ack",
        ),
        "µs/round trip",
    );
    report.show_p99 = true;
    // One core: the process's own affinity, unchanged (the row the tables have always had).
    let label = format!("{kept} round trips");
    let one_core = WakeCase {
        trips,
        remote_cpu: None,
    };
    push_case(
        &mut report,
        &label,
        peers,
        run_rounds(peers, &one_core, rounds, warm, || {}),
    );
    // Two cores: this thread on one CPU, the remote on another, then this thread's mask back.
    let label2 = format!("{kept} round trips, two cores");
    match (
        loop_and_remote_cpus(),
        rustix::thread::sched_getaffinity(None),
    ) {
        (Some((loop_cpu, remote_cpu)), Ok(mask)) => {
            pin_to_cpu(loop_cpu);
            let two_cores = WakeCase {
                trips,
                remote_cpu: Some(remote_cpu),
            };
            let results = run_rounds(peers, &two_cores, rounds, warm, || {});
            let _ = rustix::thread::sched_setaffinity(None, &mask);
            push_case(&mut report, &label2, peers, results);
            report.notes.push(format!(
                "two cores: loop on CPU {loop_cpu}, remote on CPU {remote_cpu} (each pinned for that case)"
            ));
        }
        _ => {
            for p in peers {
                report.push_missing(&label2, p.name, p.role, "one online CPU".into());
            }
        }
    }
    report.notes.push(format!(
        "the loop is asleep in its poller when each wake is sent ({} µs gap between trips)",
        GAP.as_micros()
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_runs_a_small_case() {
        let case = WakeCase {
            trips: 50,
            remote_cpu: None,
        };
        for p in peers() {
            let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(s.len(), 50, "{}", p.name);
        }
    }
}
