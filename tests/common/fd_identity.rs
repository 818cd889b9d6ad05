//! Whether an fd number still refers to the same open file: tests run in parallel threads, so
//! a closed number may already have been reused by another test. The identity (`st_dev`,
//! `st_ino`), not the number, tells.

use std::os::fd::BorrowedFd;

/// The identity of the open file an fd number stands for.
#[allow(clippy::unnecessary_cast)] // st_dev / st_ino widths differ between platforms
pub fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat only inspects the number and nothing else is done with the borrow; a
    // closed number answers EBADF.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::fs::fstat(b)
        .ok()
        .map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// Whether `fd` still refers to the file it referred to when `was` was taken.
pub fn still_open(fd: i32, was: Option<(u64, u64)>) -> bool {
    was.is_some() && identity(fd) == was
}
