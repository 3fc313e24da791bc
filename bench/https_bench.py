#!/usr/bin/env python3
"""HTTPS read benchmark: the aggregator's GET /v1/summary against nginx
serving the identical JSON bytes as a static file with the same
certificate, both measured with wrk (64 keep-alive TLS connections, 10 s).

Run through bench/https_summary.sh (which installs wrk and nginx if
missing). Steps:
  1. a fresh aggregator (the integration test harness writes its keys,
     TLS certificate, tokens and configuration into a temporary folder)
     with 32 enrolled agents, one per nation of share/nations.csv, each
     sending one signed report with a value for every indicator: the store
     holds all 32 nations;
  2. GET /v1/summary once with curl: those bytes become nginx's static
     file, so both servers send exactly the same body;
  3. nginx (2 worker processes, like the aggregator's 2 HTTPS threads, the
     same TLS protocols and ciphers, unlimited keep-alive requests) on
     another loopback port;
  4. wrk -t2 -c64 -d10s --latency against each (a Lua script adds the
     Authorization header for the aggregator; nginx ignores it);
  5. print requests/s and p99 side by side, the ratios and the targets
     (aggregator >= 60% of nginx's requests/s, p99 <= 2x nginx's).

Environment: RSL_BUILD_DIR (default build-rel, then build), BENCH_DURATION
(default 10s), BENCH_CONNECTIONS (64), BENCH_THREADS (wrk threads, 2).
Exit status 0 when both targets are met, 1 otherwise, 2 on set-up errors.
The machine is shared and has 2 cores: wrk competes with the server for
them, equally for both servers; run it when the machine is otherwise idle.
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
import harness  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
TARGET_RPS_RATIO = 0.60
TARGET_P99_RATIO = 2.0

NGINX_CONF = """
worker_processes 2;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path %(dir)s/tmp;
    proxy_temp_path %(dir)s/tmp;
    fastcgi_temp_path %(dir)s/tmp;
    uwsgi_temp_path %(dir)s/tmp;
    scgi_temp_path %(dir)s/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:%(port)d ssl;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
        ssl_prefer_server_ciphers off;
        location = /v1/summary {
            default_type application/json;
            alias %(dir)s/www/summary.json;
        }
    }
}
"""

WRK_LUA = """-- adds the bearer token (the aggregator needs it; nginx ignores it)
wrk.headers["Authorization"] = "Bearer %s"
"""


def parse_wrk(text):
    """Requests/s and the 99th percentile latency in ms from wrk --latency."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:.*", text)
    if not rps or not p99:
        raise RuntimeError("cannot read wrk's output:\n" + text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * scale,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(0) if sock else "",
    }


def run_wrk(url, lua):
    cmd = ["wrk", "-t%d" % THREADS, "-c%d" % CONNECTIONS, "-d%s" % DURATION, "--latency",
           "-s", lua, url]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    print("$ " + " ".join(cmd))
    print(r.stdout)
    if r.returncode != 0:
        raise RuntimeError("wrk failed (exit %d)" % r.returncode)
    return parse_wrk(r.stdout)


def seed(h):
    """One agent per nation, each with a value for every indicator."""
    nations = []
    with open(h.nations) as f:
        next(f)
        for line in f:
            if line.strip():
                nations.append(line.split(",")[0].strip())
    indicators = []
    with open(h.indicators) as f:
        next(f)
        for line in f:
            if line.strip():
                cols = line.split(",")
                indicators.append((cols[0], cols[2], float(cols[4]), float(cols[5])))
    agents = [h.add_agent("%s-MIN-01" % code, code) for code in nations]
    return nations, indicators, agents


def main():
    for tool in ("wrk", "nginx", "curl", "openssl"):
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            print("missing tool: %s (bench/https_summary.sh installs it)" % tool)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    # A folder of our own for the harness's temporary folders, so that a
    # clean-up of stale test folders elsewhere cannot remove the files the
    # servers are serving mid-run.
    tempfile.tempdir = tempfile.mkdtemp(prefix="rsl-bench-")
    h = harness.Harness("bench-https")
    nginx_proc = None
    ok = False
    try:
        nations, indicators, agents = seed(h)
        h.setup_aggregator(extra="")
        # Benchmarks should not log a line per request.
        with open(h.agg["conf"]) as f:
            conf = f.read().replace("level = debug", "level = notice")
        with open(h.agg["conf"], "w") as f:
            f.write(conf)
        h.start_aggregator()
        now = int(time.time() * 1000)
        for i, (agent, code) in enumerate(zip(agents, nations)):
            args = []
            for j, (ind, unit, amber, red) in enumerate(indicators):
                # A spread of values around the thresholds: all three colours.
                value = [amber * 1.1 + 1, (amber + red) / 2.0, red * 0.5][(i + j) % 3]
                args += ["--measure", "%s=%s:%s" % (ind, value, unit)]
            status, detail = h.probe_one("--seq", "1", "--observed-at", str(now - 60000 - i),
                                         *args, agent=agent)
            if status != "ACCEPTED":
                raise RuntimeError("seeding %s: %s %s" % (code, status, detail))
        code, body = h.https("/v1/summary")
        if code != 200:
            raise RuntimeError("GET /v1/summary: %d %s" % (code, body[:200]))
        doc_nations = max(e["nations_reporting"] for e in __import__("json").loads(body)["indicators"])
        os.makedirs(h.path("nginx", "www"), exist_ok=True)
        os.makedirs(h.path("nginx", "tmp"), exist_ok=True)
        # Exactly the bytes the aggregator sends (curl -o keeps them).
        summary_file = h.path("nginx", "www", "summary.json")
        harness.run(["curl", "-sS", "--cacert", h.agg["cert"], "-H",
                     "Authorization: Bearer " + h.tokens["staff"], "-o", summary_file,
                     "https://127.0.0.1:%d/v1/summary" % h.agg["https_port"]], check_rc=0)
        size = os.path.getsize(summary_file)
        # nginx's workers run as an unprivileged user: let them reach the file
        # (the test folder itself is 0700).
        os.chmod(tempfile.tempdir, 0o711)
        os.chmod(h.tmp, 0o711)
        os.chmod(h.path("nginx"), 0o711)
        os.chmod(h.path("nginx", "www"), 0o755)
        os.chmod(summary_file, 0o644)
        nginx_port = harness.free_port()
        conf_path = h.write("nginx/nginx.conf", NGINX_CONF % {
            "dir": h.path("nginx"), "port": nginx_port, "cert": h.agg["cert"],
            "key": h.agg["key"]})
        nginx_proc = subprocess.Popen([nginx, "-c", conf_path, "-p", h.path("nginx")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_for(lambda: harness.port_is_listening(nginx_port), "nginx to listen")
        r = harness.run(["curl", "-sS", "--cacert", h.agg["cert"], "-o", "/dev/null", "-w",
                         "%{http_code} %{size_download}",
                         "https://127.0.0.1:%d/v1/summary" % nginx_port], check_rc=0)
        if r.stdout.split()[0] != "200":
            raise RuntimeError("nginx answers %s" % r.stdout)
        lua = h.write("wrk-auth.lua", WRK_LUA % h.tokens["staff"])

        print("body: %d bytes, %d nations reporting; wrk -t%d -c%d -d%s (keep-alive, TLS)\n" % (
            size, doc_nations, THREADS, CONNECTIONS, DURATION))
        agg = run_wrk("https://127.0.0.1:%d/v1/summary" % h.agg["https_port"], lua)
        ngx = run_wrk("https://127.0.0.1:%d/v1/summary" % nginx_port, lua)

        rps_ratio = agg["rps"] / ngx["rps"] if ngx["rps"] else 0.0
        p99_ratio = agg["p99_ms"] / ngx["p99_ms"] if ngx["p99_ms"] else float("inf")
        print("%-22s %12s %10s %8s" % ("server", "requests/s", "p99 ms", "non-2xx"))
        print("%-22s %12.0f %10.2f %8d" % ("resilience-aggregator", agg["rps"], agg["p99_ms"],
                                            agg["non2xx"]))
        print("%-22s %12.0f %10.2f %8d" % ("nginx (static file)", ngx["rps"], ngx["p99_ms"],
                                            ngx["non2xx"]))
        print("aggregator/nginx: requests/s %.0f%% (target >= %.0f%%), p99 %.2fx (target <= %.1fx)"
              % (100 * rps_ratio, 100 * TARGET_RPS_RATIO, p99_ratio, TARGET_P99_RATIO))
        ok = (rps_ratio >= TARGET_RPS_RATIO and p99_ratio <= TARGET_P99_RATIO and
              agg["non2xx"] == 0 and ngx["non2xx"] == 0)
        print("RESULT: %s" % ("targets met" if ok else "targets NOT met"))
    finally:
        if nginx_proc is not None:
            nginx_proc.terminate()
            try:
                nginx_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                nginx_proc.kill()
        problems = h.cleanup(False)
        if problems:
            print("clean-up problems: %s" % "; ".join(problems))
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
