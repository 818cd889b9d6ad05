//! ioloop's side-by-side benchmarks (issue 6): one command runs ioloop and its peers on the
//! same workloads, in the same process, and prints one table per workload.
//!
//! ```text
//! cargo run --release -p ioloop-bench -- [--quick] [--only chain,timers,...] [--json out.json] [--plots DIR]
//! ```
//!
//! Layout: one module per workload (`chain`, `timers`, `callbacks`, `wake`, `echo`,
//! `precision`, `footprint`), one file per peer inside it, each peer a plain function
//! `fn(&Case) -> io::Result<Samples>` listed in the workload's `peers()`. Adding a peer is one
//! file and one line. `plots.rs` draws chain.svg and timers.svg from a run's tables.

mod alloc_count;
mod callbacks;
mod chain;
mod echo;
mod footprint;
mod harness;
mod plots;
mod precision;
mod sys;
mod timers;
mod valgrind;
mod wake;

/// Counts heap allocations for the footprint workload; off (one relaxed load) otherwise.
#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use harness::{json_rows, json_str, Report};

/// Runs one workload (`true`: quick mode) and returns its table.
type Runner = fn(bool) -> Report;

/// The workloads, in run order: `--only` name and runner.
const WORKLOADS: &[(&str, Runner)] = &[
    ("chain", |q| chain::run(q, &chain::peers())),
    ("timers", |q| {
        let mut r = timers::run(q, &timers::peers());
        r.anchor = Some(|_| "libev");
        r
    }),
    ("callbacks", |q| callbacks::run(q, &callbacks::peers())),
    ("wake", |q| {
        let mut r = wake::run(q, &wake::peers());
        r.anchor = Some(|_| "eventfd+epoll (floor)");
        r
    }),
    ("xput", |q| {
        wake::throughput::run(q, &wake::throughput::peers())
    }),
    ("echo", |q| {
        let mut r = echo::run(q, &echo::peers());
        r.anchor = Some(|_| "mio");
        r
    }),
    ("precision", |q| precision::run(q, &precision::peers())),
    ("footprint", footprint::run),
    // Instruction counts of the timer phases under callgrind (valgrind must be installed).
    ("timers-callgrind", |q| {
        let mut r = timers::callgrind::run(q);
        r.anchor = Some(|_| "libev");
        r
    }),
    // Instructions per chain event under callgrind, ioloop vs the floor and libev.
    ("chain-callgrind", chain::callgrind::run),
];

struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    json: Option<String>,
    plots: Option<String>,
}

const USAGE: &str = "usage: ioloop-bench [--quick] [--only chain,timers,callbacks,wake,xput,echo,precision,footprint,timers-callgrind,chain-callgrind] [--json FILE] [--plots DIR]
  --quick   smoke test: small sizes, few iterations, under a minute; no thresholds
  --only    run only these workloads (comma-separated); timers-callgrind and chain-callgrind
            (instructions per timer / per chain event under valgrind's callgrind) run only
            when named here
  --json    also write every row (all percentiles, ratios) to FILE
  --plots   also draw DIR/chain.svg and DIR/timers.svg from this run's tables";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: None,
        json: None,
        plots: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--only" => {
                let v = it.next().ok_or("--only needs a list")?;
                let names: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
                for n in &names {
                    if !WORKLOADS.iter().any(|(w, _)| w == n) {
                        return Err(format!("unknown workload {n:?}"));
                    }
                }
                args.only = Some(names);
            }
            "--json" => args.json = Some(it.next().ok_or("--json needs a file name")?),
            "--plots" => args.plots = Some(it.next().ok_or("--plots needs a directory")?),
            // `cargo bench` passes this to every bench target; accept and ignore it.
            "--bench" => {}
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    // The footprint workload measures each server in a fresh child process (this binary).
    let argv: Vec<String> = std::env::args().collect();
    // The callgrind workloads run each peer in a child under valgrind.
    if let Some(flag) = argv.get(1) {
        let args = &argv[2..];
        let child = match flag.as_str() {
            "--timers-callgrind-child" => {
                Some(timers::callgrind::child_main(args).map_err(|e| e.to_string()))
            }
            "--chain-callgrind-child" => {
                Some(chain::callgrind::child_main(args).map_err(|e| e.to_string()))
            }
            "--footprint-child" => Some(footprint::child_main(args)),
            _ => None,
        };
        match child {
            Some(Ok(())) => return ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            None => {}
        }
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; numbers are meaningless without --release");
    }

    let info = sys::machine_info();
    let mode = if args.quick { "quick" } else { "full" };
    println!("ioloop-bench ({mode} mode)");
    for (k, v) in &info {
        println!("  {k:<8} {v}");
    }
    println!("  {:<8} {}", "ioloop", ioloop_status());
    println!("  {:<8} {}", "libev", timers::libev_peer::version());
    println!();

    let started = Instant::now();
    let mut reports = Vec::new();
    for (name, run) in WORKLOADS {
        if let Some(only) = &args.only {
            if !only.iter().any(|o| o == name) {
                continue;
            }
        } else if name.ends_with("-callgrind") {
            continue; // only on request: it needs valgrind
        }
        let t = Instant::now();
        let report = run(args.quick);
        print!("{}", report.render());
        println!("  ({name}: {:.1} s)\n", t.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
        reports.push(report);
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    // The machine is shared: the load at the end says how quiet the run was.
    println!("loadavg at end: {}", sys::loadavg());

    if let Some(path) = &args.json {
        let mut rows = Vec::new();
        for r in &reports {
            json_rows(r, &mut rows);
        }
        let machine: Vec<String> = info
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        let notes: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.notes
                    .iter()
                    .map(move |n| json_str(&format!("{}: {n}", r.name)))
            })
            .collect();
        let body = format!(
            "{{\"mode\":{},\"ioloop\":{},\"machine\":{{{}}},\"loadavg_end\":{},\"notes\":[{}],\"results\":[\n{}\n]}}\n",
            json_str(mode),
            json_str(ioloop_status()),
            machine.join(","),
            json_str(&sys::loadavg()),
            notes.join(","),
            rows.join(",\n")
        );
        if let Err(e) = std::fs::write(path, body) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        println!("wrote {path}");
    }
    if let Some(dir) = &args.plots {
        for line in plots::write_all(&reports, std::path::Path::new(dir)) {
            println!("{line}");
        }
    }
    ExitCode::SUCCESS
}

/// Whether the ioloop peer is part of this build (the ratio column's reference).
fn ioloop_status() -> &'static str {
    "loop_core::EventLoop over loop_linux::Epoll (this tree): ratios are to each case's anchor where the table names one ([anchor]), else to ioloop"
}
