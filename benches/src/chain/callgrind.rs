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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::{anchor, peers, ChainCase};
use crate::harness::Report;
use crate::sys::{raise_nofile, Pairs};

/// Bytes passed on per run, as in the timed workload.
const WRITES: usize = 1000;

/// The peers counted (tokio and polling are left out to keep CI near a minute: their
/// instruction counts say nothing about ioloop's goal).
const COUNTED: &[&str] = &["ioloop", "raw epoll (floor)", "libev", "mio"];

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
    let exe = std::env::current_exe().ok();
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let peers: Vec<_> = peers()
        .into_iter()
        .filter(|p| COUNTED.contains(&p.name))
        .collect();
    for &n in sizes {
        for active in [1, 100] {
            let events = (active + WRITES) as f64;
            let results: Vec<_> = peers
                .iter()
                .map(|p| match (&exe, have_valgrind) {
                    (Some(exe), true) => one(exe, p.name, n, active),
                    (_, false) => Err(io::Error::other("valgrind not installed")),
                    (None, _) => Err(io::Error::other("cannot find this executable")),
                })
                .collect();
            for (phase, label) in [
                ("loop", "loop"),
                ("total", "total"),
                ("literal", "bench.c del+add"),
            ] {
                let case = format!("n={n} a={active} {label}");
                for (p, r) in peers.iter().zip(&results) {
                    let hit = r.as_ref().map_err(|e| e.to_string()).and_then(|v| {
                        v.iter()
                            .find(|(q, _)| q == phase)
                            .map(|(_, t)| *t)
                            .ok_or_else(|| "n/a: no such phase for this peer".to_owned())
                    });
                    match hit {
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

/// One peer under callgrind: its phases' instruction totals.
fn one(exe: &Path, peer: &str, n: usize, active: usize) -> io::Result<Vec<(String, u64)>> {
    let dir = std::env::temp_dir().join(format!(
        "ioloop-cg-chain-{}-{}-{n}-{active}",
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
        .args([
            "--chain-callgrind-child",
            peer,
            &n.to_string(),
            &active.to_string(),
        ])
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
