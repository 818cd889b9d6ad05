//! kevent → [`Readiness`]: the pure part of the kqueue poller, compiled and tested everywhere.
//!
//! kqueue reports one *filter* per event: an fd registered for reading and writing can come
//! back twice in one `kevent` call, once per filter. The loop's contract wants one
//! [`PollEvent`] per key per wait, so [`translate`] reads one kevent and [`merge`] ORs it into
//! the caller's buffer. The rules are Tornado's `_KQueue.poll` (TORNADO.md §1.4):
//!
//! | kevent | readiness | why |
//! |---|---|---|
//! | `EVFILT_READ` | `READ` | |
//! | `EVFILT_READ` + `EV_EOF` | `READ \| HUP` | EOF can arrive before the data is consumed: the handler must still read it (and a reset shows up as that read's error), so not `ERROR` |
//! | `EVFILT_WRITE` | `WRITE` | |
//! | `EVFILT_WRITE` + `EV_EOF` | `ERROR \| HUP` | "If an asynchronous connection is refused, kqueue returns a write event with the EOF flag set" |
//! | any filter + `EV_ERROR` | `ERROR` | the kernel could not process the filter; `data` is the errno |
//!
//! One deliberate difference: Tornado *replaces* the fd's mask with `ERROR` on `WRITE + EOF`;
//! here the masks are OR-ed, as the [`Poller`](loop_core::Poller) contract requires, so a
//! `READ` reported by the other filter in the same wait is kept.

use loop_core::{PollEvent, Readiness};

/// `EV_EOF`: the same value on FreeBSD, DragonFly, macOS, NetBSD and OpenBSD.
pub const EV_EOF: u16 = 0x8000;
/// `EV_ERROR`: the same value on FreeBSD, DragonFly, macOS, NetBSD and OpenBSD.
pub const EV_ERROR: u16 = 0x4000;

/// Which kqueue filter an event came from (the numbers differ between BSDs; the meaning does not).
///
/// # Examples
///
/// ```
/// use loop_bsd::translate::{translate, Filter, EV_EOF};
/// use loop_core::Readiness;
///
/// // A refused non-blocking connect: a write event with EOF.
/// assert_eq!(translate(Filter::Write, EV_EOF), Readiness::ERROR | Readiness::HUP);
/// assert_eq!(translate(Filter::Other, 0), Readiness::empty()); // the notifier, timers
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `EVFILT_READ`.
    Read,
    /// `EVFILT_WRITE`.
    Write,
    /// Any other filter (`EVFILT_USER` for the notifier, timers...): no fd readiness.
    Other,
}

/// What one kevent (its filter and `flags`) means for the fd's handler. See the
/// [module docs](self) for the table.
///
/// ```
/// use loop_bsd::translate::{translate, Filter, EV_EOF, EV_ERROR};
/// use loop_core::Readiness;
///
/// // EOF on the read filter: the data before it must still be read, so READ | HUP.
/// assert_eq!(translate(Filter::Read, EV_EOF), Readiness::READ | Readiness::HUP);
/// assert!(translate(Filter::Read, EV_ERROR).contains(Readiness::ERROR));
/// ```
pub fn translate(filter: Filter, flags: u16) -> Readiness {
    if flags & EV_ERROR != 0 {
        return Readiness::ERROR;
    }
    let eof = flags & EV_EOF != 0;
    match filter {
        Filter::Read if eof => Readiness::READ | Readiness::HUP,
        Filter::Read => Readiness::READ,
        Filter::Write if eof => Readiness::ERROR | Readiness::HUP,
        Filter::Write => Readiness::WRITE,
        Filter::Other => Readiness::empty(),
    }
}

/// OR `readiness` for `key` into `events[..filled]`, or append it; returns the new `filled`.
///
/// The caller fetches at most `events.len()` kevents per wait, so there is always room; if
/// there is not, the event is dropped (level-triggered filters report it again).
/// Linear in `filled`: kevent batches are small and a fd's two filters are usually close.
///
/// ```
/// use loop_bsd::translate::merge;
/// use loop_core::{PollEvent, Readiness};
///
/// let mut events = [PollEvent::default(); 2];
/// let n = merge(&mut events, 0, 1, Readiness::READ);
/// let n = merge(&mut events, n, 2, Readiness::WRITE);
/// let n = merge(&mut events, n, 1, Readiness::WRITE); // key 1 again: OR-ed, not appended
/// assert_eq!(n, 2);
/// assert_eq!(events[0].readiness, Readiness::READ | Readiness::WRITE);
/// ```
pub fn merge(events: &mut [PollEvent], filled: usize, key: u64, readiness: Readiness) -> usize {
    if readiness.is_empty() {
        return filled;
    }
    if let Some(e) = events[..filled].iter_mut().find(|e| e.key == key) {
        e.readiness |= readiness;
        return filled;
    }
    match events.get_mut(filled) {
        Some(slot) => {
            *slot = PollEvent { key, readiness };
            filled + 1
        }
        None => filled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_filters_map_to_read_and_write() {
        assert_eq!(translate(Filter::Read, 0), Readiness::READ);
        assert_eq!(translate(Filter::Write, 0), Readiness::WRITE);
        assert_eq!(translate(Filter::Other, 0), Readiness::empty());
    }

    #[test]
    fn refused_connect_is_an_error_not_writable() {
        // Tornado _KQueue: WRITE filter with EV_EOF means the async connect was refused.
        let r = translate(Filter::Write, EV_EOF);
        assert!(r.contains(Readiness::ERROR));
        assert!(!r.contains(Readiness::WRITE));
    }

    #[test]
    fn read_eof_is_readable_and_hung_up_not_an_error() {
        // Tornado _KQueue: "EOF may be returned before all data has been consumed".
        assert_eq!(
            translate(Filter::Read, EV_EOF),
            Readiness::READ | Readiness::HUP
        );
    }

    #[test]
    fn ev_error_is_an_error_on_any_filter() {
        for f in [Filter::Read, Filter::Write, Filter::Other] {
            assert_eq!(translate(f, EV_ERROR), Readiness::ERROR);
            assert_eq!(translate(f, EV_ERROR | EV_EOF), Readiness::ERROR);
        }
    }

    #[test]
    fn two_filters_for_one_key_merge_into_one_event() {
        let mut out = [PollEvent::default(); 4];
        let mut n = 0;
        n = merge(&mut out, n, 7, translate(Filter::Read, 0));
        n = merge(&mut out, n, 8, translate(Filter::Write, 0));
        n = merge(&mut out, n, 7, translate(Filter::Write, 0));
        assert_eq!(n, 2);
        assert_eq!(
            out[0],
            PollEvent {
                key: 7,
                readiness: Readiness::READ | Readiness::WRITE
            }
        );
        assert_eq!(
            out[1],
            PollEvent {
                key: 8,
                readiness: Readiness::WRITE
            }
        );
    }

    #[test]
    fn write_eof_keeps_the_read_of_the_other_filter() {
        // Tornado replaces the mask with ERROR; the contract ORs.
        let mut out = [PollEvent::default(); 2];
        let n = merge(&mut out, 0, 1, translate(Filter::Read, 0));
        let n = merge(&mut out, n, 1, translate(Filter::Write, EV_EOF));
        assert_eq!(n, 1);
        assert_eq!(
            out[0].readiness,
            Readiness::READ | Readiness::ERROR | Readiness::HUP
        );
    }

    #[test]
    fn merge_never_overflows_and_skips_empty_readiness() {
        let mut out = [PollEvent::default(); 1];
        let n = merge(&mut out, 0, 1, Readiness::READ);
        assert_eq!(merge(&mut out, n, 2, Readiness::READ), 1);
        assert_eq!(merge(&mut out, n, 1, Readiness::WRITE), 1);
        assert_eq!(out[0].readiness, Readiness::READ | Readiness::WRITE);
        assert_eq!(merge(&mut [], 0, 3, Readiness::empty()), 0);
    }
}
