//! `Epoll` against real kernel objects: socketpairs, pipes, a regular file, threads.
//!
//! Only what is epoll's own: edge mode, timerfd precision, the eventfd notifier's details, the
//! errors only epoll gives, its internal event buffer. The contract every poller shares is
//! pinned once for all of them by the ioloop crate's `tests/poller_conformance.rs`.
//!
//! Timing assertions only ever bound from below (a wait must not return early); a machine under
//! load may always be late.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use loop_core::{Errno, Error, Interest, Mode, Notify, PollEvent, Poller, Readiness};
use loop_linux::Epoll;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::pipe::{pipe_with, PipeFlags};

/// Generous bound for "this should happen now": only a hung wait takes this long.
const PATIENCE: Duration = Duration::from_secs(5);

fn pair() -> (OwnedFd, OwnedFd) {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    socketpair(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap()
}

fn send(fd: &OwnedFd, bytes: &[u8]) {
    assert_eq!(rustix::io::write(fd, bytes).unwrap(), bytes.len());
}

fn level(poller: &mut Epoll, fd: &OwnedFd, key: u64, interest: Interest) {
    poller
        .register(fd.as_raw_fd(), key, interest.registered(), Mode::Level)
        .unwrap();
}

/// One wait that must find something: blocks up to `PATIENCE`.
fn wait_some(poller: &mut Epoll) -> Vec<PollEvent> {
    let mut events = [PollEvent::default(); 64];
    let n = poller.wait(&mut events, Some(PATIENCE)).unwrap();
    events[..n].to_vec()
}

/// The readiness of the one event the next wait reports.
fn only_event(poller: &mut Epoll) -> Readiness {
    let events = wait_some(poller);
    assert_eq!(events.len(), 1, "{events:?}");
    events[0].readiness
}

/// A non-blocking, close-on-exec pipe: (reader, writer).
fn pipe() -> (OwnedFd, OwnedFd) {
    pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).unwrap()
}

/// One non-blocking wait.
fn wait_now(poller: &mut Epoll) -> Vec<PollEvent> {
    let mut events = [PollEvent::default(); 64];
    let n = poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
    events[..n].to_vec()
}

fn event(key: u64, readiness: Readiness) -> PollEvent {
    PollEvent { key, readiness }
}

// --- interest and readiness -------------------------------------------------------------------

#[test]
fn read_and_write_on_one_fd_are_ored_into_one_event() {
    let mut poller = Epoll::new().unwrap();
    let (ours, theirs) = pair();
    level(&mut poller, &ours, 3, Interest::READ | Interest::WRITE);
    send(&theirs, b"x");
    assert_eq!(
        wait_some(&mut poller),
        [event(3, Readiness::READ | Readiness::WRITE)]
    );
}

#[test]
fn empty_interest_still_reports_hang_up() {
    // ERROR is part of every registration; even a handler that asked for nothing sees HUP.
    let mut poller = Epoll::new().unwrap();
    let (ours, theirs) = pair();
    level(&mut poller, &ours, 7, Interest::empty());
    assert_eq!(wait_now(&mut poller), []);
    drop(theirs);
    let events = wait_some(&mut poller);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].readiness, Readiness::HUP);
}

#[test]
fn closed_pipe_writer_reports_hup_to_the_reader() {
    let mut poller = Epoll::new().unwrap();
    let (reader, writer) = pipe();
    level(&mut poller, &reader, 8, Interest::READ);
    assert_eq!(wait_now(&mut poller), []);
    drop(writer);
    let readiness = only_event(&mut poller);
    assert!(readiness.contains(Readiness::HUP), "{readiness:?}");
}

#[test]
fn closed_pipe_reader_reports_error_to_the_writer() {
    let mut poller = Epoll::new().unwrap();
    let (reader, writer) = pipe();
    level(&mut poller, &writer, 9, Interest::WRITE);
    drop(reader);
    let readiness = only_event(&mut poller);
    assert!(readiness.contains(Readiness::ERROR), "{readiness:?}");
}

// --- modes ------------------------------------------------------------------------------------

#[test]
fn edge_mode_reports_once_per_new_arrival() {
    let mut poller = Epoll::new().unwrap();
    let (ours, theirs) = pair();
    let read = Interest::READ.registered();
    poller
        .register(ours.as_raw_fd(), 16, read, Mode::Edge)
        .unwrap();
    send(&theirs, b"x");
    assert_eq!(wait_some(&mut poller), [event(16, Readiness::READ)]);
    assert_eq!(
        wait_now(&mut poller),
        [],
        "data still unread, but no new edge"
    );
    send(&theirs, b"y");
    assert_eq!(wait_some(&mut poller), [event(16, Readiness::READ)]);
}

#[test]
fn capabilities_are_level_edge_oneshot_and_precise() {
    use loop_core::Capabilities as C;
    let poller = Epoll::new().unwrap();
    assert_eq!(
        poller.capabilities(),
        C::LEVEL | C::EDGE | C::ONESHOT | C::PRECISE_TIMEOUT
    );
}

// --- refusals ---------------------------------------------------------------------------------

fn os(errno: Errno) -> Result<(), Error> {
    Err(Error::Os { errno })
}

#[test]
fn regular_file_is_eperm() {
    let file = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut poller = Epoll::new().unwrap();
    let read = Interest::READ.registered();
    assert_eq!(
        poller.register(file.as_raw_fd(), 1, read, Mode::Level),
        os(Errno::EPERM)
    );
}

#[test]
fn negative_fd_is_invalid_fd() {
    let mut poller = Epoll::new().unwrap();
    let read = Interest::READ.registered();
    let invalid = Err(Error::InvalidFd { fd: -1 });
    assert_eq!(poller.register(-1, 1, read, Mode::Level), invalid);
    assert_eq!(poller.modify(-1, 1, read, Mode::Level), invalid);
    assert_eq!(poller.deregister(-1), invalid);
}

#[test]
fn key_above_max_key_is_einval() {
    let mut poller = Epoll::new().unwrap();
    let (ours, _theirs) = pair();
    let read = Interest::READ.registered();
    let too_big = Epoll::<256>::MAX_KEY + 1;
    assert_eq!(
        poller.register(ours.as_raw_fd(), too_big, read, Mode::Level),
        os(Errno::EINVAL)
    );
    assert_eq!(
        poller.register(ours.as_raw_fd(), u64::MAX, read, Mode::Level),
        os(Errno::EINVAL)
    );
}

#[test]
fn empty_event_buffer_is_einval() {
    let mut poller = Epoll::new().unwrap();
    assert_eq!(
        poller.wait(&mut [], Some(Duration::ZERO)),
        Err(Errno::EINVAL)
    );
}

// --- buffer limits ----------------------------------------------------------------------------

/// `count` socketpairs with data waiting on the registered end, keys `0..count`.
fn ready_pairs<const N: usize>(poller: &mut Epoll<N>, count: u64) -> Vec<(OwnedFd, OwnedFd)> {
    (0..count)
        .map(|key| {
            let (ours, theirs) = pair();
            let read = Interest::READ.registered();
            poller
                .register(ours.as_raw_fd(), key, read, Mode::Level)
                .unwrap();
            send(&theirs, b"x");
            (ours, theirs)
        })
        .collect()
}

/// Waits into a buffer of `room` until every key in `0..count` was seen, asserting no wait
/// reports more than `max_per_wait`.
fn collect_keys<const N: usize>(
    poller: &mut Epoll<N>,
    count: u64,
    room: usize,
    max_per_wait: usize,
) {
    let mut seen = BTreeSet::new();
    for _ in 0..count * 4 {
        let mut events = vec![PollEvent::default(); room];
        let n = poller.wait(&mut events, Some(PATIENCE)).unwrap();
        assert!((1..=max_per_wait).contains(&n), "wait reported {n} events");
        seen.extend(events[..n].iter().map(|e| e.key));
        if seen.len() as u64 == count {
            return;
        }
    }
    panic!("only saw {seen:?} of {count} ready fds");
}

#[test]
fn more_ready_fds_than_the_internal_buffer_are_reported_across_waits() {
    let mut poller = Epoll::<2>::with_capacity().unwrap();
    let _fds = ready_pairs(&mut poller, 5);
    collect_keys(&mut poller, 5, 64, 2);
}

#[test]
fn edge_events_are_not_lost_when_the_callers_buffer_is_small() {
    // Fetching more than fits and dropping the rest would lose edge events for good.
    let mut poller = Epoll::new().unwrap();
    let pairs: Vec<_> = (0..3)
        .map(|key| {
            let (ours, theirs) = pair();
            let read = Interest::READ.registered();
            poller
                .register(ours.as_raw_fd(), key, read, Mode::Edge)
                .unwrap();
            send(&theirs, b"x");
            (ours, theirs)
        })
        .collect();
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let mut one = [PollEvent::default(); 1];
        assert_eq!(poller.wait(&mut one, Some(PATIENCE)).unwrap(), 1);
        seen.insert(one[0].key);
    }
    assert_eq!(seen, BTreeSet::from([0, 1, 2]));
    drop(pairs);
}

// --- the notifier -----------------------------------------------------------------------------

#[test]
fn notification_is_not_reported_alongside_real_events() {
    let mut poller = Epoll::new().unwrap();
    let (ours, _theirs) = pair();
    level(&mut poller, &ours, 21, Interest::WRITE);
    poller.notifier().notify().unwrap();
    assert_eq!(wait_some(&mut poller), [event(21, Readiness::WRITE)]);
}

#[test]
fn a_cloned_notifier_outlives_its_poller() {
    let poller = Epoll::new().unwrap();
    let notifier = poller.notifier().try_clone().unwrap();
    drop(poller);
    assert_eq!(notifier.notify(), Ok(()));
}

// --- timeouts ---------------------------------------------------------------------------------

fn assert_not_early(timeout: Duration) {
    let mut poller = Epoll::new().unwrap();
    let mut events = [PollEvent::default(); 4];
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(poller.wait(&mut events, Some(timeout)), Ok(0));
        let elapsed = start.elapsed();
        assert!(
            elapsed >= timeout,
            "asked for {timeout:?}, woke after {elapsed:?}"
        );
    }
}

#[test]
fn timeout_of_1500_microseconds_never_returns_early() {
    assert_not_early(Duration::from_micros(1500));
}

#[test]
fn timeout_of_100_microseconds_returns_empty_after_at_least_100_microseconds() {
    assert_not_early(Duration::from_micros(100));
}

#[test]
fn whole_millisecond_and_nanosecond_timeouts_never_return_early() {
    assert_not_early(Duration::from_millis(2));
    assert_not_early(Duration::from_nanos(1));
}

#[test]
fn infinite_wait_is_not_cut_short_by_an_earlier_timeout() {
    // A timed wait that ended early (here: by an event) leaves its timer armed; the next
    // untimed wait must disarm it instead of waking when it expires.
    let mut poller = Epoll::new().unwrap();
    let (ours, theirs) = pair();
    level(&mut poller, &ours, 23, Interest::READ);
    send(&theirs, b"x");
    let mut events = [PollEvent::default(); 4];
    assert_eq!(
        poller.wait(&mut events, Some(Duration::from_millis(20))),
        Ok(1)
    );
    poller.deregister(ours.as_raw_fd()).unwrap();

    let notifier = poller.notifier().try_clone().unwrap();
    let (done, result) = mpsc::channel();
    let waiter = thread::spawn(move || done.send(poller.wait(&mut events, None)).unwrap());
    let early = result.recv_timeout(Duration::from_millis(200));
    assert!(
        early.is_err(),
        "wait(None) returned {early:?} with nothing to report"
    );
    notifier.notify().unwrap();
    assert_eq!(result.recv_timeout(PATIENCE).expect("not woken"), Ok(0));
    waiter.join().unwrap();
}

#[test]
fn longest_timeout_is_accepted_not_einval() {
    // Loops pass "forever" as a huge Duration; epoll_wait's int milliseconds would overflow.
    let mut poller = Epoll::new().unwrap();
    let mut events = [PollEvent::default(); 4];
    for timeout in [Duration::MAX, Duration::from_secs(u64::from(u32::MAX))] {
        poller.notifier().notify().unwrap();
        assert_eq!(poller.wait(&mut events, Some(timeout)), Ok(0));
    }
}

// --- clock ------------------------------------------------------------------------------------

#[test]
fn epoll_clock_is_the_monotonic_clock() {
    use loop_core::Clock;
    let poller = Epoll::new().unwrap();
    let clock = loop_linux::MonotonicClock::new();
    let before = clock.now();
    let now = poller.now();
    assert!(before <= now && now <= clock.now());
}
