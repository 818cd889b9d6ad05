//! TCP clients for the server tests. Include with `#[path = "common/clients.rs"] mod clients;`.
#![allow(dead_code)]

use std::net::SocketAddr;

use ioloop::net::TcpStream;
use ioloop::Error;

/// `n` clients connected to `addr`, one after the other (each connect completes first).
///
/// # Errors
/// The first connect's error.
pub async fn connect_clients(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, Error> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).await?);
    }
    Ok(clients)
}
