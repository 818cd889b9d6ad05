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
//! one list of kqueue targets.) Two forms:
//!
//! - `for_each_poller!(cases: a, b, c);` — each case is a generic `fn a<P: ...>()`; every row
//!   gets `#[test] fn a() { super::a::<P>() }`, so a case is written once and named once.
//! - `for_each_poller! { items }` — the items are expanded in every row's module, which holds
//!   `use super::*;` and `type P = <the row's poller>;`: a setup (a loop type, statics) is
//!   written once too.
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

macro_rules! rows {
    ($($(#[$cfg:meta])* $name:literal => $ty:ty, $limit:expr;)*) => {$(
        $(#[$cfg])*
        impl Row for $ty {
            const NAME: &'static str = $name;
            const FD_LIMIT: Option<i32> = $limit;
        }
    )*};
}

// The rows' pollers; keep in step with `__poller_row!` below.
rows! {
    #[cfg(target_os = "linux")]
    "epoll" => ioloop::linux::Epoll, None;
    #[cfg(kqueue)]
    "kqueue" => ioloop::bsd::Kqueue, None;
    "poll" => ioloop::portable::Poll, None;
    "select" => ioloop::portable::Select, Some(1024);
}

/// See the module docs.
macro_rules! for_each_poller {
    (cases: $($case:ident),* $(,)?) => {
        for_each_poller! { $( #[test] fn $case() { super::$case::<P>(); } )* }
    };
    ($($items:tt)*) => {
        __poller_row!(epoll { $($items)* });
        __poller_row!(kqueue { $($items)* });
        __poller_row!(poll { $($items)* });
        __poller_row!(select { $($items)* });
    };
}

/// One row of [`for_each_poller!`]: its module, its target gate and its poller.
macro_rules! __poller_row {
    (@mod $name:ident, $ty:ty, { $($items:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(dead_code)]
            type P = $ty;
            $($items)*
        }
    };
    (epoll $items:tt) => {
        #[cfg(target_os = "linux")]
        __poller_row!(@mod epoll, ioloop::linux::Epoll, $items);
    };
    (kqueue $items:tt) => {
        #[cfg(kqueue)]
        __poller_row!(@mod kqueue, ioloop::bsd::Kqueue, $items);
    };
    (poll $items:tt) => {
        __poller_row!(@mod poll, ioloop::portable::Poll, $items);
    };
    (select $items:tt) => {
        __poller_row!(@mod select, ioloop::portable::Select, $items);
    };
}
