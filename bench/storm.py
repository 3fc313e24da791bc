#!/usr/bin/env python3
"""Recovery storm: many real agents come back at once with deep spools;
how fast does the alliance picture catch up, against the same
aggregator's steady ingest rate measured in the same script?

1. Steady ingest (baseline): a fresh aggregator takes the same number of
   reports from 4 live senders (tests/rsl_probe --until-acked, 64 in
   flight each; bench/agent_backfill.py's steady phase), before and after
   the storm, so a change in the machine's load shows.
2. Storm: `--agents` real resilience-agent processes (one per ministry,
   nations round robin), each with `--reports` reports already in its spool
   (bench/agent_spoolfill: the agent's own code, fsync skipped), the
   agent's production defaults (window 512, resend_timeout 30 s,
   backoff_max 5 min), the aggregator's default max_queue (10,000). The
   agents run while the aggregator is down (an outage); the clock starts
   when it is started again and runs until every report is stored. The
   agents' own work (reading, CURVE) shares the two cores with the
   aggregator here; at the ministries it would not.

The storm rate comes from the store (received_at_ms of the stored reports,
middle 80%, as in agent_backfill.py); also printed: the wall time from the
first agent's start, and how many RETRY_LATER answers the aggregator gave
(its /metrics). Target (ours): storm >= 50% of the best steady rate. Not
80% as for one agent's backfill: here 200 agent processes do their part of
every report (reading the spool entry, CURVE, acks, deleting; 30-40 us of
CPU a report in agent_backfill.py) on the same two cores as the
aggregator, which the steady senders (reports signed before the clock
starts) do not.

Usage:
  RSL_BUILD_DIR=$PWD/build-rel bench/storm.py [--agents 200] [--reports 500]

Each agent is a process (about 1.6 MiB); beyond the kernel's inotify
instance limit (128 by default) agents fall back to polling their spool
folder and say so in their log - harmless here. Exit status 0 when the
target holds.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import agent_backfill as bf  # noqa: E402  (sets up the environment and imports harness)

fp = bf.fp
harness = bf.harness
TARGET = 0.50
NATIONS = ["ALB", "BEL", "BGR", "CAN", "CZE", "DEU", "DNK", "ESP", "EST", "FIN", "FRA", "GBR",
           "GRC", "HRV", "HUN", "ISL", "ITA", "LTU", "LUX", "LVA", "MKD", "MNE", "NLD", "NOR",
           "POL", "PRT", "ROU", "SVK", "SVN", "SWE", "TUR", "USA"]


def retry_later_total(h):
    code, body = h.https("/metrics")
    if isinstance(body, bytes):
        body = body.decode()
    total = 0
    for line in body.splitlines():
        if line.startswith("resilience_reports_retry_later_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--reports", type=int, default=500, help="spooled reports per agent")
    ap.add_argument("--timeout", type=int, default=900, help="give the storm up after (s)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    total = args.agents * args.reports

    h, tools, probes = bf.start("recovery storm benchmark: %d agents x %d spooled reports" %
                                (args.agents, args.reports), "bench-storm")
    ok = False
    try:
        agents = []
        t = time.monotonic()
        fill_env = dict(os.environ, LD_PRELOAD=tools["nofsync"])
        for i in range(args.agents):
            nation = NATIONS[i % len(NATIONS)]
            a = h.add_agent("%s-STORM-%03d" % (nation, i), nation, "Storm Ministry %d" % i)
            h.write_agent_conf(a, {"cog": {"type": "static", "interval": "24h",
                                           "indicator": "gov.cog_exercise_age_months",
                                           "value": "7", "unit": "months"}}, log="notice")
            # The harness shortens resend_timeout for tests; the storm runs
            # with the agent's production default (30 s).
            with open(a["conf"]) as f:
                text = f.read()
            with open(a["conf"], "w") as f:
                f.write(text.replace("resend_timeout = 2s\n", ""))
            r = subprocess.run([tools["spoolfill"], a["conf"], str(args.reports)], env=fill_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise harness.TestFailure("agent_spoolfill failed (exit %d): %s" %
                                          (r.returncode, r.stderr[-500:]))
            agents.append(a)
        print("  %d agents enrolled and their spools filled (%.0f s)" %
              (len(agents), time.monotonic() - t), flush=True)

        print("==> steady ingest (fresh store each time)")
        rates = [bf.steady(h, probes, total, "4 senders, window %d each" % bf.WINDOW)]

        print("==> storm")
        # The outage: the aggregator is down while the agents run (they
        # connect and wait, nothing is sent); then it comes back and every
        # agent's backlog arrives at once.
        h.aggregator.stop()
        bf.fresh_store(h)
        for a in agents:
            h.start_agent(a, wait_ready=False)
        for a in agents:
            a["daemon"].wait_log("ready")
        agents_cpu0 = sum(fp.cpu_ticks(a["daemon"].pid)[0] for a in agents)
        t0 = time.monotonic()
        h.start_aggregator()
        started = time.monotonic() - t0
        want = total + len(agents)  # and one report of each agent's static collector
        last = (0, t0)
        while True:
            n = h.store_query("SELECT count(*) FROM reports")[0][0]
            now = time.monotonic()
            if n >= want:
                break
            if now - t0 > args.timeout:
                raise harness.TestFailure("storm: %d of %d stored after %d s" %
                                          (n, want, args.timeout))
            if now - last[1] >= 5:
                print("  %6.1f s  %7d stored" % (now - t0, n), flush=True)
                last = (n, now)
            time.sleep(0.2)
        wall = time.monotonic() - t0
        agents_cpu = (sum(fp.cpu_ticks(a["daemon"].pid)[0] for a in agents) -
                      agents_cpu0) / fp.TICK
        agg_cpu = fp.cpu_ticks(h.aggregator.pid)[0] / fp.TICK
        rate, stored = bf.ingest_rate(h)
        turned_away = retry_later_total(h)
        print("  %-34s %7d reports  %8.0f reports/s (middle 80%%)  wall %.1f s from the "
              "aggregator's start (ready after %.1f s); RETRY_LATER answers %d" %
              ("storm, %d agents" % len(agents), stored, rate, wall, started, turned_away),
              flush=True)
        print("  CPU over the storm: aggregator %.1f s (%.0f us a report), the agents together "
              "%.1f s (%.0f us a report)" % (agg_cpu, agg_cpu * 1e6 / max(stored, 1), agents_cpu,
                                             agents_cpu * 1e6 / max(stored, 1)), flush=True)
        for a in agents:
            a["daemon"].stop()

        print("==> steady ingest again (after the storm)")
        rates.append(bf.steady(h, probes, total, "4 senders, window %d each" % bf.WINDOW))
        best = max(rates)
        ratio = rate / best
        print("  storm / best steady rate: %.2f (%.0f of %.0f reports/s); RETRY_LATER per "
              "report stored: %.3f" % (ratio, rate, best, turned_away / max(stored, 1)))
        ok = ratio >= TARGET
        print("  target storm >= %.0f%% of the steady ingest rate: %s" % (
            TARGET * 100, "met" if ok else "NOT met"))
        print("  load average at end: %s" % bf.load_average())
    finally:
        status = bf.finish(h, args.keep, ok)
    return status


if __name__ == "__main__":
    sys.exit(main())
