//! [`Fd`]: how the loop names an fd without owning it.

use crate::error::RawFd;

/// An fd number handed to the loop without ownership: the caller keeps the fd open while a
/// handler is registered for it and removes the handler before closing it (a closed fd number
/// can be reused by the next `open`; the loop's generations keep stale events away from the
/// new handler, but the kernel may keep reporting a `dup`'d description).
///
/// Made from anything that implements `AsFd` (with the `std` feature: `&TcpStream`,
/// `&OwnedFd`, `BorrowedFd`, …) or from a raw number (`Fd::from(5)`), which is what `no_std`
/// users and the simulated poller use.
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

#[cfg(all(feature = "std", unix))]
impl<T: std::os::fd::AsFd + ?Sized> From<&T> for Fd {
    #[inline]
    fn from(fd: &T) -> Fd {
        use std::os::fd::AsRawFd;
        Fd(fd.as_fd().as_raw_fd())
    }
}
