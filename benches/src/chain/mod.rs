//! Workload 1: chain dispatch, after libevent's `test/bench.c` (and libev's variant of it,
//! which reports the "total" time including the event re-registration).
//!
//! `n` non-blocking AF_UNIX stream socketpairs, each read end with a persistent read handler.
//! One byte is written into `a` of them, spread evenly (pair `i * n / a`). Each handler reads
//! its byte and, while writes remain (`w` in all), writes one byte into the next pair,
//! `(i + 1) % n`. A run drives the loop with non-blocking passes (`wait(0)`) until `a + w`
//! bytes have been read.
//!
//! Three phases, each its own block of runs per peer call (loop runs first), timed in thread
//! CPU time ([`cpu_us`]):
//!
//! * **loop**: from just after the `a` initial writes to the last read: pure dispatch (one
//!   `epoll_wait` plus one `recv` and one `send` per hop). Every fd was registered once, at
//!   setup; no peer re-registers anything before a loop run (a re-registration right before
//!   the timed loop evicts caches that a loop keeping its interests warm does not lose).
//!   Anchor: the raw rustix epoll floor.
//! * **total**: the peer's cheapest re-arm of every fd's read interest, the one non-blocking
//!   pass bench.c runs after re-registering, and the run (libev's bench.c "total"). For a loop
//!   that keeps an interest table this is the price of `n` "set interest to what it already
//!   is" calls. Anchor: libev.
//! * **bench.c del+add**: bench.c literally, every handler removed and added again
//!   (`event_del` + `event_add`; ioloop `remove_handler` + `add_handler`, libev `ev_io_stop` +
//!   `ev_io_set` + `ev_io_start`), then the same pass and run. Anchor: libev.
//!
//! The same spans are bracketed by callgrind client requests: `--only chain-callgrind`
//! (`callgrind.rs`) counts their user-space instructions.
//!
//! All peers run on the same socketpairs (opened once per `n`), in the same process, one after
//! the other; every handler does the same bookkeeping through [`Chain`]. With `a = 1` the run
//! is 1001 passes of one event each (per-iteration overhead); with `a = 100` each pass
//! dispatches about 100 events (per-event overhead).
//!
//! The handler: bench.c's `read_cb` does one 1-byte `recv`, and relies on level-triggering
//! to be called again when a pair holds two bytes. mio and tokio register edge-triggered only,
//! so their handlers must read until a short read. To keep the handler's syscalls identical
//! across peers, every peer uses the same handler, [`Chain::on_readable`]: one `recv` into 64
//! bytes (fewer than 64 back means the queue is empty; under edge-triggering any later byte
//! raises a new edge) and one `send` per byte read while writes remain. With `a = 1` this is
//! exactly bench.c; with `a = 100` a pair holding two bytes is served by one callback instead
//! of two, in every peer alike. What differs between rows is the loop, not the handler.
//! The handler is always inlined where a peer's code calls it: into the floor's, mio's and
//! polling's loops, into ioloop's and tokio's closures, into libev's C callback.
//! `IOLOOP_BENCH_CHAIN_DIAG=1` adds the floor with its handler behind a function pointer, to
//! show what a library's call to a user's handler costs by itself.

pub mod callgrind;
pub mod ioloop_peer;
pub mod libev_peer;
pub mod mio_peer;
pub mod polling_peer;
pub mod raw_epoll;
pub mod tokio_peer;

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::harness::{run_rounds, Peer, Report, Role, Samples};
use crate::sys::{raise_nofile_for_pairs, recv, send_byte, Pairs};

/// One chain case: the pairs (shared by all peers) and the run's shape.
pub struct ChainCase {
    /// The socketpairs; `pairs.len()` is bench.c's `num_pipes`.
    pub pairs: Arc<Pairs>,
    /// bench.c's `num_active`: how many bytes are written before a run.
    pub active: usize,
    /// bench.c's `num_writes`: how many bytes the handlers pass on in a run.
    pub writes: usize,
    /// Runs per call of a peer, the first of which is dropped as warm-up.
    pub iters: usize,
}

/// Per-run times in µs of thread CPU time, one entry per run, one vector per phase.
///
/// Each phase is a separate block of runs (loop runs first, with nothing re-registered since
/// setup), so a re-registration never runs just before a timed loop-only run.
pub struct ChainSamples {
    /// The dispatch passes only; every fd was registered once, at setup.
    pub loop_us: Vec<f64>,
    /// The peer's cheapest re-arm of every fd's read interest + one empty pass + the run;
    /// `None` where the peer has no such operation.
    pub total_us: Option<Vec<f64>>,
    /// bench.c literally: remove and re-add every fd's handler (`event_del` + `event_add`;
    /// libev: `ev_io_stop` + `ev_io_set` + `ev_io_start`) + one empty pass + the run.
    pub literal_us: Option<Vec<f64>>,
}

/// Drops warm-up runs / appends a later round's runs, for an optional phase.
fn opt_append(a: Option<Vec<f64>>, b: Option<Vec<f64>>) -> Option<Vec<f64>> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            Samples::append(&mut a, b);
            Some(a)
        }
        _ => None,
    }
}

impl Samples for ChainSamples {
    fn drop_warmup(&mut self, k: usize) {
        self.loop_us.drop_warmup(k);
        for t in [&mut self.total_us, &mut self.literal_us]
            .into_iter()
            .flatten()
        {
            t.drop_warmup(k);
        }
    }

    fn append(&mut self, other: Self) {
        Samples::append(&mut self.loop_us, other.loop_us);
        self.total_us = opt_append(self.total_us.take(), other.total_us);
        self.literal_us = opt_append(self.literal_us.take(), other.literal_us);
    }
}

/// The state every peer's handler updates, exactly bench.c's globals. Relaxed atomic loads and
/// stores (never read-modify-write) compile to plain moves, so the single-threaded peers pay
/// what a `Cell` would cost, and the `Send` peers (tokio tasks) can share it too.
pub struct Chain {
    /// The write ends, by pair.
    wr: Vec<RawFd>,
    /// Bytes read in this run (bench.c's `count`).
    count: AtomicUsize,
    /// Writes left (`writes`).
    writes: AtomicUsize,
    /// Bytes sent in this run (`fired`); the run is over when `count == fired`.
    fired: AtomicUsize,
    /// Failed `recv`/`send` calls (must stay 0).
    failures: AtomicUsize,
}

impl Chain {
    /// The state for `pairs`.
    pub fn new(pairs: &Pairs) -> Chain {
        Chain {
            wr: pairs.wr.iter().map(AsRawFd::as_raw_fd).collect(),
            count: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        }
    }

    /// bench.c's `read_cb` after its `recv` returned one byte from pair `i`. Always inlined,
    /// as [`on_readable`](Self::on_readable).
    #[inline(always)]
    pub fn on_byte(&self, i: usize) {
        self.count.store(self.count.load(Relaxed) + 1, Relaxed);
        let w = self.writes.load(Relaxed);
        if w > 0 {
            let next = if i + 1 == self.wr.len() { 0 } else { i + 1 };
            // SAFETY: the write ends outlive every peer run (owned by the case's `Pairs`).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.wr[next]) };
            if !send_byte(fd) {
                self.fail();
            }
            self.writes.store(w - 1, Relaxed);
            self.fired.store(self.fired.load(Relaxed) + 1, Relaxed);
        }
    }

    /// The read handler of pair `i`: `recv` until a short read, one `on_byte` per byte.
    /// Always inlined into each peer's handler or loop: left to the optimizer, whether it was
    /// inlined (and so each peer's count, the floor's by up to 20%) changed from build to build
    /// with no change to the peer's code.
    #[inline(always)]
    pub fn on_readable(&self, fd: impl AsFd, i: usize) {
        let mut buf = [0u8; 64];
        let fd = fd.as_fd();
        loop {
            match recv(fd, &mut buf) {
                Ok(0) => return self.fail(),
                Ok(k) => {
                    for _ in 0..k {
                        self.on_byte(i);
                    }
                    if k < buf.len() {
                        return;
                    }
                }
                // EAGAIN: a level-triggered report raced with nothing (not expected), or an
                // edge with nothing left. Harmless either way.
                Err(_) => return,
            }
        }
    }

    fn fail(&self) {
        self.failures
            .store(self.failures.load(Relaxed) + 1, Relaxed);
    }

    /// Starts a run as bench.c does: `active` bytes spread evenly, `writes` to pass on.
    pub fn start(&self, active: usize, writes: usize) {
        let n = self.wr.len();
        let space = n / active;
        self.fired.store(0, Relaxed);
        for i in 0..active {
            // SAFETY: as in `on_byte`.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.wr[i * space]) };
            if !send_byte(fd) {
                self.fail();
            }
            self.fired.store(self.fired.load(Relaxed) + 1, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.writes.store(writes, Relaxed);
    }

    /// Whether every byte sent in this run has been read.
    #[inline]
    pub fn done(&self) -> bool {
        self.count.load(Relaxed) == self.fired.load(Relaxed)
    }

    /// Bytes read in this run.
    pub fn count(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// An error if any `recv`/`send` failed or a run lost bytes.
    pub fn check(&self) -> io::Result<()> {
        match self.failures.load(Relaxed) {
            0 => Ok(()),
            f => Err(io::Error::other(format!("{f} failed recv/send calls"))),
        }
    }

    /// A bound on the passes of one run; exceeding it means a lost byte, not a slow loop.
    pub fn max_passes(active: usize, writes: usize) -> usize {
        4 * (active + writes) + 1000
    }
}

/// The error for a run that did not finish within [`Chain::max_passes`].
pub fn stuck(chain: &Chain) -> io::Error {
    io::Error::other(format!("run stuck after {} reads", chain.count()))
}

/// This thread's CPU time in µs (`CLOCK_THREAD_CPUTIME_ID`, which includes the kernel time
/// of this thread's system calls): on a shared machine a run is not charged for the time
/// other processes held the core. Every peer runs its whole chain on this one thread.
#[inline(always)]
pub fn cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// A timed phase of a chain run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dispatch only, nothing re-registered.
    Loop,
    /// The peer's re-arm of every fd + one empty pass + the run.
    Total,
    /// bench.c's `event_del` + `event_add` of every fd + one empty pass + the run.
    Literal,
}

impl Phase {
    /// The callgrind dump name of the phase.
    fn dump_name(self) -> &'static std::ffi::CStr {
        match self {
            Phase::Loop => c"loop",
            Phase::Total => c"total",
            Phase::Literal => c"literal",
        }
    }
}

/// Times one run in `phase` given the peer's operations on its loop state `lp`; returns µs of
/// thread CPU time.
///
/// `rearm` re-registers every fd (not called for [`Phase::Loop`]), `pass` is one non-blocking
/// loop iteration. Loop time runs from just after the initial writes to the last read; the
/// other phases from before the re-registration to the last read (libev's bench.c "total").
/// The same span is bracketed by callgrind client requests (see `chain/callgrind.rs`).
#[inline]
pub fn timed_run<L>(
    chain: &Chain,
    case: &ChainCase,
    lp: &mut L,
    phase: Phase,
    mut rearm: impl FnMut(&mut L) -> io::Result<()>,
    mut pass: impl FnMut(&mut L) -> io::Result<()>,
) -> io::Result<f64> {
    let limit = Chain::max_passes(case.active, case.writes);
    let t0 = if phase == Phase::Loop {
        chain.start(case.active, case.writes);
        crate::timers::callgrind::zero();
        cpu_us()
    } else {
        crate::timers::callgrind::zero();
        let t0 = cpu_us();
        rearm(lp)?;
        pass(lp)?;
        chain.start(case.active, case.writes);
        t0
    };
    let mut passes = 0;
    while !chain.done() {
        pass(lp)?;
        passes += 1;
        if passes > limit {
            return Err(stuck(chain));
        }
    }
    let t1 = cpu_us();
    crate::timers::callgrind::dump(phase.dump_name());
    std::hint::black_box(chain.count());
    Ok(t1 - t0)
}

/// No re-registration (the phases a peer does not have).
pub fn no_rearm<L>(_: &mut L) -> io::Result<()> {
    Ok(())
}

/// Runs `case.iters` runs of each phase, phase by phase (loop runs first): `total` and
/// `literal` are the peer's re-registrations, `None` where it has none.
pub fn run_phases<L, T, R, P>(
    chain: &Chain,
    case: &ChainCase,
    lp: &mut L,
    mut total: Option<T>,
    mut literal: Option<R>,
    mut pass: P,
) -> io::Result<ChainSamples>
where
    T: FnMut(&mut L) -> io::Result<()>,
    R: FnMut(&mut L) -> io::Result<()>,
    P: FnMut(&mut L) -> io::Result<()>,
{
    type Rearm<'a, L> = &'a mut dyn FnMut(&mut L) -> io::Result<()>;
    let mut runs = |lp: &mut L, phase: Phase, rearm: Rearm<'_, L>| -> io::Result<Vec<f64>> {
        (0..case.iters)
            .map(|_| timed_run(chain, case, lp, phase, &mut *rearm, &mut pass))
            .collect()
    };
    let loop_us = runs(lp, Phase::Loop, &mut no_rearm)?;
    let total_us = match &mut total {
        Some(t) => Some(runs(lp, Phase::Total, t)?),
        None => None,
    };
    let literal_us = match &mut literal {
        Some(r) => Some(runs(lp, Phase::Literal, r)?),
        None => None,
    };
    chain.check()?;
    Ok(ChainSamples {
        loop_us,
        total_us,
        literal_us,
    })
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<ChainCase, ChainSamples>> {
    vec![
        Peer::ioloop(ioloop_peer::run),
        Peer::new("raw epoll (floor)", Role::Floor, raw_epoll::run),
        Peer::new("libev", Role::Peer, libev_peer::run),
        Peer::new("mio", Role::Peer, mio_peer::run),
        Peer::new("polling", Role::Peer, polling_peer::run),
        Peer::new("tokio AsyncFd", Role::Peer, tokio_peer::run),
    ]
    .into_iter()
    .chain(diag_peers())
    .collect()
}

/// With `IOLOOP_BENCH_CHAIN_DIAG` set: the floor with its handler behind a function pointer
/// (every library calls a user's handler so; the floor and the mio and polling peers have it
/// inlined into their loops), to see what that call costs apart from everything else.
fn diag_peers() -> Vec<Peer<ChainCase, ChainSamples>> {
    if std::env::var_os("IOLOOP_BENCH_CHAIN_DIAG").is_none() {
        return Vec::new();
    }
    vec![Peer::new(
        "raw epoll, handler via pointer (diag)",
        Role::Peer,
        raw_epoll::run_via_pointer,
    )]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<ChainCase, ChainSamples>]) -> Report {
    // Full: 5 rounds x (1 warm-up + 5) runs = 25 timed runs per peer and case.
    let (sizes, rounds, iters): (&[usize], usize, usize) = if quick {
        (&[100, 1000], 2, 4)
    } else {
        (&[100, 1000, 10_000], 5, 6)
    };
    let actives = [1, 100];
    let writes = 1000;
    let mut report = Report::new(
        "chain",
        format!(
            "libevent bench.c chain dispatch, w={writes}; {rounds} interleaved rounds x {} runs (+1 warm-up each)",
            iters - 1
        ),
        "µs/run",
    );
    report.anchor = Some(anchor);

    // bench.c needs 2n + 50 fds; every peer adds a few of its own (epoll, eventfd, timerfd).
    let (limit, fit) = raise_nofile_for_pairs(sizes.iter().max().copied().unwrap_or(0));

    for &want_n in sizes {
        let n = want_n.min(fit);
        if n < want_n {
            report.notes.push(format!(
                "n={want_n} needs {} fds but RLIMIT_NOFILE is {limit} (hard limit, not raisable here): ran n={n}, the largest that fits",
                2 * want_n + 64
            ));
        }
        let pairs = match Pairs::open(n) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                report
                    .notes
                    .push(format!("n={n}: cannot open socketpairs: {e}"));
                continue;
            }
        };
        for &active in &actives {
            let case = ChainCase {
                pairs: pairs.clone(),
                active,
                writes,
                iters,
            };
            let results = run_rounds(peers, &case, rounds, 1, || pairs.drain());
            push_case(&mut report, peers, &results, n, active);
        }
    }
    report.notes.push(
        "thread CPU time (CLOCK_THREAD_CPUTIME_ID, kernel time of the thread's syscalls included); peers interleaved round by round in one process; each peer's loop runs come first, before any re-registration".into(),
    );
    report.notes.push(
        "loop = dispatch passes only, every fd registered once at setup (anchor: the raw rustix epoll floor); total = each peer's cheapest re-arm of all n fds + one empty pass + the run (anchor: libev); bench.c del+add = remove and re-add every handler (ioloop remove_handler + add_handler, libev ev_io_stop + ev_io_set + ev_io_start as libev's bench.c, the floor EPOLL_CTL_DEL + ADD) + one empty pass + the run (anchor: libev)".into(),
    );
    report.notes.push(
        "total re-arm: ioloop update_handler (unchanged interest: no system call), floor EPOLL_CTL_MOD, mio reregister, polling modify, libev ev_io_stop + ev_io_start (its only way); tokio has none (re-creating AsyncFds is a different operation)".into(),
    );
    report.notes.push(
        "every peer's handler is one recv(64) + one send per byte read (bench.c: recv(1)); identical syscalls, see chain/mod.rs; libev calls the same Rust handler through one function pointer".into(),
    );
    report.notes.push(
        "the floor and libev are level-triggered like ioloop; edge-triggered peers (mio, tokio) can beat the floor: a level-triggered fd is re-polled by the kernel on the next epoll_wait".into(),
    );
    report
}

/// The anchor of a chain case's phase: the floor for loop time, libev for the re-registering
/// phases.
pub fn anchor(case: &str) -> &'static str {
    if case.ends_with(" loop") {
        "raw epoll (floor)"
    } else {
        "libev"
    }
}

/// Adds one (n, a) case's three phase rows to the report.
fn push_case(
    report: &mut Report,
    peers: &[Peer<ChainCase, ChainSamples>],
    results: &[io::Result<ChainSamples>],
    n: usize,
    active: usize,
) {
    type Pick = fn(&ChainSamples) -> Option<&Vec<f64>>;
    let phases: [(&str, Pick, &str); 3] = [
        ("loop", |s| Some(&s.loop_us), ""),
        (
            "total",
            |s| s.total_us.as_ref(),
            "n/a: no comparable re-arm (see notes)",
        ),
        (
            "bench.c del+add",
            |s| s.literal_us.as_ref(),
            "n/a: not measured for this peer",
        ),
    ];
    for (phase, pick, missing) in phases {
        let case = format!("n={n} a={active} {phase}");
        for (peer, r) in peers.iter().zip(results) {
            match r.as_ref().map(pick) {
                Ok(Some(v)) => report.push(&case, peer.name, peer.role, v.clone()),
                Ok(None) => report.push_missing(&case, peer.name, peer.role, missing.into()),
                Err(e) => report.push_missing(&case, peer.name, peer.role, format!("error: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer completes a tiny case, and the bookkeeping balances.
    #[test]
    fn every_peer_runs_a_small_chain() {
        let pairs = Arc::new(Pairs::open(10).unwrap());
        for active in [1, 5] {
            let case = ChainCase {
                pairs: pairs.clone(),
                active,
                writes: 30,
                iters: 2,
            };
            for p in peers() {
                pairs.drain();
                let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                assert_eq!(s.loop_us.len(), 2, "{}", p.name);
                assert!(s.loop_us.iter().all(|&t| t > 0.0), "{}", p.name);
                for v in [&s.total_us, &s.literal_us].into_iter().flatten() {
                    assert_eq!(v.len(), 2, "{}", p.name);
                }
            }
        }
    }
}
