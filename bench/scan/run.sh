#!/usr/bin/env bash
# Residual-risk scan benchmark: `radveil scan` over N planted copies of 693_UNCI.dcm (the
# de-identification benchmark's corpus) and over radveil's de-identified outputs of them.
#
#   bench/scan/run.sh [N]        # default 1000
#
# Environment: BENCH_ROOT (default /dev/shm/radveil-bench-scan or bench/out-scan),
# BENCH_RUNS=5 (median), RADVEIL_BIN (default target/release/radveil, built if absent).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
N=${1:-1000}
RUNS=${BENCH_RUNS:-5}
PY=${BENCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ -z "${BENCH_ROOT:-}" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then BENCH_ROOT=/dev/shm/radveil-bench-scan; else BENCH_ROOT=$REPO/bench/out-scan; fi
fi
RADVEIL_BIN=${RADVEIL_BIN:-$REPO/target/release/radveil}
[ -x "$RADVEIL_BIN" ] || cargo build --release --quiet -p radveil
mkdir -p "$BENCH_ROOT"
SRC=$("$PY" -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("693_UNCI.dcm"))')
CORPUS=$BENCH_ROOT/corpus-$N
if [ ! -d "$CORPUS" ]; then
  mkdir -p "$CORPUS"
  "$PY" - "$SRC" "$CORPUS" "$N" <<'PYEOF'
import sys, warnings
import pydicom
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for i in range(n):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PatientID = f"P{i % 100:04d}"
        ds.ImageComments = f"seen by Dr. Watson, call (555) 123-{i:04d}"
        ds.save_as(f"{out}/{i:04d}.dcm", enforce_file_format=True)
PYEOF
fi
KEY=$BENCH_ROOT/key
[ -f "$KEY" ] || "$RADVEIL_BIN" keygen "$KEY" >/dev/null 2>&1
OUT=$BENCH_ROOT/deid-$N
[ -d "$OUT" ] || "$RADVEIL_BIN" deid "$CORPUS" --out "$OUT" --key-file "$KEY" --option clean-descriptors >/dev/null 2>&1 || true
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for set in corpus deid; do
  dir=$CORPUS; [ $set = deid ] && dir=$OUT
  files=$(find "$dir" -type f | wc -l)
  times=$(for _ in $(seq "$RUNS"); do
    s=$(date +%s.%N); "$RADVEIL_BIN" scan "$dir" >/dev/null || true; e=$(date +%s.%N)
    echo "$e - $s" | bc
  done | median)
  echo "$set: $files files, median of $RUNS: ${times} s, $(echo "$files / $times" | bc) files/s ($(nproc) cores)"
done
