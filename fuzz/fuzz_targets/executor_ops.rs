//! `executor_ops`: the fuzz input is decoded into operations on up to two loops (simulated
//! poller and clock) with executors — a shared `static` one or loop-owned ones from the pool —
//! and the task API: spawn (from outside, from a callback, from a task), `run_once`,
//! `run_sync`, fd readiness, closing and dropping loops, and a full timer heap. Tasks run small
//! programs: `sleep` (also zero and past deadlines), `yield_now`, `readable`, `join`, `select`,
//! `timeout`, nested `with_current_loop` with leaf futures dropped inside, spawning children,
//! and closing their own loop.
//!
//! Every task, callback and run_sync future carries a drop-counting capture. The harness checks
//! (a failed check panics, which libFuzzer reports as a crash):
//! * every capture is dropped exactly once — never twice (checked in `Drop`), never leaked
//!   (checked when the input is done and both loops are gone);
//! * a sleep that completes `Ok` never completes early;
//! * a nested `with_current_loop` sees no loop;
//! * spawns are refused only with the documented errors, and on a dropped loop's executor
//!   with `NotAttached`, handing the future back;
//! * a dropped loop leaves its static executor empty and detached;
//! * and nothing panics or hangs.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use loop_core::sim::SimPoller;
use loop_core::{
    join, readable, select, sleep, sleep_until, timeout, with_current_loop, yield_now, Error,
    EventLoop, Executor, Readiness, Remote, Resource,
};

type Lp = EventLoop<SimPoller<16>, 4, 6, 4>;
const FDS: [i32; 3] = [3, 4, 5];

static EXEC: Executor<3, 1024> = Executor::new();

/// Remotes are `'static`: one is reused once its loop is gone and it can be attached again
/// (a re-attachable `Remote`), else a new one is leaked (kept reachable here).
static REMOTES: std::sync::Mutex<Vec<&'static Remote<Lp, 2>>> = std::sync::Mutex::new(Vec::new());

fn attach_remote(lp: &mut Lp) {
    let mut pool = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    // At most two loops are alive at once: with re-attachable remotes the first few suffice.
    for r in pool.iter().take(4) {
        if lp.attach_remote(r).is_ok() {
            return;
        }
    }
    let r: &'static Remote<Lp, 2> = Box::leak(Box::new(Remote::new()));
    lp.attach_remote(r).expect("a fresh remote attaches");
    pool.push(r);
}

// ------------------------------------------------------------------------------------------
// Drop-counting captures
// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct Ledger {
    next: u32,
    drops: HashMap<u32, u32>,
}

type Shared = Rc<RefCell<Ledger>>;

struct Cap {
    id: u32,
    ledger: Shared,
}

impl Cap {
    fn new(ledger: &Shared) -> Cap {
        let mut l = ledger.borrow_mut();
        let id = l.next;
        l.next += 1;
        l.drops.insert(id, 0);
        Cap {
            id,
            ledger: ledger.clone(),
        }
    }
}

impl Drop for Cap {
    fn drop(&mut self) {
        let mut l = self.ledger.borrow_mut();
        let n = l.drops.get_mut(&self.id).expect("known capture");
        *n += 1;
        assert_eq!(*n, 1, "capture {} dropped twice", self.id);
    }
}

// ------------------------------------------------------------------------------------------
// Task programs
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    Sleep(u8),
    SleepZero,
    SleepPast,
    Yield,
    Readable(i32),
    Join(u8, u8),
    Select(u8, i32),
    Timeout(u8, u8),
    /// `with_current_loop` with a nested call and a sleep and a one-shot watch dropped inside.
    Nested(u8),
    /// Spawn a child (its own program) through the loop.
    SpawnChild,
    /// Close the task's own loop.
    CloseLoop,
}

#[path = "common/input.rs"]
mod input;
use input::Input;

impl Input<'_> {
    fn step(&mut self) -> Step {
        match self.byte() % 16 {
            0 | 1 => Step::Sleep(self.byte()),
            2 => Step::SleepZero,
            3 => Step::SleepPast,
            4 | 5 => Step::Yield,
            6 => Step::Readable(self.fd()),
            7 => Step::Join(self.byte(), self.byte()),
            8 => Step::Select(self.byte(), self.fd()),
            9 | 10 => Step::Timeout(self.byte(), self.byte()),
            11 | 12 => Step::Nested(self.byte()),
            13 | 14 => Step::SpawnChild,
            _ => Step::CloseLoop,
        }
    }
    fn fd(&mut self) -> i32 {
        self.pick(&FDS)
    }
    fn program(&mut self) -> Vec<Step> {
        let n = self.byte() % 6;
        (0..n).map(|_| self.step()).collect()
    }
}

fn ms(b: u8) -> Duration {
    Duration::from_millis(u64::from(b % 50))
}

fn now() -> Option<loop_core::Instant> {
    with_current_loop(|lp: &mut Lp| lp.now())
}

/// A sleep that completed `Ok` must not have completed early.
async fn checked_sleep(d: Duration) {
    let start = now();
    if sleep(d).await.is_ok() {
        if let (Some(a), Some(b)) = (start, now()) {
            assert!(b - a >= d, "sleep({d:?}) completed after {:?}", b - a);
        }
    }
}

fn allowed_spawn_error(e: Error) {
    assert!(
        matches!(
            e,
            Error::Full {
                what: Resource::Tasks
            } | Error::NotAttached
                | Error::Closed
        ),
        "unexpected spawn error {e:?}"
    );
}

/// Spawn through the current loop; a refusal hands the task back (dropped here, once).
fn spawn_here(fut: impl Future<Output = ()> + 'static) {
    let refused = with_current_loop(|lp: &mut Lp| lp.spawn(fut).err().map(|r| r.error));
    if let Some(Some(e)) = refused {
        allowed_spawn_error(e);
    }
}

async fn run_program(steps: Vec<Step>, children: Vec<Vec<Step>>, ledger: Shared, cap: Cap) {
    let _cap = cap;
    let mut children = children.into_iter();
    for step in steps {
        match step {
            Step::Sleep(b) => checked_sleep(ms(b)).await,
            Step::SleepZero => checked_sleep(Duration::ZERO).await,
            Step::SleepPast => {
                if let Some(t) = now() {
                    let _ = sleep_until(t).await;
                }
            }
            Step::Yield => yield_now().await,
            Step::Readable(fd) => {
                let _ = timeout(Duration::from_millis(30), readable(fd)).await;
            }
            Step::Join(a, b) => {
                let _ = join(checked_sleep(ms(a)), checked_sleep(ms(b))).await;
            }
            Step::Select(a, fd) => {
                let _ = select(checked_sleep(ms(a)), readable(fd)).await;
            }
            Step::Timeout(a, b) => {
                let _ = timeout(ms(a), checked_sleep(ms(b))).await;
            }
            Step::Nested(b) => {
                // Arm a sleep and a watch, then drop them inside the closure.
                let mut s = sleep(ms(b).saturating_add(Duration::from_millis(1)));
                let mut r = readable(FDS[b as usize % FDS.len()]);
                std::future::poll_fn(|cx| {
                    let _ = std::pin::Pin::new(&mut s).poll(cx);
                    let _ = std::pin::Pin::new(&mut r).poll(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                let nested = with_current_loop(|_: &mut Lp| {
                    let inner = with_current_loop(|lp: &mut Lp| lp.timer_count());
                    drop(s);
                    drop(r);
                    inner
                });
                assert!(
                    matches!(nested, Some(None)),
                    "nested with_current_loop: {nested:?}"
                );
            }
            Step::SpawnChild => {
                let program = children.next().unwrap_or_default();
                let cap = Cap::new(&ledger);
                let l = ledger.clone();
                spawn_here(run_program(program, Vec::new(), l, cap));
            }
            Step::CloseLoop => {
                let _ = with_current_loop(|lp: &mut Lp| lp.close());
            }
        }
    }
}

/// A task's program and its children's programs.
fn task(input: &mut Input<'_>, ledger: &Shared) -> impl Future<Output = ()> + 'static {
    let steps = input.program();
    let children = steps
        .iter()
        .filter(|s| matches!(s, Step::SpawnChild))
        .map(|_| input.program())
        .collect();
    run_program(steps, children, ledger.clone(), Cap::new(ledger))
}

// ------------------------------------------------------------------------------------------
// The harness
// ------------------------------------------------------------------------------------------

struct Slot {
    lp: Box<Lp>,
    static_exec: bool,
}

fn new_loop(uses_static: bool) -> Slot {
    let mut lp = Box::new(Lp::with_poller(SimPoller::new()));
    attach_remote(&mut lp);
    let static_exec = uses_static && lp.attach_executor(&EXEC).is_ok();
    if !static_exec {
        lp.attach_owned_executor::<3, 1024>()
            .expect("an owned executor attaches");
    }
    Slot { lp, static_exec }
}

/// Drop a loop; `other_static`: the other loop (if any) has attached the static executor
/// since (this one closed before).
fn drop_loop(slot: Slot, other_static: bool) {
    let static_exec = slot.static_exec;
    drop(slot);
    if static_exec && !other_static {
        assert!(EXEC.is_empty(), "a dropped loop left tasks in its executor");
        assert!(
            !EXEC.is_attached(),
            "a dropped loop left its executor attached"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let ledger: Shared = Rc::new(RefCell::new(Ledger::default()));
    let mut loops: [Option<Slot>; 2] = [None, None];
    let mut steps = 0;
    while !input.done() && steps < 200 {
        steps += 1;
        let op = input.byte();
        let which = (op >> 5) as usize % 2;
        match op % 12 {
            0 => {
                if loops[which].is_none() {
                    loops[which] = Some(new_loop(op & 0x10 != 0));
                }
            }
            1 | 2 => {
                let t = task(&mut input, &ledger);
                if let Some(s) = loops[which].as_mut() {
                    if let Err(r) = s.lp.spawn(t) {
                        allowed_spawn_error(r.error);
                    }
                }
            }
            3 => {
                // `Executor::spawn` from outside the loop (same thread).
                let t = task(&mut input, &ledger);
                match EXEC.spawn(t) {
                    Ok(_) => assert!(EXEC.is_attached()),
                    Err(r) => {
                        allowed_spawn_error(r.error);
                        if !EXEC.is_attached() {
                            assert_eq!(r.error, Error::NotAttached);
                        }
                    }
                }
            }
            4 => {
                // Spawn from a callback.
                let t = Box::new(task(&mut input, &ledger));
                if let Some(s) = loops[which].as_mut() {
                    let _ = s.lp.add_callback(move |lp: &mut Lp| {
                        if let Err(r) = lp.spawn(*t) {
                            allowed_spawn_error(r.error);
                        }
                    });
                }
            }
            5 | 6 => {
                let d = ms(input.byte());
                if let Some(s) = loops[which].as_mut() {
                    let r = s.lp.run_once(Some(d));
                    assert!(matches!(r, Ok(()) | Err(Error::Closed)), "run_once: {r:?}");
                }
            }
            7 => {
                let t = task(&mut input, &ledger);
                let cap = Cap::new(&ledger);
                let d = Duration::from_millis(u64::from(input.byte()));
                if let Some(s) = loops[which].as_mut() {
                    let r = s.lp.run_sync(
                        async move {
                            let _cap = cap;
                            t.await;
                        },
                        Some(d),
                    );
                    assert!(
                        matches!(
                            r,
                            Ok(()) | Err(Error::TimedOut | Error::Stopped | Error::Closed)
                        ),
                        "run_sync: {r:?}"
                    );
                }
            }
            8 => {
                let (fd, bits) = (input.fd(), input.byte());
                if let Some(s) = loops[which].as_mut() {
                    if bits & 1 == 0 {
                        s.lp.poller_mut().set_ready(fd, Readiness::READ);
                    } else {
                        s.lp.poller_mut().clear_ready(fd);
                    }
                }
            }
            9 => {
                if let Some(s) = loops[which].as_mut() {
                    s.lp.close();
                }
            }
            10 => {
                if let Some(s) = loops[which].take() {
                    let other = loops[1 - which].as_ref().is_some_and(|o| o.static_exec);
                    drop_loop(s, other);
                }
            }
            _ => {
                // Fill the timer heap: sleeps must then fail, not spin.
                let n = input.byte() % 8;
                if let Some(s) = loops[which].as_mut() {
                    for _ in 0..n {
                        let cap = Cap::new(&ledger);
                        let _ =
                            s.lp.call_later(Duration::from_millis(40), move |_| drop(cap));
                    }
                }
            }
        }
    }
    for which in 0..2 {
        if let Some(s) = loops[which].take() {
            let other = loops[1 - which].as_ref().is_some_and(|o| o.static_exec);
            drop_loop(s, other);
        }
    }
    let l = ledger.borrow();
    for (id, n) in &l.drops {
        assert_eq!(
            *n, 1,
            "capture {id} dropped {n} times after every loop is gone"
        );
    }
});
