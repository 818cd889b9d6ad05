//! A TCP echo server with one loop per core, on `ioloop::server` and `ioloop::stream`: each
//! core gets a thread with its own `EventLoop`, `Remote`, `Executor` and `Server`, and its own
//! listening socket bound to the **same port** with `SO_REUSEPORT`; the kernel spreads incoming
//! connections over them. Every connection is a task on the loop of the socket that accepted it
//! (no locks, no sharing).
//!
//! Each loop serves at most `--max-conn` connections at once; beyond that it stops accepting
//! and clients wait in the listen backlog until a connection ends (back-pressure: no
//! connection is accepted and then dropped). A connection idle for `--idle-timeout` is closed.
//! SIGINT / SIGTERM (or the end of `--duration`) shuts every loop down gracefully: stop
//! accepting, let connections finish for up to 2 s, close the rest, print the summary.
//!
//! The built-in client (threads with blocking std sockets) first opens `--clients`
//! connections (they wait in the backlog when the servers are full), then echoes 5 messages on
//! each in turn and closes it, so earlier connections make room for later ones; it reports how
//! many were served and how many failed.
//!
//! ```text
//! cargo run --release --example echo -- --duration 3                 # serve 3 s, with the client
//! cargo run --release --example echo -- --clients 5000 --max-conn 500 # more clients than slots
//! cargo run --release --example echo -- --port 7000 --no-client       # serve until Ctrl-C
//! nc 127.0.0.1 7000                                                   # …and talk to it
//! cargo run --example echo -- --help                                  # every option
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ioloop::net::TcpStream;
use ioloop::server::{Server, ServerConfig, ServerStats};
use ioloop::stream::{BufStream, Timeouts};
use ioloop::{Error, Executor, Remote, SignalExt};

/// Connections per loop this binary is built for; `--max-conn` picks the limit up to it.
const CAPACITY: usize = 2048;
/// At most this many loops (`--threads`).
const MAX_LOOPS: usize = 4;
type Lp = ioloop::EventLoop<{ CAPACITY + 16 }, { CAPACITY + 16 }, 64>;
/// One task per connection plus the accept loop; a connection's task holds its two 1 KiB
/// buffers and a 1 KiB chunk.
type Exec = Executor<{ CAPACITY + 1 }, 8192>;
type Srv = Server<CAPACITY>;

// Per-loop `'static` storage, one element per loop (zero-initialised memory: only what a loop
// uses is paged in).
static REMOTES: [Remote<Lp, 16>; MAX_LOOPS] = [const { Remote::new() }; MAX_LOOPS];
static EXECS: [Exec; MAX_LOOPS] = [const { Executor::new() }; MAX_LOOPS];
static SERVERS: [Srv; MAX_LOOPS] = [const { Server::new() }; MAX_LOOPS];
type Conn = BufStream<TcpStream, 1024, 1024>;

async fn echo(mut s: Conn) {
    let mut chunk = [0u8; 1024];
    loop {
        // The data is a slice of the read buffer: copy it out before queueing it.
        let n = match s.read_partial(chunk.len()).await {
            Ok(data) => {
                chunk[..data.len()].copy_from_slice(data);
                data.len()
            }
            // End-of-stream, idle timeout, reset: the connection ends.
            Err(_) => return,
        };
        if s.write(&chunk[..n]).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

/// One loop on this thread, serving `listener` until shut down; its server's counters.
fn worker(
    id: usize,
    listener: ioloop::net::TcpListener,
    loops: usize,
    config: ServerConfig,
    duration: Option<Duration>,
) -> Result<ServerStats, Error> {
    let (remote, exec, server) = (&REMOTES[id], &EXECS[id], &SERVERS[id]);
    let mut lp = Lp::new_boxed()?;
    lp.attach_remote(remote)?;
    lp.attach_executor(exec)?;
    if id == 0 {
        // Signals are process-wide: the first loop takes them and stops every server.
        for sig in [libc::SIGINT, libc::SIGTERM] {
            lp.on_signal(sig, move |_, _| {
                SERVERS[..loops].iter().for_each(Srv::shutdown)
            })?;
        }
    }
    if let Some(d) = duration {
        lp.call_later(d, move |_| server.shutdown())?;
    }
    lp.run_sync(
        server.serve(listener, exec, config, |s: Conn, _peer| echo(s)),
        None,
    )?
}

/// Open `n` connections from `threads` threads, then on each in turn echo 5 messages, check
/// every byte and close it: `(served, failed)`.
fn client(addr: SocketAddr, n: usize, threads: usize) -> (usize, usize) {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns = Vec::new();
                let mut failed = 0;
                for _ in (t..n).step_by(threads) {
                    match std::net::TcpStream::connect(addr) {
                        Ok(s) => conns.push(s),
                        Err(_) => failed += 1,
                    }
                }
                let mut served = 0;
                for (i, mut s) in conns.into_iter().enumerate() {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                    let ok = (0..5).all(|round| {
                        let msg = format!("hello {i}.{round} from client thread {t}\n");
                        let mut back = vec![0u8; msg.len()];
                        s.write_all(msg.as_bytes()).is_ok()
                            && s.read_exact(&mut back).is_ok()
                            && back == msg.as_bytes()
                    });
                    if ok {
                        served += 1;
                    } else {
                        failed += 1;
                    }
                }
                (served, failed)
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().unwrap_or((0, 1)))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

struct Args {
    port: u16,
    duration: Option<Duration>,
    clients: usize,
    client_threads: usize,
    threads: usize,
    max_conn: usize,
    idle_timeout: Duration,
    backlog: u32,
}

const USAGE: &str = "\
usage: echo [options]
  --port P               port, 0-65535 (default 7000; 0 picks a free one)
  --duration SECS        serve this long, then shut down gracefully (default: until Ctrl-C;
                         with the built-in client, until it is done)
  --clients N            built-in client connections (default 200)
  --client-threads N     threads the client spreads them over (default 8)
  --no-client            serve only
  --threads N            loops, 1-4 (default: one per core)
  --max-conn N           connections per loop, 1-2048 (default 1024); beyond it clients wait
  --idle-timeout SECS    close a connection idle this long (default 60)
  --backlog N            listen backlog per loop (default 4096)
  -h, --help             this text";

#[path = "shared/cli.rs"]
mod cli;

fn args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        port: 7000,
        duration: None,
        clients: 200,
        client_threads: 8,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_LOOPS)),
        max_conn: 1024,
        idle_timeout: Duration::from_secs(60),
        backlog: 4096,
    };
    let mut p = lexopt::Parser::from_env();
    let positive = |n: usize, what: &str| {
        if n == 0 {
            Err(lexopt::Error::from(format!("{what} must be at least 1")))
        } else {
            Ok(n)
        }
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("port") => a.port = p.value()?.parse()?,
            Long("duration") => a.duration = Some(Duration::from_secs(p.value()?.parse()?)),
            Long("clients") => a.clients = p.value()?.parse()?,
            Long("client-threads") => {
                a.client_threads = positive(p.value()?.parse()?, "--client-threads")?
            }
            Long("no-client") => a.clients = 0,
            Long("threads") => {
                a.threads = positive(p.value()?.parse()?, "--threads")?;
                if a.threads > MAX_LOOPS {
                    return Err(format!("--threads {}: at most {MAX_LOOPS}", a.threads).into());
                }
            }
            Long("max-conn") => a.max_conn = cli::max_conn(&mut p, CAPACITY)?,
            Long("idle-timeout") => a.idle_timeout = Duration::from_secs(p.value()?.parse()?),
            Long("backlog") => a.backlog = p.value()?.parse()?,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = cli::or_exit("echo", USAGE, args());
    let config = ServerConfig {
        max_connections: args.max_conn,
        timeouts: Timeouts {
            idle: Some(args.idle_timeout),
            read: Some(Duration::from_secs(10)),
            write: Some(Duration::from_secs(10)),
        },
        shutdown_grace: Duration::from_secs(2),
    };
    // Every loop's socket binds the same address with SO_REUSEPORT (the first one picks the
    // port if asked for port 0).
    let bind = |addr| ioloop::server::bind(addr, true, args.backlog);
    let first = bind(SocketAddr::from(([127, 0, 0, 1], args.port)))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..args.threads {
        listeners.push(bind(addr)?);
    }
    let all = &SERVERS[..args.threads];
    println!(
        "echo server on {addr}: {} loops (one per core), SO_REUSEPORT, {} connections per \
         loop; {}",
        args.threads,
        args.max_conn,
        match args.duration {
            Some(d) => format!("stopping after {d:?}"),
            None if args.clients > 0 => "stopping when the client is done".to_string(),
            None => "Ctrl-C to stop".to_string(),
        }
    );
    let workers: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            let duration = args.duration;
            std::thread::Builder::new()
                .name(format!("loop-{id}"))
                .spawn(move || worker(id, listener, all.len(), config, duration))
        })
        .collect::<Result<_, _>>()?;

    let mut client_failed = 0;
    if args.clients > 0 {
        let start = Instant::now();
        let (served, failed) = client(addr, args.clients, args.client_threads);
        client_failed = failed;
        println!(
            "client: {served} of {} connections × 5 echoes checked, {failed} failed, in {:.0} ms",
            args.clients,
            start.elapsed().as_secs_f64() * 1e3
        );
        if args.duration.is_none() {
            all.iter().for_each(|s| s.shutdown());
        }
    }
    let mut total = ServerStats::default();
    for (id, w) in workers.into_iter().enumerate() {
        let s = w.join().map_err(|_| "worker panicked")??;
        println!(
            "loop {id}: accepted {}, high-water {}, paused {} / resumed {}, forced closed {}, \
             accept errors {}",
            s.accepted, s.high_water, s.paused, s.resumed, s.forced_closed, s.accept_errors
        );
        total.accepted += s.accepted;
        total.paused += s.paused;
        total.forced_closed += s.forced_closed;
    }
    println!(
        "{} connections served in all; back-pressure paused accepting {} times; {} closed at \
         shutdown",
        total.accepted, total.paused, total.forced_closed
    );
    if client_failed > 0 {
        return Err(format!("{client_failed} client connections failed").into());
    }
    Ok(())
}
