//! OS helpers shared by the workloads: socketpairs, the fd limit, the machine-info header, and
//! the fixed-seed random numbers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// `n` non-blocking AF_UNIX stream socketpairs, as in libevent's bench.c. Pair `i` is read from
/// `rd[i]` (bench.c's `pipes[2i]`) and written to through `wr[i]` (`pipes[2i+1]`).
pub struct Pairs {
    /// The read ends, watched by the loops.
    pub rd: Vec<OwnedFd>,
    /// The write ends.
    pub wr: Vec<OwnedFd>,
}

impl Pairs {
    /// Opens `n` pairs.
    pub fn open(n: usize) -> io::Result<Pairs> {
        let mut rd = Vec::with_capacity(n);
        let mut wr = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            rd.push(a);
            wr.push(b);
        }
        Ok(Pairs { rd, wr })
    }

    /// The raw read-end fds, in pair order.
    pub fn raw_rd(&self) -> Vec<RawFd> {
        self.rd.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The largest read-end fd number (for fd-indexed tables).
    pub fn max_rd(&self) -> RawFd {
        self.rd.iter().map(AsRawFd::as_raw_fd).max().unwrap_or(0)
    }

    /// Reads and discards whatever is queued on every read end (between peers, untimed).
    pub fn drain(&self) {
        let mut buf = [0u8; 256];
        for fd in &self.rd {
            while let Ok(k) = recv(fd, &mut buf) {
                if k == 0 {
                    break;
                }
            }
        }
    }
}

/// `recv(fd, buf, len, 0)`: the byte count.
#[inline]
pub fn recv(fd: impl AsFd, buf: &mut [u8]) -> rustix::io::Result<usize> {
    rustix::net::recv(fd, buf, RecvFlags::empty()).map(|(k, _)| k)
}

/// `send(fd, "e", 1, 0)`, bench.c's write; `true` if the byte went out. Always inlined (see
/// `Chain::on_readable`).
#[inline(always)]
pub fn send_byte(fd: impl AsFd) -> bool {
    matches!(rustix::net::send(fd, b"e", SendFlags::empty()), Ok(1))
}

/// An ioloop error as an `io::Error` (OS errors keep their errno).
pub fn io_err(e: loop_core::Error) -> io::Error {
    match e {
        loop_core::Error::Os { errno } => io::Error::from_raw_os_error(errno.raw()),
        e => io::Error::other(e.to_string()),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock every loop here schedules on (ioloop's pollers,
/// std's `Instant`, tokio's time driver), read through the vDSO.
#[inline]
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The process's resident set size in KiB (`VmRSS` in `/proc/self/status`), if readable.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Two CPUs this process may run on (the first two of its affinity mask), if it has two.
pub fn two_cpus() -> Option<(usize, usize)> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    let mut cpus = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c));
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu`; a refusal is ignored (the thread then floats).
pub fn pin_to_cpu(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// [`raise_nofile`] for up to `max` pairs of fds plus 64 of the loops' own: the limit it
/// got and the largest count of pairs that fits under it.
pub fn raise_nofile_for_pairs(max: usize) -> (u64, usize) {
    let limit = raise_nofile(2 * max as u64 + 64);
    (limit, (limit.saturating_sub(64) / 2) as usize)
}

/// Raises the soft `RLIMIT_NOFILE` (and the hard one, if allowed) to at least `want` fds.
/// Returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let hard = cur.maximum.unwrap_or(u64::MAX);
    if hard < want {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit, up to fs.nr_open.
        let r = Rlimit {
            current: Some(want),
            maximum: Some(want),
        };
        if setrlimit(Resource::Nofile, r).is_ok() {
            return want;
        }
    }
    let target = want.min(hard);
    let r = Rlimit {
        current: Some(target),
        maximum: cur.maximum,
    };
    match setrlimit(Resource::Nofile, r) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `--quick`/full machine-info header: CPU model, cores, kernel, compiler, load.
pub fn machine_info() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let usable = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let uts = rustix::system::uname();
    let kernel = format!(
        "{} {} {}",
        uts.sysname().to_string_lossy(),
        uts.release().to_string_lossy(),
        uts.machine().to_string_lossy()
    );
    let load = loadavg();
    vec![
        ("cpu", model),
        ("cores", format!("{usable} usable ({online} online)")),
        ("kernel", kernel),
        ("rustc", env!("BENCH_RUSTC_VERSION").to_owned()),
        ("loadavg", load),
    ]
}

/// The machine in one line (CPU model, cores, kernel, rustc), for every table's header.
pub fn machine_line() -> String {
    machine_info()
        .into_iter()
        .filter(|(k, _)| *k != "loadavg")
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// xorshift64* (Vigna): a fixed-seed generator, so every peer sees the same inputs.
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; the bias is below 2^-32 for our bounds).
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// A random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// Ready once `flag` is set: each poll first checks `flag`, then leaves its waker in `waker`
/// for the setter (which stores `flag` and then wakes what it finds there), then checks again,
/// so a set between the two is never missed. The tokio peers' stop signal.
pub async fn flag_set(flag: &AtomicBool, waker: &Mutex<Option<Waker>>) {
    std::future::poll_fn(|cx| {
        if flag.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *waker.lock().unwrap() = Some(cx.waker().clone());
        if flag.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = XorShift::new(7).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<u32>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = XorShift::new(1);
        assert!((0..10_000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn pairs_carry_a_byte() {
        let p = Pairs::open(2).unwrap();
        assert!(send_byte(&p.wr[1]));
        let mut b = [0u8; 4];
        assert_eq!(recv(&p.rd[1], &mut b).unwrap(), 1);
        assert!(recv(&p.rd[0], &mut b).is_err());
    }
}
