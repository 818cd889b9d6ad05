//! Capacity under attack: a loop whose handler table holds 16 handlers (the listener and 15
//! connections) is flooded with 200 connections from client threads while its 15 connections
//! keep talking. Every connection beyond capacity is refused cleanly (accepted, closed and
//! counted: the client sees EOF or a reset, never a hang), no fd leaks, the 15 keep echoing,
//! and the loop thread makes no heap allocation while it happens.
//!
//! Linux only: it counts open fds in `/proc/self/fd`.
#![cfg(target_os = "linux")]

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ioloop::accept::add_accept_handler;
use ioloop::{Error, HandlerResult, Interest, Resource};
use loop_core::EventLoop;

#[path = "common/alloc_counter.rs"]
mod alloc_counter;
use alloc_counter::allocations_in;

/// The listener and 15 connections.
const HANDLERS: usize = 16;
const RESIDENTS: usize = HANDLERS - 1;
const FLOOD: usize = 200;
const FLOOD_THREADS: usize = 8;

type Lp = EventLoop<ioloop::linux::Epoll, HANDLERS, 16, 16>;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Echo what arrives; drop the connection on EOF or error. Nothing allocated: a stack buffer.
fn echo(lp: &mut Lp, conn: BorrowedFd<'_>, _: ioloop::Readiness) -> HandlerResult {
    let mut buf = [0u8; 512];
    match rustix::io::read(conn, &mut buf) {
        Ok(0) => {
            lp.remove_handler(conn);
        }
        Ok(n) => {
            // Small messages, one in flight per connection: the send buffer never fills.
            if rustix::net::send(conn, &buf[..n], rustix::net::SendFlags::NOSIGNAL).is_err() {
                lp.remove_handler(conn);
            }
        }
        Err(rustix::io::Errno::AGAIN) => {}
        Err(_) => {
            lp.remove_handler(conn);
        }
    }
    Ok(())
}

/// One round trip on each resident connection; false if any failed.
fn echo_round(residents: &mut [TcpStream], round: usize) -> bool {
    residents.iter_mut().enumerate().all(|(i, s)| {
        let msg = format!("round {round} conn {i}");
        let mut back = vec![0u8; msg.len()];
        s.write_all(msg.as_bytes()).is_ok()
            && s.read_exact(&mut back).is_ok()
            && back == msg.as_bytes()
    })
}

#[derive(Default)]
struct FloodOutcome {
    refused: AtomicUsize,
    echoed: AtomicUsize,
    hung: AtomicUsize,
}

/// Connect, send, and see what comes back: EOF or a reset is a clean refusal.
fn flood_client(addr: SocketAddr, outcome: &FloodOutcome) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"let me in");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => outcome.refused.fetch_add(1, Ordering::Relaxed),
        Ok(_) => outcome.echoed.fetch_add(1, Ordering::Relaxed),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            outcome.refused.fetch_add(1, Ordering::Relaxed)
        }
        Err(_) => outcome.hung.fetch_add(1, Ordering::Relaxed),
    };
}

#[test]
fn a_flood_beyond_the_handler_table_is_refused_cleanly_while_residents_keep_echoing() {
    let mut lp: Lp = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // std listens with a backlog of 128: let the whole flood queue without SYN retries.
    rustix::net::listen(&listener, 512).unwrap();
    let addr = listener.local_addr().unwrap();
    let refusals = Rc::new(Cell::new(0usize));
    let accepted = Rc::new(Cell::new(0usize));
    let (r, a) = (refusals.clone(), accepted.clone());
    add_accept_handler(&mut lp, listener, move |lp, conn, _| {
        a.set(a.get() + 1);
        if let Err(refused) = lp.add_owned_handler(conn, Interest::READ, echo) {
            assert_eq!(
                refused.error,
                Error::Full {
                    what: Resource::Handlers
                }
            );
            // Dropping the handed-back fd closes the connection: the refusal.
            drop(refused.into_inner());
            r.set(r.get() + 1);
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    let baseline = fd_count();

    // Fill the table with residents.
    let mut residents: Vec<TcpStream> = (0..RESIDENTS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for s in &residents {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    for _ in 0..500 {
        if lp.handler_count() == HANDLERS {
            break;
        }
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(lp.handler_count(), HANDLERS);
    assert_eq!(refusals.get(), 0);

    let outcome = Arc::new(FloodOutcome::default());
    let flood_done = Arc::new(AtomicUsize::new(0));
    let chatter_done = Arc::new(AtomicBool::new(false));
    let max_fds = Arc::new(AtomicUsize::new(0));

    // The residents talk throughout the flood, and once more after it.
    let chatter = {
        let (flood_done, chatter_done) = (flood_done.clone(), chatter_done.clone());
        thread::spawn(move || {
            let mut rounds = 0;
            let mut ok = true;
            while ok && flood_done.load(Ordering::Acquire) < FLOOD_THREADS {
                ok = echo_round(&mut residents, rounds);
                rounds += 1;
            }
            ok = ok && echo_round(&mut residents, rounds);
            chatter_done.store(true, Ordering::Release);
            (ok, rounds + 1, residents)
        })
    };
    let sampler = {
        let (chatter_done, max_fds) = (chatter_done.clone(), max_fds.clone());
        thread::spawn(move || {
            while !chatter_done.load(Ordering::Acquire) {
                max_fds.fetch_max(fd_count(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let flooders: Vec<_> = (0..FLOOD_THREADS)
        .map(|_| {
            let (outcome, flood_done) = (outcome.clone(), flood_done.clone());
            thread::spawn(move || {
                for _ in 0..FLOOD / FLOOD_THREADS {
                    flood_client(addr, &outcome);
                }
                flood_done.fetch_add(1, Ordering::Release);
            })
        })
        .collect();

    // The loop thread, counting its heap allocations, until the clients are done (bounded:
    // every client read has a 10 s timeout).
    let ((), allocations) = allocations_in(|| {
        while !chatter_done.load(Ordering::Acquire) {
            lp.run_once(Some(Duration::from_millis(10))).unwrap();
        }
    });

    for f in flooders {
        f.join().unwrap();
    }
    let (residents_ok, rounds, residents) = chatter.join().unwrap();
    sampler.join().unwrap();

    assert_eq!(outcome.hung.load(Ordering::Relaxed), 0, "no client hung");
    assert_eq!(
        outcome.echoed.load(Ordering::Relaxed),
        0,
        "the table was full"
    );
    assert_eq!(outcome.refused.load(Ordering::Relaxed), FLOOD);
    assert_eq!(refusals.get(), FLOOD, "every refusal counted");
    assert_eq!(accepted.get(), RESIDENTS + FLOOD);
    assert!(
        residents_ok,
        "residents echoed through {rounds} rounds during the flood"
    );
    assert_eq!(lp.handler_count(), HANDLERS);
    assert_eq!(allocations, 0, "the loop thread allocated during the flood");
    // Each resident is two fds (both ends live in this process); refused ones left nothing.
    assert_eq!(fd_count(), baseline + 2 * RESIDENTS, "no fd leaked");
    // Bounded during the flood: residents, one connection per flood thread (both ends), the
    // sampler's own directory fd.
    let bound = baseline + 2 * RESIDENTS + 2 * FLOOD_THREADS + 1;
    let max = max_fds.load(Ordering::Relaxed);
    assert!(max <= bound, "fd count peaked at {max}, bound {bound}");
    println!(
        "flood: {FLOOD} connections refused cleanly (table of {HANDLERS} full), {rounds} \
         resident echo rounds, fd peak {max} (baseline {baseline}), 0 leaked, 0 allocations"
    );

    // Closing the residents frees their slots.
    drop(residents);
    for _ in 0..500 {
        if lp.handler_count() == 1 {
            break;
        }
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(lp.handler_count(), 1, "only the listener is left");
    assert_eq!(fd_count(), baseline);
}
