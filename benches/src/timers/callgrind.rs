//! Instruction counts of the timer workload under callgrind (deterministic, no timing).
//!
//! `ioloop-bench --callgrind [--quick]` re-runs this binary under
//! `valgrind --tool=callgrind` once per (peer, variant, N) with two iterations of the four
//! phases. Every phase is bracketed by callgrind client requests (`start` zeroes the counters,
//! `stop` dumps them under the phase's name; outside valgrind both are a few no-op
//! instructions), so each figure is exactly the instructions executed between the same two
//! points the timed run reads the clock at, divided by N. The second iteration's figures are
//! reported (a warm structure, as in the timed run). ioloop's loop reads a clock the child moves
//! by fixed steps (`manual_clock.rs`), so its counts are the same in every run, as libev's are
//! (its heap orders by deadline alone); tokio's wheel runs on the real clock and its figures
//! move by under 1% between runs. User-space instructions only: system calls
//! count as one instruction, and valgrind hides the vDSO, so a clock read costs a syscall here
//! (not counted) rather than its ~40 ns of vDSO code.

use std::io;
use std::sync::Arc;

use super::{ioloop_peer, peers, Inputs, TimerCase};
use crate::harness::Report;
use crate::valgrind;

const TOOL_BASE: usize = ((b'C' as usize) << 24) | ((b'T' as usize) << 16);
const DUMP_STATS_AT: usize = TOOL_BASE + 3;
const ZERO_STATS: usize = TOOL_BASE + 1;

/// One valgrind client request (`VALGRIND_DO_CLIENT_REQUEST` of valgrind.h, amd64): a no-op
/// sequence natively, a request under valgrind.
#[inline(always)]
fn request(req: usize, arg: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let args: [usize; 6] = [req, arg, 0, 0, 0, 0];
        // SAFETY: the four rotations of rdi add up to 128 bits (rdi unchanged) and
        // `xchg rbx, rbx` leaves rbx as it was; natively the sequence only changes flags and
        // rdx (declared). Under valgrind, `args` (alive across the asm) is read.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51", "xchg rbx, rbx",
                inout("rdx") 0usize => _,
                in("rax") args.as_ptr(),
                options(nostack),
            );
        }
        std::hint::black_box(&args);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (req, arg);
}

/// Zeroes callgrind's counters (start of a measured phase).
#[inline(always)]
pub fn zero() {
    request(ZERO_STATS, 0);
}

/// Dumps callgrind's counters under `name` (end of a measured phase).
#[inline(always)]
pub fn dump(name: &std::ffi::CStr) {
    request(DUMP_STATS_AT, name.as_ptr() as usize);
}

/// The child side: `--timers-callgrind-child PEER N same|random`.
pub fn child_main(args: &[String]) -> io::Result<()> {
    let [peer, n, variant] = args else {
        return Err(io::Error::other(
            "usage: --timers-callgrind-child PEER N same|random",
        ));
    };
    let n: usize = n.parse().map_err(|_| io::Error::other("bad N"))?;
    let same = variant == "same";
    let p = peers()
        .into_iter()
        .find(|p| p.name == peer)
        .ok_or_else(|| io::Error::other(format!("no peer {peer:?}")))?;
    let case = TimerCase {
        n,
        iters: 2,
        inputs: Arc::new(Inputs::new(n, same, 0x5eed_0000 + n as u64)),
    };
    // ioloop's peers on a clock that moves by fixed steps: where a deadline falls in the
    // timer wheel, and how many ticks the fire pass crosses, then do not depend on the
    // wall-clock instants of this run (`manual_clock.rs`).
    let run = match p.name {
        "ioloop" => ioloop_peer::run_manual_clock,
        "ioloop call_at" => ioloop_peer::run_call_at_manual_clock,
        _ => p.run,
    };
    let s = run(&case)?;
    // Timed figures of the same run (meaningless under valgrind; useful when run bare to
    // look at one peer alone).
    println!(
        "{peer} N={n} {variant}: ns/timer schedule {:?} rearm {:?} cancel {:?} fire {:?}",
        s.schedule, s.rearm, s.cancel, s.fire
    );
    Ok(())
}

/// Runs every peer under callgrind and returns the instructions-per-timer table.
pub fn run(quick: bool) -> Report {
    let sizes: &[usize] = if quick { &[10_000] } else { &[10_000, 100_000] };
    let mut report = Report::new(
        "timers-callgrind",
        "instructions per timer under callgrind, second iteration (deterministic)".into(),
        "instr/timer",
    );
    report.better = "lower is fewer instructions";
    let exe = valgrind::launcher();
    let peers = peers();
    for same in [false, true] {
        let variant = if same { "same" } else { "random" };
        for &n in sizes {
            let label = |phase: &str| format!("{variant} N={} {phase}", super::pow10(n));
            let mut results = Vec::new();
            for p in &peers {
                let r = match &exe {
                    Ok(exe) => {
                        let n = n.to_string();
                        let args = ["--timers-callgrind-child", p.name, &n, variant];
                        valgrind::run_child(exe, &format!("{n}-{variant}"), p.name, &args)
                    }
                    Err(why) => Err(io::Error::other(*why)),
                };
                results.push(r);
            }
            for phase in ["schedule", "rearm", "cancel", "fire"] {
                for (p, r) in peers.iter().zip(&results) {
                    match valgrind::phase_total(r, phase, "no dump for this phase") {
                        Ok(t) => {
                            report.push(&label(phase), p.name, p.role, vec![t as f64 / n as f64])
                        }
                        Err(e) => report.push_missing(&label(phase), p.name, p.role, e),
                    }
                }
            }
        }
    }
    report.notes.push(
        "valgrind --tool=callgrind, client requests around each phase; clock reads are syscalls under valgrind (not counted); ioloop on a clock the benchmark moves by fixed steps (the same counts in every run)".into(),
    );
    report
}
