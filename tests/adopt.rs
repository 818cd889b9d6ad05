//! Adopting sockets and pipes made outside the loop (`from_std`, `From<OwnedFd>`, as systemd
//! socket activation hands them over) and giving them back (`into_std`, `OwnedFd::from`).
//! Every loop run is bounded by a `run_sync` timeout.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use ioloop::join;
use ioloop::net::{pipe, PipeReader, TcpListener, TcpStream, UdpSocket, UnixStream};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

#[macro_use]
#[path = "common/attached.rs"]
mod attached;

fn nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

fn cloexec(fd: impl AsFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

#[test]
fn a_std_listener_and_stream_made_before_the_loop_serve_an_exchange_on_it() {
    // Both made by std, blocking, before any loop exists.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let std_client = std::net::TcpStream::connect(addr).unwrap();
    assert!(!nonblocking(&std_listener));

    let listener = TcpListener::from_std(std_listener).unwrap();
    let client = TcpStream::from_std(std_client).unwrap();
    assert!(nonblocking(&listener) && nonblocking(&client));
    assert_eq!(listener.local_addr().unwrap(), addr);

    let (mut lp, _) = attached_loop!(ioloop::EventLoop);
    let server = async {
        let (s, _) = listener.accept().await?;
        let mut buf = [0u8; 4];
        let n = s.read(&mut buf).await?;
        s.write_all(&buf[..n]).await?;
        Ok::<_, ioloop::Error>(())
    };
    let client = async {
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        let n = client.read(&mut buf).await?;
        Ok::<_, ioloop::Error>(buf[..n].to_vec())
    };
    let answer = side_by_side!(lp, server, client);
    assert_eq!(answer, b"ping");
}

#[test]
fn an_inherited_fd_without_cloexec_is_adopted_nonblocking_and_close_on_exec() {
    // As systemd passes LISTEN_FDS: a listening socket with FD_CLOEXEC cleared.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    rustix::io::fcntl_setfd(&std_listener, rustix::io::FdFlags::empty()).unwrap();
    let raw = std_listener.as_raw_fd();
    let fd = OwnedFd::from(std_listener);
    let listener = TcpListener::from(fd);
    assert_eq!(listener.as_raw_fd(), raw, "the same fd, not a duplicate");
    assert!(nonblocking(&listener));
    assert!(cloexec(&listener));

    let addr = listener.local_addr().unwrap();
    let (mut lp, _) = attached_loop!(ioloop::EventLoop);
    let peer = lp
        .run_sync(
            async {
                let (accepted, connected) = join(listener.accept(), TcpStream::connect(addr)).await;
                let (_s, peer) = accepted?;
                Ok::<_, ioloop::Error>((peer, connected?.local_addr()?))
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(peer.0, peer.1);
}

#[test]
fn into_std_hands_back_a_working_socket_after_loop_use() {
    let (a, b) = UnixStream::pair().unwrap();
    let (mut lp, _) = attached_loop!(ioloop::EventLoop);
    // Use `a` on the loop (it registers), then take it back inside run_sync (it deregisters).
    let std_a = lp
        .run_sync(
            async move {
                a.write_all(b"on the loop").await?;
                Ok::<_, ioloop::Error>(a.into_std())
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert!(nonblocking(&std_a), "left non-blocking, as documented");
    std_a.set_nonblocking(false).unwrap();
    let mut std_b = b.into_std();
    std_b.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 11];
    std_b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"on the loop");
    (&std_a).write_all(b"and off it").unwrap();
    let mut buf = [0u8; 10];
    std_b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"and off it");
}

#[test]
fn a_socket_taken_back_can_be_adopted_again_by_the_same_loop() {
    let (mut lp, _) = attached_loop!(ioloop::EventLoop);
    let (a, b) = UnixStream::pair().unwrap();
    let got = lp
        .run_sync(
            async move {
                b.write_all(b"x").await?;
                let mut buf = [0u8; 1];
                a.read(&mut buf).await?; // `a` is registered now
                let fd = OwnedFd::from(a); // deregistered here, inside the loop
                let a = UnixStream::from(fd); // same fd number, registers again
                b.write_all(b"y").await?;
                a.read(&mut buf).await?;
                Ok::<_, ioloop::Error>(buf[0])
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(got, b'y');
}

#[test]
fn udp_and_pipes_round_trip_through_std() {
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = std_udp.local_addr().unwrap();
    let udp = UdpSocket::from_std(std_udp).unwrap();
    assert_eq!(udp.local_addr().unwrap(), addr);
    assert_eq!(udp.into_std().local_addr().unwrap(), addr);

    let (r, w) = std::io::pipe().unwrap();
    let r = PipeReader::from_std(r).unwrap();
    let w = ioloop::net::PipeWriter::from_std(w).unwrap();
    assert!(nonblocking(&r) && nonblocking(&w));
    let (mut lp, _) = attached_loop!(ioloop::EventLoop);
    let n = lp
        .run_sync(
            async {
                w.write_all(b"abc").await?;
                let mut buf = [0u8; 8];
                r.read(&mut buf).await
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(n, 3);
    let (r2, _w2) = pipe().unwrap();
    let std_r: std::io::PipeReader = r2.into_std();
    assert!(nonblocking(&std_r));
}
