//! ioloop: `loop_core::EventLoop` over `loop_linux::Epoll`, the reference row.
//!
//! Each read end gets a handler closure (capturing an `Rc` of the shared state and its pair
//! index: 16 of the 56 inline bytes) registered for `Interest::READ`, level-triggered as the
//! loop always registers. A pass is `run_once(Some(0))`: one iteration with a zero poll
//! timeout, i.e. one `epoll_wait(.., 0)` and the dispatch through the loop's handler table
//! (key → slot + generation check → indirect call). "total" calls `update_handler(fd, READ)`
//! for every fd: the interest is unchanged, so by ioloop's design it costs a table lookup and
//! no system call (libevent's changelist gets the same effect for `event_del` + `event_add`);
//! the floor and mio/polling pay one `EPOLL_CTL_MOD` each. "bench.c del+add" is bench.c
//! literally: `remove_handler` + `add_handler` (a fresh closure) per fd, against libev's
//! `ev_io_stop` + `ev_io_start`. The loop runs with `set_deferred_removal(true)` (libev's
//! `fdchanges`, off by default): each removal's deregistration waits for the next poll and
//! the add right after it takes the registration over with one `EPOLL_CTL_MOD` (new key), where
//! the default pays `EPOLL_CTL_DEL` + `EPOLL_CTL_ADD`. libev pays one `epoll_ctl` per fd too
//! (an `EPOLL_CTL_ADD` the kernel refuses with `EEXIST`, which libev takes as "unchanged").

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use loop_core::{EventLoop, Interest};
use loop_linux::Epoll;

use super::{run_phases, Chain, ChainCase, ChainSamples};
use crate::sys::io_err;

/// Handler capacity: the largest chain case (10^4 pairs) fits.
const H: usize = 16_384;
/// One handler per pair; no timers or callbacks in this workload.
type Lp = EventLoop<Epoll, H, 4, 4>;

/// Runs one chain case.
pub fn run(case: &ChainCase) -> io::Result<ChainSamples> {
    let pairs = &*case.pairs;
    if pairs.rd.len() > H {
        return Err(io::Error::other(format!("more than {H} pairs")));
    }
    let chain = Rc::new(Chain::new(pairs));
    let mut lp = Lp::new_boxed().map_err(io_err)?;
    lp.set_deferred_removal(true);
    let add = |lp: &mut Lp, i: usize, fd: RawFd| -> io::Result<()> {
        let c = chain.clone();
        let handler = move |_: &mut Lp, fd, _| {
            // SAFETY: `fd` is a read end owned by the case's `Pairs`, open for the whole run.
            c.on_readable(unsafe { BorrowedFd::borrow_raw(fd) }, i);
            Ok(())
        };
        lp.add_handler(fd, Interest::READ, handler)
            .map(drop)
            .map_err(|r| io_err(r.error))
    };
    for (i, fd) in pairs.rd.iter().enumerate() {
        add(&mut lp, i, fd.as_raw_fd())?;
    }
    let s = run_phases(
        &chain,
        case,
        &mut *lp,
        Some(|lp: &mut Lp| {
            for fd in &pairs.rd {
                lp.update_handler(fd.as_raw_fd(), Interest::READ)
                    .map_err(io_err)?;
            }
            Ok(())
        }),
        Some(|lp: &mut Lp| {
            for (i, fd) in pairs.rd.iter().enumerate() {
                lp.remove_handler(fd.as_raw_fd());
                add(lp, i, fd.as_raw_fd())?;
            }
            Ok(())
        }),
        |lp: &mut Lp| lp.run_once(Some(Duration::ZERO)).map_err(io_err),
    );
    // Dropping the loop deregisters every handler; the fds stay open (borrowed).
    drop(lp);
    s
}
