#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets (tests/fuzz/fuzz_<target>.c) with
# clang and run each of them for a while.
#
#   scripts/fuzz.sh [--time S] [--jobs J] [--merge] [--no-build]
#                   [--build-dir DIR] [TARGET ...]
#
#   --time S       seconds per target (libFuzzer -max_total_time), default 60
#   --jobs J       run J targets at the same time (one process each), default 1
#   --merge        afterwards, add what the runs found that covers new code
#                  to the committed seed corpus tests/fuzz/corpus/<target>/
#                  (libFuzzer -merge=1: only inputs with new coverage; review
#                  them before committing)
#   --no-build     use the fuzz tree as it is (no configure/build)
#   --build-dir D  the clang tree, default build-fuzz/ in the source tree
#                  (or $RSL_FUZZ_BUILD_DIR)
#   TARGET ...     only these targets ("ini" or "fuzz_ini"); default: all
#
# Each target starts from its committed seed corpus (read, never written)
# and writes the inputs it finds to a scratch corpus,
# <build>/fuzz-corpus/<target>/, which later runs start from too. A crash,
# leak, timeout or out-of-memory input is kept under
# <build>/crashes/<target>/ (libFuzzer's crash-*, leak-*, timeout-*, oom-*
# files); replay one with `<build>/tests/fuzz/fuzz_<target> FILE`, fix the
# bug, then copy the file into tests/fuzz/corpus/<target>/ so the normal
# (gcc) build replays it as a ctest from then on. Each run's whole output
# is in <build>/fuzz-logs/<target>.log.
#
# At the end a table shows per target: executions, executions per second,
# coverage (libFuzzer's cov: edges and ft: features at the end), corpus
# size (inputs in the run's corpus) and the outcome. The exit status is
# non-zero if any target crashed, leaked or timed out (or the build failed).
#
# Targets that must write files (config loaders, the sequence counter) do
# so in <build>/fuzz-tmp/<target>/, removed afterwards; RSL_FUZZ_TMPDIR=DIR
# puts those folders elsewhere (a tmpfs such as /dev/shm spares the disk
# the counter's fsyncs).
#
# Long local runs: `nice -n 19 scripts/fuzz.sh --time 600` (children inherit
# the niceness). CI runs `scripts/fuzz.sh --time 60` (scripts/test.sh).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RSL_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
TIME=60
JOBS=1
MERGE=0
DO_BUILD=1
declare -a WANTED=()

usage() {
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --time) TIME="${2:-}"; shift 2 ;;
        --time=*) TIME="${1#--time=}"; shift ;;
        --jobs) JOBS="${2:-}"; shift 2 ;;
        --jobs=*) JOBS="${1#--jobs=}"; shift ;;
        --merge) MERGE=1; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        --build-dir) BUILD="${2:-}"; shift 2 ;;
        --build-dir=*) BUILD="${1#--build-dir=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) WANTED+=("${1#fuzz_}"); shift ;;
    esac
done
case "$TIME" in ''|*[!0-9]*) echo "fuzz.sh: --time wants whole seconds" >&2; exit 2 ;; esac
case "$JOBS" in ''|*[!0-9]*|0) echo "fuzz.sh: --jobs wants a number >= 1" >&2; exit 2 ;; esac
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac

# The targets are the fuzz_*.c files; a name given must be one of them.
declare -a ALL=() TARGETS=()
for src in "$ROOT"/tests/fuzz/fuzz_*.c; do
    name="$(basename "$src" .c)"
    # As tests/fuzz/CMakeLists.txt: fuzz_jws exists once lib/jws.c does.
    [ "$name" = fuzz_jws ] && [ ! -f "$ROOT/lib/jws.c" ] && continue
    ALL+=("${name#fuzz_}")
done
if [ ${#WANTED[@]} -eq 0 ]; then
    TARGETS=("${ALL[@]}")
else
    for t in "${WANTED[@]}"; do
        if [[ " ${ALL[*]} " != *" $t "* ]]; then
            echo "fuzz.sh: no target '$t' (have: ${ALL[*]})" >&2
            exit 2
        fi
        TARGETS+=("$t")
    done
fi

# Inputs longer than this are not generated: config files and collector
# output are small, network frames may be up to a few tens of kilobytes (a
# SignedReport with many measurements) but longer ones only cost time.
max_len_for() {
    case "$1" in
        ingest|signed_report) echo 65536 ;;
        query_time|agent_seq) echo 512 ;;
        api) echo 2048 ;;
        *) echo 16384 ;;
    esac
}

if [ "$DO_BUILD" = 1 ]; then
    echo "==> configuring the clang/libFuzzer tree in $BUILD"
    mkdir -p "$BUILD"
    if ! CC="${RSL_FUZZ_CC:-clang}" cmake -S "$ROOT" -B "$BUILD" -DRESILIENCE_FUZZ=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/configure.log" 2>&1; then
        cat "$BUILD/configure.log" >&2
        echo "fuzz.sh: configure failed" >&2
        exit 1
    fi
    echo "==> building ${TARGETS[*]/#/fuzz_}"
    declare -a build_targets=()
    for t in "${TARGETS[@]}"; do build_targets+=(--target "fuzz_$t"); done
    if ! cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" "${build_targets[@]}"; then
        echo "fuzz.sh: build failed" >&2
        exit 1
    fi
fi

TMPBASE="${RSL_FUZZ_TMPDIR:-$BUILD/fuzz-tmp}"
mkdir -p "$BUILD/fuzz-logs" "$BUILD/fuzz-corpus" "$BUILD/crashes" "$TMPBASE"

# Leaks are failures (LeakSanitizer is on by default with ASan on x86_64
# Linux; said last anyway so a user's ASAN_OPTIONS cannot turn it off here).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

# run_one TARGET: fuzz one target for $TIME seconds; its output goes to
# fuzz-logs/TARGET.log and its exit status to fuzz-logs/TARGET.rc.
run_one() {
    local t="$1"
    local bin="$BUILD/tests/fuzz/fuzz_$t"
    local log="$BUILD/fuzz-logs/$t.log"
    local seeds="$ROOT/tests/fuzz/corpus/$t"
    local scratch="$BUILD/fuzz-corpus/$t"
    local crashes="$BUILD/crashes/$t"
    # Targets that must write a file (config loaders) do it under $TMPDIR:
    # one folder per target, emptied afterwards, so nothing leaks elsewhere.
    local tmp="$TMPBASE/$t"
    mkdir -p "$scratch" "$crashes" "$tmp"
    rm -f "$BUILD/fuzz-logs/$t.rc"
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: $bin not built" >"$log"
        echo 127 >"$BUILD/fuzz-logs/$t.rc"
        return
    fi
    local -a dirs=("$scratch")
    [ -d "$seeds" ] && dirs+=("$seeds")
    # -timeout: one input taking this long is a bug (a hang), not slowness,
    # even on a busy shared machine. -rss_limit_mb: well above any target.
    (cd "$tmp" && TMPDIR="$tmp" "$bin" -max_total_time="$TIME" -max_len="$(max_len_for "$t")" \
        -timeout=30 -rss_limit_mb=2560 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "${dirs[@]}") >"$log" 2>&1
    echo $? >"$BUILD/fuzz-logs/$t.rc"
    rm -rf "$tmp"
}

echo "==> fuzzing ${#TARGETS[@]} target(s), ${TIME}s each, $JOBS at a time"
for t in "${TARGETS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n 2>/dev/null || true
    done
    echo "    fuzz_$t ..."
    run_one "$t" &
done
wait

# summary: one row per target from the log's final status line ("#N DONE
# cov: C ft: F corp: K/SIZE ...") and -print_final_stats' stat:: lines.
FAILED=0
printf '\n%-16s %12s %8s %7s %8s %11s  %s\n' target executions exec/s cov ft corpus result
for t in "${TARGETS[@]}"; do
    log="$BUILD/fuzz-logs/$t.log"
    rc="$(cat "$BUILD/fuzz-logs/$t.rc" 2>/dev/null || echo 1)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")"
    if [ "$rc" = 0 ]; then
        result=ok
    else
        FAILED=1
        kind="$(grep -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)[^ ]*: [a-z-]+|runtime error|ERROR: libFuzzer: timeout' "$log" | head -1)"
        artifact="$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)"
        result="FAILED (exit $rc${kind:+; $kind})${artifact:+ -> $artifact}"
    fi
    printf '%-16s %12s %8s %7s %8s %11s  %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" \
        "${ft:--}" "${corp:--}" "$result"
done

if [ "$MERGE" = 1 ]; then
    echo
    for t in "${TARGETS[@]}"; do
        bin="$BUILD/tests/fuzz/fuzz_$t"
        seeds="$ROOT/tests/fuzz/corpus/$t"
        [ -x "$bin" ] || continue
        mkdir -p "$seeds"
        before="$(find "$seeds" -type f | wc -l)"
        mkdir -p "$TMPBASE/$t"
        (cd "$TMPBASE/$t" && TMPDIR="$TMPBASE/$t" "$bin" -merge=1 \
            -max_len="$(max_len_for "$t")" -timeout=30 "$seeds" "$BUILD/fuzz-corpus/$t") \
            >"$BUILD/fuzz-logs/$t.merge.log" 2>&1 || { echo "merge $t failed" >&2; FAILED=1; }
        rm -rf "$TMPBASE/$t"
        echo "==> merge $t: $before -> $(find "$seeds" -type f | wc -l) seed inputs"
    done
fi

echo
if [ "$FAILED" -ne 0 ]; then
    echo "RESULT: FAILED (reproducers under $BUILD/crashes/, logs under $BUILD/fuzz-logs/)"
    exit 1
fi
echo "RESULT: ${#TARGETS[@]} target(s) fuzzed, no crash"
exit 0
