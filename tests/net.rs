//! `ioloop::net`: async TCP, UDP, Unix sockets and pipes on the loop, all over loopback, each
//! run bounded by a `run_sync` timeout. TCP echo runs on every poller (edge-triggered on
//! epoll, level-triggered elsewhere) to show the sockets do not care which.

use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use embedded_io_async::{Read, Write};
use ioloop::net::{pipe, TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use ioloop::{join, Errno, Error};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

/// The platform's default poller (epoll on Linux, kqueue on the BSDs and macOS).
type DefaultLoop = ioloop::EventLoop;

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

#[macro_use]
#[path = "common/attached.rs"]
mod attached;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// Deterministic payload bytes.
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// An echo server task on `listener`: one connection, echoed until the peer shuts down.
async fn echo_one(listener: TcpListener) -> Result<SocketAddr, Error> {
    let (stream, peer) = listener.accept().await?;
    let mut buf = [0u8; 1500];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(peer);
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Send `total` bytes and read them back at the same time (one task writes while the other
/// reads the same stream); returns how many came back, all checked.
async fn pump(stream: &TcpStream, total: usize) -> Result<usize, Error> {
    let writer = async {
        let mut chunk = [0u8; 4096];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = byte(sent + i);
            }
            stream.write_all(&chunk[..n]).await?;
            sent += n;
        }
        stream.shutdown(Shutdown::Write)
    };
    let reader = async {
        let mut buf = [0u8; 4096];
        let mut got = 0;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<usize, Error>(got);
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, byte(got + i), "byte {} echoed wrong", got + i);
            }
            got += n;
        }
    };
    let (w, r) = join(writer, reader).await;
    w?;
    r
}

for_each_poller! {
    /// 1 MiB through an echo server: far more than the socket buffers hold, so both ends
    /// hit `EAGAIN` and wait for readiness many times.
    #[test]
    fn tcp_connect_accept_and_echo_a_mebibyte() {
        let (mut lp, exec) = attached_loop!(loop_core::EventLoop<P, 64, 256, 256>);
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let out = lp.run_sync(
            async move {
                let (tx, rx) = std::sync::mpsc::channel();
                exec.spawn(async move {
                    let _ = tx.send(echo_one(listener).await);
                })
                .map_err(|r| r.error)?;
                let stream = TcpStream::connect(addr).await?;
                let me = stream.local_addr()?;
                assert_eq!(stream.peer_addr()?, addr);
                let n = pump(&stream, 1 << 20).await?;
                drop(stream);
                // The server task finished when it read end-of-stream.
                ioloop::yield_now().await;
                let peer = rx.try_recv().expect("server done")?;
                Ok::<_, Error>((n, peer == me))
            },
            LIMIT,
        );
        assert_eq!(out, Ok(Ok((1 << 20, true))));
    }
}

#[test]
fn connecting_to_a_closed_port_is_refused_with_econnrefused() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    // A port that was just free: bound, read, closed (never registered, so dropping it
    // outside a task is fine).
    let addr = TcpListener::bind(localhost())
        .unwrap()
        .local_addr()
        .unwrap();
    let out = lp.run_sync(async { TcpStream::connect(addr).await.map(drop) }, LIMIT);
    assert_eq!(
        out,
        Ok(Err(Error::Os {
            errno: errno(rustix::io::Errno::CONNREFUSED)
        }))
    );
    assert_eq!(
        lp.handler_count(),
        0,
        "the failed socket's registration is gone"
    );
}

#[test]
fn udp_send_to_and_recv_from_round_trip() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let out = lp.run_sync(
        async {
            let server = UdpSocket::bind(localhost())?;
            let client = UdpSocket::bind(localhost())?;
            let (server_addr, client_addr) = (server.local_addr()?, client.local_addr()?);
            let ask = async {
                client.send_to(b"ping", server_addr).await?;
                let mut buf = [0u8; 16];
                let (n, from) = client.recv_from(&mut buf).await?;
                Ok::<_, Error>((buf[..n] == *b"pong", from == server_addr))
            };
            let answer = async {
                let mut buf = [0u8; 16];
                let (n, from) = server.recv_from(&mut buf).await?;
                assert_eq!(&buf[..n], b"ping");
                server.send_to(b"pong", from).await?;
                Ok::<_, Error>(from == client_addr)
            };
            let (asked, answered) = join(ask, answer).await;
            Ok::<_, Error>((asked?, answered?))
        },
        LIMIT,
    );
    assert_eq!(out, Ok(Ok(((true, true), true))));
}

#[test]
fn unix_stream_connects_to_a_listener_on_a_path_and_echoes() {
    let (mut lp, exec) = attached_loop!(DefaultLoop);
    let path = std::env::temp_dir().join(format!("ioloop-net-{}.sock", std::process::id()));
    // A stale socket file from an earlier run is replaced, as Tornado's bind_unix_socket.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = UnixListener::bind(&path).unwrap();
    let p = path.clone();
    let out = lp.run_sync(
        async move {
            exec.spawn(async move {
                if let Ok(s) = listener.accept().await {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        buf[..n].make_ascii_uppercase();
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|r| r.error)?;
            let s = UnixStream::connect(&p).await?;
            s.write_all(b"hello over a unix socket").await?;
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < 24 {
                got += s.read(&mut buf[got..]).await?;
            }
            Ok::<_, Error>(buf[..got].to_vec())
        },
        LIMIT,
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(out, Ok(Ok(b"HELLO OVER A UNIX SOCKET".to_vec())));
}

#[test]
fn binding_a_unix_listener_over_a_regular_file_is_refused() {
    let path = std::env::temp_dir().join(format!("ioloop-net-{}.file", std::process::id()));
    std::fs::write(&path, b"not a socket").unwrap();
    let r = UnixListener::bind(&path).map(drop);
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket", "left alone");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        r,
        Err(Error::Os {
            errno: errno(rustix::io::Errno::ADDRINUSE)
        })
    );
}

#[test]
fn pipe_carries_more_than_its_buffer_and_reads_eof_after_the_writer_is_dropped() {
    let (mut lp, exec) = attached_loop!(DefaultLoop);
    const TOTAL: usize = 300_000; // several times a pipe's 64 KiB buffer
    let out = lp.run_sync(
        async move {
            let (reader, writer) = pipe()?;
            exec.spawn(async move {
                let mut chunk = [0u8; 2048];
                let mut sent = 0;
                while sent < TOTAL {
                    let n = chunk.len().min(TOTAL - sent);
                    for (i, b) in chunk[..n].iter_mut().enumerate() {
                        *b = byte(sent + i);
                    }
                    if writer.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                // The task ends and drops the writer: the reader sees end-of-stream.
            })
            .map_err(|r| r.error)?;
            let mut buf = [0u8; 4096];
            let mut got = 0;
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, Error>(got);
                }
                assert!(buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == byte(got + i)));
                got += n;
            }
        },
        LIMIT,
    );
    assert_eq!(out, Ok(Ok(TOTAL)));
}

#[test]
fn writing_to_a_pipe_whose_reader_is_gone_fails_with_epipe() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let out = lp.run_sync(
        async {
            let (reader, writer) = pipe()?;
            drop(reader);
            writer.write(b"x").await.map(drop)
        },
        LIMIT,
    );
    assert_eq!(
        out,
        Ok(Err(Error::Os {
            errno: Errno::EPIPE
        }))
    );
}

/// Protocol code written against the `embedded-io-async` traits only.
async fn generic_echo_once<S: Read + Write>(s: &mut S) -> Result<usize, S::Error> {
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await?;
    s.write_all(&buf[..n]).await?;
    s.flush().await?;
    Ok(n)
}

async fn generic_ask<S: Read + Write>(s: &mut S, msg: &[u8]) -> Result<[u8; 5], S::Error> {
    s.write_all(msg).await?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.map_err(|e| match e {
        embedded_io_async::ReadExactError::Other(e) => e,
        embedded_io_async::ReadExactError::UnexpectedEof => panic!("early end of stream"),
    })?;
    Ok(back)
}

#[test]
fn embedded_io_async_traits_echo_generically_over_tcp_unix_and_pipes() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let out = lp.run_sync(
        async {
            let listener = TcpListener::bind(localhost())?;
            let addr = listener.local_addr()?;
            let server = async {
                let (mut s, _) = listener.accept().await?;
                generic_echo_once(&mut s).await
            };
            let client = async {
                let mut c = TcpStream::connect(addr).await?;
                generic_ask(&mut c, b"hello").await
            };
            let (n, back) = join(server, client).await;
            let tcp = (n?, back?);

            let (mut a, mut b) = UnixStream::pair()?;
            let (n, back) = join(generic_echo_once(&mut a), generic_ask(&mut b, b"world")).await;
            let unix = (n?, back?);

            // A pipe has two ends: write through one, read the other, generically.
            let (mut r, mut w) = pipe()?;
            Write::write_all(&mut w, b"pipes").await?;
            let mut back = [0u8; 5];
            Read::read_exact(&mut r, &mut back)
                .await
                .map_err(|_| Error::Stopped)?;
            Ok::<_, Error>((tcp, unix, back))
        },
        LIMIT,
    );
    assert_eq!(out, Ok(Ok(((5, *b"hello"), (5, *b"world"), *b"pipes"))));
}

#[test]
fn embedded_io_error_kinds_follow_the_errno() {
    use embedded_io_async::{Error as _, ErrorKind};
    let kind = |e: rustix::io::Errno| ioloop::net::IoError(Error::Os { errno: errno(e) }).kind();
    assert_eq!(
        kind(rustix::io::Errno::CONNREFUSED),
        ErrorKind::ConnectionRefused
    );
    assert_eq!(
        kind(rustix::io::Errno::CONNRESET),
        ErrorKind::ConnectionReset
    );
    assert_eq!(kind(rustix::io::Errno::PIPE), ErrorKind::BrokenPipe);
    assert_eq!(kind(rustix::io::Errno::ADDRINUSE), ErrorKind::AddrInUse);
}

#[test]
fn every_fd_is_nonblocking_and_close_on_exec() {
    use rustix::fs::OFlags;
    use rustix::io::FdFlags;
    fn check(fd: impl AsFd, what: &str) {
        let fd = fd.as_fd();
        assert!(
            rustix::fs::fcntl_getfl(fd)
                .unwrap()
                .contains(OFlags::NONBLOCK),
            "{what} is non-blocking"
        );
        assert!(
            rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(FdFlags::CLOEXEC),
            "{what} is close-on-exec"
        );
    }
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let out = lp.run_sync(
        async {
            let listener = TcpListener::bind(localhost())?;
            let addr = listener.local_addr()?;
            let (accepted, connected) = join(listener.accept(), TcpStream::connect(addr)).await;
            let ((accepted, _), connected) = (accepted?, connected?);
            check(&listener, "listener");
            check(&accepted, "accepted stream");
            check(&connected, "connected stream");
            check(UdpSocket::bind(localhost())?, "udp socket");
            let (r, w) = pipe()?;
            check(&r, "pipe reader");
            check(&w, "pipe writer");
            let (a, _b) = UnixStream::pair()?;
            check(&a, "unix stream");
            Ok::<_, Error>(())
        },
        LIMIT,
    );
    assert_eq!(out, Ok(Ok(())));
}

#[test]
fn reuse_port_listeners_share_a_port_that_a_plain_bind_cannot_take() {
    let first = TcpListener::bind_reuse_port(localhost()).unwrap();
    let addr = first.local_addr().unwrap();
    let second = TcpListener::bind_reuse_port(addr).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
    assert_eq!(
        TcpListener::bind(addr).map(drop),
        Err(Error::Os {
            errno: errno(rustix::io::Errno::ADDRINUSE)
        })
    );
}

#[test]
fn sockets_used_outside_a_task_are_refused_with_not_attached() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    let (a, _b) = UnixStream::pair().unwrap();
    let mut buf = [0u8; 4];
    let mut read = pin!(a.read(&mut buf));
    let poll = read.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert_eq!(poll, Poll::Ready(Err(Error::NotAttached)));
}

#[test]
fn sockets_dropped_inside_a_task_leave_no_registration_behind() {
    let (mut lp, _) = attached_loop!(DefaultLoop);
    let out = lp.run_sync(
        async {
            let listener = TcpListener::bind(localhost())?;
            let addr = listener.local_addr()?;
            let (accepted, connected) = join(listener.accept(), TcpStream::connect(addr)).await;
            let ((accepted, _), connected) = (accepted?, connected?);
            connected.write_all(b"x").await?;
            let mut buf = [0u8; 1];
            accepted.read(&mut buf).await?;
            Ok::<_, Error>(())
        },
        LIMIT,
    );
    assert_eq!(out, Ok(Ok(())));
    assert_eq!(lp.handler_count(), 0);
}
