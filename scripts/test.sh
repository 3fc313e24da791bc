#!/usr/bin/env bash
# test.sh - everything CI checks, in one command (see also .ci/run):
#
#   1. install missing Debian 12 build/test packages (scripts/install-deps.sh)
#   2. configure, build and run all ctests in build/ (normal build)
#   3. the same in build-asan/ with -DRESILIENCE_SANITIZE=ON (ASan + UBSan,
#      LeakSanitizer on)
#   4. the demo in smoke mode (scripts/demo.sh --smoke) so it cannot rot
#   5. the Debian packages (tests/packaging/test_packages.sh; as root only)
#   6. every libFuzzer target for 60 s in build-fuzz/ (clang; scripts/fuzz.sh),
#      started in the background after step 1 at nice 19, waited for at the end
#   7. integration tests under valgrind memcheck with build/'s binaries (a
#      chosen subset, tests/valgrind/run.py): 0 errors, 0 definite leaks
#
# Every step runs even when an earlier one failed (except tests of a build
# that failed), so one run shows all problems; the summary at the end lists
# each step and the script exits non-zero if any failed.
#
# Options (environment): RSL_TEST_JOBS (parallel build/test jobs, default
# nproc), RSL_SKIP_ASAN=1, RSL_SKIP_DEMO=1, RSL_SKIP_PACKAGE=1,
# RSL_SKIP_FUZZ=1, RSL_SKIP_VALGRIND=1 to leave a step out locally.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
JOBS="${RSL_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}"

declare -a STEP_NAMES=() STEP_RESULTS=()
FAILED=0

# record NAME RC [TEXT]: remember a step's outcome for the summary; a
# non-zero RC fails the run (TEXT, if given, replaces "FAIL (exit RC)").
record() {
    STEP_NAMES+=("$1")
    if [ "$2" -eq 0 ]; then
        STEP_RESULTS+=("PASS")
    else
        STEP_RESULTS+=("${3:-FAIL (exit $2)}")
        FAILED=1
    fi
}

# step NAME CMD...: run a command as a named step with a banner.
step() {
    local name="$1"
    shift
    echo
    echo "==================== $name ===================="
    local started=$SECONDS
    "$@"
    local rc=$?
    echo "---- $name: exit $rc after $((SECONDS - started))s"
    record "$name" "$rc"
    return "$rc"
}

# build_and_test DIR [cmake args...]: configure, build, ctest one tree.
build_and_test() {
    local dir="$1"
    shift
    if step "configure $dir" cmake -S "$ROOT" -B "$ROOT/$dir" "$@" &&
       step "build $dir" cmake --build "$ROOT/$dir" -j "$JOBS"; then
        step "ctest $dir" ctest --test-dir "$ROOT/$dir" --output-on-failure -j "$JOBS"
    else
        record "ctest $dir" 1 "NOT RUN (build failed)"
        echo "---- ctest $dir skipped: the build failed"
    fi
}

# shellcheck source=scripts/install-deps.sh
. "$ROOT/scripts/install-deps.sh"
if ! step "dependencies" rsl_install_deps; then
    echo "cannot continue without the dependencies" >&2
    exit 1
fi

# Fuzzing: every target 60 s from its seed corpus (scripts/fuzz.sh; crash
# reproducers are kept under build-fuzz/crashes/<target>/). It runs in the
# background from here on at the lowest priority, one target per core:
# fuzzers are pure CPU while the test steps mostly wait (timers, sockets,
# fsync), so the fuzzers soak up the idle cores instead of adding ~9
# minutes at the end. Each target still runs its full 60 s of wall time;
# its log (executions, coverage) is printed near the end of this script.
FUZZ_PID=""
if [ "${RSL_SKIP_FUZZ:-0}" != 1 ]; then
    FUZZ_LOG="$(mktemp "${TMPDIR:-/tmp}/rsl-fuzz-step.XXXXXX")"
    FUZZ_STARTED=$SECONDS
    # Its own session (setsid), so that an interrupted run can stop the
    # fuzzers with it: the trap kills the whole process group.
    setsid nice -n 19 bash "$ROOT/scripts/fuzz.sh" --time 60 --jobs "$JOBS" >"$FUZZ_LOG" 2>&1 &
    FUZZ_PID=$!
    echo "==> fuzzing in the background (pid $FUZZ_PID, log $FUZZ_LOG)"
    trap '[ -n "$FUZZ_PID" ] && kill -- "-$FUZZ_PID" 2>/dev/null' EXIT
fi

build_and_test build -DCMAKE_BUILD_TYPE=RelWithDebInfo

if [ "${RSL_SKIP_ASAN:-0}" != 1 ]; then
    # detect_leaks=1 is the default on x86_64 Linux; set it anyway so a
    # user's ASAN_OPTIONS cannot quietly turn LeakSanitizer off here.
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    RSL_TEST_SLOW=3 \
        build_and_test build-asan -DCMAKE_BUILD_TYPE=Debug -DRESILIENCE_SANITIZE=ON
fi

# Valgrind memcheck over the integration tests, with the normal build/ (no
# sanitizers: they and valgrind do not mix). A subset that runs every
# program and every major path in 5-8 minutes; tests/valgrind/run.py lists
# it and says why ("run.py --all" runs everything, ~28 minutes).
if [ "${RSL_SKIP_VALGRIND:-0}" != 1 ]; then
    if [ -x "$ROOT/build/resilience-aggregator" ]; then
        step "valgrind integration" python3 "$ROOT/tests/valgrind/run.py" \
            --build "$ROOT/build" --jobs "$JOBS"
    else
        record "valgrind integration" 1 "NOT RUN (no binaries)"
        echo "---- valgrind integration skipped: build/ has no binaries"
    fi
fi

if [ "${RSL_SKIP_DEMO:-0}" != 1 ]; then
    if [ -x "$ROOT/build/resilience-aggregator" ]; then
        demo_dir="$(mktemp -d "${TMPDIR:-/tmp}/rsl-demo-smoke.XXXXXX")"
        RSL_BUILD_DIR="$ROOT/build" DEMO_SKIP_DEPS=1 \
            step "demo smoke run" bash "$ROOT/scripts/demo.sh" --smoke "$demo_dir/work" &&
            rm -rf "$demo_dir"
    else
        record "demo smoke run" 1 "NOT RUN (no binaries)"
        echo "---- demo smoke run skipped: build/ has no binaries"
    fi
fi

# The Debian packages: build, lintian, install, run, upgrade and purge them
# system-wide (tests/packaging/test_packages.sh). That needs root, as in CI
# (a throwaway machine); elsewhere the step is skipped.
if [ "${RSL_SKIP_PACKAGE:-0}" != 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        step "packages" bash "$ROOT/tests/packaging/test_packages.sh"
    else
        STEP_NAMES+=("packages")
        STEP_RESULTS+=("SKIPPED (needs root)")
        echo "---- packages skipped: needs root (it installs packages system-wide)"
    fi
fi

# The fuzzing started in the background at the beginning: wait for it and
# show its output.
if [ -n "$FUZZ_PID" ]; then
    echo
    echo "==================== fuzz (60 s per target, in the background) ===================="
    wait "$FUZZ_PID"
    fuzz_rc=$?
    FUZZ_PID=""
    cat "$FUZZ_LOG"
    echo "---- fuzz: exit $fuzz_rc after $((SECONDS - FUZZ_STARTED))s (since it started)"
    record "fuzz (60 s per target)" "$fuzz_rc"
fi

echo
echo "==================== summary ===================="
for i in "${!STEP_NAMES[@]}"; do
    printf '  %-28s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
done
if [ "$FAILED" -ne 0 ]; then
    echo "RESULT: FAILED"
    exit 1
fi
echo "RESULT: all steps passed"
exit 0
