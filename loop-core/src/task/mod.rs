//! The task layer: the executor, the current-loop frame leaf futures reach the loop through,
//! the futures themselves (sleep, readiness, combinators), async I/O registrations and the
//! `wait_each`/`every` helpers. It sees the loop only through `current::LoopOps`.

pub(crate) mod current;
pub mod executor;
pub(crate) mod futures;
pub mod io;
pub(crate) mod wait;
