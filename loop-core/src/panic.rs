//! Catching panics of user closures, and the fixed-size message a caught panic is reported
//! with.
//!
//! The loop's panic policy (see [`EventLoop`](crate::EventLoop)): with feature `std`, every
//! closure the loop calls runs under [`catch`]; a caught panic becomes a
//! [`Failure::Panicked`](crate::Failure::Panicked) for the error hook and the loop goes on.
//! Without `std` nothing can be caught: the panic unwinds out of `run` (or aborts, with
//! `panic = "abort"`), and drop guards at every call site leave the loop's tables consistent
//! and the loop runnable again. Built with `panic = "abort"` there is nothing to catch either
//! (a panic ends the process before any `catch_unwind` could see it): [`catch`] then only
//! calls its closure, and [`Caught`] cannot be made, so the reporting paths are not linked.

use core::fmt;

#[cfg(any(feature = "std", test))]
extern crate std;

/// How many bytes of a panic's message are kept.
pub const PANIC_MESSAGE_BYTES: usize = 80;

/// The message of a caught panic: the first [`PANIC_MESSAGE_BYTES`] bytes of a `&str` or
/// `String` payload (cut on a character boundary), inline and `Copy` so that
/// [`Failure`](crate::Failure) stays `Copy` and reporting never allocates. A payload of
/// another type reads `"(non-string panic payload)"`.
///
/// The loop makes one for each panic it catches (feature `std`) and reports it in
/// [`Failure::Panicked`](crate::Failure::Panicked):
///
/// ```
/// use loop_core::{PanicMessage, PANIC_MESSAGE_BYTES};
///
/// let short = PanicMessage::new("index out of bounds");
/// assert_eq!((short.as_str(), short.is_truncated()), ("index out of bounds", false));
/// assert_eq!(short.to_string(), "index out of bounds");
///
/// let long = PanicMessage::new(&"é".repeat(100)); // 200 bytes, 2 per character
/// assert!(long.is_truncated());
/// assert_eq!(long.as_str().len(), PANIC_MESSAGE_BYTES); // cut on a character boundary
/// ```
#[derive(Clone, Copy)]
pub struct PanicMessage {
    buf: [u8; PANIC_MESSAGE_BYTES],
    len: u8,
    truncated: bool,
}

const _: () = assert!(PANIC_MESSAGE_BYTES <= u8::MAX as usize);

impl PanicMessage {
    /// `s`, cut to at most [`PANIC_MESSAGE_BYTES`] bytes on a character boundary.
    ///
    /// ```
    /// use loop_core::PanicMessage;
    ///
    /// assert_eq!(PanicMessage::new("boom"), PanicMessage::new("boom"));
    /// assert_eq!(PanicMessage::new(&"x".repeat(81)).as_str(), "x".repeat(80));
    /// ```
    pub fn new(s: &str) -> PanicMessage {
        let mut len = s.len().min(PANIC_MESSAGE_BYTES);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; PANIC_MESSAGE_BYTES];
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        PanicMessage {
            buf,
            // `len <= PANIC_MESSAGE_BYTES <= u8::MAX` (checked above).
            len: len as u8,
            truncated: len < s.len(),
        }
    }

    /// The message (possibly cut short: see [`is_truncated`](Self::is_truncated)). See
    /// [`PanicMessage`] for an example.
    pub fn as_str(&self) -> &str {
        let bytes = &self.buf[..usize::from(self.len)];
        // Always valid: `new` copies a prefix of a `&str` ending on a character boundary.
        core::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Whether the panic's message was longer than what is kept. See [`PanicMessage`] for an
    /// example.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The message of a payload caught by `catch_unwind`.
    #[cfg(all(any(feature = "std", test), panic = "unwind"))]
    fn from_payload(payload: &(dyn core::any::Any + Send)) -> PanicMessage {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            PanicMessage::new(s)
        } else if let Some(s) = payload.downcast_ref::<std::string::String>() {
            PanicMessage::new(s)
        } else {
            PanicMessage::new("(non-string panic payload)")
        }
    }
}

impl PartialEq for PanicMessage {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() && self.truncated == other.truncated
    }
}

impl Eq for PanicMessage {}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for PanicMessage {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=str}", self.as_str())
    }
}

/// A caught panic: its payload, to read the message from or to resume unwinding with. Two
/// words, so that `Result<R, Caught>` stays small on the hot path.
#[cfg(all(any(feature = "std", test), panic = "unwind"))]
pub(crate) struct Caught {
    payload: std::boxed::Box<dyn core::any::Any + Send>,
}

/// Without `std`, or with `panic = "abort"`, nothing is caught: this is never made.
#[cfg(not(all(any(feature = "std", test), panic = "unwind")))]
pub(crate) enum Caught {}

impl Caught {
    /// Its message; the payload is dropped (under a second catch: a payload's own `Drop` may
    /// panic, as std's docs warn, and what that one throws is forgotten).
    pub(crate) fn into_message(self) -> PanicMessage {
        #[cfg(all(any(feature = "std", test), panic = "unwind"))]
        {
            let Caught { payload } = self;
            let message = PanicMessage::from_payload(&*payload);
            if let Err(again) =
                std::panic::catch_unwind(core::panic::AssertUnwindSafe(move || drop(payload)))
            {
                core::mem::forget(again);
            }
            message
        }
        #[cfg(not(all(any(feature = "std", test), panic = "unwind")))]
        match self {}
    }

    /// Unwind again with the original payload, as if it had never been caught.
    pub(crate) fn resume(self) -> ! {
        #[cfg(all(any(feature = "std", test), panic = "unwind"))]
        {
            std::panic::resume_unwind(self.payload)
        }
        #[cfg(not(all(any(feature = "std", test), panic = "unwind")))]
        match self {}
    }
}

/// Call `f`, catching a panic (feature `std`): `Err` carries its message and payload. Without
/// `std` this only calls `f`, and a panic unwinds through; with `panic = "abort"` it only calls
/// `f` too (a panic aborts the process: there is nothing to catch).
///
/// The closure is asserted unwind-safe: after a caught panic the loop restores its own tables
/// (see the call sites), and state the user's closure shares with others is the user's, as in
/// Tornado, where an exception leaves a callback's objects as it found them.
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    #[cfg(all(any(feature = "std", test), panic = "unwind"))]
    {
        #[cfg(test)]
        if !testing::catching() {
            return Ok(f());
        }
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(f))
            .map_err(|payload| Caught { payload })
    }
    #[cfg(not(all(any(feature = "std", test), panic = "unwind")))]
    {
        Ok(f())
    }
}

/// Test builds catch (they have `std`) unless a test turns it off, to exercise the guards
/// that keep the loop consistent when a panic unwinds through it (the build without `std`).
#[cfg(test)]
pub(crate) mod testing {
    extern crate std;
    use std::cell::Cell;

    std::thread_local! {
        static CATCHING: Cell<bool> = const { Cell::new(true) };
    }

    pub(crate) fn catching() -> bool {
        CATCHING.with(Cell::get)
    }

    /// Let panics unwind through the loop (as without `std`) until the guard is dropped.
    pub(crate) fn without_catching() -> impl Drop {
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                CATCHING.with(|c| c.set(true));
            }
        }
        CATCHING.with(|c| c.set(false));
        Restore
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn message_is_cut_on_a_char_boundary() {
        let long = "é".repeat(PANIC_MESSAGE_BYTES); // two bytes each
        let m = PanicMessage::new(&long);
        assert_eq!(m.as_str().len(), PANIC_MESSAGE_BYTES);
        assert!(m.is_truncated());
        let odd = std::format!("x{long}");
        let m = PanicMessage::new(&odd);
        assert_eq!(m.as_str().len(), PANIC_MESSAGE_BYTES - 1);
        assert!(m.to_string().ends_with('…'));
    }

    #[test]
    fn str_and_string_payloads_are_read_others_named() {
        let message = |r: Result<(), Caught>| r.err().map(Caught::into_message);
        assert_eq!(
            message(catch(|| panic!("static"))).unwrap().as_str(),
            "static"
        );
        let n = 7;
        let m = message(catch(|| panic!("n = {n}"))).unwrap();
        assert_eq!(m.as_str(), "n = 7");
        let other = message(catch(|| std::panic::panic_any(5u8))).unwrap();
        assert_eq!(other.as_str(), "(non-string panic payload)");
        assert_eq!(catch(|| 3).ok(), Some(3));
    }

    #[test]
    fn resumed_panic_carries_the_original_payload() {
        let caught = catch(|| std::panic::panic_any(42u32)).err().unwrap();
        let again =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| caught.resume())).unwrap_err();
        assert_eq!(again.downcast_ref::<u32>(), Some(&42));
    }
}
