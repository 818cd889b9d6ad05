//! A TCP echo server with one loop per core: each core gets a thread with its own
//! `EventLoop`, `Remote` and `Executor`, and its own listening socket bound to the **same
//! port** with `SO_REUSEPORT`; the kernel spreads incoming connections over them. Every
//! connection is a task on the loop of the socket that accepted it (no locks, no sharing).
//!
//! A built-in client (threads with blocking std sockets) opens `--clients` connections, echoes
//! a few messages on each and checks them; then each loop prints how many connections it
//! served.
//!
//! ```text
//! cargo run --release --example echo -- --duration 3            # serve 3 s, with the client
//! cargo run --release --example echo -- --port 7000 --no-client  # serve until Ctrl-C
//! nc 127.0.0.1 7000                                              # …and talk to it
//! options: --port P (7000) --duration SECS --clients N (200) --threads N (one per core)
//! ```

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioloop::net::{TcpListener, TcpStream};
use ioloop::{sleep, Error, Executor, Remote};

/// Up to 1024 connections per loop.
type Lp = ioloop::EventLoop<1024, 64, 64>;
/// One task per connection (plus the acceptor), 1 KiB each.
type Exec = Executor<512, 1024>;

#[derive(Default)]
struct Served {
    connections: Cell<u64>,
    bytes: Cell<u64>,
}

async fn echo(stream: TcpStream, served: Rc<Served>) {
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        if stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
        served.bytes.set(served.bytes.get() + n as u64);
    }
}

async fn accept_loop(listener: TcpListener, exec: &'static Exec, served: Rc<Served>) -> Error {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            // Out of fds: the connection stays queued; back off instead of spinning.
            Err(Error::Os { errno })
                if errno.raw() == libc::EMFILE || errno.raw() == libc::ENFILE =>
            {
                // No timer slot to back off with: give up rather than spin.
                if let Err(e) = sleep(Duration::from_millis(100)).await {
                    return e;
                }
                continue;
            }
            Err(e) => return e,
        };
        served.connections.set(served.connections.get() + 1);
        // A full executor hands the task back: dropping it closes the connection.
        let _ = exec.spawn(echo(stream, served.clone()));
    }
}

/// One loop on this thread, serving `listener` for `duration` (or for ever).
fn worker(
    id: usize,
    listener: TcpListener,
    duration: Option<Duration>,
) -> Result<(u64, u64), Error> {
    // Per-thread `'static` storage: leaked once per thread, lives as long as the process.
    let remote: &'static Remote<Lp, 16> = Box::leak(Box::new(Remote::new()));
    let exec: &'static Exec = Box::leak(Box::new(Executor::new()));
    let mut lp = Lp::new_boxed()?;
    lp.attach_remote(remote)?;
    lp.attach_executor(exec)?;
    let served = Rc::new(Served::default());
    match lp.run_sync(accept_loop(listener, exec, served.clone()), duration) {
        Err(Error::TimedOut) => {}
        Ok(e) => eprintln!("loop {id}: accept failed: {e}"),
        Err(e) => return Err(e),
    }
    let (c, b) = (served.connections.get(), served.bytes.get());
    println!("loop {id}: served {c} connections, echoed {b} bytes");
    Ok((c, b))
}

/// Open `n` connections from 4 threads, echo 5 messages on each, check every byte.
fn client(addr: SocketAddr, n: usize) -> std::io::Result<usize> {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut done = 0;
                for i in (t..n).step_by(4) {
                    let mut s = std::net::TcpStream::connect(addr)?;
                    for round in 0..5 {
                        let msg = format!("hello {i}.{round} from client thread {t}\n");
                        s.write_all(msg.as_bytes())?;
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back)?;
                        assert_eq!(back, msg.as_bytes());
                    }
                    done += 1;
                }
                Ok::<_, std::io::Error>(done)
            })
        })
        .collect();
    let mut done = 0;
    for t in threads {
        done += t
            .join()
            .map_err(|_| std::io::Error::other("client panicked"))??;
    }
    Ok(done)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 7000u16;
    let mut duration = None;
    let mut clients = 200usize;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> Result<u64, Box<dyn std::error::Error>> {
            Ok(it.next().ok_or("missing value")?.parse()?)
        };
        match arg.as_str() {
            "--port" => port = value()? as u16,
            "--duration" => duration = Some(Duration::from_secs(value()?)),
            "--clients" => clients = value()? as usize,
            "--no-client" => clients = 0,
            "--threads" => threads = value()?.max(1) as usize,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    // Every loop's socket binds the same address with SO_REUSEPORT (the first one picks the
    // port if asked for port 0).
    let first = TcpListener::bind_reuse_port(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(TcpListener::bind_reuse_port(addr)?);
    }
    println!(
        "echo server on {addr}: {threads} loops (one per core), SO_REUSEPORT; {}",
        match duration {
            Some(d) => format!("stopping after {d:?}"),
            None => "Ctrl-C to stop".to_string(),
        }
    );
    let workers: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            std::thread::Builder::new()
                .name(format!("loop-{id}"))
                .spawn(move || worker(id, listener, duration))
        })
        .collect::<Result<_, _>>()?;

    if clients > 0 {
        let start = Instant::now();
        let done = client(addr, clients)?;
        println!(
            "client: {done} connections × 5 echoes checked in {:.0} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| "worker panicked")??.0;
    }
    println!("{total} connections served in all");
    Ok(())
}
