#!/usr/bin/env python3
"""`resilience-ctl summary | nation CODE | history ID` against the real
aggregator: tables, --json and --csv equal to the API's own documents,
credentials by --token, --token-file, RESILIENCE_TOKEN and client
certificate, and one-line errors with exit 1 (HTTP errors, untrusted
server) or 2 (usage).
"""
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SLOW, api_client_ca, api_client_cert, api_json, api_request,  # noqa: E402
                     api_send, check, run_tests, wrap_cmd)


def setup(h, with_cert=False):
    agents = {c: h.add_agent("%s-MIN-01" % c, c) for c in ("DEU", "FRA")}
    extra = ""
    ca = None
    if with_cert:
        ca = api_client_ca(h)
        crt, key, subject = api_client_cert(h, ca, "ops", "/C=BE/O=NATO/CN=ops desk")
        extra = "[client ops]\nsubject = %s\nrole = nation:FRA\n" % subject
        h.client_cert = (crt, key)
    conf = h.setup_aggregator(tokens={"deu": "nation:DEU"}, extra=extra)
    if with_cert:
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace("threads = 2\n", "threads = 2\nclient_ca = %s\n" % ca[0], 1))
    h.start_aggregator()
    n = int(time.time() * 1000)
    api_send(h, agents["DEU"], {"energy.oil_stock_days": (95, "days")}, n - 2 * 3600 * 1000, 1)
    api_send(h, agents["DEU"], {"energy.oil_stock_days": (80, "days")}, n - 60000, 2)
    api_send(h, agents["FRA"], {"energy.oil_stock_days": (70, "days")}, n - 60000, 1)
    return n


def ctl(h, *args, token="staff", env=None):
    cmd = [h.ctl_bin] + list(args) + ["--url", "https://127.0.0.1:%d" % h.agg["https_port"],
                                      "--cacert", h.agg["cert"]]
    if token:
        cmd += ["--token", h.tokens.get(token, token)]
    full_env = dict(os.environ)
    full_env.pop("RESILIENCE_TOKEN", None)
    full_env.update(env or {})
    return subprocess.run(wrap_cmd(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL, env=full_env, timeout=60 * SLOW)


def test_tables(h):
    n = setup(h)
    r = ctl(h, "summary")
    check(r.returncode == 0, "summary: %d %s" % (r.returncode, r.stderr))
    line = [l for l in r.stdout.splitlines() if l.startswith("energy.oil_stock_days")]
    check(len(line) == 1, "no oil line in:\n%s" % r.stdout)
    cols = line[0].split()
    # min of DEU 80 and FRA 70; 2 reporting, 30 missing; 80 and 70 are both amber.
    check(cols[1:5] == ["BR2", "70", "days", "min"] and cols[5:8] == ["2", "0", "30"] and
          cols[8:11] == ["0", "2", "0"], "summary row %r" % cols)
    check("REQUIREMENT" in r.stdout and "Alliance summary at" in r.stdout, r.stdout[:300])

    r = ctl(h, "nation", "DEU")
    check(r.returncode == 0, "nation: %s" % r.stderr)
    row = [l.split() for l in r.stdout.splitlines() if l.startswith("energy.oil_stock_days")]
    check(row and row[0][2:6] == ["current", "80", "days", "amber"], "nation row %r" % row)
    check("DEU (Germany)" in r.stdout, r.stdout[:200])
    # --at: before the change DEU had 95.
    r = ctl(h, "nation", "DEU", "--at", str(n - 3600 * 1000))
    row = [l.split() for l in r.stdout.splitlines() if l.startswith("energy.oil_stock_days")]
    check(row and row[0][3] == "95", "nation --at row %r" % row)

    r = ctl(h, "history", "energy.oil_stock_days", "--from", str(n - 3 * 3600 * 1000), "--to",
            str(n), "--step", "1h")
    check(r.returncode == 0, "history: %s" % r.stderr)
    values = [l.split()[1] for l in r.stdout.splitlines() if l[:4].isdigit()]
    check(values == ["-", "95", "95", "70"], "history values %r\n%s" % (values, r.stdout))


def test_json_and_csv_are_the_api_documents(h):
    n = setup(h)
    r = ctl(h, "nation", "DEU", "--json", "--at", str(n))
    check(r.returncode == 0, r.stderr)
    check(json.loads(r.stdout) == api_json(h, "/v1/nations/DEU?at=%d" % n), "--json differs")
    r = ctl(h, "history", "energy.oil_stock_days", "--csv", "--from", str(n - 7200000), "--to",
            str(n), "--step", "30m")
    status, _, body = api_request(h, "/v1/indicators/energy.oil_stock_days/history?from=%d&to=%d"
                                  "&step=30m&format=csv" % (n - 7200000, n))
    # (text mode turned ctl's CRLF into LF; the bytes are the server's)
    check(r.returncode == 0 and r.stdout == body.decode().replace("\r\n", "\n"),
          "--csv differs:\n%s\n%s" % (
        r.stdout[:300], body[:300]))
    r = ctl(h, "summary", "--csv")
    check(r.returncode == 0 and r.stdout.startswith("at,indicator,"), r.stdout[:200])


def test_credentials(h):
    setup(h, with_cert=True)
    # Token file (0600) and environment.
    tf = h.write("staff.token", h.tokens["staff"] + "\n", mode=0o600)
    r = ctl(h, "summary", "--token-file", tf, token=None)
    check(r.returncode == 0, "--token-file: %s" % r.stderr)
    os.chmod(tf, 0o644)
    r = ctl(h, "summary", "--token-file", tf, token=None)
    check(r.returncode == 1 and "staff.token" in r.stderr, "readable token file: %d %s" % (
        r.returncode, r.stderr))
    r = ctl(h, "summary", token=None, env={"RESILIENCE_TOKEN": h.tokens["deu"]})
    check(r.returncode == 0, "RESILIENCE_TOKEN: %s" % r.stderr)
    # Client certificate mapped to nation:FRA: FRA yes, DEU no.
    crt, key = h.client_cert
    r = ctl(h, "nation", "FRA", "--cert", crt, "--key", key, token=None)
    check(r.returncode == 0 and "FRA (France)" in r.stdout, "cert: %s" % r.stderr)
    r = ctl(h, "nation", "DEU", "--cert", crt, "--key", key, token=None)
    check(r.returncode == 1 and "HTTP 403 forbidden" in r.stderr, "cert on DEU: %s" % r.stderr)


def test_errors(h):
    setup(h)
    r = ctl(h, "summary", token=None)
    check(r.returncode == 1 and "HTTP 401 unauthorized" in r.stderr and
          len(r.stderr.strip().splitlines()) == 1, "no token: %d %r" % (r.returncode, r.stderr))
    r = ctl(h, "nation", "FRA", token="deu")
    check(r.returncode == 1 and "HTTP 403" in r.stderr, "deu on FRA: %r" % r.stderr)
    r = ctl(h, "history", "no.such.indicator")
    check(r.returncode == 1 and "HTTP 404" in r.stderr, "unknown indicator: %r" % r.stderr)
    r = ctl(h, "summary", "--at", "yesterday")
    check(r.returncode == 1 and "HTTP 400" in r.stderr and "'at'" in r.stderr, r.stderr)
    # The server's certificate is checked: without --cacert it is not trusted.
    cmd = [h.ctl_bin, "summary", "--url", "https://127.0.0.1:%d" % h.agg["https_port"],
           "--token", h.tokens["staff"]]
    r = subprocess.run(wrap_cmd(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       stdin=subprocess.DEVNULL, timeout=60 * SLOW)
    check(r.returncode == 1 and "certificate" in r.stderr.lower(), "untrusted server: %d %r" % (
        r.returncode, r.stderr))
    # Usage errors: exit 2.
    for args in (["summary", "--json", "--csv"], ["nation"], ["nation", "DE/U"],
                 ["summary", "--url", "http://127.0.0.1:1"], ["summary", "--cert", "x.pem"]):
        r = ctl(h, *args)
        check(r.returncode == 2, "%s: exit %d %r" % (" ".join(args), r.returncode, r.stderr))


if __name__ == "__main__":
    run_tests(globals())
