#!/usr/bin/env bash
# Run a fuzz target (default loop_ops) for N seconds (default 30) from its seed corpus, for CI.
# Exits non-zero if libFuzzer finds a crash (the failing input is left in fuzz/artifacts/).
# New inputs go to a scratch corpus, so the committed seeds stay as they are.
#   usage: fuzz/run-short.sh [SECONDS] [TARGET]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
secs="${1:-30}"
target="${2:-loop_ops}"
cd "$(dirname "$0")"
mkdir -p "corpus/$target"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1
