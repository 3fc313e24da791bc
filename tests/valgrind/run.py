#!/usr/bin/env python3
"""run.py - the integration tests under valgrind memcheck.

The CI step "valgrind integration" of scripts/test.sh. Every program the
tests start (resilience-agent daemon and its submit/status/--once commands,
resilience-aggregator, resilience-ctl, rsl_probe) runs under memcheck
(harness.py's RSL_VALGRIND=1 mode); a test fails on any memcheck error or
definitely lost block, with an excerpt of the valgrind log. "Possibly lost"
and "still reachable" memory (library threads of libzmq, OpenSSL, libevent
at exit) does not count.

Why a subset: memcheck makes the programs 10-50 times slower on CPU, and the
whole integration set (without the kill -9 loops) takes ~28 minutes of wall
time under it on a 2-core machine (measured 2026-11 with two files at a
time), against a CI budget of ~8 minutes. So by default a chosen subset runs
(SUBSET below: 7.5 minutes measured on a busy 2-core machine, load ~4;
5 minutes of CPU), picked so that every program and every major path runs
at least once under memcheck:

  agent      exec, http (lines + JSON over HTTPS) and file collectors, an exec
             timeout killing a process group; the spool (cap with drop_oldest,
             corrupt entries quarantined); the sender (ack, resend after a
             kill -9, fail-over to a second endpoint); config reload by SIGHUP
             (a bad new config kept out); `submit` with and without the
             daemon, `status --json`; config errors at start-up; the
             spool's reaper thread (acked entries deleted after a deep
             drain, at stop, and after a kill -9 at the next start)
  aggregator ingest (accepted, duplicate, equivocation, bad signatures,
             oversized and malformed frames, backpressure/RETRY_LATER), the
             store (refusing a garbage file), registry reload by SIGHUP, the
             HTTPS API (every documented route, summary/history semantics,
             tokens and client certificates, keep-alive, limits, slow
             clients cut off), partner releases (signed, pushed), a full
             disk under the store (ENOSPC paths; as root only, else the
             test skips), --check-config, start-up errors, SIGTERM exit
  ctl        keygen, enroll, audit, verify, summary/nation/history queries
  rsl_probe  (the test client) in all ingest tests

Left out of the default subset: the kill -9 loops (test_agent_crash,
test_aggregator_crash: a SIGKILLed process writes no leak report, and
20000 reports under memcheck take too long), test_dashboard (a browser
against the same API routes test_api_openapi checks), and the remaining
functions of the files below, which repeat the same code paths with other
data. `--all` runs every test file whole (except the kill -9 loops unless
--with-crash); run it before a release or when touching memory handling.

Usage:
  tests/valgrind/run.py [--build DIR] [--jobs N] [--all [--with-crash]]
                        [--list] [FILE[:FUNC,FUNC...] ...]
Environment: RSL_TEST_SLOW (waits; harness default 10 under valgrind),
RSL_VALGRIND_ARGS (extra valgrind options, e.g. --track-origins=yes),
RSL_VALGRIND_TIMEOUT (seconds per test file, default 1200).
Exit status: 0 all passed (a file that exits 77, "skipped here", counts as
passed), 1 a test failed (valgrind finding or otherwise), 2 usage error.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.path.join(HERE, "..", ".."))
INTEGRATION = os.path.join(SOURCE_DIR, "tests", "integration")

# The default subset: (test file, [test functions] or None for all of it).
SUBSET = [  # roughly longest first, so two at a time finish together
    ("test_ingest", ["test_bad_signatures_are_rejected",
                     "test_same_sequence_different_content_is_rejected",
                     "test_oversized_and_malformed_messages_do_not_hurt"]),
    ("test_agent_spool", ["test_spool_cap_drop_oldest_loses_the_oldest_and_counts_them",
                          "test_corrupt_entries_are_quarantined_and_the_rest_delivered"]),
    ("test_agent_outage", ["test_agent_fails_over_to_the_second_endpoint",
                           "test_submit_with_and_without_the_daemon_arrives_once"]),
    ("test_agent_collectors", ["test_exec_timeout_kills_the_process_group_and_failures_are_logged",
                               "test_http_collector_reads_lines_and_json_over_https",
                               "test_file_collector_reads_fresh_files_and_skips_stale_ones"]),
    ("test_agent_drain_crash", None),
    ("test_agent_ops", ["test_sighup_with_a_bad_config_keeps_the_old_one",
                        "test_status_shows_sensible_numbers"]),
    ("test_partner_releases", ["test_signed_release_verifies_independently"]),
    ("test_config_errors", ["test_aggregator_unknown_key", "test_aggregator_bad_registry_nation",
                            "test_agent_missing_file_and_bad_collector", "test_check_config",
                            "test_help_and_version"]),
    ("test_api_ctl_query", ["test_tables"]),
    ("test_fault_store_full", ["test_real_agent_waits_out_a_full_store"]),  # root only
    ("test_aggregator_trust", ["test_audit_finds_every_kind_of_tampering"]),
    ("test_api_semantics", ["test_present_summary_every_method_and_threshold"]),
    ("test_registry_reload", None),
    ("test_crash_recovery", None),
    ("test_aggregator_adversarial", ["test_backpressure_answers_retry_later_and_loses_nothing"]),
    ("test_api_tls", ["test_slow_headers_are_cut_off", "test_keep_alive_and_limits"]),
    ("test_pipeline", ["test_collected_values_reach_the_https_api"]),
    ("test_api_access", ["test_head_and_other_methods", "test_who_am_i"]),
    ("test_api_openapi", ["test_every_documented_route_answers_as_documented"]),
    ("test_aggregator_startup", ["test_garbage_store_is_refused"]),
]

# A test file's exit status for "cannot run here" (faults.skip_all).
SKIPPED = 77

# kill -9 loops: no leak report from a SIGKILLed process, and long.
CRASH_LOOPS = ("test_agent_crash", "test_aggregator_crash")


def parse_entry(text):
    name, _, funcs = text.partition(":")
    name = os.path.basename(name)
    if name.endswith(".py"):
        name = name[:-3]
    return name, [f for f in funcs.split(",") if f] or None


def all_files(with_crash):
    names = sorted(n[:-3] for n in os.listdir(INTEGRATION)
                   if n.startswith("test_") and n.endswith(".py"))
    return [(n, None) for n in names if with_crash or n not in CRASH_LOOPS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("RSL_BUILD_DIR") or
                    os.path.join(SOURCE_DIR, "build"), help="the build folder (default build/)")
    ap.add_argument("--jobs", type=int, default=2, help="test files at once (default 2)")
    ap.add_argument("--all", action="store_true", help="every integration test file, whole")
    ap.add_argument("--with-crash", action="store_true", help="with --all: the kill -9 loops too")
    ap.add_argument("--list", action="store_true", help="print what would run and exit")
    ap.add_argument("entries", nargs="*", help="FILE[:FUNC,FUNC...] instead of the subset")
    args = ap.parse_args()

    if args.entries:
        plan = [parse_entry(e) for e in args.entries]
    elif args.all:
        plan = all_files(args.with_crash)
    else:
        plan = list(SUBSET)
    for name, _ in plan:
        if not os.path.isfile(os.path.join(INTEGRATION, name + ".py")):
            print("run.py: no test file tests/integration/%s.py" % name, file=sys.stderr)
            return 2
    if args.list:
        for name, funcs in plan:
            print("%s: %s" % (name, ", ".join(funcs) if funcs else "(all)"))
        return 0
    build = os.path.abspath(args.build)
    for prog in ("resilience-agent", "resilience-aggregator", "resilience-ctl",
                 os.path.join("tests", "rsl_probe")):
        if not os.access(os.path.join(build, prog), os.X_OK):
            print("run.py: %s not built in %s" % (prog, build), file=sys.stderr)
            return 2
    if subprocess.run(["valgrind", "--version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        print("run.py: valgrind is not installed", file=sys.stderr)
        return 2

    env = dict(os.environ, RSL_VALGRIND="1", RSL_BUILD_DIR=build, RSL_SOURCE_DIR=SOURCE_DIR,
               PYTHONDONTWRITEBYTECODE="1")
    per_test_timeout = float(os.environ.get("RSL_VALGRIND_TIMEOUT") or 1200)
    outdir = tempfile.mkdtemp(prefix="rsl-valgrind-run-")
    print("valgrind integration: %d test files, %d at a time, build %s, output in %s" % (
        len(plan), args.jobs, build, outdir))
    sys.stdout.flush()

    started_all = time.monotonic()
    pending = list(plan)
    running = []  # (name, Popen, log file, started)
    results = []  # (name, rc, seconds, log path)
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            name, funcs = pending.pop(0)
            log_path = os.path.join(outdir, name + ".log")
            log = open(log_path, "w")
            cmd = [sys.executable, os.path.join(INTEGRATION, name + ".py")] + (funcs or [])
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=build)
            running.append((name, p, log, log_path, time.monotonic()))
        time.sleep(0.5)
        for item in list(running):
            name, p, log, log_path, t0 = item
            rc = p.poll()
            if rc is None and time.monotonic() - t0 > per_test_timeout:
                p.kill()  # the harness's children die with it (PDEATHSIG)
                rc = p.wait()
                with open(log_path, "a") as f:
                    f.write("\nrun.py: killed after %.0fs (RSL_VALGRIND_TIMEOUT)\n" % (
                        per_test_timeout))
                rc = rc or 1
            if rc is None:
                continue
            log.close()
            running.remove(item)
            secs = time.monotonic() - t0
            if rc == SKIPPED:
                rc = 0
                print("skip %-32s %6.1fs (exit 77: cannot run here)" % (name, secs))
            else:
                print("%-4s %-32s %6.1fs" % ("ok" if rc == 0 else "FAIL", name, secs))
            results.append((name, rc, secs, log_path))
            if rc != 0:
                with open(log_path, errors="replace") as f:
                    lines = f.read().splitlines()
                print("\n".join("  | " + l for l in lines[-300:]))
            sys.stdout.flush()

    # Per program over every test: runs, runs that reached their leak
    # report, errors, bytes definitely lost (the harness's lines).
    per_prog = {}
    item_re = re.compile(r"(\S+) (\d+) runs \((\d+) finished\) (\d+) errors (\d+) B lost")
    for _, _, _, log_path in results:
        with open(log_path, errors="replace") as f:
            for line in f:
                if line.startswith("  valgrind: "):
                    for m in item_re.finditer(line):
                        row = per_prog.setdefault(m.group(1), [0, 0, 0, 0])
                        for i in range(4):
                            row[i] += int(m.group(i + 2))
    print("\nvalgrind per program (runs, runs with a leak report, errors, bytes definitely lost):")
    for prog, row in sorted(per_prog.items()):
        print("  %-24s %5d %5d %5d %8d" % (prog, row[0], row[1], row[2], row[3]))
    failed = [r for r in results if r[1] != 0]
    print("valgrind integration: %d files, %d failed, %.0fs wall" % (
        len(results), len(failed), time.monotonic() - started_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
