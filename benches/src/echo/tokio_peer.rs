//! tokio, current_thread runtime: tokio's own echo server example, one task per connection.
//!
//! An accept task `accept().await`s connections (`TcpListener::from_std`), sets `TCP_NODELAY`
//! and spawns a task per connection that owns a `BUF`-byte buffer and loops
//! `n = read(&mut buf).await; write_all(&buf[..n]).await` (`AsyncReadExt` /
//! `AsyncWriteExt`). tokio's `read` clears the readiness after a short read, so a request is
//! one `recv`, as in the other servers. This is how the workload is written in tokio; the
//! task and its buffer are allocated per connection, at accept time, not per request.
//! The runtime runs on the server thread until the bench thread sets the stop signal (a flag
//! and the waker of the future `block_on` is running).

use std::io;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{ServerCfg, ServerHandle, BUF};
use crate::sys::flag_set;

/// A one-shot stop signal another thread can set.
#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Stop {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        flag_set(&self.flag, &self.waker).await
    }
}

/// Starts the server thread.
pub fn spawn(listener: StdListener, cfg: ServerCfg) -> io::Result<ServerHandle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stop = Arc::new(Stop::default());
    let signal = stop.clone();
    let thread = std::thread::Builder::new()
        .name("echo-tokio".into())
        .spawn(move || {
            cfg.enter_thread();
            let failure: Arc<Mutex<Option<io::Error>>> = Arc::default();
            let f = failure.clone();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                tokio::spawn(async move {
                    if let Err(e) = accept(listener).await {
                        *f.lock().unwrap() = Some(e);
                    }
                });
                signal.wait().await;
                Ok::<_, io::Error>(())
            })?;
            // Dropping the runtime cancels every task and closes their sockets.
            drop(rt);
            let failure = failure.lock().unwrap().take();
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })?;
    Ok(ServerHandle {
        stop: Box::new(move || stop.set()),
        thread,
    })
}

async fn accept(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        stream.set_nodelay(true)?;
        tokio::spawn(echo(stream));
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
