//! Flags a loop needs on the fds it watches.
//!
//! Both helpers are one `ioctl` each (`FIOCLEX`, `FIONBIO`), which the kernel applies to any fd,
//! instead of `fcntl`'s read-modify-write pair.

use loop_core::Errno;
use rustix::fd::AsFd;

use crate::errno::errno;

/// Mark `fd` close-on-exec, so a child started with `exec` does not inherit it (and cannot keep a
/// socket's peer from seeing the hang-up).
///
/// # Errors
/// The kernel's error, for example `EBADF` for a closed fd.
pub fn set_cloexec(fd: impl AsFd) -> Result<(), Errno> {
    rustix::io::ioctl_fioclex(fd).map_err(errno)
}

/// Put `fd`'s open file description into non-blocking mode.
///
/// A level-triggered loop calls a handler whenever the fd is ready; the handler then reads or
/// writes until `EAGAIN`. A blocking fd would stall the whole loop on the first short read.
/// The flag belongs to the open file description, so `dup`ed fds share it.
///
/// # Errors
/// The kernel's error, for example `EBADF` for a closed fd.
pub fn set_nonblocking(fd: impl AsFd) -> Result<(), Errno> {
    rustix::io::ioctl_fionbio(fd, true).map_err(errno)
}
