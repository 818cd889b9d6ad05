//! Diagnostic peers for the one-core wake case (not in the default table; set
//! `IOLOOP_BENCH_WAKE_DIAG=1` to append them): the floor with its eventfd `write`, its
//! `epoll_wait`, or both moved behind a function call (`#[inline(never)]`), same system calls.
//!
//! What they showed on the VM the tables come from (2-vCPU AMD EPYC guest, Linux 6.18): on one
//! core, a function return after a system call that switched threads (the remote's `write`
//! that wakes the loop, the loop's `epoll_wait` that lets the remote run) costs about
//! 0.3 µs, whatever the function does: the floor with its write behind a call is 1.07–1.12×
//! the floor, with its wait behind a call 1.09–1.14×, with both 1.18–1.24× (mio, whose
//! waker and poll are glibc calls, is 1.2×). The one-core row's gap between a library and
//! the floor is mostly this, not the library's instructions.

use std::io;
use std::os::fd::OwnedFd;

use rustix::event::epoll::{self, Event, EventData, EventFlags};

use super::{epoll_with_eventfd, join, spawn_remote, Shared, WakeCase, WakeSamples};
use crate::harness::{Peer, Role};

#[inline(never)]
fn write_called(fd: &OwnedFd) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

#[inline(never)]
fn wait_called(ep: &OwnedFd, events: &mut [Event]) -> rustix::io::Result<usize> {
    epoll::wait(ep, events, None)
}

/// The floor, with the write (`write`), the wait (`wait`) or both behind a call.
fn floor_variant(case: &WakeCase, write: bool, wait: bool) -> io::Result<WakeSamples> {
    let (ep, efd) = epoll_with_eventfd()?;
    let shared = Shared::leak();
    let remote_fd = efd.clone();
    let remote = spawn_remote(shared, case, move |_| {
        if write {
            write_called(&remote_fd);
        } else {
            let _ = rustix::io::write(&*remote_fd, &1u64.to_ne_bytes());
        }
    });
    let mut events = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }; 8];
    'run: loop {
        let waited = if wait {
            wait_called(&ep, &mut events[..])
        } else {
            epoll::wait(&ep, &mut events[..], None)
        };
        let k = match waited {
            Ok(k) => k,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..k] {
            if ev.data.u64() == 1 && !shared.answer() {
                break 'run;
            }
        }
    }
    join(remote)
}

fn write_behind_call(case: &WakeCase) -> io::Result<WakeSamples> {
    floor_variant(case, true, false)
}

fn wait_behind_call(case: &WakeCase) -> io::Result<WakeSamples> {
    floor_variant(case, false, true)
}

fn both_behind_calls(case: &WakeCase) -> io::Result<WakeSamples> {
    floor_variant(case, true, true)
}

/// The diagnostic peers, when `IOLOOP_BENCH_WAKE_DIAG` is set.
pub fn peers() -> Vec<Peer<WakeCase, WakeSamples>> {
    if std::env::var_os("IOLOOP_BENCH_WAKE_DIAG").is_none() {
        return Vec::new();
    }
    vec![
        Peer::new("floor, write behind a call", Role::Peer, write_behind_call),
        Peer::new("floor, wait behind a call", Role::Peer, wait_behind_call),
        Peer::new("floor, both behind calls", Role::Peer, both_behind_calls),
    ]
}
