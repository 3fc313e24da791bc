#!/usr/bin/env python3
"""Aggregation semantics (ARCHITECTURE section 5) through the real binary,
against numbers computed by hand below.

A small taxonomy with one indicator per method (sum, mean, median, min,
max), thresholds in both directions and max_age 1 h (2 h for t.max), four
nations AAA..DDD. Reports go through the real ingest (signed, CURVE) with
chosen observation times relative to N, the moment the test starts:

  AAA  seq 1 at N-40m: t.sum=50
       seq 2 at N-10m: t.sum=4  t.mean=40 t.median=10 t.min=20 t.max=12
  BBB  seq 1 at N-90m: t.sum=100 t.mean=60 t.median=1 t.min=2 t.max=30
  CCC  seq 1 at N-5m:  t.sum=8  t.mean=85 t.median=5 t.min=7  t.max=13
       seq 2 at N-30m: t.sum=9  (sent AFTER seq 1: a late arrival)
  DDD  nothing (missing everywhere)

Covered: current/stale/missing (BBB is stale for the 1 h indicators but
current for t.max), every method, green/amber/red in both directions with
values exactly on thresholds, per-requirement worst status and counts,
at= before and after a change (with the late arrival counted), history
steps, the nation view, the nations overview, CSV of every tabular route,
and what a nation token does not see.
"""
import csv
import io
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (api_json, api_request, api_send, api_use_taxonomy, check,  # noqa: E402
                     run_tests)

MIN = 60 * 1000

INDICATORS = """id,requirement,unit,direction,amber,red,method,max_age_hours,description
t.sum,BR1,n,higher_is_better,10,5,sum,1,sum of counts
t.mean,BR1,pct,lower_is_better,50,80,mean,1,mean share
t.median,BR2,days,higher_is_better,10,5,median,1,median days
t.min,BR2,days,higher_is_better,10,5,min,1,weakest nation
t.max,X,hours,lower_is_better,12,24,max,2,worst delay
"""
NATIONS = """code,name,eu_member
AAA,Alpha,yes
BBB,Bravo,no
CCC,Charlie,yes
DDD,Delta,no
"""
UNITS = {"t.sum": "n", "t.mean": "pct", "t.median": "days", "t.min": "days", "t.max": "hours"}


def m(**values):
    return {k.replace("_", "."): (v, UNITS[k.replace("_", ".")]) for k, v in values.items()}


def seed(h):
    """Start the aggregator on the test taxonomy and send the reports of the
    module docstring; returns N (ms)."""
    api_use_taxonomy(h, INDICATORS, NATIONS)
    agents = {c: h.add_agent("%s-MIN-01" % c, c) for c in ("AAA", "BBB", "CCC", "DDD")}
    h.setup_aggregator(tokens={"aaa": "nation:AAA"})
    h.start_aggregator()
    n = int(time.time() * 1000)
    api_send(h, agents["AAA"], m(t_sum=50), n - 40 * MIN, 1)
    api_send(h, agents["AAA"], m(t_sum=4, t_mean=40, t_median=10, t_min=20, t_max=12),
             n - 10 * MIN, 2)
    api_send(h, agents["BBB"], m(t_sum=100, t_mean=60, t_median=1, t_min=2, t_max=30),
             n - 90 * MIN, 1)
    api_send(h, agents["CCC"], m(t_sum=8, t_mean=85, t_median=5, t_min=7, t_max=13),
             n - 5 * MIN, 1)
    api_send(h, agents["CCC"], m(t_sum=9), n - 30 * MIN, 2)
    return n


def by_id(doc, key="indicators"):
    return {e["id"]: e for e in doc[key]}


def expect(entry, **want):
    for k, v in want.items():
        got = entry.get(k)
        check(got == v, "%s: %s is %r, expected %r" % (entry.get("id", entry.get("at")), k, got, v))


def test_present_summary_every_method_and_threshold(h):
    seed(h)
    doc = api_json(h, "/v1/summary")
    check(doc["nations"] == 4, "nations: %r" % doc["nations"])
    ind = by_id(doc)
    expect(ind["t.sum"], value=12, min=4, median=6, max=8, nations_reporting=2,
           nations_stale=1, nations_missing=1, stale=["BBB"], missing=["DDD"],
           status={"green": 0, "amber": 1, "red": 1})
    expect(ind["t.mean"], value=62.5, min=40, max=85, nations_reporting=2, nations_stale=1,
           status={"green": 1, "amber": 0, "red": 1})
    # 10 is not below amber 10 (green); 5 is not below red 5 but below amber (amber).
    expect(ind["t.median"], value=7.5, median=7.5, status={"green": 1, "amber": 1, "red": 0})
    expect(ind["t.min"], value=7, min=7, max=20, status={"green": 1, "amber": 1, "red": 0})
    # lower_is_better: 12 is not above amber 12 (green), 13 amber, 30 above red 24.
    # BBB's 90-minute-old value is current under t.max's 2 h max_age.
    expect(ind["t.max"], value=30, min=12, max=30, nations_reporting=3, nations_stale=0,
           nations_missing=1, stale=[], missing=["DDD"],
           status={"green": 1, "amber": 1, "red": 1})

    req = by_id(doc, "requirements")
    expect(req["BR1"], indicators=2, status={"green": 0, "amber": 0, "red": 2, "no_data": 2},
           nations={"AAA": "red", "BBB": "no_data", "CCC": "red", "DDD": "no_data"})
    expect(req["BR2"], indicators=2, status={"green": 1, "amber": 1, "red": 0, "no_data": 2},
           nations={"AAA": "green", "BBB": "no_data", "CCC": "amber", "DDD": "no_data"})
    expect(req["X"], indicators=1, status={"green": 1, "amber": 1, "red": 1, "no_data": 1},
           nations={"AAA": "green", "BBB": "red", "CCC": "amber", "DDD": "no_data"})
    for r in ("BR3", "BR4", "BR5", "BR6", "BR7"):
        expect(req[r], indicators=0, status={"green": 0, "amber": 0, "red": 0, "no_data": 4})

    # /v1/requirements is the same block on its own.
    reqs = api_json(h, "/v1/requirements")
    check(reqs["requirements"] == doc["requirements"], "requirements differ from the summary's")


def test_at_before_and_after_a_change_with_a_late_arrival(h):
    n = seed(h)
    # 20 minutes ago: AAA still had 50; CCC's late-arriving 9 (observed at
    # N-30m, received last) counts; BBB (70 minutes old) is stale.
    doc = api_json(h, "/v1/summary?at=%d" % (n - 20 * MIN))
    expect(by_id(doc)["t.sum"], value=59, min=9, max=50, nations_reporting=2, nations_stale=1,
           nations_missing=1, status={"green": 1, "amber": 1, "red": 0})  # 50 green, 9 amber
    check(doc["at_ms"] == n - 20 * MIN, "at_ms %r" % doc["at_ms"])
    # 7 minutes ago: AAA changed to 4, CCC still 9.
    doc = api_json(h, "/v1/summary?at=%d" % (n - 7 * MIN))
    expect(by_id(doc)["t.sum"], value=13, nations_reporting=2)
    # RFC 3339 works the same; before any observation everything is missing.
    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((n - 3 * 60 * MIN) / 1000))
    doc = api_json(h, "/v1/summary?at=" + t)
    expect(by_id(doc)["t.sum"], value=None, nations_reporting=0, nations_missing=4)
    # The nation view follows at= too.
    view = api_json(h, "/v1/nations/AAA?at=%d" % (n - 20 * MIN))
    expect(by_id(view)["t.sum"], value=50, state="current", observed_at_ms=n - 40 * MIN)
    expect(by_id(view)["t.mean"], value=None, state="missing")


def test_history_steps(h):
    n = seed(h)
    doc = api_json(h, "/v1/indicators/t.sum/history?from=%d&to=%d&step=10m" % (n - 50 * MIN, n))
    check(doc["step_ms"] == 10 * MIN and doc["from_ms"] == n - 50 * MIN and doc["to_ms"] == n,
          "history frame: %r" % {k: doc[k] for k in ("from_ms", "to_ms", "step_ms")})
    want = [  # (offset minutes, value, reporting, stale, missing)
        (-50, 100, 1, 0, 3),   # only BBB (40 min old)
        (-40, 150, 2, 0, 2),   # AAA's 50 arrives
        (-30, 159, 3, 0, 1),   # CCC's late 9; BBB exactly 60 min old: still current
        (-20, 59, 2, 1, 1),    # BBB stale
        (-10, 13, 2, 1, 1),    # AAA changes to 4
        (0, 12, 2, 1, 1),      # CCC changes to 8
    ]
    check(len(doc["points"]) == len(want), "%d points" % len(doc["points"]))
    for p, (off, value, rep, stale, missing) in zip(doc["points"], want):
        check(p["at_ms"] == n + off * MIN, "point at %r, expected N%+dm" % (p["at_ms"], off))
        expect(p, value=value, nations_reporting=rep, nations_stale=stale,
               nations_missing=missing)
    # Each point equals the summary at= that moment.
    for p in doc["points"]:
        s = by_id(api_json(h, "/v1/summary?at=%d" % p["at_ms"]))["t.sum"]
        for k in ("value", "min", "median", "max", "nations_reporting", "nations_stale",
                  "nations_missing", "status"):
            check(s[k] == p[k], "history point %d: %s %r != summary's %r" % (p["at_ms"], k,
                                                                              p[k], s[k]))
    # Bounds: at most 1000 points; from after to; bad step; unknown indicator.
    for q in ("from=%d&to=%d&step=1s" % (n - 3600 * 1000, n), "from=%d&to=%d" % (n, n - 1),
              "step=0", "step=soon", "from=yesterday", "until=1"):
        status, _, body = api_request(h, "/v1/indicators/t.sum/history?" + q)
        check(status == 400, "history?%s: %d %s" % (q, status, body[:200]))
    status, _, _ = api_request(h, "/v1/indicators/t.nope/history")
    check(status == 404, "unknown indicator: %d" % status)
    # Defaults: the last 24 hours, hourly, 25 points.
    doc = api_json(h, "/v1/indicators/t.max/history")
    check(len(doc["points"]) == 25 and doc["step_ms"] == 3600 * 1000, "default history: %d"
          % len(doc["points"]))


def test_nation_view_and_nations_overview(h):
    seed(h)
    bbb = api_json(h, "/v1/nations/BBB")
    check(bbb["counts"] == {"current": 1, "stale": 4, "missing": 0}, "BBB counts %r" % bbb["counts"])
    e = by_id(bbb)
    # A stale value is still shown, with its status, so an operator sees what expired.
    expect(e["t.sum"], state="stale", value=100, status="green", agent_id="BBB-MIN-01")
    expect(e["t.max"], state="current", value=30, status="red")
    check(bbb["requirements"] == {"BR1": "no_data", "BR2": "no_data", "BR3": "no_data",
                                  "BR4": "no_data", "BR5": "no_data", "BR6": "no_data",
                                  "BR7": "no_data", "X": "red"}, "BBB requirements %r"
          % bbb["requirements"])
    ddd = api_json(h, "/v1/nations/DDD")
    check(ddd["counts"] == {"current": 0, "stale": 0, "missing": 5}, "DDD %r" % ddd["counts"])

    ov = {n["nation"]: n for n in api_json(h, "/v1/nations")["nations"]}
    check(sorted(ov) == ["AAA", "BBB", "CCC", "DDD"], "nations %r" % sorted(ov))
    expect(ov["AAA"], current=5, stale=0, missing=0)
    expect(ov["BBB"], current=1, stale=4, missing=0)
    expect(ov["DDD"], current=0, stale=0, missing=5, agents=[], last_report=None)
    check([a["agent_id"] for a in ov["CCC"]["agents"]] == ["CCC-MIN-01"], "CCC agents")
    check(ov["CCC"]["agents"][0]["reports"] == 2 and ov["CCC"]["agents"][0]["last_sequence"] == 2,
          "CCC agent %r" % ov["CCC"]["agents"][0])
    check(ov["AAA"]["last_report_ms"] is not None and ov["AAA"]["last_report_ms"] > 0,
          "AAA last report %r" % ov["AAA"]["last_report_ms"])


def test_csv_forms(h):
    n = seed(h)

    def table(path, **kw):
        status, headers, body = api_request(h, path, **kw)
        check(status == 200, "%s: %d %s" % (path, status, body[:200]))
        check(headers.get("content-type", "").startswith("text/csv"), "%s: %r" % (
            path, headers.get("content-type")))
        check(b"\r\n" in body, "%s: CSV rows end in CRLF" % path)
        return list(csv.DictReader(io.StringIO(body.decode())))

    rows = {r["indicator"]: r for r in table("/v1/summary?format=csv")}
    check(rows["t.sum"]["value"] == "12" and rows["t.sum"]["nations_stale"] == "1" and
          rows["t.mean"]["value"] == "62.5" and rows["t.sum"]["red"] == "1",
          "summary CSV %r" % rows["t.sum"])
    # Accept: text/csv does the same; format=json overrides it.
    rows2 = {r["indicator"]: r for r in table("/v1/summary", headers={"Accept": "text/csv"})}
    check(rows2["t.max"]["value"] == "30", "Accept: text/csv summary %r" % rows2["t.max"])
    status, headers, _ = api_request(h, "/v1/summary?format=json", headers={"Accept": "text/csv"})
    check(headers.get("content-type") == "application/json", "format=json wins")

    reqs = {r["requirement"]: r for r in table("/v1/requirements?format=csv")}
    check(reqs["X"]["BBB"] == "red" and reqs["BR1"]["red"] == "2" and reqs["BR3"]["no_data"] == "4",
          "requirements CSV %r" % reqs["X"])
    nations = {r["nation"]: r for r in table("/v1/nations?format=csv")}
    check(nations["BBB"]["stale"] == "4" and nations["DDD"]["agents"] == "0" and
          nations["DDD"]["last_report"] == "", "nations CSV %r" % nations["BBB"])
    view = {r["indicator"]: r for r in table("/v1/nations/AAA?format=csv&at=%d" % (n - 20 * MIN))}
    check(view["t.sum"]["value"] == "50" and view["t.sum"]["state"] == "current" and
          view["t.mean"]["state"] == "missing" and view["t.mean"]["value"] == "",
          "nation CSV %r" % view["t.sum"])
    hist = table("/v1/indicators/t.sum/history?from=%d&to=%d&step=10m&format=csv" %
                 (n - 50 * MIN, n))
    check([r["value"] for r in hist] == ["100", "150", "159", "59", "13", "12"],
          "history CSV %r" % [r["value"] for r in hist])
    # Nation role: only its own column.
    rows = table("/v1/requirements?format=csv", token="aaa")
    check("AAA" in rows[0] and "BBB" not in rows[0], "nation CSV columns %r" % list(rows[0]))


def test_nation_token_sees_aggregates_and_only_itself(h):
    seed(h)
    doc = api_json(h, "/v1/summary", token="aaa")
    ind = by_id(doc)
    # Aggregates and counts are alliance-wide ...
    expect(ind["t.sum"], value=12, nations_stale=1, nations_missing=1)
    # ... but no other nation is named.
    for e in doc["indicators"]:
        check(e["stale"] == [] and e["missing"] == [], "%s names %r/%r" % (e["id"], e["stale"],
                                                                         e["missing"]))
    for r in doc["requirements"]:
        check(list(r["nations"]) == ["AAA"], "%s lists %r" % (r["id"], list(r["nations"])))
    check(api_json(h, "/v1/nations/AAA", token="aaa")["nation"] == "AAA", "own nation")
    for path in ("/v1/nations/BBB", "/v1/nations/DDD", "/v1/nations/ZZZ", "/v1/nations"):
        status, _, _ = api_request(h, path, token="aaa")
        check(status == 403, "nation token on %s: %d" % (path, status))


if __name__ == "__main__":
    run_tests(globals())
