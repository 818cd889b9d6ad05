//! A bounded soak: an echo server on the loop (callback style, `ioloop::accept`) on 127.0.0.1,
//! and client threads churning connections against it for `--duration SECS` (default 10):
//!
//! - most connect, echo 1–20 messages of 1–200 bytes, check every byte, and close;
//! - some vanish mid-message (half a message, then close; half of those with a reset);
//! - some never read: they write up to 1 MiB while the echo piles up unread, until the server
//!   stops reading from them (backpressure) and they give up and close.
//!
//! Every second it prints the process's fd count (`/proc/self/fd`) and resident memory
//! (`VmRSS`), and at the end a verdict: `fd growth: 0, rss growth: X KiB`. It exits non-zero
//! if fds grew or an echo came back wrong.
//!
//! ```sh
//! cargo run --release --example soak -- --duration 600   # the 10-minute run in the README
//! cargo run --release --example soak -- --duration 10    # CI
//! ```
//!
//! Loopback only; every client operation has a timeout, and the run stops by itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use ioloop::accept::add_accept_handler;
use ioloop::{Interest, Periodic, Readiness, Remote};

type Lp = ioloop::EventLoop;

static REMOTE: Remote<Lp, 8> = Remote::new();

/// Counters, each a `static AtomicU64` starting at 0.
macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        $(static $name: AtomicU64 = AtomicU64::new(0);)*
    };
}

// Written on the loop thread (atomics: no allocation there), read by the reporter.
counters!(
    ACCEPTED,
    REFUSED,
    SERVER_CLOSED,
    BACKPRESSURE,
    ITERATIONS,
    OPEN_CONNS
);

// Written by the clients.
counters!(
    ECHO_CONNS,
    MESSAGES,
    VANISHED,
    NEVER_READ,
    CLIENT_ERRORS,
    MISMATCHES
);

static STOP: AtomicBool = AtomicBool::new(false);

/// Drop a connection (the loop owns and closes it); never a handler error.
fn close(lp: &mut Lp, fd: i32) -> ioloop::HandlerResult {
    lp.remove_handler(fd);
    SERVER_CLOSED.fetch_add(1, Relaxed);
    Ok(())
}

/// Echo without a buffer of our own: peek at what arrived, send what the kernel takes, then
/// consume exactly that. A peer that does not read fills our send buffer: we stop reading it
/// (WRITE interest only) until it drains, so nothing piles up in the server.
fn echo(lp: &mut Lp, conn: BorrowedFd<'_>, ready: Readiness) -> ioloop::HandlerResult {
    use rustix::net::{recv, send, RecvFlags, SendFlags};
    let fd = conn.as_raw_fd();
    if ready.contains(Readiness::WRITE) && lp.update_handler(fd, Interest::READ).is_err() {
        return close(lp, fd);
    }
    let mut buf = [0u8; 4096];
    let n = match recv(conn, &mut buf, RecvFlags::PEEK) {
        Ok((0, _)) => return close(lp, fd),
        Ok((n, _)) => n,
        Err(rustix::io::Errno::AGAIN) => return Ok(()),
        Err(_) => return close(lp, fd),
    };
    let sent = match send(conn, &buf[..n], SendFlags::NOSIGNAL) {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => 0,
        Err(_) => return close(lp, fd),
    };
    if sent > 0 && recv(conn, &mut buf[..sent], RecvFlags::empty()).is_err() {
        return close(lp, fd);
    }
    if sent < n {
        BACKPRESSURE.fetch_add(1, Relaxed);
        if lp.update_handler(fd, Interest::WRITE).is_err() {
            return close(lp, fd);
        }
    }
    Ok(())
}

fn serve(lp: &mut Lp, conn: OwnedFd, _peer: Option<SocketAddr>) {
    ACCEPTED.fetch_add(1, Relaxed);
    // A small send buffer bounds the kernel memory a peer that never reads can pin (and makes
    // the backpressure path run within the soak's bounded writes).
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&conn, 16 * 1024);
    if let Err(refused) = lp.add_owned_handler(conn, Interest::READ, echo) {
        // The handler table is full: dropping the fd closes the connection.
        drop(refused.into_inner());
        REFUSED.fetch_add(1, Relaxed);
    }
}

/// xorshift64*: deterministic per-thread choices, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn echo_client(addr: SocketAddr, rng: &mut Rng) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    let mut msg = [0u8; 200];
    let mut back = [0u8; 200];
    for _ in 0..1 + rng.below(20) {
        let len = 1 + rng.below(200) as usize;
        for b in &mut msg[..len] {
            *b = rng.below(256) as u8;
        }
        s.write_all(&msg[..len])?;
        s.read_exact(&mut back[..len])?;
        if back[..len] != msg[..len] {
            MISMATCHES.fetch_add(1, Relaxed);
        }
        MESSAGES.fetch_add(1, Relaxed);
    }
    ECHO_CONNS.fetch_add(1, Relaxed);
    Ok(())
}

fn vanishing_client(addr: SocketAddr, rng: &mut Rng) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    let half = [b'v'; 100];
    s.write_all(&half[..1 + rng.below(100) as usize])?;
    if rng.below(2) == 0 {
        // Linger 0: close sends a reset, as a crashed peer's kernel would.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our open socket with a valid, correctly sized value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    VANISHED.fetch_add(1, Relaxed);
    Ok(())
}

fn never_reading_client(addr: SocketAddr) -> std::io::Result<()> {
    use rustix::net::{socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
    // A small receive window, set before connecting: the echo fills it quickly.
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_recv_buffer_size(&fd, 4 * 1024)?;
    rustix::net::connect(&fd, &addr)?;
    let mut s = TcpStream::from(fd);
    s.set_write_timeout(Some(Duration::from_millis(100)))?;
    let chunk = [b'n'; 16 * 1024];
    let start = Instant::now();
    let mut written = 0;
    // Until both directions' buffers are full and the server stopped reading us.
    while written < 1 << 20 && start.elapsed() < Duration::from_secs(1) {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    NEVER_READ.fetch_add(1, Relaxed);
    Ok(())
}

fn client(addr: SocketAddr, seed: u64) {
    let mut rng = Rng(seed);
    while !STOP.load(Relaxed) {
        let r = match rng.below(20) {
            0..=13 => echo_client(addr, &mut rng),
            14..=16 => vanishing_client(addr, &mut rng),
            _ => never_reading_client(addr),
        };
        if r.is_err() {
            CLIENT_ERRORS.fetch_add(1, Relaxed);
        }
        // Churn, not a benchmark: leave the shared cores some room.
        thread::sleep(Duration::from_millis(5));
    }
}

fn fd_count() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64 - 1)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Args {
    duration: u64,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args {
        duration: 10,
        clients: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--duration", Some(v)) if v > 0 => a.duration = v,
            ("--clients", Some(v)) if v > 0 => a.clients = v as usize,
            _ => {
                eprintln!("usage: soak [--duration SECS] [--clients N]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let mut lp: Lp = Lp::new()?;
    let handle = lp.attach_remote(&REMOTE)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    add_accept_handler(&mut lp, listener, serve)?;
    lp.add_periodic(Periodic::every(Duration::from_millis(100)), |lp| {
        ITERATIONS.store(lp.counters().iterations, Relaxed);
        OPEN_CONNS.store(lp.handler_count() as u64 - 1, Relaxed);
    })?;
    let fds_start = fd_count();
    println!(
        "soak: echo server on {addr}, {} client threads, {} s",
        args.clients, args.duration
    );

    let reporter = thread::spawn(move || {
        println!(
            "{:>5} {:>5} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>10}",
            "t(s)",
            "fds",
            "rss(KiB)",
            "accepted",
            "echoed",
            "messages",
            "vanished",
            "no-read",
            "backpres",
            "errors",
            "iterations"
        );
        let start = Instant::now();
        let mut rss = Vec::new();
        for t in 1..=args.duration {
            let next = start + Duration::from_secs(t);
            thread::sleep(next.saturating_duration_since(Instant::now()));
            rss.push(rss_kib());
            println!(
                "{:>5} {:>5} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>10}",
                t,
                fd_count(),
                rss[rss.len() - 1],
                ACCEPTED.load(Relaxed),
                ECHO_CONNS.load(Relaxed),
                MESSAGES.load(Relaxed),
                VANISHED.load(Relaxed),
                NEVER_READ.load(Relaxed),
                BACKPRESSURE.load(Relaxed),
                CLIENT_ERRORS.load(Relaxed),
                ITERATIONS.load(Relaxed),
            );
        }
        STOP.store(true, Relaxed);
        rss
    });
    let clients: Vec<_> = (0..args.clients)
        .map(|i| thread::spawn(move || client(addr, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1))))
        .collect();
    // Stops the loop once the clients are gone and the server has closed its side of all.
    let stopper = thread::spawn(move || {
        while !STOP.load(Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
        for c in clients {
            let _ = c.join();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while OPEN_CONNS.load(Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = handle.stop();
    });

    lp.run()?;
    stopper.join().map_err(|_| "stopper panicked")?;
    let rss = reporter.join().map_err(|_| "reporter panicked")?;
    let fds_end = fd_count();
    let fd_growth = fds_end as i64 - fds_start as i64;
    // From the first sample (threads and buffers warmed up) to the last.
    let rss_growth =
        rss.last().copied().unwrap_or(0) as i64 - rss.first().copied().unwrap_or(0) as i64;
    let c = lp.counters();
    println!(
        "server: {} accepted, {} refused (table full), {} closed, {} backpressure stalls, {} open \
         at the end; loop: {} iterations, {} handler errors",
        ACCEPTED.load(Relaxed),
        REFUSED.load(Relaxed),
        SERVER_CLOSED.load(Relaxed),
        BACKPRESSURE.load(Relaxed),
        lp.handler_count() - 1,
        c.iterations,
        c.handler_errors
    );
    println!(
        "clients: {} echo connections ({} messages, {} wrong), {} vanished, {} never read, {} \
         errors",
        ECHO_CONNS.load(Relaxed),
        MESSAGES.load(Relaxed),
        MISMATCHES.load(Relaxed),
        VANISHED.load(Relaxed),
        NEVER_READ.load(Relaxed),
        CLIENT_ERRORS.load(Relaxed)
    );
    println!("fd growth: {fd_growth}, rss growth: {rss_growth} KiB");
    if fd_growth > 0 || MISMATCHES.load(Relaxed) > 0 {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
    Ok(())
}
