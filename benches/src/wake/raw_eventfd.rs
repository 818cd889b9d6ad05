//! The floor: an eventfd registered edge-triggered in a raw epoll.
//!
//! The remote writes 8 bytes to the eventfd; the loop, blocked in `epoll_wait(-1)`, wakes and
//! answers. Edge-triggered, so the counter is never read back: one syscall on each side, the
//! least a poller wake can cost (mio's `Waker` is built the same way).

use std::io;

use rustix::event::epoll::{self, Event, EventData, EventFlags};

use super::{epoll_with_eventfd, join, spawn_remote, Shared, WakeCase, WakeSamples};

/// Runs the case.
pub fn run(case: &WakeCase) -> io::Result<WakeSamples> {
    let (ep, efd) = epoll_with_eventfd()?;
    let shared = Shared::leak();
    let remote_fd = efd.clone();
    let remote = spawn_remote(shared, case, move |_| {
        let _ = rustix::io::write(&*remote_fd, &1u64.to_ne_bytes());
    });
    let mut events = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }; 8];
    'run: loop {
        let k = match epoll::wait(&ep, &mut events[..], None) {
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
