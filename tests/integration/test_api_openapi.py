#!/usr/bin/env python3
"""The OpenAPI document (GET /v1/openapi.json) and the server agree.

Walks the document and probes the real server: every documented path
(template variables filled from their examples) answers, for staff, a
nation token and no token, with a status the document lists for it, and
never 404 for staff; every documented query parameter is accepted and an
undocumented one is refused with a documented 400; documented content
types are the ones served. The other direction: paths near the documented
ones that are not in the document answer 404 (the server's own route
table is compared with the document entry by entry in the unit test
tests/unit/test_http.c, test_openapi_matches_route_table).
"""
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import api_request, check, run_tests  # noqa: E402

UNDOCUMENTED = ["/v1", "/v1/", "/v1/indicators", "/v1/indicators/energy.oil_stock_days",
                "/v1/partners", "/v1/partners/EU", "/v1/nations/DEU/history", "/assets",
                "/assets/", "/assets/other.js", "/index.html", "/favicon.ico", "/v2/summary",
                "/metrics/", "/v1/openapi.yaml", "/v1/openapi.json/", "//v1/summary",
                "/v1/summary.json", "/healthz/live", "/v1/me/"]


def resolve(doc, obj):
    """Follow a local $ref."""
    while isinstance(obj, dict) and "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def concrete(doc, path, op):
    """The documented path with every {variable} replaced by its example."""
    params = [resolve(doc, p) for p in op.get("parameters", [])]
    for p in params:
        if p["in"] == "path":
            check("example" in p, "%s: path parameter %s has no example" % (path, p["name"]))
            path = path.replace("{%s}" % p["name"], str(p["example"]))
    check("{" not in path, "unfilled template in %s" % path)
    return path, params


def setup(h):
    h.setup_aggregator(tokens={"deu": "nation:DEU", "eu": "partner:EU"},
                       extra="[partner EU]\ninclude = BR2\n")
    h.start_aggregator()
    status, headers, body = api_request(h, "/v1/openapi.json", token=None)
    check(status == 200 and headers.get("content-type") == "application/json",
          "openapi.json: %d %r" % (status, headers.get("content-type")))
    doc = json.loads(body)
    check(str(doc.get("openapi", "")).startswith("3."), "not OpenAPI 3: %r" % doc.get("openapi"))
    check(doc.get("paths"), "no paths")
    return doc


def test_every_documented_route_answers_as_documented(h):
    doc = setup(h)
    probed = 0
    for path, item in sorted(doc["paths"].items()):
        check(set(item) <= {"get", "parameters", "summary", "description"},
              "%s documents methods %r: the API is read-only" % (path, sorted(item)))
        op = item["get"]
        url, params = concrete(doc, path, op)
        documented = {int(code) for code in op["responses"]}
        for caller in ("staff", "deu", "eu", None):
            status, headers, body = api_request(h, url, token=caller)
            probed += 1
            check(status in documented, "GET %s as %s: %d is not documented (%s)" % (
                url, caller, status, sorted(documented)))
            if caller == "staff":
                check(status != 404, "documented %s answers 404 for staff" % url)
                content = op["responses"][str(status)]
                content = resolve(doc, content).get("content", {})
                ctype = headers.get("content-type", "").split(";")[0]
                check(not content or ctype in content, "GET %s: content type %s not in %r" % (
                    url, ctype, sorted(content)))
        # Documented query parameters are accepted (one at a time, example or
        # a representative value); an undocumented one is refused with 400.
        now = int(time.time() * 1000)
        samples = {"at": "2026-01-01T00:00:00Z", "format": "csv", "from": str(now - 7200000),
                   "to": str(now), "step": "15m"}
        for p in params:
            if p["in"] != "query":
                continue
            value = str(p.get("example", samples.get(p["name"], "1")))
            status, _, body = api_request(h, "%s?%s=%s" % (url, p["name"], value))
            check(status in documented and status < 400, "GET %s?%s=%s: %d %s" % (
                url, p["name"], value, status, body[:200]))
        if path not in ("/", "/assets/app.js", "/assets/app.css"):
            status, _, _ = api_request(h, url + "?undocumented=1")
            check(status == 400 and 400 in documented, "GET %s?undocumented=1: %d" % (url, status))
    check(probed >= 4 * 14, "only %d probes" % probed)


def test_undocumented_routes_do_not_exist(h):
    doc = setup(h)
    for path in UNDOCUMENTED:
        check(path not in doc["paths"], "%s is documented" % path)
        for caller in ("staff", None):
            status, _, body = api_request(h, path, token=caller)
            check(status == 404, "GET %s as %s: %d (undocumented routes must not exist): %s" % (
                path, caller, status, body[:200]))


if __name__ == "__main__":
    run_tests(globals())
