#!/usr/bin/env bash
# install-deps.sh - install the Debian 12 packages needed to build and test
# Resilience Reporting, but only those missing (checked with dpkg -s), so a
# prepared machine is left alone and needs no network or root.
#
# Sourced by scripts/test.sh and scripts/demo.sh (defines rsl_install_deps),
# or run directly. Non-interactive: safe in CI with no stdin.

RSL_DEPS=(build-essential cmake pkg-config clang libclang-rt-14-dev libzmq3-dev libsodium-dev
          libprotobuf-c-dev protobuf-c-compiler libssl-dev libcurl4-openssl-dev
          libcmocka-dev libsqlite3-dev libevent-dev libjansson-dev libinih-dev
          libsystemd-dev python3 python3-cryptography curl openssl sqlite3 valgrind)

rsl_install_deps() {
    local missing=() pkg
    for pkg in "${RSL_DEPS[@]}"; do
        # "install ok installed" only: a removed-but-configured package has
        # dpkg -s succeed too, so look at the Status line itself.
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "==> dependencies: all ${#RSL_DEPS[@]} packages present"
        return 0
    fi
    echo "==> dependencies: installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            echo "error: missing packages (${missing[*]}) and not root; install them or run as root" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q || return 1
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    rsl_install_deps
fi
