//! From the first `run_once` on, the loop never touches the heap: handlers firing on real
//! sockets, timers scheduled, cancelled, re-armed and fired, periodic callbacks, callbacks
//! queued from callbacks and handlers, handlers added and removed. A counting global allocator
//! watches this thread only (the test harness allocates on its own threads).

use std::cell::Cell;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loop_core::{EventLoop, HandlerError, Interest, OpenPoller, Periodic, Poller};

#[path = "common/alloc_counter.rs"]
mod alloc_counter;
use alloc_counter::allocations_in;

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

type Lp<P> = EventLoop<P, 16, 64, 64>;

fn drain(fd: i32) -> Result<(), HandlerError> {
    let mut buf = [0u8; 64];
    // SAFETY: called by a handler with its own fd, open while registered.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(HandlerError::Os(loop_core::Errno(e.raw_os_error()))),
        }
    }
}

fn echo_tick<P: Poller + 'static>(lp: &mut Lp<P>) {
    // A timer that re-arms itself through a fresh call_later, cancelling a decoy each time.
    let decoy = lp
        .call_later(Duration::from_secs(3600), |_| panic!("cancelled"))
        .ok();
    if let Some(d) = decoy {
        lp.remove_timeout(d);
    }
    let _ = lp.call_later(Duration::from_micros(200), echo_tick::<P>);
}

for_each_poller!(cases: no_heap_allocation_after_the_first_run_once);

fn no_heap_allocation_after_the_first_run_once<P: Poller + OpenPoller + 'static>() {
    let mut lp: Lp<P> = EventLoop::new().unwrap();
    let pairs: Vec<(UnixStream, UnixStream)> = (0..4)
        .map(|_| {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            (a, b)
        })
        .collect();
    let reads = Rc::new(Cell::new(0u64));
    for (a, _) in &pairs {
        let r = reads.clone();
        lp.add_handler(a, Interest::READ, move |lp, fd, _| {
            r.set(r.get() + 1);
            // Callback queued from a handler; the handler toggles its own interest.
            lp.add_callback(|_| {})
                .map_err(|_| HandlerError::Other("full"))?;
            lp.update_handler(fd, Interest::READ | Interest::WRITE)
                .map_err(|_| HandlerError::Other("upd"))?;
            lp.update_handler(fd, Interest::READ)
                .map_err(|_| HandlerError::Other("upd"))?;
            drain(fd)
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    let ticks = Rc::new(Cell::new(0u64));
    let t = ticks.clone();
    lp.add_periodic(
        Periodic::every(Duration::from_micros(300)).with_jitter_ppm(100_000),
        move |lp| {
            t.set(t.get() + 1);
            let _ = lp.add_callback(|lp| {
                let _ = lp.add_callback(|_| {});
            });
        },
    )
    .unwrap();
    echo_tick(&mut lp);
    let writers: Vec<UnixStream> = pairs.iter().map(|(_, b)| b.try_clone().unwrap()).collect();
    let spare = UnixStream::pair().unwrap();
    lp.run_once(Some(Duration::ZERO)).unwrap();

    let ((), allocations) = allocations_in(|| {
        for i in 0..2000usize {
            let _ = (&writers[i % writers.len()]).write(b"ping");
            if i % 100 == 0 {
                // Handler churn: add and remove a handler on a spare socket.
                lp.add_handler(&spare.0, Interest::READ, |_, _, _| Ok(()))
                    .map_err(|r| r.error)
                    .unwrap();
                lp.remove_handler(spare.0.as_raw_fd());
            }
            lp.run_once(Some(Duration::from_millis(1))).unwrap();
        }
    });
    assert!(reads.get() > 1000, "handlers ran: {}", reads.get());
    assert!(ticks.get() > 10, "periodic ran: {}", ticks.get());
    assert_eq!(allocations, 0, "heap allocations after the first run_once");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let (v, n) = allocations_in(|| std::hint::black_box(vec![1u8; 10]));
    drop(v);
    assert!(n >= 1);
}
