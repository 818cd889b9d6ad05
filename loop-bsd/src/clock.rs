//! The poller's [`Clock`](loop_core::Clock): `CLOCK_MONOTONIC` as integer nanoseconds.

use loop_core::Instant;
use rustix::time::{clock_gettime, ClockId};

/// Now on `CLOCK_MONOTONIC`: never steps with wall-clock changes.
pub(crate) fn monotonic_now() -> Instant {
    let ts = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative; saturate rather than wrap if a platform disagrees.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Instant::from_nanos(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}
