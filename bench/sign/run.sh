#!/usr/bin/env bash
# Signature benchmark: radveil sign/verify against DCMTK dcmsign on the same corpus, in one
# run. dcmsign signs one file per process; it is given every core through xargs -P.
#
#   bench/sign/run.sh [N]     # N files from the de-identification bench corpus (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000}
ROOT=${BENCH_ROOT:-/dev/shm/radveil-bench}
PY=${BENCH_PYTHON:-.venv/bin/python}
CORPUS=$ROOT/corpus-$N-s1
if [ ! -d "$CORPUS" ]; then
  echo "building corpus of $N files in $CORPUS" >&2
  mkdir -p "$ROOT"
  (cd tests/integration && "$OLDPWD/$PY" corpus.py bench "$N" "$CORPUS") >&2
fi
cargo build --release --quiet -p radveil
R=$PWD/target/release/radveil
W=$(mktemp -d "$ROOT/sign.XXXX")
trap 'rm -rf "$W"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/key.pem" -out "$W/cert.pem" -days 30 \
  -subj "/CN=radveil bench" 2>/dev/null
# dcmsign rejects certificates from the current minute (it compares to the minute).
sleep $((61 - 10#$(date -u +%S)))
MB=$(du -sm "$CORPUS" | cut -f1)
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc; }
row() { printf "%-28s %8.2f s %8.0f files/s %8.0f MB/s\n" "$1" "$2" "$(echo "$N / $2" | bc -l)" "$(echo "$MB / $2" | bc -l)"; }

rs=$(t "$R" sign "$CORPUS" --key "$W/key.pem" --cert "$W/cert.pem" --mac sha256 --out "$W/r")
mkdir -p "$W/d"
ds=$(t sh -c "ls '$CORPUS' | xargs -P $(nproc) -I{} dcmsign --sign '$W/key.pem' '$W/cert.pem' --mac-sha256 '$CORPUS/{}' '$W/d/{}'")
rv=$(t "$R" verify "$W/r")
dv=$(t sh -c "ls '$W/r' | xargs -P $(nproc) -I{} dcmsign --verify '$W/r/{}'")
echo "corpus: $N files, $MB MB ($CORPUS); $(nproc) cores"
row "radveil sign" "$rs"
row "dcmsign --sign (xargs -P)" "$ds"
row "radveil verify" "$rv"
row "dcmsign --verify (xargs -P)" "$dv"
echo "sign: radveil is $(echo "scale=1; $ds / $rs" | bc)x dcmsign; verify: $(echo "scale=1; $dv / $rv" | bc)x"
echo "check: dcmsign verifies radveil's output: $(dcmsign --verify +cf "$W/cert.pem" "$W/r/$(ls "$W/r" | head -1)" 2>&1 | grep -c 'Verification : OK') of 1 sampled"
