#!/usr/bin/env bash
# summary.sh - /v1/summary latency with 10 million stored measurements
# against an almost empty store, on the real aggregator (see
# bench/summary_bench.py).
#
#   RSL_BUILD_DIR=/tmp/build-rel bench/summary.sh
#   BENCH_MEASUREMENTS=1000000 bench/summary.sh      # a quicker run
#
# Needs a RelWithDebInfo build, cc + pkg-config with the project's
# development packages, curl, and room in TMPDIR for the store (~3 GB at
# 10 million measurements). Exit 0 when the big store's p50 and p99 stay
# within 2x of the small store's, 1 if not, 2 on errors.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$HERE/summary_bench.py" "$@"
