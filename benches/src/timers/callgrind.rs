//! Instruction counts of the timer workload under callgrind (deterministic, no timing).
//!
//! `ioloop-bench --callgrind [--quick]` re-runs this binary under
//! `valgrind --tool=callgrind` once per (peer, variant, N) with two iterations of the four
//! phases. Every phase is bracketed by callgrind client requests (`start` zeroes the counters,
//! `stop` dumps them under the phase's name; outside valgrind both are a few no-op
//! instructions), so each figure is exactly the instructions executed between the same two
//! points the timed run reads the clock at, divided by N. The second iteration's figures are
//! reported (a warm structure, as in the timed run). User-space instructions only: system calls
//! count as one instruction, and valgrind hides the vDSO, so a clock read costs a syscall here
//! (not counted) rather than its ~40 ns of vDSO code.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::{peers, Inputs, TimerCase};
use crate::harness::Report;

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
    let s = (p.run)(&case)?;
    // Timed figures of the same run (meaningless under valgrind; useful when run bare to
    // look at one peer alone).
    println!(
        "{peer} N={n} {variant}: ns/timer schedule {:?} rearm {:?} cancel {:?} fire {:?}",
        s.schedule, s.rearm, s.cancel, s.fire
    );
    Ok(())
}

/// `(phase, instructions)` from the dumps callgrind wrote for one child, last dump per phase.
fn read_dumps(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // cg.<pid>.<k>: in dump order.
    files.sort_by_key(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let mut out: Vec<(String, u64)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut phase = None;
        let mut total = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("desc: Trigger: Client Request: ") {
                phase = Some(rest.trim().to_owned());
            } else if let Some(rest) = line
                .strip_prefix("summary: ")
                .or_else(|| line.strip_prefix("totals: "))
            {
                total = rest.split_whitespace().next().and_then(|x| x.parse().ok());
            }
        }
        if let (Some(p), Some(t)) = (phase, total) {
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some(e) => e.1 = t,
                None => out.push((p, t)),
            }
        }
    }
    Ok(out)
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
    let exe = std::env::current_exe().ok();
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let peers = peers();
    for same in [false, true] {
        let variant = if same { "same" } else { "random" };
        for &n in sizes {
            let label = |phase: &str| format!("{variant} N={} {phase}", super::pow10(n));
            let mut results = Vec::new();
            for p in &peers {
                let r = match (&exe, have_valgrind) {
                    (Some(exe), true) => one(exe, p.name, n, variant),
                    (_, false) => Err(io::Error::other("valgrind not installed")),
                    (None, _) => Err(io::Error::other("cannot find this executable")),
                };
                results.push(r);
            }
            for phase in ["schedule", "rearm", "cancel", "fire"] {
                for (p, r) in peers.iter().zip(&results) {
                    let hit = r.as_ref().map_err(|e| e.to_string()).and_then(|v| {
                        v.iter()
                            .find(|(q, _)| q == phase)
                            .map(|(_, t)| *t)
                            .ok_or_else(|| "no dump for this phase".to_owned())
                    });
                    match hit {
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
        "valgrind --tool=callgrind, client requests around each phase; clock reads are syscalls under valgrind (not counted)".into(),
    );
    report
}

/// One peer under callgrind: its phases' instruction totals.
fn one(exe: &Path, peer: &str, n: usize, variant: &str) -> io::Result<Vec<(String, u64)>> {
    let dir = std::env::temp_dir().join(format!(
        "ioloop-cg-{}-{}-{n}-{variant}",
        std::process::id(),
        peer.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
        .args([
            "--dump-instr=no",
            "--compress-strings=no",
            "--compress-pos=no",
        ])
        .arg("-q")
        .arg(exe)
        .args(["--timers-callgrind-child", peer, &n.to_string(), variant])
        // The child's own timed line means nothing under valgrind.
        .stdout(std::process::Stdio::null())
        .status()?;
    let r = if status.success() {
        read_dumps(&dir)
    } else {
        Err(io::Error::other(format!("child failed: {status}")))
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}
