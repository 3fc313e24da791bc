#!/usr/bin/env python3
"""kill -9 the agent while a deep spool drains: acknowledged entries that
were marked dead (mode 0000) but not yet deleted are removed by the next
start and never sent again; nothing is lost, nothing stored twice.

The spool is filled with 5,000 real reports (tests/agent_spoolfill: the
agent's own code, one measurement each, its index as the value) while the
aggregator is up but the agent not yet running. Then, up to five times:
start the agent, wait until pending/ holds dead entries (the drain is
under way and removals are deferred), wait a random moment more, kill -9,
and record which entries were dead and which were live. Each next start
must have removed every dead entry before it says "ready" (they were
acked: sending them again would be a waste, and they are not counted).

At the end a last run drains the rest and stops with SIGTERM:
- the store holds exactly the 5,000 sequences and values 0..4999, once each;
- pending/, rejected/ and corrupt/ are empty;
- no entry that was dead at a kill was answered DUPLICATE in the next run
  (the agent logs each DUPLICATE answer): it was never sent again. Other
  DUPLICATEs are expected - reports in flight at a kill, and resends after
  `resend_timeout` when the aggregator is slow (valgrind).

RSL_TEST_SEED=N repeats a particular sequence of kill moments.
"""
import os
import re
import stat
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import KillNemesis  # noqa: E402
from harness import (SLOW, check, find_binary, ingest_counters, run, run_tests,  # noqa: E402
                     spool_entry_path, spool_names, wait_for)

AGENT = "DEU-BMI-01"
REPORTS = 5000
KILLS = 5
DUPLICATE_LINE = re.compile(r"report (\d+) DUPLICATE")


def dead_and_live(agent):
    """(dead, live) sequences in pending/: dead = mode 0000 (acked, not yet
    deleted)."""
    d = os.path.join(agent["spool"], "pending")
    dead, live = set(), set()
    for n in spool_names(agent, "pending"):
        if not (n.endswith(".rpt") and n[:-4].isdigit()):
            continue
        try:
            st = os.stat(os.path.join(d, n))
        except FileNotFoundError:
            continue  # deleted meanwhile
        (dead if stat.S_IMODE(st.st_mode) == 0 else live).add(int(n[:-4]))
    return dead, live


def stored_count(h):
    """Filled reports stored (the static collector's are not counted)."""
    if not os.path.exists(h.agg["store"]):
        return 0
    return h.store_query(
        "SELECT COUNT(*) FROM reports r JOIN measurements m ON m.report_id = r.id"
        " WHERE r.agent_id = ? AND m.indicator = 'energy.oil_stock_days'", (AGENT,))[0][0]


def test_agent_kill9_during_a_deep_drain(h):
    nemesis = KillNemesis("these kill moments")
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    # One quiet collector (an hour apart): the spool holds the filled reports.
    h.write_agent_conf(agent, {"cog": {"type": "static", "interval": "1h",
                                       "indicator": "gov.cog_exercise_age_months",
                                       "value": "7", "unit": "months"}})
    r = run([find_binary("agent_spoolfill"), agent["conf"], str(REPORTS)], timeout=300 * SLOW)
    check(r.returncode == 0, "agent_spoolfill exited %d: %s" % (r.returncode, r.stderr))
    h.start_aggregator()

    previous_dead = set()
    killed_with_dead = 0
    runs = []  # (daemon, sequences dead when the run before it was killed)
    for k in range(1, KILLS + 1):
        d = h.start_agent(agent)
        runs.append((d, previous_dead))
        # Removed at open, before "ready": none of them may still be there.
        back = [q for q in previous_dead if os.path.exists(spool_entry_path(agent, q))]
        check(not back, "run %d: %d acked (dead) entries from the kill before are still in "
              "pending/ after the start, e.g. %s" % (k, len(back), sorted(back)[:5]))
        if previous_dead:
            d.wait_log("acknowledged entr", timeout=5 * SLOW)
        # Kill once removals are being deferred (dead entries exist), a
        # random moment later; if the drain is already over, stop killing.
        try:
            wait_for(lambda: dead_and_live(agent)[0] or stored_count(h) >= REPORTS,
                     "dead entries in pending/", timeout=60 * SLOW, interval=0.01)
        except AssertionError:
            pass
        nemesis.sleep(0.0, 0.15)
        if stored_count(h) >= REPORTS and not dead_and_live(agent)[0]:
            d.stop()
            break
        nemesis.kill(d)
        previous_dead, live = dead_and_live(agent)
        if previous_dead:
            killed_with_dead += 1
        print("  kill %d: %d dead, %d live entries left; %d stored" %
              (k, len(previous_dead), len(live), stored_count(h)))
    check(killed_with_dead >= 1, "no kill came while dead entries were waiting (the drain was "
          "too quick to test anything)")

    final = h.start_agent(agent)
    runs.append((final, previous_dead))
    back = [q for q in previous_dead if os.path.exists(spool_entry_path(agent, q))]
    check(not back, "final run: %d dead entries still there after the start" % len(back))
    wait_for(lambda: stored_count(h) >= REPORTS and not dead_and_live(agent)[1],
             "all %d reports stored and no live entry pending" % REPORTS, timeout=120 * SLOW)
    check(final.stop() == 0, "the agent did not exit 0 on SIGTERM")
    time.sleep(0.1)

    # Close removes what the reaper had not got to.
    for sub in ("pending", "rejected", "corrupt"):
        left = spool_names(agent, sub)
        check(not left, "%s/ is not empty after the drain: %d files, e.g. %s" %
              (sub, len(left), left[:5]))
    rows = h.store_query(
        "SELECT r.sequence, m.value FROM reports r JOIN measurements m ON m.report_id = r.id"
        " WHERE r.agent_id = ? AND m.indicator = 'energy.oil_stock_days' ORDER BY r.sequence",
        (AGENT,))
    seqs = [s for s, _ in rows]
    values = sorted(int(v) for _, v in rows)
    check(len(seqs) == REPORTS and len(set(seqs)) == REPORTS,
          "%d reports stored (%d distinct sequences), wanted %d" %
          (len(seqs), len(set(seqs)), REPORTS))
    check(values == list(range(REPORTS)), "stored values are not 0..%d exactly once (%d values, "
          "%d distinct)" % (REPORTS - 1, len(values), len(set(values))))
    counters, _ = ingest_counters(h)
    print("  %d kills (%d with dead entries waiting); DUPLICATE answers: %d" %
          (nemesis.kills, killed_with_dead, counters.get("duplicate", 0)))
    for i, (daemon, dead_before) in enumerate(runs, start=1):
        answered = {int(m.group(1)) for m in DUPLICATE_LINE.finditer(daemon.log_text())}
        again = sorted(answered & dead_before)
        check(not again, "run %d sent %d entries again that were acked and dead at the kill "
              "before, e.g. %s" % (i, len(again), again[:5]))


if __name__ == "__main__":
    run_tests(globals())
