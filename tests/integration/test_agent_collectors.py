#!/usr/bin/env python3
"""The agent's collector types against real programs, files and servers.

- exec: a command that hangs (and started background children) is killed
  at its timeout - the whole process group, nothing left running - and
  what it printed before is discarded; a command that fails has its stderr
  logged and reports nothing; the agent keeps working meanwhile.
- http: the test runs an HTTPS server (Python http.server + ssl, a
  self-signed certificate made by the openssl CLI); values in the line
  format and as a flat JSON object (with a bearer token) arrive at the
  aggregator, also with the server's public key pinned. With a wrong CA or
  a wrong pin the collector fails cleanly: a log line, no crash, no report.
- file: a drop folder; fresh files are read, a stale file (mtime older than
  max_age) is skipped with a log line, as is a file that does not parse
  (FILE:LINE named) while the others still count; files with other
  extensions or names starting with "." (writes in progress) are ignored,
  and a file replaced by rename is read anew.
"""
import http.server
import json
import os
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, run_tests, stored_values, wait_for  # noqa: E402

AGENT = "DEU-BMI-01"


def deu(h):
    return h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")


def values(h, indicator):
    return [v for v, _ in stored_values(h, AGENT, indicator)]


def log_lines(d, needle):
    """Log lines above debug level that contain `needle`."""
    return [l for l in d.log_text().splitlines() if needle in l and " debug " not in l]


# --- exec -------------------------------------------------------------------

def process_group_members(pgid):
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            found.append(int(pid))
    return found


def test_exec_timeout_kills_the_process_group_and_failures_are_logged(h):
    h.setup_aggregator()
    agent = deu(h)
    pids = h.path("hang.pids")
    hang = h.write("collectors/hang.sh", (
        "#!/bin/sh\n"
        "# prints a measurement, starts children, then hangs\n"
        "echo \"energy.gas_storage_fill_pct 55 pct\"\n"
        "sleep 1000 &\n"
        "echo $! >> '%(pids)s'\n"
        "(sleep 1000; echo never) &\n"
        "echo $! >> '%(pids)s'\n"
        "echo $$ >> '%(pids)s'\n"
        "sleep 1000\n") % {"pids": pids}, mode=0o755)
    fail = h.write("collectors/fail.sh", (
        "#!/bin/sh\n"
        "echo 'food.grain_reserve_months 3 months'\n"
        "echo 'boom: the disk is on fire' >&2\n"
        "exit 3\n"), mode=0o755)
    h.write_agent_conf(agent, {
        "hang": {"type": "exec", "interval": "1h", "timeout": "2s", "command": hang},
        "fail": {"type": "exec", "interval": "1s", "command": fail},
        "cog": {"type": "static", "interval": "1s", "indicator": "gov.cog_exercise_age_months",
                "value": "7", "unit": "months"},
    })
    h.start_aggregator()
    d = h.start_agent(agent)

    wait_for(lambda: os.path.exists(pids) and len(open(pids).read().split()) == 3,
             "the hanging collector to start its children")
    with open(pids) as f:
        children = [int(x) for x in f.read().split()]
    with open("/proc/%d/stat" % children[-1]) as f:
        stat = f.read()
    pgid = int(stat[stat.rindex(")") + 2:].split()[2])
    check(pgid != os.getpgid(d.pid), "the collector runs in the agent's own process group")
    check(process_group_members(pgid), "no process in the collector's group %d" % pgid)

    wait_for(lambda: log_lines(d, "hang") and any("timed out" in l for l in log_lines(d, "hang")),
             "the agent to log the timeout")
    wait_for(lambda: not process_group_members(pgid),
             "every process of group %d to be gone" % pgid)
    for pid in children:
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            check(st[st.rindex(")") + 2] in "ZX", "pid %d survived the timeout" % pid)
        except FileNotFoundError:
            pass

    # The failing command: its stderr in the log, its exit status named.
    wait_for(lambda: log_lines(d, "boom: the disk is on fire"), "the collector's stderr in the log")
    wait_for(lambda: [l for l in log_lines(d, "fail") if "3" in l and "status" in l],
             "a log line with the failing collector's exit status")
    # The agent kept working, and neither collector reported anything.
    n = len(values(h, "gov.cog_exercise_age_months"))
    wait_for(lambda: len(values(h, "gov.cog_exercise_age_months")) >= n + 3,
             "three more reports from the static collector")
    check(values(h, "energy.gas_storage_fill_pct") == [],
          "the timed-out run's output was stored")
    check(values(h, "food.grain_reserve_months") == [], "the failed run's output was stored")
    check(d.alive(), "the agent died")


# --- http -------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    routes = {}        # path -> (content type, body, required Authorization or None)
    hits = {}

    def do_GET(self):
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        route = Handler.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        ctype, body, auth = route
        if auth is not None and self.headers.get("Authorization") != auth:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # failed handshakes are what some tests are about


class HttpsServer:
    def __init__(self, crt, key, routes):
        Handler.routes = routes
        Handler.hits = {}
        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        # Handshakes happen in the handler threads, so a client that gives
        # up half-way cannot stall the accept loop.
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_exec_collectors_do_not_inherit_systemd_notification_variables(h):
    """NOTIFY_SOCKET / WATCHDOG_* / LISTEN_* are for the agent alone: a
    collector that inherited them could report READY or WATCHDOG in the
    agent's name. The rest of the environment is passed on."""
    h.setup_aggregator()
    agent = deu(h)
    script = h.write("collectors/env.sh", (
        "#!/bin/sh\n"
        "leaked=0\n"
        "for v in NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS LISTEN_PID; do\n"
        "  eval \"x=\\${$v-unset}\"\n"
        "  [ \"$x\" = unset ] || leaked=$((leaked + 1))\n"
        "done\n"
        "kept=0; [ \"$RSL_TEST_KEEP\" = yes ] && kept=1\n"
        "echo \"gov.cog_exercise_age_months $((leaked * 100 + kept)) months\"\n"), mode=0o755)
    h.write_agent_conf(agent, {"env": {"type": "exec", "interval": "1s", "command": script}})
    h.start_aggregator()
    # The agent's sd_notify to a socket nobody listens on fails quietly.
    h.start_agent(agent, env={"NOTIFY_SOCKET": h.path("no-such.sock"), "WATCHDOG_USEC": "60000000",
                              "LISTEN_FDS": "1", "LISTEN_PID": "1", "RSL_TEST_KEEP": "yes"})
    wait_for(lambda: values(h, "gov.cog_exercise_age_months"), "the env collector's value")
    got = values(h, "gov.cog_exercise_age_months")[0]
    check(got == 1, "collector saw %d systemd variable(s) and kept=%d (want 0 and 1)" % (
        int(got) // 100, int(got) % 100))


def test_http_collector_reads_lines_and_json_over_https(h):
    h.setup_aggregator()
    agent = deu(h)
    crt, key = h.make_cert("web")
    token = "t0ken-%d" % os.getpid()
    token_file = h.write("web.token", token + "\n", mode=0o600)
    srv = HttpsServer(crt, key, {
        "/lines": ("text/plain; version=0.0.4",
                   "# water and blood\nwater.emergency_supply_lpcd 15 l_per_person_day\n"
                   "health.blood_stock_days 9.5 days\n", None),
        "/json": ("application/json", json.dumps(
            {"comms.public_warning_reach_pct": 88.5, "transport.rail_surge_capacity_pct": 61}),
            "Bearer " + token),
        "/pinned": ("text/plain", "energy.gas_storage_fill_pct 77 pct\n", None),
    })
    try:
        h.write_agent_conf(agent, {
            "web": {"type": "http", "interval": "1s", "url": srv.url("/lines"), "ca_file": crt},
            "webjson": {"type": "http", "interval": "1s", "url": srv.url("/json"),
                        "ca_file": crt, "format": "auto", "bearer_token_file": token_file},
            "webpin": {"type": "http", "interval": "1s", "url": srv.url("/pinned"),
                       "ca_file": crt, "pinned_public_key": h.public_key_pin(crt),
                       "format": "lines", "timeout": "5s"},
        })
        h.start_aggregator()
        d = h.start_agent(agent)
        want = {"water.emergency_supply_lpcd": 15.0, "health.blood_stock_days": 9.5,
                "comms.public_warning_reach_pct": 88.5, "transport.rail_surge_capacity_pct": 61.0,
                "energy.gas_storage_fill_pct": 77.0}
        wait_for(lambda: all(values(h, i) for i in want), "every HTTP value at the aggregator",
                 timeout=60 * SLOW)
        for ind, v in want.items():
            got = set(values(h, ind))
            check(got == {v}, "%s: stored %r, served %r" % (ind, sorted(got), v))
        units = dict(h.store_query(
            "SELECT indicator, unit FROM measurements WHERE agent_id = ?"
            " AND indicator IN ('water.emergency_supply_lpcd', 'health.blood_stock_days')",
            (AGENT,)))
        check(units == {"water.emergency_supply_lpcd": "l_per_person_day",
                        "health.blood_stock_days": "days"}, "units %r" % (units,))
        check(d.alive(), "the agent died")
    finally:
        srv.close()


def test_http_collector_with_a_wrong_certificate_fails_cleanly(h):
    h.setup_aggregator()
    agent = deu(h)
    crt, key = h.make_cert("web")
    other, _ = h.make_cert("other")
    srv = HttpsServer(crt, key, {
        "/a": ("text/plain", "food.grain_reserve_months 3 months\n", None),
        "/b": ("text/plain", "population.evacuation_plan_coverage_pct 12 pct\n", None),
    })
    try:
        h.write_agent_conf(agent, {
            "wrongca": {"type": "http", "interval": "1s", "url": srv.url("/a"),
                        "ca_file": other},
            "wrongpin": {"type": "http", "interval": "1s", "url": srv.url("/b"),
                         "ca_file": crt, "pinned_public_key": h.public_key_pin(other)},
            "cog": {"type": "static", "interval": "1s", "indicator": "gov.cog_exercise_age_months",
                    "value": "7", "unit": "months"},
        })
        h.start_aggregator()
        d = h.start_agent(agent)
        # One warning or error line per failing collector (repeats of the
        # same failure may go to debug), and the runs go on.
        wait_for(lambda: [l for l in log_lines(d, "collector wrongca") if "certificate" in l]
                 and [l for l in log_lines(d, "collector wrongpin") if "pinned" in l],
                 "a log line for each failing collector naming the problem")
        wait_for(lambda: d.log_text().count("collector wrongca") >= 4
                 and d.log_text().count("collector wrongpin") >= 4,
                 "the failing collectors to run again")
        # Meanwhile the agent keeps reporting, and the failures report nothing.
        wait_for(lambda: len(values(h, "gov.cog_exercise_age_months")) >= 3,
                 "reports from the static collector")
        check(values(h, "food.grain_reserve_months") == [], "stored a value read with a wrong CA")
        check(values(h, "population.evacuation_plan_coverage_pct") == [],
              "stored a value read from a server with the wrong public key")
        check(Handler.hits.get("/b", 0) == 0, "the wrong-pin collector completed a request")
        check(Handler.hits.get("/a", 0) == 0, "the wrong-CA collector completed a request")
        check(d.alive(), "the agent died")
    finally:
        srv.close()


# --- file -------------------------------------------------------------------

def drop(folder, name, text, age=None):
    """Write a file by atomic rename, as collectors must; age: set its mtime
    that many seconds into the past."""
    tmp = os.path.join(folder, "." + name + ".part")
    with open(tmp, "w") as f:
        f.write(text)
    if age is not None:
        t = time.time() - age
        os.utime(tmp, (t, t))
    os.rename(tmp, os.path.join(folder, name))


def test_file_collector_reads_fresh_files_and_skips_stale_ones(h):
    h.setup_aggregator()
    agent = deu(h)
    folder = h.path("drop")
    os.makedirs(folder)
    drop(folder, "households.prom", "society.household_72h_ready_pct 44 pct\n")
    drop(folder, "routes.txt", "# routes\ninfra.intl_route_diversity_count 4 count\n")
    drop(folder, "cables.rsl", "infra.subsea_cable_repair_days 21 days\n")
    drop(folder, "stale.prom", "info.fimi_response_hours 5 hours\n", age=3600)
    drop(folder, "inprogress.tmp", "food.self_sufficiency_pct 1 pct\n")
    drop(folder, ".hidden.prom", "food.grain_reserve_months 2 months\n")
    drop(folder, "broken.prom", "transport.rail_surge_capacity_pct 12 pct\nthis is not a line\n")
    h.write_agent_conf(agent, {
        "drop": {"type": "file", "interval": "1s", "path": folder, "max_age": "10m"}})
    h.start_aggregator()
    d = h.start_agent(agent)

    fresh = {"society.household_72h_ready_pct": 44.0, "infra.intl_route_diversity_count": 4.0,
             "infra.subsea_cable_repair_days": 21.0}
    wait_for(lambda: all(values(h, i) for i in fresh), "the fresh files' values")
    wait_for(lambda: log_lines(d, "stale.prom"), "a log line about the stale file")
    wait_for(lambda: log_lines(d, "broken.prom:2"), "a log line naming broken.prom:2")
    # A newer version replaces the file by rename: the new value arrives.
    drop(folder, "households.prom", "society.household_72h_ready_pct 45.5 pct\n")
    wait_for(lambda: 45.5 in values(h, "society.household_72h_ready_pct"),
             "the replaced file's new value")
    for ind, v in fresh.items():
        if ind != "society.household_72h_ready_pct":
            check(set(values(h, ind)) == {v}, "%s stored %r" % (ind, values(h, ind)))
    check(set(values(h, "society.household_72h_ready_pct")) == {44.0, 45.5},
          "households: %r" % values(h, "society.household_72h_ready_pct"))
    check(values(h, "info.fimi_response_hours") == [], "the stale file's value was stored")
    check(values(h, "food.self_sufficiency_pct") == [], "a .tmp file was read")
    check(values(h, "food.grain_reserve_months") == [], "a file whose name starts with . was read")
    check(values(h, "transport.rail_surge_capacity_pct") == [],
          "a value from a file that does not parse was stored")
    check(d.alive(), "the agent died")


if __name__ == "__main__":
    run_tests(globals())
