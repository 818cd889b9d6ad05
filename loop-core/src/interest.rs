//! What a handler asks for ([`Interest`]) and what the poller reports ([`Readiness`]).
//!
//! The bit values are Tornado's (and epoll's): `READ = 0x001`, `WRITE = 0x004`, `ERROR = 0x008`,
//! `HUP = 0x010`. Tornado's `ERROR` is `EPOLLERR | EPOLLHUP`; here the two are separate bits so a
//! handler can tell "the peer hung up" from "the socket has a pending error", and
//! [`Interest::ERROR`] stands for both when registering.

use bitflags::bitflags;

bitflags! {
    /// The events a handler is registered for.
    ///
    /// `ERROR` is always added by the loop (as in Tornado): a handler registered for `READ` is
    /// also told about errors and hang-ups. A handler registered for `READ` only is never called
    /// with `WRITE`. Change it with `update_handler` (for example add `WRITE` only while there
    /// is output queued, as Tornado's `IOStream` does).
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::Interest;
    ///
    /// let both = Interest::READ | Interest::WRITE;
    /// assert!(both.contains(Interest::WRITE));
    /// assert_eq!(both - Interest::WRITE, Interest::READ); // stop watching for room
    /// assert!(Interest::READ.registered().contains(Interest::ERROR));
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Interest: u8 {
        /// The fd is readable (or a listener has a connection, or the peer closed).
        const READ = 0x01;
        /// The fd is writable (or a non-blocking connect finished).
        const WRITE = 0x04;
        /// Errors and hang-ups. Always part of a registration, whether asked for or not.
        const ERROR = 0x08;
    }
}

bitflags! {
    /// What the poller found for one fd in one wait, OR-ed into a single mask: the third
    /// argument of an fd handler.
    ///
    /// # Examples
    ///
    /// A handler's usual tests (here on a simulated fd):
    ///
    /// ```
    /// use loop_core::sim::SimPoller;
    /// use loop_core::{EventLoop, Interest, Readiness};
    ///
    /// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
    /// lp.add_handler(3, Interest::READ, |lp, _fd, ready| {
    ///     if ready.intersects(Readiness::ERROR | Readiness::HUP) {
    ///         lp.stop(); // the peer is gone: close up
    ///     } else if ready.contains(Readiness::READ) {
    ///         // read until EAGAIN
    ///     }
    ///     Ok(())
    /// })?;
    /// lp.poller_mut().set_ready(3, Readiness::READ | Readiness::HUP);
    /// lp.run()?;
    /// # Ok::<(), loop_core::Error>(())
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Readiness: u8 {
        /// Readable.
        const READ = 0x01;
        /// Writable.
        const WRITE = 0x04;
        /// An error is pending on the fd (`EPOLLERR`, `POLLERR`, `POLLNVAL`, `EV_ERROR`).
        const ERROR = 0x08;
        /// The peer hung up (`EPOLLHUP`, `POLLHUP`, `EV_EOF` on a write filter).
        const HUP = 0x10;
    }
}

impl Interest {
    /// The interest as it is registered with the poller: always with `ERROR` added.
    ///
    /// ```
    /// use loop_core::Interest;
    /// assert_eq!(Interest::empty().registered(), Interest::ERROR);
    /// ```
    #[inline]
    pub const fn registered(self) -> Interest {
        self.union(Interest::ERROR)
    }

    /// The readiness bits a handler with this interest may be shown: its own READ/WRITE bits
    /// plus `ERROR` and `HUP`, which every handler sees.
    ///
    /// ```
    /// use loop_core::{Interest, Readiness};
    /// let seen = Interest::READ.visible();
    /// assert!(seen.contains(Readiness::READ | Readiness::ERROR | Readiness::HUP));
    /// assert!(!seen.contains(Readiness::WRITE)); // a READ handler never sees WRITE
    /// ```
    #[inline]
    pub const fn visible(self) -> Readiness {
        Readiness::from_bits_truncate(self.bits())
            .union(Readiness::ERROR)
            .union(Readiness::HUP)
    }
}

/// How a registration triggers.
///
/// The loop itself always registers [`Mode::Level`] (Tornado's model). Edge and oneshot are
/// there for pollers that offer them (see [`Capabilities`]); asking a poller for a mode it
/// lacks returns [`crate::Error::Unsupported`].
///
/// # Examples
///
/// ```
/// use loop_core::{Capabilities, Mode};
///
/// let caps = Capabilities::LEVEL | Capabilities::EDGE; // what epoll offers, say
/// let mode = if caps.supports(Mode::Edge) { Mode::Edge } else { Mode::default() };
/// assert_eq!(mode, Mode::Edge);
/// assert_eq!(Mode::default(), Mode::Level);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// Reported at every wait while the condition holds.
    #[default]
    Level,
    /// Reported once per change of state.
    Edge,
    /// Reported once, then disabled until re-armed with `modify`.
    Oneshot,
}

bitflags! {
    /// The trigger modes a poller supports (from `Poller::capabilities`).
    ///
    /// # Examples
    ///
    /// ```
    /// use loop_core::{Capabilities, Mode};
    ///
    /// let poll_like = Capabilities::LEVEL;
    /// assert!(poll_like.supports(Mode::Level));
    /// assert!(!poll_like.supports(Mode::Oneshot));
    /// assert!(!poll_like.contains(Capabilities::PRECISE_TIMEOUT)); // millisecond timeouts
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Capabilities: u8 {
        /// [`Mode::Level`].
        const LEVEL = 0x1;
        /// [`Mode::Edge`].
        const EDGE = 0x2;
        /// [`Mode::Oneshot`].
        const ONESHOT = 0x4;
        /// Waits honour timeouts finer than a millisecond.
        const PRECISE_TIMEOUT = 0x8;
    }
}

impl Capabilities {
    /// Whether `mode` is one of these capabilities.
    ///
    /// ```
    /// use loop_core::{Capabilities, Mode};
    /// assert!(Capabilities::ONESHOT.supports(Mode::Oneshot));
    /// ```
    pub const fn supports(self, mode: Mode) -> bool {
        match mode {
            Mode::Level => self.contains(Capabilities::LEVEL),
            Mode::Edge => self.contains(Capabilities::EDGE),
            Mode::Oneshot => self.contains(Capabilities::ONESHOT),
        }
    }
}

// bitflags types cannot derive `defmt::Format`: print the bits.
#[cfg(feature = "defmt")]
impl defmt::Format for Interest {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Interest({=u8:#x})", self.bits())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Readiness {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Readiness({=u8:#x})", self.bits())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Capabilities {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Capabilities({=u8:#x})", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_interest_always_has_error() {
        assert_eq!(
            Interest::READ.registered(),
            Interest::READ | Interest::ERROR
        );
        assert_eq!(Interest::empty().registered(), Interest::ERROR);
    }

    #[test]
    fn read_only_interest_does_not_see_write() {
        let v = Interest::READ.visible();
        assert!(v.contains(Readiness::READ | Readiness::ERROR | Readiness::HUP));
        assert!(!v.contains(Readiness::WRITE));
    }

    #[test]
    fn bit_values_match_tornado() {
        assert_eq!(Interest::READ.bits(), 0x001);
        assert_eq!(Interest::WRITE.bits(), 0x004);
        assert_eq!((Readiness::ERROR | Readiness::HUP).bits(), 0x018);
    }
}
