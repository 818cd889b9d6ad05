//! One logging facade over `log` (feature `log`, hosted) and `defmt` (feature `defmt`,
//! embedded). No logging by default. The two are meant to be exclusive; if both are enabled
//! (`--all-features`), `log` wins, so no `defmt` call is ever compiled into a hosted binary
//! (which would fail to link without a defmt global logger).
//!
//! Arguments must implement both `Display` and `defmt::Format` (integers, `&str`, [`Errno`],
//! [`HandlerError`]): the same format string serves both back ends.
//!
//! Levels: `warn` for what an operator must act on (a failed handler or task, a panic, a
//! refusal for capacity, a blocked loop, a forked loop), `info` for the loop's start and stop.
//!
//! [`Errno`]: crate::Errno
//! [`HandlerError`]: crate::HandlerError

macro_rules! log_warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        {
            ::log::warn!($($arg)*);
        }
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        {
            ::defmt::warn!($($arg)*);
        }
    }};
}

macro_rules! log_info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        {
            ::log::info!($($arg)*);
        }
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        {
            ::defmt::info!($($arg)*);
        }
    }};
}

pub(crate) use log_info;
pub(crate) use log_warn;
