#!/usr/bin/env python3
"""Trust management (issue 4), with the real aggregator and real CURVE clients.

- Key rotation: during the overlap (registry lists the old and the new key)
  reports signed by either are accepted; after the old key is revoked
  (registry edit + SIGHUP) its new reports are rejected as revoked_key, the
  new key's still accepted.
- SIGHUP drops no connection: a client connected before the reloads keeps
  its CURVE session (one handshake in all) and its next report is answered
  under the new registry.
- `resilience-ctl audit` re-verifies the stored reports: all good -> exit 0;
  a report signed by a since-revoked key is listed (exit 1) unless
  --accept-revoked; a measurement value, a signature byte or a column changed
  in the store, or a registry that does not know the agent, are each found
  and named (exit 1).
"""
import os
import signal
import sqlite3
import subprocess
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SLOW, check, ingest_counters, parse_ack, run,  # noqa: E402
                     run_tests, wait_for, wrap_cmd)


def sign_key_b64(text):
    return next(l.split("=", 1)[1].strip() for l in text.splitlines()
                if l.startswith("sign_key"))


def set_keys(h, agent_id, sign_keys, revoked=()):
    """Rewrite one agent's sign_key / revoked_keys lines in the registry."""
    with open(h.registry_path) as f:
        lines = f.read().splitlines()
    out, inside = [], False
    for line in lines:
        if line.startswith("["):
            inside = line.strip() == "[agent %s]" % agent_id
        if inside and line.startswith("revoked_keys"):
            continue
        if inside and line.startswith("sign_key"):
            out.append("sign_key = " + ", ".join(sign_keys))
            if revoked:
                out.append("revoked_keys = " + ", ".join(revoked))
            continue
        out.append(line)
    with open(h.registry_path, "w") as f:
        f.write("\n".join(out) + "\n")


def reload_registry(h):
    """SIGHUP and wait for the aggregator to say it loaded the file."""
    before = h.aggregator.log_text().count("reloaded")
    h.aggregator.signal(signal.SIGHUP)
    wait_for(lambda: h.aggregator.log_text().count("reloaded") > before, "the registry reload")


class LongProbe:
    """An rsl_probe that keeps one connection and sends its next report
    only when told to (--wait-stdin)."""

    def __init__(self, h, agent, sign_key, first_seq, count):
        cmd = [h.probe_bin, "--endpoint", h.agg["endpoint"], "--server-key", h.agg["server_key"],
               "--curve-dir", agent["keys"], "--sign-key", sign_key, "--agent-id", agent["id"],
               "--nation", agent["nation"], "--organisation", agent["organisation"],
               "--seq", str(first_seq), "--count", str(count), "--wait-stdin",
               "--report-handshakes", "--timeout", str(int(10000 * SLOW))]
        self.proc = subprocess.Popen(wrap_cmd(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def next_ack(self, go=True):
        if go:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if line == "":
            raise AssertionError("the probe ended early: %s" % self.proc.stderr.read())
        return parse_ack(line.strip())

    def finish(self):
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60 * SLOW)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        check(self.proc.returncode == 0, "probe exit %d: %s" % (self.proc.returncode, err))
        hs = [l for l in out.splitlines() if l.startswith("HANDSHAKES ")]
        check(len(hs) == 1, "no HANDSHAKES line in %r" % out)
        return int(hs[0].split()[1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def audit(h, *extra, registry=None):
    r = run([h.ctl_bin, "audit", "--db", h.agg["store"], "--registry",
             registry or h.registry_path] + list(extra), timeout=120 * SLOW)
    return r.returncode, r.stdout, r.stderr


def test_rotation_overlap_revocation_and_sessions_survive_reload(h):
    h.setup_aggregator()
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    with open(h.registry_path) as f:
        key_a = sign_key_b64(f.read().split("[agent DEU-BMI-01]", 1)[1])
    new_dir = h.keygen("DEU-new")
    key_b = sign_key_b64(h.enroll("TMP-B-01", "DEU", "tmp", new_dir))
    # The temporary section only served to print key B; remove it again.
    with open(h.registry_path) as f:
        text = f.read()
    with open(h.registry_path, "w") as f:
        f.write(text.split("\n[agent TMP-B-01]")[0] + "\n")
    old_key = os.path.join(deu["keys"], "sign.key")
    new_key = os.path.join(new_dir, "sign.key")
    h.start_aggregator()

    # A client with the old key, connected before any reload.
    long = LongProbe(h, deu, old_key, 1, 3)
    try:
        status, detail = long.next_ack(go=False)
        check(status == "ACCEPTED", "old key before rotation: %s %s" % (status, detail))
        status, detail = h.probe_one("--seq", "9", "--sign-key", new_key, agent=deu, sign=False)
        check(status == "REJECTED" and detail.startswith("unknown_key"),
              "new key before it is enrolled: %s %s" % (status, detail))

        # Rotation starts: both keys valid.
        set_keys(h, "DEU-BMI-01", [key_a, key_b])
        reload_registry(h)
        status, detail = long.next_ack()
        check(status == "ACCEPTED", "old key during the overlap, same connection: %s %s"
              % (status, detail))
        status, detail = h.probe_one("--seq", "10", "--sign-key", new_key, agent=deu, sign=False)
        check(status == "ACCEPTED", "new key during the overlap: %s %s" % (status, detail))

        # The old key is revoked.
        set_keys(h, "DEU-BMI-01", [key_b], revoked=[key_a])
        reload_registry(h)
        status, detail = long.next_ack()
        check(status == "REJECTED" and detail.startswith("revoked_key"),
              "old key after revocation: %s %s" % (status, detail))
        handshakes = long.finish()
        check(handshakes == 1, "the connection was re-established %d times across two reloads"
              % (handshakes - 1))
    finally:
        long.kill()
    status, detail = h.probe_one("--seq", "11", "--sign-key", new_key, agent=deu, sign=False)
    check(status == "ACCEPTED", "new key after revocation: %s %s" % (status, detail))
    status, detail = h.probe_one("--seq", "12", agent=deu)
    check(status == "REJECTED" and detail.startswith("revoked_key"),
          "old key, new connection, after revocation: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [1, 2, 10, 11],
          "stored %r" % h.store_reports("DEU-BMI-01"))
    counts, _ = ingest_counters(h)
    check(counts.get("rejected:revoked_key") == 2, "revoked_key counted %r"
          % counts.get("rejected:revoked_key"))

    # The audit: reports 1 and 2 were signed by the key revoked since.
    rc, out, err = audit(h)
    check(rc == 1, "audit with revoked-key reports: exit %d\n%s%s" % (rc, out, err))
    fails = [l for l in out.splitlines() if l.startswith("FAIL ")]
    check(len(fails) == 2 and all("revoked_key" in l for l in fails) and
          "DEU-BMI-01/1 " in fails[0] and "DEU-BMI-01/2 " in fails[1], "audit said %r" % out)
    rc, out, err = audit(h, "--accept-revoked")
    check(rc == 0, "audit --accept-revoked: exit %d\n%s%s" % (rc, out, err))
    check("4 reports" in out and "4 verified (2 with a revoked key)" in out, "summary %r" % out)


def signature_flipped(blob):
    """The SignedReport with the last byte of its signature (field 2)
    changed: walk the top-level fields (all length-delimited)."""
    b = bytearray(blob)
    i = 0
    while i < len(b):
        tag = b[i]
        i += 1
        length, shift = 0, 0
        while True:
            byte = b[i]
            i += 1
            length |= (byte & 0x7f) << shift
            shift += 7
            if not byte & 0x80:
                break
        if tag == 0x12:
            b[i + length - 1] ^= 0x01
            return bytes(b)
        i += length
    raise AssertionError("no signature field")


def test_audit_finds_every_kind_of_tampering(h):
    h.setup_aggregator()
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    fra = h.add_agent("FRA-SGDSN-01", "FRA", "SGDSN")
    h.start_aggregator()
    rc, lines = h.probe("--seq", "1", "--count", "5", "--measure", "energy.oil_stock_days=95:days",
                        "--measure", "energy.gas_storage_fill_pct=81:pct", agent=deu)
    check(rc == 0 and all(" ACCEPTED " in l for l in lines), "DEU reports: %r" % lines)
    status, _ = h.probe_one("--seq", "1", agent=fra)
    check(status == "ACCEPTED", "FRA report: %s" % status)

    rc, out, err = audit(h)
    check(rc == 0, "audit of an untouched store: exit %d\n%s%s" % (rc, out, err))
    check("6 reports, 11 measurements: 6 verified, 0 failed" in out, "summary %r" % out)
    check(h.aggregator.stop() == 0, "the aggregator did not stop cleanly")

    # Tamper, as someone with write access to the file could.
    con = sqlite3.connect(h.agg["store"])
    try:
        con.execute("UPDATE measurements SET value = 12.5 WHERE id = (SELECT m.id FROM "
                    "measurements m JOIN reports r ON m.report_id = r.id WHERE r.agent_id = "
                    "'DEU-BMI-01' AND r.sequence = 2 AND m.idx = 1)")
        (blob,), = con.execute("SELECT signed FROM reports WHERE agent_id = 'DEU-BMI-01' "
                               "AND sequence = 3").fetchall()
        con.execute("UPDATE reports SET signed = ? WHERE agent_id = 'DEU-BMI-01' AND "
                    "sequence = 3", (signature_flipped(bytes(blob)),))
        con.execute("UPDATE reports SET nation = 'POL' WHERE agent_id = 'DEU-BMI-01' AND "
                    "sequence = 4")
        # The present pointed at an invented value.
        con.execute("UPDATE current SET value = 1000 WHERE nation = 'FRA'")
        con.commit()
    finally:
        con.close()

    rc, out, err = audit(h)
    check(rc == 1, "audit of a tampered store: exit %d\n%s%s" % (rc, out, err))
    fails = [l for l in out.splitlines() if l.startswith("FAIL ")]
    want = [("DEU-BMI-01/2 ", "measurements: measurement 1 (energy.gas_storage_fill_pct): "
             "stored value differs"),
            ("DEU-BMI-01/3 ", "bad_signature"),
            ("DEU-BMI-01/4 ", "mismatch: stored nation differs"),
            ("current FRA/energy.oil_stock_days", "differs from its measurement row")]
    for who, what in want:
        check(any(who in l and what in l for l in fails), "no FAIL for %s %s in:\n%s"
              % (who, what, out))
    check(len(fails) == len(want), "unexpected failures:\n%s" % out)
    check("6 reports" in out and "3 verified, 3 failed" in out and "1 problems" in out,
          "summary %r" % out)

    # A registry that no longer knows FRA.
    other = h.path("registry-without-fra.conf")
    with open(h.registry_path) as f:
        text = f.read()
    with open(other, "w") as f:
        f.write(text.split("\n[agent FRA-SGDSN-01]")[0] + "\n")
    rc, out, err = audit(h, registry=other)
    check(rc == 1 and "FAIL FRA-SGDSN-01/1 (report 6): unknown_agent" in out,
          "audit without FRA enrolled: exit %d\n%s%s" % (rc, out, err))

    # Usage and hostile inputs: no store, not a store.
    rc, out, err = audit(h, registry=h.path("no-such-registry.conf"))
    check(rc == 1 and "no-such-registry.conf" in err, "missing registry: %d %r" % (rc, err))
    garbage = h.write("garbage.db", "this is not a database\n" * 100)
    r = run([h.ctl_bin, "audit", "--db", garbage, "--registry", h.registry_path])
    check(r.returncode == 1 and "garbage.db" in r.stderr, "garbage store: %d %r"
          % (r.returncode, r.stderr))
    r = run([h.ctl_bin, "audit", "--db", h.agg["store"]])
    check(r.returncode == 2, "audit without --registry: exit %d" % r.returncode)


if __name__ == "__main__":
    run_tests(globals())
