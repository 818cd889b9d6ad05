//! fd-level helpers: error conversion, the flags a watched fd needs, a liveness probe, close.

use loop_core::{Errno, Error, RawFd};
use rustix::fd::{AsFd, BorrowedFd};

/// rustix's error as the core's plain error number (both types are foreign to the platform
/// crates, hence a function rather than a `From` impl).
///
/// ```
/// assert_eq!(loop_posix::errno(rustix::io::Errno::BADF), loop_core::Errno::EBADF);
/// ```
#[inline]
pub fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// A refused kernel call as the [`Error::Os`] the `Poller` contract names.
///
/// ```
/// use loop_core::{Errno, Error};
/// let e = loop_posix::os(rustix::io::Errno::MFILE);
/// assert_eq!(e, Error::Os { errno: Errno::EMFILE });
/// ```
#[inline]
pub fn os(e: rustix::io::Errno) -> Error {
    Error::Os { errno: errno(e) }
}

/// The [`Error::Os`] for an error number a poller decides on itself (`EEXIST` for a second
/// registration, `ENOENT` for an unknown fd), as the kernel pollers would report it.
///
/// ```
/// use loop_core::{Errno, Error};
/// assert_eq!(loop_posix::refused(Errno::EEXIST), Error::Os { errno: Errno::EEXIST });
/// ```
#[inline]
#[must_use]
pub const fn refused(errno: Errno) -> Error {
    Error::Os { errno }
}

/// Mark `fd` close-on-exec, so a child started with `exec` does not inherit it (and cannot keep
/// a socket's peer from seeing the hang-up).
///
/// One `ioctl(FIOCLEX)` on Linux and Apple targets; `fcntl` get-then-set elsewhere.
///
/// # Examples
///
/// ```
/// // rustix's errors become the core's with `loop_posix::os`.
/// let (r, _w) = rustix::pipe::pipe().map_err(loop_posix::os)?; // made without O_CLOEXEC
/// loop_posix::set_cloexec(&r)?;
/// let flags = rustix::io::fcntl_getfd(&r).map_err(loop_posix::os)?;
/// assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// # Errors
/// The kernel's error, for example `EBADF` for a closed fd.
pub fn set_cloexec(fd: impl AsFd) -> Result<(), Errno> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    return rustix::io::ioctl_fioclex(fd).map_err(errno);
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
        let flags = fcntl_getfd(&fd).map_err(errno)?;
        fcntl_setfd(&fd, flags | FdFlags::CLOEXEC).map_err(errno)
    }
}

/// Put `fd`'s open file description into non-blocking mode (one `ioctl(FIONBIO)`).
///
/// A level-triggered loop calls a handler whenever the fd is ready; the handler then reads or
/// writes until `EAGAIN`. A blocking fd would stall the whole loop on the first short read.
/// The flag belongs to the open file description, so `dup`ed fds share it.
///
/// # Examples
///
/// ```
/// let (r, _w) = rustix::pipe::pipe().map_err(loop_posix::os)?;
/// loop_posix::set_nonblocking(&r)?;
/// let mut buf = [0u8; 1];
/// // An empty pipe now says EAGAIN instead of blocking.
/// assert_eq!(rustix::io::read(&r, &mut buf), Err(rustix::io::Errno::AGAIN));
/// # Ok::<(), loop_core::Error>(())
/// ```
///
/// # Errors
/// The kernel's error, for example `EBADF` for a closed fd.
pub fn set_nonblocking(fd: impl AsFd) -> Result<(), Errno> {
    rustix::io::ioctl_fionbio(fd, true).map_err(errno)
}

/// Whether `fd` is an open fd, by `fcntl(F_GETFD)`: the cheapest syscall that fails with
/// `EBADF` and nothing else for a closed fd. Used at register time (so a closed fd is refused
/// as epoll refuses it) and by `select` to find which registered fd made it fail.
///
/// # Examples
///
/// ```
/// use std::os::fd::AsRawFd;
/// let (r, _w) = rustix::pipe::pipe()?;
/// assert_eq!(loop_posix::check_open(r.as_raw_fd()), Ok(()));
/// assert_eq!(loop_posix::check_open(-1), Err(loop_core::Errno::EBADF));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// `EBADF` when `fd` is not open.
pub fn check_open(fd: RawFd) -> Result<(), Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: `fd` is not negative (not the -1 niche); the BorrowedFd lives only for this call
    // and is used for `fcntl(F_GETFD)` alone, which reads no memory through the fd: if `fd` is
    // closed the kernel answers EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map(|_| ()).map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsRawFd;

    #[test]
    fn flags_are_set_and_a_closed_fd_is_ebadf() {
        use rustix::fs::{fcntl_getfl, OFlags};
        use rustix::io::{fcntl_getfd, FdFlags};
        let (a, _b) = rustix::pipe::pipe().unwrap();
        set_cloexec(&a).unwrap();
        set_nonblocking(&a).unwrap();
        assert!(fcntl_getfd(&a).unwrap().contains(FdFlags::CLOEXEC));
        assert!(fcntl_getfl(&a).unwrap().contains(OFlags::NONBLOCK));
        assert_eq!(check_open(a.as_raw_fd()), Ok(()));
        assert_eq!(check_open(-1), Err(Errno::EBADF));
    }
}
