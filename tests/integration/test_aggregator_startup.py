#!/usr/bin/env python3
"""Start-up safety of the store (issue 4): the aggregator checks its store
(PRAGMA quick_check) before anything else touches it, and refuses a corrupt
one with one clear line naming the file - exit status 1, nothing served
(neither the ZeroMQ port nor HTTPS is opened), and the file left exactly as
it was for the operator to inspect. A healthy store restarts fine.
"""
import hashlib
import os
import shutil
import sqlite3
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, port_is_listening, run_tests  # noqa: E402


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def start_and_expect_refusal(h, what):
    """Start the aggregator on the (broken) store; it must exit 1 with a
    line naming the store and saying it failed its integrity check."""
    before = digest(h.agg["store"])
    d = h.start_aggregator(wait_ready=False)
    d.proc.wait(timeout=60 * SLOW)
    d.expected_dead = True
    log = d.log_text()
    check(d.proc.returncode == 1, "%s: exit status %r, log:\n%s" % (what, d.proc.returncode, log))
    check(h.agg["store"] in log and "integrity check failed" in log,
          "%s: no clear message naming the store:\n%s" % (what, log))
    check("ready" not in log, "%s: the aggregator said ready:\n%s" % (what, log))
    check(not port_is_listening(h.agg["zmq_port"]) and not port_is_listening(h.agg["https_port"]),
          "%s: a port is still listening" % what)
    check(digest(h.agg["store"]) == before, "%s: the refused store was modified" % what)
    return log


def test_garbage_store_is_refused(h):
    h.setup_aggregator()
    with open(h.agg["store"], "wb") as f:
        f.write(b"this is not an SQLite database, but it is where the store should be\n" * 200)
    start_and_expect_refusal(h, "garbage file")


def test_corrupt_page_is_refused_and_a_healthy_store_restarts(h):
    h.setup_aggregator()
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    agg = h.start_aggregator()
    measures = []
    for m in ("energy.oil_stock_days=95:days", "energy.gas_storage_fill_pct=81:pct"):
        measures += ["--measure", m]
    rc, lines = h.probe("--seq", "1", "--count", "300", "--until-acked", "--window", "50",
                        *measures, agent=deu, timeout_ms=int(5000 * SLOW))
    check(rc == 0 and len(h.store_reports("DEU-BMI-01")) == 300, "300 reports stored")
    check(agg.stop() == 0, "the aggregator did not stop cleanly")

    # A clean restart on the healthy store works (and keeps the data).
    agg = h.start_aggregator()
    status, detail = h.probe_one("--seq", "301", agent=deu)
    check(status == "ACCEPTED", "after a restart: %s %s" % (status, detail))
    check(agg.stop() == 0, "the aggregator did not stop cleanly")
    check(not os.path.exists(h.agg["store"] + "-wal") or
          os.path.getsize(h.agg["store"] + "-wal") == 0, "WAL left after a clean stop")

    # Overwrite one page in the middle of the file with garbage: pick one
    # whose damage SQLite's own quick_check sees (a free page would not be).
    good = h.path("store", "good.db")
    shutil.copyfile(h.agg["store"], good)
    page = 4096
    pages = os.path.getsize(good) // page
    check(pages > 4, "store has only %d pages" % pages)
    for n in range(pages // 2, pages):
        shutil.copyfile(good, h.agg["store"])
        with open(h.agg["store"], "r+b") as f:
            f.seek(n * page)
            f.write(bytes([0xA5]) * page)
        con = sqlite3.connect("file:%s?mode=ro" % h.agg["store"], uri=True)
        try:
            result = con.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as e:
            result = [(str(e),)]
        finally:
            con.close()
        if result != [("ok",)]:
            break
    else:
        raise AssertionError("no page whose corruption quick_check detects")
    log = start_and_expect_refusal(h, "page %d overwritten" % n)
    print("  refused with: %s" % [l for l in log.splitlines() if "integrity" in l][0][-160:])


if __name__ == "__main__":
    run_tests(globals())
