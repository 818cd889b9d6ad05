//! The task layer: the executor, the current-loop frame leaf futures reach the loop through,
//! the futures themselves (sleep, readiness, combinators), async I/O registrations and the
//! `wait_each`/`every` helpers. It sees the loop only through `current::LoopOps`.

#[allow(unsafe_code)] // the current-loop frame: an erased `*mut dyn LoopOps`
pub(crate) mod current;
#[allow(unsafe_code)] // type-erased futures in static slots, the waker vtable
pub mod executor;
#[allow(unsafe_code)] // pin projections of the combinators
pub(crate) mod futures;
pub mod io;
#[allow(unsafe_code)] // pin projection; a waker vtable over a stack `Wake`
pub(crate) mod wait;
