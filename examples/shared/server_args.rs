//! The command line of the two raw echo servers (`examples/echo_server.rs` and its mio port,
//! `benches/examples/mio_echo_server.rs`): `[PORT [MAX_CONNS [IP]]]`. Include with
//! `#[path = ".../shared/server_args.rs"] mod server_args;`.

use std::net::{IpAddr, SocketAddr};

/// The address to listen on and the connection limit, from `[PORT [MAX_CONNS [IP]]]`
/// (defaults 7000, 1024, 127.0.0.1). A value that does not parse, or a MAX_CONNS outside
/// `1..=capacity`, prints the usage line for `name` and exits with status 2.
pub fn server_args(name: &str, capacity: usize) -> (SocketAddr, usize) {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: &str| args.next().unwrap_or_else(|| default.into());
    let (Ok(port), Ok(max), Ok(ip)) = (
        arg("7000").parse::<u16>(),
        arg("1024").parse::<usize>(),
        arg("127.0.0.1").parse::<IpAddr>(),
    ) else {
        eprintln!("usage: {name} [PORT [MAX_CONNS (1..={capacity}) [IP]]]");
        std::process::exit(2);
    };
    if !(1..=capacity).contains(&max) {
        eprintln!("MAX_CONNS must be 1..={capacity}");
        std::process::exit(2);
    }
    (SocketAddr::new(ip, port), max)
}
