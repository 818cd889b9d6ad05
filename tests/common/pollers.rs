//! The one per-poller harness: a test body written once runs once per real poller.
//!
//! Include it with `#[macro_use] #[path = "common/pollers.rs"] mod pollers;` (before the first
//! use: `macro_rules!` scope is textual). The rows, each gated by target so the suite compiles
//! wherever the crate does:
//!
//! | row      | poller                      | where                       |
//! |----------|-----------------------------|-----------------------------|
//! | `epoll`  | `ioloop::linux::Epoll`      | `target_os = "linux"`       |
//! | `kqueue` | `ioloop::bsd::Kqueue`       | `cfg(kqueue)`: BSDs, macOS  |
//! | `poll`   | `ioloop::portable::Poll`    | everywhere                  |
//! | `select` | `ioloop::portable::Select`  | everywhere                  |
//!
//! (`cfg(kqueue)` comes from the crate's build.rs, which takes it from `loop-bsd/build.rs`, the
//! one list of kqueue targets.) Three forms:
//!
//! - `for_each_poller!(cases: a, b, c);` — each case is a generic `fn a<P: ...>()`; every row
//!   gets `#[test] fn a() { super::a::<P>() }`, so a case is written once and named once.
//! - `for_each_poller! { items }` — the items are expanded in every row's module, which holds
//!   `use super::*;` and `type P = <the row's poller>;`: a setup (a loop type, statics) is
//!   written once too.
//! - `for_each_poller!(call: f);` — in a function body (a test binary with its own `main`):
//!   `f::<P>()` for every row, in row order.
//!
//! Each row is a module named after it, so `cargo test epoll::` runs one poller and
//! `cargo test <case>` one case on all of them. What differs between pollers is asked of
//! [`Row`], implemented for every row's poller, never decided by which row a test sits in.

/// What a test may need to know about the poller of a row.
#[allow(dead_code)] // not every test binary asks
pub trait Row {
    /// The row's name (`"epoll"`, `"kqueue"`, `"poll"`, `"select"`).
    const NAME: &'static str;
    /// The first fd number the poller refuses (select's `FD_SETSIZE`), if it has one.
    const FD_LIMIT: Option<i32>;
}

/// The rows, the one list of them: each row's target gate, module name, poller and fd limit,
/// handed to `$m!` one row at a time.
#[rustfmt::skip]
macro_rules! __poller_rows {
    ($m:ident ! $args:tt) => {
        $m!(#[cfg(target_os = "linux")] epoll, ioloop::linux::Epoll, None, $args);
        $m!(#[cfg(kqueue)] kqueue, ioloop::bsd::Kqueue, None, $args);
        $m!(#[cfg(all())] poll, ioloop::portable::Poll, None, $args);
        $m!(#[cfg(all())] select, ioloop::portable::Select, Some(ioloop::portable::FD_SETSIZE as i32), $args);
    };
}

/// One row's [`Row`] implementation.
macro_rules! __poller_row_impl {
    (#[$cfg:meta] $name:ident, $ty:ty, $limit:expr, ()) => {
        #[$cfg]
        impl Row for $ty {
            const NAME: &'static str = stringify!($name);
            const FD_LIMIT: Option<i32> = $limit;
        }
    };
}

__poller_rows!(__poller_row_impl!());

/// See the module docs.
macro_rules! for_each_poller {
    (cases: $($case:ident),* $(,)?) => {
        for_each_poller! { $( #[test] fn $case() { super::$case::<P>(); } )* }
    };
    (call: $f:ident) => {
        __poller_rows!(__poller_row_call!($f))
    };
    ($($items:tt)*) => {
        __poller_rows!(__poller_row_mod!{ $($items)* });
    };
}

/// One row's module of [`for_each_poller!`].
macro_rules! __poller_row_mod {
    (#[$cfg:meta] $name:ident, $ty:ty, $limit:expr, { $($items:tt)* }) => {
        #[$cfg]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(dead_code)]
            type P = $ty;
            $($items)*
        }
    };
}

/// One row's call of `for_each_poller!(call: f)`: `f::<P>()` in statement position.
macro_rules! __poller_row_call {
    (#[$cfg:meta] $name:ident, $ty:ty, $limit:expr, ($f:ident)) => {
        #[$cfg]
        $f::<$ty>();
    };
}
