#!/usr/bin/env bash
# Two builds of vomesh on the same load, in alternating pairs.
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY [PAIRS]
#   TARGET=vomesh-mesh PUBLISHERS=16 WINDOW=2 bench/ab.sh /tmp/vomesh.old target/release/vomesh 6
#
# This machine's speed drifts by tens of percent within an hour (a boot
# can start slow and grow faster run after run), so two builds are only
# compared within a pair of runs made back to back, and the pairs
# alternate their order (before first, then after first: ABBA), so the
# drift favours neither build. Each pair prints the throughput scenario's
# figures of both runs and their ratio after / before (✓ where the after
# build is the better); the raw reports are kept in OUT.
#
# Environment: TARGET (vomesh: one node, or vomesh-mesh: three sites;
# default vomesh), PUBLISHERS (16), WINDOW (publishes in flight per
# publisher, 32), RUN_SECONDS (10), SESSIONS (idle sessions logged in
# besides the publishers, 20), OUT (a new directory under /tmp),
# CARGO_TARGET_DIR (where xmpp_bench is built).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,5p' "$0" >&2
    exit 2
fi
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
PAIRS=${3:-4}
TARGET=${TARGET:-vomesh}
PUBLISHERS=${PUBLISHERS:-16}
WINDOW=${WINDOW:-32}
RUN_SECONDS=${RUN_SECONDS:-10}
SESSIONS=${SESSIONS:-20}
OUT=${OUT:-$(mktemp -d /tmp/vomesh-ab.XXXXXX)}

cd "$(dirname "$0")/.."
cargo build --release -q -p vomesh-tests --bin xmpp_bench
BENCH=${CARGO_TARGET_DIR:-target}/release/xmpp_bench
mkdir -p "$OUT"

run() { # LABEL BINARY
    VOMESH_BIN=$2 "$BENCH" run --target "$TARGET" --label "$1" \
        --sessions "$SESSIONS" --accounts "$SESSIONS" --fanouts "$SESSIONS" \
        --scenarios throughput --throughput-publishers "$PUBLISHERS" \
        --throughput-window "$WINDOW" --throughput-seconds "$RUN_SECONDS" \
        --out "$OUT/$1.json" >"$OUT/$1.log" 2>&1 \
        || { echo "run $1 failed: see $OUT/$1.log" >&2; exit 1; }
}

echo "$TARGET, $PUBLISHERS publishers × $WINDOW in flight, ${RUN_SECONDS} s per run; reports in $OUT"
for pair in $(seq 1 "$PAIRS"); do
    if [ $((pair % 2)) = 1 ]; then
        order="before first"
        run "before-$pair" "$BEFORE"
        run "after-$pair" "$AFTER"
    else
        order="after first"
        run "after-$pair" "$AFTER"
        run "before-$pair" "$BEFORE"
    fi
    echo
    echo "pair $pair ($order):"
    "$BENCH" compare --baseline "after-$pair" "$OUT/after-$pair.json" "$OUT/before-$pair.json" \
        | grep -E '^\| (scenario|---|throughput)'
done
