//! [`KqueueNotifier`]: how another thread wakes a sleeping `kevent`.
//!
//! Where the kernel has `EVFILT_USER` (FreeBSD, DragonFly, macOS, iOS) the notifier is a user
//! event on the kqueue itself: registered once with `EV_CLEAR`, triggered with `NOTE_TRIGGER`.
//! No extra fd, and any number of triggers before a wait coalesce into one event that the
//! wait consumes by fetching it. Elsewhere (NetBSD, OpenBSD) it is the self-pipe from
//! `loop-posix`, watched with `EVFILT_READ` and drained inside the wait.

#[cfg(evfilt_user)]
pub use user::KqueueNotifier;

#[cfg(kqueue_pipe)]
pub use pipe::KqueueNotifier;

#[cfg(evfilt_user)]
mod user {
    use core::mem::ManuallyDrop;
    use loop_core::{Errno, Notify};
    use rustix::event::kqueue::{
        kevent_timespec, Event, EventFilter, EventFlags, UserDefinedFlags, UserFlags,
    };

    use loop_posix::fork::ForkGuard;
    use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

    use crate::errno;

    /// The `EVFILT_USER` ident of the notifier (user events have their own ident space).
    const IDENT: isize = 0;

    /// Wakes a [`Kqueue`](crate::Kqueue) by triggering its `EVFILT_USER` event.
    ///
    /// Holds the kqueue fd itself (the poller borrows it from here). `notify` is one `kevent`
    /// call, safe from any thread and from a signal handler. In a forked child (which does
    /// not inherit kqueues) it does nothing, and dropping it closes nothing: the number may
    /// name a file the child opened since.
    #[derive(Debug)]
    pub struct KqueueNotifier {
        /// Closed on drop only in the process that created it (see `Drop`).
        pub(crate) kq: ManuallyDrop<OwnedFd>,
        fork: ForkGuard,
    }

    impl KqueueNotifier {
        /// Register the user event on `kq` and keep `kq`.
        pub(crate) fn new(kq: OwnedFd) -> Result<KqueueNotifier, Errno> {
            // EV_CLEAR: fetching the event resets it, so triggers before a wait coalesce.
            let add = Event::new(
                user(UserFlags::empty()),
                EventFlags::ADD | EventFlags::CLEAR,
                core::ptr::null_mut(),
            );
            change(kq.as_fd(), &add)?;
            Ok(KqueueNotifier {
                kq: ManuallyDrop::new(kq),
                fork: ForkGuard::new(),
            })
        }

        /// A second handle on the same kqueue (`dup`, close-on-exec), owned, for another
        /// thread or `'static` storage.
        ///
        /// # Errors
        /// `EMFILE` when out of fds; `ECHILD` in a forked child (the kqueue is not inherited).
        pub fn try_clone(&self) -> Result<KqueueNotifier, Errno> {
            if self.fork.forked() {
                return Err(Errno::ECHILD);
            }
            let kq = rustix::io::fcntl_dupfd_cloexec(&*self.kq, 0).map_err(errno)?;
            Ok(KqueueNotifier {
                kq: ManuallyDrop::new(kq),
                fork: self.fork,
            })
        }
    }

    impl Drop for KqueueNotifier {
        fn drop(&mut self) {
            if !self.fork.forked() {
                // SAFETY: `kq` is dropped here, once, and the value is never used again.
                unsafe { ManuallyDrop::drop(&mut self.kq) };
            }
        }
    }

    impl Notify for KqueueNotifier {
        fn notify(&self) -> Result<(), Errno> {
            if self.fork.forked() {
                return Ok(());
            }
            let trigger = Event::new(
                user(UserFlags::TRIGGER),
                EventFlags::empty(),
                core::ptr::null_mut(),
            );
            change(self.kq.as_fd(), &trigger)
        }

        fn try_clone(&self) -> Result<Self, Errno> {
            KqueueNotifier::try_clone(self)
        }
    }

    fn user(flags: UserFlags) -> EventFilter {
        EventFilter::User {
            ident: IDENT,
            flags,
            user_flags: UserDefinedFlags::new(0),
        }
    }

    fn change(kq: BorrowedFd<'_>, ev: &Event) -> Result<(), Errno> {
        let mut none: [core::mem::MaybeUninit<Event>; 0] = [];
        // SAFETY: a user event names no fd, so there is no fd whose lifetime the kqueue
        // could outlive; the event list is empty, so nothing is written back.
        match unsafe { kevent_timespec(kq, core::slice::from_ref(ev), &mut none[..], None) } {
            // No event list, no sleep: an EINTR still applied the change (see kqueue.rs).
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }
}

#[cfg(kqueue_pipe)]
mod pipe {
    use loop_core::{Errno, Notify};
    use loop_posix::PipeNotifier;

    /// Wakes a [`Kqueue`](crate::Kqueue) through a self-pipe (no `EVFILT_USER` here).
    #[derive(Debug)]
    pub struct KqueueNotifier {
        pub(crate) pipe: PipeNotifier,
    }

    impl KqueueNotifier {
        /// A second handle on the same pipe, owned, for another thread or `'static` storage.
        ///
        /// # Errors
        /// `EMFILE` when out of fds.
        pub fn try_clone(&self) -> Result<KqueueNotifier, Errno> {
            Ok(KqueueNotifier {
                pipe: self.pipe.try_clone()?,
            })
        }
    }

    impl Notify for KqueueNotifier {
        fn notify(&self) -> Result<(), Errno> {
            self.pipe.notify()
        }

        fn try_clone(&self) -> Result<Self, Errno> {
            KqueueNotifier::try_clone(self)
        }
    }
}
