//! The shape of an appliance daemon on one loop, one thread, no allocation in steady state:
//!
//! * a UDP service answering `ping` with `pong` (a task on the loop);
//! * a periodic task (`add_periodic`) reporting health once per `--tick`;
//! * `SIGHUP` → "reload config" (`on_signal`): re-reads `--config FILE` if given; the reload
//!   is deliberately slow (60 ms, think flash) so the watchdog has something to report;
//! * the watchdog (`set_watchdog`, 50 ms) naming whatever held the loop too long;
//! * `SIGTERM` (or `SIGINT`) → graceful shutdown: the service stops taking requests, the loop
//!   is closed (signal dispositions restored) and the final counters are printed.
//!
//! ```text
//! cargo run --example appliance -- --duration 3   # pings itself, then SIGHUP, then SIGTERM
//! cargo run --example appliance                   # runs until SIGTERM / Ctrl-C
//! echo -n ping | nc -u -w1 127.0.0.1 9999         # …and answers pings meanwhile
//! kill -HUP <pid>                                  # reload
//! options: --port P (9999) --tick MS (1000) --config FILE --duration SECS
//! ```
//!
//! Build it as a single static binary (musl: no libc needed on the target):
//!
//! ```text
//! rustup target add x86_64-unknown-linux-musl
//! cargo build --release --example appliance --target x86_64-unknown-linux-musl
//! ls -l target/x86_64-unknown-linux-musl/release/examples/appliance
//! ```

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ioloop::net::UdpSocket;
use ioloop::{select, Blocked, Error, EventLoop, Executor, Periodic, Remote, SignalExt};

static REMOTE: Remote<EventLoop, 16> = Remote::new();
static EXEC: Executor<4, 2048> = Executor::new();

/// What the signal handlers, the periodic task and the service share (all on the loop
/// thread, so `Cell`s; an `Rc` so each closure holds one word of it).
#[derive(Default)]
struct State {
    pings: Cell<u64>,
    ticks: Cell<u64>,
    reloads: Cell<u64>,
    shutdown: Cell<bool>,
    /// The main future's waker, woken by the SIGTERM handler.
    waiter: Cell<Option<Waker>>,
}

impl State {
    /// Ask for a graceful shutdown (from a signal handler on the loop).
    fn request_shutdown(&self) {
        self.shutdown.set(true);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    /// Completes once a shutdown was asked for.
    async fn shutdown_requested(&self) {
        poll_fn(|cx| {
            if self.shutdown.get() {
                return Poll::Ready(());
            }
            self.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// The UDP service: `ping` → `pong`, anything else → `unknown command`.
async fn serve_udp(sock: &UdpSocket, state: &State) -> Error {
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => return e,
        };
        let reply: &[u8] = if buf[..n].trim_ascii() == b"ping" {
            state.pings.set(state.pings.get() + 1);
            b"pong"
        } else {
            b"unknown command"
        };
        if let Err(e) = sock.send_to(reply, from).await {
            eprintln!("reply to {from} failed: {e}");
        }
    }
}

fn reload(config: Option<&PathBuf>, n: u64) {
    // Stand-in for a slow config read (flash, a big file): the watchdog will say so.
    std::thread::sleep(Duration::from_millis(60));
    match config.map(std::fs::read_to_string) {
        None => println!("SIGHUP: reload #{n}: no --config file, defaults kept"),
        Some(Ok(text)) => println!(
            "SIGHUP: reload #{n}: read {} bytes, {} lines",
            text.len(),
            text.lines().count()
        ),
        Some(Err(e)) => println!("SIGHUP: reload #{n}: config unreadable ({e}), old one kept"),
    }
}

/// `--duration`: exercise the appliance from outside, then stop it as an init system would.
fn self_test(addr: SocketAddr, duration: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client socket");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = client.send_to(b"ping", addr);
        let mut buf = [0u8; 64];
        match client.recv_from(&mut buf) {
            Ok((n, _)) => println!(
                "self-test: sent \"ping\", got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => println!("self-test: no answer to ping: {e}"),
        }
        std::thread::sleep(duration / 2);
        println!("self-test: sending SIGHUP to myself");
        // SAFETY: plain kill(2) on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        std::thread::sleep(duration / 2);
        println!("self-test: sending SIGTERM to myself");
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 9999u16;
    let mut tick = Duration::from_secs(1);
    let mut config: Option<PathBuf> = None;
    let mut duration = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse()?,
            "--tick" => tick = Duration::from_millis(value()?.parse()?),
            "--config" => config = Some(value()?.into()),
            "--duration" => duration = Some(Duration::from_secs(value()?.parse()?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    let mut lp: EventLoop = EventLoop::new()?;
    lp.attach_remote(&REMOTE)?;
    lp.attach_executor(&EXEC)?;
    let state = Rc::new(State::default());

    lp.set_watchdog(Duration::from_millis(50), |b: Blocked| {
        println!(
            "watchdog: {:?} ({}) held the loop for {} ms",
            b.source,
            b.name,
            b.duration.as_millis()
        );
    });
    let s = state.clone();
    lp.add_periodic(Periodic::every(tick), move |lp| {
        s.ticks.set(s.ticks.get() + 1);
        let c = lp.counters();
        println!(
            "tick {}: {} pings answered, {} loop iterations, longest step {} µs",
            s.ticks.get(),
            s.pings.get(),
            c.iterations,
            c.max_run_time.as_micros()
        );
    })?;
    let s = state.clone();
    lp.on_signal(libc::SIGHUP, move |_, _| {
        s.reloads.set(s.reloads.get() + 1);
        reload(config.as_ref(), s.reloads.get());
    })?;
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let s = state.clone();
        lp.on_signal(signo, move |_, signo| {
            println!("signal {signo}: shutting down gracefully");
            s.request_shutdown();
        })?;
    }

    let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = sock.local_addr()?;
    println!(
        "appliance pid {}: UDP ping service on {addr}, tick every {tick:?}",
        std::process::id()
    );
    if let Some(d) = duration {
        self_test(addr, d);
    }
    let st = state.clone();
    let ended = lp.run_sync(
        async move {
            let outcome = select(serve_udp(&sock, &st), st.shutdown_requested()).await;
            // `sock` is dropped here, inside the loop: its registration goes first.
            drop(sock);
            outcome
        },
        // A safety net: --duration's SIGTERM comes well before this.
        duration.map(|d| d * 2 + Duration::from_secs(5)),
    )?;
    if let ioloop::Either::First(e) = ended {
        return Err(format!("the UDP service failed: {e}").into());
    }
    lp.close(); // removes the signal handlers, restoring the previous dispositions
    println!(
        "stopped: {} pings answered, {} ticks, {} reloads",
        state.pings.get(),
        state.ticks.get(),
        state.reloads.get()
    );
    Ok(())
}
