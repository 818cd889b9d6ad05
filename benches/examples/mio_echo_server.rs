//! The size peer of `examples/echo_server.rs`: the same server on bare mio, to compare binary
//! sizes (`benches/size.sh`). Same arguments, same function:
//!
//! ```text
//! mio_echo_server [PORT [MAX_CONNS [IP]]]   # defaults: 7000, 1024, 127.0.0.1
//! ```
//!
//! * Accepts until `WouldBlock` (at most 128 per readiness); at `MAX_CONNS` it deregisters
//!   the listener, so new clients wait in the kernel's listen backlog, and registers it again
//!   when a connection ends. On `EMFILE` / `ENFILE` / `ENOBUFS` / `ENOMEM` it deregisters the
//!   listener and re-registers it after a back-off (100 ms doubling to 1 s), as ioloop's
//!   accept handler does.
//! * Slots (a 4 KiB buffer each) are allocated at start; nothing per connection or request.
//! * As ioloop's server: READABLE, then WRITABLE only while a short write left bytes to send
//!   (`reregister` when the interest changes, as ioloop's `update_handler`).

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const CAPACITY: usize = 1024;
const BUF: usize = 4096;
const LISTENER: Token = Token(usize::MAX - 1);
const ACCEPTS_PER_EVENT: usize = 128;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Conn {
    stream: TcpStream,
    start: usize,
    end: usize,
    /// Registered for WRITABLE (a backlog is waiting), not READABLE.
    writing: bool,
}

enum Next {
    Read,
    Write,
    Close,
}

#[path = "../../examples/shared/server_args.rs"]
mod server_args;
use server_args::server_args;

fn main() {
    let (addr, max) = server_args("mio_echo_server", CAPACITY);
    if let Err(e) = serve(addr, max) {
        eprintln!("mio_echo_server: {e}");
        std::process::exit(1);
    }
}

fn serve(addr: SocketAddr, max: usize) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut armed = true;
    let mut backoff = BACKOFF_MIN;
    let mut rearm_at: Option<Instant> = None;
    let mut bufs = vec![[0u8; BUF]; max];
    let mut conns: Vec<Option<Conn>> = (0..max).map(|_| None).collect();
    let mut free: Vec<usize> = (0..max).rev().collect();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = rearm_at.map(|t| t.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if rearm_at.is_some_and(|t| Instant::now() >= t) {
            rearm_at = None;
            if !free.is_empty() && !armed {
                poll.registry()
                    .register(&mut listener, LISTENER, Interest::READABLE)?;
                armed = true;
            }
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => {
                    for _ in 0..ACCEPTS_PER_EVENT {
                        let Some(&i) = free.last() else {
                            // Full: stop accepting until a connection ends.
                            poll.registry().deregister(&mut listener)?;
                            armed = false;
                            break;
                        };
                        let mut stream = match listener.accept() {
                            Ok((s, _)) => s,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                                ) =>
                            {
                                continue
                            }
                            Err(_) => {
                                // Out of fds or memory: back off instead of spinning.
                                poll.registry().deregister(&mut listener)?;
                                armed = false;
                                rearm_at = Some(Instant::now() + backoff);
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                                break;
                            }
                        };
                        backoff = BACKOFF_MIN;
                        let _ = stream.set_nodelay(true);
                        if poll
                            .registry()
                            .register(&mut stream, Token(i), Interest::READABLE)
                            .is_err()
                        {
                            continue; // dropping the stream closes it
                        }
                        free.pop();
                        conns[i] = Some(Conn {
                            stream,
                            start: 0,
                            end: 0,
                            writing: false,
                        });
                    }
                }
                Token(i) => {
                    let Some(c) = conns[i].as_mut() else {
                        continue;
                    };
                    let next = echo(c, &mut bufs[i]);
                    let (interest, writing) = match next {
                        Next::Read => (Interest::READABLE, false),
                        Next::Write => (Interest::WRITABLE, true),
                        Next::Close => {
                            if let Some(mut c) = conns[i].take() {
                                let _ = poll.registry().deregister(&mut c.stream);
                            }
                            free.push(i);
                            if !armed && rearm_at.is_none() {
                                poll.registry().register(
                                    &mut listener,
                                    LISTENER,
                                    Interest::READABLE,
                                )?;
                                armed = true;
                            }
                            continue;
                        }
                    };
                    if writing == c.writing {
                        continue;
                    }
                    c.writing = writing;
                    if poll
                        .registry()
                        .reregister(&mut c.stream, Token(i), interest)
                        .is_err()
                    {
                        conns[i] = None;
                        free.push(i);
                    }
                }
            }
        }
    }
}

fn echo(c: &mut Conn, buf: &mut [u8; BUF]) -> Next {
    let mut short = false;
    loop {
        while c.start < c.end {
            match c.stream.write(&buf[c.start..c.end]) {
                Ok(k) => c.start += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Write,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        if short {
            return Next::Read;
        }
        match c.stream.read(buf) {
            Ok(0) => return Next::Close,
            Ok(k) => {
                c.start = 0;
                c.end = k;
                short = k < BUF;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Read,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}
