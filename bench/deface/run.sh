#!/usr/bin/env bash
# Times radveil deface against the peers of issue 4 on the same head, in one run, one core:
#   - quickshear 1.2.0 (pip), given a brain mask (made here by brainextractor, not timed);
#   - elastix 5 (Debian) affine registration of the pydeface mean head onto the head: the
#     step every template defacer (pydeface, mri_deface) needs before it can cut.
# Prints seconds per volume (best of BENCH_RUNS) and radveil's speed-up over each.
# Usage: bench/deface/run.sh   (BENCH_RUNS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/setup-peers >/dev/null
command -v elastix >/dev/null 2>&1 || {
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq --no-install-recommends elastix >/dev/null
}
.venv/bin/python -c "import quickshear" 2>/dev/null || .venv/bin/pip install -q "quickshear==1.2.0"
cargo build --release -q -p radveil
exec .venv/bin/python bench/deface/bench.py
