#!/usr/bin/env bash
# Binary sizes with the size profile of issue 13: opt-level "z", LTO, one codegen unit,
# panic = "abort", stripped, static musl (x86_64-unknown-linux-musl, rustc's default
# static-PIE layout, no extra flags):
#   * examples/echo_server.rs (ioloop, server only) against benches/examples/mio_echo_server.rs
#     (the same server on bare mio), with the ratio;
#   * examples/nostd-echo (no_std, no allocation, static), with its own profile and layout
#     (examples/nostd-echo/Cargo.toml and .cargo/config.toml), against the 32 KB goal.
# Usage: bash benches/size.sh [--check]   (--check: also run each server and check it echoes)
# Exits non-zero if a build fails or (with --check) a server does not echo; the goals are
# printed, not enforced.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"

# The goal's profile for the std servers, without touching the workspace's release profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_STRIP=true
# Its own target directory: these flags would otherwise rebuild the usual release tree.
dir=$root/target/size
cargo build -q --release --target "$target" --target-dir "$dir" --example echo_server
cargo build -q --release --target "$target" --target-dir "$dir" -p ioloop-bench --example mio_echo_server
(cd examples/nostd-echo && cargo build -q --release)

ioloop_bin=$dir/$target/release/examples/echo_server
mio_bin=$dir/$target/release/examples/mio_echo_server
nostd_bin=examples/nostd-echo/target/$target/release/nostd-echo
size() { stat -c %s "$1"; }
io=$(size "$ioloop_bin"); mi=$(size "$mio_bin"); ns=$(size "$nostd_bin")

echo "machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(rustc --version)"
echo "profile: opt-level=z lto=true codegen-units=1 panic=abort strip=true, $target"
printf '%-44s %10s B\n' "ioloop echo_server (std, server only)" "$io"
printf '%-44s %10s B\n' "mio echo server (same function)" "$mi"
awk -v a="$io" -v b="$mi" 'BEGIN { r = a / b; printf "%-44s %10.3f   goal <= 1.000: %s\n", "ratio ioloop / mio", r, (r <= 1 ? "met" : "NOT met") }'
awk -v a="$ns" 'BEGIN { printf "%-44s %10d B   goal <= 32768: %s\n", "nostd-echo (no_std, static, no allocation)", a, (a <= 32768 ? "met" : "NOT met") }'
ls -l "$ioloop_bin" "$mio_bin" "$nostd_bin"

if [ "${1:-}" = "--check" ]; then
    check=examples/nostd-echo/echo_check.py
    python3 "$check" "$nostd_bin" 17007
    python3 "$check" "$ioloop_bin" 17008 16
    python3 "$check" "$mio_bin" 17009 16
fi
