//! The parent side of the callgrind workloads (`timers-callgrind`, `chain-callgrind`): run this
//! binary's child mode under `valgrind --tool=callgrind` and read the per-phase instruction
//! totals it dumped. The client requests that bracket the phases are in
//! `timers::callgrind` (`zero`/`dump`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Per phase, the instructions of its last dump.
pub type Dumps = Vec<(String, u64)>;

/// Whether `valgrind` runs here, and this executable's path: what a child run needs.
pub fn launcher() -> Result<PathBuf, &'static str> {
    let have_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match std::env::current_exe() {
        _ if !have_valgrind => Err("valgrind not installed"),
        Ok(exe) => Ok(exe),
        Err(_) => Err("cannot find this executable"),
    }
}

/// Runs `exe args` under callgrind (its stdout dropped) in a fresh dump directory named from
/// `tag` and `peer`, and returns the dumps it wrote.
pub fn run_child(exe: &Path, tag: &str, peer: &str, args: &[&str]) -> io::Result<Dumps> {
    let dir = std::env::temp_dir().join(format!(
        "ioloop-cg-{tag}-{}-{}",
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
        .args(args)
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

/// The total of `phase` in a child's result, or why there is none (`missing` when the child
/// ran but dumped no such phase).
pub fn phase_total(r: &io::Result<Dumps>, phase: &str, missing: &str) -> Result<u64, String> {
    let dumps = r.as_ref().map_err(|e| e.to_string())?;
    dumps
        .iter()
        .find(|(q, _)| q == phase)
        .map(|(_, t)| *t)
        .ok_or_else(|| missing.to_owned())
}

/// `(phase, instructions)` from the dumps callgrind wrote for one child, last dump per phase.
fn read_dumps(dir: &Path) -> io::Result<Dumps> {
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
    let mut out = Dumps::new();
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
