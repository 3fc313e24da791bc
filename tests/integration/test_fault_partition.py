#!/usr/bin/env python3
"""Network partitions between the agent and the aggregator (issue 8).

The agent reaches the aggregator only through a loopback TCP proxy
(faults.TcpProxy) and collects every second (two counter collectors, whose
every value is identifiable) while `resilience-agent submit` adds manual
reports now and then. The proxy then, several times in random order:
- cuts: every connection reset (RST), new connections refused, for a while;
- pauses: nothing forwarded either way, connections left open (a silent
  partition: TCP says nothing, only the agent's ZeroMQ heartbeat, set to
  1 s here, can notice). The agent must notice it by itself - log that it
  lost the connection while the partition lasts - and reconnect when it
  heals;
- loses acks: the agent's reports still reach the aggregator, which
  stores them, but nothing comes back (a one-way partition). The heartbeat
  notices this too; the reports are resent after the reconnect and must be
  answered DUPLICATE, never stored twice.

Afterwards, every report the agent ever spooled (a sampler lists pending/
all the time) is stored exactly once, every counter value produced and
every submit is stored exactly once, nothing was rejected (a resend
rebuilt under a new number, or a number reused, would show), and the spool
is empty.

RSL_TEST_SEED=N repeats the order and lengths of the faults.
"""
import os
import random
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import PendingSampler, TcpProxy, fault_seed  # noqa: E402
from harness import (SLOW, CounterCollector, agent_cli, check, counters_quiet,  # noqa: E402
                     run_tests, spool_names, spool_sequences, stop_counters, stored_values,
                     wait_for)

AGENT = "DEU-BMI-01"
SUBMIT_INDICATOR = "food.self_sufficiency_pct"
HEARTBEAT_S = 1  # the agent's ZeroMQ heartbeat; it gives up after 3x


def all_stored_once(h, counters):
    """True once every produced counter value is stored; fails at once on
    a value stored twice."""
    for c in counters:
        stored = [v for v, _ in c.stored(AGENT)]
        dup = sorted(v for v in set(stored) if stored.count(v) > 1)
        check(not dup, "collector %s: values stored twice: %r" % (c.name, dup))
        if not {v for v, _ in c.produced()} <= set(stored):
            return False
    return True


def test_cuts_and_silent_partitions_lose_and_repeat_nothing(h):
    rng = random.Random(fault_seed("the order and lengths of the partitions"))

    def sleep(lo, hi):
        time.sleep(rng.uniform(lo, hi) * SLOW)
    h.setup_aggregator()
    proxy = TcpProxy(h.agg["zmq_port"], name="agent->aggregator")
    proxy.start()
    try:
        agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
        counters = [CounterCollector(h, "oil", "energy.oil_stock_days", "days"),
                    CounterCollector(h, "blood", "health.blood_stock_days", "days")]
        h.write_agent_conf(agent, {c.name: c.conf(interval="1s") for c in counters},
                           endpoints=proxy.endpoint,
                           extra_agent="heartbeat = %ds" % HEARTBEAT_S)
        h.start_aggregator()
        agent_d = h.start_agent(agent)
        wait_for(lambda: all(c.stored(AGENT) for c in counters),
                 "the first reports through the proxy", timeout=60 * SLOW)
        check(proxy.accepted >= 1, "nothing went through the proxy")

        submitted = []

        def submit():
            v = 1000 + len(submitted)
            r = agent_cli(h, agent, "submit", "%s=%d:pct" % (SUBMIT_INDICATOR, v))
            check(r.returncode == 0, "submit exited %d: %s" % (r.returncode, r.stderr))
            submitted.append(v)

        faults = ["cut"] * 3 + ["pause"] * 3 + ["ackloss"] * 2
        rng.shuffle(faults)
        with PendingSampler(agent) as sampler:
            for k, fault in enumerate(faults, start=1):
                # Traffic flows again before the next fault: something new
                # arrives through the healed link.
                stored_before = len(h.store_reports(AGENT))
                wait_for(lambda: len(h.store_reports(AGENT)) > stored_before,
                         "fault %d: new reports stored before the %s" % (k, fault),
                         timeout=90 * SLOW)
                sleep(0.0, 1.5)
                log_at = len(agent_d.log_text())
                if fault == "cut":
                    proxy.cut()
                    if rng.random() < 0.7:
                        submit()
                    sleep(1.0, 5.0)
                    # The agent saw the reset.
                    wait_for(lambda: "disconnected from" in agent_d.log_text()[log_at:],
                             "fault %d (cut): the agent to log the lost connection" % k)
                else:
                    proxy.pause(one_way="to_client" if fault == "ackloss" else None)
                    if rng.random() < 0.7:
                        submit()
                    # Nothing tells the agent: only its heartbeat (timeout
                    # 3 x 1 s) can find out, and it must while the
                    # partition lasts.
                    wait_for(lambda: "disconnected from" in agent_d.log_text()[log_at:],
                             "fault %d (%s): the agent's heartbeat to notice and drop the "
                             "connection" % (k, fault), timeout=60 * SLOW)
                    sleep(0.0, 2.0)
                check(agent_d.alive(), "fault %d: the agent died" % k)
                check(h.aggregator.alive(), "fault %d: the aggregator died" % k)
                healed_at = len(agent_d.log_text())
                proxy.resume()
                wait_for(lambda: "connected to" in agent_d.log_text()[healed_at:],
                         "fault %d (%s): the agent to reconnect after the link healed" % (k, fault),
                         timeout=90 * SLOW)
                if rng.random() < 0.3:
                    submit()

            # Drain: no new collector reports, everything still pending
            # goes through the (healed) proxy.
            stop_counters(h)
            counters_quiet(h, counters)
            wait_for(lambda: all_stored_once(h, counters), "every counter value to arrive",
                     timeout=120 * SLOW)
            wait_for(lambda: not spool_sequences(agent), "the spool to drain",
                     timeout=120 * SLOW)
        rc = agent_d.stop()
        check(rc == 0, "the agent exited %r on SIGTERM" % (rc,))
    finally:
        proxy.stop()
    check(not proxy.errors, "the proxy thread failed: %r" % proxy.errors)

    seqs = h.store_reports(AGENT)
    check(len(seqs) == len(set(seqs)), "a sequence stored twice: %r" % sorted(
        s for s in set(seqs) if seqs.count(s) > 1))
    lost = sorted(sampler.seen - set(seqs))
    check(not lost, "spooled but never stored: %r" % lost)
    check(spool_sequences(agent) == [], "still pending: %r" % spool_names(agent, "pending"))
    check(spool_names(agent, "rejected") == [], "rejected: %r" % spool_names(agent, "rejected"))
    check(spool_names(agent, "corrupt") == [], "quarantined: %r" % spool_names(agent, "corrupt"))
    for d in h.daemons:
        check("REJECTED" not in d.log_text(), "%s logged REJECTED" % d.name)
    # The lost acks were for stored reports: resent, answered DUPLICATE
    # (and the store holds each once, checked above).
    dups = agent_d.log_text().count(" DUPLICATE (already stored)")
    check(dups > 0, "no report was answered DUPLICATE: the ack-losing partitions did not "
          "lose an ack of a stored report, so they tested nothing")
    for c in counters:
        stored = sorted(v for v, _ in c.stored(AGENT))
        produced = sorted(v for v, _ in c.produced())
        check(stored == produced, "collector %s: produced %r, stored %r" % (
            c.name, produced, stored))
    subs = sorted(int(v) for v, _ in stored_values(h, AGENT, SUBMIT_INDICATOR))
    check(subs == sorted(submitted), "submitted %r, stored %r" % (sorted(submitted), subs))
    log = agent_d.log_text()
    print("  %d reports stored, %d submits, %d DUPLICATE acks; proxy: %d connections, %d cuts, "
          "%d pauses, %d/%d bytes up/down; agent logged %d disconnects, %d connects" % (
              len(seqs), len(submitted), dups, proxy.accepted, proxy.cuts, proxy.pauses,
              proxy.bytes_up, proxy.bytes_down, log.count("disconnected from"),
              log.count("connected to")))


if __name__ == "__main__":
    run_tests(globals())
