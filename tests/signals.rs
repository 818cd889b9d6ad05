//! Signals as loop events: a real SIGUSR1 to the process runs the loop's handler on the loop
//! thread; removing it restores the previous disposition. Its own process (`harness = false`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use ioloop::{Error, EventLoop, Remote, SignalExt};

type Lp = EventLoop<8, 8, 8>;
static REMOTE: Remote<Lp, 16> = Remote::new();

fn disposition(signo: i32) -> usize {
    // SAFETY: queries the current action without changing it.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

fn main() {
    let mut passed = 0;
    // The "previous" disposition the loop must give back: ignore.
    // SAFETY: sets SIGUSR1 to SIG_IGN for this process.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_IGN);

    let mut lp: Lp = EventLoop::new().expect("loop");
    // Without a remote there is no way to wake the loop from a signal handler.
    let r = lp.on_signal(libc::SIGUSR1, |_, _| {}).unwrap_err();
    assert_eq!(r.error, Error::NoRemote);
    passed += 1;

    lp.attach_remote(&REMOTE).expect("attach");
    let main_thread = std::thread::current().id();
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    lp.on_signal(libc::SIGUSR1, move |lp, signo| {
        assert_eq!(signo, libc::SIGUSR1);
        assert_eq!(
            std::thread::current().id(),
            main_thread,
            "handler runs on the loop thread"
        );
        s.set(s.get() + 1);
        lp.stop();
    })
    .map_err(|r| r.error)
    .expect("on_signal");
    assert_ne!(
        disposition(libc::SIGUSR1),
        libc::SIG_IGN,
        "our handler is installed"
    );
    assert_eq!(
        lp.on_signal(libc::SIGUSR1, |_, _| {}).unwrap_err().error,
        Error::InvalidSignal {
            signo: libc::SIGUSR1
        }
    );
    assert_eq!(
        lp.on_signal(0, |_, _| {}).unwrap_err().error,
        Error::InvalidSignal { signo: 0 }
    );
    passed += 1;

    lp.call_later(Duration::from_secs(30), |_| panic!("signal never handled"))
        .map_err(|r| r.error)
        .unwrap();
    let sender = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: sends SIGUSR1 to this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    });
    lp.run().expect("run");
    sender.join().unwrap();
    assert_eq!(seen.get(), 1, "the handler ran once");
    passed += 1;

    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    assert_eq!(
        disposition(libc::SIGUSR1),
        libc::SIG_IGN,
        "the previous disposition is back"
    );
    assert!(!lp.remove_signal_handler(libc::SIGUSR1));
    passed += 1;

    // Dropping the loop restores too.
    let s = seen.clone();
    lp.on_signal(libc::SIGUSR1, move |_, _| s.set(s.get() + 1))
        .map_err(|r| r.error)
        .unwrap();
    drop(lp);
    assert_eq!(
        disposition(libc::SIGUSR1),
        libc::SIG_IGN,
        "dropping the loop restores it"
    );
    passed += 1;
    println!("signals: {passed} passed, 0 failed");
}
