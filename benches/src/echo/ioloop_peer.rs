//! ioloop: callback style, as a Tornado `IOStream`-less echo server is written.
//!
//! * The listening socket is handed to the loop (`add_owned_handler`, READ). Its handler
//!   accepts until `EAGAIN` (`accept4` non-blocking + close-on-exec), sets `TCP_NODELAY`, takes
//!   a free connection slot and hands the socket to the loop with its own READ handler.
//! * A connection's handler does one `recv` into the slot's buffer and one `send` of what it
//!   read (level-triggered: if more is queued the loop calls again). If the send is short, the
//!   rest is kept in the slot and the handler switches the fd to WRITE interest
//!   (`update_handler`), so it is not read until the backlog is flushed; then back to READ.
//!   `recv` returning 0 or a hard error removes the handler, which closes the fd.
//! * The server state (all buffers, one per possible connection, and the free list) is
//!   allocated once when the server starts; each handler closure captures an `Rc` of it and
//!   its slot index (16 of the 56 inline bytes). After start-up nothing is allocated: not per
//!   connection, not per request.
//! * The loop runs `run_once(None)` until a stop flag is set; stopping is the flag plus the
//!   poller's notifier (ioloop's cross-thread wake), sent by the bench thread.

use std::cell::RefCell;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use loop_core::{Errno, EventLoop, HandlerError, HandlerResult, Interest, Notify, Poller, RawFd};
use loop_linux::Epoll;
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use super::{ServerCfg, ServerHandle, BUF};
use crate::sys::io_err;

/// Handler capacity: the listener and up to 2047 connections.
const H: usize = 2048;
/// No timers, no callbacks.
type Lp = EventLoop<Epoll, H, 4, 4>;

/// A connection slot: a range of its buffer still to be sent.
#[derive(Clone, Copy, Default)]
struct Slot {
    start: usize,
    end: usize,
}

/// Everything the handlers share, allocated once.
struct State {
    /// `BUF` bytes per slot.
    bufs: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// Starts the server thread.
pub fn spawn(listener: TcpListener, cfg: ServerCfg) -> io::Result<ServerHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel(1);
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("echo-ioloop".into())
        .spawn(move || {
            cfg.enter_thread();
            let mut lp = match Lp::new_boxed() {
                Ok(lp) => lp,
                Err(e) => {
                    let _ = tx.send(Err(io_err(e)));
                    return Ok(());
                }
            };
            let notifier = lp
                .poller()
                .notifier()
                .try_clone()
                .map_err(|e| io_err(e.into()));
            let failed = notifier.is_err();
            let _ = tx.send(notifier);
            if failed {
                return Ok(());
            }
            serve(&mut lp, listener, cfg, &flag)
        })?;
    let notifier = rx
        .recv()
        .map_err(|_| io::Error::other("server thread died"))??;
    Ok(ServerHandle {
        stop: Box::new(move || {
            stop.store(true, Ordering::Release);
            let _ = notifier.notify();
        }),
        thread,
    })
}

fn serve(lp: &mut Lp, listener: TcpListener, cfg: ServerCfg, stop: &AtomicBool) -> io::Result<()> {
    let slots = cfg.max_conns.min(H - 1);
    let st = Rc::new(RefCell::new(State {
        bufs: vec![0; slots * BUF],
        slots: vec![Slot::default(); slots],
        free: (0..slots).rev().collect(),
    }));
    let fd = OwnedFd::from(listener);
    lp.add_owned_handler(fd, Interest::READ, move |lp: &mut Lp, lfd, _| {
        on_accept(lp, lfd, &st)
    })
    .map_err(|r| io_err(r.error))?;
    while !stop.load(Ordering::Acquire) {
        lp.run_once(None).map_err(io_err)?;
    }
    // Dropping the loop closes the listener and every connection (all owned by the loop).
    Ok(())
}

/// An OS error for the loop's error hook.
fn os(e: rustix::io::Errno) -> HandlerError {
    HandlerError::Os(Errno(e.raw_os_error()))
}

fn on_accept(lp: &mut Lp, listener: BorrowedFd<'_>, st: &Rc<RefCell<State>>) -> HandlerResult {
    loop {
        let sock = match rustix::net::accept_with(
            listener,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        ) {
            Ok(s) => s,
            Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => return Err(os(e)),
        };
        let _ = rustix::net::sockopt::set_tcp_nodelay(&sock, true);
        let Some(i) = st.borrow_mut().free.pop() else {
            continue; // no slot: dropping the socket closes the connection
        };
        let conn_state = st.clone();
        let handler =
            move |lp: &mut Lp, fd: BorrowedFd<'_>, _ready| on_conn(lp, fd, &conn_state, i);
        if let Err(refused) = lp.add_owned_handler(sock, Interest::READ, handler) {
            drop(refused.value); // closes the socket
            st.borrow_mut().free.push(i);
        }
    }
}

fn on_conn(lp: &mut Lp, sock: BorrowedFd<'_>, st: &RefCell<State>, i: usize) -> HandlerResult {
    let fd = sock.as_raw_fd();
    let mut guard = st.borrow_mut();
    let State { bufs, slots, free } = &mut *guard;
    let buf = &mut bufs[i * BUF..(i + 1) * BUF];
    let slot = &mut slots[i];

    if slot.start < slot.end {
        // Flushing (WRITE interest): the handler is only called when writable or on error.
        match rustix::net::send(sock, &buf[slot.start..slot.end], SendFlags::NOSIGNAL) {
            Ok(k) => slot.start += k,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(()),
            Err(_) => return close(lp, fd, slot, free, i),
        }
        if slot.start == slot.end {
            *slot = Slot::default();
            lp.update_handler(fd, Interest::READ)
                .map_err(|_| HandlerError::Other("update_handler(READ) failed"))?;
        }
        return Ok(());
    }

    let k = match rustix::net::recv(sock, &mut *buf, RecvFlags::empty()) {
        Ok((0, _)) => return close(lp, fd, slot, free, i),
        Ok((k, _)) => k,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(()),
        Err(_) => return close(lp, fd, slot, free, i),
    };
    let sent = match rustix::net::send(sock, &buf[..k], SendFlags::NOSIGNAL) {
        Ok(w) => w,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => 0,
        Err(_) => return close(lp, fd, slot, free, i),
    };
    if sent < k {
        *slot = Slot {
            start: sent,
            end: k,
        };
        lp.update_handler(fd, Interest::WRITE)
            .map_err(|_| HandlerError::Other("update_handler(WRITE) failed"))?;
    }
    Ok(())
}

/// Removes the handler (the loop closes the socket) and frees the slot.
fn close(
    lp: &mut Lp,
    fd: RawFd,
    slot: &mut Slot,
    free: &mut Vec<usize>,
    i: usize,
) -> HandlerResult {
    lp.remove_handler(fd);
    *slot = Slot::default();
    free.push(i);
    Ok(())
}
