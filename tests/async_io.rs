//! Persistent async I/O registrations (`loop_core::io`): edge-triggered on epoll, level on
//! poll/select, same behaviour: an async echo over a socketpair, sticky hang-up, clean drop.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use loop_core::{Errno, Error, EventLoop, Interest, IoRegistration, OpenPoller, Poller};

#[macro_use]
#[path = "common/attached.rs"]
mod attached;
#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

for_each_poller! {
    type Lp = EventLoop<P, 8, 16, 8>;

    #[test]
    fn async_echo_over_a_socketpair_and_sticky_hangup() {
        super::async_echo_over_a_socketpair_and_sticky_hangup(attached_loop!(Lp, 4, 1024).0);
    }

    #[test]
    fn a_registration_dropped_outside_a_task_does_not_block_the_reused_fd_number() {
        super::a_registration_dropped_outside_a_task_does_not_block_the_reused_fd_number(attached_loop!(Lp, 4, 1024).0);
    }
}

/// Writes all of `buf` to `fd`, waiting on `reg` whenever the socket is full.
async fn write_all(reg: &IoRegistration, fd: &impl AsFd, buf: &[u8]) -> Result<(), Error> {
    let mut sent = 0;
    while sent < buf.len() {
        sent += reg
            .io(Interest::WRITE, || {
                rustix::io::write(fd.as_fd(), &buf[sent..]).map_err(errno)
            })
            .await?;
    }
    Ok(())
}

/// Fills `buf` from `fd`, waiting on `reg` whenever nothing is there yet.
async fn read_exact(reg: &IoRegistration, fd: &impl AsFd, buf: &mut [u8]) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        got += reg
            .io(Interest::READ, || {
                rustix::io::read(fd.as_fd(), &mut buf[got..]).map_err(errno)
            })
            .await?;
    }
    Ok(())
}

fn async_echo_over_a_socketpair_and_sticky_hangup<P: Poller + OpenPoller + 'static>(
    mut lp: EventLoop<P, 8, 16, 8>,
) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let out = lp.run_sync(
        async {
            let ra = IoRegistration::new(&a)?;
            let rb = IoRegistration::new(&b)?;
            let mut total = 0;
            for round in 0..50u8 {
                let msg = [round; 100];
                // b → a, echoed back a → b, all through readiness waits.
                write_all(&rb, &b, &msg).await?;
                let mut buf = [0u8; 100];
                read_exact(&ra, &a, &mut buf).await?;
                ra.io(Interest::WRITE, || {
                    rustix::io::write(a.as_fd(), &buf).map_err(errno)
                })
                .await?;
                let mut back = [0u8; 100];
                read_exact(&rb, &b, &mut back).await?;
                assert_eq!(back, msg);
                total += back.len();
            }
            Ok::<usize, Error>(total)
        },
        Some(Duration::from_secs(20)),
    );
    assert_eq!(out, Ok(Ok(5000)));
    assert_eq!(lp.handler_count(), 0, "registrations removed on drop");

    // A hang-up is sticky: every later wait returns at once and the read says EOF.
    let fd = a.as_raw_fd();
    drop(b);
    let eof = lp.run_sync(
        async {
            let ra = IoRegistration::new(fd)?;
            let mut buf = [0u8; 8];
            let n1 = ra
                .io(Interest::READ, || {
                    rustix::io::read(a.as_fd(), &mut buf).map_err(errno)
                })
                .await?;
            let r2 = ra.ready(Interest::READ).await?;
            let r3 = ra.ready(Interest::WRITE).await?;
            // select cannot report a hang-up: it says READ (and the read returns 0).
            use loop_core::Readiness as R;
            Ok::<_, Error>((
                n1,
                r2.intersects(R::READ | R::HUP),
                r3.intersects(R::WRITE | R::HUP),
            ))
        },
        Some(Duration::from_secs(5)),
    );
    assert_eq!(eof, Ok(Ok((0, true, true))));
    // Registering outside a task is refused.
    assert_eq!(IoRegistration::new(fd).unwrap_err(), Error::NotAttached);
}

fn a_registration_dropped_outside_a_task_does_not_block_the_reused_fd_number<
    P: Poller + OpenPoller + 'static,
>(
    mut lp: EventLoop<P, 8, 16, 8>,
) {
    let (a, _b) = UnixStream::pair().unwrap();
    let number = a.as_raw_fd();
    // Made in a task, dropped outside one: it cannot deregister.
    let reg = lp
        .run_sync(async { IoRegistration::new(&a) }, None)
        .unwrap()
        .unwrap();
    drop(reg);
    drop(a);
    assert_eq!(lp.handler_count(), 1, "the stale slot is still there");
    // Put a new socket on the freed number (F_DUPFD takes the lowest free number >= it; tests
    // run in parallel threads, so another test may have taken it meanwhile: then skip).
    let (c0, _d) = UnixStream::pair().unwrap();
    let c = rustix::io::fcntl_dupfd_cloexec(&c0, number).unwrap();
    if c.as_raw_fd() != number {
        eprintln!("skipped: fd {number} was taken by another test");
        return;
    }
    let ok = lp
        .run_sync(async { IoRegistration::new(&c).map(|_| ()) }, None)
        .unwrap();
    assert_eq!(ok, Ok(()), "the new registration replaced the stale one");
    assert_eq!(lp.handler_count(), 0);
}
