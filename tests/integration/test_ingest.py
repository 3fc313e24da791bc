#!/usr/bin/env python3
"""The aggregator's ingest defences, driven by the hand-built rsl_probe
client against the real daemon.

Covers: unenrolled CURVE key and plaintext peers get no service; signature
checks (another agent's key, no domain prefix, flipped bit); the enrolled
nation and the future-skew limit; duplicates stored once and acked
DUPLICATE; equivocation (same sequence, other bytes) REJECTED; unknown
indicators excluded and named; oversized frames dropped, malformed frames
REJECTED, and the daemon still serving afterwards.
"""
import os
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, find_entries, run_tests, wait_for  # noqa: E402

# How long to wait for an answer that must not come. A refused peer that
# was wrongly let in late is still caught: each such test then sends the
# same sequence for real and expects ACCEPTED, not DUPLICATE.
NOACK_WAIT_MS = int(2000 * SLOW)
FIXED_MS = int(time.time() * 1000) - 60 * 1000   # a minute ago, stable per run


def setup(h, extra_ingest=""):
    h.setup_aggregator(extra_ingest=extra_ingest)
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    fra = h.add_agent("FRA-SGDSN-01", "FRA", "SGDSN")
    h.start_aggregator()
    return deu, fra


def stored_values(h, agent_id, sequence):
    return h.store_query(
        "SELECT m.indicator, m.value FROM measurements m JOIN reports r ON m.report_id = r.id"
        " WHERE r.agent_id = ? AND r.sequence = ? ORDER BY m.idx", (agent_id, sequence))


def deu_value(h, indicator):
    doc = h.https_json("/v1/nations/DEU")
    e = [x for x in find_entries(doc, "id", indicator) if "value" in x]
    check(len(e) == 1, "one %s entry in /v1/nations/DEU" % indicator)
    return e[0]["value"]


def test_unenrolled_curve_key_gets_no_service(h):
    deu, _ = setup(h)
    # DEU's real signing key, but a transport key nobody enrolled (the probe
    # makes a fresh CURVE pair without --curve-dir): ZAP must refuse it.
    status, _ = h.probe_one("--seq", "1", agent=deu, curve=False, timeout_ms=NOACK_WAIT_MS)
    check(status == "NOACK", "a fresh CURVE key got %s" % status)
    # A whole agent that has keys but was never enrolled.
    stranger = h.add_agent("NOR-DSB-01", "NOR", enroll=False)
    status, _ = h.probe_one("--seq", "1", agent=stranger, timeout_ms=NOACK_WAIT_MS)
    check(status == "NOACK", "an unenrolled agent got %s" % status)
    check(h.store_reports("DEU-BMI-01") == [], "something was stored for DEU")
    # The door is not simply shut: the enrolled key is served. (Were the
    # refused seq 1 admitted late, this one would come back DUPLICATE.)
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "enrolled agent got %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [1], "DEU sequences %r" % h.store_reports("DEU-BMI-01"))
    check(h.store_reports("NOR-DSB-01") == [], "something was stored for NOR")


def test_plaintext_peer_gets_no_service(h):
    deu, _ = setup(h)
    status, _ = h.probe_one("--plaintext", "--seq", "1", agent=deu, curve=False,
                            timeout_ms=NOACK_WAIT_MS)
    check(status == "NOACK", "a plaintext peer got %s" % status)
    check(h.store_reports("DEU-BMI-01") == [], "a plaintext report was stored")
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "the same report over CURVE got %s %s" % (status, detail))


def test_bad_signatures_are_rejected(h):
    deu, fra = setup(h)
    # DEU's transport key and identity, signed with FRA's (enrolled) key.
    status, detail = h.probe_one("--seq", "1", "--sign-key", os.path.join(fra["keys"], "sign.key"),
                                 agent=deu, sign=False)
    check(status == "REJECTED", "report signed with another agent's key: %s %s" % (status, detail))
    # FRA's signature under DEU's key_id: the signature must not verify.
    status, detail = h.probe_one("--seq", "1", "--sign-key", os.path.join(fra["keys"], "sign.key"),
                                 "--key-id", h.sign_key_id(deu["keys"]), agent=deu, sign=False)
    check(status == "REJECTED", "FRA's signature under DEU's key_id: %s %s" % (status, detail))
    # Right key, but signed without the "resilience.v1.report\\0" prefix.
    status, detail = h.probe_one("--seq", "2", "--no-prefix", agent=deu)
    check(status == "REJECTED", "signature without domain prefix: %s %s" % (status, detail))
    # Right key, one bit of the signature flipped.
    status, detail = h.probe_one("--seq", "3", "--corrupt-signature", agent=deu)
    check(status == "REJECTED", "corrupted signature: %s %s" % (status, detail))
    # A key_id that names no key of this agent.
    status, detail = h.probe_one("--seq", "4", "--key-id", "0" * 32, agent=deu)
    check(status == "REJECTED", "unknown key_id: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [], "a badly signed report was stored: %r"
          % h.store_reports("DEU-BMI-01"))
    # REJECTED is not sticky for the sequence: the genuine report is taken.
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "genuine report after rejections: %s %s" % (status, detail))


def test_nation_and_future_time_are_enforced(h):
    deu, _ = setup(h)
    status, detail = h.probe_one("--seq", "1", "--nation", "FRA", agent=deu)
    check(status == "REJECTED", "DEU agent claiming FRA: %s %s" % (status, detail))
    future = int(time.time() * 1000) + 10 * 60 * 1000
    status, detail = h.probe_one("--seq", "2", "--created-at", str(future), agent=deu)
    check(status == "REJECTED", "created 10 minutes ahead: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [], "a rejected report was stored")


def test_same_report_twice_is_stored_once(h):
    deu, _ = setup(h)
    args = ("--seq", "7", "--created-at", str(FIXED_MS), "--observed-at", str(FIXED_MS),
            "--measure", "energy.oil_stock_days=88.5:days")
    status, detail = h.probe_one(*args, agent=deu)
    check(status == "ACCEPTED", "first copy: %s %s" % (status, detail))
    status, detail = h.probe_one(*args, agent=deu)
    check(status == "DUPLICATE", "second copy: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [7], "stored %r" % h.store_reports("DEU-BMI-01"))
    check(stored_values(h, "DEU-BMI-01", 7) == [("energy.oil_stock_days", 88.5)],
          "measurements %r" % stored_values(h, "DEU-BMI-01", 7))
    (n,), = h.store_query("SELECT count(*) FROM measurements WHERE agent_id = ?", ("DEU-BMI-01",))
    check(n == 1, "%d measurement rows for one report" % n)
    summary = h.https_json("/v1/summary")
    e = [x for x in find_entries(summary, "id", "energy.oil_stock_days") if "nations_reporting" in x]
    check(len(e) == 1 and e[0]["nations_reporting"] == 1 and e[0]["value"] == 88.5,
          "summary entry %r" % e)


def test_same_sequence_different_content_is_rejected(h):
    deu, _ = setup(h)
    base = ("--seq", "5", "--created-at", str(FIXED_MS), "--observed-at", str(FIXED_MS))
    status, detail = h.probe_one(*base, "--measure", "energy.oil_stock_days=90:days", agent=deu)
    check(status == "ACCEPTED", "original: %s %s" % (status, detail))
    status, detail = h.probe_one(*base, "--measure", "energy.oil_stock_days=91:days", agent=deu)
    check(status == "REJECTED", "equivocating copy: %s %s" % (status, detail))
    check(stored_values(h, "DEU-BMI-01", 5) == [("energy.oil_stock_days", 90.0)],
          "stored %r" % stored_values(h, "DEU-BMI-01", 5))
    check(deu_value(h, "energy.oil_stock_days") == 90, "API shows the equivocating value")
    # The genuine original is still recognised as a duplicate afterwards.
    status, _ = h.probe_one(*base, "--measure", "energy.oil_stock_days=90:days", agent=deu)
    check(status == "DUPLICATE", "original resent: %s" % status)


def test_unknown_indicator_is_excluded_and_named(h):
    deu, _ = setup(h)
    status, detail = h.probe_one("--seq", "1", "--measure", "energy.oil_stock_days=95:days",
                                 "--measure", "bogus.made_up_indicator=1:pct",
                                 "--measure", "energy.gas_storage_fill_pct=85:days", agent=deu)
    check(status == "ACCEPTED", "report with one good measurement: %s %s" % (status, detail))
    check("bogus.made_up_indicator" in detail, "detail does not name the unknown indicator: %r" % detail)
    check("energy.gas_storage_fill_pct" in detail, "detail does not name the wrong unit: %r" % detail)
    check(deu_value(h, "energy.oil_stock_days") == 95, "the good measurement is not in the view")
    check(deu_value(h, "energy.gas_storage_fill_pct") is None, "a wrong-unit value was aggregated")
    # The signed original is kept whole: all three measurements in history.
    check(len(stored_values(h, "DEU-BMI-01", 1)) == 3, "history lost measurements")


def test_oversized_and_malformed_messages_do_not_hurt(h):
    deu, _ = setup(h, extra_ingest="max_message_bytes = 65536")
    # Over the cap: libzmq drops it (and the connection): no answer at all.
    status, _ = h.probe_one("--oversize", "200000", "--curve-dir", deu["keys"],
                            timeout_ms=NOACK_WAIT_MS)
    check(status == "NOACK", "oversized frame got %s" % status)
    # Control: the same garbage under the cap is read, and answered.
    status, _ = h.probe_one("--oversize", "60000", "--curve-dir", deu["keys"])
    check(status == "REJECTED", "garbage under the size cap got %s" % status)
    # Not a SignedReport: answered REJECTED, never stored.
    for frame in ("deadbeef", "0a03414243", "ff" * 64, "1a20" + "41" * 32):
        status, detail = h.probe_one("--raw-hex", frame, "--curve-dir", deu["keys"])
        check(status == "REJECTED", "malformed frame %s: %s %s" % (frame[:16], status, detail))
    # A valid SignedReport wrapping a Report that fails validation (NaN).
    status, detail = h.probe_one("--seq", "9", "--measure", "energy.oil_stock_days=nan:days", agent=deu)
    check(status == "REJECTED", "NaN value: %s %s" % (status, detail))
    check(h.store_reports("DEU-BMI-01") == [], "garbage was stored")

    # Still serving: a valid report is accepted, /healthz is fine.
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "valid report afterwards: %s %s" % (status, detail))
    code, body = h.https("/healthz", token=None)
    check(code == 200, "/healthz HTTP %d: %s" % (code, body))
    check(h.aggregator.alive(), "aggregator died")
    wait_for(lambda: deu_value(h, "energy.oil_stock_days") == 95, "the valid report in the API")


if __name__ == "__main__":
    run_tests(globals())
