//! Tornado's coroutine demo on ioloop: three "fetches" that take 1, 4 and 2 seconds run
//! concurrently (`join_array`, Tornado's `yield [fetch(a), fetch(b), fetch(c)]`), so the whole
//! takes about 4 s — the longest — not 7 s, and the results come back in input order even
//! though they finish in another.
//!
//! ```text
//! cargo run --example coroutines            # 1 s, 4 s, 2 s
//! cargo run --example coroutines -- --fast  # each second becomes 20 ms (for CI)
//! ```

use std::time::{Duration, Instant};

use ioloop::{join_array, sleep, EventLoop, Executor, Remote};

static REMOTE: Remote<EventLoop, 16> = Remote::new();
static EXEC: Executor<4> = Executor::new();

/// A pretend fetch: waits `secs` "seconds" on the loop, then answers.
async fn fetch(url: &'static str, secs: u64, unit: Duration, start: Instant) -> String {
    // A 4-task demo never fills the timer heap.
    sleep(unit * secs as u32).await.expect("timer slot");
    println!(
        "  {:>6.3} s  fetched {url} (waited {:?})",
        start.elapsed().as_secs_f64(),
        unit * secs as u32
    );
    format!("<body of {url}>")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fast = std::env::args().any(|a| a == "--fast");
    let unit = if fast {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(1)
    };
    let mut lp: EventLoop = EventLoop::new()?;
    lp.attach_remote(&REMOTE)?;
    lp.attach_executor(&EXEC)?;

    let jobs = [("/a", 1), ("/b", 4), ("/c", 2)];
    println!(
        "three fetches of {} units, one unit = {unit:?}, run concurrently:",
        jobs.iter()
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let start = Instant::now();
    let bodies = lp.run_sync(
        join_array(jobs.map(|(url, secs)| fetch(url, secs, unit, start))),
        Some(unit * 20),
    )?;
    let total = start.elapsed();
    let sum: u64 = jobs.iter().map(|(_, s)| s).sum();
    let max = jobs.iter().map(|(_, s)| *s).max().unwrap_or(0);
    println!("results, in input order: {bodies:?}");
    println!(
        "total {:.3} s = the longest fetch ({:.3} s), not the sum ({:.3} s)",
        total.as_secs_f64(),
        (unit * max as u32).as_secs_f64(),
        (unit * sum as u32).as_secs_f64()
    );
    assert!(
        total < unit * (max as u32 + 1),
        "the fetches ran concurrently"
    );
    Ok(())
}
