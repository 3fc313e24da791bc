#!/usr/bin/env python3
"""The adversarial matrix (issue 4): every reason the aggregator has to turn a
report down, produced by a real CURVE client (tests/tools/rsl_probe, which
builds and signs messages by hand where a real agent never would) against the
real aggregator binary. Each must be answered with its own reason, counted as
its own reason (GET /metrics, or the log where /metrics lacks the sample),
and leave nothing in the store.

Also here: a signature made over the very same report bytes without the
domain prefix fails; duplicates are acked DUPLICATE and stored once;
unknown indicators / units are excluded and named in the ack; oversized
messages are dropped by libzmq (no answer, the connection is closed and
counted); back-pressure answers RETRY_LATER (queue_full) and everything is
still stored exactly once in the end.
"""
import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, ingest_counters, run_tests, wait_for  # noqa: E402

NOACK_WAIT_MS = int(2000 * SLOW)
FIXED_MS = int(time.time() * 1000) - 60 * 1000   # a minute ago, stable per run


def registry_section(h, agent_id):
    with open(h.registry_path) as f:
        text = f.read()
    return text.split("[agent %s]" % agent_id, 1)[1].split("[agent ", 1)[0]


def sign_key_b64(section):
    return next(l.split("=", 1)[1].strip() for l in section.splitlines()
                if l.startswith("sign_key"))


def enroll_extra_keys(h, agent, revoked_dir, extra_ingest=""):
    """Give `agent` a second signing key that is enrolled *and* revoked."""
    out = h.enroll("TMP-KEYS-01", agent["nation"], "tmp", revoked_dir)
    revoked = sign_key_b64(out)
    with open(h.registry_path) as f:
        text = f.read()
    # Drop the temporary section again; keep its key for DEU.
    text = text.replace("\n" + out, "")
    own = sign_key_b64(registry_section(h, agent["id"]))
    text = text.replace("sign_key = %s\n" % own,
                        "sign_key = %s, %s\nrevoked_keys = %s\n" % (own, revoked, revoked), 1)
    with open(h.registry_path, "w") as f:
        f.write(text)


def setup(h, extra_ingest=""):
    h.setup_aggregator(extra_ingest=extra_ingest)
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    fra = h.add_agent("FRA-SGDSN-01", "FRA", "SGDSN")
    old = h.keygen("DEU-old-key")
    enroll_extra_keys(h, deu, old)
    h.start_aggregator()
    return deu, fra, old


def stored_count(h):
    (n,), = h.store_query("SELECT count(*) FROM reports")
    return n


def test_every_rejection_reason_is_answered_counted_and_not_stored(h):
    deu, fra, old = setup(h)
    future = int(time.time() * 1000) + 10 * 60 * 1000
    # reason -> (probe arguments, probe keyword arguments, text the detail must hold)
    matrix = [
        ("malformed", ("--raw-hex", "ff" * 64, "--curve-dir", deu["keys"]), {}, "SignedReport"),
        ("malformed", ("--seq", "2", "--measure", "energy.oil_stock_days=nan:days"),
         {"agent": deu}, "not finite"),
        ("unknown_agent", ("--seq", "3", "--agent-id", "NOR-DSB-01", "--nation", "NOR",
                           "--sign-key", os.path.join(deu["keys"], "sign.key"),
                           "--curve-dir", deu["keys"]), {}, "NOR-DSB-01"),
        ("unknown_key", ("--seq", "4", "--key-id", "0" * 32), {"agent": deu}, "0" * 32),
        ("revoked_key", ("--seq", "5", "--sign-key", os.path.join(old, "sign.key")),
         {"agent": deu, "sign": False}, "revoked"),
        ("bad_signature", ("--seq", "6", "--corrupt-signature"), {"agent": deu}, "does not verify"),
        # The same report bytes, signed without "resilience.v1.report\0".
        ("bad_signature", ("--seq", "7", "--no-prefix"), {"agent": deu}, "does not verify"),
        # FRA's report, validly signed by FRA, over DEU's connection.
        ("wrong_sender", ("--seq", "8", "--agent-id", fra["id"], "--nation", "FRA",
                          "--sign-key", os.path.join(fra["keys"], "sign.key"),
                          "--curve-dir", deu["keys"]), {}, "authenticated as 'DEU-BMI-01'"),
        ("nation_mismatch", ("--seq", "9", "--nation", "FRA"), {"agent": deu}, "'FRA'"),
        ("future_timestamp", ("--seq", "10", "--created-at", str(future)), {"agent": deu},
         "ahead of the aggregator's clock"),
    ]
    before, _ = ingest_counters(h)
    expected = {}
    for reason, args, kw, needle in matrix:
        status, detail = h.probe_one(*args, **kw)
        check(status == "REJECTED", "%s: answered %s %s" % (reason, status, detail))
        check(detail.startswith(reason + ":"), "%s: the ack names another reason: %r"
              % (reason, detail))
        check(needle in detail, "%s: detail %r lacks %r" % (reason, detail, needle))
        expected["rejected:" + reason] = expected.get("rejected:" + reason, 0) + 1
    check(stored_count(h) == 0, "a rejected report was stored")

    # Equivocation: same agent and sequence, other content. The first copy
    # is stored, the second rejected; nothing new stored.
    base = ("--seq", "20", "--created-at", str(FIXED_MS), "--observed-at", str(FIXED_MS))
    status, detail = h.probe_one(*base, "--measure", "energy.oil_stock_days=90:days", agent=deu)
    check(status == "ACCEPTED", "original: %s %s" % (status, detail))
    status, detail = h.probe_one(*base, "--measure", "energy.oil_stock_days=91:days", agent=deu)
    check(status == "REJECTED" and detail.startswith("equivocation:"),
          "equivocating copy: %s %s" % (status, detail))
    expected["rejected:equivocation"] = 1
    check(h.store_reports("DEU-BMI-01") == [20], "stored %r" % h.store_reports("DEU-BMI-01"))
    (value,), = h.store_query("SELECT value FROM measurements")
    check(value == 90.0, "the equivocating value replaced the original: %r" % value)

    def counted():
        now, source = ingest_counters(h)
        for key, n in expected.items():
            if now.get(key, 0) - before.get(key, 0) != n:
                return False
        return now, source
    now, source = wait_for(counted, "each reason counted as its own: want %r" % expected)
    # Nothing counted under a reason we did not provoke.
    for key in now:
        if key.startswith("rejected:") and key not in expected:
            check(now[key] - before.get(key, 0) == 0,
                  "%s counted %d times" % (key, now[key] - before.get(key, 0)))
    print("  counters read from: %s" % sorted(set(source.values())))
    check(h.aggregator.alive(), "the aggregator died")


def test_duplicate_is_acked_and_stored_once(h):
    deu, _, _ = setup(h)
    args = ("--seq", "7", "--created-at", str(FIXED_MS), "--observed-at", str(FIXED_MS))
    before, _ = ingest_counters(h)
    status, detail = h.probe_one(*args, agent=deu)
    check(status == "ACCEPTED", "first copy: %s %s" % (status, detail))
    for _ in range(3):
        status, detail = h.probe_one(*args, agent=deu)
        check(status == "DUPLICATE", "a copy: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [7], "stored %r" % h.store_reports("DEU-BMI-01"))
    (n,), = h.store_query("SELECT count(*) FROM measurements")
    check(n == 1, "%d measurement rows for one report" % n)
    wait_for(lambda: ingest_counters(h)[0].get("duplicate", 0) - before.get("duplicate", 0) == 3,
             "three duplicates counted")
    # The last sequence per agent was written with the report.
    (last,), = h.store_query("SELECT last_sequence FROM agents WHERE agent_id = 'DEU-BMI-01'")
    check(last == 7, "agents.last_sequence %r" % last)


def test_unknown_indicator_and_unit_are_excluded_named_and_counted(h):
    deu, _, _ = setup(h)
    before, _ = ingest_counters(h)
    status, detail = h.probe_one("--seq", "1", "--measure", "energy.oil_stock_days=95:days",
                                 "--measure", "bogus.made_up_indicator=1:pct",
                                 "--measure", "energy.gas_storage_fill_pct=85:days", agent=deu)
    check(status == "ACCEPTED", "report with one good measurement: %s %s" % (status, detail))
    check("bogus.made_up_indicator" in detail and "unknown indicator" in detail,
          "the unknown indicator is not named: %r" % detail)
    check("energy.gas_storage_fill_pct" in detail and "unit" in detail,
          "the wrong unit is not named: %r" % detail)
    rows = h.store_query("SELECT indicator, excluded FROM measurements ORDER BY idx")
    check(rows == [("energy.oil_stock_days", 0), ("bogus.made_up_indicator", 1),
                   ("energy.gas_storage_fill_pct", 1)], "stored rows %r" % rows)

    def counted():
        now, _ = ingest_counters(h)
        return (now.get("excluded:unknown_indicator", 0) -
                before.get("excluded:unknown_indicator", 0) == 1 and
                now.get("excluded:unit_mismatch", 0) - before.get("excluded:unit_mismatch", 0) == 1)
    wait_for(counted, "the two exclusions counted by reason")


def test_oversized_message_is_dropped_and_counted(h):
    deu, _, _ = setup(h, extra_ingest="max_message_bytes = 65536")
    before, _ = ingest_counters(h)
    status, _ = h.probe_one("--oversize", "200000", "--curve-dir", deu["keys"],
                            timeout_ms=NOACK_WAIT_MS)
    check(status == "NOACK", "oversized frame got %s" % status)
    # libzmq drops the message and the connection: what the aggregator can
    # see of it is the closed connection.
    wait_for(lambda: ingest_counters(h)[0].get("disconnected", 0) > before.get("disconnected", 0),
             "the dropped connection to be counted")
    check(stored_count(h) == 0, "something was stored")
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "a valid report afterwards: %s %s" % (status, detail))


def test_backpressure_answers_retry_later_and_loses_nothing(h):
    # One report in flight at most: a burst must meet a full queue.
    deu, _, _ = setup(h, extra_ingest="max_queue = 1\nworkers = 1")
    total = 0
    saw_retry = False
    first = 1
    for _ in range(10):
        n = 200
        rc, lines = h.probe("--seq", str(first), "--count", str(n), "--until-acked",
                            "--window", "100", "--retry-delay", "20", agent=deu,
                            timeout_ms=int(5000 * SLOW))
        check(rc == 0, "probe exit %d" % rc)
        statuses = [l.split(" ", 4)[3] for l in lines if l.startswith("ACK ")]
        check("REJECTED" not in statuses, "a report was rejected: %r" % lines[:5])
        retries = [l for l in lines if " RETRY_LATER " in l]
        # A RETRY_LATER names its report, so the agent can match it.
        for l in retries:
            parts = l.split(" ", 4)
            check(parts[1] == deu["id"] and first <= int(parts[2]) < first + n,
                  "RETRY_LATER for an unnamed report: %r" % l)
            check("busy" in parts[4], "RETRY_LATER without the reason: %r" % l)
        saw_retry = saw_retry or bool(retries)
        total += n
        first += n
        if saw_retry:
            break
    check(saw_retry, "no RETRY_LATER with max_queue = 1 in %d reports" % total)
    seqs = h.store_reports("DEU-BMI-01")
    check(seqs == list(range(1, total + 1)), "stored %d reports, wanted 1..%d once each"
          % (len(seqs), total))
    counts, _ = ingest_counters(h)
    if "retry_later:queue_full" in counts:
        check(counts["retry_later:queue_full"] > 0, "queue_full not counted")
    check("ingest queue full" in h.aggregator.log_text(), "the full queue was not logged")


if __name__ == "__main__":
    run_tests(globals())
