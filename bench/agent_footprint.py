#!/usr/bin/env python3
"""Agent footprint: private memory and CPU of resilience-agent with 10 exec
collectors at 1-second intervals, side by side with collectd 5.12 doing the
same work (exec plugin running the same 10 commands every second, network
plugin sending signed packets to a local UDP sink), and with a bare program
that only initialises libzmq + CURVE, OpenSSL Ed25519 and libcurl
(bench/agent_baseline.c). Then the same agent again with a deep spool
(default 1,000,000 reports; the aggregator down): its memory must not grow
with the spool.

Measured per process from /proc (nothing from the programs themselves):
  Private_Dirty  /proc/PID/smaps_rollup, sampled every 2 s over the window
                 (min / median / max); the figure for "private memory"
  RSS            same file, last sample
  CPU            (utime+stime) of the process over the window, from
                 /proc/PID/stat; "+children" adds cutime+cstime (the
                 collector processes it ran and reaped)

Usage (as root if collectd-core must be installed):
  RSL_BUILD_DIR=/tmp/build-rel bench/agent_footprint.py [--seconds 60]
      [--warmup 15] [--spool-reports 1000000] [--no-deep-spool]

Build the project as RelWithDebInfo first (cmake -DCMAKE_BUILD_TYPE=
RelWithDebInfo). The script builds bench/agent_baseline.c,
bench/agent_spoolfill.c and bench/nofsync.c with cc into its temporary
folder. Exit status 0 when the targets hold: agent Private_Dirty <= 2.5 MiB
in steady state and with the deep spool, agent CPU <= collectd's.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
os.environ.setdefault("RSL_SOURCE_DIR", SOURCE_DIR)
for _cand in (os.environ.get("RSL_BUILD_DIR"), os.path.join(SOURCE_DIR, "build-rel"),
              os.path.join(SOURCE_DIR, "build")):
    if _cand and os.path.isfile(os.path.join(_cand, "resilience-agent")):
        os.environ["RSL_BUILD_DIR"] = _cand
        break
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
import harness  # noqa: E402

BUILD_DIR = harness.BUILD_DIR
MIB = 1024 * 1024
TARGET_PRIVATE_MIB = 2.5
TICK = os.sysconf("SC_CLK_TCK")

# Ten collectors, one indicator each (with the taxonomy's unit).
INDICATORS = [
    ("energy.oil_stock_days", "days"), ("energy.gas_storage_fill_pct", "pct"),
    ("health.acute_bed_occupancy_pct", "pct"), ("health.blood_stock_days", "days"),
    ("water.emergency_supply_lpcd", "l_per_person_day"), ("food.grain_reserve_months", "months"),
    ("comms.public_warning_reach_pct", "pct"), ("transport.rail_surge_capacity_pct", "pct"),
    ("gov.critical_service_bcp_pct", "pct"), ("info.trust_official_info_pct", "pct"),
]

COLLECTOR_SH = """#!/bin/sh
# bench collector: one value per run, in the agent's line format or, with
# "collectd" as the first argument, as a collectd exec-plugin PUTVAL line.
if [ "$1" = collectd ]; then
  echo "PUTVAL \\"bench/exec-c$2/gauge-value\\" interval=1 N:$2"
else
  echo "$3 $2 $4"
fi
"""


def sh(cmd, **kw):
    print("  $ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def pkg_libs(*names):
    return subprocess.run(["pkg-config", "--cflags", "--libs"] + list(names), check=True,
                          stdout=subprocess.PIPE, text=True).stdout.split()


def build_tools(out):
    """Compile the baseline program, the spool filler and the fsync shim."""
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-g", "-Wall", "-Wextra", "-Werror"]
    tools = {
        "baseline": os.path.join(out, "agent_baseline"),
        "spoolfill": os.path.join(out, "agent_spoolfill"),
        "nofsync": os.path.join(out, "nofsync.so"),
    }
    sh([cc] + flags + ["-o", tools["baseline"], os.path.join(HERE, "agent_baseline.c")] +
       pkg_libs("libzmq", "openssl", "libcurl"))
    sh([cc] + flags + ["-shared", "-fPIC", "-o", tools["nofsync"],
                       os.path.join(HERE, "nofsync.c")])
    b = BUILD_DIR
    sh([cc] + flags + ["-I" + SOURCE_DIR, "-I" + os.path.join(SOURCE_DIR, "include"),
                       "-I" + os.path.join(b, "gen"), "-o", tools["spoolfill"],
                       os.path.join(HERE, "agent_spoolfill.c"),
                       os.path.join(b, "libagent_core.a"), os.path.join(b, "librsl.a"),
                       os.path.join(b, "librsl_proto.a")] +
       pkg_libs("libzmq", "libsodium", "openssl", "libprotobuf-c", "libcurl", "jansson", "inih",
                "libsystemd") + ["-lpthread", "-lm"])
    return tools


def ensure_collectd():
    path = shutil.which("collectd") or ("/usr/sbin/collectd" if os.path.exists(
        "/usr/sbin/collectd") else None)
    if path:
        return path
    print("==> installing collectd-core (Debian)", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "collectd-core"],
       env=env, stdin=subprocess.DEVNULL)
    return "/usr/sbin/collectd"


def collectd_version(path):
    r = subprocess.run([path, "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("collectd "):
            return line.strip()
    return "collectd (version unknown)"


# --- /proc ------------------------------------------------------------------

def smaps_rollup(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def cpu_ticks(pid):
    """(own utime+stime, reaped children's cutime+cstime) in ticks."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime, cutime + cstime


def measure(pids, seconds, every=2.0):
    """Sample every process in `pids` ({name: pid}) for `seconds`."""
    start = {n: cpu_ticks(p) for n, p in pids.items()}
    t0 = time.monotonic()
    samples = {n: [] for n in pids}
    rss = {}
    while True:
        for n, p in pids.items():
            m = smaps_rollup(p)
            samples[n].append(m["Private_Dirty"])
            rss[n] = m["Rss"]
        left = seconds - (time.monotonic() - t0)
        if left <= 0:
            break
        time.sleep(min(every, left))
    wall = time.monotonic() - t0
    end = {n: cpu_ticks(p) for n, p in pids.items()}
    res = {}
    for n in pids:
        own = (end[n][0] - start[n][0]) / TICK
        kids = (end[n][1] - start[n][1]) / TICK
        res[n] = {
            "pd_min": min(samples[n]), "pd_med": statistics.median(samples[n]),
            "pd_max": max(samples[n]), "rss": rss[n],
            "cpu": 100.0 * own / wall, "cpu_kids": 100.0 * (own + kids) / wall,
        }
    return res, wall


def table(res, order, base="baseline"):
    b = res.get(base)
    print("  %-22s %28s %9s %8s %12s %10s" % (
        "program", "Private_Dirty MiB min/med/max", "RSS MiB", "CPU %", "+children %",
        "PD/" + base if b else ""))
    for n in order:
        r = res[n]
        ratio = ("%.2fx" % (r["pd_med"] / b["pd_med"])) if b and b["pd_med"] else ""
        print("  %-22s %8.2f / %6.2f / %6.2f %9.2f %8.3f %12.3f %10s" % (
            n, r["pd_min"] / MIB, r["pd_med"] / MIB, r["pd_max"] / MIB, r["rss"] / MIB,
            r["cpu"], r["cpu_kids"], ratio))


# --- collectd ---------------------------------------------------------------

class UdpSink(threading.Thread):
    """Receives (and counts) what collectd's network plugin sends."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.packets = 0
        self.bytes = 0
        self.done = False

    def run(self):
        while not self.done:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.packets += 1
            self.bytes += len(data)


def write_collectd_conf(folder, script, port):
    lines = [
        'Hostname "bench"', "FQDNLookup false", "Interval 1",
        'BaseDir "%s"' % folder, 'PIDFile "%s/collectd.pid"' % folder,
        'PluginDir "/usr/lib/collectd"', 'TypesDB "/usr/share/collectd/types.db"',
        "LoadPlugin logfile",
        "<Plugin logfile>", '  LogLevel "info"', '  File "%s/collectd.log"' % folder,
        "  Timestamp true", "</Plugin>",
        "LoadPlugin exec", "LoadPlugin network",
        "<Plugin exec>",
    ]
    # collectd refuses to run exec programs as root: they run as nobody.
    for i in range(len(INDICATORS)):
        lines.append('  Exec "nobody" "%s" "collectd" "%d"' % (script, i))
    lines += [
        "</Plugin>",
        "<Plugin network>",
        '  <Server "127.0.0.1" "%d">' % port,
        '    SecurityLevel "Sign"', '    Username "bench"', '    Password "bench-secret"',
        "  </Server>",
        "</Plugin>", "",
    ]
    p = os.path.join(folder, "collectd.conf")
    with open(p, "w") as f:
        f.write("\n".join(lines))
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=15)
    ap.add_argument("--spool-reports", type=int, default=1000000)
    ap.add_argument("--no-deep-spool", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    print("==> resilience agent footprint benchmark")
    print("  build: %s" % BUILD_DIR)
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            bt = [l.strip() for l in f if l.startswith("CMAKE_BUILD_TYPE:")]
        print("  %s" % (bt[0] if bt else "CMAKE_BUILD_TYPE unknown"))
    except OSError:
        pass
    print("  load average at start: %s (a shared machine: other work shows in CPU figures)" %
          " ".join(open("/proc/loadavg").read().split()[:3]))
    collectd = ensure_collectd()
    print("  %s" % collectd_version(collectd))

    h = harness.Harness("bench-footprint")
    public = tempfile.mkdtemp(prefix="rsl-bench-public-")  # readable by nobody (collectd exec)
    os.chmod(public, 0o755)
    procs = {}
    ok = True
    try:
        tools = build_tools(h.tmp)
        script = os.path.join(public, "collector.sh")
        with open(script, "w") as f:
            f.write(COLLECTOR_SH)
        os.chmod(script, 0o755)

        h.setup_aggregator(log_level="info")
        agent = h.add_agent("DEU-BENCH-01", "DEU", "Benchmark Ministry")
        collectors = {}
        for i, (ind, unit) in enumerate(INDICATORS):
            collectors["c%d" % i] = {"type": "exec", "interval": "1s",
                                     "command": "%s agent %d %s %s" % (script, i, ind, unit)}
        # A spool limit far above the deep spool, so nothing is dropped.
        h.write_agent_conf(agent, collectors, log="info", extra_agent="spool_max_mb = 65536")
        agg = h.start_aggregator()
        ad = h.start_agent(agent)
        procs["agent"] = ad

        sink = UdpSink()
        sink.start()
        cfolder = os.path.join(public, "collectd")
        os.makedirs(cfolder)
        cconf = write_collectd_conf(cfolder, script, sink.port)
        cd = h.start("collectd", [collectd, "-f", "-C", cconf])
        procs["collectd"] = cd
        bd = h.start("baseline", [tools["baseline"], h.agg["endpoint"], h.agg["server_key"],
                                  os.path.join(agent["keys"], "sign.key")])
        bd.wait_log("ready")
        procs["baseline"] = bd

        print("==> steady state: warm-up %.0f s, then %.0f s of samples" % (
            args.warmup, args.seconds))
        time.sleep(args.warmup)
        for n, d in procs.items():
            if not d.alive():
                raise harness.TestFailure("%s died:\n%s" % (n, harness.tail(d.log_text())))
        stored0 = len(h.store_reports(agent["id"]))
        packets0 = sink.packets
        res, wall = measure({n: d.pid for n, d in procs.items()}, args.seconds)
        stored = len(h.store_reports(agent["id"])) - stored0
        packets = sink.packets - packets0
        print("  work done in %.0f s: agent %d reports stored at the aggregator (%.1f/s); "
              "collectd %d signed UDP packets to the sink" % (wall, stored, stored / wall, packets))
        table(res, ["baseline", "collectd", "agent"])
        a, c, b = res["agent"], res["collectd"], res["baseline"]
        print("  agent vs collectd: Private_Dirty %.2fx, CPU %.2fx (own), %.2fx (+children)" % (
            a["pd_med"] / c["pd_med"], a["cpu"] / c["cpu"] if c["cpu"] else float("inf"),
            a["cpu_kids"] / c["cpu_kids"] if c["cpu_kids"] else float("inf")))
        print("  agent above the bare-library baseline: %+.2f MiB private" % (
            (a["pd_med"] - b["pd_med"]) / MIB))
        steady_ok = a["pd_max"] <= TARGET_PRIVATE_MIB * MIB
        cpu_ok = a["cpu"] <= c["cpu"]
        print("  target agent Private_Dirty <= %.1f MiB: %s (max %.2f MiB)" % (
            TARGET_PRIVATE_MIB, "met" if steady_ok else "NOT met", a["pd_max"] / MIB))
        print("  target agent CPU <= collectd's: %s (%.3f%% vs %.3f%%)" % (
            "met" if cpu_ok else "NOT met", a["cpu"], c["cpu"]))
        ok = ok and steady_ok and cpu_ok
        cd.stop()
        bd.stop()

        if not args.no_deep_spool:
            n = args.spool_reports
            print("==> deep spool: %d reports, the aggregator down" % n)
            check_rc = ad.stop()
            print("  agent stopped (exit %s); aggregator stopped (exit %s)" % (
                check_rc, agg.stop()))
            t = time.monotonic()
            env = dict(os.environ, LD_PRELOAD=tools["nofsync"])
            r = subprocess.run([tools["spoolfill"], agent["conf"], str(n)], env=env,
                               stdout=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise harness.TestFailure("agent_spoolfill failed (exit %d)" % r.returncode)
            print("  filled with bench/agent_spoolfill (library code, fsync skipped by "
                  "nofsync.so) in %.0f s" % (time.monotonic() - t))
            t = time.monotonic()
            ad = h.start_agent(agent)
            print("  agent ready with %d pending after %.1f s" % (
                len(os.listdir(os.path.join(agent["spool"], "pending"))), time.monotonic() - t))
            time.sleep(args.warmup)
            res2, wall2 = measure({"agent (deep spool)": ad.pid}, args.seconds)
            res2["agent (steady)"] = res["agent"]
            res2["baseline"] = res["baseline"]
            table(res2, ["baseline", "agent (steady)", "agent (deep spool)"])
            deep = res2["agent (deep spool)"]
            print("  deep spool vs steady: Private_Dirty %.2fx (median), max %.2f MiB; CPU "
                  "%.3f%% = %.2fx collectd's (measured above)" % (
                      deep["pd_med"] / a["pd_med"], deep["pd_max"] / MIB, deep["cpu"],
                      deep["cpu"] / c["cpu"] if c["cpu"] else float("inf")))
            deep_ok = deep["pd_max"] <= TARGET_PRIVATE_MIB * MIB
            print("  target agent Private_Dirty <= %.1f MiB with %d reports spooled: %s" % (
                TARGET_PRIVATE_MIB, n, "met" if deep_ok else "NOT met"))
            ok = ok and deep_ok
            ad.stop()
        print("  load average at end: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
        sink.done = True
    finally:
        problems = h.stop_all()
        for p in problems:
            print("  note: %s" % p)
        if args.keep:
            print("  kept: %s %s" % (h.tmp, public))
        else:
            print("  removing %s (a deep spool takes a while)" % h.tmp, flush=True)
            shutil.rmtree(h.tmp, ignore_errors=True)
            shutil.rmtree(public, ignore_errors=True)
    print("==> %s" % ("targets met" if ok else "targets NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
