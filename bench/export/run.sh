#!/usr/bin/env bash
# Research export benchmark: `radveil export` (store read, consent check per study, lineage,
# audit events, de-identification) against `radveil deid` alone on the same instances.
#
#   bench/export/run.sh [N]     # N planted copies of 693_UNCI.dcm, one study each (default 1000)
#
# Environment:
#   BENCH_ROOT=DIR      where corpus, gateway data and outputs go (default /dev/shm/radveil-bench-export
#                       if /dev/shm exists, else bench/out-export)
#   BENCH_RUNS=3        runs per command (median)
#   RADVEIL_BIN=path    binary to time (default target/release/radveil, built if absent)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
N=${1:-${BENCH_N:-1000}}
PY=${BENCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ -z "${BENCH_ROOT:-}" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then BENCH_ROOT=/dev/shm/radveil-bench-export; else BENCH_ROOT=$REPO/bench/out-export; fi
fi
mkdir -p "$BENCH_ROOT"
RADVEIL_BIN=${RADVEIL_BIN:-$REPO/target/release/radveil}
if [ ! -x "$RADVEIL_BIN" ]; then
  echo "building radveil (release) ..." >&2
  cargo build --release --quiet -p radveil
fi
exec "$PY" "$REPO/bench/export/bench.py" --n "$N" --root "$BENCH_ROOT" --radveil "$RADVEIL_BIN" \
  --runs "${BENCH_RUNS:-3}" --jobs "$(nproc)"
