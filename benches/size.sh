#!/usr/bin/env bash
# Binary sizes with the size profile of issue 13: opt-level "z", LTO, one codegen unit,
# panic = "abort", stripped, static musl (x86_64-unknown-linux-musl, rustc's default
# static-PIE layout, no extra flags):
#   * examples/echo_server.rs (ioloop, server only) against benches/examples/mio_echo_server.rs
#     (the same server on bare mio), with the ratio;
#   * examples/nostd-echo (no_std, no allocation, static), with its own profile and layout
#     (examples/nostd-echo/Cargo.toml and .cargo/config.toml), against the 32 KB goal.
#   * for context, examples/echo.rs (the full example: a loop per core, a built-in client).
# Usage: bash benches/size.sh [--check | --symbols]
#   --check:   also run each server and check it echoes;
#   --symbols: also build both std servers unstripped (same profile otherwise) and print their
#              section sizes and the symbols whose sizes differ most (ioloop minus mio), to see
#              what the server-only echo links that mio's does not.
# Exits non-zero if a build fails or (with --check) a server does not echo; the goals are
# printed, not enforced. Without the musl target (and no way to install it) it says so and
# exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    if ! rustup target add "$target"; then
        echo "size: n/a (the $target target is not installed and cannot be added)"
        exit 0
    fi
fi

# The goal's profile for the std servers, without touching the workspace's release profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_STRIP=true
# Its own target directory: these flags would otherwise rebuild the usual release tree.
dir=$root/target/size
cargo build -q --release --target "$target" --target-dir "$dir" --example echo_server --example echo
cargo build -q --release --target "$target" --target-dir "$dir" -p ioloop-bench --example mio_echo_server
(cd examples/nostd-echo && cargo build -q --release)

ioloop_bin=$dir/$target/release/examples/echo_server
mio_bin=$dir/$target/release/examples/mio_echo_server
full_bin=$dir/$target/release/examples/echo
nostd_bin=examples/nostd-echo/target/$target/release/nostd-echo
size() { stat -c %s "$1"; }
io=$(size "$ioloop_bin"); mi=$(size "$mio_bin"); ns=$(size "$nostd_bin"); full=$(size "$full_bin")

echo "machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(rustc --version)"
echo "profile: opt-level=z lto=true codegen-units=1 panic=abort strip=true, $target"
printf '%-44s %10s B\n' "ioloop echo_server (std, server only)" "$io"
printf '%-44s %10s B\n' "mio echo server (same function)" "$mi"
awk -v a="$io" -v b="$mi" 'BEGIN { r = a / b; printf "%-44s %10.3f   goal <= 1.000: %s\n", "ratio ioloop / mio", r, (r <= 1 ? "met" : "NOT met") }'
printf '%-44s %10s B   (for context, not a goal)\n' "ioloop echo example (full, with client)" "$full"
awk -v a="$ns" 'BEGIN { printf "%-44s %10d B   goal <= 32768: %s\n", "nostd-echo (no_std, static, no allocation)", a, (a <= 32768 ? "met" : "NOT met") }'
ls -l "$ioloop_bin" "$mio_bin" "$nostd_bin"

if [ "${1:-}" = "--symbols" ]; then
    # Sizes move in 4 KiB pages once stripped: the unstripped sections and symbols show where.
    sym=$root/target/size-symbols
    CARGO_PROFILE_RELEASE_STRIP=false cargo build -q --release --target "$target" --target-dir "$sym" \
        --example echo_server
    CARGO_PROFILE_RELEASE_STRIP=false cargo build -q --release --target "$target" --target-dir "$sym" \
        -p ioloop-bench --example mio_echo_server
    a=$sym/$target/release/examples/echo_server
    b=$sym/$target/release/examples/mio_echo_server
    echo "sections (bytes): ioloop / mio"
    join <(command size -A "$a" | awk 'NR > 2 && $2 > 0 && $1 !~ /^(\.debug|\.comment|Total)/ { print $1, $2 }' | sort) \
        <(command size -A "$b" | awk 'NR > 2 && $2 > 0 && $1 !~ /^(\.debug|\.comment|Total)/ { print $1, $2 }' | sort) |
        awk '{ printf "  %-20s %9d %9d %+8d\n", $1, $2, $3, $2 - $3 }'
    # Code and read-only data by symbol (hash suffixes dropped, same-named instances summed).
    syms() { nm -S -C -t d "$1" | awk '$3 ~ /^[tTrR]$/ { n = $4; for (i = 5; i <= NF; i++) n = n " " $i;
        sub(/::h[0-9a-f]+$/, "", n); s[n] += $2 + 0 } END { for (n in s) print s[n] "\t" n }'; }
    echo "symbols whose size differs most (bytes: ioloop mio difference):"
    awk -F '\t' 'NR == FNR { b[$2] = $1; next } { a[$2] = $1 }
        END { for (n in a) d[n] = a[n] - b[n]; for (n in b) if (!(n in a)) d[n] = -b[n];
              for (n in d) if (d[n] != 0) printf "%d\t%d\t%d\t%s\n", a[n], b[n], d[n], n }' \
        <(syms "$b") <(syms "$a") | sort -t "$(printf '\t')" -k3,3nr | head -40 |
        awk -F '\t' '{ printf "  %7d %7d %+7d  %s\n", $1, $2, $3, substr($4, 1, 110) }'
fi

if [ "${1:-}" = "--check" ]; then
    check=examples/nostd-echo/echo_check.py
    python3 "$check" "$nostd_bin" 17007
    python3 "$check" "$ioloop_bin" 17008 16
    python3 "$check" "$mio_bin" 17009 16
fi
