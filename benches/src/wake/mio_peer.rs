//! mio: `Waker::wake` from the remote thread, the loop blocked in `Poll::poll(None)`.
//!
//! mio's Linux waker is an eventfd registered edge-triggered (one `write` per wake, never
//! read), so this row shows what `Poll`/`Events` add over the floor.

use std::io;
use std::sync::Arc;

use mio::{Events, Poll, Token, Waker};

use super::{join, spawn_remote, Shared, WakeCase, WakeSamples};

const WAKE: Token = Token(0);

/// Runs the case.
pub fn run(case: &WakeCase) -> io::Result<WakeSamples> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let shared = Shared::leak();
    let w = waker.clone();
    let remote = spawn_remote(shared, case, move |_| {
        let _ = w.wake();
    });
    let mut events = Events::with_capacity(8);
    'run: loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == WAKE && !shared.answer() {
                break 'run;
            }
        }
    }
    join(remote)
}
