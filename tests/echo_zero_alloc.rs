//! An async TCP echo server on `ioloop::net` — one spawned task per connection, 100
//! connections, 100 clients driven concurrently from `run_sync` — makes **no heap allocation**
//! in steady state, on every poller: after the connections are up and have echoed once, 20 more rounds of
//! 100 concurrent echoes (4 000 reads and writes through readiness waits) allocate nothing.
//! A counting global allocator watches this thread only (the harness allocates on its own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ioloop::net::{TcpListener, TcpStream};

#[path = "common/clients.rs"]
mod clients;
use clients::connect_clients;
use ioloop::{join_array, yield_now, Error, Executor, OpenPoller, Poller, Remote};
use loop_core::EventLoop;

#[path = "common/alloc_counter.rs"]
mod alloc_counter;
use alloc_counter::allocations_in;

const CONNECTIONS: usize = 100;
const ROUNDS: usize = 20;
const MSG: usize = 32;
const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

#[macro_use]
#[path = "common/pollers.rs"]
mod pollers;

/// 100 server sockets + 100 client sockets + the listener.
type Lp<P> = EventLoop<P, 256, 64, 64>;
/// One task per connection plus the acceptor.
type Exec = Executor<{ CONNECTIONS + 8 }, 1024>;

for_each_poller! {
    #[test]
    fn async_echo_server_with_100_connections_allocates_nothing_in_steady_state() {
        static REMOTE: Remote<Lp<P>, 16> = Remote::new();
        static EXEC: Exec = Executor::new();
        static ECHOED: AtomicUsize = AtomicUsize::new(0);
        super::echo_server_allocates_nothing_in_steady_state::<P>(&REMOTE, &EXEC, &ECHOED);
    }
}

async fn echo(stream: TcpStream, echoed: &'static AtomicUsize) {
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
        echoed.fetch_add(n, Ordering::Relaxed);
    }
}

async fn acceptor(listener: TcpListener, exec: &'static Exec, echoed: &'static AtomicUsize) {
    while let Ok((stream, _)) = listener.accept().await {
        // A full executor hands the task back; dropping it closes the connection.
        let _ = exec.spawn(echo(stream, echoed));
    }
}

/// One message out and back on `client`, checked.
async fn round_trip(client: &TcpStream, id: usize, round: usize) -> Result<(), Error> {
    let msg: [u8; MSG] = core::array::from_fn(|i| (id * 7 + round * 13 + i) as u8);
    client.write_all(&msg).await?;
    let mut back = [0u8; MSG];
    let mut got = 0;
    while got < MSG {
        let n = client.read(&mut back[got..]).await?;
        if n == 0 {
            return Err(Error::Stopped);
        }
        got += n;
    }
    assert_eq!(back, msg, "client {id} round {round}");
    Ok(())
}

async fn all_round_trip(clients: &[TcpStream], round: usize) -> Result<(), Error> {
    let trips: [_; CONNECTIONS] = core::array::from_fn(|i| round_trip(&clients[i], i, round));
    join_array(trips).await.into_iter().collect()
}

fn echo_server_allocates_nothing_in_steady_state<P: Poller + OpenPoller + 'static>(
    remote: &'static Remote<Lp<P>, 16>,
    exec: &'static Exec,
    echoed: &'static AtomicUsize,
) {
    // The counter sees this thread's allocations (so a zero below is not vacuous).
    let (_, n) = allocations_in(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(n, 1);

    let mut lp = Lp::<P>::new_boxed().unwrap();
    lp.attach_remote(remote).unwrap();
    lp.attach_executor(exec).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();

    // Warm-up: accept 100 connections (each a task) and echo once on each. Allocations here
    // are the test's own (the Vec of clients).
    let clients = lp
        .run_sync(
            async move {
                exec.spawn(acceptor(listener, exec, echoed))
                    .map_err(|r| r.error)?;
                let clients = connect_clients(addr, CONNECTIONS).await?;
                all_round_trip(&clients, 0).await?;
                Ok::<_, Error>(clients)
            },
            LIMIT,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        exec.len(),
        CONNECTIONS + 1,
        "one task per connection + the acceptor"
    );

    // Steady state: 20 rounds of 100 concurrent echoes.
    let (out, allocations) = allocations_in(|| {
        lp.run_sync(
            async {
                for round in 1..=ROUNDS {
                    all_round_trip(&clients, round).await?;
                }
                Ok::<_, Error>(())
            },
            LIMIT,
        )
    });
    assert_eq!(out, Ok(Ok(())));
    assert_eq!(
        echoed.load(Ordering::Relaxed),
        (ROUNDS + 1) * CONNECTIONS * MSG
    );
    assert_eq!(
        allocations, 0,
        "heap allocations while echoing {ROUNDS} rounds over {CONNECTIONS} connections"
    );

    // Close the clients inside the loop: every server task reads end-of-stream and finishes.
    let out = lp.run_sync(
        async move {
            drop(clients);
            while exec.len() > 1 {
                yield_now().await;
            }
        },
        LIMIT,
    );
    assert_eq!(out, Ok(()));
    assert_eq!(lp.handler_count(), 1, "only the listener is left");
}
