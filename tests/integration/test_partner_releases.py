#!/usr/bin/env python3
"""Partner releases (issue 6, ARCHITECTURE section 7) against the real
aggregator, with reports sent over CURVE by rsl_probe.

- A release verifies with an independent verifier (Debian's
  python3-cryptography, run by /usr/bin/python3, not our code) and with
  `resilience-ctl verify`; one flipped byte fails both.
- min_nations: with two nations reporting, the aggregate is withheld; with
  a third it is released.
- Consent: a measurement not releasable to EU appears nowhere in EU's
  decoded release (no nation value, not inside the aggregate), while one
  releasable to UA does appear in UA's.
- Scope: a partner token gets 403 on /v1/summary, any nation, and another
  partner's release.
- Push: (bearer token to one partner, a client certificate to the other)
  a partner whose receiver first hangs (accepts, never answers) and
  then is down, with the aggregator killed (-9) and restarted in between,
  gets every release
  in order once it returns; a second partner, kept up, received the
  releases made during the outage before the first one came back.
"""
import base64
import hashlib
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, free_port, run, run_tests, wait_for  # noqa: E402

GAS = "energy.gas_storage_fill_pct"   # BR2, median
OIL = "energy.oil_stock_days"         # BR2, min
NATIONS = ("DEU", "FRA", "ITA", "POL")

# The independent verifier: only Python's standard library and Debian's
# python3-cryptography. Prints the payload on success; exit 1 otherwise.
VERIFIER = r'''
import base64, hashlib, json, sys
import cryptography
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat,
                                                          load_pem_public_key)
if not cryptography.__file__.startswith("/usr/lib/python3/dist-packages/"):
    sys.exit("not Debian's python3-cryptography: " + cryptography.__file__)
def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
try:
    jws = open(sys.argv[1]).read().strip()
    pub = load_pem_public_key(open(sys.argv[2], "rb").read())
    assert isinstance(pub, Ed25519PublicKey), "not an Ed25519 key"
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    h, p, s = jws.split(".")
    header = json.loads(b64d(h))
    assert header["alg"] == "EdDSA", "alg %r" % header["alg"]
    assert header["kid"] == hashlib.sha256(raw).hexdigest()[:32], "kid %r" % header["kid"]
    pub.verify(b64d(s), (h + "." + p).encode("ascii"))
    print(json.dumps(json.loads(b64d(p))))
except InvalidSignature:
    sys.exit("invalid signature")
except Exception as e:
    sys.exit("invalid: %r" % (e,))
'''


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def decode(jws):
    """The payload of a compact JWS, unverified (tests check signatures
    separately)."""
    return json.loads(b64d(jws.strip().split(".")[1]))


def setup(h, partners, tokens=None):
    """An aggregator with the given [partner] sections and four agents."""
    extra = ""
    for pid, kv in partners.items():
        extra += "\n[partner %s]\n" % pid + "".join("%s = %s\n" % i for i in kv.items())
    h.agents = {n: h.add_agent("%s-MIN-01" % n, n) for n in NATIONS}
    h.seq = {n: 0 for n in NATIONS}
    h.setup_aggregator(extra=extra, tokens=tokens or {"eu": "partner:EU", "ua": "partner:UA"},
                       log_level="info")
    h.start_aggregator()


def send(h, nation, indicator, value, releasable):
    """One report with one measurement, releasable_to = `releasable`."""
    h.seq[nation] += 1
    unit = "pct" if indicator == GAS else "days"
    args = ["--seq", str(h.seq[nation]), "--measure", "%s=%s:%s" % (indicator, value, unit)]
    if releasable:
        args += ["--releasable-to", releasable]
    status, detail = h.probe_one(*args, agent=h.agents[nation])
    check(status == "ACCEPTED", "report from %s: %s %s" % (nation, status, detail))


def pull(h, partner, token):
    code, body = h.https("/v1/partners/%s/summary" % partner, token=token)
    check(code == 200, "pull %s: HTTP %d: %s" % (partner, code, body[:300]))
    return body


def indicator(payload, ind):
    for i in payload["indicators"]:
        if i["id"] == ind:
            return i
    return None


def wait_release(h, partner, token, cond, what):
    """Pull until the decoded release satisfies cond; returns (jws, payload)."""
    box = {}

    def ok():
        jws = pull(h, partner, token)
        payload = decode(jws)
        if cond(payload):
            box["r"] = (jws, payload)
            return True
        return False
    wait_for(ok, what)
    return box["r"]


def ctl_verify(h, path, key=None):
    key = key or os.path.join(h.agg["keys"], "sign.pub")
    return run([h.ctl_bin, "verify", "--key", key, path])


def py_verify(path, key):
    return run(["/usr/bin/python3", "-I", "-c", VERIFIER, path, key])


# ---------------------------------------------------------------------------

def test_signed_release_verifies_independently(h):
    setup(h, {"EU": {"include": "BR2", "min_nations": "3", "min_interval": "0s"}})
    for n, v in zip(("DEU", "FRA", "ITA"), (91.5, 85, 77.25)):
        send(h, n, GAS, v, "EU")
    jws, payload = wait_release(h, "EU", "eu", lambda p: indicator(p, GAS)["released"],
                                "EU release with the gas aggregate")
    for field in ("partner", "release_id", "generated_at", "as_of", "marking", "sequence"):
        check(field in payload, "payload lacks %s: %s" % (field, sorted(payload)))
    check(payload["partner"] == "EU", "partner %r" % payload["partner"])
    check(payload["marking"] == "NATO UNCLASSIFIED RELEASABLE TO EU", payload["marking"])
    check(abs(indicator(payload, GAS)["value"] - 85) < 1e-9, "median of 91.5, 85, 77.25")
    key = os.path.join(h.agg["keys"], "sign.pub")
    good = h.write("release.jws", jws + "\n")

    r = py_verify(good, key)
    check(r.returncode == 0, "independent verifier refused a good release: %s" % r.stderr)
    check(json.loads(r.stdout)["release_id"] == payload["release_id"], "verifier payload differs")
    r = ctl_verify(h, good)
    check(r.returncode == 0 and " ok: release %s for EU" % payload["release_id"] in r.stdout,
          "resilience-ctl verify refused a good release: %s %s" % (r.stdout, r.stderr))
    r = run([h.ctl_bin, "verify", "--key", key, "--payload", good])
    check(r.returncode == 0 and json.loads(r.stdout) == payload, "--payload differs")

    # One flipped byte, in each of the three parts: both verifiers refuse.
    first, second = jws.index("."), jws.rindex(".")
    for where, pos in (("header", first // 2), ("payload", (first + second) // 2),
                       ("signature", (second + len(jws)) // 2)):
        c = jws[pos]
        flipped = jws[:pos] + ("A" if c != "A" else "B") + jws[pos + 1:]
        bad = h.write("flipped-%s.jws" % where, flipped)
        r = py_verify(bad, key)
        check(r.returncode != 0, "independent verifier accepted a flipped %s byte" % where)
        r = ctl_verify(h, bad)
        check(r.returncode == 1 and "invalid" in r.stderr and r.stdout == "",
              "ctl verify on a flipped %s byte: exit %d, %s" % (where, r.returncode, r.stderr))
    # Another key (an agent's) does not verify it either.
    r = ctl_verify(h, good, key=os.path.join(h.agents["DEU"]["keys"], "sign.pub"))
    check(r.returncode == 1 and "kid" in r.stderr, "wrong key: %d %s" % (r.returncode, r.stderr))


def test_min_nations(h):
    setup(h, {"EU": {"include": "%s, %s" % (GAS, OIL), "min_nations": "3",
                     "min_interval": "0s"}})
    send(h, "DEU", GAS, 90, "EU")
    send(h, "FRA", GAS, 80, "EU")
    _, p = wait_release(h, "EU", "eu", lambda p: indicator(p, GAS)["nations_contributing"] == 2,
                        "EU release with two nations contributing gas")
    g = indicator(p, GAS)
    check(g["released"] is False and "value" not in g and "status" not in g,
          "aggregate of two nations released with min_nations = 3: %s" % g)
    send(h, "ITA", GAS, 70, "EU")
    _, p = wait_release(h, "EU", "eu", lambda p: indicator(p, GAS)["nations_contributing"] == 3,
                        "EU release with three nations contributing gas")
    g = indicator(p, GAS)
    check(g["released"] is True and abs(g["value"] - 80) < 1e-9,
          "aggregate of three nations not released: %s" % g)


def numbers_in(doc):
    if isinstance(doc, bool):
        return []
    if isinstance(doc, (int, float)):
        return [float(doc)]
    if isinstance(doc, dict):
        return [x for v in doc.values() for x in numbers_in(v)]
    if isinstance(doc, list):
        return [x for v in doc for x in numbers_in(v)]
    return []


def test_consent(h):
    setup(h, {"EU": {"include": "BR2", "min_nations": "3", "min_interval": "0s"},
              "UA": {"include": OIL, "min_nations": "1", "min_interval": "0s"}})
    for n, v in (("DEU", 95), ("FRA", 101), ("ITA", 120)):
        send(h, n, OIL, v, "EU")
    send(h, "POL", OIL, 12.25, "UA")          # lowest: would be the min if it leaked
    send(h, "DEU", GAS, 43.75, "")            # releasable to nobody
    send(h, "FRA", GAS, 66, "EU,UA")

    _, eu = wait_release(h, "EU", "eu",
                         lambda p: indicator(p, OIL)["nations_contributing"] == 3 and
                         indicator(p, GAS)["nations_contributing"] == 1,
                         "EU release with three oil and one gas contributions")
    oil = indicator(eu, OIL)
    check(oil["released"] and abs(oil["value"] - 95) < 1e-9,
          "EU oil aggregate must be the min of 95, 101, 120 only: %s" % oil)
    nums = numbers_in(eu)
    for leaked in (12.25, 43.75):
        check(not any(abs(x - leaked) < 1e-9 for x in nums),
              "a value not releasable to EU (%s) is in EU's release" % leaked)
    nations = {n["nation"]: {v["indicator"]: v["value"] for v in n["values"]}
               for n in eu["nations"]}
    check("POL" not in nations, "POL appears in EU's release: %s" % nations.get("POL"))
    check(GAS not in nations["DEU"], "DEU's unreleasable gas value appears: %s" % nations["DEU"])
    check(nations["DEU"][OIL] == 95 and nations["FRA"] == {OIL: 101, GAS: 66},
          "releasable nation values missing: %s" % nations)

    _, ua = wait_release(h, "UA", "ua", lambda p: indicator(p, OIL)["nations_contributing"] == 1,
                         "UA release with POL's oil value")
    ua_nations = {n["nation"]: n["values"] for n in ua["nations"]}
    check(list(ua_nations) == ["POL"] and ua_nations["POL"][0]["value"] == 12.25,
          "UA's release must hold exactly POL's releasable value: %s" % ua_nations)
    check(abs(indicator(ua, OIL)["value"] - 12.25) < 1e-9, "UA aggregate: %s" % indicator(ua, OIL))
    check(indicator(ua, GAS) is None, "UA does not include gas")


def test_partner_scope(h):
    setup(h, {"EU": {"include": "BR2"}, "UA": {"include": OIL}})
    for path in ("/v1/summary", "/v1/requirements", "/v1/nations", "/v1/nations/DEU",
                 "/v1/nations/POL", "/v1/indicators/%s/history" % OIL, "/v1/partners/UA/summary",
                 "/metrics"):
        code, body = h.https(path, token="eu")
        check(code == 403, "partner token on %s: HTTP %d %s" % (path, code, body[:200]))
    check(decode(pull(h, "EU", "eu"))["partner"] == "EU", "own release")
    check(decode(pull(h, "UA", "staff"))["partner"] == "UA", "staff reads any release")


# --- push -------------------------------------------------------------------

class Receiver:
    """A partner's HTTPS inbox: records each POST (its Idempotency-Key,
    Authorization and release), answers 200."""

    def __init__(self, h, name, port, token=None, client_ca=None):
        self.crt, self.key = h.make_cert(name)
        self.port, self.token, self.client_ca = port, token, client_ca
        self.received = []           # (monotonic time, payload, idempotency key)
        self.lock = threading.Lock()
        self.server = None
        self.hang = None

    def start(self):
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.headers.get("Content-Type") == "application/jose"
                if recv.token is not None:
                    ok = ok and self.headers.get("Authorization") == "Bearer " + recv.token
                if ok:
                    with recv.lock:
                        recv.received.append((time.monotonic(), decode(body.decode()),
                                              self.headers.get("Idempotency-Key"), body))
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.crt, self.key)
        if self.client_ca is not None:
            # mutual TLS: only the aggregator's client certificate gets in
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.server = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def start_hanging(self):
        """Accept connections and never answer (a slow partner)."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.hang = s
        self.hung = []

        def loop():
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                self.hung.append(c)
        threading.Thread(target=loop, daemon=True).start()

    def stop_hanging(self):
        self.hang.close()
        for c in self.hung:
            c.close()

    def seqs(self):
        with self.lock:
            return [p["sequence"] for _, p, _, _ in self.received]


def first_arrivals(recv):
    seen, order = set(), []
    for s in recv.seqs():
        if s not in seen:
            seen.add(s)
            order.append(s)
    return order


def test_push_outage_in_order(h):
    eu_port, ua_port = free_port(), free_port()
    eu = Receiver(h, "eu-inbox", eu_port, token="eu-inbox-secret-token")
    client_crt, client_key = h.make_cert("aggregator-client", cn="resilience-aggregator")
    ua = Receiver(h, "ua-inbox", ua_port, client_ca=client_crt)
    token_file = h.write("partner-eu.token", eu.token + "\n", mode=0o600)
    common = {"interval": "2s", "min_interval": "1s", "backoff_max": "2s", "timeout": "2s"}
    eu_conf = dict(common, include="BR2", url="https://127.0.0.1:%d/inbox" % eu_port,
                   ca_file=eu.crt, token_file=token_file)
    ua_conf = dict(common, include=OIL, min_nations="1",
                   url="https://localhost:%d/inbox" % ua_port, ca_file=ua.crt,
                   client_cert=client_crt, client_key=client_key)
    ua.start()
    eu.start_hanging()
    setup(h, {"EU": eu_conf, "UA": ua_conf})
    outage_began = time.monotonic()

    # While EU hangs: UA keeps receiving, EU nothing.
    wait_for(lambda: len(ua.seqs()) >= 3, "UA receives releases while EU hangs")
    check(not eu.received, "EU received while hanging")
    send(h, "POL", OIL, 33, "UA")             # a change UA must see promptly too

    # kill -9 the aggregator while EU is down (connection refused now) and
    # start it again: the outbox is durable, nothing made before is lost.
    eu.stop_hanging()
    h.aggregator.kill9()
    h.start_aggregator()
    before = len(ua.seqs())
    wait_for(lambda: len(ua.seqs()) >= before + 3, "UA receives releases after the restart")
    metrics = h.https("/metrics")[1]
    check('resilience_partner_delivery_failures_total{partner="EU"}' in metrics,
          "no EU failure metric:\n" + metrics[-1500:])
    lag = [l for l in metrics.splitlines()
           if l.startswith('resilience_partner_delivery_lag_seconds{partner="EU"}')]
    check(lag and float(lag[0].split()[-1]) > 0, "EU lag not reported: %s" % lag)
    ua_during_outage = [t for t, _, _, _ in ua.received]
    check(not eu.received, "EU received while down")

    # EU returns: every release stored for EU arrives, in order, none lost.
    eu.start()
    eu_back = time.monotonic()

    def eu_complete():
        rows = h.store_query("SELECT seq FROM releases WHERE partner = 'EU' ORDER BY seq")
        pending = h.store_query("SELECT count(*) FROM releases WHERE partner = 'EU' AND "
                                "delivered_at_ms IS NULL")[0][0]
        got = set(eu.seqs())
        return rows and pending == 0 and all(r[0] in got for r in rows)
    wait_for(eu_complete, "EU receives its whole outbox", timeout=90 * SLOW)
    order = first_arrivals(eu)
    check(order == list(range(1, len(order) + 1)),
          "EU releases not all delivered in order from 1: %s" % order)
    print("  EU order %s; UA during outage %d; UA total %d" % (order, len(ua_during_outage), len(ua.seqs())))
    check(len(order) >= 4, "expected several EU releases made during the outage: %s" % order)
    for _, payload, idem, _ in eu.received:
        check(idem == payload["release_id"], "Idempotency-Key %r != release_id %r" % (
            idem, payload["release_id"]))
    # Each pushed release verifies with the aggregator's key.
    last_body = eu.received[-1][3]
    r = ctl_verify(h, h.write("pushed.jws", last_body.decode()))
    check(r.returncode == 0, "pushed release does not verify: %s" % r.stderr)

    # UA was never held back: it had releases from the whole outage before
    # EU came back, and its own order is intact.
    check(all(t < eu_back for t in ua_during_outage) and len(ua_during_outage) >= 6,
          "UA received %d releases during EU's outage" % len(ua_during_outage))
    ua_order = first_arrivals(ua)
    check(ua_order == sorted(ua_order) and ua_order[0] == 1, "UA order: %s" % ua_order)
    check(any(abs(indicator(p, OIL).get("value", -1) - 33) < 1e-9 for _, p, _, _ in ua.received
              if indicator(p, OIL).get("released")), "UA never received POL's oil value")
    check(outage_began < eu_back, "sanity")
    ua.stop()
    eu.stop()


if __name__ == "__main__":
    run_tests(globals())
