//! The one place the workspace lists which targets have kqueue (issue 11: the list used to be
//! copied 7 times). It sets, for this crate:
//!
//! - `evfilt_user`: the kqueues with `EVFILT_USER` (FreeBSD, DragonFly, macOS, iOS), woken by a
//!   user event;
//! - `kqueue_pipe`: the kqueues without it (NetBSD < 10, OpenBSD), woken by a self-pipe;
//! - `kqueue`: either;
//!
//! and hands `kqueue` on to the crates that depend on this one: the `ioloop` facade's build
//! script reads it as `DEP_LOOP_BSD_KQUEUE` (`links = "loop-bsd"` in Cargo.toml). No
//! dependency: the decision is a lookup of the target's `CARGO_CFG_TARGET_OS`.

const EVFILT_USER: &[&str] = &["freebsd", "dragonfly", "macos", "ios"];
const KQUEUE_PIPE: &[&str] = &["netbsd", "openbsd"];

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let evfilt_user = EVFILT_USER.contains(&os.as_str());
    let kqueue_pipe = KQUEUE_PIPE.contains(&os.as_str());
    for (name, on) in [
        ("evfilt_user", evfilt_user),
        ("kqueue_pipe", kqueue_pipe),
        ("kqueue", evfilt_user || kqueue_pipe),
    ] {
        println!("cargo::rustc-check-cfg=cfg({name})");
        if on {
            println!("cargo::rustc-cfg={name}");
        }
    }
    println!("cargo::metadata=kqueue={}", evfilt_user || kqueue_pipe);
    println!("cargo::rerun-if-changed=build.rs");
}
