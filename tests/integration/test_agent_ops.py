#!/usr/bin/env python3
"""Operating the agent: SIGHUP reload and `resilience-agent status`.

- SIGHUP with a bad new config keeps the old one running and says why
  (file:line); a good new config then takes effect without a restart.
- `status` (text and --json) shows numbers that match the spool: depth and
  bytes of pending/, the age of the oldest unacknowledged report, drops and
  rejected (0 here), the endpoint in use and the last ack once the
  aggregator is up; it works with and without the daemon running.
"""
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CounterCollector, TestFailure, agent_cli, agent_status, check,  # noqa: E402
                     counters_quiet, run_tests, spool_pending_bytes, spool_sequences,
                     status_number, stop_counters, stored_values, wait_for)

AGENT = "DEU-BMI-01"


def values(h, indicator):
    return [v for v, _ in stored_values(h, AGENT, indicator)]


def static(value, indicator="energy.oil_stock_days", unit="days"):
    return {"type": "static", "interval": "1s", "indicator": indicator, "value": str(value),
            "unit": unit}


def test_sighup_with_a_bad_config_keeps_the_old_one(h):
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    conf = h.write_agent_conf(agent, {"oil": static(10)})
    good_text = open(conf).read()
    h.start_aggregator()
    d = h.start_agent(agent)
    wait_for(lambda: 10.0 in values(h, "energy.oil_stock_days"), "value 10")

    # A bad config: a changed value plus an unknown key. Nothing of it may
    # apply - the reload is all or nothing.
    bad_text = good_text.replace("value = 10", "value = 99").replace(
        "[collector oil]", "[collector oil]\nintervall = 5s")
    check(bad_text != good_text and "value = 99" in bad_text, "could not edit the config")
    with open(conf, "w") as f:
        f.write(bad_text)
    offset = len(d.log_text())
    d.signal(signal.SIGHUP)
    d.wait_log("intervall", start=offset)
    line = [l for l in d.log_text()[offset:].splitlines() if "intervall" in l][0]
    check(os.path.basename(conf) in line, "the reload error does not name the file: %r" % line)
    n = len(values(h, "energy.oil_stock_days"))
    wait_for(lambda: len(values(h, "energy.oil_stock_days")) >= n + 3,
             "three more reports under the old config")
    check(d.alive(), "the agent died on a bad reload")
    check(99.0 not in values(h, "energy.oil_stock_days"), "part of the bad config was applied")

    # A good config with a changed value and a new collector takes effect.
    h.write_agent_conf(agent, {"oil": static(20),
                               "blood": static(8, "health.blood_stock_days", "days")})
    d.signal(signal.SIGHUP)
    wait_for(lambda: 20.0 in values(h, "energy.oil_stock_days")
             and 8.0 in values(h, "health.blood_stock_days"), "the reloaded config's values")
    check(set(values(h, "energy.oil_stock_days")) == {10.0, 20.0},
          "oil values %r" % set(values(h, "energy.oil_stock_days")))
    check(d.alive(), "the agent died on a good reload")
    seqs = h.store_reports(AGENT)
    check(len(seqs) == len(set(seqs)), "a sequence stored twice across reloads")
    check(d.stop() == 0, "the agent did not exit 0 on SIGTERM after reloads")


last = [""]


def numbers_match_spool(h, agent):
    """The status document once its depth and bytes agree with pending/."""
    st = agent_status(h, agent)
    depth = status_number(st, "spool_depth")
    nbytes = status_number(st, "spool_bytes")
    # The bytes of the entries, or the space they take on disk.
    if depth == len(spool_sequences(agent)) and nbytes in (
            spool_pending_bytes(agent), spool_pending_bytes(agent, on_disk=True)):
        return st
    last[0] = "status %s/%s, pending/ %d entries, %d bytes (%d on disk)" % (
        depth, nbytes, len(spool_sequences(agent)), spool_pending_bytes(agent),
        spool_pending_bytes(agent, on_disk=True))
    return None


def wait_status_matches(h, agent, what):
    try:
        return wait_for(lambda: numbers_match_spool(h, agent), what, interval=0.3)
    except TestFailure as e:
        raise TestFailure("%s (last: %s)" % (e, last[0]))


def test_status_shows_sensible_numbers(h):
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    c = CounterCollector(h, "oil", "energy.oil_stock_days", "days")
    h.write_agent_conf(agent, {c.name: c.conf(interval="300ms")})
    started = time.time()
    d = h.start_agent(agent)  # the aggregator is down: reports pile up
    wait_for(lambda: len(spool_sequences(agent)) >= 5, "five reports in pending/")
    stop_counters(h)
    counters_quiet(h, [c])
    st = wait_status_matches(h, agent, "status depth/bytes to match pending/")
    pending = spool_sequences(agent)
    check(st["daemon_running"] is True and st["pid"] == d.pid, "daemon/pid: %r" % st)
    check(st["connected"] is False, "connected while the aggregator is down: %r" % st)
    check(st["drops"] == 0 and st["rejected"] == 0 and st["corrupt"] == 0,
          "drops/rejected/corrupt: %r" % st)
    check(st["oldest_unacked_sequence"] == pending[0], "oldest unacked %r, pending/ starts "
          "with %d" % (st["oldest_unacked_sequence"], pending[0]))
    age = st["oldest_unacked_age_s"]
    elapsed = time.time() - started
    check(isinstance(age, (int, float)) and 0 < age <= elapsed + 1,
          "oldest unacked age %r s not within (0, %.1f]: %r" % (age, elapsed, st))
    check(st["next_sequence"] > pending[-1], "next sequence %r not above pending %r" % (
        st["next_sequence"], pending))
    check(st["last_ack_at"] is None, "a last ack although nothing was ever acked: %r" % st)

    # The text form says the same, for people.
    r = agent_cli(h, agent, "status", check_rc=0)
    check("%d reports pending" % len(pending) in r.stdout, "text status lacks the depth:\n" +
          r.stdout)

    # The aggregator comes up: everything is acked, the endpoint is named.
    h.start_aggregator()
    wait_for(lambda: not spool_sequences(agent), "the spool to drain")
    st = wait_status_matches(h, agent, "status to show an empty spool")
    st = wait_for(lambda: (lambda st: st if st["last_ack_at"] and st["connected"] else None)(
        agent_status(h, agent)), "status to show a last ack", interval=0.5)
    check(st["endpoint"] == h.agg["endpoint"], "endpoint in use %r, wanted %r" % (
        st["endpoint"], h.agg["endpoint"]))
    check(0 <= st["last_ack_age_s"] <= time.time() - started + 1, "last ack age %r" % (
        st["last_ack_age_s"],))
    check(st["oldest_unacked_sequence"] is None, "oldest unacked with an empty spool: %r" % st)

    # Without the daemon: status still reads the spool (and the last status).
    check(d.stop() == 0, "agent did not exit 0 on SIGTERM")
    st = agent_status(h, agent)
    check(st["daemon_running"] is False and st["spool_depth"] == len(spool_sequences(agent)),
          "status without the daemon: %r" % st)
    r = agent_cli(h, agent, "status", check_rc=0)
    check("not running" in r.stdout, "text status does not say the daemon is not running:\n" +
          r.stdout)


def test_once_delivers_and_exits(h):
    """--once: collect once, deliver, wait for the acks, exit 0; with the
    aggregator away, exit 1 after --once-timeout and keep the report."""
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    h.write_agent_conf(agent, {"oil": static(31), "blood": static(5, "health.blood_stock_days")})

    r = agent_cli(h, agent, "--once", "--once-timeout", "3s")
    check(r.returncode == 1, "--once without an aggregator: exit %d, wanted 1\n%s" % (
        r.returncode, r.stderr[-2000:]))
    kept = spool_sequences(agent)
    check(len(kept) == 2, "--once without an aggregator left %r in pending/" % kept)

    h.start_aggregator()
    r = agent_cli(h, agent, "--once", "--once-timeout", "60s")
    check(r.returncode == 0, "--once: exit %d\n%s" % (r.returncode, r.stderr[-2000:]))
    check(spool_sequences(agent) == [], "--once exited 0 with %r pending" % (
        spool_sequences(agent),))
    check(values(h, "energy.oil_stock_days") == [31.0, 31.0], "oil %r" % (
        values(h, "energy.oil_stock_days"),))
    check(values(h, "health.blood_stock_days") == [5.0, 5.0], "blood %r" % (
        values(h, "health.blood_stock_days"),))
    check(set(kept) <= set(h.store_reports(AGENT)), "the first run's reports were not sent")


if __name__ == "__main__":
    run_tests(globals())
