//! polling (smol-rs, the poller under async-io) in level mode.
//!
//! Each read end is added with `PollMode::Level` and key `i`; a pass is
//! `wait(&mut events, Some(0))` into an `Events` of capacity 1024 allocated once (cleared
//! before each wait, as the API requires); "total" calls `modify_with_mode` per fd
//! (`EPOLL_CTL_MOD`). Note that polling's epoll backend does more than `epoll_wait` in each
//! `wait`: it re-arms its timerfd (`timerfd_settime` + `EPOLL_CTL_MOD`) and its notifier
//! (`read` + `EPOLL_CTL_MOD`) every time; that is its real per-pass cost and is measured as is.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use super::{run_phases, Chain, ChainCase, ChainSamples};

/// Runs one chain case.
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    let pairs = &*case.pairs;
    let chain = Chain::new(pairs);
    let poller = Poller::new()?;
    for (i, fd) in pairs.rd.iter().enumerate() {
        // SAFETY: every fd is deleted from the poller below, before `pairs` can close it.
        unsafe { poller.add_with_mode(fd, Event::readable(i), PollMode::Level)? };
    }
    let mut events = Events::with_capacity(NonZeroUsize::new(1024).unwrap());

    let s = run_phases(
        &chain,
        case,
        &mut events,
        Some(|_: &mut Events| {
            for (i, fd) in pairs.rd.iter().enumerate() {
                poller.modify_with_mode(fd.as_fd(), Event::readable(i), PollMode::Level)?;
            }
            Ok(())
        }),
        None::<fn(&mut Events) -> io::Result<()>>,
        |events: &mut Events| {
            events.clear();
            poller.wait(events, Some(Duration::ZERO))?;
            for ev in events.iter() {
                chain.on_readable(&pairs.rd[ev.key], ev.key);
            }
            Ok(())
        },
    );
    for fd in &pairs.rd {
        poller.delete(fd)?;
    }
    s
}
