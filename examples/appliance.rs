//! The shape of an appliance daemon on one loop, one thread, no allocation in steady state:
//!
//! * a UDP service answering `ping` with `pong` (a task on the loop);
//! * a periodic task (`add_periodic`) reporting health once per `--tick`;
//! * `SIGHUP` → "reload config" (`on_signal`): re-reads `--config FILE` if given; the reload
//!   is deliberately slow (60 ms, think flash) so the watchdog has something to report;
//! * the watchdog (`set_watchdog`, 50 ms) naming whatever held the loop too long;
//! * `SIGTERM` (or `SIGINT`) → graceful shutdown: the service stops taking requests, the loop
//!   is closed (signal dispositions restored) and the final counters are printed;
//! * `SIGUSR1` → print the loop's counters (`lp.counters()`), as after a reload and at exit;
//! * systemd's service protocol (`sd_notify`, crate `sd-notify`; nothing is sent when
//!   `NOTIFY_SOCKET` is unset): `READY=1` once the service is listening, `STOPPING=1` on
//!   `SIGTERM`/`SIGINT`, and — when systemd's watchdog is on (`WatchdogSec=` sets
//!   `WATCHDOG_USEC`) — `WATCHDOG=1` from a periodic callback every `WATCHDOG_USEC / 2`,
//!   **only while the loop is healthy**.
//!
//! The health rule, checked at each ping: the ping is *skipped* (and the skip printed) when,
//! since the previous ping,
//!
//! 1. the loop's watchdog (`set_watchdog`, 50 ms) reported a handler, timer or callback that
//!    held the loop too long (its hook sets a flag the ping clears), or
//! 2. `lp.counters()` shows the loop stalled or failing: `max_run_time` (the longest step so
//!    far) grew to half the ping interval or more, or `panics` grew.
//!
//! A loop that is hung outright runs no callback at all, so it sends nothing either. One
//! skipped ping leaves systemd a gap of about `WATCHDOG_USEC`, so expect it to restart the
//! service (`Restart=on-watchdog`/`on-failure`): that is the point — a loop that blocks is not
//! healthy. (The demo's reload blocks 60 ms on purpose; a real one belongs on a worker thread.)
//! Each notification costs `sd-notify` a small allocation and a short-lived socket, once per
//! ping interval (seconds under systemd): the only steady-state allocation of the example.
//! The send is blocking: a service manager that stopped reading would block the loop (and the
//! loop's watchdog would say so).
//!
//! The tasks and signal handlers meet through `embassy-sync` (`Signal<NoopRawMutex, _>`), the
//! recommended no-alloc channel/signal/mutex between ioloop tasks: `SIGTERM` signals the main
//! future, which stops the service.
//!
//! ```text
//! cargo run --example appliance -- --duration 3   # pings itself, then SIGHUP, then SIGTERM
//! cargo run --example appliance                   # runs until SIGTERM / Ctrl-C
//! echo -n ping | nc -u -w1 127.0.0.1 9999         # …and answers pings meanwhile
//! kill -HUP <pid>                                  # reload (and print the counters)
//! kill -USR1 <pid>                                 # print the counters
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
//!
//! Under systemd (`Type=notify` makes `READY=1` the start-up barrier):
//!
//! ```text
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/appliance
//! WatchdogSec=2s
//! Restart=on-failure
//! ```

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use ioloop::net::UdpSocket;
use ioloop::{select, Blocked, Counters, Error, EventLoop, Executor, Periodic, Remote, SignalExt};
use sd_notify::NotifyState;

static REMOTE: Remote<EventLoop, 16> = Remote::new();
static EXEC: Executor<4, 2048> = Executor::new();

/// What the signal handlers, the periodic callbacks and the service share (all on the loop
/// thread, so `Cell`s; an `Rc` so each closure holds one word of it).
#[derive(Default)]
struct State {
    pings: Cell<u64>,
    ticks: Cell<u64>,
    reloads: Cell<u64>,
    /// Set by the SIGTERM/SIGINT handler (with the signal number), awaited by the main future.
    shutdown: Signal<NoopRawMutex, i32>,
    /// `STOPPING=1` was sent: no more watchdog pings.
    stopping: Cell<bool>,
    /// The loop's watchdog reported a blocked step since the last systemd ping.
    blocked_since_ping: Cell<bool>,
    /// The counters at the last systemd ping (or at start).
    at_last_ping: Cell<Counters>,
    /// systemd pings sent / skipped as unhealthy.
    sd_pings: Cell<u64>,
    sd_skipped: Cell<u64>,
}

/// `sd_notify`, reporting (not failing on) an unreachable socket: the appliance keeps serving.
fn notify(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        eprintln!("sd_notify: {e}");
    }
}

/// The systemd watchdog ping: `WATCHDOG=1` only if the loop was healthy since the last one
/// (the rule is in the module docs).
fn feed_systemd_watchdog(c: Counters, s: &State, interval: Duration) {
    if s.stopping.get() {
        return;
    }
    let last = s.at_last_ping.replace(c);
    let blocked = s.blocked_since_ping.replace(false);
    let why = if blocked {
        Some("the loop's watchdog reported a blocked step")
    } else if c.max_run_time >= interval / 2 && c.max_run_time > last.max_run_time {
        Some("a step stalled the loop for half the ping interval")
    } else if c.panics > last.panics {
        Some("a handler, timer or callback panicked")
    } else {
        None
    };
    match why {
        None => {
            s.sd_pings.set(s.sd_pings.get() + 1);
            notify(NotifyState::Watchdog);
        }
        Some(why) => {
            s.sd_skipped.set(s.sd_skipped.get() + 1);
            println!("systemd watchdog: ping skipped: {why}");
        }
    }
}

/// What an operator sees: the loop's counters and the appliance's own.
fn print_counters(why: &str, c: &Counters, s: &State) {
    println!(
        "{why}: {} pings answered, {} ticks, {} reloads, systemd pings {} sent / {} skipped\n\
         loop counters: {c:#?}",
        s.pings.get(),
        s.ticks.get(),
        s.reloads.get(),
        s.sd_pings.get(),
        s.sd_skipped.get(),
    );
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
        std::thread::sleep(duration / 4);
        println!("self-test: sending SIGUSR1 to myself");
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        std::thread::sleep(duration / 4);
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

    let s = state.clone();
    lp.set_watchdog(Duration::from_millis(50), move |b: Blocked| {
        s.blocked_since_ping.set(true);
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
    // systemd's watchdog, if it is on for this process (WATCHDOG_USEC, and WATCHDOG_PID is us).
    if let Some(usec) = sd_notify::watchdog_enabled() {
        let interval = usec / 2;
        let s = state.clone();
        lp.add_periodic(Periodic::every(interval), move |lp| {
            feed_systemd_watchdog(lp.counters(), &s, interval)
        })?;
        println!(
            "systemd watchdog on: WATCHDOG_USEC {usec:?}, pinging every {interval:?} while healthy"
        );
    }
    let s = state.clone();
    lp.on_signal(libc::SIGHUP, move |lp, _| {
        s.reloads.set(s.reloads.get() + 1);
        reload(config.as_ref(), s.reloads.get());
        print_counters("after reload", &lp.counters(), &s);
    })?;
    let s = state.clone();
    lp.on_signal(libc::SIGUSR1, move |lp, _| {
        print_counters("SIGUSR1", &lp.counters(), &s)
    })?;
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let s = state.clone();
        lp.on_signal(signo, move |_, signo| {
            println!("signal {signo}: shutting down gracefully");
            s.stopping.set(true);
            notify(NotifyState::Stopping);
            s.shutdown.signal(signo);
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
    // Listening, handlers in place: systemd may start what depends on us.
    notify(NotifyState::Ready);
    let st = state.clone();
    let ended = lp.run_sync(
        async move {
            let outcome = select(serve_udp(&sock, &st), st.shutdown.wait()).await;
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
    let counters = lp.counters();
    lp.close(); // removes the signal handlers, restoring the previous dispositions
    print_counters("stopped", &counters, &state);
    Ok(())
}
