#!/usr/bin/env bash
# De-identification benchmark: radveil against cp and cp on all cores (floors), gdcmanon, dicognito and dcmanon.
#
#   bench/deid/run.sh [N]            # N planted copies of 693_UNCI.dcm (default 1000)
#
# Environment:
#   BENCH_ROOT=DIR      where corpus and outputs go (default /dev/shm/radveil-bench if /dev/shm
#                       exists, else bench/out); the corpus is reused between runs
#   BENCH_RUNS=3        runs per tool (median); dicognito always runs once
#   BENCH_MEM_SCALE=4   also measure radveil's peak RSS on a corpus this many times larger (0: off)
#   BENCH_ONLY=a,b      only these tools (cp,cp-parallel,radveil,radveil-clean,gdcmanon-e,gdcmanon-dumb,dicognito,dcmanon)
#   BENCH_NO_LEAKS=1    skip scanning outputs for planted PHI tokens
#   BENCH_INSTALL=1     pip install dicognito into .venv and `cargo install dicom-anonymization`
#                       if missing (off by default: nothing is installed otherwise)
#   RADVEIL_BIN=path    binary to time (default target/release/radveil, built if absent)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
N=${1:-${BENCH_N:-1000}}
PY=${BENCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3

if [ -z "${BENCH_ROOT:-}" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then BENCH_ROOT=/dev/shm/radveil-bench; else BENCH_ROOT=$REPO/bench/out; fi
fi
mkdir -p "$BENCH_ROOT"

RADVEIL_BIN=${RADVEIL_BIN:-$REPO/target/release/radveil}
if [ ! -x "$RADVEIL_BIN" ]; then
  echo "building radveil (release) ..." >&2
  cargo build --release --quiet -p radveil
fi

if [ "${BENCH_INSTALL:-0}" = 1 ]; then
  "$PY" -c 'import dicognito' 2>/dev/null || "$PY" -m pip install --quiet dicognito
  command -v dcmanon >/dev/null || cargo install --quiet dicom-anonymization
fi

for t in gdcmanon openssl dcmanon; do
  command -v "$t" >/dev/null || echo "note: $t not found on PATH (its row will say missing)" >&2
done
"$PY" -c 'import dicognito' 2>/dev/null || echo "note: dicognito not installed in $PY (BENCH_INSTALL=1 installs it)" >&2
[ -x /usr/bin/time ] || echo "note: /usr/bin/time missing (apt-get install time): no peak RSS" >&2

args=(--n "$N" --root "$BENCH_ROOT" --radveil "$RADVEIL_BIN" --runs "${BENCH_RUNS:-3}"
      --jobs "$(nproc)" --mem-scale "${BENCH_MEM_SCALE:-0}")
[ -n "${BENCH_ONLY:-}" ] && args+=(--only "$BENCH_ONLY")
[ "${BENCH_NO_LEAKS:-0}" = 1 ] && args+=(--no-leaks)
BENCH_PYTHON="$PY" exec "$PY" "$REPO/bench/deid/bench.py" "${args[@]}"
