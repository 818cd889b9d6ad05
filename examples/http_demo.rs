//! Why an event loop must never block, shown with two HTTP endpoints on one loop.
//!
//! One thread, one loop, three servers-worth of work on it: an HTTP/1.1 server (keep-alive,
//! requests parsed with `httparse`), a slow *backend* HTTP server that waits `D` ms before
//! answering, and an async HTTP client between them.
//!
//! * `/fast` awaits the backend through the async client: while one request waits, the loop
//!   serves the others, so N concurrent requests take about **one** delay.
//! * `/blocking` sleeps the loop thread for `D` ms (`std::thread::sleep`, standing in for any
//!   blocking call): everything waits, N requests take about **N** delays, and the watchdog
//!   (`set_watchdog`, Tornado's `set_blocking_log_threshold`) names the culprit.
//!
//! ```text
//! cargo run --example http_demo -- --once            # built-in client, prints the table
//! cargo run --example http_demo                       # serves http://127.0.0.1:8080
//! curl http://127.0.0.1:8080/fast                     # …from another terminal
//! options: -n N (5) --delay MS (500) --port P (8080) --duration SECS (serve, then exit)
//! ```

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use embedded_io_async::{Read, Write};
use ioloop::net::{IoError, TcpListener, TcpStream};
use ioloop::{sleep, with_current_loop, yield_now, Blocked, Error, Executor, Remote, SignalExt};

/// Up to 256 fds (connections both ways) on the loop.
type Lp = ioloop::EventLoop<256, 256, 256>;
static REMOTE: Remote<Lp, 64> = Remote::new();
/// One task per connection (front and backend) plus the two acceptors.
static EXEC: Executor<64, 4096> = Executor::new();

/// `/blocking` requests handed to the loop, and done.
static BLOCKS_POSTED: AtomicU64 = AtomicU64::new(0);
static BLOCKS_DONE: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum Role {
    Front { backend: SocketAddr },
    Backend,
}

/// What every connection task needs; `Copy`, so each task takes its own.
#[derive(Clone, Copy)]
struct Ctx {
    role: Role,
    delay: Duration,
}

/// A fixed-size text buffer (`write!` into it; no allocation per response).
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn new() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> std::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The routes, decided while the request is parsed (so the buffer is free again after).
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Index,
    Fast,
    Blocking,
    Slow,
    NotFound,
}

/// Parse one request at the start of `buf`: `(route, bytes used, keep-alive)`, `None` if
/// incomplete, `Err` if malformed (or with a body, which no route takes).
fn parse_request(buf: &[u8], role: Role) -> Result<Option<(Route, usize, bool)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if header("content-length").is_some_and(|v| v != b"0") || header("transfer-encoding").is_some()
    {
        return Err(());
    }
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes unless asked.
    let keep_alive = match header("connection") {
        Some(v) if v.eq_ignore_ascii_case(b"close") => false,
        Some(v) if v.eq_ignore_ascii_case(b"keep-alive") => true,
        _ => req.version == Some(1),
    };
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let route = match (role, path) {
        (Role::Front { .. }, "/") => Route::Index,
        (Role::Front { .. }, "/fast") => Route::Fast,
        (Role::Front { .. }, "/blocking") => Route::Blocking,
        (Role::Backend, "/slow") => Route::Slow,
        _ => Route::NotFound,
    };
    Ok(Some((route, used, keep_alive)))
}

/// Write one response: status line, headers, `body`.
async fn respond<S: Write>(
    s: &mut S,
    status: &str,
    body: &[u8],
    keep_alive: bool,
) -> Result<(), S::Error> {
    let mut head = Text::<256>::new();
    // 256 bytes always hold this head.
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    // One write per response (head and body together when they fit): no Nagle stall.
    let mut out = [0u8; 1024];
    let (h, b) = (head.as_bytes(), body);
    if h.len() + b.len() <= out.len() {
        out[..h.len()].copy_from_slice(h);
        out[h.len()..h.len() + b.len()].copy_from_slice(b);
        s.write_all(&out[..h.len() + b.len()]).await
    } else {
        s.write_all(h).await?;
        s.write_all(b).await
    }
}

/// A GET through the async client: connect, ask, read the whole answer. Written against the
/// `embedded-io-async` traits once connected, so it would run over any stream.
async fn backend_get(addr: SocketAddr, path: &str) -> Result<(u16, Text<256>), IoError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = Text::<128>::new();
    let _ = write!(
        req,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    read_response(&mut stream).await
}

/// Read one response with a `Content-Length` (the status and up to 256 bytes of body).
async fn read_response<S: Read<Error = IoError>>(s: &mut S) -> Result<(u16, Text<256>), IoError> {
    let mut buf = [0u8; 1024];
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        filled += n;
        if let Some((status, head, len)) = parse_response(&buf[..filled]) {
            if filled >= head + len || n == 0 {
                let mut body = Text::new();
                let end = filled.min(head + len);
                let _ = body.write_str(&String::from_utf8_lossy(&buf[head..end]));
                return Ok((status, body));
            }
        }
        if n == 0 || filled == buf.len() {
            return Err(IoError(Error::Os {
                errno: ioloop::Errno(libc::EPROTO),
            }));
        }
    }
}

/// `(status, head length, content length)` once the head is complete.
fn parse_response(buf: &[u8]) -> Option<(u16, usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else {
        return None;
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Some((resp.code?, head, len))
}

/// The blocking work, as a loop callback (so the watchdog, which times callbacks, handlers and
/// timers, sees it and names this function).
fn block_the_loop(delay: Duration) -> impl FnOnce(&mut Lp) + 'static {
    move |_| {
        std::thread::sleep(delay);
        BLOCKS_DONE.fetch_add(1, Ordering::SeqCst);
    }
}

/// Serve one connection: requests in a row while the client keeps it alive.
async fn serve(mut stream: TcpStream, ctx: Ctx) -> Result<(), IoError> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 1024];
    let mut filled = 0;
    loop {
        let (route, used, keep_alive) = loop {
            match parse_request(&buf[..filled], ctx.role) {
                Ok(Some(req)) => break req,
                Ok(None) if filled < buf.len() => {}
                _ => {
                    return respond(&mut stream, "400 Bad Request", b"bad request\n", false).await;
                }
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(()); // the client closed between requests
            }
            filled += n;
        };
        // Keep what a pipelining client sent after this request.
        buf.copy_within(used..filled, 0);
        filled -= used;

        let mut body = Text::<512>::new();
        let status = match route {
            Route::Index => {
                let _ = writeln!(
                    body,
                    "ioloop http_demo: try /fast (awaits a {} ms backend) and /blocking \
                     (sleeps the loop {} ms)",
                    ctx.delay.as_millis(),
                    ctx.delay.as_millis()
                );
                "200 OK"
            }
            Route::Slow => {
                if sleep(ctx.delay).await.is_err() {
                    return Ok(()); // no timer slot: drop the connection
                }
                let _ = writeln!(body, "backend answer after {} ms", ctx.delay.as_millis());
                "200 OK"
            }
            Route::Fast => {
                let Role::Front { backend } = ctx.role else {
                    unreachable!("only the front serves /fast")
                };
                let started = Instant::now();
                match backend_get(backend, "/slow").await {
                    Ok((code, answer)) => {
                        let _ = writeln!(
                            body,
                            "fast: backend said {code} \"{}\" after {} ms; the loop served \
                             others meanwhile",
                            String::from_utf8_lossy(answer.as_bytes()).trim_end(),
                            started.elapsed().as_millis()
                        );
                        "200 OK"
                    }
                    Err(e) => {
                        let _ = writeln!(body, "backend failed: {e}");
                        "502 Bad Gateway"
                    }
                }
            }
            Route::Blocking => {
                let ticket = BLOCKS_POSTED.fetch_add(1, Ordering::SeqCst) + 1;
                let queued = with_current_loop(|lp: &mut Lp| {
                    lp.add_callback(block_the_loop(ctx.delay)).is_ok()
                });
                if queued != Some(true) {
                    let _ = writeln!(body, "loop queue full");
                    "503 Service Unavailable"
                } else {
                    // Callbacks run in order: ours has run once `DONE` reaches the ticket
                    // (in the next iteration).
                    while BLOCKS_DONE.load(Ordering::SeqCst) < ticket {
                        yield_now().await;
                    }
                    let _ = writeln!(
                        body,
                        "blocking: slept {} ms on the loop thread; nothing else ran",
                        ctx.delay.as_millis()
                    );
                    "200 OK"
                }
            }
            Route::NotFound => {
                let _ = writeln!(body, "not found");
                "404 Not Found"
            }
        };
        respond(&mut stream, status, body.as_bytes(), keep_alive).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Ctx) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // A connection's I/O error (a reset) only ends that connection.
                let task = async move {
                    let _ = serve(stream, ctx).await;
                };
                if EXEC.spawn(task).is_err() {
                    eprintln!("  (executor full: connection dropped)");
                }
            }
            Err(e) => {
                eprintln!("  accept failed: {e}");
                if sleep(Duration::from_millis(100)).await.is_err() {
                    return; // no timer slot to back off with: stop rather than spin
                }
            }
        }
    }
}

/// A plain blocking HTTP GET from a client thread: `(status, body)`.
fn client_get(
    stream: &mut std::net::TcpStream,
    path: &str,
    keep_alive: bool,
) -> std::io::Result<(u16, String)> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {conn}\r\n\r\n"
    )?;
    let mut buf = [0u8; 2048];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        filled += n;
        if let Some((status, head, len)) = parse_response(&buf[..filled]) {
            if filled >= head + len {
                let body = String::from_utf8_lossy(&buf[head..head + len]).into_owned();
                return Ok((status, body));
            }
        }
        if n == 0 || filled == buf.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// `n` concurrent requests to `path`, each from its own thread and connection: when each
/// finished (from the common start, sorted), the total, and how many got a 200.
fn burst(addr: SocketAddr, path: &'static str, n: usize) -> (Vec<Duration>, Duration, usize) {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let start = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr)?;
                barrier.wait();
                let (status, _) = client_get(&mut s, path, false)?;
                Ok::<_, std::io::Error>((status, start.elapsed()))
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut ok = 0;
    for t in threads {
        if let Ok(Ok((status, done))) = t.join() {
            ok += usize::from(status == 200);
            times.push(done);
        }
    }
    times.sort();
    (times, start.elapsed(), ok)
}

struct Args {
    once: bool,
    n: usize,
    delay: Duration,
    port: Option<u16>,
    duration: Option<Duration>,
}

fn args() -> Args {
    let mut a = Args {
        once: false,
        n: 5,
        delay: Duration::from_millis(500),
        port: None,
        duration: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--once" => a.once = true,
            "-n" => a.n = value().unwrap_or(5) as usize,
            "--delay" => a.delay = Duration::from_millis(value().unwrap_or(500)),
            "--port" => a.port = value().map(|p| p as u16),
            "--duration" => a.duration = value().map(Duration::from_secs),
            other => {
                eprintln!("unknown argument {other}; see the top of examples/http_demo.rs");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let mut lp = Lp::new_boxed()?;
    let handle = lp.attach_remote(&REMOTE)?;
    lp.attach_executor(&EXEC)?;

    // The watchdog: anything on the loop that runs for half the delay or more is reported.
    let reports = Rc::new(Cell::new(0u32));
    let seen = reports.clone();
    lp.set_watchdog(args.delay / 2, move |b: Blocked| {
        seen.set(seen.get() + 1);
        println!(
            "  watchdog: {} blocked the loop for {} ms",
            b.name,
            b.duration.as_millis()
        );
    });
    lp.on_signal(libc::SIGINT, |lp, _| lp.stop())
        .map_err(|r| r.error)?;

    let backend = TcpListener::bind("127.0.0.1:0".parse()?)?;
    let backend_addr = backend.local_addr()?;
    // The built-in client uses a free port unless one is asked for; serving uses 8080.
    let port = args.port.unwrap_or(if args.once { 0 } else { 8080 });
    let front = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let addr = front.local_addr()?;
    let ctx = Ctx {
        role: Role::Backend,
        delay: args.delay,
    };
    let front_ctx = Ctx {
        role: Role::Front {
            backend: backend_addr,
        },
        ..ctx
    };
    EXEC.spawn(accept_loop(backend, ctx)).map_err(|r| r.error)?;
    EXEC.spawn(accept_loop(front, front_ctx))
        .map_err(|r| r.error)?;

    if !args.once {
        println!(
            "serving http://{addr}/ (backend on {backend_addr}, delay {:?})",
            args.delay
        );
        println!("  try: curl http://{addr}/fast   and   curl http://{addr}/blocking");
        match lp.run_sync(std::future::pending::<()>(), args.duration) {
            Err(Error::TimedOut) | Err(Error::Stopped) => {}
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        println!(
            "served {} events; {} watchdog reports",
            lp.counters().events_dispatched,
            reports.get()
        );
        return Ok(());
    }

    // The built-in client runs on its own threads (so it measures what a real client sees)
    // while this thread runs the loop; it stops the loop when done.
    let n = args.n;
    println!(
        "{n} concurrent requests per endpoint, backend delay {} ms, watchdog threshold {} ms",
        args.delay.as_millis(),
        (args.delay / 2).as_millis()
    );
    let client = std::thread::spawn(move || {
        // Keep-alive: three requests on one connection.
        let keep_alive = (|| {
            let mut s = std::net::TcpStream::connect(addr)?;
            let mut ok = 0;
            for _ in 0..3 {
                ok += usize::from(client_get(&mut s, "/", true)?.0 == 200);
            }
            Ok::<_, std::io::Error>(ok)
        })();
        let fast = burst(addr, "/fast", n);
        let blocking = burst(addr, "/blocking", n);
        let _ = handle.stop();
        (keep_alive, fast, blocking)
    });
    let limit = args.delay * (2 * n as u32 + 10) + Duration::from_secs(5);
    match lp.run_sync(std::future::pending::<()>(), Some(limit)) {
        Err(Error::Stopped) => {}
        other => return Err(format!("the loop ended early: {other:?}").into()),
    }
    let (keep_alive, fast, blocking) = client.join().map_err(|_| "client thread panicked")?;
    println!(
        "keep-alive: {}/3 requests answered on one connection",
        keep_alive?
    );
    println!();
    println!("endpoint    ok   total     each request done at (ms)");
    for (path, (times, total, ok)) in [("/fast", fast), ("/blocking", blocking)] {
        let each: Vec<String> = times.iter().map(|t| t.as_millis().to_string()).collect();
        println!(
            "{path:<10} {ok:>2}/{n}  {:>6} ms  {}",
            total.as_millis(),
            each.join(" ")
        );
    }
    println!();
    println!(
        "non-blocking total ≈ one delay ({} ms); blocking total ≈ {n} delays ({} ms); \
         watchdog reports: {}",
        args.delay.as_millis(),
        (args.delay * n as u32).as_millis(),
        reports.get()
    );
    Ok(())
}
