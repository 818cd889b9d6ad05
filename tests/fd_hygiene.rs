//! fd hygiene, in its own process (`harness = false`): the second check lowers the process's
//! fd limit, which would break tests running beside it.
//!
//! 1. Every fd the loop holds (epoll, eventfd notifier and its remote duplicate, timerfd, the
//!    listener, accepted and registered sockets) is close-on-exec: a child started with
//!    `exec` sees none of them.
//! 2. Out of fds (`EMFILE`), the accept handler backs off instead of spinning on the
//!    level-triggered listener, reports it, and accepts the waiting connections once fds are
//!    free again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioloop::accept::add_accept_handler;
use ioloop::{Errno, HandlerError, Interest, Remote};
use loop_core::EventLoop;

#[path = "common/hooks.rs"]
mod hooks;
use hooks::handler_errors;

type Lp = EventLoop<ioloop::DefaultPoller, 16, 16, 16>;

static REMOTE: Remote<Lp, 8> = Remote::new();

/// This process's open fds and what each one is (`socket:[123]`, `anon_inode:[eventpoll]`).
fn open_fds() -> BTreeMap<i32, String> {
    let mut fds = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            // The directory being listed.
            if !target.starts_with("/proc/") {
                fds.insert(n, target);
            }
        }
    }
    fds
}

fn cloexec(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the flags of an fd number we hold open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC != 0
}

fn run_until(lp: &mut Lp, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
}

fn loop_fds_are_not_inherited_by_an_exec_child() {
    let before = open_fds();

    let mut lp: Lp = EventLoop::new().unwrap();
    let _handle = lp.attach_remote(&REMOTE).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Rc::new(RefCell::new(0usize));
    let a = accepted.clone();
    add_accept_handler(&mut lp, listener, move |lp, conn, _| {
        *a.borrow_mut() += 1;
        lp.add_owned_handler(conn, Interest::READ, |_, _, _| Ok(()))
            .map_err(|r| r.error)
            .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    let (x, _y) = UnixStream::pair().unwrap();
    lp.add_handler(&x, Interest::READ, |_, _, _| Ok(()))
        .map_err(|r| r.error)
        .unwrap();
    lp.call_later(Duration::from_secs(60), |_| {})
        .map_err(|r| r.error)
        .unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    run_until(&mut lp, Duration::from_secs(5), || *accepted.borrow() == 1);
    assert_eq!(*accepted.borrow(), 1);

    let ours: BTreeMap<i32, String> = open_fds()
        .into_iter()
        .filter(|(n, target)| before.get(n) != Some(target))
        .collect();
    for kind in [
        "anon_inode:[eventpoll]",
        "anon_inode:[eventfd]",
        "anon_inode:[timerfd]",
    ] {
        assert!(
            ours.values().any(|t| t == kind),
            "the loop holds a {kind}: {ours:?}"
        );
    }
    let sockets = ours.values().filter(|t| t.starts_with("socket:")).count();
    assert!(
        sockets >= 5,
        "listener, accepted, client and the pair: {ours:?}"
    );
    for (fd, target) in &ours {
        assert!(cloexec(*fd), "fd {fd} ({target}) is not close-on-exec");
    }

    // What the exec'd process inherited: `ls -l` of the shell's own fd table.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("ls -l /proc/$$/fd")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    let inherited: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split(" -> ").nth(1))
        .collect();
    assert!(!inherited.is_empty(), "the child listed its fds: {listing}");
    for target in &inherited {
        assert!(
            !target.starts_with("anon_inode:") && !ours.values().any(|t| t == target),
            "the child inherited {target}:\n{listing}"
        );
    }
    println!(
        "fd_hygiene: {} loop fds, all close-on-exec; the exec'd child holds only {:?}",
        ours.len(),
        inherited
    );
}

/// Lower the soft fd limit to just above what is open, then take every remaining number:
/// from now on every new fd fails with `EMFILE`. Returns the old limit and the filler fds.
fn exhaust_fds() -> (libc::rlimit, Vec<OwnedFd>) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to plain C structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let highest = open_fds().keys().copied().max().unwrap_or(2) as libc::rlim_t;
        let low = libc::rlimit {
            rlim_cur: highest + 8,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut fillers = vec![OwnedFd::from(devnull)];
    loop {
        match fillers[0].try_clone() {
            Ok(fd) => fillers.push(fd),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                break;
            }
        }
    }
    (old, fillers)
}

fn accept_under_emfile_backs_off_and_recovers() {
    const CLIENTS: usize = 4;
    let mut lp: Lp = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted: Rc<RefCell<Vec<OwnedFd>>> = Rc::default();
    let a = accepted.clone();
    let handle = add_accept_handler(&mut lp, listener, move |_, conn, _| {
        a.borrow_mut().push(conn)
    })
    .map_err(|r| r.error)
    .unwrap();
    let reports = handler_errors(&mut lp);
    // Connected in the kernel's queue, waiting for accept.
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();

    let (old_limit, fillers) = exhaust_fds();
    let before = lp.counters();
    lp.call_later(Duration::from_millis(300), |lp| lp.stop())
        .map_err(|r| r.error)
        .unwrap();
    lp.run().unwrap();
    let during = lp.counters();
    let iterations = during.iterations - before.iterations;
    let calls = during.events_dispatched - before.events_dispatched;
    let backoffs = reports.borrow().len();
    assert_eq!(accepted.borrow().len(), 0, "nothing can be accepted");
    assert!(backoffs >= 1, "the condition was reported");
    assert!(
        reports
            .borrow()
            .iter()
            .all(|e| *e == HandlerError::Os(Errno(libc::EMFILE))),
        "{backoffs} reports, the first: {:?}",
        reports.borrow().first()
    );
    // A spinning level-triggered listener makes tens of thousands of iterations in 300 ms.
    assert!(iterations < 1000, "no spinning: {iterations} iterations");
    assert!(handle.is_active(&lp), "backing off keeps the handler");

    drop(fillers);
    let freed = Instant::now();
    run_until(&mut lp, Duration::from_secs(5), || {
        accepted.borrow().len() == CLIENTS
    });
    let recovered_in = freed.elapsed();
    assert_eq!(
        accepted.borrow().len(),
        CLIENTS,
        "the waiting connections were accepted once fds were free"
    );
    // SAFETY: setrlimit with a valid pointer to the limit we read before.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old_limit), 0);
    }
    println!(
        "fd_hygiene: EMFILE for 300 ms: {iterations} loop iterations, {calls} handler calls, \
         {backoffs} back-offs reported; {CLIENTS} waiting connections accepted {:.0} ms after \
         fds were freed",
        recovered_in.as_secs_f64() * 1e3
    );
    drop(clients);
}

fn main() {
    loop_fds_are_not_inherited_by_an_exec_child();
    accept_under_emfile_backs_off_and_recovers();
    println!("fd_hygiene: 2 passed, 0 failed");
}
