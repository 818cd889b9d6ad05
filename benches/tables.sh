#!/bin/sh
# Regenerates the README's benchmark tables from one run (issue 13, "Benchmark honesty"):
#
#   benches/tables.sh            # ROUNDS=3 processes per workload, pinned to the last CPU
#   ROUNDS=5 BENCH_CPU=0 benches/tables.sh
#   ONLY="chain chain-callgrind" benches/tables.sh   # a subset
#
# Every workload runs in ROUNDS separate processes, interleaved (round 1 of every workload,
# then round 2, ...), each pinned with `taskset -c $BENCH_CPU` to one core; inside a process
# the peers are interleaved round by round as well. The callgrind modes (instruction counts,
# deterministic) run once. benches/results/tables.py merges the per-process JSON files into
# benches/results/full.json, full.txt and README-tables.md (median of the per-process
# medians, every row with ioloop, the anchor and the ratio, the machine in every header).
# The chain workload includes its diagnostic row (the floor with its handler called through a
# function pointer, as any loop calls a user's handler): IOLOOP_BENCH_CHAIN_DIAG= (empty) to
# leave it out.
# Needs: cargo, python3, taskset (util-linux); valgrind for the instruction counts; libev-dev
# for the libev rows.
set -eu
IOLOOP_BENCH_CHAIN_DIAG=${IOLOOP_BENCH_CHAIN_DIAG-1}
if [ -n "$IOLOOP_BENCH_CHAIN_DIAG" ]; then export IOLOOP_BENCH_CHAIN_DIAG; else unset IOLOOP_BENCH_CHAIN_DIAG; fi
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CPU=${BENCH_CPU:-$(($(nproc) - 1))}
ONLY=${ONLY:-"chain timers callbacks wake xput echo precision footprint chain-callgrind timers-callgrind"}
OUT=benches/results
RAW=$OUT/raw
cargo build --release -p ioloop-bench
BIN=target/release/ioloop-bench
rm -rf "$RAW"
mkdir -p "$RAW"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for w in $ONLY; do
        case $w in
            *-callgrind) [ "$r" -eq 1 ] || continue ;;
        esac
        echo "round $r/$ROUNDS: $w" >&2
        # A failed process (a full disk, a missing tool) loses its round, not the run.
        taskset -c "$CPU" "$BIN" --only "$w" --json "$RAW/$w.$r.json" >"$RAW/$w.$r.txt" ||
            { echo "round $r: $w failed (kept out of the tables)" >&2; rm -f "$RAW/$w.$r.json"; }
    done
    r=$((r + 1))
done
python3 "$OUT/tables.py" "$RAW" "$OUT"
echo "wrote $OUT/full.json $OUT/full.txt $OUT/README-tables.md (raw: $RAW)" >&2
