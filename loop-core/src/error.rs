//! Error values. Nothing in the loop panics on bad input or exhausted capacity: it returns one
//! of these, and where a closure was refused it is handed back inside [`Refused`].

use core::fmt;

/// A raw fd number as the kernel knows it. The core never opens or closes fds itself: the
/// poller does, for fds whose ownership was handed to the loop.
pub type RawFd = i32;

/// An OS error number (`errno`). The core knows no OS, so this is just the number; the platform
/// crates convert to and from their own error types.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Errno(pub i32);

impl Errno {
    /// `EPERM`.
    pub const EPERM: Errno = Errno(1);
    /// `ENOENT`: the fd is not registered with the kernel poller.
    pub const ENOENT: Errno = Errno(2);
    /// `EINTR`: a signal interrupted the wait; the loop retries.
    pub const EINTR: Errno = Errno(4);
    /// `EBADF`: not an open fd.
    pub const EBADF: Errno = Errno(9);
    /// `ENOMEM`.
    pub const ENOMEM: Errno = Errno(12);
    /// `EEXIST`: already registered with the kernel poller.
    pub const EEXIST: Errno = Errno(17);
    /// `EINVAL`.
    pub const EINVAL: Errno = Errno(22);
    /// `EMFILE`: the process is out of fds.
    pub const EMFILE: Errno = Errno(24);
    /// `ENOSPC`: the kernel poller is out of room (`max_user_watches`).
    pub const ENOSPC: Errno = Errno(28);
    /// `EPIPE`: the peer closed; ignored when a handler returns it, as Tornado does.
    /// (32 on Linux, the BSDs and macOS alike.)
    pub const EPIPE: Errno = Errno(32);
    /// `EAGAIN` / `EWOULDBLOCK` (11 on Linux, 35 on the BSDs and macOS).
    #[cfg(not(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    pub const EAGAIN: Errno = Errno(11);
    /// `EAGAIN` / `EWOULDBLOCK` (11 on Linux, 35 on the BSDs and macOS).
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    pub const EAGAIN: Errno = Errno(35);

    /// The raw number.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "os error {}", self.0)
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for Errno {
    /// Errors that carry no OS number become `EINVAL`.
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(Errno::EINVAL.0))
    }
}

/// Which fixed-capacity table was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Resource {
    /// The fd handler table (const generic `H`).
    Handlers,
    /// The timer heap (const generic `T`).
    Timers,
    /// The callback queue (const generic `Q`).
    Callbacks,
    /// A poller's own registration table (poll/select pollers, the simulated poller).
    PollerSlots,
    /// The loop's signal handler table ([`crate::MAX_SIGNAL_HANDLERS`]).
    SignalHandlers,
    /// An executor's task slots.
    Tasks,
}

/// Everything that can go wrong in the loop, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A fixed-capacity table is full; the refused closure is handed back in [`Refused`].
    Full {
        /// Which table.
        what: Resource,
    },
    /// `add_handler` for an fd that already has a handler. The first handler is untouched.
    AlreadyRegistered {
        /// The fd.
        fd: RawFd,
    },
    /// `update_handler` for an fd that has no handler.
    NotRegistered {
        /// The fd.
        fd: RawFd,
    },
    /// A negative fd, or one the poller cannot represent (select's `FD_SETSIZE`).
    InvalidFd {
        /// The fd.
        fd: RawFd,
    },
    /// The kernel refused the operation (for example `EBADF` for a closed fd, `EPERM` for a
    /// regular file on epoll, `ENOSPC` when epoll's watch limit is reached).
    Os {
        /// The error number.
        errno: Errno,
    },
    /// The poller does not support the requested [`crate::Mode`].
    Unsupported,
    /// `add_periodic` with a zero period (Tornado: "Periodic callback must have a positive
    /// callback_time").
    InvalidPeriod,
    /// `run` or `run_once` was called while the loop is already running (from a handler or
    /// callback of the same loop).
    AlreadyRunning,
    /// [`crate::EventLoop::attach_remote`] with a [`crate::Remote`] that already serves a
    /// loop (a remote is attached once, for good).
    AlreadyAttached,
    /// The operation needs a [`crate::Remote`] attached first (signal handlers wake the loop
    /// through it).
    NoRemote,
    /// A signal number outside 1..=63, or one that already has a handler in this loop.
    InvalidSignal {
        /// The signal number.
        signo: i32,
    },
    /// The executor is not attached to a loop on this thread (`spawn` from another thread,
    /// or before `attach_executor`), or `run_sync` without an executor.
    NotAttached,
    /// `run_sync` reached its timeout before the future finished.
    TimedOut,
    /// The loop was stopped before `run_sync`'s future finished.
    Stopped,
    /// The loop was closed ([`crate::EventLoop::close`]).
    Closed,
    /// The loop was created in another process: this is a child after `fork`. A loop (its
    /// epoll/kqueue instance and notifier) cannot be shared across processes; build a new one
    /// in the child.
    Forked,
    /// An I/O registration (an async socket) was used from a loop other than the one it was
    /// registered with: registrations belong to one loop. Make a new one on this loop.
    WrongLoop,
    /// A future does not fit the executor's task slots (`size` bytes, alignment `align`,
    /// against `max` bytes and 16-byte alignment): raise the executor's `S`.
    TooLarge {
        /// The future's size in bytes.
        size: usize,
        /// The future's alignment.
        align: usize,
        /// The task slot size in bytes.
        max: usize,
    },
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Error {
        Error::Os { errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Full { what } => write!(f, "{what:?} table is full"),
            Error::AlreadyRegistered { fd } => write!(f, "fd {fd} already has a handler"),
            Error::NotRegistered { fd } => write!(f, "fd {fd} has no handler"),
            Error::InvalidFd { fd } => write!(f, "fd {fd} cannot be registered with this poller"),
            Error::Os { errno } => write!(f, "the kernel refused: {errno}"),
            Error::Unsupported => f.write_str("the poller does not support this trigger mode"),
            Error::InvalidPeriod => f.write_str("a periodic callback needs a period above zero"),
            Error::AlreadyRunning => f.write_str("the loop is already running"),
            Error::AlreadyAttached => f.write_str("the remote queue already serves a loop"),
            Error::NoRemote => f.write_str("attach a Remote first"),
            Error::InvalidSignal { signo } => {
                write!(f, "signal {signo} is invalid or already handled")
            }
            Error::NotAttached => f.write_str("no executor attached to a loop on this thread"),
            Error::TimedOut => f.write_str("timed out"),
            Error::Stopped => f.write_str("the loop was stopped before the future finished"),
            Error::Closed => f.write_str("the loop is closed"),
            Error::Forked => {
                f.write_str("the loop belongs to the parent process (used after fork)")
            }
            Error::WrongLoop => f.write_str("the registration belongs to another loop"),
            Error::TooLarge { size, align, max } => write!(
                f,
                "a future of {size} bytes (align {align}) does not fit a {max}-byte task slot"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// An operation that was refused, with the value (closure, fd) the caller handed in, so that
/// nothing is lost: `refused.error` says why, `refused.into_inner()` gives the value back.
pub struct Refused<T> {
    /// Why it was refused.
    pub error: Error,
    /// What was refused.
    pub value: T,
}

impl<T> Refused<T> {
    /// The refused value, back to the caller.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> core::error::Error for Refused<T> {}

/// What an fd handler returns. An error is passed to the loop's error hook (except `EPIPE`,
/// which is ignored as in Tornado) and the loop goes on.
pub type HandlerResult = Result<(), HandlerError>;

/// An fd handler's failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HandlerError {
    /// An OS error from I/O on the fd. [`Errno::EPIPE`] is ignored.
    Os(Errno),
    /// Any other failure, with a short static description.
    Other(&'static str),
}

impl From<Errno> for HandlerError {
    fn from(e: Errno) -> Self {
        HandlerError::Os(e)
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        HandlerError::Os(e.into())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Os(e) => fmt::Display::fmt(e, f),
            HandlerError::Other(s) => f.write_str(s),
        }
    }
}
