// The README is the crate documentation, so every Rust example in it is compiled and run as a
// doctest (`cargo test --doc -p ioloop`).
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_code)]

/// The core crate itself, for code that names the poller or the capacities in full:
/// `ioloop::loop_core::EventLoop<ioloop::portable::Poll, 16, 32, 32>` (the [`EventLoop`] alias
/// fixes the poller to [`DefaultPoller`]).
#[doc(no_inline)]
pub use loop_core;
pub use loop_core::*;

pub mod net;
pub mod offload;
// One `signal` module in the docs: the facade's `sigaction` installer lives in the same
// module as `loop_core::signal` (re-exported there with a glob), instead of a second, `signals`.
#[allow(unsafe_code)] // sigaction and the async-signal-safe handler
#[path = "signals.rs"]
pub mod signal;
/// The former name of [`signal`] (kept so `ioloop::signals::SIGACTION` still resolves).
#[doc(hidden)]
pub use signal as signals;
pub use signal::SignalExt;
#[allow(unsafe_code)] // borrows the listener fd a loop handler is given
pub mod accept;
pub use accept::{
    add_accept_handler, add_accept_handler_limited, AcceptHandle, AcceptLimit, Listener,
};
#[allow(unsafe_code)] // pin projection of the connection future
pub mod server;
pub mod stream;
#[allow(unsafe_code)] // sigaction, setitimer and the async-signal-safe SIGALRM handler
pub mod watchdog;
pub use server::{Server, ServerConfig, ServerStats};
pub use stream::{BufStream, StreamError};

// A feature for a poller this platform lacks is an error only when it would be the one chosen
// (with `--all-features`, `select` wins and the build stays valid).
#[cfg(all(
    feature = "kqueue",
    not(any(feature = "select", feature = "poll")),
    not(kqueue)
))]
compile_error!("the `kqueue` feature is only available on the BSDs and macOS");
#[cfg(all(
    feature = "epoll",
    not(any(feature = "select", feature = "poll", feature = "kqueue")),
    not(target_os = "linux")
))]
compile_error!("the `epoll` feature is only available on Linux");

/// The BSD/macOS poller crate (kqueue).
#[cfg(kqueue)]
pub use loop_bsd as bsd;
/// The Linux poller crate (epoll, eventfd, timerfd, CLOCK_MONOTONIC, fd helpers).
#[cfg(target_os = "linux")]
pub use loop_linux as linux;
/// The portable pollers (poll(2), select(2)).
pub use loop_select as portable;

macro_rules! default_poller {
    ($cfg:meta, $ty:ty, $doc:literal) => {
        #[doc = $doc]
        #[cfg($cfg)]
        pub type DefaultPoller = $ty;
    };
}

default_poller!(
    feature = "select",
    loop_select::Select,
    "The poller [`EventLoop`] uses, picked by features: `select(2)`. Name it in code that must\nname the poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's \"Choosing a\npoller\"."
);
default_poller!(
    all(feature = "poll", not(feature = "select")),
    loop_select::Poll,
    "The poller [`EventLoop`] uses, picked by features: `poll(2)`. Name it in code that must\nname the poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's \"Choosing a\npoller\"."
);
default_poller!(
    all(
        feature = "kqueue",
        not(any(feature = "select", feature = "poll"))
    ),
    loop_bsd::Kqueue,
    "The poller [`EventLoop`] uses, picked by features: kqueue. Name it in code that must name\nthe poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's \"Choosing a\npoller\"."
);
default_poller!(
    all(
        target_os = "linux",
        not(any(
            feature = "select",
            feature = "poll",
            feature = "kqueue"
        ))
    ),
    loop_linux::Epoll,
    "The poller [`EventLoop`] uses on this platform: epoll (Linux). Name it in code that must\nname the poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's \"Choosing a\npoller\"."
);
default_poller!(
    all(
        kqueue,
        not(any(
            feature = "select",
            feature = "poll",
            feature = "kqueue"
        ))
    ),
    loop_bsd::Kqueue,
    "The poller [`EventLoop`] uses on this platform: kqueue (BSD, macOS). Name it in code that\nmust name the poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's\n\"Choosing a poller\"."
);
default_poller!(
    all(
        not(any(target_os = "linux", kqueue)),
        not(any(
            feature = "select",
            feature = "poll",
            feature = "kqueue"
        ))
    ),
    loop_select::Poll,
    "The poller [`EventLoop`] uses on this platform: poll(2). Name it in code that must name\nthe poller (`ioloop::loop_core::EventLoop<DefaultPoller, ..>`); see the README's \"Choosing a\npoller\"."
);

/// An event loop over the [`DefaultPoller`], with default capacities: 64 fd handlers, 256
/// timers, 256 queued callbacks. Name other capacities as `EventLoop<H, T, Q>`, or use
/// [`loop_core::EventLoop`] with another poller.
///
/// This is a type alias, so rustdoc lists its methods on [`loop_core::EventLoop`] (they are
/// all available here, with `P` = [`DefaultPoller`]). By group:
///
/// * creating: [`new`](loop_core::EventLoop::new), [`new_boxed`](loop_core::EventLoop::new_boxed),
///   [`with_poller`](loop_core::EventLoop::with_poller);
/// * file descriptors: [`add_owned_handler`](loop_core::EventLoop::add_owned_handler) (the
///   handler borrows the fd the loop owns), [`add_handler`](loop_core::EventLoop::add_handler),
///   [`update_handler`](loop_core::EventLoop::update_handler),
///   [`remove_handler`](loop_core::EventLoop::remove_handler);
/// * timers and callbacks: [`call_later`](loop_core::EventLoop::call_later),
///   [`call_at`](loop_core::EventLoop::call_at),
///   [`add_periodic`](loop_core::EventLoop::add_periodic),
///   [`remove_timeout`](loop_core::EventLoop::remove_timeout),
///   [`add_callback`](loop_core::EventLoop::add_callback);
/// * running: [`run`](loop_core::EventLoop::run), [`run_once`](loop_core::EventLoop::run_once),
///   [`stop`](loop_core::EventLoop::stop), [`close`](loop_core::EventLoop::close);
/// * threads, signals and tasks: [`attach_remote`](loop_core::EventLoop::attach_remote),
///   [`add_signal_handler`](loop_core::EventLoop::add_signal_handler) (or
///   [`SignalExt::on_signal`]), [`attach_executor`](loop_core::EventLoop::attach_executor),
///   [`run_sync`](loop_core::EventLoop::run_sync).
///
/// (A wrapper type instead of an alias would give the methods a page of their own, but every
/// handler receives `&mut loop_core::EventLoop<..>`, and code generic over the poller names
/// that type: the alias keeps the two one type.) On docs.rs these links lead to `loop-core`'s
/// pages; locally, `cargo doc -p ioloop --no-deps` has no `loop-core` pages to link to: build
/// the docs without `--no-deps` (or with `-p loop-core` too).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ioloop::EventLoop;
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// lp.call_later(Duration::from_millis(1), |lp| lp.stop())?;
/// lp.run()?; // returns once the timer has stopped the loop
/// assert_eq!(lp.counters().timers_fired, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`EventLoop::new`](loop_core::EventLoop::new) fails with [`Error::Os`] when the kernel
/// refuses the poller or its wake-up fd (for example `EMFILE`); `run` with the poller's error.
pub type EventLoop<const H: usize = 64, const T: usize = 256, const Q: usize = 256> =
    loop_core::EventLoop<DefaultPoller, H, T, Q>;
