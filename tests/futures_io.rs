//! `futures_io::AsyncRead` / `AsyncWrite` on `ioloop::net`'s streams (feature `futures-io`),
//! driven by the `futures::io` utilities (`read_to_end`, `write_all`, `copy`, `BufReader`)
//! inside `run_sync`, on every poller (edge-triggered on epoll, level-triggered elsewhere). Every run is
//! bounded by a `run_sync` timeout. Where the streams have an inherent method of the same name
//! (`read`, `write_all`), the trait's is named explicitly so the trait impl is what runs.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use ioloop::join;
use ioloop::net::{pipe, TcpListener, TcpStream, UnixStream};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

#[macro_use]
#[path = "common/attached.rs"]
mod attached;
#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

/// The platform's default poller (epoll on Linux, kqueue on the BSDs and macOS).
type DefaultLoop = ioloop::EventLoop;
/// Each poller's loop, for the cases run on every poller.
type Lp<P> = loop_core::EventLoop<P, 64, 256, 256>;

/// Deterministic payload: larger than the socket buffers, so writers must wait for room.
fn payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

const BIG: usize = 1 << 20;

/// An echo server written only with `futures::io::copy` over the two halves of one
/// `&TcpStream`: the shared-reference impls let the reader and the writer be the same socket.
async fn copy_echo(listener: &TcpListener) -> std::io::Result<u64> {
    let (s, _): (TcpStream, SocketAddr) = listener.accept().await?;
    let (mut r, mut w) = (&s, &s);
    let n = futures_util::io::copy(&mut r, &mut w).await?;
    w.close().await?;
    Ok(n)
}

fn echo_through_copy<L>(lp: &mut L, run: impl FnOnce(&mut L, &TcpListener, SocketAddr)) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    run(lp, &listener, addr);
}

async fn client(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = TcpStream::connect(addr).await?;
    let writer = async {
        AsyncWriteExt::write_all(&mut &s, data).await?;
        (&s).close().await
    };
    let reader = async {
        let mut back = Vec::new();
        (&s).read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let (w, r) = join(writer, reader).await;
    w?;
    r
}

for_each_poller! {
    #[test]
    fn tcp_write_all_and_read_to_end_move_a_megabyte() {
        let (mut lp, _) = attached_loop!(Lp<P>);
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let data = payload(BIG);
            let client = async {
                let mut s = TcpStream::connect(addr).await?;
                AsyncWriteExt::write_all(&mut s, &data).await?;
                s.close().await // shutdown(SHUT_WR): the server reads end-of-stream
            };
            let server = async {
                let (mut s, _) = listener.accept().await?;
                let mut got = Vec::new();
                s.read_to_end(&mut got).await?;
                Ok::<_, std::io::Error>(got)
            };
        let got = side_by_side!(lp, client, server);
        assert!(got == data, "received {} bytes, not the payload", got.len());
    }

    #[test]
    fn futures_io_copy_echoes_a_megabyte() {
        let (mut lp, _) = attached_loop!(Lp<P>);
        let data = payload(BIG);
        echo_through_copy(&mut lp, |lp, listener, addr| {
            let (copied, back) = lp
                .run_sync(join(copy_echo(listener), client(addr, &data)), LIMIT)
                .unwrap();
            assert_eq!(copied.unwrap(), BIG as u64);
            assert!(back.unwrap() == data);
        });
    }
}

#[test]
fn pipe_ends_work_with_copy_and_buffered_lines() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let (r, mut w) = pipe().unwrap();
    let (r2, w2) = pipe().unwrap();
    let lines = lp
        .run_sync(
            async move {
                let producer = async move {
                    for i in 0..1000 {
                        AsyncWriteExt::write_all(&mut w, format!("line {i}\n").as_bytes()).await?;
                    }
                    drop(w); // the reader sees end-of-stream
                    Ok::<_, std::io::Error>(())
                };
                // Pipe to pipe through futures::io::copy, then read lines back.
                let relay = async move {
                    let mut r = r;
                    let mut w2 = w2;
                    let n = futures_util::io::copy(&mut r, &mut w2).await?;
                    drop(w2);
                    Ok::<_, std::io::Error>(n)
                };
                let consumer = async move {
                    let mut lines = BufReader::new(r2).lines();
                    let mut all = Vec::new();
                    use futures_util::StreamExt;
                    while let Some(line) = lines.next().await {
                        all.push(line?);
                    }
                    Ok::<_, std::io::Error>(all)
                };
                let ((p, n), c) = join(join(producer, relay), consumer).await;
                p?;
                n?;
                c
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[999], "line 999");
}

#[test]
fn unix_stream_halves_carry_a_request_and_an_answer() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let (a, b) = UnixStream::pair().unwrap();
    let server = async {
        let mut req = [0u8; 4];
        (&b).read_exact(&mut req).await?;
        assert_eq!(&req, b"ping");
        AsyncWriteExt::write_all(&mut &b, b"pong").await?;
        (&b).close().await
    };
    let client = async {
        let mut a = &a;
        AsyncWriteExt::write_all(&mut a, b"ping").await?;
        let mut ans = Vec::new();
        a.read_to_end(&mut ans).await?;
        Ok::<_, std::io::Error>(ans)
    };
    let answer = side_by_side!(lp, server, client);
    assert_eq!(answer, b"pong");
}

#[test]
fn polling_outside_a_loop_fails_with_not_attached_instead_of_hanging() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut buf = [0u8; 8];
    // A no-op waker: polled once, by hand, outside any task.
    let err = futures_util::FutureExt::now_or_never(AsyncReadExt::read(&mut &a, &mut buf))
        .expect("ready at once")
        .unwrap_err();
    assert_eq!(ioloop::Error::from(err), ioloop::Error::NotAttached);
}

#[test]
fn a_refused_connection_reports_the_os_error_through_io_error() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    // A port that nobody listens on: bind, note the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = lp
        .run_sync(async { TcpStream::connect(addr).await.map(|_| ()) }, LIMIT)
        .unwrap()
        .unwrap_err();
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}
