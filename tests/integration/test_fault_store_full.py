#!/usr/bin/env python3
"""The aggregator's store runs out of disk space while agents send (issue 8).

The store's folder is a small tmpfs (faults.SmallFs). Three reliable
senders (rsl_probe --until-acked: each report built and signed once and
resent with the very same bytes until ACCEPTED/DUPLICATE/REJECTED, every
ack logged) stream reports in; once some are stored, a filler file takes
every free byte, and keeps taking whatever frees up, for a while; then the
space comes back.

What must hold:
- while the disk is full the aggregator stays up, answers RETRY_LATER
  (nothing it could not commit is acked ACCEPTED), and says so in its log:
  a line naming the store and the cause ("database or disk is full");
- when space returns it goes on storing without a restart: all reports
  end up stored;
- every report any sender saw ACCEPTED is in the store exactly once (an
  ACCEPTED whose commit had failed is never resent, so it would be
  missing); no measurement row is duplicated;
- PRAGMA integrity_check is "ok" and `resilience-ctl audit` re-verifies
  every stored report from its signed bytes.

A second test does the same with the real agent: told RETRY_LATER, it
keeps its reports and delivers each exactly once when space returns.

Needs root to mount the tmpfs; skipped loudly otherwise.
"""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import SmallFs, skip_all, small_fs_unavailable, wait_full  # noqa: E402
from harness import (SLOW, CounterCollector, check, check_acked_stored_once,  # noqa: E402
                     counters_quiet,
                     parse_prometheus, run, run_tests, spool_names, spool_sequences,
                     stop_counters, wait_for, wrap_cmd)

AGENTS = 3
PER_AGENT = 1500
MEASURES = ("energy.oil_stock_days=95:days", "energy.gas_storage_fill_pct=81:pct",
            "health.hospital_autonomy_hours=80:hours")
# Room for the database and a WAL at its checkpoint size (aggregator/store.c
# checkpoints every 4096 pages, 16 MiB): a smaller file system is filled by
# the WAL alone, and nothing can be given back to it.
STORE_FS = "40m"


def stored(h):
    if not os.path.exists(h.agg["store"]):
        return 0
    (n,), = h.store_query("SELECT count(*) FROM reports")
    return n


def read_acks(h, agents):
    """{status: count} and the set of (agent, sequence) acked ACCEPTED,
    from the senders' logs so far, plus the RETRY_LATER details seen."""
    accepted, statuses, retry_details = set(), {}, {}
    for a in agents:
        try:
            f = open(h.path("acks-%s.log" % a["id"]))
        except FileNotFoundError:
            continue
        with f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 4)
                if len(parts) < 4 or parts[0] != "ACK":
                    continue
                statuses[parts[3]] = statuses.get(parts[3], 0) + 1
                if parts[3] == "ACCEPTED":
                    accepted.add((parts[1], int(parts[2])))
                if parts[3] == "RETRY_LATER":
                    d = parts[4] if len(parts) > 4 else ""
                    retry_details[d] = retry_details.get(d, 0) + 1
    return accepted, statuses, retry_details


def test_full_store_acks_nothing_it_could_not_commit_and_recovers(h):
    h.setup_aggregator(log_level="info")  # a debug line per report is too much here
    agents = [h.add_agent("NAT%d-MIN-01" % i, nation, "Ministry %d" % i)
              for i, nation in enumerate(("DEU", "FRA", "ITA"))]
    store_dir = os.path.dirname(h.agg["store"])
    probes = []
    with SmallFs(store_dir, STORE_FS, keep_on_failure=h.path("store-kept")) as fs:
        h.start_aggregator()
        try:
            for a in agents:
                out = open(h.path("acks-%s.log" % a["id"]), "w")
                err = open(h.path("probe-%s.err" % a["id"]), "w")
                cmd = [h.probe_bin, "--endpoint", h.agg["endpoint"],
                       "--server-key", h.agg["server_key"], "--curve-dir", a["keys"],
                       "--sign-key", os.path.join(a["keys"], "sign.key"), "--agent-id", a["id"],
                       "--nation", a["nation"], "--organisation", a["organisation"],
                       "--seq", "1", "--count", str(PER_AGENT), "--until-acked",
                       "--window", "16", "--timeout", str(int(3000 * SLOW)),
                       "--retry-delay", "200"]
                for m in MEASURES:
                    cmd += ["--measure", m]
                probes.append((a, subprocess.Popen(wrap_cmd(cmd), stdout=out, stderr=err,
                                                   stdin=subprocess.DEVNULL), out, err))
            wait_for(lambda: stored(h) >= 300, "300 reports stored before the disk fills",
                     timeout=120 * SLOW, interval=0.05)

            # Disk full: keep it full until the aggregator has said so and
            # the senders have been asked to retry a good many times.
            log_at = len(h.aggregator.log_text())
            wait_full(fs)
            full_since = time.monotonic()
            stored_when_full = stored(h)

            def refused_enough():
                fs.fill()  # take whatever SQLite freed meanwhile (WAL reset ...)
                _, statuses, _ = read_acks(h, agents)
                return statuses.get("RETRY_LATER", 0) >= 50
            wait_for(refused_enough, "the senders to be answered RETRY_LATER 50 times "
                     "while the store is full", timeout=120 * SLOW, interval=0.2)
            wait_for(lambda: "disk is full" in h.aggregator.log_text()[log_at:],
                     "the aggregator to log that its store is full")
            check(h.aggregator.alive(), "the aggregator died on a full disk:\n%s"
                  % h.aggregator.log_text()[-3000:])
            # A little longer, still full: many more batches fail.
            wait_for(lambda: fs.fill() is not None and time.monotonic() - full_since >= 5 * SLOW,
                     "five more seconds of full disk", interval=0.2)
            check(h.aggregator.alive(), "the aggregator died on a full disk")
            full_log = h.aggregator.log_text()[log_at:]
            full_seconds = time.monotonic() - full_since
            # Every failed batch is counted, but a disk that stays full is
            # not a log line per batch: the first at once, then one per 10 s.
            code, body = h.https("/metrics")
            check(code == 200, "GET /metrics: HTTP %d" % code)
            failed_batches = parse_prometheus(body).get(
                ("resilience_ingest_store_errors_total", ()), 0)
            fail_lines = [l for l in full_log.splitlines()
                          if "storing" in l and "failed, asking their agents to retry" in l]
            print("  %d failed batches in %.1f s of full disk, %d log lines about them"
                  % (failed_batches, full_seconds, len(fail_lines)))
            check(1 <= len(fail_lines) <= 2 + full_seconds / 10,
                  "%d log lines about failed batches in %.1f s: %r"
                  % (len(fail_lines), full_seconds, fail_lines[:5]))
            check(failed_batches >= len(fail_lines), "store_errors_total %r is below the %d "
                  "lines logged" % (failed_batches, len(fail_lines)))

            # kill -9 on the full disk and start again, still full: it
            # either comes up (and goes on refusing) or refuses to start
            # with a message naming the store - never a crash, never a
            # half-done recovery.
            h.aggregator.kill9()
            refused_before = read_acks(h, agents)[1].get("RETRY_LATER", 0)
            fs.fill()
            again = h.start_aggregator(wait_ready=False)
            wait_for(lambda: "ready" in again.log_text() or not again.alive(),
                     "the aggregator restarted on a full disk to be ready or to exit")
            restarted_full = "ready" in again.log_text()
            if not restarted_full:
                again.expected_dead = True
                check(again.proc.returncode == 1, "the aggregator restarted on a full disk "
                      "exited %r (wanted 1):\n%s" % (again.proc.returncode,
                                                      again.log_text()[-2000:]))
                check(h.agg["store"] in again.log_text(), "the start-up failure on a full disk "
                      "does not name the store:\n%s" % again.log_text()[-2000:])
                print("  restart on a full disk refused: %s" % again.log_text().strip()[-300:])
            else:
                wait_for(lambda: fs.fill() is not None and read_acks(h, agents)[1].get(
                    "RETRY_LATER", 0) >= refused_before + 50,
                    "the restarted aggregator to go on refusing (50 more RETRY_LATER)")
                check("disk is full" in again.log_text(), "the restarted aggregator does not "
                      "log that its store is full")
                print("  restarted on a full disk and kept answering RETRY_LATER")
            stored_while_full = stored(h) - stored_when_full
            if restarted_full:
                # An operator sees it in /metrics too.
                code, body = h.https("/metrics")
                check(code == 200, "GET /metrics: HTTP %d" % code)
                samples = parse_prometheus(body)
                errors = samples.get(("resilience_ingest_store_errors_total", ()), 0)
                retry = samples.get(("resilience_reports_retry_later_total",
                                     (("reason", "store_error"),)), 0)
                check(errors > 0 and retry > 0, "/metrics on a full disk: store_errors_total "
                      "%r, retry_later_total{reason=store_error} %r" % (errors, retry))

            fs.free()
            if not restarted_full:
                h.start_aggregator()
            for a, p, out, err in probes:
                try:
                    p.wait(timeout=600 * SLOW)
                except subprocess.TimeoutExpired:
                    raise AssertionError("sender %s did not finish after the space came back"
                                         % a["id"])
                check(p.returncode == 0, "sender %s exited %d" % (a["id"], p.returncode))
            if restarted_full:
                # The aggregator that failed batches says when they work again.
                check("storing works again after" in h.aggregator.log_text(),
                      "no 'storing works again' line after the space came back:\n%s"
                      % h.aggregator.log_text()[-2000:])
        finally:
            for a, p, out, err in probes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                out.close()
                err.close()
        check(h.aggregator.alive(), "the aggregator died")
        rc = h.aggregator.stop()
        check(rc == 0, "the aggregator exited %r on SIGTERM" % (rc,))

        accepted, statuses, retry_details = read_acks(h, agents)
        print("  acks seen: %r; RETRY_LATER details: %r; %d stored while full "
              "(into space SQLite already had)" % (statuses, retry_details, stored_while_full))
        check("REJECTED" not in statuses, "reports were rejected: %r" % statuses)

        # The log names the store and the cause.
        lines = [l for l in full_log.splitlines() if "disk is full" in l]
        check(any(h.agg["store"] in l for l in lines),
              "no log line names the store %s and the full disk; lines: %r" % (
                  h.agg["store"], lines[:3]))

        want = {(a["id"], s) for a in agents for s in range(1, PER_AGENT + 1)}
        check_acked_stored_once(h, accepted, want, len(MEASURES))
        (ok,), = h.store_query("PRAGMA integrity_check")
        check(ok == "ok", "integrity_check: %r" % ok)
        r = run([h.ctl_bin, "audit", "--db", h.agg["store"], "--registry", h.registry_path],
                timeout=600 * SLOW)
        check(r.returncode == 0, "audit exit %d:\n%s%s" % (r.returncode, r.stdout[-2000:],
                                                          r.stderr))
        check("%d reports" % len(want) in r.stdout, "audit summary: %r" % r.stdout)


def test_real_agent_waits_out_a_full_store(h):
    """The real agent against a full store: it is told RETRY_LATER, keeps
    its reports, and delivers every one exactly once when space returns."""
    h.setup_aggregator()
    agent = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    counters = [CounterCollector(h, "oil", "energy.oil_stock_days", "days")]
    # backoff_max short: how long the agent waits is not the point here
    # (test_fault_retry_backoff is about that), that it keeps and delivers.
    h.write_agent_conf(agent, {c.name: c.conf(interval="1s") for c in counters},
                       extra_agent="backoff_max = 10s")
    with SmallFs(os.path.dirname(h.agg["store"]), STORE_FS,
                 keep_on_failure=h.path("store-kept")) as fs:
        h.start_aggregator()
        d = h.start_agent(agent)
        wait_for(lambda: counters[0].stored(agent["id"]), "the first report")
        wait_full(fs)
        log_at = len(d.log_text())
        wait_for(lambda: fs.fill() is not None and
                 d.log_text()[log_at:].count("RETRY_LATER") >= 3,
                 "the agent to be told RETRY_LATER three times", timeout=60 * SLOW)
        wait_for(lambda: len(spool_sequences(agent)) >= 3, "reports waiting in pending/")
        check(d.alive() and h.aggregator.alive(), "a daemon died on the full store")
        fs.free()
        stop_counters(h)
        counters_quiet(h, counters)
        wait_for(lambda: not spool_sequences(agent), "the spool to drain after the space came "
                 "back", timeout=120 * SLOW)
        produced = sorted(v for v, _ in counters[0].produced())
        got = sorted(v for v, _ in counters[0].stored(agent["id"]))
        check(got == produced, "produced %r, stored %r" % (produced, got))
        seqs = h.store_reports(agent["id"])
        check(len(seqs) == len(set(seqs)), "a sequence stored twice: %r" % seqs)
        check(spool_names(agent, "rejected") == [], "rejected: %r" % spool_names(agent,
                                                                               "rejected"))
        check(h.aggregator.stop() == 0, "the aggregator did not exit 0 on SIGTERM")
        (ok,), = h.store_query("PRAGMA integrity_check")
        check(ok == "ok", "integrity_check: %r" % ok)
        print("  %d reports stored once each" % len(seqs))


def test_start_on_a_full_disk_says_so_and_recovers(h):
    """Stopped cleanly (SIGTERM: the WAL is checkpointed and removed), then
    started on a full disk: the aggregator either comes up, or exits 1 with
    a message naming the store that says the disk is full - not one that
    calls a sound database corrupt. Once space is back it starts and the
    store holds everything it had.

    KNOWN BUG (aggregator/store.c, store_quick_check): today it exits 1
    with "store PATH: integrity check failed: disk I/O error" (the -shm file
    cannot grow; any failure to run quick_check is reported as RSL_ECORRUPT),
    so this test fails at "the start-up failure on a full disk does not say
    the disk is full"."""
    h.setup_aggregator()
    agent = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    with SmallFs(os.path.dirname(h.agg["store"]), STORE_FS,
                 keep_on_failure=h.path("store-kept")) as fs:
        h.start_aggregator()
        for seq in range(1, 6):
            status, detail = h.probe_one("--seq", str(seq), "--measure",
                                         "energy.oil_stock_days=%d:days" % seq, agent=agent)
            check(status == "ACCEPTED", "report %d: %s %s" % (seq, status, detail))
        check(h.aggregator.stop() == 0, "the aggregator did not exit 0 on SIGTERM")

        wait_full(fs)
        d = h.start_aggregator(wait_ready=False)
        wait_for(lambda: "ready" in d.log_text() or not d.alive(),
                 "the aggregator on a full disk to be ready or to exit")
        if "ready" in d.log_text():
            status, detail = h.probe_one("--seq", "6", "--measure", "energy.oil_stock_days=6:days",
                                         agent=agent)
            check(status == "RETRY_LATER", "report 6 on a full disk: %s %s" % (status, detail))
            check(d.stop() == 0, "the aggregator did not exit 0 on SIGTERM")
            print("  started on a full disk and answered RETRY_LATER")
        else:
            d.expected_dead = True
            text = d.log_text()
            print("  start on a full disk refused: %s" % text.strip().splitlines()[-1][:300])
            check(d.proc.returncode == 1, "exit status %r on a full disk (wanted 1)"
                  % (d.proc.returncode,))
            check(h.agg["store"] in text, "the start-up failure on a full disk does not name "
                  "the store:\n%s" % text[-2000:])
            words = text.replace(h.tmp, "")  # the test folder's name says "full" too
            said_full = any(w in words for w in ("disk is full", "No space left", "no space",
                                                 "full"))
            check(said_full and "corrupt" not in words.lower(),
                  "the start-up failure on a full disk does not say the disk is full "
                  "(or calls the store corrupt):\n%s" % text[-2000:])

        fs.free()
        h.start_aggregator()
        status, detail = h.probe_one("--seq", "6", "--measure", "energy.oil_stock_days=6:days",
                                     agent=agent)
        check(status == "ACCEPTED", "report 6 once space is back: %s %s" % (status, detail))
        check(h.store_reports(agent["id"]) == [1, 2, 3, 4, 5, 6], "stored: %r"
              % h.store_reports(agent["id"]))
        check(h.aggregator.stop() == 0, "the aggregator did not exit 0 on SIGTERM")
        (ok,), = h.store_query("PRAGMA integrity_check")
        check(ok == "ok", "integrity_check: %r" % ok)


if __name__ == "__main__":
    reason = small_fs_unavailable()
    if reason:
        skip_all(reason)
    run_tests(globals())
