#!/usr/bin/env python3
"""End to end: a real agent reports through a real aggregator, and the HTTPS
API shows exactly the numbers its collectors produced.

Covers: static and exec collectors -> signed report -> ZeroMQ+CURVE ->
verify -> SQLite -> GET /v1/nations/DEU and /v1/summary over TLS (curl with
--cacert); bearer-token roles (401/403);
SIGTERM stops both daemons with exit 0.
"""
import os
import signal
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, find_entries, run_tests, wait_for  # noqa: E402

STATIC_VALUE = 97.5          # energy.oil_stock_days (min across nations)
EXEC_VALUE = 83.25           # health.acute_bed_occupancy_pct (median)


def exec_collector_script(h, name, lines):
    """A collector program printing `lines` in the line format."""
    body = "#!/bin/sh\n# test collector\n" + "".join("echo '%s'\n" % l for l in lines)
    return h.write("collectors/%s.sh" % name, body, mode=0o755)


def deu_agent(h, **conf_kw):
    agent = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    script = exec_collector_script(h, "beds", ["# acute beds",
                                               "health.acute_bed_occupancy_pct %s pct" % EXEC_VALUE])
    h.write_agent_conf(agent, {
        "oil": {"type": "static", "interval": "1s", "indicator": "energy.oil_stock_days",
                "value": str(STATIC_VALUE), "unit": "days"},
        "beds": {"type": "exec", "interval": "1s", "command": script, "timeout": "10s"},
    }, **conf_kw)
    return agent


def indicator_entry(doc, indicator):
    found = [e for e in find_entries(doc, "id", indicator) if "value" in e]
    check(len(found) == 1, "expected one entry for %s, found %d" % (indicator, len(found)))
    return found[0]


def nation_has_values(h, code, want):
    """True once /v1/nations/CODE shows every indicator in `want` current."""
    doc = h.https_json("/v1/nations/%s" % code)
    for ind in want:
        e = indicator_entry(doc, ind)
        if e.get("value") is None or e.get("state") != "current":
            return False
    return doc


def test_collected_values_reach_the_https_api(h):
    h.setup_aggregator(tokens={"fra": "nation:FRA", "deu": "nation:DEU"})
    agent = deu_agent(h)
    h.start_aggregator()
    h.start_agent(agent)

    want = ["energy.oil_stock_days", "health.acute_bed_occupancy_pct"]
    doc = wait_for(lambda: nation_has_values(h, "DEU", want), "DEU values in /v1/nations/DEU")
    check(doc.get("nation") == "DEU", "nation view is for %r" % doc.get("nation"))
    oil = indicator_entry(doc, "energy.oil_stock_days")
    beds = indicator_entry(doc, "health.acute_bed_occupancy_pct")
    # Exact equality on purpose: the number must survive the line format,
    # protobuf doubles, SQLite REAL and JSON unchanged.
    check(oil["value"] == STATIC_VALUE, "static value %r != %r" % (oil["value"], STATIC_VALUE))
    check(beds["value"] == EXEC_VALUE, "exec value %r != %r" % (beds["value"], EXEC_VALUE))
    check(oil.get("agent_id") == "DEU-BMI-01", "agent_id %r" % oil.get("agent_id"))
    check(oil.get("unit") == "days" and beds.get("unit") == "pct", "units %r %r" % (
        oil.get("unit"), beds.get("unit")))
    # 97.5 days is above amber (90): green; 83.25% occupancy below amber (85): green.
    check(oil.get("status") == "green", "oil status %r" % oil.get("status"))
    check(beds.get("status") == "green", "beds status %r" % beds.get("status"))

    summary = h.https_json("/v1/summary")
    for ind, v in (("energy.oil_stock_days", STATIC_VALUE),
                   ("health.acute_bed_occupancy_pct", EXEC_VALUE)):
        e = indicator_entry(summary, ind)
        check(e.get("nations_reporting") == 1, "%s nations_reporting %r" % (ind, e.get("nations_reporting")))
        check(e.get("value") == v, "%s alliance value %r != %r" % (ind, e.get("value"), v))
        check(e.get("min") == v and e.get("max") == v, "%s min/max %r/%r" % (ind, e.get("min"), e.get("max")))
    other = indicator_entry(summary, "water.emergency_supply_lpcd")
    check(other.get("nations_reporting") == 0 and other.get("value") is None,
          "an indicator nobody reported has a value: %r" % other)

    # Roles: no token 401, a wrong token 401, another nation's token 403,
    # the nation's own token 200; /healthz needs no token.
    code, _ = h.https("/v1/summary", token=None)
    check(code == 401, "no token: HTTP %d" % code)
    code, _ = h.https("/v1/summary", token="not-a-valid-token")
    check(code == 401, "bad token: HTTP %d" % code)
    code, _ = h.https("/v1/nations/DEU", token="fra")
    check(code == 403, "FRA token on DEU: HTTP %d" % code)
    doc = h.https_json("/v1/nations/DEU", token="deu")
    check(indicator_entry(doc, "energy.oil_stock_days")["value"] == STATIC_VALUE, "DEU own view")
    code, _ = h.https("/healthz", token=None)
    check(code == 200, "/healthz: HTTP %d" % code)

    # The agent's spool drains: acknowledged reports leave pending/.
    wait_for(lambda: len(h.pending(agent)) <= 2, "the agent's pending/ to drain")
    seqs = h.store_reports("DEU-BMI-01")
    check(len(seqs) == len(set(seqs)) and min(seqs) >= 1, "stored sequences %r" % seqs)


def test_sigterm_stops_both_daemons_with_exit_0(h):
    h.setup_aggregator()
    agent = deu_agent(h)
    agg = h.start_aggregator()
    ag = h.start_agent(agent)
    wait_for(lambda: h.store_reports("DEU-BMI-01"), "a first stored report")

    ag.signal(signal.SIGTERM)
    ag.proc.wait(timeout=60)
    check(ag.proc.returncode == 0, "agent exit status %r on SIGTERM" % ag.proc.returncode)
    agg.signal(signal.SIGTERM)
    agg.proc.wait(timeout=60)
    check(agg.proc.returncode == 0, "aggregator exit status %r on SIGTERM" % agg.proc.returncode)

    # SIGINT behaves the same (Ctrl-C in a terminal).
    agg2 = h.start_aggregator()
    agg2.signal(signal.SIGINT)
    agg2.proc.wait(timeout=60)
    check(agg2.proc.returncode == 0, "aggregator exit status %r on SIGINT" % agg2.proc.returncode)


if __name__ == "__main__":
    run_tests(globals())
