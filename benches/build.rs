//! Records the compiler version for the machine-info header, so the binary can report it even
//! where no `rustc` is on the PATH at run time; and builds the libev peer of the timer workload
//! and of the chain workload (`src/chain/libev_shim.c`) when libev is installed (Debian: `libev-dev`), setting `cfg(have_libev)`. Without libev the
//! bench still builds and prints a "libev not installed" row instead.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    libev();
}

/// Compiles `src/timers/libev_shim.c` against the system's libev with the system C compiler
/// (no build-dependency): `cfg(have_libev)` when it compiles and links.
fn libev() {
    println!("cargo:rustc-check-cfg=cfg(have_libev)");
    println!("cargo:rerun-if-changed=src/timers/libev_shim.c");
    println!("cargo:rerun-if-changed=src/chain/libev_shim.c");
    println!("cargo:rerun-if-env-changed=IOLOOP_BENCH_NO_LIBEV");
    if std::env::var_os("IOLOOP_BENCH_NO_LIBEV").is_some() {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let obj = out.join("libev_shim.o");
    let chain_obj = out.join("libev_chain_shim.o");
    let lib = out.join("libioloop_libev_shim.a");
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    let built = ok(Command::new(&cc)
        .args(["-O2", "-fPIC", "-c", "src/timers/libev_shim.c", "-o"])
        .arg(&obj))
        && ok(Command::new(&cc)
            .args(["-O2", "-fPIC", "-c", "src/chain/libev_shim.c", "-o"])
            .arg(&chain_obj))
        && ok(Command::new("ar").arg("rcs").arg(&lib).arg(&obj).arg(&chain_obj))
        // Link probe: libev itself must be there, not only its header.
        && ok(Command::new(&cc)
            .arg("-shared")
            .arg("-o")
            .arg(out.join("probe.so"))
            .arg(&obj)
            .arg("-lev"));
    if built {
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=ioloop_libev_shim");
        println!("cargo:rustc-link-lib=ev");
        println!("cargo:rustc-cfg=have_libev");
    } else {
        println!("cargo:warning=libev not found (apt-get install libev-dev): the timer workload's libev row is skipped");
    }
}
