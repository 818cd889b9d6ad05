//! [`Fd`]: how the loop names an fd without owning it.

use crate::error::RawFd;

/// An fd number handed to the loop without ownership: the caller keeps the fd open while a
/// handler is registered for it and removes the handler before closing it (a closed fd number
/// can be reused by the next `open`; the loop's generations keep stale events away from the
/// new handler, but the kernel may keep reporting a `dup`'d description).
///
/// Made from anything that implements `AsFd` (with the `std` feature: `&TcpStream`,
/// `&OwnedFd`, `BorrowedFd`, …) or from a raw number (`Fd::from(5)`), which is what `no_std`
/// users and the simulated poller use. Every `EventLoop` method that takes an fd takes
/// `impl Into<Fd>`, so you rarely name this type.
///
/// # Examples
///
/// ```
/// use loop_core::Fd;
///
/// let fd = Fd::from(5);
/// assert_eq!(fd.raw(), 5);
/// assert_eq!(Fd::from_raw(5), fd);
/// # #[cfg(all(feature = "std", unix))] {
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let borrowed = Fd::from(&a); // not owned: keep `a` open while it is registered
/// # use std::os::fd::AsRawFd;
/// assert_eq!(borrowed.raw(), a.as_raw_fd());
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fd(RawFd);

impl Fd {
    /// Name fd `raw`.
    #[inline]
    pub const fn from_raw(raw: RawFd) -> Fd {
        Fd(raw)
    }

    /// The fd number.
    #[inline]
    pub const fn raw(self) -> RawFd {
        self.0
    }
}

impl From<RawFd> for Fd {
    #[inline]
    fn from(raw: RawFd) -> Fd {
        Fd(raw)
    }
}

/// The number of a borrowed fd, e.g. the one an owned handler receives
/// ([`EventLoop::add_owned_handler`](crate::EventLoop::add_owned_handler)), so that
/// `lp.remove_handler(fd)` works with it as with a number.
#[cfg(all(feature = "std", unix))]
impl From<std::os::fd::BorrowedFd<'_>> for Fd {
    #[inline]
    fn from(fd: std::os::fd::BorrowedFd<'_>) -> Fd {
        use std::os::fd::AsRawFd;
        Fd(fd.as_raw_fd())
    }
}

#[cfg(all(feature = "std", unix))]
impl<T: std::os::fd::AsFd + ?Sized> From<&T> for Fd {
    #[inline]
    fn from(fd: &T) -> Fd {
        use std::os::fd::AsRawFd;
        Fd(fd.as_fd().as_raw_fd())
    }
}
