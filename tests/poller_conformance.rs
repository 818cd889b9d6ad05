//! One conformance suite for every real poller: epoll (Linux), kqueue (BSDs, macOS), poll and
//! select.
//!
//! Each case is a generic function over [`Poller`]; the harness (`tests/common/pollers.rs`)
//! instantiates it once per poller as `#[test] <poller>::<case>` (so `cargo test epoll::` runs one poller and
//! `cargo test read_only_never_sees_write` runs one case on all of them). The cases pin the
//! contract written on `loop_core::Poller`; where a poller may legitimately differ (select has
//! no hang-up bit, poll and select emulate oneshot, only epoll has edge mode) the case checks
//! what all must share and says why.
//!
//! Not covered here: `EINTR`. Triggering it portably needs a signal handler (no `libc` among
//! the dev-dependencies); the simulated poller's fault injection covers the loop's side.

use std::os::fd::OwnedFd;
use std::sync::{mpsc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use loop_core::{Error, Interest, Mode, Notify, OpenPoller, PollEvent, Poller, RawFd, Readiness};

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;
use pollers::Row;
#[path = "common/fds.rs"]
mod fds;
use fds::{nonblocking_cloexec, pipe, raw, sockets, try_sockets};
use rustix::net::{AddressFamily, SocketType};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Tests run on parallel threads and share the process's fd table. The many-fds cases hold a
/// thousand fds, which would push every other test's fds past select's `FD_SETSIZE`: they
/// take this lock exclusively, everything else shares it.
static FD_TABLE: RwLock<()> = RwLock::new(());

fn shared_fds() -> RwLockReadGuard<'static, ()> {
    FD_TABLE.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive_fds() -> RwLockWriteGuard<'static, ()> {
    FD_TABLE.write().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh poller of the row, and a share of the fd table for the test's duration.
fn fresh<P: OpenPoller>() -> (RwLockReadGuard<'static, ()>, P) {
    (shared_fds(), P::open().expect("create the poller"))
}

for_each_poller!(cases:
    readable_socketpair_reports_read,
    read_only_never_sees_write,
    write_only_never_sees_read,
    pipe_ends_report_their_direction,
    closed_peer_is_reported_to_a_reader,
    closed_peer_is_reported_to_a_writer,
    refused_connect_is_reported_to_a_writer,
    error_only_interest_sees_no_read_or_write,
    modify_changes_interest_and_key,
    duplicate_register_is_refused_and_keeps_the_first,
    unknown_fds_are_enoent,
    closed_fd_is_refused_at_register,
    deregister_stops_reports,
    deregistered_key_is_never_reported_even_after_fd_reuse,
    small_buffer_reaches_every_ready_fd,
    oneshot_reports_once_or_is_refused,
    edge_reports_changes_or_is_refused,
    notifier_wakes_a_blocked_wait_from_another_thread,
    notifications_coalesce_into_one_wake,
    timeouts_are_never_early,
    clock_is_monotonic,
    reset_drops_every_registration_or_declines,
    many_fds,
    fds_above_fd_setsize_work_or_are_refused,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const NOW: Option<Duration> = Some(Duration::ZERO);
const READ: Interest = Interest::READ.union(Interest::ERROR);
const WRITE: Interest = Interest::WRITE.union(Interest::ERROR);
const BOTH: Interest = READ.union(WRITE);
/// Long enough that a test only waits this long when something is broken.
const PATIENCE: Duration = Duration::from_secs(5);

fn send(fd: &OwnedFd, bytes: &[u8]) {
    assert_eq!(rustix::io::write(fd, bytes).expect("write"), bytes.len());
}

/// One wait; returns the events it filled.
fn wait<P: Poller>(p: &mut P, timeout: Option<Duration>) -> Vec<PollEvent> {
    let mut events = [PollEvent::default(); 64];
    let n = p.wait(&mut events, timeout).expect("wait");
    events[..n].to_vec()
}

/// The readiness reported for `key` by one wait, if any (and never more than one event).
fn ready_for<P: Poller>(p: &mut P, key: u64, timeout: Option<Duration>) -> Option<Readiness> {
    let events = wait(p, timeout);
    let mut mine = events.iter().filter(|e| e.key == key);
    let first = mine.next().map(|e| e.readiness);
    assert!(
        mine.next().is_none(),
        "one event per key per wait: {events:?}"
    );
    first
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

fn readable_socketpair_reports_read<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    assert_eq!(ready_for(&mut p, 1, NOW), None, "nothing to read yet");
    send(&b, b"x");
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("readable");
    assert!(r.contains(Readiness::READ), "{r:?}");
    // Level-triggered: still readable until read.
    assert!(ready_for(&mut p, 1, NOW).is_some());
}

/// Tornado: a handler registered for READ is never called with WRITE, although a connected
/// socket is always writable.
fn read_only_never_sees_write<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    assert_eq!(
        ready_for(&mut p, 1, NOW),
        None,
        "writable, but WRITE was not asked for"
    );
    send(&b, b"x");
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("readable");
    assert!(!r.contains(Readiness::WRITE), "{r:?}");
}

fn write_only_never_sees_read<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    send(&b, b"pending data");
    p.register(raw(&a), 1, WRITE, Mode::Level).unwrap();
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("writable");
    assert_eq!(
        r,
        Readiness::WRITE,
        "data is pending, but READ was not asked for"
    );
}

fn pipe_ends_report_their_direction<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (r, w) = pipe();
    p.register(raw(&r), 1, READ, Mode::Level).unwrap();
    p.register(raw(&w), 2, WRITE, Mode::Level).unwrap();
    let events = wait(&mut p, Some(PATIENCE));
    assert_eq!(
        events,
        [PollEvent {
            key: 2,
            readiness: Readiness::WRITE
        }]
    );
    send(&w, b"x");
    let events = wait(&mut p, Some(PATIENCE));
    assert!(
        events
            .iter()
            .any(|e| e.key == 1 && e.readiness == Readiness::READ),
        "{events:?}"
    );
}

/// epoll and poll report READ | HUP; select has no hang-up bit and reports READ (the handler's
/// read then returns 0), as Tornado's select loop does.
fn closed_peer_is_reported_to_a_reader<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    drop(b);
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("the hang-up is reported");
    assert!(r.intersects(Readiness::READ | Readiness::HUP), "{r:?}");
    assert!(!r.contains(Readiness::WRITE), "{r:?}");
}

/// A write-only handler still learns that the peer is gone: HUP (epoll, poll) or WRITE
/// (select, where the write then fails with EPIPE).
fn closed_peer_is_reported_to_a_writer<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    p.register(raw(&a), 1, WRITE, Mode::Level).unwrap();
    drop(b);
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("the hang-up is reported");
    assert!(
        r.intersects(Readiness::WRITE | Readiness::HUP | Readiness::ERROR),
        "{r:?}"
    );
    assert!(!r.contains(Readiness::READ), "{r:?}");
}

/// Tornado's IOStream connects by waiting for WRITE, then reads SO_ERROR: a refused connect
/// must wake a write handler (ERROR | HUP on epoll/poll, WRITE on select).
fn refused_connect_is_reported_to_a_writer<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    // A loopback port that nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let s = nonblocking_cloexec(s).unwrap();
    match rustix::net::connect(&s, &port) {
        Err(rustix::io::Errno::INPROGRESS) => {}
        Err(rustix::io::Errno::CONNREFUSED) => {
            eprintln!("skipped: the kernel refused the connect synchronously");
            return;
        }
        other => panic!("connect to a closed port: {other:?}"),
    }
    p.register(raw(&s), 1, WRITE, Mode::Level).unwrap();
    let r = ready_for(&mut p, 1, Some(PATIENCE)).expect("the refusal is reported");
    assert!(
        r.intersects(Readiness::WRITE | Readiness::ERROR | Readiness::HUP),
        "{r:?}"
    );
    assert!(!r.contains(Readiness::READ), "{r:?}");
    let err = rustix::net::sockopt::socket_error(&s).unwrap();
    assert_eq!(err, Err(rustix::io::Errno::CONNREFUSED));
}

fn error_only_interest_sees_no_read_or_write<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    send(&b, b"x");
    p.register(raw(&a), 1, Interest::ERROR, Mode::Level)
        .unwrap();
    assert_eq!(ready_for(&mut p, 1, Some(Duration::from_millis(20))), None);
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

fn modify_changes_interest_and_key<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    assert!(wait(&mut p, NOW).is_empty());
    p.modify(raw(&a), 2, WRITE, Mode::Level).unwrap();
    assert_eq!(
        wait(&mut p, NOW),
        [PollEvent {
            key: 2,
            readiness: Readiness::WRITE
        }]
    );
    p.modify(raw(&a), 3, READ, Mode::Level).unwrap();
    assert!(wait(&mut p, NOW).is_empty());
}

/// ARCHITECTURE.md: adding a second handler for an fd is an error and leaves the first untouched.
fn duplicate_register_is_refused_and_keeps_the_first<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    p.register(raw(&a), 1, WRITE, Mode::Level).unwrap();
    let second = p.register(raw(&a), 2, READ, Mode::Level);
    assert!(
        matches!(
            second,
            Err(Error::Os {
                errno: loop_core::Errno::EEXIST
            }) | Err(Error::AlreadyRegistered { .. })
        ),
        "{second:?}"
    );
    assert_eq!(
        wait(&mut p, NOW),
        [PollEvent {
            key: 1,
            readiness: Readiness::WRITE
        }]
    );
}

/// Tornado's remove_handler of an unknown fd is an error the loop ignores; modify of one is
/// ENOENT (epoll's answer, kept by every poller).
fn unknown_fds_are_enoent<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    let enoent = Err(Error::Os {
        errno: loop_core::Errno::ENOENT,
    });
    assert_eq!(p.modify(raw(&a), 1, READ, Mode::Level), enoent);
    assert_eq!(p.deregister(raw(&a)), enoent);
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    p.deregister(raw(&a)).unwrap();
    assert_eq!(p.deregister(raw(&a)), enoent);
}

fn closed_fd_is_refused_at_register<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    let fd = raw(&a);
    drop(a);
    let r = p.register(fd, 1, READ, Mode::Level);
    assert_eq!(
        r,
        Err(Error::Os {
            errno: loop_core::Errno::EBADF
        })
    );
}

fn deregister_stops_reports<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    p.register(raw(&a), 1, WRITE, Mode::Level).unwrap();
    assert_eq!(wait(&mut p, NOW).len(), 1);
    p.deregister(raw(&a)).unwrap();
    assert!(wait(&mut p, Some(Duration::from_millis(10))).is_empty());
}

/// The stale-event rule (mio#219 is "the user's problem"; here it is the poller's): once
/// `deregister` returns, no wait reports the old key, even when the fd number is reused at
/// once by a new registration.
fn deregistered_key_is_never_reported_even_after_fd_reuse<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    send(&b, b"x");
    let fd = raw(&a);
    p.register(fd, 1, BOTH, Mode::Level).unwrap();
    p.deregister(fd).unwrap();
    drop(a);
    drop(b);
    // The lowest free numbers: very likely `fd` again.
    let (c, d) = sockets();
    send(&d, b"y");
    p.register(raw(&c), 2, READ, Mode::Level).unwrap();
    for _ in 0..3 {
        let events = wait(&mut p, Some(Duration::from_millis(5)));
        assert!(events.iter().all(|e| e.key == 2), "{events:?}");
    }
}

/// Contract: if more fds are ready than the buffer holds, later waits report the rest.
fn small_buffer_reaches_every_ready_fd<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let pairs: Vec<_> = (0..3).map(|_| sockets()).collect();
    for (key, (a, _)) in pairs.iter().enumerate() {
        p.register(raw(a), key as u64, WRITE, Mode::Level).unwrap();
    }
    let mut seen = [false; 3];
    for _ in 0..6 {
        let mut one = [PollEvent::default(); 1];
        assert_eq!(p.wait(&mut one, NOW).unwrap(), 1);
        seen[one[0].key as usize] = true;
    }
    assert_eq!(seen, [true; 3]);
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

fn oneshot_reports_once_or_is_refused<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    if !p.capabilities().supports(Mode::Oneshot) {
        assert_eq!(
            p.register(raw(&a), 1, WRITE, Mode::Oneshot),
            Err(Error::Unsupported)
        );
        return;
    }
    p.register(raw(&a), 1, WRITE, Mode::Oneshot).unwrap();
    assert_eq!(wait(&mut p, NOW).len(), 1);
    assert!(wait(&mut p, NOW).is_empty(), "disabled until re-armed");
    p.modify(raw(&a), 2, WRITE, Mode::Oneshot).unwrap();
    assert_eq!(
        wait(&mut p, NOW),
        [PollEvent {
            key: 2,
            readiness: Readiness::WRITE
        }]
    );
    assert!(wait(&mut p, NOW).is_empty());
    p.deregister(raw(&a)).unwrap();
}

fn edge_reports_changes_or_is_refused<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    if !p.capabilities().supports(Mode::Edge) {
        assert_eq!(
            p.register(raw(&a), 1, READ, Mode::Edge),
            Err(Error::Unsupported)
        );
        assert!(
            wait(&mut p, NOW).is_empty(),
            "a refused registration registers nothing"
        );
        return;
    }
    p.register(raw(&a), 1, READ, Mode::Edge).unwrap();
    send(&b, b"x");
    assert_eq!(wait(&mut p, Some(PATIENCE)).len(), 1);
    assert!(wait(&mut p, NOW).is_empty(), "no new data, no new edge");
    send(&b, b"y");
    assert_eq!(wait(&mut p, Some(PATIENCE)).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Notifier
// ---------------------------------------------------------------------------------------------

fn notifier_wakes_a_blocked_wait_from_another_thread<P: OpenPoller>()
where
    P::Notifier: 'static,
{
    let (_fds, mut p) = fresh::<P>();
    let remote = p.notifier().try_clone().expect("dup the notifier");
    // A fallback wake through an fd, so a broken notifier fails the test instead of hanging it.
    let (fallback, fallback_peer) = sockets();
    p.register(raw(&fallback), 99, READ, Mode::Level).unwrap();
    let (woke, woke_rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        remote.notify().unwrap();
        if woke_rx.recv_timeout(PATIENCE).is_err() {
            let _ = rustix::io::write(&fallback_peer, b"!");
        }
    });
    let start = Instant::now();
    let mut events = [PollEvent::default(); 8];
    let n = p.wait(&mut events, None).unwrap();
    let waited = start.elapsed();
    let _ = woke.send(());
    assert_eq!(
        n,
        0,
        "a notification is never reported as an event: {:?}",
        &events[..n]
    );
    assert!(
        waited >= Duration::from_millis(40),
        "woke before the notification: {waited:?}"
    );
    assert!(waited < PATIENCE, "the notifier did not wake the wait");
    helper.join().unwrap();
}

/// Tornado's Waker is a flag, not a counter: a burst of wakes costs one wait, and the pipe
/// (or eventfd) is drained by it.
fn notifications_coalesce_into_one_wake<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    for _ in 0..1000 {
        p.notifier().notify().unwrap();
    }
    let start = Instant::now();
    assert!(wait(&mut p, Some(PATIENCE)).is_empty());
    assert!(
        start.elapsed() < PATIENCE,
        "the pending notification woke the wait"
    );
    let quiet = Duration::from_millis(30);
    let start = Instant::now();
    assert!(wait(&mut p, Some(quiet)).is_empty());
    assert!(
        start.elapsed() >= quiet,
        "all 1000 notifications were consumed by one wait"
    );
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// ARCHITECTURE.md: round up, never down. Only "never early" is asserted: a loaded CI machine
/// may always be late.
fn timeouts_are_never_early<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let durations = [0, 1, 400, 1_000, 1_500, 10_000, 25_000].map(Duration::from_micros);
    for d in durations {
        let (start, clock_start) = (Instant::now(), p.now());
        assert!(wait(&mut p, Some(d)).is_empty());
        let (elapsed, clock_elapsed) = (start.elapsed(), p.now() - clock_start);
        assert!(elapsed >= d, "asked {d:?}, woke after {elapsed:?}");
        assert!(
            clock_elapsed >= d,
            "asked {d:?}, the poller's clock says {clock_elapsed:?}"
        );
    }
}

fn clock_is_monotonic<P: OpenPoller>() {
    let (_fds, p) = fresh::<P>();
    let mut last = p.now();
    for _ in 0..1000 {
        let now = p.now();
        assert!(now >= last);
        last = now;
    }
    thread::sleep(Duration::from_millis(2));
    assert!(p.now() - last >= Duration::from_millis(2));
}

/// `reset` (the loop's way out of epoll's dup trap): either every registration is gone and
/// the poller still works (notifier, new registrations), or the poller declines and keeps
/// them all.
fn reset_drops_every_registration_or_declines<P: OpenPoller>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, b) = sockets();
    send(&b, b"x");
    p.register(raw(&a), 1, READ, Mode::Level).unwrap();
    if p.reset().unwrap() {
        assert_eq!(ready_for(&mut p, 1, NOW), None, "dropped by the reset");
        p.notifier().notify().unwrap();
        assert_eq!(
            wait(&mut p, Some(PATIENCE)),
            vec![],
            "the notifier still wakes"
        );
        p.register(raw(&a), 2, READ, Mode::Level).unwrap();
        assert!(ready_for(&mut p, 2, Some(PATIENCE)).is_some());
    } else {
        assert!(ready_for(&mut p, 1, NOW).is_some(), "declined: kept");
    }
}

// ---------------------------------------------------------------------------------------------
// Many fds, FD_SETSIZE
// ---------------------------------------------------------------------------------------------

/// Open `n` socketpairs, or explain why not (RLIMIT_NOFILE too low: the dev-dependencies have
/// no rustix `process` feature to raise it, so the case reports and skips).
fn many_pairs(n: usize) -> Option<Vec<(OwnedFd, OwnedFd)>> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        match try_sockets() {
            Ok(pair) => pairs.push(pair),
            Err(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE) => {
                eprintln!(
                    "skipped: out of fds after {} socketpairs (raise `ulimit -n`)",
                    pairs.len()
                );
                return None;
            }
            Err(e) => panic!("socketpair: {e}"),
        }
    }
    Some(pairs)
}

/// 1000 registered fds (both ends of 500 socketpairs): every one is reported, each once per
/// wait, then a deregistered half goes quiet. A poller with an fd limit (select's
/// `FD_SETSIZE`) refuses the numbers at or above it with `InvalidFd`, and still reports the rest.
fn many_fds<P: OpenPoller + Row>() {
    let _fds = exclusive_fds();
    let mut p = P::open().expect("create the poller");
    let Some(pairs) = many_pairs(500) else { return };
    let ends: Vec<RawFd> = pairs.iter().flat_map(|(a, b)| [raw(a), raw(b)]).collect();
    let fits = |fd: RawFd| P::FD_LIMIT.is_none_or(|limit| fd < limit);
    for (key, &fd) in ends.iter().enumerate() {
        let registered = p.register(fd, key as u64, WRITE, Mode::Level);
        if fits(fd) {
            registered.unwrap();
        } else {
            assert_eq!(registered, Err(Error::InvalidFd { fd }));
        }
    }
    // The refused ones count as seen: they must never be reported.
    let mut seen: Vec<bool> = ends.iter().map(|&fd| !fits(fd)).collect();
    let mut events = vec![PollEvent::default(); 128];
    for _ in 0..64 {
        let n = p.wait(&mut events, NOW).unwrap();
        let mut in_this_wait = vec![false; ends.len()];
        for e in &events[..n] {
            assert_eq!(e.readiness, Readiness::WRITE);
            assert!(fits(ends[e.key as usize]), "a refused fd was reported");
            assert!(
                !std::mem::replace(&mut in_this_wait[e.key as usize], true),
                "key twice in one wait"
            );
            seen[e.key as usize] = true;
        }
        if seen.iter().all(|&s| s) {
            break;
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "{} of {} fds never reported",
        seen.iter().filter(|s| !**s).count(),
        ends.len()
    );
    for &fd in ends[500..].iter().filter(|&&fd| fits(fd)) {
        p.deregister(fd).unwrap();
    }
    for _ in 0..8 {
        let n = p.wait(&mut events, NOW).unwrap();
        assert!(
            events[..n].iter().all(|e| e.key < 500),
            "a deregistered key was reported"
        );
    }
}

fn high_dup(fd: &OwnedFd) -> Option<OwnedFd> {
    match rustix::io::fcntl_dupfd_cloexec(fd, 1024) {
        Ok(high) => Some(high),
        Err(e) => {
            eprintln!("skipped: cannot dup to fd >= 1024 ({e}; `ulimit -n` is too low)");
            None
        }
    }
}

/// An fd numbered above select's `FD_SETSIZE` works on a poller without an fd limit. On one
/// with a limit (select, ARCHITECTURE.md) it gets a clear error, never a write past the fd set,
/// and the poller stays usable.
fn fds_above_fd_setsize_work_or_are_refused<P: OpenPoller + Row>() {
    let (_fds, mut p) = fresh::<P>();
    let (a, _b) = sockets();
    let Some(high) = high_dup(&a) else { return };
    let fd = raw(&high);
    let key = if let Some(limit) = P::FD_LIMIT {
        assert!(fd >= limit);
        assert_eq!(
            p.register(fd, 1, WRITE, Mode::Level),
            Err(Error::InvalidFd { fd })
        );
        assert_eq!(
            p.register(-1, 1, WRITE, Mode::Level),
            Err(Error::InvalidFd { fd: -1 })
        );
        p.register(raw(&a), 2, WRITE, Mode::Level).unwrap();
        2
    } else {
        p.register(fd, 1, WRITE, Mode::Level).unwrap();
        1
    };
    assert_eq!(
        wait(&mut p, NOW),
        [PollEvent {
            key,
            readiness: Readiness::WRITE
        }]
    );
}
