//! The floor: epoll through rustix with nothing on top.
//!
//! Level-triggered `EPOLLIN` registrations whose `data` is the fd; a pass is one
//! `epoll_wait(ep, buf, 1024, 0)` into a fixed buffer, and dispatch is a lookup in a `Vec`
//! indexed by fd followed by the handler body inlined (no closure, no indirect call). "total"
//! re-arms with one `EPOLL_CTL_MOD` per fd, what a loop without an interest cache must do.
//! Any event loop on epoll does at least this much work, so the ratios of the others to this
//! row are the price of their abstractions. Loop runs come first, on the registrations made at
//! setup (registered once, as ioloop's). "bench.c del+add" is `EPOLL_CTL_DEL` + `EPOLL_CTL_ADD`
//! per fd, what a loop without a change list pays for bench.c's `event_del` + `event_add`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;

use super::{run_phases, Chain, ChainCase, ChainSamples};

/// Events fetched per `epoll_wait` (libevent grows to 4096; a=100 needs about 200).
const EVENTS: usize = 1024;

/// Runs one chain case.
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    run_impl::<false>(case)
}

/// The floor with its handler called through a function pointer the optimizer cannot see
/// through, as a library calls a user's handler (a diagnostic row: `IOLOOP_BENCH_CHAIN_DIAG=1`).
/// Everything else is the floor's code.
pub fn run_via_pointer(case: &ChainCase) -> io::Result<ChainSamples> {
    run_impl::<true>(case)
}

/// The handler the diagnostic row calls through a pointer.
fn handle(chain: &Chain, fd: &OwnedFd, i: usize) {
    chain.on_readable(fd, i);
}

/// [`run`], or with `VIA_POINTER` [`run_via_pointer`] (one copy of the loop each).
fn run_impl<const VIA_POINTER: bool>(case: &ChainCase) -> io::Result<ChainSamples> {
    let handler: fn(&Chain, &OwnedFd, usize) = std::hint::black_box(handle);
    let pairs = &*case.pairs;
    let chain = Chain::new(pairs);
    let ep = epoll::create(CreateFlags::CLOEXEC)?;
    let mut by_fd = vec![u32::MAX; pairs.max_rd() as usize + 1];
    for (i, fd) in pairs.rd.iter().enumerate() {
        let raw = fd.as_raw_fd();
        epoll::add(&ep, fd, EventData::new_u64(raw as u64), EventFlags::IN)?;
        by_fd[raw as usize] = i as u32;
    }
    let mut events = vec![
        Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0)
        };
        EVENTS
    ];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };

    run_phases(
        &chain,
        case,
        &mut events,
        Some(|_: &mut Vec<Event>| {
            for fd in &pairs.rd {
                let data = EventData::new_u64(fd.as_raw_fd() as u64);
                epoll::modify(&ep, fd, data, EventFlags::IN)?;
            }
            Ok(())
        }),
        Some(|_: &mut Vec<Event>| {
            for fd in &pairs.rd {
                let data = EventData::new_u64(fd.as_raw_fd() as u64);
                epoll::delete(&ep, fd)?;
                epoll::add(&ep, fd, data, EventFlags::IN)?;
            }
            Ok(())
        }),
        |events: &mut Vec<Event>| {
            let k = epoll::wait(&ep, &mut events[..], Some(&zero))?;
            for ev in &events[..k] {
                let i = by_fd[ev.data.u64() as usize] as usize;
                if VIA_POINTER {
                    handler(&chain, &pairs.rd[i], i);
                } else {
                    chain.on_readable(&pairs.rd[i], i);
                }
            }
            Ok(())
        },
    )
}
