#!/usr/bin/env python3
"""Delivery across outages, with real processes on loopback.

- The aggregator is stopped (SIGTERM once, kill -9 once) while the agent
  keeps collecting every second; after each restart everything collected
  meanwhile arrives, exactly once.
- Failover: with nothing listening on the first of two endpoints, reports
  arrive through the second.
- `resilience-agent submit` spools a manual report with and without the
  daemon running; each arrives exactly once, through the same spool.
"""
import os
import signal
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SLOW, CounterCollector, agent_cli, agent_status, check,  # noqa: E402
                     counters_quiet, free_port, run_tests, spool_names, spool_sequences,
                     stop_counters, stored_values, wait_for)

AGENT = "DEU-BMI-01"


def counter_agent(h, **conf_kw):
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    counters = [CounterCollector(h, "oil", "energy.oil_stock_days", "days"),
                CounterCollector(h, "blood", "health.blood_stock_days", "days")]
    h.write_agent_conf(agent, {c.name: c.conf(interval="1s") for c in counters}, **conf_kw)
    return agent, counters


def all_arrived_once(h, counters):
    """True once every value every counter produced is stored; fails at once
    on a value stored twice."""
    for c in counters:
        produced = [v for v, _ in c.produced()]
        stored = [v for v, _ in c.stored(AGENT)]
        dup = sorted(v for v in set(stored) if stored.count(v) > 1)
        check(not dup, "collector %s: values stored twice: %r" % (c.name, dup))
        if not set(produced) <= set(stored):
            return False
    return True


def outage(h, agent, counters, how):
    """Stop the aggregator with `how` (SIGTERM or SIGKILL), let the agent
    collect into its spool, start the aggregator again."""
    before = {c.name: len(c.produced()) for c in counters}
    if how == signal.SIGKILL:
        h.aggregator.kill9()
    else:
        rc = h.aggregator.stop()
        check(rc == 0, "aggregator exited %r on SIGTERM" % (rc,))
    # Collected meanwhile: several reports of each collector wait in pending/.
    wait_for(lambda: all(len(c.produced()) >= before[c.name] + 3 for c in counters),
             "three more runs of each collector during the outage")
    wait_for(lambda: len(spool_sequences(agent)) >= 6, "reports piling up in pending/")
    check(agent["daemon"].alive(), "the agent died while the aggregator was away")
    h.start_aggregator()
    wait_for(lambda: all_arrived_once(h, counters),
             "everything collected during the outage (%s) to arrive" % how.name,
             timeout=90 * SLOW)


def test_aggregator_outages_lose_and_repeat_nothing(h):
    h.setup_aggregator()
    agent, counters = counter_agent(h)
    h.start_aggregator()
    h.start_agent(agent)
    wait_for(lambda: all(c.stored(AGENT) for c in counters), "the first reports")

    outage(h, agent, counters, signal.SIGTERM)
    outage(h, agent, counters, signal.SIGKILL)

    stop_counters(h)
    counters_quiet(h, counters)
    wait_for(lambda: all_arrived_once(h, counters), "the last reports")
    wait_for(lambda: not spool_sequences(agent), "the spool to drain")
    check(spool_names(agent, "rejected") == [], "rejected: %r" % spool_names(agent, "rejected"))
    seqs = h.store_reports(AGENT)
    check(len(seqs) == len(set(seqs)), "a sequence stored twice")
    for c in counters:
        stored = sorted(v for v, _ in c.stored(AGENT))
        produced = sorted(v for v, _ in c.produced())
        check(stored == produced, "collector %s: produced %r, stored %r" % (
            c.name, produced, stored))


def test_agent_fails_over_to_the_second_endpoint(h):
    """agent.conf [aggregator] endpoints is an ordered list: with nothing
    listening on the first endpoint, reports reach the second one."""
    h.setup_aggregator()
    dead = "tcp://127.0.0.1:%d" % free_port()   # nothing listens there
    agent, counters = counter_agent(h, endpoints="%s, %s" % (dead, h.agg["endpoint"]))
    h.start_aggregator()
    h.start_agent(agent)
    wait_for(lambda: all(len(c.stored(AGENT)) >= 2 for c in counters),
             "reports via the second endpoint", timeout=90 * SLOW)
    stop_counters(h)
    counters_quiet(h, counters)
    wait_for(lambda: all_arrived_once(h, counters), "every report via the second endpoint",
             timeout=90 * SLOW)
    st = wait_for(lambda: (lambda st: st if st["connected"] else None)(agent_status(h, agent)),
                  "status to show the connection", interval=0.5)
    check(st["endpoint"] == h.agg["endpoint"], "status names endpoint %r, wanted the second "
          "one %r" % (st["endpoint"], h.agg["endpoint"]))


def submit(h, agent, *measurements):
    r = agent_cli(h, agent, "submit", *measurements)
    check(r.returncode == 0, "submit %s: exit %d: %s" % (" ".join(measurements), r.returncode,
                                                         r.stderr))
    return r


def test_submit_with_and_without_the_daemon_arrives_once(h):
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    h.write_agent_conf(agent, {
        "cog": {"type": "static", "interval": "1h", "indicator": "gov.cog_exercise_age_months",
                "value": "7", "unit": "months"}})
    h.start_aggregator()

    # Without the daemon: the report waits in the spool.
    submit(h, agent, "energy.oil_stock_days=41.5:days", "health.blood_stock_days=6")
    check(len(spool_sequences(agent)) == 1, "submit without the daemon: pending/ holds %r" %
          spool_names(agent, "pending"))
    offline_seq = spool_sequences(agent)[0]

    # Malformed input is refused and spools nothing.
    for bad in (["energy.oil_stock_days"], ["energy.oil_stock_days=abc"], ["=5"],
                ["energy.oil_stock_days=inf"], []):
        r = agent_cli(h, agent, "submit", *bad)
        check(r.returncode != 0, "submit %r was accepted" % (bad,))
        check(r.stderr.strip() != "", "submit %r failed without a message" % (bad,))
    check(spool_sequences(agent) == [offline_seq], "a refused submit spooled something: %r" %
          spool_names(agent, "pending"))

    h.start_agent(agent)
    wait_for(lambda: stored_values(h, AGENT, "energy.oil_stock_days"),
             "the offline submit to arrive")

    # With the daemon running: it notices the new entry without a restart.
    submit(h, agent, "energy.oil_stock_days=42.25:days")
    wait_for(lambda: len(stored_values(h, AGENT, "energy.oil_stock_days")) >= 2,
             "the submit made while the daemon runs to arrive")
    wait_for(lambda: not spool_sequences(agent), "the spool to drain")

    oil = stored_values(h, AGENT, "energy.oil_stock_days")
    check(sorted(v for v, _ in oil) == [41.5, 42.25], "stored oil values %r" % (oil,))
    blood = stored_values(h, AGENT, "health.blood_stock_days")
    check([v for v, _ in blood] == [6.0], "stored blood values %r" % (blood,))
    check(blood[0][1] == offline_seq and dict((v, s) for v, s in oil)[41.5] == offline_seq,
          "the offline submit's two values are not in one report %d: %r %r" % (
              offline_seq, oil, blood))
    seqs = h.store_reports(AGENT)
    check(len(seqs) == len(set(seqs)), "a sequence stored twice: %r" % seqs)
    # The submitted unit is kept; an omitted unit is empty (= the taxonomy's).
    units = dict(h.store_query(
        "SELECT m.indicator, m.unit FROM measurements m JOIN reports r ON m.report_id = r.id"
        " WHERE r.agent_id = ? AND r.sequence = ?", (AGENT, offline_seq)))
    check(units.get("energy.oil_stock_days") == "days", "units %r" % (units,))
    check(units.get("health.blood_stock_days") in ("", "days"), "units %r" % (units,))


if __name__ == "__main__":
    run_tests(globals())
