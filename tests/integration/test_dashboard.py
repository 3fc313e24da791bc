#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium (Debian's package,
installed by this test when missing) loads GET / from a seeded aggregator
and runs app.js against the real API.

The token reaches the page as "#token=..." in the URL fragment, which the
page moves into sessionStorage and removes from the address bar. Chromium
runs with --dump-dom and a virtual time budget, so the DOM is read after
the page's requests have completed, then once more with --screenshot; the
screenshot is kept in <build>/test-output/dashboard/ and its path printed.

Checked: the heat map has a row for every nation of the nation list with a
cell per baseline requirement, each seeded nation's cells carry the status
computed by hand, every other cell is no_data; freshness; the indicator
table with trend sparklines; the error box is empty and the browser's
console shows no error (uncaught exceptions, CSP refusals, failed loads);
a nation token sees only its own row; without a token the page asks to
sign in, with an invalid one it says it was not accepted.

Seeded (shipped taxonomy): energy.oil_stock_days (BR2, higher is better,
amber 90, red 60) DEU 95 green, FRA 75 amber, POL 50 red, NOR 95 green;
health.acute_bed_occupancy_pct (BR5, lower is better, amber 85, red 90)
NOR 95 red.
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BUILD_DIR, SLOW, TestFailure, api_send, check, run,  # noqa: E402
                     run_tests)

REQUIREMENTS = ["BR1", "BR2", "BR3", "BR4", "BR5", "BR6", "BR7", "X"]
EXPECTED = {("DEU", "BR2"): "green", ("FRA", "BR2"): "amber", ("POL", "BR2"): "red",
            ("NOR", "BR2"): "green", ("NOR", "BR5"): "red"}
CONSOLE_PROBLEMS = re.compile(r"uncaught|refused|failed to load|error", re.I)


def find_chromium():
    """Debian's chromium, installed with apt-get when missing and possible.
    Returns its path or None; in CI (CI set) a missing browser is a failure."""
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("    installing Debian's chromium (apt-get install -y chromium) ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, timeout=900)
            if r.returncode != 0:
                print("    %s failed:\n%s" % (" ".join(cmd), r.stdout[-1500:]))
                break
        exe = shutil.which("chromium")
        if exe:
            return exe
    if os.environ.get("CI"):
        raise TestFailure("chromium is missing and could not be installed; CI must run this test")
    return None


def chromium_cmd(exe, profile, extra):
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--user-data-dir=" + profile,
            "--ignore-certificate-errors", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=15000"] + extra


def browse(h, exe, fragment, name):
    """Load the dashboard; returns (dom, console problem lines)."""
    profile = h.path("chromium-" + name)
    os.makedirs(profile, exist_ok=True)
    url = "https://127.0.0.1:%d/%s" % (h.agg["https_port"], fragment)
    r = subprocess.run(chromium_cmd(exe, profile, ["--dump-dom", url]), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=180 * SLOW)
    check(r.returncode == 0 and "<body" in r.stdout, "chromium failed (exit %d): %s" % (
        r.returncode, r.stderr[-1500:]))
    console = [l for l in r.stderr.splitlines() if ":CONSOLE" in l and CONSOLE_PROBLEMS.search(l)]
    return r.stdout, console


def body_state(dom):
    m = re.search(r'<body[^>]*data-state="(\w+)"', dom)
    return m.group(1) if m else None


def error_box(dom):
    m = re.search(r'<div id="errors"[^>]*>(.*?)</div>', dom, re.S)
    check(m is not None, "no #errors element in the page")
    return m.group(1).strip()


def heat_cells(dom):
    cells = {}
    for nation, req, status in re.findall(
            r'<td[^>]*data-nation="(\w+)" data-requirement="(\w+)" data-status="(\w+)"', dom):
        cells[(nation, req)] = status
    return cells


def nation_list(h):
    with open(h.nations) as f:
        return [l.split(",")[0] for l in f.read().splitlines()[1:] if l.strip()]


def seed(h):
    agents = {c: h.add_agent("%s-MIN-01" % c, c) for c in ("DEU", "FRA", "POL", "NOR")}
    h.setup_aggregator(tokens={"deu": "nation:DEU"})
    h.start_aggregator()
    n = int(time.time() * 1000)
    api_send(h, agents["DEU"], {"energy.oil_stock_days": (95, "days")}, n - 60000, 1)
    api_send(h, agents["FRA"], {"energy.oil_stock_days": (75, "days")}, n - 60000, 1)
    api_send(h, agents["POL"], {"energy.oil_stock_days": (50, "days")}, n - 60000, 1)
    api_send(h, agents["NOR"], {"energy.oil_stock_days": (95, "days"),
                                "health.acute_bed_occupancy_pct": (95, "pct")}, n - 60000, 1)


def test_staff_heat_map(h):
    exe = find_chromium()
    if exe is None:
        print("    SKIP: chromium is not installed and cannot be installed here (not root or "
              "no apt-get); the dashboard was not tested in a browser")
        return
    seed(h)
    dom, console = browse(h, exe, "#token=" + h.tokens["staff"], "staff")
    check(body_state(dom) == "ready", "page state %r; errors: %s" % (body_state(dom),
                                                                     error_box(dom)[:500]))
    check(error_box(dom) == "", "the page reports errors: %s" % error_box(dom)[:500])
    check(not console, "console errors:\n%s" % "\n".join(console[:10]))
    cells = heat_cells(dom)
    nations = nation_list(h)
    check(len(nations) == 32, "%d nations in the list" % len(nations))
    for code in nations:
        for req in REQUIREMENTS:
            want = EXPECTED.get((code, req), "no_data")
            got = cells.get((code, req))
            check(got == want, "heat map %s %s: %r, expected %r" % (code, req, got, want))
    check(len(cells) == 32 * 8, "%d heat map cells" % len(cells))
    # Freshness: the seeded nations reported seconds ago, the others never.
    fresh = dict(re.findall(r'<tr data-nation="(\w+)".*?data-freshness="(\w+)"', dom, re.S))
    check(fresh.get("DEU") == "fresh" and fresh.get("ALB") == "old", "freshness %r" % {
        k: fresh.get(k) for k in ("DEU", "ALB")})
    # Stale or missing: every nation but the four named, all missing.
    attention = re.findall(r'<li data-nation="(\w+)" data-stale="(\d+)" data-missing="(\d+)"', dom)
    check(len(attention) == 32, "stale/missing list has %d nations" % len(attention))
    # Indicator table and its trend sparklines (history route).
    rows = re.findall(r'<tr data-indicator="([\w.]+)"', dom)
    check(len(rows) == 39 and "energy.oil_stock_days" in rows, "%d indicator rows" % len(rows))
    spark = re.search(r'<td class="trend" data-indicator="energy.oil_stock_days"><svg[^>]*'
                      r'data-points="(\d+)"', dom)
    check(spark is not None and int(spark.group(1)) >= 1, "no sparkline with points for "
          "energy.oil_stock_days")

    # A picture for people: kept in the build folder, path printed.
    out_dir = os.path.join(BUILD_DIR, "test-output", "dashboard")
    os.makedirs(out_dir, exist_ok=True)
    shot = os.path.join(out_dir, "dashboard-staff.png")
    if os.path.exists(shot):
        os.unlink(shot)
    profile = h.path("chromium-shot")
    os.makedirs(profile, exist_ok=True)
    url = "https://127.0.0.1:%d/#token=%s" % (h.agg["https_port"], h.tokens["staff"])
    r = run(chromium_cmd(exe, profile, ["--window-size=1600,1200", "--screenshot=" + shot,
                                        "--hide-scrollbars", url]), timeout=180 * SLOW)
    check(r.returncode == 0 and os.path.exists(shot), "screenshot failed: %s" % r.stderr[-800:])
    with open(shot, "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG")
    print("    screenshot: %s" % shot)


def test_nation_sees_only_its_row(h):
    exe = find_chromium()
    if exe is None:
        print("    SKIP: chromium unavailable (see test_staff_heat_map)")
        return
    seed(h)
    dom, console = browse(h, exe, "#token=" + h.tokens["deu"], "deu")
    check(body_state(dom) == "ready", "page state %r: %s" % (body_state(dom), error_box(dom)))
    check(error_box(dom) == "" and not console, "errors: %s %s" % (error_box(dom), console[:5]))
    cells = heat_cells(dom)
    check({n for n, _ in cells} == {"DEU"}, "nation view shows %r" % sorted({n for n, _ in cells}))
    check(cells[("DEU", "BR2")] == "green", "DEU BR2 %r" % cells.get(("DEU", "BR2")))
    check('data-role="nation"' in dom, "role not shown")


def test_sign_in_required(h):
    exe = find_chromium()
    if exe is None:
        print("    SKIP: chromium unavailable (see test_staff_heat_map)")
        return
    h.setup_aggregator()
    h.start_aggregator()
    dom, console = browse(h, exe, "", "anonymous")
    check(body_state(dom) == "signin", "without a token: state %r" % body_state(dom))
    check('id="signin" class="panel" hidden' not in dom, "sign-in form hidden")
    dom, _ = browse(h, exe, "#token=not-a-valid-token", "bad")
    check(body_state(dom) == "signin" and "was not accepted" in dom,
          "with a bad token: state %r" % body_state(dom))


if __name__ == "__main__":
    run_tests(globals())
