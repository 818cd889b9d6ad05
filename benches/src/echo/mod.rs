//! Workload 6: a TCP echo server over loopback, request/response.
//!
//! Each peer is an echo server on 127.0.0.1 (an ephemeral port), running alone on a server
//! thread; one load generator ([`client`]) on its own thread drives every server the same way:
//! `C` connections, each sending a message, waiting for the full echo (every byte checked) and
//! sending the next. Reported: completed requests per second (median of the rounds, spread
//! over the rounds) and the per-request latency percentiles, pooled over the rounds.
//!
//! What is the same for every server, so that only the loop differs:
//! * the listening socket: made here ([`listener`]): non-blocking, `SO_REUSEADDR`,
//!   backlog 1024, handed to the server as a `std::net::TcpListener`;
//! * accepted sockets get `TCP_NODELAY` (request/response; without it a partial echo can wait
//!   for a delayed ACK);
//! * one [`BUF`]-byte buffer per connection, larger than the largest message, so that a whole
//!   request is one `recv` (a short read, after which the edge-triggered servers stop reading
//!   until the next edge, as tokio itself does) and its echo one `send`;
//! * when the send buffer is full the server stops reading that connection until the backlog
//!   is flushed (the message sizes here never fill it, but every server handles it).
//!
//! Each round starts a fresh server and a fresh client (connect, warm-up phase, measured
//! phase, disconnect, stop), peers interleaved round by round as in every workload. Two cores:
//! the server thread is pinned to one and the client to the other, so numbers are "one core
//! serving", with the client's cost identical in every row.

pub mod client;
pub mod ioloop_peer;
pub mod mio_peer;
pub mod tokio_peer;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::harness::{num, run_rounds, Peer, Report, Role, Samples, Stats};
use crate::sys::{pin_to_cpu, raise_nofile_for_pairs, two_cpus};
use client::{Client, Phase};

/// Per-connection buffer of every server; larger than the largest message (4 KiB).
pub const BUF: usize = 8192;
/// The largest message the client sends.
pub const MAX_MSG: usize = 4096;

/// How a server is set up.
#[derive(Clone, Copy, Debug)]
pub struct ServerCfg {
    /// Connections the server must hold at once (it may preallocate for them).
    pub max_conns: usize,
    /// The [`crate::alloc_count`] session the server thread's allocations count in (0: none).
    pub alloc_session: u64,
    /// The CPU to pin the server thread to.
    pub cpu: Option<usize>,
}

impl ServerCfg {
    /// What every server thread does first: pin itself, join its counting session, publish
    /// its thread id (for [`server_cpu_ns`]).
    pub fn enter_thread(&self) {
        if let Some(cpu) = self.cpu {
            pin_to_cpu(cpu);
        }
        crate::alloc_count::track_this_thread(self.alloc_session);
        SERVER_TID.store(
            rustix::thread::gettid().as_raw_nonzero().get(),
            Ordering::Release,
        );
    }
}

/// The running server thread's id (one server runs at a time); 0 before one started.
static SERVER_TID: AtomicI32 = AtomicI32::new(0);

/// The CPU time (user + system) the server thread has used so far, in ns, from
/// `/proc/self/task/TID/schedstat` (its first field); `None` if unknown. The client reads it
/// around the measured phase: CPU per request does not depend on how busy the machine is,
/// where requests per second do.
fn server_cpu_ns() -> Option<u64> {
    let tid = SERVER_TID.load(Ordering::Acquire);
    if tid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The server thread's user and system CPU time so far, in clock ticks (`utime` and `stime`,
/// fields 14 and 15 of `/proc/self/task/TID/stat`); `None` if unknown. The kernel splits the
/// thread's exact run time between the two by tick sampling, so a split is only meaningful
/// summed over many rounds (see [`EchoSamples::user_ticks`]).
fn server_cpu_ticks() -> Option<(u64, u64)> {
    let tid = SERVER_TID.load(Ordering::Acquire);
    if tid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A running server: how to stop it, and its thread.
pub struct ServerHandle {
    /// Asks the server to stop (from any thread) and wakes it. Kept until the thread is joined:
    /// dropping a waker (closing its eventfd) before the server polled would take the pending
    /// wake off the server's epoll.
    pub stop: Box<dyn Fn() + Send>,
    /// The server thread; its result is the server's.
    pub thread: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// Stops the server and waits for its thread.
    pub fn shutdown(self) -> io::Result<()> {
        (self.stop)();
        let r = self
            .thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?;
        drop(self.stop);
        r
    }
}

/// Starts a server on `listener`.
pub type Spawn = fn(TcpListener, ServerCfg) -> io::Result<ServerHandle>;

/// A listening socket on 127.0.0.1, an ephemeral port: non-blocking, close-on-exec,
/// `SO_REUSEADDR`, backlog 1024 (mio's and tokio's default; std's `bind` would use 128).
pub fn listener() -> io::Result<(TcpListener, SocketAddr)> {
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    rustix::net::bind(&fd, &any)?;
    rustix::net::listen(&fd, 1024)?;
    let l = TcpListener::from(fd);
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// One echo case.
pub struct EchoCase {
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub msg: usize,
    /// Warm-up phase (same connections, not reported).
    pub warmup: Duration,
    /// Measured phase.
    pub time: Duration,
    /// Request bound of a phase (the client stops issuing at whichever bound comes first).
    pub max_requests: u64,
}

/// One round's throughput and its requests' latencies.
#[derive(Default)]
pub struct EchoSamples {
    /// Requests per second, one entry per round.
    pub rps: Vec<f64>,
    /// Latency per request in µs, pooled.
    pub lat_us: Vec<f64>,
    /// The server thread's CPU time per request in the measured phase, ns, one entry per
    /// round (where it could be read).
    pub cpu_ns_per_req: Vec<f64>,
    /// The server thread's user-space and system clock ticks in the measured phases, summed
    /// over the rounds: the share of the server's CPU spent outside the kernel, which bounds
    /// what a faster loop could gain (every server makes the same system calls).
    pub user_ticks: u64,
    /// See [`user_ticks`](Self::user_ticks).
    pub sys_ticks: u64,
}

impl Samples for EchoSamples {
    fn drop_warmup(&mut self, _k: usize) {
        // Every round has its own warm-up phase, inside the client.
    }

    fn append(&mut self, mut other: Self) {
        self.rps.append(&mut other.rps);
        self.lat_us.append(&mut other.lat_us);
        self.cpu_ns_per_req.append(&mut other.cpu_ns_per_req);
        self.user_ticks += other.user_ticks;
        self.sys_ticks += other.sys_ticks;
    }
}

/// What the client thread brings back from a round: its measured phase, the latencies, and
/// the server thread's CPU time (ns) and (user, system) ticks over that phase.
type ClientOutcome = (Phase, Vec<u32>, Option<u64>, Option<(u64, u64)>);

/// Runs one round of `case` against the server `spawn` starts.
///
/// With two CPUs, the server thread is pinned to one and the client to the other: left
/// floating, the scheduler sometimes puts both on one CPU (wake-affine) and a round's
/// throughput halves or doubles with the placement, not with the server.
pub fn drive(case: &EchoCase, spawn: Spawn) -> io::Result<EchoSamples> {
    let (listener, addr) = listener()?;
    let cpus = two_cpus();
    let server = spawn(
        listener,
        ServerCfg {
            max_conns: case.conns,
            alloc_session: 0,
            cpu: cpus.map(|c| c.0),
        },
    )?;
    let (conns, msg, warmup, time, max) = (
        case.conns,
        case.msg,
        case.warmup,
        case.time,
        case.max_requests,
    );
    let load = std::thread::Builder::new()
        .name("echo-client".into())
        .spawn(move || -> io::Result<ClientOutcome> {
            if let Some((_, cpu)) = cpus {
                pin_to_cpu(cpu);
            }
            let mut c = Client::new(conns, MAX_MSG, max as usize)?;
            c.connect(addr, conns)?;
            c.run(msg, max, warmup)?;
            let cpu_before = server_cpu_ns();
            let ticks_before = server_cpu_ticks();
            let phase = c.run(msg, max, time)?;
            let cpu = cpu_before
                .zip(server_cpu_ns())
                .map(|(a, b)| b.saturating_sub(a));
            let ticks = ticks_before
                .zip(server_cpu_ticks())
                .map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)));
            c.disconnect();
            Ok((phase, std::mem::take(&mut c.lat_ns), cpu, ticks))
        })?;
    let result = load
        .join()
        .map_err(|_| io::Error::other("client thread panicked"));
    let stopped = server.shutdown();
    let (phase, lat, cpu, ticks) = result??;
    let (user_ticks, sys_ticks) = ticks.unwrap_or((0, 0));
    stopped?;
    if phase.requests == 0 {
        return Err(io::Error::other("no request completed"));
    }
    Ok(EchoSamples {
        rps: vec![phase.rate()],
        lat_us: lat.iter().map(|&ns| f64::from(ns) / 1e3).collect(),
        cpu_ns_per_req: cpu
            .map(|ns| ns as f64 / phase.requests as f64)
            .into_iter()
            .collect(),
        user_ticks,
        sys_ticks,
    })
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<EchoCase, EchoSamples>> {
    vec![
        Peer::ioloop(|c| drive(c, ioloop_peer::spawn)),
        Peer::new("mio", Role::Peer, |c| drive(c, mio_peer::spawn)),
        Peer::new("tokio current_thread", Role::Peer, |c| {
            drive(c, tokio_peer::spawn)
        }),
    ]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<EchoCase, EchoSamples>]) -> Report {
    let (conns, sizes, rounds, warmup, time, max): (&[usize], &[usize], usize, u64, u64, u64) =
        if quick {
            (&[1, 100], &[64], 2, 50, 250, 200_000)
        } else {
            (&[1, 100, 1000], &[64, 4096], 15, 100, 300, 1_000_000)
        };
    let mut report = Report::new(
        "echo",
        format!(
            "TCP echo over loopback, closed loop (C connections, one request in flight each); {rounds} interleaved rounds x {time} ms (+{warmup} ms warm-up), at most {max} requests a round"
        ),
        "req/s",
    );
    report.better = "higher is better";
    // Client + server: two fds per connection, plus a few of each loop's own.
    let (limit, fit) = raise_nofile_for_pairs(conns.iter().max().copied().unwrap_or(0));
    for (c_want, c) in conns.iter().map(|&want| (want, want.min(fit))) {
        if c < c_want {
            let need = 2 * c_want + 64;
            report.notes.push(format!(
                "C={c_want} needs {need} fds but RLIMIT_NOFILE is {limit}: ran C={c}, the largest that fits"
            ));
        }
        for &msg in sizes {
            let case = EchoCase {
                conns: c,
                msg,
                warmup: Duration::from_millis(warmup),
                time: Duration::from_millis(time),
                max_requests: max,
            };
            let label = format!("C={c} {msg} B");
            for (p, r) in peers.iter().zip(run_rounds(peers, &case, rounds, 0, || {})) {
                match r {
                    Ok(mut s) => {
                        let lat = Stats::of(&mut s.lat_us);
                        let cpu = Stats::of(&mut s.cpu_ns_per_req);
                        report.push(&label, p.name, p.role, s.rps);
                        if let (Some(row), Some(l)) = (report.rows.last_mut(), lat) {
                            let ticks = s.user_ticks + s.sys_ticks;
                            let user = if ticks > 0 {
                                format!(
                                    " ({:.1}% in user space over {ticks} ticks)",
                                    100.0 * s.user_ticks as f64 / ticks as f64
                                )
                            } else {
                                String::new()
                            };
                            let cpu = cpu.map_or(String::new(), |c| {
                                format!("; server CPU {} ns/req{user}", num(c.p50))
                            });
                            row.note = Some(format!(
                                "latency p50 {} µs, p99 {} µs{cpu}",
                                num(l.p50),
                                num(l.p99)
                            ));
                        }
                    }
                    Err(e) => report.push_missing(&label, p.name, p.role, format!("error: {e}")),
                }
            }
        }
    }
    report.notes.push(
        "one server thread + one client thread (plain epoll, level-triggered, every echoed byte checked); TCP_NODELAY on both ends; 127.0.0.1 only".into(),
    );
    report.notes.push(format!(
        "every server: {BUF}-byte buffer per connection, one recv + one send per request; mio and tokio are edge-triggered and stop reading after a short read, ioloop is level-triggered"
    ));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every server echoes a few requests on two connections, byte for byte (the client checks
    /// every byte and fails on a mismatch), for both message sizes.
    #[test]
    fn every_server_echoes() {
        for msg in [64, MAX_MSG] {
            let case = EchoCase {
                conns: 2,
                msg,
                warmup: Duration::from_millis(5),
                time: Duration::from_secs(5),
                max_requests: 50,
            };
            for p in peers() {
                let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                assert_eq!(s.rps.len(), 1, "{}", p.name);
                assert!(s.rps[0] > 0.0, "{}", p.name);
                // The count bound ends the phase: exactly 50 requests, each with a latency.
                assert_eq!(s.lat_us.len(), 50, "{}", p.name);
            }
        }
    }

    /// The load generator never targets anything but loopback.
    #[test]
    fn client_refuses_non_loopback() {
        let mut c = Client::new(1, 64, 1).unwrap();
        let addr: SocketAddr = ([192, 0, 2, 1], 7).into();
        assert!(c.connect(addr, 1).is_err());
    }
}
