//! rustix's error numbers as loop-core's.
//!
//! loop-core knows no OS, so its [`Errno`] is a bare number; both types are foreign here, hence a
//! function instead of a `From` impl.

use loop_core::{Errno, Error};

/// The raw `errno` of a failed syscall.
#[inline]
pub(crate) fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// A refused `epoll_ctl` as the [`Error::Os`] the `Poller` contract names.
#[inline]
pub(crate) fn os(e: rustix::io::Errno) -> Error {
    Error::Os { errno: errno(e) }
}
