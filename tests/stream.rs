//! `ioloop::stream::BufStream` (Tornado's `IOStream`, TORNADO.md §4.5): every read and write
//! method, its limit errors, and its deadlines.
//!
//! Stream logic runs over real socketpairs and pipes on every poller (epoll, poll, select) with
//! count-based assertions only. The deadlines run on the simulated poller and clock
//! (`SimPoller` cannot carry real sockets, so the stream there wraps a scripted in-memory
//! peer): a timeout fires at exactly its deadline, with no sleeping and no timing threshold.

use core::future::{pending, Future};
use std::time::Duration;

use embedded_io_async::{BufRead, ErrorType, Read, Write};
use ioloop::net::{pipe, IoError, UnixStream};
use ioloop::stream::{BufStream, Duplex, StreamError, TimeoutKind, Timeouts};
use ioloop::{join, Error, Executor, OpenPoller, Poller, Remote};
use loop_core::EventLoop;

#[macro_use]
#[path = "common/attached.rs"]
mod attached;
#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

type Buf = BufStream<UnixStream, 64, 32>;

fn pair() -> (Buf, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (BufStream::new(a), b)
}

for_each_poller! {
    type Lp = EventLoop<P, 16, 32, 16>;

    /// One `#[test]` a case, each on a loop with a remote and an executor of its own.
    macro_rules! on_a_loop {
        ($($test:ident),* $(,)?) => {$(
            #[test]
            fn $test() {
                let (mut lp, _) = attached_loop!(Lp, 4, 4096);
                super::run(&mut lp, super::$test());
            }
        )*};
    }

    on_a_loop!(
        read_until_returns_data_through_the_delimiter_and_keeps_the_rest,
        read_until_assembles_a_delimiter_split_across_reads,
        read_until_without_delimiter_within_max_is_limit_exceeded_and_stays_writable,
        read_until_limit_is_bounded_by_the_buffer,
        read_until_after_peer_close_is_closed,
        read_exact_waits_for_n_bytes_and_refuses_more_than_the_buffer,
        read_exact_into_fills_a_slice_larger_than_the_buffer,
        read_partial_returns_what_is_there,
        read_until_close_returns_everything_until_eof,
        read_until_close_over_capacity_is_buffer_full,
        write_queues_below_high_water_and_flush_sends,
        write_above_high_water_flushes_and_large_writes_stream_through,
        write_to_a_closed_peer_is_an_io_error_and_closes_the_stream,
        wait_closed_resolves_on_peer_close_and_keeps_data,
        close_fails_every_later_operation,
        embedded_io_traits_read_bufread_write,
        pipes_work_through_duplex,
        deadlines_fire_on_real_sockets,
    );
}

fn run<P: Poller + OpenPoller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
    test: impl Future<Output = ()>,
) {
    lp.run_sync(test, LIMIT).unwrap();
}

async fn read_until_returns_data_through_the_delimiter_and_keeps_the_rest() {
    let (mut s, peer) = pair();
    peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY")
        .await
        .unwrap();
    assert_eq!(
        s.read_until(b"\r\n", 64).await.unwrap(),
        b"GET / HTTP/1.1\r\n"
    );
    assert_eq!(
        s.read_until(b"\r\n\r\n", 64).await.unwrap(),
        b"Host: x\r\n\r\n"
    );
    assert_eq!(s.read_exact(4).await.unwrap(), b"BODY");
    assert_eq!(s.buffered(), 0);
}

async fn read_until_assembles_a_delimiter_split_across_reads() {
    let (mut s, peer) = pair();
    let (line, ()) = join(
        async { s.read_until(b"\r\n\r\n", 64).await.map(<[u8]>::to_vec) },
        async {
            for chunk in [&b"ab\r"[..], b"\n", b"\r", b"\ncd"] {
                peer.write_all(chunk).await.unwrap();
                ioloop::yield_now().await;
            }
        },
    )
    .await;
    assert_eq!(line.unwrap(), b"ab\r\n\r\n");
    assert_eq!(s.read_exact(2).await.unwrap(), b"cd");
}

async fn read_until_without_delimiter_within_max_is_limit_exceeded_and_stays_writable() {
    let (mut s, peer) = pair();
    peer.write_all(&[b'x'; 20]).await.unwrap();
    assert_eq!(
        s.read_until(b"\n", 16).await,
        Err(StreamError::LimitExceeded { max: 16 })
    );
    // Tornado closes here; this stream stays writable so a server can answer (HTTP 431).
    s.write(b"431").await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(peer.read(&mut buf).await.unwrap(), 3);
    // The delimiter just past the limit is still beyond it.
    let (mut s, peer) = pair();
    peer.write_all(b"0123456789\n").await.unwrap();
    assert_eq!(
        s.read_until(b"\n", 10).await,
        Err(StreamError::LimitExceeded { max: 10 })
    );
    assert_eq!(s.read_until(b"\n", 11).await.unwrap(), b"0123456789\n");
}

async fn read_until_limit_is_bounded_by_the_buffer() {
    let (mut s, peer) = pair();
    peer.write_all(&[b'y'; 100]).await.unwrap();
    // max above the 64-byte buffer: the buffer is the limit; it never grows.
    assert_eq!(
        s.read_until(b"\n", 1 << 20).await,
        Err(StreamError::LimitExceeded { max: 64 })
    );
    assert_eq!(s.buffered(), 64);
}

async fn read_until_after_peer_close_is_closed() {
    let (mut s, peer) = pair();
    peer.write_all(b"no newline").await.unwrap();
    drop(peer);
    assert_eq!(s.read_until(b"\n", 64).await, Err(StreamError::Closed));
    // The buffered bytes are still there for a read they satisfy.
    assert_eq!(s.read_partial(64).await.unwrap(), b"no newline");
    assert_eq!(s.read_partial(64).await, Err(StreamError::Closed));
    assert!(s.is_closed());
}

async fn read_exact_waits_for_n_bytes_and_refuses_more_than_the_buffer() {
    let (mut s, peer) = pair();
    assert_eq!(
        s.read_exact(65).await,
        Err(StreamError::BufferFull { capacity: 64 })
    );
    let (got, ()) = join(
        async { s.read_exact(10).await.map(<[u8]>::to_vec) },
        async {
            peer.write_all(b"01234").await.unwrap();
            ioloop::yield_now().await;
            peer.write_all(b"56789xyz").await.unwrap();
        },
    )
    .await;
    assert_eq!(got.unwrap(), b"0123456789");
    assert_eq!(s.read_exact(3).await.unwrap(), b"xyz");
    drop(peer);
    assert_eq!(s.read_exact(1).await, Err(StreamError::Closed));
}

async fn read_exact_into_fills_a_slice_larger_than_the_buffer() {
    let (mut s, peer) = pair();
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut out = vec![0u8; 1000];
    let (r, ()) = join(s.read_exact_into(&mut out), async {
        peer.write_all(&data).await.unwrap();
    })
    .await;
    r.unwrap();
    assert_eq!(out, data);
}

async fn read_partial_returns_what_is_there() {
    let (mut s, peer) = pair();
    peer.write_all(b"hello").await.unwrap();
    assert_eq!(s.read_partial(3).await.unwrap(), b"hel");
    assert_eq!(s.read_partial(64).await.unwrap(), b"lo");
    assert_eq!(s.read_partial(0).await.unwrap(), b"");
    let (got, ()) = join(
        async { s.read_partial(64).await.map(<[u8]>::to_vec) },
        async {
            ioloop::yield_now().await;
            peer.write_all(b"later").await.unwrap();
        },
    )
    .await;
    assert_eq!(got.unwrap(), b"later");
}

async fn read_until_close_returns_everything_until_eof() {
    let (mut s, peer) = pair();
    let ((), got) = join(
        async {
            peer.write_all(b"first ").await.unwrap();
            ioloop::yield_now().await;
            peer.write_all(b"second").await.unwrap();
            drop(peer);
        },
        async { s.read_until_close().await.map(<[u8]>::to_vec) },
    )
    .await;
    assert_eq!(got.unwrap(), b"first second");
    assert_eq!(s.read_until_close().await.unwrap(), b"");
}

async fn read_until_close_over_capacity_is_buffer_full() {
    let (mut s, peer) = pair();
    peer.write_all(&[1u8; 65]).await.unwrap();
    drop(peer);
    assert_eq!(
        s.read_until_close().await,
        Err(StreamError::BufferFull { capacity: 64 })
    );
}

async fn write_queues_below_high_water_and_flush_sends() {
    let (mut s, peer) = pair();
    s.write(b"abc").await.unwrap();
    s.write(b"def").await.unwrap();
    assert_eq!(
        s.queued(),
        6,
        "below the high-water mark nothing is sent yet"
    );
    s.flush().await.unwrap();
    assert_eq!(s.queued(), 0);
    let mut buf = [0u8; 16];
    assert_eq!(peer.read(&mut buf).await.unwrap(), 6);
    assert_eq!(&buf[..6], b"abcdef");
}

async fn write_above_high_water_flushes_and_large_writes_stream_through() {
    let (mut s, peer) = pair();
    s.set_write_high_water(8);
    s.write(b"1234567").await.unwrap();
    assert_eq!(s.queued(), 7);
    s.write(b"89").await.unwrap();
    assert_eq!(s.queued(), 0, "reaching the mark flushed");
    let big: Vec<u8> = (0..500u32).map(|i| (i * 7) as u8).collect();
    s.write(&big).await.unwrap();
    s.flush().await.unwrap();
    let mut got = vec![0u8; 509];
    let mut n = 0;
    while n < got.len() {
        n += peer.read(&mut got[n..]).await.unwrap();
    }
    assert_eq!(&got[..9], b"123456789");
    assert_eq!(&got[9..], &big[..]);
}

async fn write_to_a_closed_peer_is_an_io_error_and_closes_the_stream() {
    let (mut s, peer) = pair();
    drop(peer);
    s.write(b"x").await.unwrap();
    let e = s.flush().await.unwrap_err();
    assert!(
        matches!(e, StreamError::Io(Error::Os { .. })),
        "EPIPE or ECONNRESET, got {e:?}"
    );
    assert_eq!(s.flush().await, Err(StreamError::Closed));
    assert_eq!(s.write(b"y").await, Err(StreamError::Closed));
    assert_eq!(
        Error::from(StreamError::Closed),
        Error::Os {
            errno: ioloop::Errno(libc::EPIPE)
        }
    );
}

async fn wait_closed_resolves_on_peer_close_and_keeps_data() {
    let (mut s, peer) = pair();
    let (r, ()) = join(s.wait_closed(), async {
        peer.write_all(b"bye").await.unwrap();
        ioloop::yield_now().await;
        drop(peer);
    })
    .await;
    r.unwrap();
    assert!(s.is_closed());
    assert_eq!(s.read_partial(64).await.unwrap(), b"bye");
}

async fn close_fails_every_later_operation() {
    let (mut s, peer) = pair();
    peer.write_all(b"data\n").await.unwrap();
    s.write(b"queued").await.unwrap();
    s.close();
    assert!(s.is_closed());
    assert_eq!(s.queued(), 0, "queued writes are discarded");
    assert_eq!(s.read_until(b"\n", 64).await, Err(StreamError::Closed));
    assert_eq!(s.read_exact(1).await, Err(StreamError::Closed));
    assert_eq!(s.read_partial(1).await, Err(StreamError::Closed));
    assert_eq!(s.read_until_close().await, Err(StreamError::Closed));
    assert_eq!(s.write(b"x").await, Err(StreamError::Closed));
    assert_eq!(s.flush().await, Err(StreamError::Closed));
}

async fn embedded_io_traits_read_bufread_write() {
    let (mut s, peer) = pair();
    peer.write_all(b"abcdef").await.unwrap();
    assert_eq!(BufRead::fill_buf(&mut s).await.unwrap(), b"abcdef");
    BufRead::consume(&mut s, 2);
    let mut buf = [0u8; 3];
    assert_eq!(Read::read(&mut s, &mut buf).await.unwrap(), 3);
    assert_eq!(&buf, b"cde");
    assert_eq!(Write::write(&mut s, b"xy").await.unwrap(), 2);
    Write::flush(&mut s).await.unwrap();
    let mut back = [0u8; 2];
    assert_eq!(peer.read(&mut back).await.unwrap(), 2);
    assert_eq!(&back, b"xy");
    drop(peer);
    assert_eq!(
        Read::read(&mut s, &mut buf).await.unwrap(),
        1,
        "the buffered 'f'"
    );
    assert_eq!(
        Read::read(&mut s, &mut buf).await.unwrap(),
        0,
        "end-of-stream"
    );
    assert_eq!(BufRead::fill_buf(&mut s).await.unwrap(), b"");
}

async fn pipes_work_through_duplex() {
    let (r1, w1) = pipe().unwrap();
    let (r2, w2) = pipe().unwrap();
    // `s` reads r1 and writes w2; the test talks through w1 and r2.
    let mut s: BufStream<_, 64, 32> = BufStream::new(Duplex {
        reader: r1,
        writer: w2,
    });
    w1.write_all(b"line one\nline two\n").await.unwrap();
    assert_eq!(s.read_until(b"\n", 64).await.unwrap(), b"line one\n");
    assert_eq!(s.read_until(b"\n", 64).await.unwrap(), b"line two\n");
    s.write(b"reply").await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(r2.read(&mut buf).await.unwrap(), 5);
    drop(w1);
    assert_eq!(s.read_until_close().await.unwrap(), b"");
}

/// The deadlines on a real poller (exact times are the simulated clock's business, below):
/// a silent peer hits the idle timeout, a half line the read timeout, a peer that does not
/// read the write timeout; each closes the stream.
async fn deadlines_fire_on_real_sockets() {
    let short = Timeouts {
        idle: Some(Duration::from_millis(20)),
        read: Some(Duration::from_millis(20)),
        write: Some(Duration::from_millis(20)),
    };
    let (mut s, _peer) = pair();
    s.set_timeouts(short);
    assert_eq!(
        s.read_until(b"\n", 64).await,
        Err(StreamError::TimedOut(TimeoutKind::Idle))
    );
    assert!(s.is_closed());
    let (mut s, peer) = pair();
    s.set_timeouts(short);
    peer.write_all(b"half a li").await.unwrap();
    assert_eq!(
        s.read_until(b"\n", 64).await,
        Err(StreamError::TimedOut(TimeoutKind::Read))
    );
    let (s, _peer) = UnixStream::pair().unwrap();
    let mut s: BufStream<_, 64, 4096> = BufStream::new(s).with_timeouts(short);
    // Nobody reads: the socket buffer fills, then the flush waits past its deadline.
    let chunk = [7u8; 4096];
    let mut result = Ok(());
    for _ in 0..4096 {
        result = s.write(&chunk).await;
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(StreamError::TimedOut(TimeoutKind::Write)));
    assert_eq!(s.flush().await, Err(StreamError::Closed));
}

// ---- Deadlines, on the simulated clock ------------------------------------------------------

/// An in-memory peer: reads hand out `script` and then wait for ever (a silent peer); writes
/// take `accept` bytes and then wait for ever (a peer that stopped reading).
struct Scripted {
    script: &'static [u8],
    accept: usize,
}

impl ErrorType for Scripted {
    type Error = IoError;
}

impl Read for Scripted {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        if self.script.is_empty() {
            pending::<()>().await;
        }
        let n = buf.len().min(self.script.len());
        buf[..n].copy_from_slice(&self.script[..n]);
        self.script = &self.script[n..];
        Ok(n)
    }
}

impl Write for Scripted {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        if self.accept == 0 {
            pending::<()>().await;
        }
        let n = buf.len().min(self.accept);
        self.accept -= n;
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

mod deadlines {
    use super::*;
    use loop_core::sim::SimPoller;

    type Lp = EventLoop<SimPoller, 8, 16, 8>;

    const T: Timeouts = Timeouts {
        idle: Some(Duration::from_secs(30)),
        read: Some(Duration::from_secs(5)),
        write: Some(Duration::from_secs(7)),
    };

    /// Run `f` on a simulated loop; returns its output and the simulated time it took.
    macro_rules! sim {
        ($f:expr) => {{
            static REMOTE: Remote<Lp, 16> = Remote::new();
            static EXEC: Executor<2, 1024> = Executor::new();
            let mut lp: Lp = EventLoop::with_poller(SimPoller::new());
            lp.attach_remote(&REMOTE).unwrap();
            lp.attach_executor(&EXEC).unwrap();
            let out = lp.run_sync($f, None).unwrap();
            (out, lp.now().as_nanos() / 1_000_000)
        }};
    }

    /// A timeout of `kind`, then `Closed` for the next call: the stream gave up for good.
    fn timed_out_then_closed(
        kind: TimeoutKind,
    ) -> (Result<(), StreamError>, Result<(), StreamError>) {
        (Err(StreamError::TimedOut(kind)), Err(StreamError::Closed))
    }

    fn stream(script: &'static [u8], accept: usize) -> BufStream<Scripted, 64, 16> {
        BufStream::new(Scripted { script, accept }).with_timeouts(T)
    }

    #[test]
    fn a_silent_peer_hits_the_idle_timeout_at_its_deadline() {
        let (out, ms) = sim!(async {
            let mut s = stream(b"", 0);
            let e = s.read_until(b"\n", 64).await.map(|_| ());
            (e, s.is_closed())
        });
        assert_eq!(out, (Err(StreamError::TimedOut(TimeoutKind::Idle)), true));
        assert_eq!(ms, 30_000);
    }

    #[test]
    fn a_half_sent_header_hits_the_read_timeout_after_its_first_byte() {
        // Tornado's header_timeout: the request began, then the peer stopped.
        let (out, ms) = sim!(async {
            let mut s = stream(b"GET / HTTP/1.1\r\nHost:", 0);
            let e = s.read_until(b"\r\n\r\n", 64).await.map(|_| ());
            let again = s.read_partial(1).await.map(|_| ());
            (e, again)
        });
        assert_eq!(out, timed_out_then_closed(TimeoutKind::Read));
        assert_eq!(ms, 5_000);
    }

    #[test]
    fn every_read_method_times_out() {
        let (out, ms) = sim!(async {
            let mut r = [None; 5];
            let mut s = stream(b"ab", 0);
            r[0] = Some(s.read_exact(3).await.map(|_| ()));
            let mut s = stream(b"", 0);
            r[1] = Some(s.read_partial(3).await.map(|_| ()));
            let mut s = stream(b"ab", 0);
            r[2] = Some(s.read_until_close().await.map(|_| ()));
            let mut s = stream(b"ab", 0);
            let mut big = [0u8; 4];
            r[3] = Some(s.read_exact_into(&mut big).await);
            let mut s = stream(b"", 0);
            let mut one = [0u8; 1];
            r[4] = Some(Read::read(&mut s, &mut one).await.map(|_| ()));
            r
        });
        let read = Some(Err(StreamError::TimedOut(TimeoutKind::Read)));
        let idle = Some(Err(StreamError::TimedOut(TimeoutKind::Idle)));
        assert_eq!(out, [read, idle, read, read, idle]);
        assert_eq!(ms, 5_000 + 30_000 + 5_000 + 5_000 + 30_000);
    }

    #[test]
    fn a_peer_that_stops_reading_hits_the_write_timeout() {
        let (out, ms) = sim!(async {
            let mut s = stream(b"", 10);
            // 16-byte buffer: the write past the high-water mark must flush, and the peer
            // takes only 10 bytes.
            let e = s.write(&[0u8; 40]).await;
            (e, s.write(b"x").await)
        });
        assert_eq!(out, timed_out_then_closed(TimeoutKind::Write));
        assert_eq!(ms, 7_000);
    }

    #[test]
    fn data_already_buffered_skips_the_idle_wait() {
        let (out, ms) = sim!(async {
            let mut s = stream(b"a\nb", 0);
            let first = s.read_until(b"\n", 64).await.map(<[u8]>::to_vec);
            // "b" is buffered: the wait for "\n" is a read timeout, not an idle one.
            let second = s.read_until(b"\n", 64).await.map(|_| ());
            (first, second)
        });
        assert_eq!(
            out,
            (
                Ok(b"a\n".to_vec()),
                Err(StreamError::TimedOut(TimeoutKind::Read))
            )
        );
        assert_eq!(ms, 5_000);
    }

    #[test]
    fn no_timeouts_means_no_timer() {
        let (out, ms) = sim!(async {
            let mut s: BufStream<Scripted, 64, 16> = BufStream::new(Scripted {
                script: b"x\n",
                accept: 100,
            });
            let line = s.read_until(b"\n", 64).await.map(<[u8]>::to_vec);
            s.write(b"hi").await.unwrap();
            (line, s.flush().await)
        });
        assert_eq!(out, (Ok(b"x\n".to_vec()), Ok(())));
        assert_eq!(ms, 0);
    }

    #[test]
    fn stream_errors_display_and_convert() {
        assert_eq!(StreamError::Closed.to_string(), "stream closed");
        assert_eq!(
            StreamError::LimitExceeded { max: 8 }.to_string(),
            "delimiter not found within 8 bytes"
        );
        assert_eq!(
            StreamError::TimedOut(TimeoutKind::Read).to_string(),
            "read timeout"
        );
        assert_eq!(
            Error::from(StreamError::TimedOut(TimeoutKind::Idle)),
            Error::TimedOut
        );
        use embedded_io_async::Error as _;
        assert_eq!(
            StreamError::TimedOut(TimeoutKind::Write).kind(),
            embedded_io_async::ErrorKind::TimedOut
        );
    }
}
