//! Signals as loop events, with real signals (`raise`, `kill`): each loop that registered a
//! signal gets it, removing it from one loop leaves it for the others, the process handler is
//! shared and restored by the last user, and a handler installed before ioloop is chained.
//! Its own process (`harness = false`): the tests change process-wide dispositions, so they
//! run one after the other, and each puts back what it found.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ioloop::signal::MAX_SIGNAL_LOOPS;
use ioloop::{Error, EventLoop, Remote, Resource, SignalExt};

type Lp = EventLoop<8, 8, 8>;

/// A loop with its own remote (leaked: a remote serves one loop for good).
fn new_loop() -> Lp {
    let mut lp: Lp = EventLoop::new().expect("loop");
    let remote: &'static Remote<Lp, 16> = Box::leak(Box::new(Remote::new()));
    lp.attach_remote(remote).expect("attach");
    lp
}

fn disposition(signo: i32) -> libc::sigaction {
    // SAFETY: queries the current action without changing it.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, std::ptr::null(), &mut old), 0);
        old
    }
}

fn handler_of(signo: i32) -> usize {
    disposition(signo).sa_sigaction
}

fn set_handler(signo: i32, handler: usize) {
    // SAFETY: sets a disposition for this process (SIG_DFL, SIG_IGN or one of this file's
    // async-signal-safe handlers).
    unsafe { libc::signal(signo, handler) };
}

fn raise(signo: i32) {
    // SAFETY: delivers `signo` to this thread before returning.
    assert_eq!(unsafe { libc::raise(signo) }, 0);
}

/// Adds a handler for `signo` to `lp` counting into the returned cell.
fn count_on(lp: &mut Lp, signo: i32) -> Rc<Cell<u32>> {
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    lp.on_signal(signo, move |_, got| {
        assert_eq!(got, signo);
        s.set(s.get() + 1);
    })
    .map_err(|r| r.error)
    .expect("on_signal");
    seen
}

fn turn(lp: &mut Lp) {
    lp.run_once(Some(Duration::ZERO)).expect("run_once");
}

fn a_loop_without_a_remote_is_refused() {
    let mut lp: Lp = EventLoop::new().expect("loop");
    let r = lp.on_signal(libc::SIGUSR1, |_, _| {}).unwrap_err();
    assert_eq!(r.error, Error::NoRemote);
}

fn a_handler_runs_on_the_loop_thread_and_removal_restores_the_previous_disposition() {
    // The "previous" disposition the loop must give back: ignore.
    set_handler(libc::SIGUSR1, libc::SIG_IGN);
    let mut lp = new_loop();
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
        handler_of(libc::SIGUSR1),
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

    lp.call_later(Duration::from_secs(30), |_| panic!("signal never handled"))
        .map_err(|r| r.error)
        .unwrap();
    let sender = std::thread::spawn(|| {
        // SAFETY: sends SIGUSR1 to this process (any thread may take it).
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    });
    lp.run().expect("run");
    sender.join().unwrap();
    assert_eq!(seen.get(), 1, "the handler ran once");

    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    assert_eq!(
        handler_of(libc::SIGUSR1),
        libc::SIG_IGN,
        "the previous disposition is back"
    );
    assert!(!lp.remove_signal_handler(libc::SIGUSR1));

    // Dropping the loop restores too.
    let _ = count_on(&mut lp, libc::SIGUSR1);
    drop(lp);
    assert_eq!(
        handler_of(libc::SIGUSR1),
        libc::SIG_IGN,
        "dropping the loop restores it"
    );
    set_handler(libc::SIGUSR1, libc::SIG_DFL);
}

fn same_signal_on_two_loops_reaches_both() {
    let mut l1 = new_loop();
    let mut l2 = new_loop();
    let s1 = count_on(&mut l1, libc::SIGUSR1);
    let s2 = count_on(&mut l2, libc::SIGUSR1);
    raise(libc::SIGUSR1);
    turn(&mut l1);
    turn(&mut l2);
    assert_eq!((s1.get(), s2.get()), (1, 1), "both loops ran their handler");
    // And in the other order.
    raise(libc::SIGUSR1);
    turn(&mut l2);
    turn(&mut l1);
    assert_eq!((s1.get(), s2.get()), (2, 2));
    drop((l1, l2));
    assert_eq!(handler_of(libc::SIGUSR1), libc::SIG_DFL);
}

fn removing_a_signal_from_one_loop_keeps_it_for_the_other() {
    let mut l1 = new_loop();
    let mut l2 = new_loop();
    let s1 = count_on(&mut l1, libc::SIGUSR1);
    let s2 = count_on(&mut l2, libc::SIGUSR1);
    assert!(l2.remove_signal_handler(libc::SIGUSR1));
    assert_ne!(
        handler_of(libc::SIGUSR1),
        libc::SIG_DFL,
        "l1 still handles it: the default disposition is not back"
    );
    // With the default disposition this would end the process.
    raise(libc::SIGUSR1);
    turn(&mut l1);
    turn(&mut l2);
    assert_eq!((s1.get(), s2.get()), (1, 0), "only l1 handles it now");

    // Closing (and dropping) a loop that handles it is a removal too.
    let _ = count_on(&mut l2, libc::SIGUSR1);
    l2.close();
    raise(libc::SIGUSR1);
    turn(&mut l1);
    assert_eq!(s1.get(), 2);
    let mut l3 = new_loop();
    let _ = count_on(&mut l3, libc::SIGUSR1);
    drop(l3);
    raise(libc::SIGUSR1);
    turn(&mut l1);
    assert_eq!(s1.get(), 3);

    assert!(l1.remove_signal_handler(libc::SIGUSR1));
    assert_eq!(
        handler_of(libc::SIGUSR1),
        libc::SIG_DFL,
        "the last user restores it"
    );
}

fn different_signals_on_two_loops_each_reach_their_own() {
    let mut l1 = new_loop();
    let mut l2 = new_loop();
    let s1 = count_on(&mut l1, libc::SIGUSR1);
    let s2 = count_on(&mut l2, libc::SIGUSR2);
    raise(libc::SIGUSR1);
    raise(libc::SIGUSR2);
    turn(&mut l1);
    turn(&mut l2);
    assert_eq!(
        (s1.get(), s2.get()),
        (1, 1),
        "neither swallowed the other's"
    );
    raise(libc::SIGUSR2);
    raise(libc::SIGUSR1);
    turn(&mut l2);
    turn(&mut l1);
    assert_eq!((s1.get(), s2.get()), (2, 2));
    drop((l1, l2));
    assert_eq!(handler_of(libc::SIGUSR1), libc::SIG_DFL);
    assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_DFL);
}

fn signal_on_loops_on_two_threads() {
    // Every loop thread: register, meet, run until its handlers saw what it waits for.
    let ready = Arc::new(Barrier::new(3));
    let loops: Vec<_> = [vec![libc::SIGUSR1], vec![libc::SIGUSR1, libc::SIGUSR2]]
        .into_iter()
        .map(|signals| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut lp = new_loop();
                let want = signals.len() as u32;
                let seen = Rc::new(Cell::new(0));
                for signo in signals {
                    let s = seen.clone();
                    lp.on_signal(signo, move |lp, _| {
                        s.set(s.get() + 1);
                        if s.get() == want {
                            lp.stop();
                        }
                    })
                    .map_err(|r| r.error)
                    .expect("on_signal");
                }
                lp.call_later(Duration::from_secs(30), |_| panic!("signal never handled"))
                    .map_err(|r| r.error)
                    .unwrap();
                ready.wait();
                lp.run().expect("run");
                seen.get()
            })
        })
        .collect();
    ready.wait();
    // SAFETY: sends signals to this process; any thread may take them.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGUSR1);
        libc::kill(libc::getpid(), libc::SIGUSR2);
    }
    let seen: Vec<u32> = loops.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        seen,
        [1, 2],
        "each thread's loop got every signal it handles"
    );
    assert_eq!(handler_of(libc::SIGUSR1), libc::SIG_DFL);
    assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_DFL);
}

fn loop_closed_and_created_again_gets_signals() {
    let mut keeper = new_loop();
    let kept = count_on(&mut keeper, libc::SIGUSR1);
    // More rounds than the registry has entries: each closed loop gives its entry back.
    for round in 0..3 * MAX_SIGNAL_LOOPS as u32 {
        let mut lp = new_loop();
        let seen = count_on(&mut lp, libc::SIGUSR1);
        let _ = count_on(&mut lp, libc::SIGUSR2);
        raise(libc::SIGUSR1);
        turn(&mut lp);
        turn(&mut keeper);
        assert_eq!(seen.get(), 1, "round {round}: the new loop got it");
        assert_eq!(kept.get(), round + 1, "round {round}: the keeper got it");
        if round % 2 == 0 {
            lp.close();
        } else {
            drop(lp);
        }
        assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_DFL);
    }
    drop(keeper);
    assert_eq!(handler_of(libc::SIGUSR1), libc::SIG_DFL);
}

fn more_loops_than_the_registry_holds_are_refused_with_the_handler_back() {
    let mut loops: Vec<Lp> = (0..MAX_SIGNAL_LOOPS).map(|_| new_loop()).collect();
    let counts: Vec<_> = loops
        .iter_mut()
        .map(|lp| count_on(lp, libc::SIGUSR2))
        .collect();
    let mut extra = new_loop();
    let handed_back = Rc::new(Cell::new(0));
    let h = handed_back.clone();
    let refused = extra
        .on_signal(libc::SIGUSR2, move |_, _| h.set(h.get() + 1))
        .unwrap_err();
    assert_eq!(
        refused.error,
        Error::Full {
            what: Resource::SignalHandlers
        }
    );
    let mut handler = refused.value;
    handler(&mut extra, libc::SIGUSR2);
    assert_eq!(handed_back.get(), 1, "the refused handler came back intact");

    // The refusal changed nothing for the loops that were accepted.
    raise(libc::SIGUSR2);
    for lp in &mut loops {
        turn(lp);
    }
    assert!(counts.iter().all(|c| c.get() == 1));

    // One loop gone, the extra one gets in.
    drop(loops.pop());
    extra
        .on_signal(libc::SIGUSR2, handler)
        .map_err(|r| r.error)
        .expect("an entry is free again");
    raise(libc::SIGUSR2);
    turn(&mut extra);
    assert_eq!(handed_back.get(), 2);
    drop((loops, extra));
    assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_DFL);
}

static OLD_STYLE: AtomicU32 = AtomicU32::new(0);
static SIGINFO_STYLE: AtomicU32 = AtomicU32::new(0);
static SIGINFO_SIGNO: AtomicI32 = AtomicI32::new(0);

extern "C" fn old_style(_: libc::c_int) {
    OLD_STYLE.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn siginfo_style(signo: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    SIGINFO_STYLE.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let from_info = unsafe { info.as_ref() }.map_or(-1, |i| i.si_signo);
    SIGINFO_SIGNO.store(
        if from_info == signo { signo } else { -1 },
        Ordering::Relaxed,
    );
}

fn a_handler_installed_before_ioloop_is_chained_and_restored_after() {
    let old_style_addr = old_style as extern "C" fn(libc::c_int) as usize;
    set_handler(libc::SIGUSR1, old_style_addr);
    let mut l1 = new_loop();
    let mut l2 = new_loop();
    let s1 = count_on(&mut l1, libc::SIGUSR1);
    let s2 = count_on(&mut l2, libc::SIGUSR1);
    raise(libc::SIGUSR1);
    turn(&mut l1);
    turn(&mut l2);
    assert_eq!(
        OLD_STYLE.load(Ordering::Relaxed),
        1,
        "the first handler ran"
    );
    assert_eq!((s1.get(), s2.get()), (1, 1), "and so did the loops'");
    drop(l1);
    raise(libc::SIGUSR1);
    turn(&mut l2);
    assert_eq!(OLD_STYLE.load(Ordering::Relaxed), 2);
    assert_eq!(s2.get(), 2);
    drop(l2);
    assert_eq!(
        handler_of(libc::SIGUSR1),
        old_style_addr,
        "the first handler is back"
    );
    raise(libc::SIGUSR1);
    assert_eq!(OLD_STYLE.load(Ordering::Relaxed), 3);
    set_handler(libc::SIGUSR1, libc::SIG_DFL);
}

fn a_siginfo_handler_installed_before_ioloop_gets_its_siginfo() {
    let addr = siginfo_style as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as usize;
    // SAFETY: installs this file's async-signal-safe SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = addr;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let mut lp = new_loop();
    let seen = count_on(&mut lp, libc::SIGUSR2);
    raise(libc::SIGUSR2);
    turn(&mut lp);
    assert_eq!(seen.get(), 1);
    assert_eq!(SIGINFO_STYLE.load(Ordering::Relaxed), 1);
    assert_eq!(
        SIGINFO_SIGNO.load(Ordering::Relaxed),
        libc::SIGUSR2,
        "it got the kernel's siginfo"
    );
    drop(lp);
    let back = disposition(libc::SIGUSR2);
    assert_eq!(back.sa_sigaction, addr);
    assert_ne!(back.sa_flags & libc::SA_SIGINFO, 0, "with its flags");
    set_handler(libc::SIGUSR2, libc::SIG_DFL);
}

static OVER_RAN: AtomicU32 = AtomicU32::new(0);
static OVER_PREV: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A handler installed over ioloop's that chains to it, as signal-hook-registry does.
extern "C" fn over(signo: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    OVER_RAN.fetch_add(1, Ordering::Relaxed);
    let prev = OVER_PREV.load(Ordering::Relaxed);
    if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
        type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
        // SAFETY: `prev` is ioloop's handler, an SA_SIGINFO handler (checked by the test).
        let f = unsafe { std::mem::transmute::<usize, Action>(prev) };
        f(signo, info, context);
    }
}

fn a_handler_installed_over_ioloops_that_chains_back_does_not_recurse() {
    let over_addr =
        over as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    let mut lp = new_loop();
    let seen = count_on(&mut lp, libc::SIGUSR2);
    // Someone installs over ioloop's handler and chains to it.
    // SAFETY: installs this file's async-signal-safe handler, reading the one it replaces.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = over_addr;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, &mut old), 0);
        assert_ne!(old.sa_flags & libc::SA_SIGINFO, 0);
        OVER_PREV.store(old.sa_sigaction, Ordering::Relaxed);
    }
    raise(libc::SIGUSR2);
    turn(&mut lp);
    assert_eq!((OVER_RAN.load(Ordering::Relaxed), seen.get()), (1, 1));
    // The loop lets go: ioloop leaves the newer handler in place (it may chain to ioloop's).
    drop(lp);
    assert_eq!(handler_of(libc::SIGUSR2), over_addr);
    // A loop adds the signal again: ioloop's handler now chains to `over`, which chains back.
    let mut lp = new_loop();
    let seen = count_on(&mut lp, libc::SIGUSR2);
    raise(libc::SIGUSR2);
    turn(&mut lp);
    assert_eq!(
        (OVER_RAN.load(Ordering::Relaxed), seen.get()),
        (2, 1),
        "each ran once: no endless recursion"
    );
    drop(lp);
    assert_eq!(handler_of(libc::SIGUSR2), over_addr, "`over` is back");
    raise(libc::SIGUSR2);
    assert_eq!(
        OVER_RAN.load(Ordering::Relaxed),
        3,
        "ioloop's handler, called by `over`, no longer calls it back"
    );
    set_handler(libc::SIGUSR2, libc::SIG_DFL);
}

fn fault_signals_are_refused() {
    let mut lp = new_loop();
    for signo in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        let before = handler_of(signo);
        let r = lp.on_signal(signo, |_, _| {}).unwrap_err();
        assert_eq!(
            r.error,
            Error::Os {
                errno: ioloop::Errno::EINVAL
            }
        );
        assert_eq!(handler_of(signo), before, "left alone");
    }
    // The refusals left the loop's table and registry entry as they were.
    let seen = count_on(&mut lp, libc::SIGUSR1);
    raise(libc::SIGUSR1);
    turn(&mut lp);
    assert_eq!(seen.get(), 1);
}

fn main() {
    let tests: &[(&str, fn())] = &[
        (
            "a_loop_without_a_remote_is_refused",
            a_loop_without_a_remote_is_refused,
        ),
        (
            "a_handler_runs_on_the_loop_thread_and_removal_restores_the_previous_disposition",
            a_handler_runs_on_the_loop_thread_and_removal_restores_the_previous_disposition,
        ),
        (
            "same_signal_on_two_loops_reaches_both",
            same_signal_on_two_loops_reaches_both,
        ),
        (
            "removing_a_signal_from_one_loop_keeps_it_for_the_other",
            removing_a_signal_from_one_loop_keeps_it_for_the_other,
        ),
        (
            "different_signals_on_two_loops_each_reach_their_own",
            different_signals_on_two_loops_each_reach_their_own,
        ),
        (
            "signal_on_loops_on_two_threads",
            signal_on_loops_on_two_threads,
        ),
        (
            "loop_closed_and_created_again_gets_signals",
            loop_closed_and_created_again_gets_signals,
        ),
        (
            "more_loops_than_the_registry_holds_are_refused_with_the_handler_back",
            more_loops_than_the_registry_holds_are_refused_with_the_handler_back,
        ),
        (
            "a_handler_installed_before_ioloop_is_chained_and_restored_after",
            a_handler_installed_before_ioloop_is_chained_and_restored_after,
        ),
        (
            "a_siginfo_handler_installed_before_ioloop_gets_its_siginfo",
            a_siginfo_handler_installed_before_ioloop_gets_its_siginfo,
        ),
        (
            "a_handler_installed_over_ioloops_that_chains_back_does_not_recurse",
            a_handler_installed_over_ioloops_that_chains_back_does_not_recurse,
        ),
        ("fault_signals_are_refused", fault_signals_are_refused),
    ];
    // One test, by name, as the only argument (any other argument, such as the harness's
    // flags, runs them all).
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let mut passed = 0;
    for (name, test) in tests {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        // On its own line first: a test that kills the process leaves its name behind.
        print!("test {name} ... ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        test();
        println!("ok");
        passed += 1;
    }
    println!("signals: {passed} passed, 0 failed");
}
