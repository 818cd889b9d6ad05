//! mio: `Poll` + `Registry`, used bare, as a hand-rolled loop on mio would use it.
//!
//! Each read end is registered as a `SourceFd` with `Token(i)` (the pair index, so dispatch is
//! the token itself). mio is edge-triggered on Linux (`EPOLLET` always), so the handler reads
//! until a short read. A pass is `poll(&mut events, Some(0))` into a 1024-event `Events`
//! allocated once. "total" calls `Registry::reregister` per fd, one `EPOLL_CTL_MOD` each,
//! which is also how a mio user re-arms an edge.

use std::io;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{run_phases, Chain, ChainCase, ChainSamples};

/// Runs one chain case.
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    let pairs = &*case.pairs;
    let chain = Chain::new(pairs);
    let mut poll = Poll::new()?;
    let raw = pairs.raw_rd();
    for (i, fd) in raw.iter().enumerate() {
        poll.registry()
            .register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);

    let s = run_phases(
        &chain,
        case,
        &mut poll,
        Some(|poll: &mut Poll| {
            for (i, fd) in raw.iter().enumerate() {
                poll.registry()
                    .reregister(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
            }
            Ok(())
        }),
        None::<fn(&mut Poll) -> io::Result<()>>,
        |poll: &mut Poll| {
            poll.poll(&mut events, Some(Duration::ZERO))?;
            for ev in events.iter() {
                let i = ev.token().0;
                chain.on_readable(&pairs.rd[i], i);
            }
            Ok(())
        },
    );
    for fd in &raw {
        poll.registry().deregister(&mut SourceFd(fd))?;
    }
    s
}
