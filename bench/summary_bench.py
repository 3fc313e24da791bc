#!/usr/bin/env python3
"""/v1/summary at scale (issue 4): the summary's latency with 10 million
stored measurements against an almost empty store, on the real aggregator.

Run through bench/summary.sh. Steps:
  1. compile bench/summary_fill.c against the build's libraries
     (RSL_BUILD_DIR; use a RelWithDebInfo build);
  2. a fresh aggregator (integration harness: keys, TLS, tokens, registry,
     configuration in a temporary folder) with one enrolled agent per
     nation of share/nations.csv, each sending one signed report of 10
     measurements: the almost empty store;
  3. timed with curl over one keep-alive TLS connection (`-w
     %{time_total}`, the first transfer - the handshake - left out):
       present   GET /v1/summary, as dashboards poll it (the HTTPS workers
                 cache the present until the store changes);
       fresh     GET /v1/summary while an agent trickles reports in, 8
                 requests/s, so each request finds a new commit and
                 recomputes the present from the `current` table;
       at=       GET /v1/summary?at=T, T a different past hour each time:
                 computed from history (one index seek per nation and
                 indicator) every time;
  4. the aggregator stopped, summary_fill adds BENCH_MEASUREMENTS (default
     10,000,000) measurements through the store's own interface (real
     signed reports, spread over the past year), the aggregator started
     again (its start-up quick_check timed), and step 3 repeated;
  5. both side by side; target: each p50 and p99 within 2x of the small
     store's.

Environment: RSL_BUILD_DIR, BENCH_MEASUREMENTS (10000000), BENCH_REQUESTS
(200). Exit 0 when the target holds, 1 when not, 2 on errors. The store is
big (about 300 bytes per measurement with its indexes: 2.9 GB for 10
million); it lives in the temporary folder (TMPDIR), removed at the end.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("RSL_SOURCE_DIR", ROOT)
if "RSL_BUILD_DIR" not in os.environ:
    for cand in ("build-rel", "build"):
        if os.path.exists(os.path.join(ROOT, cand, "resilience-aggregator")):
            os.environ["RSL_BUILD_DIR"] = os.path.join(ROOT, cand)
            break
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from ingest_bench import build_tool  # noqa: E402

MEASUREMENTS = int(os.environ.get("BENCH_MEASUREMENTS", "10000000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
TARGET = 2.0
MEASURES = ["gov.cog_exercise_age_months=7:months", "gov.alt_seat_activation_hours=4:hours",
            "gov.critical_service_bcp_pct=88:pct", "gov.secure_comms_availability_pct=99:pct",
            "energy.oil_stock_days=95:days", "energy.oil_stock_consumption_days=70:days",
            "energy.gas_storage_fill_pct=81:pct", "energy.critical_site_backup_fuel_hours=80:hours",
            "population.reception_capacity_vs_scenario_pct=60:pct",
            "population.evacuation_plan_coverage_pct=75:pct"]


def curl_times(h, paths, rate=None):
    """Transfer times (ms) of GET `paths` in one curl process over one
    keep-alive connection; the first (TLS handshake) is dropped."""
    cfg = h.path("curl-%d.cfg" % time.monotonic_ns())
    with open(cfg, "w") as f:
        for p in [paths[0]] + list(paths):
            f.write('url = "https://127.0.0.1:%d%s"\noutput = "/dev/null"\n'
                    % (h.agg["https_port"], p))
    cmd = ["curl", "-sS", "--cacert", h.agg["cert"], "-H",
           "Authorization: Bearer " + h.tokens["staff"], "-w", "%{http_code} %{time_total}\n",
           "-K", cfg]
    if rate:
        cmd += ["--rate", rate]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=3600)
    lines = r.stdout.split()
    codes, times = lines[0::2], [float(t) * 1000 for t in lines[1::2]]
    if r.returncode != 0 or any(c != "200" for c in codes) or len(times) != len(paths) + 1:
        raise RuntimeError("curl failed (exit %d): %s %s" % (r.returncode, r.stderr,
                                                              sorted(set(codes))))
    return times[1:]


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))]


def measure(h, agent):
    """The three request kinds against the running aggregator."""
    out = {}
    out["present"] = curl_times(h, ["/v1/summary"] * REQUESTS)
    # A trickle of reports so that every request finds a new commit.
    trickle = subprocess.Popen(
        [h.probe_bin, "--endpoint", h.agg["endpoint"], "--server-key", h.agg["server_key"],
         "--curve-dir", agent["keys"], "--sign-key", os.path.join(agent["keys"], "sign.key"),
         "--agent-id", agent["id"], "--nation", agent["nation"], "--organisation", "bench",
         "--seq", str(100000000 + int(time.time())), "--count", "1000000", "--until-acked",
         "--measure", "energy.oil_stock_days=93:days"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        out["fresh"] = curl_times(h, ["/v1/summary"] * max(50, REQUESTS // 2), rate="8/s")
    finally:
        trickle.kill()
        trickle.wait()
    now = int(time.time() * 1000)
    out["at="] = curl_times(h, ["/v1/summary?at=%d" % (now - (i + 1) * 3600 * 1000)
                                for i in range(REQUESTS)])
    return out


def main():
    out = tempfile.mkdtemp(prefix="rsl-bench-summary-")
    fill = build_tool(out, "summary_fill", ["summary_fill.c"],
                      ["libaggregator_core.a", "librsl.a", "librsl_proto.a"],
                      ["sqlite3", "libzmq", "libsodium", "openssl", "libprotobuf-c", "inih",
                       "libsystemd"])
    h = harness.Harness("summary-bench")
    try:
        h.setup_aggregator()
        with open(h.agg["conf"]) as f:
            conf = f.read().replace("level = debug", "level = notice")
        with open(h.agg["conf"], "w") as f:
            f.write(conf)
        nations = [l.split(",")[0] for l in open(h.nations) if re.match(r"^[A-Z]{3},", l)]
        agents = [h.add_agent("%s-SUM-01" % n, n, "Ministry of %s" % n) for n in nations]
        agg = h.start_aggregator()
        args = []
        for m in MEASURES:
            args += ["--measure", m]
        for a in agents:
            status, detail = h.probe_one("--seq", "1", *args, agent=a)
            if status != "ACCEPTED":
                raise RuntimeError("%s: %s %s" % (a["id"], status, detail))
        print("== almost empty store: %d reports, %d measurements" % (len(agents),
                                                                      len(agents) * 10))
        small = measure(h, agents[0])
        agg.stop()

        specs = ["%s:%s:%s" % (a["id"], a["nation"], a["keys"]) for a in agents]
        cmd = [fill, h.agg["store"], str(MEASUREMENTS), "2"] + specs
        print("$ summary_fill %s %d 2 ... (%d agents)" % (h.agg["store"], MEASUREMENTS,
                                                         len(agents)), flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        print(r.stdout, end="")
        size = sum(os.path.getsize(h.agg["store"] + s) for s in ("", "-wal")
                   if os.path.exists(h.agg["store"] + s))
        started = time.monotonic()
        agg = h.start_aggregator()
        startup = time.monotonic() - started
        (n,), = h.store_query("SELECT count(*) FROM measurements")
        print("== big store: %d measurements, %.2f GB, aggregator ready in %.1f s (quick_check)"
              % (n, size / 1e9, startup))
        big = measure(h, agents[1])
        agg.stop()
    finally:
        h.cleanup(False)
        shutil.rmtree(out, ignore_errors=True)

    ok = True
    print("\n== /v1/summary latency (ms), %d requests each, curl over one keep-alive TLS "
          "connection; shared 2-core machine: noisy" % REQUESTS)
    print("  %-8s %10s %10s %10s %10s %8s %8s" % ("kind", "small p50", "small p99", "big p50",
                                                  "big p99", "x p50", "x p99"))
    for kind in ("present", "fresh", "at="):
        s50, s99 = pct(small[kind], 0.5), pct(small[kind], 0.99)
        b50, b99 = pct(big[kind], 0.5), pct(big[kind], 0.99)
        r50, r99 = b50 / s50, b99 / s99
        ok = ok and r50 <= TARGET and r99 <= TARGET
        print("  %-8s %10.2f %10.2f %10.2f %10.2f %7.2fx %7.2fx" % (kind, s50, s99, b50, b99,
                                                                    r50, r99))
    print("  target: big store within %.0fx of the small one: %s" % (TARGET,
                                                                     "met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
