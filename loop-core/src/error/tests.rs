use super::*;
use alloc::string::ToString;

#[test]
fn refused_converts_to_its_error_and_keeps_the_value_until_then() {
    let r = Refused {
        error: Error::Full {
            what: Resource::Timers,
        },
        value: 7u8,
    };
    assert_eq!(
        r.error,
        Error::Full {
            what: Resource::Timers
        }
    );
    let e: Error = r.into();
    assert_eq!(
        e,
        Error::Full {
            what: Resource::Timers
        }
    );
    let r = Refused {
        error: Error::Closed,
        value: 7u8,
    };
    assert_eq!(r.into_inner(), 7);
}

#[test]
fn os_errors_keep_their_number_in_handler_errors_and_others_get_a_fixed_text() {
    assert_eq!(
        HandlerError::from(Error::Os {
            errno: Errno::EPIPE
        }),
        HandlerError::Os(Errno::EPIPE)
    );
    assert_eq!(
        HandlerError::from(Error::Full {
            what: Resource::Callbacks
        }),
        HandlerError::Other("callback queue is full")
    );
    let r = Refused {
        error: Error::Closed,
        value: (),
    };
    assert_eq!(
        HandlerError::from(r),
        HandlerError::Other("the loop is closed")
    );
}

#[test]
fn display_names_the_os_error_and_its_number() {
    let s = Error::Os { errno: Errno(9) }.to_string();
    assert!(
        s.starts_with("the kernel refused: bad file descriptor"),
        "{s}"
    );
    assert!(s.ends_with("(os error 9)"), "{s}");
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn display_of_econnrefused_reads_like_the_c_library() {
    assert_eq!(
        Error::Os { errno: Errno(111) }.to_string(),
        "the kernel refused: connection refused (os error 111)"
    );
}

#[test]
fn display_of_an_unknown_errno_still_shows_the_number() {
    let s = Errno(4000).to_string();
    assert!(s.ends_with("os error 4000)") || s == "os error 4000", "{s}");
}

#[cfg(feature = "std")]
mod std_conversions {
    use super::*;
    use std::io;

    #[test]
    fn os_errors_round_trip_through_io_error_losslessly() {
        for n in [1, 9, 11, 32, 111, 4000] {
            let io: io::Error = Error::Os { errno: Errno(n) }.into();
            assert_eq!(io.raw_os_error(), Some(n));
            assert_eq!(Error::from(io), Error::Os { errno: Errno(n) });
        }
    }

    #[test]
    fn loop_errors_round_trip_through_io_error_as_themselves() {
        let all = [
            Error::Full {
                what: Resource::Tasks,
            },
            Error::AlreadyRegistered { fd: 3 },
            Error::NotRegistered { fd: 4 },
            Error::InvalidFd { fd: -1 },
            Error::Unsupported,
            Error::InvalidPeriod,
            Error::AlreadyRunning,
            Error::AlreadyAttached,
            Error::NoRemote,
            Error::InvalidSignal { signo: 99 },
            Error::NotAttached,
            Error::TimedOut,
            Error::Stopped,
            Error::Closed,
            Error::Forked,
        ];
        for e in all {
            let io: io::Error = e.into();
            assert_eq!(io.raw_os_error(), None);
            assert_eq!(io.to_string(), e.to_string());
            assert_eq!(Error::from(io), e);
        }
    }

    #[test]
    fn io_error_kinds_map_to_the_closest_loop_error() {
        assert_eq!(
            Error::from(io::Error::from(io::ErrorKind::TimedOut)),
            Error::TimedOut
        );
        assert_eq!(
            Error::from(io::Error::other("user")),
            Error::Os { errno: Errno::EIO }
        );
        assert_eq!(
            Error::from(io::Error::from(io::ErrorKind::InvalidInput)),
            Error::Os {
                errno: Errno::EINVAL
            }
        );
        assert_eq!(
            io::Error::from(Error::Full {
                what: Resource::Timers
            })
            .kind(),
            io::ErrorKind::OutOfMemory
        );
    }

    #[test]
    fn refused_converts_into_io_error() {
        let r = Refused {
            error: Error::Os { errno: Errno(24) },
            value: 0u32,
        };
        assert_eq!(io::Error::from(r).raw_os_error(), Some(24));
    }
}
