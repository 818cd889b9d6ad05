//! `set_cloexec` and `set_nonblocking` on real fds.

use std::os::unix::net::UnixStream;

use loop_core::Errno;
use rustix::io::{fcntl_getfd, FdFlags};

#[test]
fn set_nonblocking_makes_an_empty_read_fail_with_eagain() {
    let (a, _b) = UnixStream::pair().unwrap();
    loop_linux::set_nonblocking(&a).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        rustix::io::read(&a, &mut buf),
        Err(rustix::io::Errno::AGAIN)
    );
}

#[test]
fn set_cloexec_sets_fd_cloexec() {
    let (a, _b) = UnixStream::pair().unwrap();
    rustix::io::fcntl_setfd(&a, FdFlags::empty()).unwrap();
    loop_linux::set_cloexec(&a).unwrap();
    assert!(fcntl_getfd(&a).unwrap().contains(FdFlags::CLOEXEC));
}

#[test]
fn helpers_report_the_kernels_error_for_a_closed_fd() {
    // SAFETY: i32::MAX is above any fd limit, so never open; the borrow is only handed to the
    // kernel, which answers EBADF.
    let closed = unsafe { rustix::fd::BorrowedFd::borrow_raw(i32::MAX) };
    assert_eq!(loop_linux::set_nonblocking(closed), Err(Errno::EBADF));
    assert_eq!(loop_linux::set_cloexec(closed), Err(Errno::EBADF));
}
