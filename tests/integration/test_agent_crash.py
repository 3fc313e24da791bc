#!/usr/bin/env python3
"""kill -9 the agent at random moments, 20 times, while it collects every
second; afterwards every report it ever spooled is stored at the aggregator
exactly once and no sequence number was used twice.

What the test can know, and how:
- Every report is identifiable: two counter collectors (harness
  CounterCollector) report 1, 2, 3 ... and log each value with the run
  (RSL_RUN) it was produced under; a static collector adds reports that are
  identified only by their sequence; `resilience-agent submit` calls, some
  while the daemon runs and some while it is dead, add reports with unique
  values.
- The aggregator answers during half the runs; in the others it is frozen
  (SIGSTOP) at a random moment, so reports are sent but not acked when the
  kill comes, or down for the whole run, so they pile up unsent.
- What was spooled: a sampler thread lists pending/ all the time, and after
  every kill the test lists pending/ again before the next start. Every
  sequence ever seen there must end up in the store.
- The counter after each kill (<spool>/sequence), so each missing sequence
  can be placed in the run that reserved it.

The checks, after a final run has drained the spool:
1. every sequence ever seen in pending/ is stored; nothing is left in
   pending/, nothing was rejected (a reused sequence with different bytes is
   rejected as equivocation) or quarantined;
2. every stored counter value and every submitted value is stored exactly
   once (a report rebuilt under a new number would show twice); every
   successful submit arrived;
3. a counter value produced but never stored is explainable only as the
   last output of its collector in a run that was killed (the agent died
   before it could spool it): at most one per collector and killed run,
   and above every value of that collector stored from that run;
4. a sequence number below the final counter that is not stored is
   explainable only as reserved but never spooled: it lies in a killed run's
   range of numbers and above every number that run's daemon got stored.

RSL_TEST_SEED=N repeats a particular sequence of kill moments (the kill
nemesis and the pending/ sampler come from faults.py).
"""
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import KillNemesis, PendingSampler  # noqa: E402
from harness import (SLOW, CounterCollector, agent_cli, check, counters_quiet,  # noqa: E402
                     run_tests, sequence_file, spool_names, spool_sequences, stop_counters,
                     stored_values, wait_for)

KILLS = 20
AGENT = "DEU-BMI-01"
SUBMIT_INDICATOR = "food.self_sufficiency_pct"


def test_agent_kill9_twenty_times_loses_and_repeats_nothing(h):
    nemesis = KillNemesis("these kill moments")
    rng = nemesis.rng  # every random choice below, so one seed repeats the run

    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    counters = [CounterCollector(h, "oil", "energy.oil_stock_days", "days"),
                CounterCollector(h, "blood", "health.blood_stock_days", "days")]
    collectors = {c.name: c.conf(interval="1s") for c in counters}
    collectors["cog"] = {"type": "static", "interval": "1s",
                         "indicator": "gov.cog_exercise_age_months", "value": "7", "unit": "months"}
    h.write_agent_conf(agent, collectors)
    h.start_aggregator()

    sampler = PendingSampler(agent)
    sampler.start()
    runs = []          # [(run name, first possible sequence, counter after the kill)]
    submitted = []     # values whose submit exited 0
    next_submit = [1000]

    def submit(when):
        v = next_submit[0]
        next_submit[0] += 1
        r = agent_cli(h, agent, "submit", "%s=%d:pct" % (SUBMIT_INDICATOR, v))
        check(r.returncode == 0, "submit (%s) exited %d: %s" % (when, r.returncode, r.stderr))
        submitted.append(v)

    try:
        # What the aggregator does during a run: answers (8 runs), is frozen
        # by SIGSTOP at a random moment (6 runs: reports are sent but not
        # acked when the kill comes), or is down for the whole run (6 runs:
        # reports pile up unsent in pending/). Shuffled, but each mode
        # always occurs.
        modes = ["up"] * 8 + ["frozen"] * 6 + ["down"] * 6
        rng.shuffle(modes)
        for k, mode in enumerate(modes[:KILLS], start=1):
            if mode == "down":
                check(h.aggregator.stop() == 0, "the aggregator did not exit 0 on SIGTERM")
            begin = sequence_file(agent) or 1
            d = h.start_agent(agent, wait_ready=False, env={"RSL_RUN": str(k)})
            # Mostly kill while it collects and sends; sometimes during
            # start-up (spool open, tmp/ clean-up, counter raise).
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                d.wait_log("ready")
                time.sleep(rng.uniform(0.0, 1.5))
                if mode == "frozen":
                    h.aggregator.signal(signal.SIGSTOP)
                if rng.random() < 0.3:
                    submit("daemon running")
                time.sleep(rng.uniform(0.2, 1.5))
            check(d.alive(), "run %d: the agent died by itself:\n%s" % (k, d.log_text()[-3000:]))
            nemesis.kill(d)
            after = sequence_file(agent) or 1
            runs.append((str(k), begin, after))
            sampler.sample()
            if mode == "frozen":
                h.aggregator.signal(signal.SIGCONT)
            elif mode == "down":
                h.start_aggregator()
            if rng.random() < 0.3:
                submit("daemon dead")

        # Final run: stop the counters, let everything drain.
        begin = sequence_file(agent) or 1
        final = h.start_agent(agent, env={"RSL_RUN": "final"})
        stop_counters(h)
        counters_quiet(h, counters)

        # Everything numbered so far has left pending/ (acked - or lost,
        # which the checks below find); the static collector goes on.
        quiet = sequence_file(agent)
        wait_for(lambda: not [q for q in spool_sequences(agent) if q < quiet],
                 "every report numbered below %d to leave pending/" % quiet, timeout=120 * SLOW)
        # The static collector keeps reporting until SIGTERM; what it
        # spooled in the last moment may stay pending for the next start.
        rc = final.stop()
    finally:
        sampler.stop()

    check(rc == 0, "the final agent exited %r on SIGTERM" % (rc,))
    check(nemesis.kills == KILLS, "%d kills delivered, wanted %d" % (nemesis.kills, KILLS))
    end = sequence_file(agent)
    runs.append(("final", begin, end))

    stored_seqs = h.store_reports(AGENT)
    stored = set(stored_seqs)
    leftovers = set(spool_sequences(agent))
    present = stored | leftovers

    # 1. Everything spooled arrived (or is still pending after the last
    #    SIGTERM); nothing rejected or quarantined.
    check(len(stored_seqs) == len(stored), "a sequence stored twice: %r" % stored_seqs)
    lost = sorted(sampler.seen - present)
    check(not lost, "spooled but neither stored nor pending: %r" % lost)
    check(len(leftovers) <= 3, "%d reports still pending after the final run drained and "
          "stopped: %r" % (len(leftovers), sorted(leftovers)))
    check(spool_names(agent, "rejected") == [],
          "reports were rejected (a reused sequence?): %r" % spool_names(agent, "rejected"))
    check(spool_names(agent, "corrupt") == [],
          "entries were quarantined after kill -9: %r" % spool_names(agent, "corrupt"))
    for d in h.daemons:
        check("REJECTED" not in d.log_text(), "%s logged REJECTED" % d.name)

    # 2. Exactly once, by content.
    subs = [int(v) for v, _ in stored_values(h, AGENT, SUBMIT_INDICATOR)]
    check(sorted(subs) == sorted(set(subs)), "a submitted value stored twice: %r" % sorted(subs))
    check(set(submitted) <= set(subs), "submits lost: %r" % sorted(set(submitted) - set(subs)))
    check(set(subs) <= set(submitted), "stored submit values nobody submitted: %r" % sorted(
        set(subs) - set(submitted)))
    daemon_seqs = present - {s for _, s in stored_values(h, AGENT, SUBMIT_INDICATOR)}

    killed_runs = {name for name, _, _ in runs if name != "final"}
    for c in counters:
        produced = c.produced()
        values = [v for v, _ in c.stored(AGENT)]
        check(len(values) == len(set(values)), "collector %s: a value stored twice: %r" % (
            c.name, sorted(v for v in set(values) if values.count(v) > 1)))
        run_of = dict(produced)
        check(set(values) <= set(run_of), "collector %s: stored values it never produced: %r" % (
            c.name, sorted(set(values) - set(run_of))))
        # 3. A produced value missing from the store is the tail of a killed run.
        for run in sorted({r for _, r in produced}):
            mine = [v for v, r in produced if r == run]
            got = [v for v in mine if v in set(values)]
            missing = [v for v in mine if v not in set(values)]
            if not missing:
                continue
            check(run in killed_runs, "collector %s, run %s (not killed): values produced but "
                  "never stored: %r" % (c.name, run, missing))
            check(len(missing) <= 1, "collector %s, run %s: %d values produced but never "
                  "stored (%r); a kill can lose at most the one being collected" % (
                      c.name, run, len(missing), missing))
            if got:
                check(min(missing) > max(got), "collector %s, run %s: value %r lost while a "
                      "later value %r of the same run arrived" % (c.name, run, missing, max(got)))

    # 4. Every gap in the sequence numbers was reserved by a killed run and
    #    never spooled: it is above everything that run's daemon got stored.
    check(end is not None and end > max(present), "final counter %r is not above the highest "
          "sequence in use %r" % (end, max(present)))
    gaps = [g for g in range(1, end) if g not in present]
    for g in gaps:
        owner = [(name, b, a) for name, b, a in runs if b <= g < a]
        check(owner, "sequence %d is missing and belongs to no run (runs: %r)" % (g, runs))
        name, b, a = owner[0]
        in_run = [s for s in daemon_seqs if b <= s < a]
        if in_run:
            check(g > max(in_run), "sequence %d (run %s, numbers %d..%d) is missing although "
                  "the same run's %d arrived: spooled and lost?" % (g, name, b, a - 1,
                                                                    max(in_run)))
    print("  %d reports stored, %d sequence gaps (numbers reserved by a killed run and never "
          "spooled), %d submits, %d reports seen in pending/" % (
              len(stored), len(gaps), len(submitted), len(sampler.seen)))


if __name__ == "__main__":
    run_tests(globals())
