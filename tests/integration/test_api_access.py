#!/usr/bin/env python3
"""Access matrix of the HTTPS API, against the real binary: every route x
every kind of caller -> the exact status.

Callers: no credentials, an unknown bearer token, staff, nation:DEU,
partner:EU and partner:UA by bearer token; and by client certificate
([https] client_ca + [client NAME]): staff, nation:DEU, partner:EU, a
certificate from the right CA whose subject is in no [client] section, and
one from another CA. A bearer token, when present, decides alone (a bad
token with a good certificate is 401).

Rules checked: 404 before 401 (an unknown route says so to anyone), 401
without valid credentials (with WWW-Authenticate), 403 for a role outside
its scope (a nation token cannot read another nation, known or not, nor
/v1/nations; a partner token cannot read /v1/summary or any nation, nor
another partner's release), 405 for anything but GET/HEAD, every error a
JSON {"error", "detail"}.
"""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import api_client_ca, api_client_cert, api_request, check, run_tests  # noqa: E402

# Who asks, and how: (token name or literal or None, certificate name or None).
CALLERS = {
    "none": (None, None),
    "bad": ("not-a-configured-token", None),
    "staff": ("staff", None),
    "deu": ("deu", None),
    "eu": ("eu", None),
    "ua": ("ua", None),
    "cert-staff": (None, "staff"),
    "cert-deu": (None, "deu"),
    "cert-eu": (None, "eu"),
    "cert-unmapped": (None, "unmapped"),
    "cert-foreign": (None, "foreign"),
    "bad+cert-staff": ("not-a-configured-token", "staff"),
}

# The same answer for a role whichever way it signed in.
SAME_AS = {"cert-staff": "staff", "cert-deu": "deu", "cert-eu": "eu",
           "cert-unmapped": "anon", "cert-foreign": "anon", "none": "anon",
           "bad+cert-staff": "bad"}

PUBLIC = {"anon": 200, "bad": 200, "staff": 200, "deu": 200, "eu": 200, "ua": 200}
PAGE = {"anon": 200, "bad": 401, "staff": 200, "deu": 200, "eu": 403, "ua": 403}
STAFF_ONLY = {"anon": 401, "bad": 401, "staff": 200, "deu": 403, "eu": 403, "ua": 403}
STAFF_NATION = {"anon": 401, "bad": 401, "staff": 200, "deu": 200, "eu": 403, "ua": 403}
ANY_ROLE = {"anon": 401, "bad": 401, "staff": 200, "deu": 200, "eu": 200, "ua": 200}

MATRIX = [
    ("/", PAGE),
    ("/assets/app.js", PAGE),
    ("/assets/app.css", PAGE),
    ("/healthz", PUBLIC),
    ("/readyz", PUBLIC),
    ("/v1/openapi.json", PUBLIC),
    ("/metrics", STAFF_ONLY),
    ("/v1/me", ANY_ROLE),
    ("/v1/summary", STAFF_NATION),
    ("/v1/summary?at=2026-01-01T00:00:00Z", STAFF_NATION),
    ("/v1/requirements", STAFF_NATION),
    ("/v1/nations", STAFF_ONLY),
    ("/v1/nations/DEU", STAFF_NATION),
    ("/v1/nations/FRA", {"anon": 401, "bad": 401, "staff": 200, "deu": 403, "eu": 403, "ua": 403}),
    ("/v1/nations/ZZZ", {"anon": 401, "bad": 401, "staff": 404, "deu": 403, "eu": 403, "ua": 403}),
    ("/v1/indicators/energy.oil_stock_days/history", STAFF_NATION),
    ("/v1/indicators/no.such.indicator/history",
     {"anon": 401, "bad": 401, "staff": 404, "deu": 404, "eu": 403, "ua": 403}),
    ("/v1/partners/EU/summary", {"anon": 401, "bad": 401, "staff": 200, "deu": 403, "eu": 200,
                                 "ua": 403}),
    ("/v1/partners/UA/summary", {"anon": 401, "bad": 401, "staff": 200, "deu": 403, "eu": 403,
                                 "ua": 200}),
    ("/v1/partners/XX/summary", {"anon": 401, "bad": 401, "staff": 404, "deu": 403, "eu": 403,
                                 "ua": 403}),
    ("/v1/nope", {k: 404 for k in PUBLIC}),
    ("/v1/summary/", {k: 404 for k in PUBLIC}),
    ("/v1/nations/DEU/extra", {k: 404 for k in PUBLIC}),
]


def setup(h):
    """Aggregator with tokens, two partners and client certificates."""
    ca = api_client_ca(h)
    foreign_ca = api_client_ca(h, "foreign-ca")
    certs = {}
    subjects = {}
    for name, subj in (("staff", "/C=BE/O=NATO/OU=Staff/CN=duty officer"),
                       ("deu", "/C=DE/O=Bundesministerium des Innern/CN=lagezentrum"),
                       ("eu", "/C=BE/O=European Union/CN=ERCC, Brussels"),
                       ("unmapped", "/C=BE/O=NATO/CN=someone else")):
        crt, key, subjects[name] = api_client_cert(h, ca, name, subj)
        certs[name] = (crt, key)
    crt, key, _ = api_client_cert(h, foreign_ca, "foreign", "/C=BE/O=NATO/OU=Staff/CN=duty officer")
    certs["foreign"] = (crt, key)
    clients = ""
    for name, role in (("staff", "staff"), ("deu", "nation:DEU"), ("eu", "partner:EU")):
        clients += "[client %s]\nsubject = %s\nrole = %s\n\n" % (name, subjects[name], role)
    conf = h.setup_aggregator(
        tokens={"deu": "nation:DEU", "eu": "partner:EU", "ua": "partner:UA"},
        extra="[partner EU]\ninclude = BR2, BR5\n\n[partner UA]\ninclude = BR6\n\n" + clients)
    # client_ca belongs in [https], which the harness has already written.
    with open(conf) as f:
        text = f.read()
    text = text.replace("threads = 2\n", "threads = 2\nclient_ca = %s\n" % ca[0], 1)
    with open(conf, "w") as f:
        f.write(text)
    h.start_aggregator()
    return certs


def ask(h, certs, caller, path, method="GET"):
    token, cert = CALLERS[caller]
    crt, key = certs[cert] if cert else (None, None)
    return api_request(h, path, token=token, cert=crt, key=key, method=method)


def check_error_body(path, caller, status, headers, body):
    if status < 400:
        return
    check(headers.get("content-type") == "application/json", "%s as %s: %d with %r" % (
        path, caller, status, headers.get("content-type")))
    doc = json.loads(body)
    check(set(doc) == {"error", "detail"} and doc["detail"], "%s as %s: error body %r" % (
        path, caller, doc))
    if status == 401:
        check(headers.get("www-authenticate", "").startswith("Bearer"),
              "%s as %s: 401 without WWW-Authenticate" % (path, caller))


def test_access_matrix(h):
    certs = setup(h)
    wrong = []
    for path, expected in MATRIX:
        for caller in CALLERS:
            want = expected[SAME_AS.get(caller, caller)]
            status, headers, body = ask(h, certs, caller, path)
            if status != want:
                wrong.append("%-48s %-15s got %d, expected %d: %s" % (
                    path, caller, status, want, body[:120]))
                continue
            check_error_body(path, caller, status, headers, body)
    check(not wrong, "%d wrong answers:\n  %s" % (len(wrong), "\n  ".join(wrong)))


def test_head_and_other_methods(h):
    certs = setup(h)
    for path, expected in MATRIX[:12]:
        for caller in ("none", "staff", "deu", "eu"):
            want = expected[SAME_AS.get(caller, caller)]
            status, headers, body = ask(h, certs, caller, path, method="HEAD")
            check(status == want and body == b"", "HEAD %s as %s: %d %r" % (path, caller, status,
                                                                           body[:80]))
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for caller in ("none", "staff"):
            status, headers, body = ask(h, certs, caller, "/v1/summary", method=method)
            check(status == 405, "%s /v1/summary as %s: %d" % (method, caller, status))
            check(headers.get("allow") == "GET, HEAD", "Allow: %r" % headers.get("allow"))
            check_error_body("/v1/summary", caller, status, headers, body)


def test_who_am_i(h):
    certs = setup(h)
    for caller, role, via, nation, partner in (
            ("staff", "staff", "token", None, None),
            ("deu", "nation", "token", "DEU", None),
            ("eu", "partner", "token", None, "EU"),
            ("cert-staff", "staff", "certificate", None, None),
            ("cert-deu", "nation", "certificate", "DEU", None),
            ("cert-eu", "partner", "certificate", None, "EU")):
        status, _, body = ask(h, certs, caller, "/v1/me")
        check(status == 200, "/v1/me as %s: %d" % (caller, status))
        doc = json.loads(body)
        check((doc["role"], doc["via"], doc["nation"], doc["partner"]) ==
              (role, via, nation, partner), "/v1/me as %s: %r" % (caller, doc))


def test_client_configuration_errors(h):
    """[client] and the new [https] keys are checked like every other key:
    --check-config names the file and line, start-up refuses."""
    from harness import run
    ca = api_client_ca(h)
    conf = h.setup_aggregator()
    with open(conf) as f:
        base = f.read()
    with_ca = base.replace("threads = 2\n", "threads = 2\nclient_ca = %s\n" % ca[0], 1)
    cases = [
        (base + "[client x]\nsubject = CN=x\nrole = staff\n", "needs client_ca"),
        (with_ca + "[client x]\nsubject = CN=x\nrole = king\n", "role: 'king'"),
        (with_ca + "[client x]\nrole = staff\n", "missing required key 'subject' in [client x]"),
        (with_ca + "[client x]\nsubject = CN=x\n", "missing required key 'role' in [client x]"),
        (with_ca + "[client x]\nsubject = CN=x\nrole = nation:ZZZ\n", "nation 'ZZZ'"),
        (with_ca + "[client x]\nsubject = CN=x\nrole = staff\ncolour = red\n",
         "unknown key 'colour' in [client x]"),
        (with_ca + "[client x]\nsubject = CN=x\nrole = staff\n\n"
         "[client y]\nsubject = CN=x\nrole = nation:DEU\n", "same subject"),
        (base.replace("threads = 2\n", "threads = 2\nhsts = maybe\n", 1), "hsts: 'maybe'"),
    ]
    for i, (text, message) in enumerate(cases):
        path = h.write("bad-%d.conf" % i, text)
        r = run([h.aggregator_bin, "-c", path, "--check-config"])
        check(r.returncode == 1 and message in r.stderr and "bad-%d.conf" % i in r.stderr,
              "case %d: exit %d, stderr %r (wanted %r)" % (i, r.returncode, r.stderr, message))
    # A client_ca that is not a PEM file stops start-up with a message naming it.
    bad_ca = h.write("not-a-ca.pem", "hello\n")
    path = h.write("bad-ca.conf", base.replace("threads = 2\n", "threads = 2\nclient_ca = %s\n"
                                               % bad_ca, 1))
    d = h.start_aggregator(conf=path, wait_ready=False)
    d.proc.wait(timeout=60)
    d.expected_dead = True
    check(d.proc.returncode == 1 and "not-a-ca.pem" in d.log_text(), "bad client_ca: exit %r, "
          "log %s" % (d.proc.returncode, d.log_text()[-400:]))


if __name__ == "__main__":
    run_tests(globals())
