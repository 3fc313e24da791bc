#!/usr/bin/env python3
"""A pipeline thread that ends on its own stops the whole aggregator.

If the store thread, a verify worker or the socket thread leaves its loop
(its zmq_poll fails), the aggregator would otherwise keep its socket open,
take reports it never answers, and go on feeding the systemd watchdog: a
daemon that looks alive and ingests nothing, never restarted. Instead it
must log which thread ended, stop, and exit with status 3 (an internal
failure at run time - not 1, the configuration error systemd is told not
to restart), so that Restart=on-failure brings it back.

The failure is injected with tests/support/fail_poll.c (LD_PRELOAD): once
a trigger file exists, zmq_poll fails with EFAULT in the thread with the
given name. Before the trigger the aggregator works normally (a report is
ACCEPTED); after it, a report wakes the thread (which handles it - its
poll had started before the trigger) and the thread's next poll fails; the
process must exit 3 by itself. Restarted without the shim, as systemd
would, it stores each report exactly once when it is sent again.
"""
import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BUILD_DIR, SLOW, VALGRIND, check, run_tests,  # noqa: E402
                     wait_for)

AGENT = ("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
SHIM = os.path.join(BUILD_DIR, "tests", "rsl_fail_poll.so")
MEASURE = "energy.oil_stock_days=90:days"
CREATED = 1764234000000  # fixed times: a report sent again is the same report


def shim_env(h, thread):
    trigger = h.path("fail-poll-%s" % thread)
    env = {"LD_PRELOAD": SHIM, "RSL_TEST_POLL_FAIL_FILE": trigger,
           "RSL_TEST_POLL_FAIL_THREAD": thread}
    # In the sanitizer build libasan must come first; the shim is loaded
    # before it, which ASan refuses unless told this is intended.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env, trigger


def lose(h, thread):
    h.setup_aggregator()
    agent = h.add_agent(*AGENT)
    env, trigger = shim_env(h, thread)
    d = h.start("aggregator", [h.aggregator_bin, "-c", h.agg["conf"]], env=env)
    d.wait_log("ready")
    h.aggregator = d

    def send(seq, **kw):
        return h.probe_one("--seq", str(seq), "--measure", MEASURE, "--created-at",
                           str(CREATED + seq), "--observed-at", str(CREATED + seq - 1000),
                           agent=agent, **kw)

    status, detail = send(1)
    check(status == "ACCEPTED", "before the failure: %s %s" % (status, detail))

    open(trigger, "w").close()
    # This report wakes every stage; the one named fails on its next poll.
    # It may or may not be acknowledged first.
    status2, _ = send(2, timeout_ms=int(3000 * SLOW))
    check(status2 in ("ACCEPTED", "NOACK"), "report 2: %s" % status2)
    wait_for(lambda: not d.alive(), "the aggregator to stop after its %s thread ended" % thread,
             timeout=30 * SLOW)
    d.expected_dead = True
    rc = d.proc.wait()
    log = d.log_text()
    check(rc == 3, "exit status %r after the %s thread ended (wanted 3):\n%s"
          % (rc, thread, log[-2000:]))
    check("stopped unexpectedly" in log, "no log line says which thread stopped:\n%s"
          % log[-2000:])
    check("internal failure" in log, "no log line says why the aggregator stops:\n%s"
          % log[-2000:])
    print("  %s: exit 3; %s" % (thread, [l for l in log.splitlines()
                                           if "stopped unexpectedly" in l][0].strip()[-120:]))

    # Restarted (as systemd would): a report acknowledged before is a
    # DUPLICATE, a new one is ACCEPTED, and each is stored exactly once.
    h.start_aggregator()
    # Report 2 without an ack may still have been stored (committed, its
    # ack lost with the thread): then it is a DUPLICATE now.
    status, detail = send(2)
    want = ("DUPLICATE",) if status2 == "ACCEPTED" else ("ACCEPTED", "DUPLICATE")
    check(status in want, "report 2 after the restart: %s %s (wanted %s)"
          % (status, detail, " or ".join(want)))
    status, detail = send(1)
    check(status == "DUPLICATE", "report 1 after the restart: %s %s" % (status, detail))
    status, detail = send(3)
    check(status == "ACCEPTED", "report 3 after the restart: %s %s" % (status, detail))
    check(h.store_reports(AGENT[0]) == [1, 2, 3], "stored: %r" % (h.store_reports(AGENT[0]),))


def test_store_thread_lost(h):
    lose(h, "agg-store")


def test_verify_worker_lost(h):
    lose(h, "agg-verify")


def test_socket_thread_lost(h):
    lose(h, "agg-socket")


if __name__ == "__main__":
    if VALGRIND:
        print("SKIP: an LD_PRELOAD shim under valgrind is not what this test checks")
        sys.exit(77)
    if not os.path.exists(SHIM):
        print("FAIL: %s is missing (build the tests)" % SHIM)
        sys.exit(1)
    run_tests(globals())
