//! tokio: `sleep_until(deadline).await` on a current_thread runtime with the time driver.
//!
//! `tokio::time::sleep(d)` is `sleep_until(Instant::now() + d)`; taking the deadline here
//! first makes it exact, as for ioloop. The task reads the clock as soon as the sleep
//! completes, i.e. on the first poll after the driver expired the entry: the same point as
//! ioloop's timer callback. tokio's wheel has 1 ms slots (a deadline is rounded up to the next
//! tick of the runtime's clock) and its driver parks in `epoll_wait` with a millisecond
//! timeout. The random gap is a blocking `thread::sleep` inside the task, deliberately: the
//! runtime has nothing else to do, and the next sleep then starts at a random phase of the
//! wheel's tick, exactly as in the ioloop rows.

use std::io;
use std::time::Instant;

use super::{PrecisionCase, PrecisionSamples};

/// Runs the case.
pub fn run(case: &PrecisionCase) -> io::Result<PrecisionSamples> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let out = rt.block_on(async {
        let mut out = Vec::with_capacity(case.sleeps);
        for gap in &case.gaps[..case.sleeps] {
            std::thread::sleep(*gap);
            let deadline = Instant::now() + case.delay;
            tokio::time::sleep_until(deadline.into()).await;
            let fired = Instant::now();
            let late = match fired.checked_duration_since(deadline) {
                Some(d) => d.as_nanos() as f64 / 1e3,
                None => -((deadline - fired).as_nanos() as f64) / 1e3,
            };
            out.push(late);
        }
        out
    });
    Ok(out)
}
