#!/usr/bin/env python3
"""Crash safety of the agent's spool, with real processes.

The agent is killed with SIGKILL after it spooled (and possibly sent) a
report but before any ack could come back (the aggregator is frozen with
SIGSTOP). After the aggregator thaws and the agent restarts, the report must
arrive exactly once: stored once, with the very bytes that were spooled
(resent, not rebuilt), the spool drained, and no sequence number reused.
"""
import os
import signal
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, run_tests, wait_for  # noqa: E402

SPOOL_MAGIC = b"RSLSPOOL"
SPOOL_HEADER = 64  # agent/spool.h: AGENT_SPOOL_HEADER_BYTES


def one_shot_collector(h):
    """An exec collector that reports a value only when the test drops one
    into the `emit` file (and consumes it), and nothing otherwise - so the
    test decides exactly which reports exist."""
    emit = h.path("emit")
    script = h.write("collectors/oneshot.sh", (
        "#!/bin/sh\n"
        "# prints the value in %(emit)s once, then nothing\n"
        "f='%(emit)s'\n"
        "if [ -f \"$f\" ]; then\n"
        "  v=$(cat \"$f\"); rm -f \"$f\"\n"
        "  echo \"energy.oil_stock_days $v days\"\n"
        "else\n"
        "  echo '# nothing new'\n"
        "fi\n") % {"emit": emit}, mode=0o755)
    return emit, script


def emit(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s\n" % value)
    os.rename(tmp, path)  # the collector never sees half a file


def rows_with_value(h, value):
    return h.store_query(
        "SELECT r.sequence FROM measurements m JOIN reports r ON m.report_id = r.id"
        " WHERE r.agent_id = 'DEU-BMI-01' AND m.indicator = 'energy.oil_stock_days'"
        " AND m.value = ?", (value,))


def pending_sequences(h, agent):
    return [int(name.split(".")[0]) for name in h.pending(agent) if name.endswith(".rpt")]


def test_agent_killed_before_ack_report_arrives_exactly_once(h):
    h.setup_aggregator()
    agent = h.add_agent("DEU-BMI-01", "DEU", "Federal Ministry of the Interior")
    emit_file, script = one_shot_collector(h)
    h.write_agent_conf(agent, {"oneshot": {"type": "exec", "interval": "1s", "command": script}})
    agg = h.start_aggregator()
    first = h.start_agent(agent)

    # 1. The pipeline works: value 101 is stored.
    emit(emit_file, 101)
    wait_for(lambda: rows_with_value(h, 101), "value 101 in the store")
    (seq101,), = rows_with_value(h, 101)

    # 2. Freeze the aggregator; the agent builds, spools and sends 102 but
    #    can get no ack. Wait for 102's own entry: report 101 may still be
    #    pending too (stored, its ack not yet handled - slow under
    #    valgrind), and the collector takes the emit file before the report
    #    is spooled.
    agg.signal(signal.SIGSTOP)
    emit(emit_file, 102)
    wait_for(lambda: not os.path.exists(emit_file) and
             any(seq > seq101 for seq in pending_sequences(h, agent)),
             "the agent to spool the report while the aggregator is frozen")
    spooled = {}
    for seq in pending_sequences(h, agent):
        name = os.path.join(agent["spool"], "pending", "%020d.rpt" % seq)
        with open(name, "rb") as f:
            spooled[seq] = f.read()

    # 3. kill -9 the agent, thaw the aggregator (it may now read what the
    #    dead agent had sent), start the agent again.
    first.kill9()
    agg.signal(signal.SIGCONT)
    second = h.start_agent(agent)

    wait_for(lambda: all(s in h.store_reports("DEU-BMI-01") for s in spooled),
             "the spooled report(s) %s in the store" % sorted(spooled), timeout=120)
    wait_for(lambda: not pending_sequences(h, agent), "the spool to drain", timeout=120)

    seqs = h.store_reports("DEU-BMI-01")
    check(len(seqs) == len(set(seqs)), "a sequence stored twice: %r" % seqs)
    hits = rows_with_value(h, 102)
    check(len(hits) == 1, "value 102 stored %d times (sequences %r)" % (len(hits), hits))
    check(len(rows_with_value(h, 101)) == 1, "value 101 stored more than once")
    # Resent, not rebuilt: the store holds exactly the spooled bytes.
    for seq, data in spooled.items():
        if data.startswith(SPOOL_MAGIC):
            (stored,), = h.store_query(
                "SELECT signed FROM reports WHERE agent_id = 'DEU-BMI-01' AND sequence = ?", (seq,))
            check(bytes(stored) == data[SPOOL_HEADER:],
                  "sequence %d: stored bytes differ from the spooled entry" % seq)

    # 4. No sequence reuse after the crash: the next report gets a new one.
    emit(emit_file, 103)
    wait_for(lambda: rows_with_value(h, 103), "value 103 in the store")
    (seq103,), = rows_with_value(h, 103)
    check(seq103 > max(spooled), "sequence %d reused after the crash (spooled %r)" % (
        seq103, sorted(spooled)))
    check(second.alive() and agg.alive(), "a daemon died")
    rejected = os.listdir(os.path.join(agent["spool"], "rejected")) \
        if os.path.isdir(os.path.join(agent["spool"], "rejected")) else []
    check(rejected == [], "reports were rejected: %r" % rejected)


if __name__ == "__main__":
    run_tests(globals())
