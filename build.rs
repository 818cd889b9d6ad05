//! Sets `cfg(kqueue)` where the target has kqueue. The list of those targets is written once,
//! in `loop-bsd/build.rs`, which passes its answer here as `DEP_LOOP_BSD_KQUEUE`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kqueue)");
    if std::env::var("DEP_LOOP_BSD_KQUEUE").as_deref() == Ok("true") {
        println!("cargo::rustc-cfg=kqueue");
    }
    println!("cargo::rerun-if-env-changed=DEP_LOOP_BSD_KQUEUE");
    println!("cargo::rerun-if-changed=build.rs");
}
