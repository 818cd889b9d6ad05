//! Instruction counts of the chain workload under callgrind (deterministic, no timing).
//!
//! `ioloop-bench --only chain-callgrind` re-runs this binary under `valgrind --tool=callgrind`
//! once per (peer, n, a), each child doing two runs of every phase the peer has. Every timed
//! span of `timed_run` is bracketed by callgrind client requests (the timer workload's
//! `zero`/`dump`), so a figure is exactly the instructions executed between the two points the
//! timed run reads the clock at; the second run's figure is reported (warm), divided by the
//! events of a run (`a + w` reads). User-space instructions only: a system call counts as one
//! instruction, and valgrind hides the vDSO, so libev's per-iteration clock read is a system
//! call here rather than its ~40 instructions of vDSO code.

use std::io;
use std::sync::Arc;

use super::{anchor, peers, ChainCase};
use crate::harness::Report;
use crate::sys::{raise_nofile, Pairs};
use crate::valgrind;

/// Bytes passed on per run, as in the timed workload.
const WRITES: usize = 1000;

/// The peers counted (tokio and polling are left out to keep CI near a minute: their
/// instruction counts say nothing about ioloop's goal). The diagnostic floor is counted when
/// `IOLOOP_BENCH_CHAIN_DIAG` adds it to the peers.
const COUNTED: &[&str] = &[
    "ioloop",
    "raw epoll (floor)",
    "raw epoll, handler via pointer (diag)",
    "libev",
    "mio",
];

/// The child side: `--chain-callgrind-child PEER N A`.
pub fn child_main(args: &[String]) -> io::Result<()> {
    let [peer, n, a] = args else {
        return Err(io::Error::other("usage: --chain-callgrind-child PEER N A"));
    };
    let n: usize = n.parse().map_err(|_| io::Error::other("bad N"))?;
    let active: usize = a.parse().map_err(|_| io::Error::other("bad A"))?;
    let p = peers()
        .into_iter()
        .find(|p| p.name == peer)
        .ok_or_else(|| io::Error::other(format!("no peer {peer:?}")))?;
    raise_nofile(2 * n as u64 + 64);
    let pairs = Arc::new(Pairs::open(n)?);
    let case = ChainCase {
        pairs,
        active,
        writes: WRITES,
        iters: 2,
    };
    (p.run)(&case).map(drop)
}

/// Runs the counted peers under callgrind and returns the instructions-per-event table.
pub fn run(quick: bool) -> Report {
    let sizes: &[usize] = if quick { &[100] } else { &[100, 1000] };
    let mut report = Report::new(
        "chain-callgrind",
        format!("user-space instructions per event under callgrind, w={WRITES}, second run (deterministic)"),
        "instr/event",
    );
    report.better = "lower is fewer instructions";
    report.anchor = Some(anchor);
    let exe = valgrind::launcher();
    let peers: Vec<_> = peers()
        .into_iter()
        .filter(|p| COUNTED.contains(&p.name))
        .collect();
    for &n in sizes {
        for active in [1, 100] {
            let events = (active + WRITES) as f64;
            let results: Vec<_> = peers
                .iter()
                .map(|p| match &exe {
                    Ok(exe) => {
                        let (n, a) = (n.to_string(), active.to_string());
                        let args = ["--chain-callgrind-child", p.name, &n, &a];
                        valgrind::run_child(exe, &format!("chain-{n}-{a}"), p.name, &args)
                    }
                    Err(why) => Err(io::Error::other(*why)),
                })
                .collect();
            for (phase, label) in [
                ("loop", "loop"),
                ("total", "total"),
                ("literal", "bench.c del+add"),
            ] {
                let case = format!("n={n} a={active} {label}");
                for (p, r) in peers.iter().zip(&results) {
                    match valgrind::phase_total(r, phase, "n/a: no such phase for this peer") {
                        Ok(t) => report.push(&case, p.name, p.role, vec![t as f64 / events]),
                        Err(e) => report.push_missing(&case, p.name, p.role, e),
                    }
                }
            }
        }
    }
    report.notes.push(
        "valgrind --tool=callgrind, client requests around each timed span; a system call counts as one instruction; events = a + w reads per run".into(),
    );
    report.notes.push(
        "anchors: loop = the raw rustix epoll floor (registered once); total and bench.c del+add = libev".into(),
    );
    report
}
