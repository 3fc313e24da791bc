#!/usr/bin/env python3
"""Registry reload on SIGHUP (ARCHITECTURE section 3): an agent enrolled
while the aggregator runs is admitted after SIGHUP, a key listed in
revoked_keys is refused after SIGHUP, a broken registry file is not loaded
(the running one stays in force), and the daemon keeps serving.
"""
import os
import signal
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, run_tests, wait_for  # noqa: E402


def test_sighup_reloads_the_registry(h):
    h.setup_aggregator()
    deu = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    agg = h.start_aggregator()
    status, detail = h.probe_one("--seq", "1", agent=deu)
    check(status == "ACCEPTED", "DEU before reload: %s %s" % (status, detail))

    # Enrol FRA and revoke DEU's signing key, then SIGHUP.
    fra = h.add_agent("FRA-SGDSN-01", "FRA", "SGDSN")
    with open(h.registry_path) as f:
        text = f.read()
    deu_section = text.split("[agent DEU-BMI-01]", 1)[1].split("[agent ", 1)[0]
    deu_key = next(l.split("=", 1)[1].strip() for l in deu_section.splitlines()
                   if l.startswith("sign_key"))
    text = text.replace("[agent DEU-BMI-01]\n", "[agent DEU-BMI-01]\nrevoked_keys = %s\n" % deu_key, 1)
    with open(h.registry_path, "w") as f:
        f.write(text)
    agg.signal(signal.SIGHUP)

    def fra_admitted():
        status, _ = h.probe_one("--seq", "1", agent=fra, timeout_ms=int(1000 * SLOW))
        return status == "ACCEPTED"
    wait_for(fra_admitted, "FRA to be admitted after SIGHUP")
    status, detail = h.probe_one("--seq", "2", agent=deu)
    check(status == "REJECTED", "DEU's revoked key after reload: %s %s" % (status, detail))
    check(agg.alive(), "the aggregator died on SIGHUP")

    # A broken registry is not loaded: the running one stays in force.
    offset = len(agg.log_text())
    with open(h.registry_path, "a") as f:
        f.write("\n[agent NOR-DSB-01]\nnation = Norway\n")
    agg.signal(signal.SIGHUP)
    agg.wait_log("registry", start=offset)
    status, detail = h.probe_one("--seq", "2", agent=fra)
    check(status == "ACCEPTED", "FRA after a broken reload: %s %s" % (status, detail))
    status, detail = h.probe_one("--seq", "3", agent=deu)
    check(status == "REJECTED", "DEU's revoked key after a broken reload: %s %s" % (status, detail))
    check(agg.alive(), "the aggregator died on a broken registry")
    code, _ = h.https("/healthz", token=None)
    check(code == 200, "/healthz after reload: HTTP %d" % code)


if __name__ == "__main__":
    run_tests(globals())
