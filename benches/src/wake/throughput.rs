//! Workload 4b: cross-thread throughput — one other thread hands the loop N trivial callbacks
//! as fast as it can; the loop runs them; reported in millions of callbacks per second.
//!
//! * ioloop: `LoopHandle::add_callback` into a 1024-slot lock-free ring (no allocation per
//!   callback); a full ring hands the callback back and the sender retries — nothing is lost.
//!   Wakes coalesce: only the first add after the loop last looked writes the eventfd.
//! * floor: what one writes by hand: a `Mutex<VecDeque<u32>>` plus an edge-triggered eventfd
//!   written only when the queue was empty; the loop drains the whole queue per wake.
//! * tokio: `Handle::spawn` of a trivial task from the other thread onto a current_thread
//!   runtime (one task allocation per callback).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

use loop_core::{EventLoop, Remote};
use loop_linux::Epoll;
use rustix::event::epoll::{self, Event, EventData, EventFlags};

use super::epoll_with_eventfd;
use crate::harness::{run_rounds, Peer, Report, Role};

/// One throughput case.
pub struct XputCase {
    /// Callbacks sent per call.
    pub callbacks: usize,
}

/// Millions of callbacks per second, one sample per call.
pub type XputSamples = Vec<f64>;

/// The rate of `n` callbacks since `t0` (taken now), once the sending thread has ended.
fn finish(n: usize, t0: Instant, sender: std::thread::JoinHandle<()>) -> io::Result<XputSamples> {
    let out = vec![n as f64 / t0.elapsed().as_secs_f64() / 1e6];
    sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))?;
    Ok(out)
}

type Lp = EventLoop<Epoll, 4, 4, 4>;

/// ioloop through `LoopHandle::add_callback`.
pub fn ioloop(case: &XputCase) -> io::Result<XputSamples> {
    let n = case.callbacks;
    let mut lp = Lp::new_boxed().map_err(crate::sys::io_err)?;
    let ring: &'static Remote<Lp, 1024> = Box::leak(Box::new(Remote::new()));
    let handle = lp.attach_remote(ring).map_err(crate::sys::io_err)?;
    let ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let t0 = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..n {
            let mut cb = move |lp: &mut Lp| {
                if ran.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    lp.stop();
                }
            };
            // A full ring hands the callback back: give the loop the CPU, then retry.
            while let Err(refused) = handle.add_callback(cb) {
                cb = refused.into_inner();
                std::thread::yield_now();
            }
        }
    });
    lp.run().map_err(crate::sys::io_err)?;
    finish(n, t0, sender)
}

/// The hand-written floor: a locked queue and an eventfd written on empty → non-empty.
pub fn floor(case: &XputCase) -> io::Result<XputSamples> {
    let n = case.callbacks;
    let (ep, efd) = epoll_with_eventfd()?;
    let queue: Arc<Mutex<VecDeque<u32>>> = Arc::new(Mutex::new(VecDeque::with_capacity(1024)));
    let t0 = Instant::now();
    let (q, fd) = (queue.clone(), efd.clone());
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            let was_empty = {
                let mut q = q.lock().unwrap();
                q.push_back(i as u32);
                q.len() == 1
            };
            if was_empty {
                let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
            }
        }
    });
    let mut ran = 0usize;
    let mut events = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }; 4];
    let mut batch = VecDeque::with_capacity(1024);
    while ran < n {
        match epoll::wait(&ep, &mut events[..], None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        std::mem::swap(&mut *queue.lock().unwrap(), &mut batch);
        for id in batch.drain(..) {
            std::hint::black_box(id);
            ran += 1;
        }
    }
    finish(n, t0, sender)
}

/// tokio: `Handle::spawn` from the other thread.
pub fn tokio(case: &XputCase) -> io::Result<XputSamples> {
    let n = case.callbacks;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let handle = rt.handle().clone();
    let ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let done: &'static Mutex<Option<Waker>> = Box::leak(Box::new(Mutex::new(None)));
    let t0 = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..n {
            handle.spawn(async move {
                if ran.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    if let Some(w) = done.lock().unwrap().take() {
                        w.wake();
                    }
                }
            });
        }
    });
    rt.block_on(std::future::poll_fn(|cx| {
        *done.lock().unwrap() = Some(cx.waker().clone());
        if ran.load(Ordering::Relaxed) == n {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    finish(n, t0, sender)
}

/// The peers, reference first.
pub fn peers() -> Vec<Peer<XputCase, XputSamples>> {
    vec![
        Peer::new("ioloop LoopHandle", Role::Ioloop, ioloop),
        Peer::new("Mutex<VecDeque>+eventfd (floor)", Role::Floor, floor),
        Peer::new("tokio Handle::spawn", Role::Peer, tokio),
    ]
}

/// Runs the workload.
pub fn run(quick: bool, peers: &[Peer<XputCase, XputSamples>]) -> Report {
    let rounds = if quick { 2 } else { 7 };
    let case = XputCase {
        callbacks: if quick { 20_000 } else { 500_000 },
    };
    let mut report = Report::new(
        "xput",
        format!("cross-thread throughput: one thread sends {} trivial callbacks as fast as it can; {rounds} interleaved rounds", case.callbacks),
        "M callbacks/s",
    );
    report.better = "higher is better";
    let label = format!("{} callbacks", case.callbacks);
    for (p, r) in peers.iter().zip(run_rounds(peers, &case, rounds, 0, || {})) {
        match r {
            Ok(s) => report.push(&label, p.name, p.role, s),
            Err(e) => report.push_missing(&label, p.name, p.role, format!("error: {e}")),
        }
    }
    report.notes.push("ioloop's ring holds 1024 callbacks; a full ring hands the callback back and the sender retries".into());
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_runs_every_callback() {
        let case = XputCase { callbacks: 5_000 };
        for p in peers() {
            let s = (p.run)(&case).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(s[0] > 0.0, "{}", p.name);
        }
    }
}
