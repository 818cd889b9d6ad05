//! A loop ready for tasks: `attached_loop!(Lp)` makes an `Lp` (any `EventLoop` type with an
//! opening poller) and attaches a `static` remote (16 slots) and executor (by default 8 tasks
//! of 4096 bytes; `attached_loop!(Lp, tasks, bytes)` to choose) made at that call site, so each
//! test gets its own (each is attached once for good). Returns `(lp, &'static executor)`.
//! Include with `#[macro_use] #[path = "common/attached.rs"] mod attached;`.

macro_rules! attached_loop {
    ($lp:ty) => {
        attached_loop!($lp, 8, 4096)
    };
    ($lp:ty, $tasks:expr, $bytes:expr) => {{
        static REMOTE: ioloop::Remote<$lp, 16> = ioloop::Remote::new();
        static EXEC: ioloop::Executor<$tasks, $bytes> = ioloop::Executor::new();
        let mut lp = <$lp>::new().expect("open the loop");
        lp.attach_remote(&REMOTE).expect("attach the remote");
        lp.attach_executor(&EXEC).expect("attach the executor");
        (lp, &EXEC)
    }};
}

/// Runs two fallible futures side by side on `lp` (for at most 20 s) and returns the second's
/// value; the run timing out, or either future failing, fails the test (the first checked
/// first). Include as above.
#[allow(unused_macros)]
macro_rules! side_by_side {
    ($lp:expr, $first:expr, $second:expr) => {{
        let limit = Some(std::time::Duration::from_secs(20));
        let (first, second) = $lp
            .run_sync(ioloop::join($first, $second), limit)
            .expect("the loop ran both to the end");
        first.expect("the first side succeeded");
        second.expect("the second side succeeded")
    }};
}
