//! `ioloop::server::Server` (Tornado's `TCPServer.handle_stream`, TORNADO.md §4.5) with what
//! Tornado left out: a connection limit with back-pressure instead of accept-then-drop,
//! per-connection deadlines, graceful shutdown. On every poller (epoll, poll, select).
//!
//! Real sockets on real pollers: assertions are counts (served, dropped, paused, closed), never
//! durations. The deadlines are short so the tests are quick; what is asserted is that the
//! half-request clients were closed by the server and the full client was answered.

use std::time::Duration;

use ioloop::net::{TcpListener, TcpStream};

#[path = "common/clients.rs"]
mod clients;
use clients::connect_clients;
use ioloop::server::{Server, ServerConfig, ServerStats};
use ioloop::stream::{BufStream, Timeouts};
use ioloop::{join, join_array, sleep, Error, Executor, OpenPoller, Poller, Remote};
use loop_core::EventLoop;

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

const LIMIT: Option<Duration> = Some(Duration::from_secs(60));

type Conn = BufStream<TcpStream, 256, 256>;

/// Echo lines until the client closes.
async fn echo_lines(mut s: Conn) {
    let mut line = [0u8; 256];
    loop {
        let Ok(l) = s.read_until(b"\n", 256).await else {
            return; // end-of-stream, timeout or reset
        };
        let n = l.len();
        line[..n].copy_from_slice(l);
        if s.write(&line[..n]).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

fn listener() -> TcpListener {
    ioloop::server::bind("127.0.0.1:0".parse().unwrap(), false, 128).unwrap()
}

/// One client: connect, send a line, read it back, close. `true` if echoed intact.
async fn one_line(addr: std::net::SocketAddr, id: u8) -> bool {
    let Ok(c) = TcpStream::connect(addr).await else {
        return false;
    };
    let msg = [b'a' + id % 26, b'0' + id % 10, b'\n'];
    if c.write_all(&msg).await.is_err() {
        return false;
    }
    let mut back = [0u8; 3];
    let mut got = 0;
    while got < 3 {
        match c.read(&mut back[got..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    back == msg
}

/// The loop of the cases run on every poller.
type Lp<P> = EventLoop<P, 64, 64, 16>;

for_each_poller! {

    macro_rules! setup {
        ($n:literal) => {{
            static REMOTE: Remote<Lp<P>, 16> = Remote::new();
            static EXEC: Executor<$n, 4096> = Executor::new();
            static SERVER: Server<16> = Server::new();
            let mut lp: Lp<P> = EventLoop::new().unwrap();
            lp.attach_remote(&REMOTE).unwrap();
            lp.attach_executor(&EXEC).unwrap();
            (lp, &EXEC, &SERVER)
        }};
    }

    #[test]
    fn more_clients_than_the_limit_wait_and_none_is_dropped() {
        let (mut lp, exec, server) = setup!(32);
        let stats = super::more_clients_than_the_limit(&mut lp, exec, server, 4);
        assert_eq!(stats.high_water, 4, "never more than the limit at once");
    }

    #[test]
    fn a_full_executor_is_back_pressure_too() {
        // 3 task slots, limit 16: at most 3 connections live.
        let (mut lp, exec, server) = setup!(3);
        let stats = super::more_clients_than_the_limit(&mut lp, exec, server, 16);
        assert_eq!(stats.high_water, 3, "bounded by the executor");
    }

    #[test]
    fn half_request_clients_are_closed_at_their_header_timeout() {
        let (mut lp, exec, server) = setup!(32);
        super::half_request_clients(&mut lp, exec, server);
    }

    #[test]
    fn shutdown_lets_connections_finish_then_closes_the_rest() {
        let (mut lp, exec, server) = setup!(32);
        super::graceful_shutdown(&mut lp, exec, server);
    }
}

/// 12 clients against `limit` slots: every one is echoed, and the server paused accepting.
fn more_clients_than_the_limit<P: Poller + OpenPoller + 'static, const N: usize>(
    lp: &mut Lp<P>,
    exec: &'static Executor<N, 4096>,
    server: &'static Server<16>,
    limit: usize,
) -> ServerStats {
    let l = listener();
    let addr = l.local_addr().unwrap();
    let config = ServerConfig {
        max_connections: limit,
        ..ServerConfig::default()
    };
    let (stats, served) = lp
        .run_sync(
            join(
                server.serve(l, exec, config, |s: Conn, _| echo_lines(s)),
                async {
                    let clients: [_; 12] = core::array::from_fn(|i| one_line(addr, i as u8));
                    let served = join_array(clients).await;
                    server.shutdown();
                    served
                },
            ),
            LIMIT,
        )
        .unwrap();
    let stats = stats.unwrap();
    assert_eq!(served, [true; 12], "every client echoed: none dropped");
    assert_eq!(stats.accepted, 12);
    assert!(
        stats.paused >= 1,
        "accepting paused at the limit: {stats:?}"
    );
    // Every pause ended in a resume, except perhaps one ended by the shutdown.
    assert!(stats.paused - stats.resumed <= 1, "{stats:?}");
    assert_eq!(stats.current, 0);
    assert_eq!(stats.forced_closed, 0);
    stats
}

/// 8 clients send half a request header and stop; each is closed by the server at its
/// header (read) timeout, while a full client is answered meanwhile.
fn half_request_clients<P: Poller + OpenPoller + 'static, const N: usize>(
    lp: &mut Lp<P>,
    exec: &'static Executor<N, 4096>,
    server: &'static Server<16>,
) {
    let l = listener();
    let addr = l.local_addr().unwrap();
    let config = ServerConfig {
        max_connections: 16,
        timeouts: Timeouts {
            idle: Some(Duration::from_secs(30)),
            read: Some(Duration::from_millis(100)),
            write: Some(Duration::from_secs(30)),
        },
        ..ServerConfig::default()
    };
    let half = |id: u8| async move {
        let c = TcpStream::connect(addr).await.ok()?;
        c.write_all(b"half a li").await.ok()?;
        let mut buf = [0u8; 8];
        // The server closes us: end-of-stream (or a reset), never data.
        let closed = matches!(c.read(&mut buf).await, Ok(0) | Err(_));
        let _ = id;
        Some(closed)
    };
    let (stats, (halves, full)) = lp
        .run_sync(
            join(
                server.serve(l, exec, config, |s: Conn, _| echo_lines(s)),
                async {
                    let halves: [_; 8] = core::array::from_fn(|i| half(i as u8));
                    let out = join(join_array(halves), async {
                        // The half clients hold 8 slots; this one is still answered.
                        sleep(Duration::from_millis(10)).await.unwrap();
                        one_line(addr, 99).await
                    })
                    .await;
                    server.shutdown();
                    out
                },
            ),
            LIMIT,
        )
        .unwrap();
    let stats = stats.unwrap();
    assert!(full, "a complete client is served while half clients wait");
    assert_eq!(
        halves,
        [Some(true); 8],
        "every half client closed by the server"
    );
    assert_eq!(stats.accepted, 9);
    assert_eq!(stats.current, 0);
    assert_eq!(
        stats.forced_closed, 0,
        "closed by their timeout, not by shutdown"
    );
}

/// A shutdown with connections open: a client that finishes within the grace period is
/// served; one that stays idle is closed after it.
fn graceful_shutdown<P: Poller + OpenPoller + 'static, const N: usize>(
    lp: &mut Lp<P>,
    exec: &'static Executor<N, 4096>,
    server: &'static Server<16>,
) {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let l = listener();
    let addr = l.local_addr().unwrap();
    let (stats, (finished, idle_closed, refused)) = lp
        .run_sync(
            join(
                server.serve(l, exec, config, |s: Conn, _| echo_lines(s)),
                async {
                    let idle = TcpStream::connect(addr).await.unwrap();
                    let busy = TcpStream::connect(addr).await.unwrap();
                    // Both are accepted (each echoes once).
                    for c in [&idle, &busy] {
                        c.write_all(b"hi\n").await.unwrap();
                        let mut b = [0u8; 3];
                        let mut got = 0;
                        while got < 3 {
                            got += c.read(&mut b[got..]).await.unwrap();
                        }
                    }
                    server.shutdown();
                    // Within the grace period the busy client still gets its answer.
                    busy.write_all(b"more\n").await.unwrap();
                    let mut b = [0u8; 5];
                    let mut got = 0;
                    while got < 5 {
                        got += busy.read(&mut b[got..]).await.unwrap();
                    }
                    drop(busy);
                    // The idle one is closed once the grace period is over.
                    let mut one = [0u8; 1];
                    let idle_closed = matches!(idle.read(&mut one).await, Ok(0) | Err(_));
                    // The listener is closed: new connections are refused.
                    let refused = TcpStream::connect(addr).await.is_err();
                    (&b == b"more\n", idle_closed, refused)
                },
            ),
            LIMIT,
        )
        .unwrap();
    let stats = stats.unwrap();
    assert!(finished && idle_closed && refused);
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.forced_closed, 1, "only the idle connection was cut");
    assert_eq!(stats.current, 0);
}

#[test]
fn a_limit_above_max_is_clamped_and_an_early_shutdown_is_not_lost() {
    type Lp = EventLoop<ioloop::DefaultPoller, 16, 16, 16>;
    static REMOTE: Remote<Lp, 16> = Remote::new();
    static EXEC: Executor<4, 4096> = Executor::new();
    static SERVER: Server<2> = Server::new();
    let mut lp: Lp = EventLoop::new().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let l = listener();
    let out = lp.run_sync(
        async {
            let config = ServerConfig {
                max_connections: 1000,
                ..ServerConfig::default()
            };
            // A shutdown asked before serving ends `serve` at once.
            SERVER.shutdown();
            let stats = SERVER
                .serve(
                    l,
                    &EXEC,
                    config,
                    |s: BufStream<TcpStream, 64, 64>, _| async move {
                        drop(s);
                    },
                )
                .await?;
            Ok::<_, Error>((stats, SERVER.limit()))
        },
        LIMIT,
    );
    let (stats, limit) = out.unwrap().unwrap();
    assert_eq!(limit, 2, "clamped to the server's MAX");
    assert_eq!(stats, ServerStats::default());
}

#[path = "common/alloc_counter.rs"]
mod alloc_counter;

/// A `Server` of `BufStream` echo handlers (with all three deadlines armed) over 100
/// connections makes **no heap allocation** in steady state: after the connections are up and
/// have echoed once, 20 rounds of 100 concurrent line echoes allocate nothing.
#[test]
fn stream_server_with_100_connections_allocates_nothing_in_steady_state() {
    use alloc_counter::allocations_in;
    const CONNECTIONS: usize = 100;
    type Lp = EventLoop<ioloop::DefaultPoller, 256, 256, 64>;
    static REMOTE: Remote<Lp, 16> = Remote::new();
    static EXEC: Executor<{ CONNECTIONS + 8 }, 4096> = Executor::new();
    static SERVER: Server<128> = Server::new();

    async fn round_trip(c: &TcpStream, id: usize, round: usize) -> Result<(), Error> {
        let mut msg = [b'x'; 16];
        msg[0] = b'a' + (id % 26) as u8;
        msg[1] = b'a' + (round % 26) as u8;
        msg[15] = b'\n';
        c.write_all(&msg).await?;
        let mut back = [0u8; 16];
        let mut got = 0;
        while got < back.len() {
            match c.read(&mut back[got..]).await? {
                0 => return Err(Error::Stopped),
                n => got += n,
            }
        }
        assert_eq!(back, msg);
        Ok(())
    }
    async fn all_round_trip(clients: &[TcpStream], round: usize) -> Result<(), Error> {
        let trips: [_; CONNECTIONS] = core::array::from_fn(|i| round_trip(&clients[i], i, round));
        join_array(trips).await.into_iter().collect()
    }

    let (_, n) = allocations_in(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(n, 1, "the counter sees this thread's allocations");

    let mut lp: Box<Lp> = Lp::new_boxed().unwrap();
    lp.attach_remote(&REMOTE).unwrap();
    lp.attach_executor(&EXEC).unwrap();
    let l = listener();
    let addr = l.local_addr().unwrap();
    let config = ServerConfig {
        max_connections: CONNECTIONS,
        ..ServerConfig::default()
    };
    let clients = lp
        .run_sync(
            async move {
                EXEC.spawn(async move {
                    let _ = SERVER
                        .serve(l, &EXEC, config, |s: Conn, _| echo_lines(s))
                        .await;
                })
                .map_err(|r| r.error)?;
                let clients = connect_clients(addr, CONNECTIONS).await?;
                all_round_trip(&clients, 0).await.map(|()| clients)
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(SERVER.stats().current, CONNECTIONS as u64);

    let (out, allocations) = allocations_in(|| {
        lp.run_sync(
            async {
                for round in 1..=20 {
                    all_round_trip(&clients, round).await?;
                }
                Ok::<_, Error>(())
            },
            LIMIT,
        )
    });
    assert_eq!(out, Ok(Ok(())));
    assert_eq!(
        allocations, 0,
        "heap allocations in 20 rounds over 100 connections"
    );

    let out = lp.run_sync(
        async move {
            drop(clients);
            while SERVER.stats().current > 0 {
                ioloop::yield_now().await;
            }
            SERVER.shutdown();
            while !EXEC.is_empty() {
                ioloop::yield_now().await;
            }
        },
        LIMIT,
    );
    assert_eq!(out, Ok(()));
    assert_eq!(SERVER.stats().accepted, CONNECTIONS as u64);
}
