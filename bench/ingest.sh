#!/usr/bin/env bash
# ingest.sh - end-to-end ingest benchmark (see bench/ingest_bench.py):
# N CURVE agents over loopback, 10 measurements per report, ack after the
# durable commit; reports/s and p99 ack latency beside the raw Ed25519
# verification rate (libsodium and OpenSSL, 1 core and all cores).
#
#   RSL_BUILD_DIR=/tmp/build-rel bench/ingest.sh
#   BENCH_AGENTS=32 BENCH_REPORTS=1000 BENCH_WINDOW=32 bench/ingest.sh
#
# Needs a RelWithDebInfo build (cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo) and
# cc + pkg-config with the project's development packages (it compiles the
# two bench tools against the build's static libraries). Exit 0 when ingest
# reaches >= 50% of the all-cores verification rate, 1 if not, 2 on errors.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$HERE/ingest_bench.py" "$@"
