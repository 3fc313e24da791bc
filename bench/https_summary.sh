#!/usr/bin/env bash
# https_summary.sh - benchmark GET /v1/summary over HTTPS against nginx
# serving the same bytes (see bench/https_bench.py for what is measured).
#
#   bench/https_summary.sh                 # uses build-rel/ (or build/)
#   RSL_BUILD_DIR=/tmp/build-rel bench/https_summary.sh
#
# Installs Debian's wrk and nginx (nginx-light) when missing, builds
# nothing: point RSL_BUILD_DIR at a RelWithDebInfo build. Exit 0 when the
# targets hold (>= 60% of nginx's requests/s, p99 <= 2x nginx's).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null
fi
# A package install may have started the distribution's nginx service; the
# benchmark runs its own instance on a free port, so that one is harmless.
exec python3 "$HERE/https_bench.py" "$@"
