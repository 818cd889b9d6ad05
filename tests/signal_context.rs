//! A real signal handler hands work to the loop through a `LoopHandle` (the async-signal-safe
//! path: atomics and one notifier write). Its own test binary with `harness = false`: it
//! installs a process-wide SIGUSR1 handler, which must not disturb other tests. Then a loop
//! handles SIGUSR1 as well: ioloop's handler chains to the first one and restores it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ioloop::SignalExt;
use loop_core::{EventLoop, LoopHandle, Remote};

type Lp = EventLoop<loop_linux::Epoll, 4, 4, 4>;

static REMOTE: Remote<Lp, 16> = Remote::new();
static HANDLE: OnceLock<LoopHandle<Lp, 16>> = OnceLock::new();
static SIGNALS: AtomicU32 = AtomicU32::new(0);
static RAN: AtomicU32 = AtomicU32::new(0);

fn disposition(signo: i32) -> usize {
    // SAFETY: queries the current action without changing it.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    if let Some(h) = HANDLE.get() {
        // Captures nothing: building and dropping it never allocates.
        let _ = h.add_callback(|_| {
            RAN.fetch_add(1, Ordering::Relaxed);
        });
    }
}

fn main() {
    let mut lp: Lp = EventLoop::new().expect("epoll");
    let handle = lp.attach_remote(&REMOTE).expect("attach");
    HANDLE.set(handle).expect("set once");
    // SAFETY: installs a handler that only touches atomics and the lock-free remote queue.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    lp.call_later(Duration::from_secs(30), |_| {
        panic!("signal callbacks never ran")
    })
    .map_err(|r| r.error)
    .unwrap();

    // 1. Raised on the loop thread itself (the handler interrupts this thread).
    // SAFETY: raise only delivers the signal to this thread.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    lp.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        RAN.load(Ordering::Relaxed),
        1,
        "callback queued from the signal handler ran"
    );

    // 2. Sent to the process from another thread while the loop sleeps in epoll_wait.
    let sender = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: kill to our own pid delivers SIGUSR1 to some thread of this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    });
    while RAN.load(Ordering::Relaxed) < 2 {
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
    }
    sender.join().unwrap();
    assert_eq!(SIGNALS.load(Ordering::Relaxed), 2);

    // 3. The loop handles the same signal too: ioloop's handler chains to this one, so the
    //    signal reaches both, and this handler is back in place once the loop removes it.
    let ours = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    lp.on_signal(libc::SIGUSR1, move |_, _| s.set(s.get() + 1))
        .map_err(|r| r.error)
        .expect("on_signal");
    assert_ne!(
        disposition(libc::SIGUSR1),
        ours,
        "ioloop's handler is installed"
    );
    // SAFETY: raise only delivers the signal to this thread.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    while RAN.load(Ordering::Relaxed) < 3 || seen.get() < 1 {
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(
        SIGNALS.load(Ordering::Relaxed),
        3,
        "the first handler ran once"
    );
    assert_eq!(seen.get(), 1, "the loop's handler ran once");
    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    assert_eq!(
        disposition(libc::SIGUSR1),
        ours,
        "the first handler is back"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
    while RAN.load(Ordering::Relaxed) < 4 {
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(seen.get(), 1, "the removed handler no longer runs");
    println!("signal_context: 3 passed, 0 failed");
}
