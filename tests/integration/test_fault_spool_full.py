#!/usr/bin/env python3
"""The agent's spool runs out of disk space (issue 8).

The spool folder is a small tmpfs (faults.SmallFs). The agent collects
every second (two counter collectors: every value identifiable). The
aggregator is stopped so reports pile up in pending/, then a filler file
takes every free byte of the spool's file system. What must hold:

- the agent stays up and says clearly why reports are being lost (a log
  line with "No space left on device" for each lost report), and does not
  spin (its CPU use while the disk is full stays far below a busy loop);
- nothing it had accepted before (every sequence seen in pending/) is
  lost: still pending while the aggregator is down, and delivered once it
  is back, even before the space returns (an ack frees a file, it needs
  none);
- `resilience-agent submit` on the full disk fails with exit 1 and a
  message naming the cause, not a crash, and spools nothing;
- once the space is back, everything collected from then on is delivered;
  a counter value is missing from the store only if it was produced while
  the disk was full, and each such loss was logged;
- nothing is stored twice, nothing rejected (no sequence number reused
  after a failed write), nothing quarantined, the spool drains.

Needs root to mount the tmpfs; skipped loudly otherwise.
"""
import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import PendingSampler, SmallFs, skip_all, small_fs_unavailable, wait_full  # noqa: E402
from harness import (SLOW, SANITIZER_MARKERS, CounterCollector, agent_cli,  # noqa: E402
                     agent_status, check, counters_quiet, run_tests, spool_names,
                     spool_sequences, status_number, stop_counters, wait_for)

AGENT = "DEU-BMI-01"
SPOOL_FS = "1m"
NOSPACE = "No space left on device"


def losses_logged(text):
    """Log lines saying a report was lost for lack of space: "cannot spool
    report N: ...: No space left on device; report dropped" or "cannot take
    a sequence number: ...; N measurements dropped" (not the follow-up
    "cannot save the drop counters yet")."""
    return sum(1 for l in text.splitlines() if NOSPACE in l and (
        "report dropped" in l or "measurement dropped" in l or "measurements dropped" in l))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_full_spool_loses_nothing_accepted_and_recovers(h):
    h.setup_aggregator()
    agent = h.add_agent(AGENT, "DEU", "Federal Ministry of the Interior")
    counters = [CounterCollector(h, "oil", "energy.oil_stock_days", "days"),
                CounterCollector(h, "blood", "health.blood_stock_days", "days")]
    h.write_agent_conf(agent, {c.name: c.conf(interval="1s") for c in counters})
    with SmallFs(agent["spool"], SPOOL_FS, keep_on_failure=h.path("spool-kept")) as fs, \
            PendingSampler(agent) as sampler:
        h.start_aggregator()
        d = h.start_agent(agent)
        wait_for(lambda: all(c.stored(AGENT) for c in counters), "the first reports")

        # Aggregator away: reports pile up in pending/.
        check(h.aggregator.stop() == 0, "the aggregator did not exit 0 on SIGTERM")
        wait_for(lambda: len(spool_sequences(agent)) >= 4, "reports piling up in pending/")

        # Disk full.
        log_at = len(d.log_text())
        produced_at_fill = {c.name: len(c.produced()) for c in counters}
        wait_full(fs)
        accepted_before = sampler.sample() | set(spool_sequences(agent))
        wait_for(lambda: losses_logged(d.log_text()[log_at:]) >= 4,
                 "the agent to log four reports it could not spool for lack of space",
                 timeout=60 * SLOW)
        check(d.alive(), "the agent died on a full disk:\n%s" % d.log_text()[-3000:])
        # Not spinning: over a few seconds of full disk, far less CPU than
        # a busy loop (which would take about one second per second).
        cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
        time.sleep(4 * SLOW)
        cpu_rate = (cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t0)
        check(cpu_rate < 0.5, "the agent used %.2f CPU seconds per second while the disk was "
              "full: spinning?" % cpu_rate)
        still = set(spool_sequences(agent))
        check(accepted_before <= still, "reports accepted before the disk filled are gone "
              "from pending/ while the aggregator is down: %r" % sorted(accepted_before - still))
        for line in d.log_text()[log_at:].splitlines():
            if NOSPACE in line:
                print("  agent on a full disk: %s" % line.strip()[:300])
                break

        # A manual submit on the full disk: a clear error, exit 1.
        r = agent_cli(h, agent, "submit", "food.self_sufficiency_pct=77:pct")
        check(r.returncode == 1, "submit on a full disk exited %d (wanted 1): %s" % (
            r.returncode, r.stderr))
        check(NOSPACE in r.stderr or "full" in r.stderr.replace(h.tmp, ""),
              "submit on a full disk does not say why: %r" % r.stderr)
        for m in SANITIZER_MARKERS:
            check(m not in r.stderr, "submit: %r" % m)
        print("  submit on a full disk: %s" % r.stderr.strip()[:300])
        new = set(spool_sequences(agent)) - still
        check(not new, "the failed submit spooled %r" % sorted(new))

        # kill -9 on the full disk, and start again still full: the agent
        # comes up (its spool needs no new space to open) and keeps what
        # it has.
        first_log = d.log_text()
        d.kill9()
        fs.fill()
        d = h.start_agent(agent)
        wait_for(lambda: losses_logged(d.log_text()) >= 2,
                 "the restarted agent to log reports it could not spool", timeout=60 * SLOW)
        check(accepted_before <= set(spool_sequences(agent)),
              "reports accepted before the disk filled are gone after a restart on the full "
              "disk: %r" % sorted(accepted_before - set(spool_sequences(agent))))

        # The aggregator returns while the disk is still full: what was
        # accepted goes out (removing an acked entry needs no space).
        h.start_aggregator()
        wait_for(lambda: accepted_before <= set(h.store_reports(AGENT)),
                 "the reports accepted before the disk filled to arrive, disk still full",
                 timeout=120 * SLOW)
        check(d.alive(), "the agent died")

        # Space returns: collection and delivery go on.
        fs.free()
        produced_at_free = {c.name: len(c.produced()) for c in counters}
        free_at = len(d.log_text())
        wait_for(lambda: all(len([v for v, _ in c.stored(AGENT) if v > produced_at_free[c.name]])
                             >= 2 for c in counters),
                 "new reports from every collector after the space came back",
                 timeout=120 * SLOW)
        stop_counters(h)
        counters_quiet(h, counters)
        wait_for(lambda: not spool_sequences(agent), "the spool to drain", timeout=120 * SLOW)
        check(d.alive(), "the agent died")
        rc = d.stop()
        check(rc == 0, "the agent exited %r on SIGTERM" % (rc,))
        log = d.log_text()

        seqs = h.store_reports(AGENT)
        check(len(seqs) == len(set(seqs)), "a sequence stored twice: %r" % sorted(
            s for s in set(seqs) if seqs.count(s) > 1))
        lost = sorted(sampler.seen - set(seqs))
        check(not lost, "spooled but never stored: %r" % lost)
        check(spool_names(agent, "rejected") == [],
              "rejected (a sequence reused?): %r" % spool_names(agent, "rejected"))
        check(spool_names(agent, "corrupt") == [],
              "quarantined: %r" % spool_names(agent, "corrupt"))
        for dm in h.daemons:
            check("REJECTED" not in dm.log_text(), "%s logged REJECTED" % dm.name)
        n_logged = losses_logged(first_log[log_at:]) + losses_logged(log[:free_at])
        total_missing = 0
        for c in counters:
            produced = [v for v, _ in c.produced()]
            stored_vals = [v for v, _ in c.stored(AGENT)]
            check(len(stored_vals) == len(set(stored_vals)),
                  "collector %s: a value stored twice" % c.name)
            missing = sorted(set(produced) - set(stored_vals))
            # Values are 1, 2, 3 ...: those produced while the disk was full
            # are (produced_at_fill, produced_at_free]; the run in progress
            # at the fill may have logged its value just before it.
            lo, hi = produced_at_fill[c.name], produced_at_free[c.name]
            outside = [v for v in missing if not lo <= v <= hi]
            check(not outside, "collector %s: values %r lost although the disk was not full "
                  "(full for values %d..%d)" % (c.name, outside, lo, hi))
            total_missing += len(missing)
        check(total_missing <= n_logged, "%d counter values lost but only %d losses "
              "logged" % (total_missing, n_logged))
        # ... and counted: the drop counters (<spool>/counters, written once
        # there is room again) include every report the last agent lost to
        # the full disk (the first one's count, never written, died with
        # its kill -9).
        lost_by_last = losses_logged(log[:free_at])
        refused = status_number(agent_status(h, agent), "refused", "drops.refused")
        check(lost_by_last > 0, "the restarted agent logged no lost report")
        check(refused >= lost_by_last, "status counts %r refused reports, but the restarted "
              "agent alone lost %d to the full disk" % (refused, lost_by_last))
        print("  %d reports stored; %d counter values lost while the disk was full, %d "
              "losses logged, %d counted refused by the last agent; CPU while full %.2f s/s" % (
                  len(seqs), total_missing, n_logged, refused, cpu_rate))


if __name__ == "__main__":
    reason = small_fs_unavailable()
    if reason:
        skip_all(reason)
    run_tests(globals())
