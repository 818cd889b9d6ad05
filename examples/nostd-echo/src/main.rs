//! A `no_std`, allocation-free, static TCP echo server on `loop-core` + `loop-linux` (epoll).
//!
//! ```text
//! nostd-echo [PORT]        # listens on 127.0.0.1:PORT (default 7007)
//! ```
//!
//! * One [`EventLoop`] over [`Epoll`], its tables sized for [`MAX_CONNS`] connections plus the
//!   listener, built on `main`'s stack; every connection's state lives in the fixed, static
//!   [`TABLE`]. Nothing is ever allocated.
//! * The listener's handler accepts (non-blocking, close-on-exec) until `EAGAIN` and gives each
//!   connection a slot and a handler (the loop's callback API, `add_handler` /
//!   `remove_handler`). When every slot is taken it stops watching the listener
//!   (`update_handler` with an empty interest): new clients wait in the kernel's listen backlog
//!   until a connection ends (back-pressure; nothing is accepted and then dropped).
//! * A connection's handler reads into its slot's buffer and writes it back. A short write
//!   keeps the rest and switches the handler to `WRITE`, reading nothing meanwhile, so a client
//!   that does not read its echo holds one buffer and no more. End of stream or an error closes
//!   the connection and frees the slot.
//! * Syscalls go through rustix's `linux_raw` backend (no `libc` crate). The binary is linked
//!   statically against musl for its C entry point only (see [`main`] for why not a `_start`
//!   of our own); `.cargo/config.toml` here picks the target and a non-PIE static layout.
//! * A panic (none is expected: every failure below is handled) exits with status 101.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use loop_core::{EventLoop, HandlerResult, Interest, Readiness};
use loop_linux::Epoll;
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketAddrV4, SocketFlags, SocketType};

/// Connections served at once.
const MAX_CONNS: usize = 16;
/// Bytes read per call (and held per connection).
const BUF: usize = 1024;

#[path = "../../shared/echo_step.rs"]
mod echo_step;
use echo_step::Next;
/// Port when none is given.
const DEFAULT_PORT: u16 = 7007;

/// Handler slots: one per connection plus the listener. No timer and no callback slots: this
/// server uses neither, and with none the timer heap's code is not in the binary (3.4 KB).
type Loop = EventLoop<Epoll, { MAX_CONNS + 1 }, 0, 0>;

/// One connection: its socket and the bytes read but not yet written back.
struct Conn {
    fd: Option<OwnedFd>,
    /// Backlog still to be written: `buf[start..end]`.
    start: usize,
    end: usize,
    buf: [u8; BUF],
}

/// The connection table.
struct Table(UnsafeCell<[Conn; MAX_CONNS]>);

// SAFETY: the program has one thread (nothing here spawns one), so the table is never touched
// from two threads.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new(
    [const {
        Conn {
            fd: None,
            start: 0,
            end: 0,
            buf: [0; BUF],
        }
    }; MAX_CONNS],
));

/// The table, borrowed for one handler call.
///
/// # Safety
/// No other borrow from `table` may be alive while this one is. It holds here: the program
/// has one thread, the loop calls one handler at a time, each handler calls `table` once and
/// drops the borrow before it returns, and nothing it calls while holding it (the loop's
/// `add_handler`, `update_handler`, `remove_handler`) runs a handler.
unsafe fn table() -> &'static mut [Conn; MAX_CONNS] {
    // SAFETY: exclusive by the caller's contract; the pointer is valid for the program's life.
    unsafe { &mut *TABLE.0.get() }
}

/// Exits the process with `code` (the `exit_group` system call; nothing to flush).
fn exit(code: i32) -> ! {
    // SAFETY: `exit_group` takes one integer argument and does not return; it touches no
    // memory of ours.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn, nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc 0", in("x8") 94, in("x0") code, options(noreturn, nostack));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}

/// The port in `arg` (a NUL-terminated C string), if it is a decimal number in 1..=65535.
fn parse_port(arg: *const u8) -> Option<u16> {
    let mut port: u32 = 0;
    let mut p = arg;
    loop {
        // SAFETY: `arg` is one of `main`'s `argv` strings, NUL-terminated; `p` never goes past
        // its NUL (the loop stops there).
        let c = unsafe { *p };
        if c == 0 {
            break;
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        port = port * 10 + u32::from(d);
        if port > 65535 {
            return None;
        }
        // SAFETY: `c` was not the NUL, so the next byte is still inside the string.
        p = unsafe { p.add(1) };
    }
    u16::try_from(port).ok().filter(|&p| p != 0)
}

/// The C entry point (musl's `__libc_start_main` calls it). `argv[1]`, if given, is the port.
///
/// Why musl's start-up code and not a `_start` of our own: musl's part is about 2 KB (its
/// `__libc_start_main`, `__init_libc`, the TLS set-up, plus `memcpy` / `memset` / `bcmp` /
/// `strlen`, which `core` calls and `compiler_builtins` does not export on this target). A
/// hand-written `_start` would need assembly to find `argc` / `argv` on the initial stack, our
/// own `mem*` functions (written so that the compiler does not turn their loops back into
/// calls to themselves), and no thread-local storage anywhere; it would save at most those
/// 2 KB, for code that is easy to get subtly wrong. musl's is the sound choice.
/// Exit status: 0 never (the server runs until killed), 2 for a bad port, 1 if the socket
/// cannot be set up or the loop fails.
#[no_mangle]
extern "C" fn main(argc: i32, argv: *const *const u8) -> i32 {
    let port = if argc > 1 {
        // SAFETY: the C runtime passes `argc` valid entries in `argv`.
        match parse_port(unsafe { *argv.add(1) }) {
            Some(p) => p,
            None => return 2,
        }
    } else {
        DEFAULT_PORT
    };
    match serve(port) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Listens on 127.0.0.1:`port` and serves until the loop fails.
fn serve(port: u16) -> Result<(), loop_core::Error> {
    let os = |e: Errno| loop_core::Error::from(loop_core::Errno(e.raw_os_error()));
    let listener = net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(os)?;
    net::sockopt::set_socket_reuseaddr(&listener, true).map_err(os)?;
    net::bind(
        &listener,
        &SocketAddrV4::new(net::Ipv4Addr::LOCALHOST, port),
    )
    .map_err(os)?;
    net::listen(&listener, 128).map_err(os)?;
    let lfd = listener_fd(&listener);
    // Never dropped: `run` returns only on failure, and then the process exits, which closes
    // every fd at once. Leaking it (safe) keeps the loop's teardown code out of the binary.
    let mut lp = core::mem::ManuallyDrop::new(Loop::new()?);
    lp.add_handler(lfd, Interest::READ, move |lp, _, _| accept_all(lp, lfd))
        .map_err(|r| r.error)?;
    lp.run()
}

/// The listener's raw fd number; `listener` outlives the loop that uses it (both live in
/// [`serve`], the loop dropped first).
fn listener_fd(listener: &OwnedFd) -> RawFd {
    listener.as_raw_fd()
}

/// Accepts until `EAGAIN` or until the table is full (then pauses the listener).
fn accept_all(lp: &mut Loop, lfd: RawFd) -> HandlerResult {
    // SAFETY: `lfd` is the listener, open for as long as the loop runs (see `listener_fd`).
    let listener = unsafe { BorrowedFd::borrow_raw(lfd) };
    // SAFETY: the only borrow of the table during this handler call (see `table`).
    let conns = unsafe { table() };
    loop {
        let Some(i) = conns.iter().position(|c| c.fd.is_none()) else {
            // Full: stop accepting until a connection ends (`close`).
            let _ = lp.update_handler(lfd, Interest::empty());
            return Ok(());
        };
        let fd = match net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(Errno::AGAIN) => return Ok(()),
            // The peer gave up before the accept, or a signal: try the next.
            Err(Errno::CONNABORTED | Errno::INTR) => continue,
            // EMFILE, ENOBUFS...: leave the client in the backlog; the listener stays ready
            // and is tried again next iteration.
            Err(_) => return Ok(()),
        };
        let _ = net::sockopt::set_tcp_nodelay(&fd, true);
        if lp
            .add_handler(fd.as_raw_fd(), Interest::READ, move |lp, fd, ready| {
                on_conn(lp, lfd, i, fd, ready)
            })
            .is_err()
        {
            // Cannot happen (one handler slot per table slot); dropping `fd` closes it.
            continue;
        }
        let c = &mut conns[i];
        c.fd = Some(fd);
        c.start = 0;
        c.end = 0;
    }
}

/// A connection's handler: flush the backlog, then read and echo while data comes.
fn on_conn(lp: &mut Loop, lfd: RawFd, i: usize, fd: RawFd, ready: Readiness) -> HandlerResult {
    // SAFETY: the only borrow of the table during this handler call (see `table`).
    let c = unsafe { &mut table()[i] };
    let next = if ready.intersects(Readiness::ERROR) && !ready.intersects(Readiness::READ) {
        Next::Close
    } else {
        echo(c, fd)
    };
    match next {
        Next::Read => {
            let _ = lp.update_handler(fd, Interest::READ);
        }
        Next::Write => {
            let _ = lp.update_handler(fd, Interest::WRITE);
        }
        Next::Close => {
            lp.remove_handler(fd);
            // Closes the socket, after its handler is gone.
            c.fd = None;
            // A slot is free: accept again (no system call if the listener was not paused).
            let _ = lp.update_handler(lfd, Interest::READ);
        }
    }
    Ok(())
}

/// Writes the backlog, then reads and writes back until a read comes up short (the socket is
/// drained for now: level-triggered epoll reports it again when more arrives, so the `read`
/// that would answer `EAGAIN` is saved).
fn echo(c: &mut Conn, fd: RawFd) -> Next {
    // SAFETY: `fd` is this slot's socket, open while its handler is registered.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    echo_step::echo(&mut c.buf, &mut c.start, &mut c.end, fd)
}

// musl's C runtime: `__libc_start_main` (which calls `main`), and the few C functions `core`
// calls (`strlen`, `bcmp`, `memcpy`...). Static: the binary depends on nothing at run time.
#[link(name = "c", kind = "static")]
extern "C" {}
