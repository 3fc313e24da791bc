#!/usr/bin/env python3
"""The agent's spool: its size cap with both full-spool policies, and
corrupt entries.

Spool cap: with the aggregator down and spool_max_mb = 1, a collector
making ~100 KB reports five times a second fills the spool. The stated
policy must apply - drop_oldest keeps the newest reports and loses the
oldest, refuse_new keeps the oldest and refuses the newest - and the drop
counter `resilience-agent status --json` shows must equal what was lost,
which the test counts when the aggregator comes back: every value the
collector produced is either stored or one of the drops.

Corrupt entries: bytes flipped or a file cut short in pending/ while the
agent is stopped are moved to corrupt/ with a log line; start-up is not
blocked and the rest is delivered.
"""
import os
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SLOW, CounterCollector, agent_status, check, counters_quiet,  # noqa: E402
                     run_tests, spool_entry_path, spool_names, spool_pending_bytes,
                     spool_sequences, status_number, stop_counters, wait_for)

AGENT = "DEU-BMI-01"
CAP_BYTES = 1024 * 1024  # spool_max_mb = 1 (read as MiB; 10^6 would be stricter)
DROP_NAMES = ("drops",)
DEPTH_NAMES = ("spool_depth",)


def fill_spool(h, policy):
    """Run the agent with the aggregator down until the cap dropped reports;
    returns (agent, counter, drop count shown by status)."""
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    big = CounterCollector(h, "big", "energy.oil_stock_days", "days", pad=1400)
    h.write_agent_conf(agent, {big.name: big.conf(interval="200ms")},
                       extra_agent="spool_max_mb = 1\nspool_full_policy = %s" % policy)
    d = h.start_agent(agent)

    def drops():
        return status_number(agent_status(h, agent), *DROP_NAMES)
    wait_for(lambda: drops() >= 8, "the spool cap to drop 8 reports", timeout=120 * SLOW,
             interval=0.5)
    stop_counters(h)
    counters_quiet(h, [big])
    check(d.alive(), "the agent died with a full spool")
    check(spool_pending_bytes(agent) <= CAP_BYTES, "pending/ holds %d bytes, over the cap of "
          "%d" % (spool_pending_bytes(agent), CAP_BYTES))
    # The status file is rewritten by the daemon from time to time: wait
    # until it agrees with the spool, then take its drop count.
    st = wait_for(lambda: (lambda st: st if status_number(st, *DEPTH_NAMES) ==
                           len(spool_sequences(agent)) else None)(agent_status(h, agent)),
                  "status to show the spool depth %d" % len(spool_sequences(agent)),
                  interval=0.5)
    shown = status_number(st, *DROP_NAMES)
    check(isinstance(shown, int) and shown >= 8, "status drops %r" % (shown,))
    text = d.log_text()
    check("drop" in text.lower() or "refus" in text.lower(),
          "the agent never logged a drop:\n%s" % text[-2000:])
    return agent, big, shown


def deliver_and_count(h, agent, big):
    """Start the aggregator, wait for the spool to drain; returns
    (stored values, lost values) in produced order."""
    h.start_aggregator()
    wait_for(lambda: not spool_sequences(agent), "the spool to drain", timeout=120 * SLOW)
    produced = [v for v, _ in big.produced()]
    stored = [v for v, _ in big.stored(AGENT)]
    check(len(stored) == len(set(stored)), "values stored twice: %r" % stored)
    check(set(stored) <= set(produced), "stored values never produced: %r" % (
        sorted(set(stored) - set(produced))))
    check(spool_names(agent, "rejected") == [], "rejected: %r" % spool_names(agent, "rejected"))
    lost = [v for v in produced if v not in set(stored)]
    return sorted(stored), sorted(lost)


def test_spool_cap_drop_oldest_loses_the_oldest_and_counts_them(h):
    agent, big, shown = fill_spool(h, "drop_oldest")
    stored, lost = deliver_and_count(h, agent, big)
    check(len(lost) == shown, "status said %d dropped, but %d values never arrived: %r" % (
        shown, len(lost), lost))
    check(stored and lost and max(lost) < min(stored), "drop_oldest: lost %r, kept %r (the "
          "oldest must go, the newest stay)" % (lost, stored))


def test_spool_cap_refuse_new_keeps_the_oldest_and_counts_refusals(h):
    agent, big, shown = fill_spool(h, "refuse_new")
    stored, lost = deliver_and_count(h, agent, big)
    check(len(lost) == shown, "status said %d dropped, but %d values never arrived: %r" % (
        shown, len(lost), lost))
    check(stored and lost and max(stored) < min(lost), "refuse_new: kept %r, lost %r (the "
          "oldest must stay, the newest be refused)" % (stored, lost))


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def test_corrupt_entries_are_quarantined_and_the_rest_delivered(h):
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    c = CounterCollector(h, "oil", "energy.oil_stock_days", "days", pad=20)
    h.write_agent_conf(agent, {c.name: c.conf(interval="200ms")})
    d = h.start_agent(agent)  # the aggregator is not running yet
    wait_for(lambda: len(spool_sequences(agent)) >= 8, "eight reports in pending/")
    stop_counters(h)
    counters_quiet(h, [c])
    rc = d.stop()
    check(rc == 0, "agent exited %r on SIGTERM" % (rc,))

    seqs = spool_sequences(agent)
    victims = {seqs[1]: "payload byte flipped", seqs[3]: "header byte flipped",
               seqs[5]: "cut short"}
    p = spool_entry_path(agent, seqs[1])
    flip(p, os.path.getsize(p) // 2 + 7)
    flip(spool_entry_path(agent, seqs[3]), 20)
    p = spool_entry_path(agent, seqs[5])
    os.truncate(p, os.path.getsize(p) // 2)
    stray = os.path.join(agent["spool"], "pending", "notes.txt")
    with open(stray, "w") as f:
        f.write("not a spool entry\n")

    h.start_aggregator()
    d2 = h.start_agent(agent)
    wait_for(lambda: not spool_sequences(agent) and not os.path.exists(stray),
             "pending/ to empty", timeout=90 * SLOW)
    corrupt = spool_names(agent, "corrupt")
    for seq, what in victims.items():
        check(any(n.startswith("%020d" % seq) for n in corrupt),
              "entry %d (%s) not in corrupt/: %r" % (seq, what, corrupt))
        check(("%020d" % seq) in d2.log_text() or (" %d" % seq) in d2.log_text(),
              "no log line names entry %d (%s)" % (seq, what))
    check(any("notes.txt" in n for n in corrupt), "the stray file is not in corrupt/: %r" % (
        corrupt,))

    stored_seqs = h.store_reports(AGENT)
    for seq in seqs:
        if seq in victims:
            check(seq not in stored_seqs, "corrupt entry %d was delivered" % seq)
        else:
            check(seq in stored_seqs, "intact entry %d was not delivered" % seq)
    values = [v for v, _ in c.stored(AGENT)]
    check(len(values) == len(set(values)), "values stored twice: %r" % values)
    lost = [v for v, _ in c.produced() if v not in set(values)]
    check(len(lost) == len(victims), "values lost %r; only the %d corrupt entries may be" % (
        lost, len(victims)))
    check(d2.alive(), "the agent died")


def test_report_over_the_message_limit_is_refused_not_spooled(h):
    """A report larger than max_message_bytes would make ZeroMQ drop it and
    disconnect the agent for ever: it is refused before the spool, logged
    and counted; everything else keeps flowing."""
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    fat = CounterCollector(h, "fat", "energy.gas_storage_fill_pct", "pct", pad=200)
    small = CounterCollector(h, "small", "energy.oil_stock_days", "days")
    h.write_agent_conf(agent, {fat.name: fat.conf(interval="500ms"),
                               small.name: small.conf(interval="500ms")},
                       extra_agent="max_message_bytes = 4096")
    h.start_aggregator()
    d = h.start_agent(agent)
    wait_for(lambda: len(fat.produced()) >= 3 and len(small.stored(AGENT)) >= 3,
             "three runs of the fat collector and three small reports stored")
    stop_counters(h)
    counters_quiet(h, [fat, small])
    wait_for(lambda: not spool_sequences(agent), "the spool to drain")
    check(fat.stored(AGENT) == [], "an oversized report reached the aggregator")
    check(sorted(v for v, _ in small.stored(AGENT)) == sorted(v for v, _ in small.produced()),
          "small reports were lost next to the oversized ones")
    refused = len(fat.produced())
    st = wait_for(lambda: (lambda st: st if st["drops"] == refused else None)(
        agent_status(h, agent)), "status to count %d refused reports" % refused, interval=0.5)
    check(st["drops_detail"]["refused"] == refused, "drops_detail %r" % st["drops_detail"])
    check([l for l in d.log_text().splitlines() if "fat" in l and " debug " not in l
           and ("large" in l or "big" in l or "max_message_bytes" in l)],
          "no log line says the fat collector's report was too large")
    check(d.alive(), "the agent died")


if __name__ == "__main__":
    run_tests(globals())
