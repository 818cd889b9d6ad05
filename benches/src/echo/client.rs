//! The load generator shared by every echo server: one thread, plain non-blocking TCP sockets
//! and one level-triggered epoll (through rustix), no runtime.
//!
//! `C` connections each send a message, wait for the full echo (checking every byte), and send
//! the next one, closed-loop, so at most `C` requests are in flight. A phase is bounded by a
//! request count **and** a time: once either is reached no new request starts, the ones in
//! flight are finished, and the phase ends by itself (a server that stops answering fails the
//! phase after [`STALL`], it never hangs). Everything is allocated before a phase: the
//! latency buffer holds the count bound, so a phase allocates nothing (the footprint workload
//! relies on this to attribute every counted allocation to the server).
//!
//! Only loopback addresses are ever connected to: [`Client::connect`] refuses anything else.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::net::{RecvFlags, SendFlags};
use rustix::time::Timespec;

/// A phase that makes no progress for this long fails.
pub const STALL: Duration = Duration::from_secs(10);

/// One connection's request in flight.
struct Conn {
    sock: OwnedFd,
    /// Its epoll key (its index).
    key: u64,
    /// Bytes of the current message sent.
    sent: usize,
    /// Bytes of its echo received (and checked).
    recvd: usize,
    /// When the current request started.
    t0: Instant,
    /// Whether EPOLLOUT is registered (the send buffer was full).
    out: bool,
}

/// What one phase did.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Requests completed (echo received in full and checked).
    pub requests: u64,
    /// From the first send to the last completed echo.
    pub elapsed: Duration,
}

impl Phase {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The load generator.
pub struct Client {
    ep: OwnedFd,
    conns: Vec<Conn>,
    events: Vec<Event>,
    /// The message, up to the largest size; a request sends its first `len` bytes.
    msg: Vec<u8>,
    scratch: Vec<u8>,
    /// Per-request latency of the last phase, in ns.
    pub lat_ns: Vec<u32>,
}

impl Client {
    /// A client for up to `max_conns` connections, messages of up to `max_msg` bytes and phases
    /// of up to `max_requests` requests.
    pub fn new(max_conns: usize, max_msg: usize, max_requests: usize) -> io::Result<Client> {
        Ok(Client {
            ep: epoll::create(CreateFlags::CLOEXEC)?,
            conns: Vec::with_capacity(max_conns),
            events: vec![
                Event {
                    flags: EventFlags::empty(),
                    data: EventData::new_u64(0),
                };
                1024
            ],
            // A pattern that a shifted or truncated echo cannot match.
            msg: (0..max_msg).map(|i| (i * 31 % 251) as u8).collect(),
            scratch: vec![0; max_msg.max(1)],
            lat_ns: Vec::with_capacity(max_requests),
        })
    }

    /// Opens `n` more connections to `addr` (blocking connects, then non-blocking sockets with
    /// `TCP_NODELAY`, as request/response clients do).
    pub fn connect(&mut self, addr: SocketAddr, n: usize) -> io::Result<()> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::other(
                "the load generator only connects to loopback",
            ));
        }
        if self.conns.len() + n > self.conns.capacity() {
            return Err(io::Error::other(
                "more connections than the client was sized for",
            ));
        }
        for _ in 0..n {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let sock = OwnedFd::from(s);
            let key = self.conns.len() as u64;
            epoll::add(&self.ep, &sock, EventData::new_u64(key), EventFlags::IN)?;
            self.conns.push(Conn {
                sock,
                key,
                sent: 0,
                recvd: 0,
                t0: Instant::now(),
                out: false,
            });
        }
        Ok(())
    }

    /// Closes every connection.
    pub fn disconnect(&mut self) {
        self.conns.clear();
    }

    /// Runs one phase: `len`-byte messages until `max_requests` requests have started or
    /// `max_time` has passed, then finishes the ones in flight. Latencies go to `lat_ns`.
    pub fn run(&mut self, len: usize, max_requests: u64, max_time: Duration) -> io::Result<Phase> {
        if len == 0 || len > self.msg.len() {
            return Err(io::Error::other("message size out of range"));
        }
        if max_requests as usize > self.lat_ns.capacity() {
            return Err(io::Error::other(
                "more requests than the client was sized for",
            ));
        }
        self.lat_ns.clear();
        let Client {
            ep,
            conns,
            events,
            msg,
            scratch,
            lat_ns,
        } = self;
        let msg = &msg[..len];
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };

        let start = Instant::now();
        let stop_issuing = start + max_time;
        let mut last_progress = start;
        let mut last_done = start;
        let (mut issued, mut in_flight, mut done) = (0u64, 0usize, 0u64);
        for c in conns.iter_mut() {
            if issued == max_requests {
                break;
            }
            begin(ep, c, msg)?;
            issued += 1;
            in_flight += 1;
        }
        while in_flight > 0 {
            let n = match epoll::wait(&*ep, &mut events[..], Some(&tick)) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if last_progress.elapsed() > STALL {
                    return Err(io::Error::other(format!(
                        "server stalled: {in_flight} requests unanswered for {} s",
                        STALL.as_secs()
                    )));
                }
                continue;
            }
            for ev in &events[..n] {
                let (flags, i) = (ev.flags, ev.data.u64() as usize);
                let c = &mut conns[i];
                if c.sent < len && flags.intersects(EventFlags::OUT | EventFlags::ERR) {
                    push(ep, c, msg)?;
                }
                if !flags.intersects(EventFlags::IN | EventFlags::ERR | EventFlags::HUP) {
                    continue;
                }
                // One recv per report (level-triggered: more is reported again), never past
                // the end of this echo.
                let want = len - c.recvd;
                let k = match rustix::net::recv(&c.sock, &mut scratch[..want], RecvFlags::empty()) {
                    Ok((0, _)) => return Err(io::Error::other("server closed a connection")),
                    Ok((k, _)) => k,
                    Err(rustix::io::Errno::AGAIN) => continue,
                    Err(e) => return Err(e.into()),
                };
                if scratch[..k] != msg[c.recvd..c.recvd + k] {
                    return Err(io::Error::other("echo does not match the message"));
                }
                c.recvd += k;
                if c.recvd < len {
                    continue;
                }
                let now = Instant::now();
                let lat = (now - c.t0).as_nanos().min(u32::MAX as u128) as u32;
                lat_ns.push(lat);
                done += 1;
                in_flight -= 1;
                last_done = now;
                last_progress = now;
                if issued < max_requests && now < stop_issuing {
                    begin(ep, c, msg)?;
                    issued += 1;
                    in_flight += 1;
                }
            }
        }
        Ok(Phase {
            requests: done,
            elapsed: last_done - start,
        })
    }
}

/// Starts a request on `c`.
fn begin(ep: &OwnedFd, c: &mut Conn, msg: &[u8]) -> io::Result<()> {
    c.sent = 0;
    c.recvd = 0;
    c.t0 = Instant::now();
    push(ep, c, msg)
}

/// Sends what is left of the message; registers for EPOLLOUT while the send buffer is full.
fn push(ep: &OwnedFd, c: &mut Conn, msg: &[u8]) -> io::Result<()> {
    while c.sent < msg.len() {
        match rustix::net::send(&c.sock, &msg[c.sent..], SendFlags::NOSIGNAL) {
            Ok(k) => c.sent += k,
            Err(rustix::io::Errno::AGAIN) => {
                if !c.out {
                    let key = EventData::new_u64(c.key);
                    epoll::modify(ep, &c.sock, key, EventFlags::IN | EventFlags::OUT)?;
                    c.out = true;
                }
                return Ok(());
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if c.out {
        let key = EventData::new_u64(c.key);
        epoll::modify(ep, &c.sock, key, EventFlags::IN)?;
        c.out = false;
    }
    Ok(())
}
