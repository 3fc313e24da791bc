#!/usr/bin/env python3
"""A recovery storm: more agents with deep spools than the aggregator's
queue takes at once. Every report is delivered once, and the agents share
the queue instead of flooding it (issue 4).

Eight agents (eight nations), each with 400 real reports already spooled
(tests/agent_spoolfill: the agent's own code), start together against an
aggregator whose `max_queue` is 64, with the agent's default window (512).
What arrives beyond the queue is answered RETRY_LATER. The agent's
congestion window (agent/sender.h) starts at 32 reports and halves once per
round of RETRY_LATER, so the agents settle at their share of the queue.

Checked:
- all 3,200 reports stored exactly once each (values 0..399 per agent);
- pending/ empty everywhere;
- RETRY_LATER answers (resilience_reports_retry_later_total) fewer than
  the reports delivered. An agent that resends its whole backlog after each
  RETRY_LATER (the behaviour before the congestion window: every agent
  sent up to 512 at once) gets about 3,100 in the first second alone, and
  every round after it again;
- each agent halved its window at least once (it was told to) and logged
  the round, and no agent's pause grew beyond a few seconds: a round is one
  event at the aggregator, not one per report turned away;
- `resilience-agent status` shows the window now in use (JSON `window`,
  and in the text, below the configured 512 with the reason).
"""
import os
import re
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SLOW, agent_cli, agent_status, check, find_binary,  # noqa: E402
                     ingest_counters, run, run_tests, spool_names, wait_for)

NATIONS = ["BEL", "DEU", "DNK", "EST", "FIN", "FRA", "NLD", "POL"]
REPORTS = 400
MAX_QUEUE = 64
PAUSE_LINE = re.compile(r"aggregator busy \(RETRY_LATER[^)]*\): pausing ([0-9.]+)s, then at most "
                        r"(\d+) reports in flight \(was (\d+)\)")


def test_agents_share_a_full_queue(h):
    h.setup_aggregator(extra_ingest="max_queue = %d" % MAX_QUEUE, log_level="info")
    agents = []
    for n in NATIONS:
        a = h.add_agent("%s-STORM-01" % n, n, "Storm Ministry %s" % n)
        # One quiet collector (a day apart): the spool holds the filled reports.
        h.write_agent_conf(a, {"cog": {"type": "static", "interval": "24h",
                                       "indicator": "gov.cog_exercise_age_months",
                                       "value": "7", "unit": "months"}}, log="info")
        r = run([find_binary("agent_spoolfill"), a["conf"], str(REPORTS)], timeout=300 * SLOW)
        check(r.returncode == 0, "agent_spoolfill exited %d: %s" % (r.returncode, r.stderr))
        agents.append(a)
    h.start_aggregator()
    for a in agents:
        h.start_agent(a, wait_ready=False)
    for a in agents:
        a["daemon"].wait_log("ready")

    def filled():
        return h.store_query(
            "SELECT r.agent_id, r.sequence, m.value FROM reports r JOIN measurements m"
            " ON m.report_id = r.id WHERE m.indicator = 'energy.oil_stock_days'")

    wait_for(lambda: len(filled()) >= len(agents) * REPORTS and
             not any(spool_names(a, "pending") for a in agents),
             "all %d reports stored and every pending/ empty" % (len(agents) * REPORTS),
             timeout=300 * SLOW, interval=0.5)

    rows = filled()
    for a in agents:
        mine = [(s, v) for agent_id, s, v in rows if agent_id == a["id"]]
        seqs = [s for s, _ in mine]
        check(len(seqs) == REPORTS and len(set(seqs)) == REPORTS,
              "%s: %d reports stored (%d distinct), wanted %d once each" %
              (a["id"], len(seqs), len(set(seqs)), REPORTS))
        check(sorted(int(v) for _, v in mine) == list(range(REPORTS)),
              "%s: stored values are not 0..%d once each" % (a["id"], REPORTS - 1))

    counters, _ = ingest_counters(h)
    turned_away = counters.get("retry_later:queue_full", 0)
    print("  RETRY_LATER (queue full): %d for %d reports delivered" %
          (turned_away, len(agents) * REPORTS))
    check(turned_away > 0, "the queue never filled (nothing was tested)")
    check(turned_away < len(agents) * REPORTS,
          "%d RETRY_LATER answers for %d reports: the agents keep flooding the queue instead "
          "of sharing it" % (turned_away, len(agents) * REPORTS))

    for a in agents:
        rounds = [(float(p), int(now), int(was))
                  for p, now, was in PAUSE_LINE.findall(a["daemon"].log_text())]
        check(rounds, "%s logged no RETRY_LATER round although the queue was full" % a["id"])
        check(all(now <= max(was // 2, 1) for _, now, was in rounds),
              "%s: a round did not halve the window: %s" % (a["id"], rounds[:5]))
        longest = max(p for p, _, _ in rounds)
        check(longest <= 5.0, "%s paused %.1f s after RETRY_LATER: one event at the aggregator "
              "counted as many rounds (%d rounds logged)" % (a["id"], longest, len(rounds)))
        print("  %s: %d rounds, window %d at the last, longest pause %.2f s" %
              (a["id"], len(rounds), rounds[-1][1], longest))
    # The status shows the window in use (after 400 reports each it cannot
    # have reached the configured 512 even without a RETRY_LATER: what is
    # tested here is that it is shown, the same in JSON and text).
    def windows():
        got = []
        for a in agents:
            w = agent_status(h, a).get("window")
            if not isinstance(w, int):
                return None
            got.append(w)
        return got

    ws = wait_for(windows, "every agent's status to show its window", timeout=30 * SLOW)
    check(all(1 <= w < 512 for w in ws), "status windows %s: not within 1..511" % ws)
    low = agents[ws.index(min(ws))]
    text = agent_cli(h, low, "status", check_rc=0).stdout
    w = agent_status(h, low)["window"]
    check("at most %d now, window 512: the aggregator answered RETRY_LATER" % w in text,
          "text status of %s does not show its window %d and why:\n%s" % (low["id"], w, text))
    print("  status windows after the storm: %s" % ws)
    for a in agents:
        check(a["daemon"].stop() == 0, "%s did not exit 0 on SIGTERM" % a["id"])


if __name__ == "__main__":
    run_tests(globals())
