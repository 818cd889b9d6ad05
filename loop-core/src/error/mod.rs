//! Error values. Nothing in the loop panics on bad input or exhausted capacity: it returns one
//! of these, and where a closure was refused it is handed back inside [`Refused`].

use core::fmt;

/// A raw fd number as the kernel knows it. The core never opens or closes fds itself: the
/// poller does, for fds whose ownership was handed to the loop.
pub type RawFd = i32;

/// An OS error number (`errno`). The core knows no OS, so this is just the number; the platform
/// crates convert to and from their own error types.
///
/// `Display` gives the system's message: with the `std` feature the one the standard library
/// gets from the C library (`strerror_r`), otherwise a short built-in table of common numbers;
/// both end in `(os error N)`.
///
/// ```
/// use loop_core::Errno;
///
/// let e = Errno::EBADF;
/// assert_eq!(e.raw(), 9);
/// assert!(e.to_string().ends_with("(os error 9)"));
/// ```
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
    /// `EIO`: an I/O error (also what an `io::Error` with no OS number and no closer match
    /// becomes, see `From<std::io::Error> for Error`).
    pub const EIO: Errno = Errno(5);
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
    pub const EAGAIN: Errno = Errno(
        if cfg!(any(
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        )) {
            35
        } else {
            11
        },
    );

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

/// The standard library's message for `errno` (its first letter in lower case, to read well
/// after "the kernel refused: "), then ` (os error N)`.
#[cfg(feature = "std")]
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        /// Lower-cases the first character written through it.
        struct LowerFirst<'a, 'b> {
            f: &'a mut fmt::Formatter<'b>,
            first: bool,
        }
        impl Write for LowerFirst<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                if !self.first {
                    return self.f.write_str(s);
                }
                let mut chars = s.chars();
                match chars.next() {
                    None => Ok(()),
                    Some(c) => {
                        self.first = false;
                        for l in c.to_lowercase() {
                            self.f.write_char(l)?;
                        }
                        self.f.write_str(chars.as_str())
                    }
                }
            }
        }
        // `io::Error`'s own text is "<strerror> (os error N)".
        write!(
            LowerFirst { f, first: true },
            "{}",
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

/// Without `std`: the message from a table of common numbers (Linux numbering beyond 34, the
/// numbers every Unix shares below), then ` (os error N)`; unknown numbers print only the
/// latter.
#[cfg(not(feature = "std"))]
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno_message(self.0) {
            Some(m) => write!(f, "{m} (os error {})", self.0),
            None => write!(f, "os error {}", self.0),
        }
    }
}

/// The C library's messages for the numbers `no_std` users meet most.
#[cfg(not(feature = "std"))]
fn errno_message(n: i32) -> Option<&'static str> {
    Some(match n {
        1 => "operation not permitted",
        2 => "no such file or directory",
        4 => "interrupted system call",
        5 => "input/output error",
        9 => "bad file descriptor",
        12 => "cannot allocate memory",
        13 => "permission denied",
        17 => "file exists",
        22 => "invalid argument",
        23 => "too many open files in system",
        24 => "too many open files",
        28 => "no space left on device",
        32 => "broken pipe",
        _ => return errno_message_os(n),
    })
}

#[cfg(all(not(feature = "std"), any(target_os = "linux", target_os = "android")))]
fn errno_message_os(n: i32) -> Option<&'static str> {
    Some(match n {
        11 => "resource temporarily unavailable",
        95 => "operation not supported",
        98 => "address already in use",
        99 => "cannot assign requested address",
        101 => "network is unreachable",
        103 => "software caused connection abort",
        104 => "connection reset by peer",
        107 => "transport endpoint is not connected",
        110 => "connection timed out",
        111 => "connection refused",
        113 => "no route to host",
        115 => "operation now in progress",
        _ => return None,
    })
}

#[cfg(all(
    not(feature = "std"),
    not(any(target_os = "linux", target_os = "android"))
))]
fn errno_message_os(n: i32) -> Option<&'static str> {
    match n {
        35 if Errno::EAGAIN.0 == 35 => Some("resource temporarily unavailable"),
        11 if Errno::EAGAIN.0 == 11 => Some("resource temporarily unavailable"),
        _ => None,
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
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop, Resource};
/// use core::time::Duration;
///
/// let mut lp: EventLoop<SimPoller, 4, 1, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.call_later(Duration::from_secs(1), |_| {})?;
/// let refused = lp.call_later(Duration::from_secs(2), |_| {}).unwrap_err();
/// assert_eq!(refused.error, Error::Full { what: Resource::Timers });
/// # Ok::<(), Error>(())
/// ```
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
///
/// Converts with `?` from [`Refused`], [`Errno`] and (feature `std`) `std::io::Error`, and
/// into `std::io::Error` and `Box<dyn Error>`; see the `From` impls.
///
/// ```
/// use loop_core::{Errno, Error};
///
/// let e = Error::Os { errno: Errno::EBADF };
/// assert!(e.to_string().starts_with("the kernel refused: "));
/// assert!(e.to_string().ends_with("(os error 9)"));
/// ```
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

/// `?` on a refused call: keeps the reason, drops the refused value (use
/// [`Refused::into_inner`] first to keep it).
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop};
///
/// fn queue_two(lp: &mut EventLoop<SimPoller, 4, 4, 1>) -> Result<(), Error> {
///     lp.add_callback(|_| {})?;
///     lp.add_callback(|_| {})?; // the queue holds one: refused
///     Ok(())
/// }
///
/// let mut lp = EventLoop::with_poller(SimPoller::new());
/// assert!(matches!(queue_two(&mut lp), Err(Error::Full { .. })));
/// ```
impl<T> From<Refused<T>> for Error {
    fn from(r: Refused<T>) -> Error {
        r.error
    }
}

/// Lossless for [`Error::Os`] (the same OS error number); every other error is wrapped with
/// the closest [`std::io::ErrorKind`] and converts back to itself with
/// `From<std::io::Error> for Error`.
///
/// ```
/// use loop_core::{Errno, Error};
///
/// let io: std::io::Error = Error::Os { errno: Errno::EBADF }.into();
/// assert_eq!(io.raw_os_error(), Some(9));
/// let io: std::io::Error = Error::TimedOut.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(Error::from(io), Error::TimedOut);
/// ```
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            Error::Os { errno } => return std::io::Error::from_raw_os_error(errno.0),
            Error::Full { .. } => K::OutOfMemory,
            Error::AlreadyRegistered { .. } | Error::AlreadyAttached => K::AlreadyExists,
            Error::NotRegistered { .. } => K::NotFound,
            Error::InvalidFd { .. } | Error::InvalidPeriod | Error::InvalidSignal { .. } => {
                K::InvalidInput
            }
            Error::Unsupported => K::Unsupported,
            Error::TimedOut => K::TimedOut,
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// `?` on a refused call in code that returns `std::io::Error`: as
/// `From<Error> for std::io::Error`, dropping the refused value.
#[cfg(feature = "std")]
impl<T> From<Refused<T>> for std::io::Error {
    fn from(r: Refused<T>) -> std::io::Error {
        r.error.into()
    }
}

/// An OS error becomes [`Error::Os`] with its number, and an [`Error`] that was wrapped by
/// `From<Error> for std::io::Error` comes back as itself: both lossless. Other `io::Error`s
/// (made by user code, with no OS number) are mapped by kind: `TimedOut` to
/// [`Error::TimedOut`], `Unsupported` to [`Error::Unsupported`], the kinds with an obvious
/// `errno` (`InvalidInput` → `EINVAL`, `NotFound` → `ENOENT`, `PermissionDenied` → `EPERM`,
/// `AlreadyExists` → `EEXIST`, `OutOfMemory` → `ENOMEM`, `BrokenPipe` → `EPIPE`, `WouldBlock`
/// → `EAGAIN`, `Interrupted` → `EINTR`) to that [`Error::Os`], anything else to `EIO`; their
/// message is lost.
///
/// ```
/// use loop_core::{Errno, Error};
///
/// let e: Error = std::io::Error::from_raw_os_error(111).into();
/// assert_eq!(e, Error::Os { errno: Errno(111) });
/// ```
#[cfg(feature = "std")]
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        if let Some(n) = e.raw_os_error() {
            return Error::Os { errno: Errno(n) };
        }
        if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<Error>()) {
            return *inner;
        }
        let errno = match e.kind() {
            K::TimedOut => return Error::TimedOut,
            K::Unsupported => return Error::Unsupported,
            K::InvalidInput => Errno::EINVAL,
            K::NotFound => Errno::ENOENT,
            K::PermissionDenied => Errno::EPERM,
            K::AlreadyExists => Errno::EEXIST,
            K::OutOfMemory => Errno::ENOMEM,
            K::BrokenPipe => Errno::EPIPE,
            K::WouldBlock => Errno::EAGAIN,
            K::Interrupted => Errno::EINTR,
            _ => Errno::EIO,
        };
        Error::Os { errno }
    }
}

/// A short fixed description of each [`Error`] variant, for [`HandlerError::Other`].
impl Error {
    const fn summary(&self) -> &'static str {
        match self {
            Error::Full {
                what: Resource::Handlers,
            } => "handler table is full",
            Error::Full {
                what: Resource::Timers,
            } => "timer heap is full",
            Error::Full {
                what: Resource::Callbacks,
            } => "callback queue is full",
            Error::Full {
                what: Resource::PollerSlots,
            } => "poller table is full",
            Error::Full {
                what: Resource::SignalHandlers,
            } => "signal handler table is full",
            Error::Full {
                what: Resource::Tasks,
            } => "task slots are full",
            Error::AlreadyRegistered { .. } => "fd already has a handler",
            Error::NotRegistered { .. } => "fd has no handler",
            Error::InvalidFd { .. } => "fd cannot be registered with this poller",
            Error::Os { .. } => "the kernel refused",
            Error::Unsupported => "the poller does not support this trigger mode",
            Error::InvalidPeriod => "a periodic callback needs a period above zero",
            Error::AlreadyRunning => "the loop is already running",
            Error::AlreadyAttached => "the remote queue already serves a loop",
            Error::NoRemote => "attach a Remote first",
            Error::InvalidSignal { .. } => "signal is invalid or already handled",
            Error::NotAttached => "no executor attached to a loop on this thread",
            Error::TimedOut => "timed out",
            Error::Stopped => "the loop was stopped before the future finished",
            Error::Closed => "the loop is closed",
            Error::Forked => "the loop belongs to the parent process (used after fork)",
            Error::WrongLoop => "the registration belongs to another loop",
            Error::TooLarge { .. } => "the future does not fit a task slot",
        }
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
///
/// `?` converts it into [`Error`], `std::io::Error` (feature `std`), [`HandlerError`] (inside
/// a handler) and `Box<dyn Error>` (for a `'static` value), dropping the value.
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{Error, EventLoop, Resource};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 1> = EventLoop::with_poller(SimPoller::new());
/// lp.add_callback(|_| {})?;
/// let retry = match lp.add_callback(|lp| lp.stop()) {
///     Err(refused) => {
///         assert_eq!(refused.error, Error::Full { what: Resource::Callbacks });
///         refused.into_inner() // the closure, back to the caller
///     }
///     Ok(()) => unreachable!("the queue holds one callback"),
/// };
/// lp.run_once(Some(core::time::Duration::ZERO))?; // runs the first callback: room again
/// lp.add_callback(retry)?;
/// lp.run()?;
/// # Ok::<(), Error>(())
/// ```
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

/// What an fd handler returns (see [`HandlerError`] for an example). An error is passed to the loop's error hook (except `EPIPE`,
/// which is ignored as in Tornado) and the loop goes on.
pub type HandlerResult = Result<(), HandlerError>;

/// An fd handler's failure.
///
/// `?` converts into it from [`Errno`], [`Error`], [`Refused`] and (feature `std`)
/// `std::io::Error`.
///
/// ```
/// use loop_core::{Errno, HandlerError, HandlerResult};
///
/// fn handler_body(n: i32) -> HandlerResult {
///     if n < 0 {
///         return Err(HandlerError::Other("negative"));
///     }
///     Err(Errno::EPIPE)? // ignored by the loop, as in Tornado
/// }
/// assert_eq!(handler_body(1), Err(HandlerError::Os(Errno::EPIPE)));
/// ```
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

/// `?` inside a handler on a loop call: [`Error::Os`] keeps its number
/// ([`HandlerError::Os`]), every other error becomes [`HandlerError::Other`] with a fixed
/// description of its kind (the fd or signal number is dropped).
///
/// ```
/// use loop_core::sim::SimPoller;
/// use loop_core::{EventLoop, HandlerError, Interest};
///
/// let mut lp: EventLoop<SimPoller, 4, 4, 4> = EventLoop::with_poller(SimPoller::new());
/// lp.add_handler(3, Interest::READ, |lp, _fd, _ready| {
///     lp.add_callback(|lp| lp.stop())?; // a full queue is the handler's failure
///     Ok(())
/// })?;
/// # Ok::<(), loop_core::Error>(())
/// ```
impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Os { errno } => HandlerError::Os(errno),
            other => HandlerError::Other(other.summary()),
        }
    }
}

/// `?` inside a handler on a refused loop call: as `From<Error> for HandlerError`, dropping
/// the refused value.
impl<T> From<Refused<T>> for HandlerError {
    fn from(r: Refused<T>) -> Self {
        r.error.into()
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

#[cfg(test)]
mod tests;
