//! A real signal handler hands work to the loop through a `LoopHandle` (the async-signal-safe
//! path: atomics and one notifier write). Its own test binary with `harness = false`: it
//! installs a process-wide SIGUSR1 handler, which must not disturb other tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use loop_core::{EventLoop, LoopHandle, Remote};

type Lp = EventLoop<loop_linux::Epoll, 4, 4, 4>;

static REMOTE: Remote<Lp, 16> = Remote::new();
static HANDLE: OnceLock<LoopHandle<Lp, 16>> = OnceLock::new();
static SIGNALS: AtomicU32 = AtomicU32::new(0);
static RAN: AtomicU32 = AtomicU32::new(0);

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
    println!("signal_context: 2 passed, 0 failed");
}
