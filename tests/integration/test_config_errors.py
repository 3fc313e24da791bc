#!/usr/bin/env python3
"""Start-up refusals: configuration and key-file errors make each daemon
exit 1 with one line naming FILE:LINE (or the path), before anything is
started (no port bound, no store created). Also --check-config, --help and
--version, the process conventions every program shares.
"""
import os
import re
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, check, port_is_listening, run, run_tests  # noqa: E402


# A log line at level error or worse: "... prog[pid] error module: ..." or,
# under systemd, a "<0>".."<3>" priority prefix.
ERROR_LINE = re.compile(r"^<[0-3]>|\] (error|crit|alert|emerg)\b")


def refused(h, cmd, must_contain, also=()):
    """Run a daemon that must refuse to start; check the one-line error.

    Informational start-up lines may come first; the error itself must be
    one line (the last), name the file, and be the only error line."""
    r = run(cmd, timeout=60 * SLOW)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check(r.returncode == 1, "%s: exit %d (wanted 1); stderr:\n%s" % (
        os.path.basename(cmd[0]), r.returncode, r.stderr))
    check(lines, "%s exited 1 without a message" % os.path.basename(cmd[0]))
    errors = [l for l in lines if ERROR_LINE.search(l)]
    check(len(errors) <= 1, "wanted one error line, got %d:\n%s" % (len(errors), r.stderr))
    for needle in (must_contain,) + tuple(also):
        check(needle in lines[-1], "error %r does not contain %r" % (lines[-1], needle))
    check(r.stdout == "", "daemon printed on stdout: %r" % r.stdout)
    return lines[-1]


def nothing_started(h, store=True):
    """No listener is up; with store=True (errors found while reading the
    configuration) not even the store file was created."""
    check(not port_is_listening(h.agg["https_port"]), "HTTPS port is listening")
    check(not port_is_listening(h.agg["zmq_port"]), "ZeroMQ port is listening")
    if store:
        check(not os.path.exists(h.agg["store"]), "the store was created")


def insert_line(path, after_line_starting, text):
    """Insert `text` after the first line starting with the marker; returns
    the 1-based line number of the inserted line."""
    with open(path) as f:
        lines = f.read().split("\n")
    idx = next(i for i, l in enumerate(lines) if l.startswith(after_line_starting))
    lines.insert(idx + 1, text)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return idx + 2


def replace_line(path, starting, text):
    with open(path) as f:
        lines = f.read().split("\n")
    idx = next(i for i, l in enumerate(lines) if l.startswith(starting))
    lines[idx] = text
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return idx + 1


def agent_setup(h):
    h.setup_aggregator()
    agent = h.add_agent("DEU-BMI-01", "DEU")
    h.write_agent_conf(agent, {"oil": {"type": "static", "value": "95", "unit": "days",
                                       "indicator": "energy.oil_stock_days"}})
    return agent


def test_aggregator_unknown_key(h):
    conf = h.setup_aggregator()
    line = insert_line(conf, "[ingest]", "bindd = tcp://127.0.0.1:1")
    refused(h, [h.aggregator_bin, "-c", conf], "aggregator.conf:%d" % line, also=("bindd",))
    nothing_started(h)


def test_aggregator_missing_file(h):
    h.setup_aggregator()
    missing = h.path("no-such-folder", "aggregator.conf")
    refused(h, [h.aggregator_bin, "-c", missing], missing)
    nothing_started(h)


def test_aggregator_group_readable_keys(h):
    conf = h.setup_aggregator()
    curve = os.path.join(h.agg["keys"], "curve.key")
    os.chmod(curve, 0o640)
    refused(h, [h.aggregator_bin, "-c", conf], "curve.key")
    nothing_started(h, store=False)
    os.chmod(curve, 0o600)
    os.chmod(h.agg["key"], 0o644)  # the TLS private key
    refused(h, [h.aggregator_bin, "-c", conf], "server.key")
    nothing_started(h, store=False)


def test_aggregator_bad_registry_nation(h):
    conf = h.setup_aggregator()
    keys = h.keygen("DEU-BMI-01")
    h.enroll("DEU-BMI-01", "DEU", "Federal Ministry of the Interior", keys)
    line = replace_line(h.registry_path, "nation", "nation = Deutschland")
    refused(h, [h.aggregator_bin, "-c", conf], "registry.conf:%d" % line)
    nothing_started(h)


def test_agent_unknown_key_and_bad_nation(h):
    agent = agent_setup(h)
    conf = agent["conf"]
    line = insert_line(conf, "[agent]", "intervall = 5")
    refused(h, [h.agent_bin, "-c", conf], "agent-DEU-BMI-01.conf:%d" % line, also=("intervall",))
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("intervall = 5\n", ""))
    for bad in ("DE", "deu", "D3U", "DEUT"):
        line = replace_line(conf, "nation", "nation = %s" % bad)
        refused(h, [h.agent_bin, "-c", conf], "agent-DEU-BMI-01.conf:%d" % line)
    check(not os.path.exists(os.path.join(agent["spool"], "sequence")), "the agent started up")


def test_agent_missing_file_and_bad_collector(h):
    agent = agent_setup(h)
    missing = h.path("nowhere", "agent.conf")
    refused(h, [h.agent_bin, "-c", missing], missing)
    conf = agent["conf"]
    line = replace_line(conf, "type = static", "type = telepathy")
    refused(h, [h.agent_bin, "-c", conf], "agent-DEU-BMI-01.conf:%d" % line)
    # A known type whose keys do not fit it: a static collector's `value`
    # means nothing to a file collector, and `path` is missing.
    replace_line(conf, "type = telepathy", "type = file")
    refused(h, [h.agent_bin, "-c", conf], "agent-DEU-BMI-01.conf:")


def test_agent_group_readable_private_key(h):
    agent = agent_setup(h)
    sign_key = os.path.join(agent["keys"], "sign.key")
    os.chmod(sign_key, 0o640)
    refused(h, [h.agent_bin, "-c", agent["conf"]], sign_key)
    os.chmod(sign_key, 0o600)
    curve_key = os.path.join(agent["keys"], "curve.key")
    os.chmod(curve_key, 0o604)
    refused(h, [h.agent_bin, "-c", agent["conf"]], curve_key)
    check(not os.path.exists(os.path.join(agent["spool"], "sequence")), "the agent started up")


def test_check_config(h):
    agent = agent_setup(h)
    conf = h.agg["conf"]
    for binary, path in ((h.aggregator_bin, conf), (h.agent_bin, agent["conf"])):
        r = run([binary, "-c", path, "--check-config"], check_rc=0)
        check(r.stdout.strip() == "%s: ok" % path, "%s --check-config stdout %r" % (
            os.path.basename(binary), r.stdout))
    nothing_started(h)
    line = insert_line(conf, "[store]", "pth = x.db")
    r = run([h.aggregator_bin, "-c", conf, "--check-config"])
    check(r.returncode == 1, "--check-config on a bad file: exit %d" % r.returncode)
    check("aggregator.conf:%d" % line in r.stderr, "--check-config stderr %r" % r.stderr)


def test_help_and_version(h):
    for binary in (h.aggregator_bin, h.agent_bin, h.ctl_bin):
        name = os.path.basename(binary)
        r = run([binary, "--version"], check_rc=0)
        check(r.stdout.strip() == "%s 0.1.0" % name, "%s --version: %r" % (name, r.stdout))
        r = run([binary, "--help"], check_rc=0)
        check("usage" in r.stdout.lower(), "%s --help prints no usage: %r" % (name, r.stdout[:200]))


if __name__ == "__main__":
    run_tests(globals())
