//! mio: `Poll` + `Events` + `mio::net`, the hand-rolled loop of mio's own `tcp_server`
//! example.
//!
//! * The listener (`TcpListener::from_std`) is registered READABLE; on an event it accepts
//!   until `WouldBlock`, sets `TCP_NODELAY` and registers the stream READABLE | WRITABLE once
//!   (mio is edge-triggered: no re-registration per request) with its slot index as token.
//! * A connection event: flush any backlog, then `read` into the slot's buffer and `write` it
//!   back, looping while reads fill the buffer. A short read ends the turn: the socket is
//!   drained for now, and data arriving later raises a new edge (tokio relies on the same
//!   rule), which saves the `read` → `WouldBlock` that mio's example makes on every event. A
//!   short write keeps the rest and waits for the WRITABLE edge, reading nothing meanwhile.
//! * Slots (streams and buffers) are allocated when the server starts, as in the ioloop
//!   server; `Events` holds 1024 events, allocated once.
//! * Stopping: a flag plus a `mio::Waker` (an eventfd), sent by the bench thread.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::{ServerCfg, ServerHandle, BUF};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

struct Conn {
    stream: TcpStream,
    /// Backlog still to be written: `buf[start..end]`.
    start: usize,
    end: usize,
}

/// Starts the server thread.
pub fn spawn(listener: StdListener, cfg: ServerCfg) -> io::Result<ServerHandle> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("echo-mio".into())
        .spawn(move || {
            cfg.enter_thread();
            serve(poll, listener, cfg, &flag)
        })?;
    Ok(ServerHandle {
        stop: Box::new(move || {
            stop.store(true, Ordering::Release);
            let _ = waker.wake();
        }),
        thread,
    })
}

fn serve(
    mut poll: Poll,
    listener: StdListener,
    cfg: ServerCfg,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let slots = cfg.max_conns;
    let mut bufs = vec![0u8; slots * BUF];
    let mut conns: Vec<Option<Conn>> = (0..slots).map(|_| None).collect();
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
                LISTENER => loop {
                    let mut stream = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                        Err(e) => return Err(e),
                    };
                    let _ = stream.set_nodelay(true);
                    let Some(i) = free.pop() else {
                        continue; // no slot: dropping the stream closes it
                    };
                    poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[i] = Some(Conn {
                        stream,
                        start: 0,
                        end: 0,
                    });
                },
                Token(i) => {
                    let Some(c) = conns[i].as_mut() else {
                        continue;
                    };
                    let buf = &mut bufs[i * BUF..(i + 1) * BUF];
                    if !echo(c, buf) {
                        if let Some(mut c) = conns[i].take() {
                            let _ = poll.registry().deregister(&mut c.stream);
                        }
                        free.push(i);
                    }
                }
            }
        }
    }
}

/// Serves one readiness edge; `false` when the connection is finished.
fn echo(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        while c.start < c.end {
            match c.stream.write(&buf[c.start..c.end]) {
                Ok(k) => c.start += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        c.start = 0;
        c.end = 0;
        let k = match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        c.end = k;
        // The loop's top writes it back; a short read then ends the turn.
        while c.start < c.end {
            match c.stream.write(&buf[c.start..c.end]) {
                Ok(w) => c.start += w,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        c.start = 0;
        c.end = 0;
        if k < buf.len() {
            return true;
        }
    }
}
