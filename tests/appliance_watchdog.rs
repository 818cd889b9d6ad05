//! The appliance example speaks systemd's service protocol: run it (its own process, with its
//! `--duration` self-test) against a fake `NOTIFY_SOCKET` — a Unix datagram socket this test
//! binds in a temporary directory, as systemd would — and check what arrives.
//!
//! Cargo does not give tests the path of an example (`CARGO_BIN_EXE_*` is for `[[bin]]`s), so
//! the test asks the cargo that runs it to build the example (a no-op when `cargo test` already
//! built it), then runs the binary from `target/<profile>/examples/`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;

/// Builds `examples/appliance.rs` with the cargo running this test, in this test's profile,
/// and returns its path.
fn appliance_binary() -> PathBuf {
    // This test runs as target/<profile>/deps/appliance_watchdog-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "-q", "--example", "appliance", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo");
    assert!(
        status.success(),
        "cargo build --example appliance: {status}"
    );
    profile_dir.join("examples").join("appliance")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ioloop-appliance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn appliance_sends_ready_watchdog_pings_and_stopping_to_notify_socket() {
    let bin = appliance_binary();
    let dir = TempDir::new();
    let socket_path = dir.0.join("notify");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind the fake NOTIFY_SOCKET");
    // Read as systemd does, while the appliance runs: the socket's queue is short
    // (net.unix.max_dgram_qlen, 10 by default) and a full queue blocks the sender.
    const END: &str = "END-OF-TEST";
    let reader = std::thread::spawn(move || {
        let mut messages = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = systemd
                .recv(&mut buf)
                .expect("recv on the fake NOTIFY_SOCKET");
            let m = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
            if m == END {
                return messages;
            }
            messages.push(m);
        }
    });

    // WATCHDOG_USEC 200 ms: a ping every 100 ms over the 2 s self-test. Port 0: any free port
    // (the self-test pings whatever the service bound).
    let out = Command::new(&bin)
        .args(["--duration", "2", "--port", "0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .output()
        .expect("run the appliance example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "appliance exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // The appliance has exited: everything it sent is ahead of this marker in the queue.
    UnixDatagram::unbound()
        .and_then(|s| s.send_to(END.as_bytes(), &socket_path))
        .expect("send the end marker");
    let messages = reader.join().expect("reader thread");

    assert_eq!(
        messages.first().map(String::as_str),
        Some("READY=1"),
        "{messages:?}"
    );
    assert_eq!(
        messages.last().map(String::as_str),
        Some("STOPPING=1"),
        "{messages:?}"
    );
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 1, "no WATCHDOG=1 among {messages:?}");
    assert_eq!(
        pings + 2,
        messages.len(),
        "only READY, WATCHDOG and STOPPING expected: {messages:?}"
    );
    // The operator's view: the counters are printed at exit.
    assert!(stdout.contains("stopped: "), "{stdout}");
    assert!(stdout.contains("loop counters: Counters {"), "{stdout}");
}
