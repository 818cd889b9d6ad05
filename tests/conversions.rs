//! `?` from every kind of fallible call into `ioloop::Error`, `std::io::Error` and
//! `Box<dyn Error>`: refusals (`add_callback`, `add_handler`, `call_later`,
//! `add_owned_handler`), the loop's own errors (`run`, `run_sync`), `ioloop::net`'s errors, and
//! `std`'s `io::Error` into `ioloop::Error`; plus `Display` with the system's message.

use std::error::Error as StdError;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use ioloop::{Errno, Error, Interest, Resource};
use loop_core::sim::SimPoller;

/// A loop with room for one handler, one timer and one callback.
type Tiny = loop_core::EventLoop<SimPoller, 1, 1, 1>;

fn tiny() -> Tiny {
    Tiny::with_poller(SimPoller::new())
}

/// Fills each table, then asks once more: the second call of each kind is refused, and `?`
/// carries the refusal out as `E`.
fn second_callback<E: From<ioloop::Refused<fn(&mut Tiny)>>>(lp: &mut Tiny) -> Result<(), E> {
    let f: fn(&mut Tiny) = |_| {};
    lp.add_callback(f)?;
    lp.add_callback(f)?;
    Ok(())
}

fn second_timer<E: From<ioloop::Refused<fn(&mut Tiny)>>>(lp: &mut Tiny) -> Result<(), E> {
    let f: fn(&mut Tiny) = |_| {};
    lp.call_later(Duration::from_secs(1), f)?;
    lp.call_later(Duration::from_secs(2), f)?;
    Ok(())
}

fn second_handler_into_error(lp: &mut Tiny) -> Result<(), Error> {
    lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    lp.add_handler(4, Interest::READ, |_, _, _| Ok(()))?;
    Ok(())
}

fn second_handler_into_io(lp: &mut Tiny) -> io::Result<()> {
    lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    lp.add_handler(4, Interest::READ, |_, _, _| Ok(()))?;
    Ok(())
}

fn second_handler_into_box(lp: &mut Tiny) -> Result<(), Box<dyn StdError>> {
    lp.add_handler(3, Interest::READ, |_, _, _| Ok(()))?;
    lp.add_handler(4, Interest::READ, |_, _, _| Ok(()))?;
    Ok(())
}

/// The same refusal `full`, seen through `?` into each of the three error types.
fn assert_converts_all_three(
    full: Error,
    as_error: Result<(), Error>,
    as_io: io::Result<()>,
    as_box: Result<(), Box<dyn StdError>>,
) {
    assert_eq!(as_error, Err(full));
    assert_eq!(Error::from(as_io.unwrap_err()), full);
    assert_eq!(as_box.unwrap_err().to_string(), full.to_string());
}

#[test]
fn refused_callbacks_convert_with_question_mark_into_all_three_error_types() {
    let full = Error::Full {
        what: Resource::Callbacks,
    };
    let e: Error = second_callback::<Error>(&mut tiny()).unwrap_err();
    assert_eq!(e, full);
    let e: io::Error = second_callback::<io::Error>(&mut tiny()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    assert_eq!(Error::from(e), full);
    let e: Box<dyn StdError> = second_callback::<Box<dyn StdError>>(&mut tiny()).unwrap_err();
    assert_eq!(e.to_string(), full.to_string());
}

#[test]
fn refused_timers_convert_with_question_mark_into_all_three_error_types() {
    let full = Error::Full {
        what: Resource::Timers,
    };
    assert_converts_all_three(
        full,
        second_timer::<Error>(&mut tiny()),
        second_timer::<io::Error>(&mut tiny()),
        second_timer::<Box<dyn StdError>>(&mut tiny()),
    );
}

#[test]
fn refused_handlers_convert_with_question_mark_into_all_three_error_types() {
    let full = Error::Full {
        what: Resource::Handlers,
    };
    assert_converts_all_three(
        full,
        second_handler_into_error(&mut tiny()),
        second_handler_into_io(&mut tiny()),
        second_handler_into_box(&mut tiny()),
    );
}

#[test]
fn a_refused_owned_handler_converts_too_and_can_still_hand_the_fd_back() {
    fn add_two(lp: &mut ioloop::EventLoop<1, 4, 4>) -> Result<(), Box<dyn StdError>> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        lp.add_owned_handler(OwnedFd::from(a), Interest::READ, |_, _, _| Ok(()))?;
        match lp.add_owned_handler(OwnedFd::from(b), Interest::READ, |_, _, _| Ok(())) {
            Err(refused) => {
                let (fd, _handler) = refused.into_inner();
                drop(fd); // still ours, still open: closed here
                Err(refused_error())?
            }
            Ok(_) => Ok(()),
        }
    }
    fn refused_error() -> Error {
        Error::Full {
            what: Resource::Handlers,
        }
    }
    let mut lp = ioloop::EventLoop::<1, 4, 4>::new().unwrap();
    let e = add_two(&mut lp).unwrap_err();
    assert_eq!(e.to_string(), refused_error().to_string());
}

#[test]
fn loop_errors_from_run_convert_into_io_error_and_box() {
    fn run_closed_io(lp: &mut Tiny) -> io::Result<()> {
        lp.run()?;
        Ok(())
    }
    fn run_closed_box(lp: &mut Tiny) -> Result<(), Box<dyn StdError>> {
        lp.run()?;
        Ok(())
    }
    let mut lp = tiny();
    lp.close();
    assert_eq!(lp.run(), Err(Error::Closed));
    let e = run_closed_io(&mut lp).unwrap_err();
    assert_eq!(Error::from(e), Error::Closed);
    let e = run_closed_box(&mut lp).unwrap_err();
    assert_eq!(e.downcast_ref::<Error>(), Some(&Error::Closed));
}

#[test]
fn net_errors_convert_into_io_error_with_the_os_number() {
    fn bind_twice() -> io::Result<()> {
        let first = ioloop::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
        let _second = ioloop::net::UdpSocket::bind(first.local_addr()?)?;
        Ok(())
    }
    let e = bind_twice().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
}

#[test]
fn std_io_errors_convert_into_ioloop_error_with_the_os_number() {
    fn std_then_loop() -> Result<(), Error> {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let _second = std::net::UdpSocket::bind(first.local_addr()?)?;
        Ok(())
    }
    assert_eq!(
        std_then_loop(),
        Err(Error::Os {
            errno: Errno(libc::EADDRINUSE)
        })
    );
}

#[test]
fn errors_from_run_sync_convert_into_io_error() {
    use ioloop::{Executor, Remote};
    static REMOTE: Remote<ioloop::EventLoop, 4> = Remote::new();
    static EXEC: Executor<2, 256> = Executor::new();
    fn timed_out(lp: &mut ioloop::EventLoop) -> io::Result<()> {
        lp.run_sync(ioloop::sleep(Duration::from_secs(60)), Some(Duration::ZERO))??;
        Ok(())
    }
    let mut lp = ioloop::EventLoop::new().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    assert_eq!(
        timed_out(&mut lp).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
}

#[test]
fn display_shows_the_system_message_and_the_number() {
    let e = Error::Os {
        errno: Errno(libc::ECONNREFUSED),
    };
    assert_eq!(
        e.to_string(),
        format!(
            "the kernel refused: connection refused (os error {})",
            libc::ECONNREFUSED
        )
    );
}

#[test]
fn handlers_can_use_question_mark_on_loop_calls() {
    let mut lp = tiny();
    lp.add_handler(3, Interest::READ, |lp, fd, _| {
        lp.poller_mut().clear_ready(fd);
        lp.stop();
        lp.add_callback(|_| {})?; // takes the one callback slot
        lp.add_callback(|_| {})?; // refused: the handler fails with a fixed text
        Ok(())
    })
    .unwrap();
    let failures = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = failures.clone();
    lp.set_error_hook(move |f| seen.borrow_mut().push(format!("{f:?}")));
    lp.poller_mut().set_ready(3, ioloop::Readiness::READ);
    lp.run().unwrap();
    let failures = failures.borrow();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("callback queue is full"),
        "{failures:?}"
    );
}
