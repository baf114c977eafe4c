#!/usr/bin/env bash
# Gateway benchmark: `radveil serve` against Orthanc (Debian 1.10 with its DICOMweb plugin) on
# the same instances, in one run, both inside a private network namespace with only loopback
# up (Orthanc listens on every interface otherwise). Servers on one core, the client (this
# driver and wrk) on another (taskset).
#
#   bench/gateway/run.sh              # the recorded figure: 1,000 small + 200 large STOW-RS,
#                                     # WADO-RS for 10 s, QIDO over 100,000 indexed instances
#   BENCH_SMALL=1 bench/gateway/run.sh   # smoke run, under 2 minutes
#
# Environment:
#   RADVEIL_BIN=path    the radveil to time (default target/release/radveil, built if absent)
#   BENCH_ROOT=DIR      where both servers keep their data (default /dev/shm/radveil-gw-bench
#                       if /dev/shm exists, else bench/out); emptied at the start of a run
#   BENCH_QIDO_N=N      instances indexed for the QIDO figure (default 100000; smoke 2000)
#   BENCH_SECONDS=S     length of each wrk run (default 10; smoke 3)
#   BENCH_CONNECTIONS=C concurrent connections of the STOW client and of wrk (default 4)
#   BENCH_SERVER_CPU / BENCH_CLIENT_CPU   cores to pin to (default 0 and 1)
#   BENCH_ONLY=a,b      only these parts: stow,wado,qido
#   BENCH_KEEP=1        keep both servers' data after the run (removed by default)
# Needs root (ip netns), Orthanc + orthanc-dicomweb and wrk (tools/setup-peers installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=${BENCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3

RADVEIL_BIN=${RADVEIL_BIN:-$REPO/target/release/radveil}
if [ ! -x "$RADVEIL_BIN" ]; then
  echo "building radveil (release) ..." >&2
  cargo build --release --quiet -p radveil
fi
for t in /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so; do
  [ -e "$t" ] || { echo "missing $t: run tools/setup-peers (Debian orthanc, orthanc-dicomweb)" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "missing wrk: run tools/setup-peers (Debian wrk)" >&2; exit 2; }

if [ -z "${BENCH_ROOT:-}" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then BENCH_ROOT=/dev/shm/radveil-gw-bench; else BENCH_ROOT=$REPO/bench/out/gateway; fi
fi
rm -rf "$BENCH_ROOT"
mkdir -p "$BENCH_ROOT"

NS=radveil-bench-$$
ip netns add "$NS" || { echo "ip netns add failed (needs root): not running Orthanc on every interface" >&2; exit 2; }
cleanup() {
  ip netns delete "$NS" 2>/dev/null || true
  # Both stores (hundreds of MB on tmpfs, that is memory) go unless asked to stay.
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_ROOT"
}
trap cleanup EXIT
ip netns exec "$NS" ip link set lo up

args=(--radveil "$RADVEIL_BIN" --root "$BENCH_ROOT"
      --server-cpu "${BENCH_SERVER_CPU:-0}" --client-cpu "${BENCH_CLIENT_CPU:-1}"
      --connections "${BENCH_CONNECTIONS:-4}")
if [ "${BENCH_SMALL:-0}" = 1 ]; then
  args+=(--small 100 --large 20 --qido-n "${BENCH_QIDO_N:-2000}" --seconds "${BENCH_SECONDS:-3}")
else
  args+=(--small 1000 --large 200 --qido-n "${BENCH_QIDO_N:-100000}" --seconds "${BENCH_SECONDS:-10}")
fi
[ -n "${BENCH_ONLY:-}" ] && args+=(--only "$BENCH_ONLY")
ip netns exec "$NS" "$PY" "$REPO/bench/gateway/bench.py" "${args[@]}"
