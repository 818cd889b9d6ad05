//! Workload 7: footprint. What each echo server costs in memory, and what ioloop costs on disk.
//!
//! * **Heap allocations in the steady state**: the echo server serves `C = 100` connections
//!   of 64-byte requests; after a warm-up phase, a counting window ([`crate::alloc_count`])
//!   covers `N` more requests. Only the server thread and the load generator's thread are
//!   counted, and the load generator allocates nothing during a phase, so every counted
//!   allocation is the server's. ioloop's must be 0; mio's and tokio's are what they are.
//! * **RSS with 1000 idle connections**: `VmRSS` before the server starts and after 1000
//!   connections have each been echoed once and then left idle (200 ms later). The difference
//!   is everything the server needed to hold them: its loop, its tables, its per-connection
//!   buffers and tasks (sockets' kernel memory is not in RSS).
//!
//!   Both are measured in a fresh child process per peer and repetition (this binary, run with
//!   a hidden `--footprint-child PEER REQUESTS`), so that no peer inherits another's freed
//!   heap pages, and the counting window sees nothing but that one server.
//! * **Binary size**: `cargo build --release --example demo` (ioloop's facade, epoll), as
//!   built and stripped; and the same for `x86_64-unknown-linux-musl` (fully static) when
//!   that target is installed, "n/a" otherwise (and in `--quick`, to keep it short). Nothing
//!   fails if a build does not work. The builds use the same target directory as the run
//!   (`CARGO_TARGET_DIR` or the workspace's `target/`), so a warm tree rebuilds nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::alloc_count;
use crate::echo::client::Client;
use crate::echo::{self, ServerCfg, Spawn};
use crate::harness::{num, Report, Role};
use crate::sys::{raise_nofile, rss_kib};

/// Connections held idle for the RSS measurement.
pub const IDLE_CONNS: usize = 1000;
/// Connections of the steady-state (allocation) phase.
pub const BUSY_CONNS: usize = 100;
/// Requests of the allocation phase's warm-up.
const WARM_REQUESTS: u64 = 2000;
/// Message size of both phases.
const MSG: usize = 64;

/// The servers, by the name the child is given.
const SERVERS: &[(&str, Role, Spawn)] = &[
    ("ioloop", Role::Ioloop, echo::ioloop_peer::spawn),
    ("mio", Role::Peer, echo::mio_peer::spawn),
    ("tokio current_thread", Role::Peer, echo::tokio_peer::spawn),
];

/// One measurement of one server.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    /// Allocations counted during the steady-state window.
    pub allocs: u64,
    /// Bytes they asked for.
    pub bytes: u64,
    /// Requests served in the window.
    pub requests: u64,
    /// RSS in KiB before the server started.
    pub rss_before: Option<u64>,
    /// RSS in KiB with the idle connections open.
    pub rss_idle: Option<u64>,
    /// How many idle connections were open (fewer than asked if the fd limit is lower).
    pub idle_conns: usize,
}

/// Measures the server `spawn` starts: RSS with `idle` idle connections, then allocations
/// during `requests` steady-state requests on [`BUSY_CONNS`] connections. The load generator
/// runs on the calling thread.
pub fn measure(spawn: Spawn, idle: usize, requests: u64) -> io::Result<Footprint> {
    let session = alloc_count::session();
    alloc_count::track_this_thread(session);
    let limit = raise_nofile(2 * (idle + BUSY_CONNS) as u64 + 64);
    let idle = idle.min((limit.saturating_sub(64) / 2) as usize - BUSY_CONNS);
    let max_conns = idle + BUSY_CONNS;
    let cap = (requests.max(WARM_REQUESTS) as usize).max(idle);
    let mut client = Client::new(idle.max(BUSY_CONNS), MSG, cap)?;
    let rss_before = rss_kib();
    let (listener, addr) = echo::listener()?;
    let server = spawn(
        listener,
        ServerCfg {
            max_conns,
            alloc_session: session,
            cpu: None,
        },
    )?;
    let limit = Duration::from_secs(30);
    let result = (|| -> io::Result<Footprint> {
        client.connect(addr, idle)?;
        let once = client.run(MSG, idle as u64, limit)?;
        if once.requests != idle as u64 {
            return Err(io::Error::other("not every idle connection was echoed"));
        }
        std::thread::sleep(Duration::from_millis(200));
        let rss_idle = rss_kib();
        client.disconnect();

        client.connect(addr, BUSY_CONNS)?;
        client.run(MSG, WARM_REQUESTS, limit)?;
        let window = alloc_count::start(session);
        let phase = client.run(MSG, requests, limit);
        let (allocs, bytes) = window.stop();
        let phase = phase?;
        client.disconnect();
        Ok(Footprint {
            allocs,
            bytes,
            requests: phase.requests,
            rss_before,
            rss_idle,
            idle_conns: idle,
        })
    })();
    let stopped = server.shutdown();
    alloc_count::track_this_thread(0);
    let f = result?;
    stopped?;
    Ok(f)
}

/// The child process: `--footprint-child PEER REQUESTS`; prints one `FOOTPRINT` line.
pub fn child_main(args: &[String]) -> Result<(), String> {
    let [peer, requests] = args else {
        return Err("usage: --footprint-child PEER REQUESTS".into());
    };
    let requests: u64 = requests.parse().map_err(|e| format!("{e}"))?;
    let (_, _, spawn) = SERVERS
        .iter()
        .find(|(n, _, _)| n == peer)
        .ok_or_else(|| format!("unknown server {peer:?}"))?;
    let f = measure(*spawn, IDLE_CONNS, requests).map_err(|e| e.to_string())?;
    println!(
        "FOOTPRINT allocs={} bytes={} requests={} rss_before={} rss_idle={} idle_conns={}",
        f.allocs,
        f.bytes,
        f.requests,
        f.rss_before.unwrap_or(0),
        f.rss_idle.unwrap_or(0),
        f.idle_conns
    );
    Ok(())
}

/// Runs one child and parses its line.
fn run_child(peer: &str, requests: u64) -> Result<Footprint, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--footprint-child", peer, &requests.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FOOTPRINT "))
        .ok_or_else(|| {
            let err = String::from_utf8_lossy(&out.stderr);
            format!("child failed: {}", err.trim())
        })?;
    let field = |k: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {k} in {line:?}"))
    };
    let nonzero = |v: u64| (v > 0).then_some(v);
    Ok(Footprint {
        allocs: field("allocs")?,
        bytes: field("bytes")?,
        requests: field("requests")?,
        rss_before: nonzero(field("rss_before")?),
        rss_idle: nonzero(field("rss_idle")?),
        idle_conns: field("idle_conns")? as usize,
    })
}

/// Runs the workload.
pub fn run(quick: bool) -> Report {
    let (reps, requests) = if quick { (1, 2_000) } else { (3, 10_000) };
    let mut report = Report::new(
        "footprint",
        format!(
            "echo server memory (fresh process per measurement, {reps} each) and ioloop's binary size"
        ),
        "see case",
    );
    report.better = "lower is smaller";
    let alloc_case = format!("heap allocs / {requests} req (C={BUSY_CONNS}, {MSG} B, warm)");
    let rss_case = format!("RSS Δ KiB, {IDLE_CONNS} idle conns");
    let mut rows_alloc = Vec::new();
    let mut rows_rss = Vec::new();
    for (name, role, _) in SERVERS {
        let mut allocs = Vec::new();
        let mut bytes = Vec::new();
        let mut rss = Vec::new();
        let mut conns = IDLE_CONNS;
        let mut err = None;
        for _ in 0..reps {
            match run_child(name, requests) {
                Ok(f) => {
                    let scale = requests as f64 / f.requests.max(1) as f64;
                    allocs.push(f.allocs as f64 * scale);
                    bytes.push(f.bytes as f64 * scale);
                    if let (Some(a), Some(b)) = (f.rss_before, f.rss_idle) {
                        rss.push(b as f64 - a as f64);
                    }
                    conns = f.idle_conns;
                }
                Err(e) => err = Some(e),
            }
        }
        rows_alloc.push((*name, *role, allocs, bytes, err.clone()));
        rows_rss.push((*name, *role, rss, conns, err));
    }
    for (name, role, allocs, bytes, err) in rows_alloc {
        let note = || format!("{} bytes requested", num(median(bytes)));
        push_noted(&mut report, &alloc_case, (name, role), allocs, err, note);
    }
    for (name, role, rss, conns, err) in rows_rss {
        let per_conn = median(rss.clone()) * 1024.0 / conns as f64;
        let note = || format!("≈ {} B per connection ({conns} connections)", num(per_conn));
        push_noted(&mut report, &rss_case, (name, role), rss, err, note);
    }

    let size_case = "demo binary, KiB";
    for (name, role, size) in demo_sizes(quick) {
        match size {
            Ok(bytes) => report.push(size_case, name, role, vec![bytes as f64 / 1024.0]),
            Err(why) => report.push_missing(size_case, name, role, why),
        }
    }
    report.notes.push(
        "allocs: counting global allocator, only the server's and the load generator's threads, after a warm-up phase on the same connections; the load generator allocates nothing during a phase".into(),
    );
    report.notes.push(
        "RSS Δ: VmRSS before the server starts → after every connection was echoed once and left idle; includes the server's fixed tables (ioloop: a 2048-handler loop and 8 KiB per connection slot, preallocated)".into(),
    );
    report
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo build --release --example demo [--target T]`: the executable's path, or why not.
fn build_demo(target: Option<&str>) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--example",
        "demo",
        "--message-format=json",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("n/a: cannot run cargo: {e}"))?;
    let out = wait_with_timeout(child, Duration::from_secs(600))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("n/a: build failed: {}", last.trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| {
            l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"name\":\"demo\"")
        })
        .find_map(|l| {
            let rest = l.split("\"executable\":\"").nth(1)?;
            Some(PathBuf::from(rest.split('"').next()?))
        })
        .ok_or_else(|| "n/a: no executable in cargo's output".into())
}

/// Waits for `child`, killing it after `limit`.
fn wait_with_timeout(
    mut child: std::process::Child,
    limit: Duration,
) -> Result<std::process::Output, String> {
    let t0 = Instant::now();
    // Read the pipes on threads so a chatty build cannot block on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let ro = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let re = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("n/a: build took over {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("n/a: {e}")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: ro.join().unwrap_or_default(),
        stderr: re.join().unwrap_or_default(),
    })
}

/// The size of `path` after `strip` (into a temporary file), if `strip` is available.
fn stripped_size(path: &Path) -> Result<u64, String> {
    let tmp = std::env::temp_dir().join(format!("ioloop-bench-demo-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let size = std::fs::metadata(&tmp).map(|m| m.len());
    let _ = std::fs::remove_file(&tmp);
    match (ok, size) {
        (true, Ok(n)) => Ok(n),
        _ => Err("n/a: no strip".into()),
    }
}

/// Whether rustup installed the standard library for `target`.
fn target_installed(target: &str) -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .is_some_and(|root| Path::new(&root).join("lib/rustlib").join(target).is_dir())
}

/// The demo's sizes: (row name, role, bytes or why not). `--quick` skips the musl build (a
/// second full build for another target).
fn demo_sizes(quick: bool) -> Vec<(&'static str, Role, Result<u64, String>)> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("n/a: {e}"))
    };
    let mut rows = Vec::new();
    match build_demo(None) {
        Ok(p) => {
            rows.push(("demo, release (glibc, dynamic)", Role::Ioloop, size(&p)));
            rows.push(("demo, release, stripped", Role::Peer, stripped_size(&p)));
        }
        Err(e) => rows.push(("demo, release (glibc, dynamic)", Role::Ioloop, Err(e))),
    }
    const MUSL: &str = "x86_64-unknown-linux-musl";
    let musl = if quick {
        Err("n/a: not built in --quick".into())
    } else if target_installed(MUSL) {
        build_demo(Some(MUSL)).and_then(|p| stripped_size(&p).or_else(|_| size(&p)))
    } else {
        Err(format!("n/a: rustup target add {MUSL}"))
    };
    rows.push(("demo, musl static, stripped", Role::Peer, musl));
    rows
}

/// The middle of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Pushes `samples` as the peer's row of `case` with the note `note()`, or, when there are
/// none, a missing row saying `err`.
fn push_noted(
    report: &mut Report,
    case: &str,
    (name, role): (&'static str, Role),
    samples: Vec<f64>,
    err: Option<String>,
    note: impl FnOnce() -> String,
) {
    if samples.is_empty() {
        let why = format!("error: {}", err.unwrap_or_default());
        report.push_missing(case, name, role, why);
        return;
    }
    report.push(case, name, role, samples);
    if let Some(row) = report.rows.last_mut() {
        row.note = Some(note());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ioloop's echo server allocates nothing in its steady state, and the RSS probe reads.
    #[test]
    fn ioloop_server_allocates_nothing_when_warm() {
        let f = measure(echo::ioloop_peer::spawn, 20, 500).unwrap();
        assert_eq!(f.requests, 500);
        assert_eq!(f.allocs, 0, "{f:?}");
        assert!(f.rss_before.is_some() && f.rss_idle.is_some());
    }

    /// The other servers complete the same measurement (whatever they allocate).
    #[test]
    fn peers_complete_a_tiny_measurement() {
        for spawn in [echo::mio_peer::spawn as Spawn, echo::tokio_peer::spawn] {
            let f = measure(spawn, 10, 200).unwrap();
            assert_eq!(f.requests, 200);
        }
    }
}
