#!/usr/bin/env python3
"""Agent backfill: how fast a deep spool drains into a fresh aggregator,
against the aggregator's steady ingest rate measured in the same script.

1. Steady ingest: a fresh aggregator takes N reports from live senders -
   tests/rsl_probe --until-acked (reports built and signed before the clock
   starts, then sent with 64 in flight, resent until acked, like the
   agent): once as one sender with N reports, once as 4 senders with N/4
   each at the same time. Measured before and after the backfill, so a
   change in the machine's load shows.
2. Backfill: the agent's spool is filled with N reports
   (bench/agent_spoolfill: the agent's own code, fsync skipped), a fresh
   aggregator is started, then the agent; the time until every report is
   stored and pending/ is empty.

Rates come from the store itself: the received_at_ms of the stored
reports, over the middle 80% (10th to 90th percentile), so start-up and
the tail do not count; the whole-run wall time is printed too. Target:
backfill >= 80% of the best steady rate.

Usage:
  RSL_BUILD_DIR=/tmp/build-rel bench/agent_backfill.py [--reports 100000]

Exit status 0 when the target holds.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import agent_footprint as fp  # noqa: E402  (sets up the environment and imports harness)

harness = fp.harness
TARGET = 0.80
WINDOW = 64          # the live senders' (rsl_probe --window)
AGENT_WINDOW = 512   # the agent's default [agent] window (agent/config.h)


def load_average():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def start(title, name):
    """Print the run's header; a harness with its aggregator set up (not
    started), the compiled tools and the four live senders enrolled.
    The caller's try/finally ends with finish(h, ...)."""
    print("==> %s" % title)
    print("  build: %s" % fp.BUILD_DIR)
    print("  load average at start: %s (a shared machine)" % load_average())
    h = harness.Harness(name)
    try:
        tools = fp.build_tools(h.tmp)
        h.setup_aggregator(log_level="notice")
        probes = [h.add_agent("DEU-PROBE-%02d" % i, "DEU", "Probe %d" % i) for i in range(4)]
    except BaseException:
        h.stop_all()
        shutil.rmtree(h.tmp, ignore_errors=True)
        raise
    return h, tools, probes


def finish(h, keep, ok):
    """Stop what runs, remove (or keep) the folder, say the verdict; the
    exit status."""
    for p in h.stop_all():
        print("  note: %s" % p)
    if keep:
        print("  kept: %s" % h.tmp)
    else:
        shutil.rmtree(h.tmp, ignore_errors=True)
    print("==> %s" % ("target met" if ok else "target NOT met"))
    return 0 if ok else 1


def fresh_store(h):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(h.agg["store"] + suffix)
        except FileNotFoundError:
            pass


def ingest_rate(h, agent_ids=None):
    """Reports per second over the middle 80% of what is stored, by
    received_at_ms; and how many."""
    rows = [r[0] for r in h.store_query("SELECT received_at_ms FROM reports ORDER BY 1")]
    n = len(rows)
    if n < 10:
        return 0.0, n
    lo, hi = rows[n // 10], rows[(n * 9) // 10]
    span = max(hi - lo, 1)
    return (n * 8 // 10) / (span / 1000.0), n


def steady(h, probes, total, label):
    """Send `total` reports from len(probes) senders at once into a fresh
    store; returns the rate."""
    agg = getattr(h, "aggregator", None)
    if agg is not None and agg.alive():
        agg.stop()
    fresh_store(h)
    h.start_aggregator()
    each = total // len(probes)
    procs = []
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = ru.ru_utime + ru.ru_stime
    t = time.monotonic()
    for p in probes:
        cmd = [h.probe_bin, "--endpoint", h.agg["endpoint"], "--server-key", h.agg["server_key"],
               "--agent-id", p["id"], "--nation", p["nation"], "--organisation",
               p["organisation"], "--curve-dir", p["keys"],
               "--sign-key", os.path.join(p["keys"], "sign.key"),
               "--until-acked", "--window", str(WINDOW), "--count", str(each),
               "--timeout", "30000", "--measure", "energy.oil_stock_days=95:days"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    for pr in procs:
        _, err = pr.communicate()
        if pr.returncode != 0:
            raise harness.TestFailure("rsl_probe exit %d: %s" % (pr.returncode, err))
    wall = time.monotonic() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime - cpu0
    rate, n = ingest_rate(h)
    print("  %-34s %7d reports  %8.0f reports/s (middle 80%%)  wall %.1f s incl. signing; "
          "senders' CPU %.1f s" % (label, n, rate, wall, cpu), flush=True)
    if n != each * len(probes):
        raise harness.TestFailure("%s: %d stored, %d sent" % (label, n, each * len(probes)))
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=int, default=100000)
    ap.add_argument("--agent-window", type=int, default=None,
                    help="the agent's [agent] window (default: not set, i.e. the agent's "
                    "default, %d)" % AGENT_WINDOW)
    ap.add_argument("--diagnose-nofsync", action="store_true",
                    help="diagnosis only: run the agent with nofsync.so preloaded, to see how "
                    "much of the drain time its fsyncs take (not a valid configuration)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    n = args.reports

    h, tools, probes = start("resilience agent backfill benchmark (%d reports)" % n,
                             "bench-backfill")
    ok = False
    try:
        agent = h.add_agent("DEU-BENCH-01", "DEU", "Benchmark Ministry")
        h.write_agent_conf(agent, {
            "cog": {"type": "static", "interval": "1h", "indicator": "gov.cog_exercise_age_months",
                    "value": "7", "unit": "months"}}, log="notice",
            extra_agent="spool_max_mb = 65536" + ("\nwindow = %d" % args.agent_window
                                                  if args.agent_window else ""))
        agent_window = args.agent_window or AGENT_WINDOW

        print("==> steady ingest (fresh store each time)")
        rates = [steady(h, probes[:1], n, "1 sender, window %d" % WINDOW),
                 steady(h, probes, n, "4 senders, window %d each" % WINDOW)]

        print("==> backfill")
        h.aggregator.stop()
        fresh_store(h)
        t = time.monotonic()
        env = dict(os.environ, LD_PRELOAD=tools["nofsync"])
        r = subprocess.run([tools["spoolfill"], agent["conf"], str(n)], env=env,
                           stdout=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise harness.TestFailure("agent_spoolfill failed (exit %d)" % r.returncode)
        pending = len(os.listdir(os.path.join(agent["spool"], "pending")))
        print("  spool filled: %d reports pending (%.0f s)" % (pending, time.monotonic() - t))
        h.start_aggregator()
        t = time.monotonic()
        d = h.start_agent(agent, env={"LD_PRELOAD": tools["nofsync"]}
                          if args.diagnose_nofsync else None)
        if args.diagnose_nofsync:
            print("  DIAGNOSIS RUN: the agent's fsyncs are disabled")
        harness.wait_for(
            lambda: not os.listdir(os.path.join(agent["spool"], "pending")) and
            len(h.store_reports(agent["id"])) >= pending,
            "the spool to drain", timeout=3600, interval=0.5)
        wall = time.monotonic() - t
        own, _ = fp.cpu_ticks(d.pid)
        rate, stored = ingest_rate(h)
        print("  %-34s %7d reports  %8.0f reports/s (middle 80%%)  wall %.1f s from agent "
              "start; agent CPU %.1f s" % ("agent backfill, window %d" % agent_window,
                                            stored, rate, wall, own / fp.TICK), flush=True)
        d.stop()

        print("==> steady ingest again (after the backfill)")
        rates += [steady(h, probes[:1], n, "1 sender, window %d" % WINDOW),
                  steady(h, probes, n, "4 senders, window %d each" % WINDOW)]
        best = max(rates)
        ratio = rate / best
        one = max(rates[0], rates[2])
        print("  backfill / best steady rate: %.2f (%.0f of %.0f reports/s); / best single "
              "sender: %.2f" % (ratio, rate, best, rate / one))
        ok = ratio >= TARGET
        print("  target backfill >= %.0f%% of the steady ingest rate: %s" % (
            TARGET * 100, "met" if ok else "NOT met"))
        print("  load average at end: %s" % load_average())
    finally:
        status = finish(h, args.keep, ok)
    return status


if __name__ == "__main__":
    sys.exit(main())
