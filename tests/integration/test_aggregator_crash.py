#!/usr/bin/env python3
"""Durability of acknowledged reports (issue 4): the aggregator is killed with
SIGKILL 20 times while 5 agents push 20,000 reports at it.

The agents are 5 rsl_probe processes in --until-acked mode: like the real
agent they build and sign each report once and resend the very same bytes
until it is acknowledged, with up to 32 reports in flight each. Every ack
they see is logged. Each kill lands while reports are streaming in (the
store has grown past the next threshold), and the aggregator is restarted at
once (its "ready" line waited for).

Afterwards: every report any client ever saw ACCEPTED is in the store; no
(agent, sequence) is stored twice and no measurement row is duplicated; all
20,000 are stored; the last sequence per agent is right; PRAGMA
integrity_check is "ok"; and `resilience-ctl audit` re-verifies every
stored report from its signed bytes.

The kills come from faults.KillNemesis, each a random moment (up to 0.1 s)
after its threshold; RSL_TEST_SEED=N repeats those moments.
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import KillNemesis  # noqa: E402
from harness import (SLOW, check, check_acked_stored_once, run, run_tests,  # noqa: E402
                     wait_for, wrap_cmd)

AGENTS = 5
PER_AGENT = 4000
KILLS = 20
MEASURES = ("energy.oil_stock_days=95:days", "energy.gas_storage_fill_pct=81:pct",
            "health.hospital_autonomy_hours=80:hours")


def stored(h):
    if not os.path.exists(h.agg["store"]):
        return 0
    (n,), = h.store_query("SELECT count(*) FROM reports")
    return n


def test_kill9_twenty_times_during_ingest_loses_no_acked_report(h):
    h.setup_aggregator()
    agents = [h.add_agent("NAT%d-MIN-01" % i, nation, "Ministry %d" % i)
              for i, nation in enumerate(("DEU", "FRA", "ITA", "NOR", "POL"))]
    # Quieter log: a debug line per report and 20,000 reports.
    with open(h.agg["conf"]) as f:
        conf = f.read().replace("level = debug", "level = info")
    with open(h.agg["conf"], "w") as f:
        f.write(conf)
    h.start_aggregator()

    nemesis = KillNemesis("these kill moments")
    probes = []
    for a in agents:
        out = open(h.path("acks-%s.log" % a["id"]), "w")
        err = open(h.path("probe-%s.err" % a["id"]), "w")
        cmd = [h.probe_bin, "--endpoint", h.agg["endpoint"], "--server-key", h.agg["server_key"],
               "--curve-dir", a["keys"], "--sign-key", os.path.join(a["keys"], "sign.key"),
               "--agent-id", a["id"], "--nation", a["nation"], "--organisation", a["organisation"],
               "--seq", "1", "--count", str(PER_AGENT), "--until-acked", "--window", "32",
               "--timeout", str(int(2000 * SLOW)), "--retry-delay", "100"]
        for m in MEASURES:
            cmd += ["--measure", m]
        probes.append((a, subprocess.Popen(wrap_cmd(cmd), stdout=out, stderr=err,
                                           stdin=subprocess.DEVNULL),
                       out, err))
    try:
        total = AGENTS * PER_AGENT
        step = total * 9 // 10 // KILLS  # the last kill well before the end
        for k in range(1, KILLS + 1):
            wait_for(lambda: stored(h) >= k * step, "%d reports stored before kill %d"
                     % (k * step, k), timeout=300 * SLOW, interval=0.02)
            nemesis.kill_and_restart(h.aggregator, h.start_aggregator, after=(0.0, 0.1))
        for a, p, out, err in probes:
            try:
                p.wait(timeout=600 * SLOW)
            except subprocess.TimeoutExpired:
                raise AssertionError("probe for %s did not finish" % a["id"])
            check(p.returncode == 0, "probe for %s exited %d" % (a["id"], p.returncode))
    finally:
        for a, p, out, err in probes:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()

    # What the clients were told.
    accepted = set()
    statuses = {}
    for a in agents:
        with open(h.path("acks-%s.log" % a["id"])) as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 4)
                if len(parts) < 4 or parts[0] != "ACK":
                    continue
                statuses[parts[3]] = statuses.get(parts[3], 0) + 1
                if parts[3] == "ACCEPTED":
                    accepted.add((parts[1], int(parts[2])))
    print("  acks seen: %r; %d kills" % (statuses, nemesis.kills))
    check(nemesis.kills == KILLS, "%d kills delivered, wanted %d" % (nemesis.kills, KILLS))
    check("REJECTED" not in statuses, "reports were rejected: %r" % statuses)

    want = {(a["id"], s) for a in agents for s in range(1, PER_AGENT + 1)}
    check_acked_stored_once(h, accepted, want, len(MEASURES))
    (dups,), = h.store_query("SELECT count(*) FROM (SELECT report_id, idx FROM measurements "
                             "GROUP BY report_id, idx HAVING count(*) > 1)")
    check(dups == 0, "%d measurements stored twice" % dups)
    for a in agents:
        (last,), = h.store_query("SELECT last_sequence FROM agents WHERE agent_id = ?", (a["id"],))
        check(last == PER_AGENT, "%s: last_sequence %r" % (a["id"], last))
    (ok,), = h.store_query("PRAGMA integrity_check")
    check(ok == "ok", "integrity_check: %r" % ok)
    check(h.aggregator.alive(), "the last aggregator died")

    # Every stored report still verifies from its signed bytes.
    r = run([h.ctl_bin, "audit", "--db", h.agg["store"], "--registry", h.registry_path],
            timeout=600 * SLOW)
    check(r.returncode == 0, "audit exit %d:\n%s%s" % (r.returncode, r.stdout[-2000:], r.stderr))
    check("%d reports" % len(want) in r.stdout, "audit summary: %r" % r.stdout)


if __name__ == "__main__":
    run_tests(globals())
