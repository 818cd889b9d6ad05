//! Why an event loop must never block, shown with two HTTP endpoints on one loop — and how a
//! server holds under overload (ioloop::server + ioloop::stream).
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
//! Both servers are [`ioloop::server::Server`]s: at most `--max-conn` connections each (default
//! 1024); beyond that the server stops accepting and clients wait in the listen backlog until
//! a connection ends (and, while it is paused, keep-alive connections are closed after their
//! current response so waiting clients get their turn). A request header must arrive within
//! `--header-timeout` once it began, and a keep-alive connection may idle `--idle-timeout`:
//! a peer that sends half a header and stops is closed at its deadline and frees its slot.
//! Headers over 8 KiB get `431`; `HEAD` gets the head only.
//!
//! ```text
//! cargo run --example http_demo -- --once            # built-in client, prints the table
//! cargo run --release --example http_demo             # serves http://127.0.0.1:8080
//! curl http://127.0.0.1:8080/fast                     # …from another terminal
//! cargo run --example http_demo -- --help             # every option
//! ```

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use embedded_io_async::Read;
use ioloop::net::{IoError, TcpListener, TcpStream};
use ioloop::server::{Server, ServerConfig, ServerStats};
use ioloop::stream::{BufStream, StreamError, Timeouts};
use ioloop::{
    join, timeout, with_current_loop, yield_now, Blocked, Error, Executor, Remote, SignalExt,
};

/// Connections per server (front and backend) this binary is built for; `--max-conn` picks
/// the limit up to it.
const CAPACITY: usize = 2048;
/// The largest request head (request line + headers); more gets `431`.
const MAX_HEAD: usize = 8192;
/// Each connection's write buffer.
const WBUF: usize = 1024;
/// Per in-flight `/fast` request: the front connection, the client connection to the backend
/// and the backend's connection; plus listeners, the signal pipe and some spare.
type Lp = ioloop::EventLoop<{ 3 * CAPACITY + 64 }, { 3 * CAPACITY + 64 }, 1024>;
static REMOTE: Remote<Lp, 64> = Remote::new();
/// One task per connection (front and backend) plus the two servers' accept loops; a
/// connection's task (its `Conn` buffers, the request, the backend call) takes about 22 KiB.
/// The executor is `static` (zero-initialised memory): only the slots used are paged in.
static EXEC: Executor<{ 2 * CAPACITY + 4 }, 24576> = Executor::new();
static FRONT: Server<CAPACITY> = Server::new();
static BACKEND: Server<CAPACITY> = Server::new();

type Conn = BufStream<TcpStream, MAX_HEAD, WBUF>;

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
    server: &'static Server<CAPACITY>,
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

/// One parsed request head.
#[derive(Clone, Copy)]
struct Request {
    route: Route,
    keep_alive: bool,
    /// `HEAD`: answer with the head only.
    head_only: bool,
}

/// Parse one complete request head; `Err` if malformed (or with a body, which no route
/// takes).
fn parse_request(head: &[u8], role: Role) -> Result<Request, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(()),
    }
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
    let head_only = req.method == Some("HEAD");
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let route = match (role, path) {
        (Role::Front { .. }, "/") => Route::Index,
        (Role::Front { .. }, "/fast") => Route::Fast,
        (Role::Front { .. }, "/blocking") => Route::Blocking,
        (Role::Backend, "/slow") => Route::Slow,
        _ => Route::NotFound,
    };
    Ok(Request {
        route,
        keep_alive,
        head_only,
    })
}

/// Queue one response (status line, headers, `body` unless `head_only`) and flush it.
async fn respond(
    s: &mut Conn,
    status: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Result<(), StreamError> {
    let mut head = Text::<256>::new();
    // 256 bytes always hold this head.
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    s.write(head.as_bytes()).await?;
    if !head_only {
        s.write(body).await?;
    }
    s.flush().await
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

/// Serve one connection: requests in a row while the client keeps it alive, each head within
/// the stream's deadlines.
async fn serve(mut s: Conn, ctx: Ctx) {
    let _ = s.get_ref().set_nodelay(true);
    loop {
        let req = match s.read_until(b"\r\n\r\n", MAX_HEAD).await {
            Ok(head) => parse_request(head, ctx.role),
            Err(StreamError::LimitExceeded { .. }) | Err(StreamError::BufferFull { .. }) => {
                let body = b"request header fields too large\n";
                let status = "431 Request Header Fields Too Large";
                let _ = respond(&mut s, status, body, false, false).await;
                return;
            }
            // The client left, went silent past a deadline, or reset: just close.
            Err(_) => return,
        };
        let Ok(req) = req else {
            let _ = respond(&mut s, "400 Bad Request", b"bad request\n", false, false).await;
            return;
        };
        let mut body = Text::<512>::new();
        let status = route(req.route, ctx, &mut body).await;
        // While the server is full (clients wait in the backlog) or shutting down, close after
        // this answer so the waiting get their turn.
        let keep_alive =
            req.keep_alive && !ctx.server.is_paused() && !ctx.server.is_shutting_down();
        if respond(&mut s, status, body.as_bytes(), keep_alive, req.head_only)
            .await
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// Run one route: its status, with its body written into `body`.
async fn route(route: Route, ctx: Ctx, body: &mut Text<512>) -> &'static str {
    match route {
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
            if ioloop::sleep(ctx.delay).await.is_err() {
                let _ = writeln!(body, "no timer slot");
                return "503 Service Unavailable";
            }
            let _ = writeln!(body, "backend answer after {} ms", ctx.delay.as_millis());
            "200 OK"
        }
        Route::Fast => {
            let Role::Front { backend } = ctx.role else {
                return "500 Internal Server Error";
            };
            let started = Instant::now();
            let limit = ctx.delay + Duration::from_secs(10);
            match timeout(limit, backend_get(backend, "/slow")).await {
                Ok(Ok((code, answer))) => {
                    let _ = writeln!(
                        body,
                        "fast: backend said {code} \"{}\" after {} ms; the loop served \
                         others meanwhile",
                        String::from_utf8_lossy(answer.as_bytes()).trim_end(),
                        started.elapsed().as_millis()
                    );
                    "200 OK"
                }
                Ok(Err(e)) => {
                    let _ = writeln!(body, "backend failed: {e}");
                    "502 Bad Gateway"
                }
                Err(_) => {
                    let _ = writeln!(body, "backend timed out");
                    "504 Gateway Timeout"
                }
            }
        }
        Route::Blocking => {
            let ticket = BLOCKS_POSTED.fetch_add(1, Ordering::SeqCst) + 1;
            let queued =
                with_current_loop(|lp: &mut Lp| lp.add_callback(block_the_loop(ctx.delay)).is_ok());
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
    }
}

/// Both servers until shut down; their final counters.
async fn serve_both(
    front: TcpListener,
    backend: TcpListener,
    config: ServerConfig,
    front_ctx: Ctx,
    backend_ctx: Ctx,
) -> (Result<ServerStats, Error>, Result<ServerStats, Error>) {
    let front = FRONT.serve(front, &EXEC, config, move |s: Conn, _| serve(s, front_ctx));
    let back = BACKEND.serve(backend, &EXEC, config, move |s: Conn, _| {
        serve(s, backend_ctx)
    });
    join(front, back).await
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
    max_conn: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    backlog: u32,
}

const USAGE: &str = "\
usage: http_demo [options]
  --once                 run the built-in client (keep-alive, /fast and /blocking bursts), print the table
  -n N                   concurrent requests per endpoint with --once (default 5)
  --delay MS             backend delay and /blocking sleep (default 500)
  --port P               port to serve on, 0-65535 (default 8080; a free one with --once)
  --duration SECS        serve this long, then shut down gracefully (default: until Ctrl-C)
  --max-conn N           connections per server, 1-2048 (default 1024); beyond it clients wait
  --header-timeout SECS  a begun request head must arrive within this (default 10)
  --idle-timeout SECS    a keep-alive connection may idle this long (default 60)
  --backlog N            listen backlog, where clients wait while the server is full (default 4096)
  -h, --help             this text";

#[path = "shared/cli.rs"]
mod cli;

fn args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        once: false,
        n: 5,
        delay: Duration::from_millis(500),
        port: None,
        duration: None,
        max_conn: 1024,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        backlog: 4096,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => cli::help(USAGE),
            Long("once") => a.once = true,
            Short('n') => a.n = p.value()?.parse()?,
            Long("delay") => a.delay = Duration::from_millis(p.value()?.parse()?),
            Long("port") => a.port = Some(p.value()?.parse()?),
            Long("duration") => a.duration = Some(Duration::from_secs(p.value()?.parse()?)),
            Long("max-conn") => a.max_conn = cli::max_conn(&mut p, CAPACITY)?,
            Long("header-timeout") => a.header_timeout = Duration::from_secs(p.value()?.parse()?),
            Long("idle-timeout") => a.idle_timeout = Duration::from_secs(p.value()?.parse()?),
            Long("backlog") => a.backlog = p.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

fn main() -> cli::MainResult {
    let args = cli::or_exit("http_demo", USAGE, args());
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
    // Ctrl-C / SIGTERM: graceful shutdown of both servers.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        lp.on_signal(sig, |_, _| {
            FRONT.shutdown();
            BACKEND.shutdown();
        })?;
    }

    let config = ServerConfig {
        max_connections: args.max_conn,
        timeouts: Timeouts {
            idle: Some(args.idle_timeout),
            read: Some(args.header_timeout),
            write: Some(Duration::from_secs(10)),
        },
        shutdown_grace: Duration::from_secs(2),
    };
    let backend = ioloop::server::bind("127.0.0.1:0".parse()?, false, args.backlog)?;
    let backend_addr = backend.local_addr()?;
    // The built-in client uses a free port unless one is asked for; serving uses 8080.
    let port = args.port.unwrap_or(if args.once { 0 } else { 8080 });
    let front = ioloop::server::bind(
        SocketAddr::from(([127, 0, 0, 1], port)),
        false,
        args.backlog,
    )?;
    let addr = front.local_addr()?;
    let backend_ctx = Ctx {
        role: Role::Backend,
        delay: args.delay,
        server: &BACKEND,
    };
    let front_ctx = Ctx {
        role: Role::Front {
            backend: backend_addr,
        },
        server: &FRONT,
        ..backend_ctx
    };
    let servers = serve_both(front, backend, config, front_ctx, backend_ctx);

    if !args.once {
        println!(
            "serving http://{addr}/ (backend on {backend_addr}, delay {:?}, {} connections per \
             server, header timeout {:?})",
            args.delay, args.max_conn, args.header_timeout
        );
        println!("  try: curl http://{addr}/fast   and   curl http://{addr}/blocking");
        if let Some(d) = args.duration {
            lp.call_later(d, |_| {
                FRONT.shutdown();
                BACKEND.shutdown();
            })?;
        }
        let (front, back) = lp.run_sync(servers, None)?;
        let (front, back) = (front?, back?);
        println!("front:   {front:?}");
        println!("backend: {back:?}");
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
    match lp.run_sync(servers, Some(limit)) {
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
