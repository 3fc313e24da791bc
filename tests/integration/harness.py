"""Shared harness for the integration tests: real binaries on loopback.

Every test gets a fresh temporary folder with its own keys, TLS certificate,
tokens, registry, configuration files and free loopback ports, starts the real
daemons with subprocess, waits for their "ready" log line, talks to them with
the rsl_probe tool (ZeroMQ+CURVE), the `curl` CLI (HTTPS) and Python's sqlite3
module (read-only look at the store), and always stops everything at the end,
also when the test fails.

Standard library only. Paths come from the environment, as ctest sets them:
  RSL_BUILD_DIR   the CMake build folder (binaries, tests/rsl_probe)
  RSL_SOURCE_DIR  the source tree (share/indicators.csv, share/nations.csv)
RSL_KEEP_TMP=1 keeps the temporary folders of passing tests too (failing
tests always keep theirs and print the path).

No timing assertions: every wait polls for a condition with a generous
timeout and fails only when the condition never becomes true.
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RSL_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("RSL_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")

# Sanitizer builds are several times slower; every wait scales with this.
def _sanitized_build():
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            return "RESILIENCE_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


SLOW = float(os.environ.get("RSL_TEST_SLOW") or (3 if _sanitized_build() else 1))
DEFAULT_WAIT = 30.0 * SLOW

# Messages in daemon logs that mean a memory or UB bug, whatever the test.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class TestFailure(AssertionError):
    """A check in a test did not hold."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def find_binary(name):
    """Locate a program in the build folder (top level or tests/)."""
    for sub in ("", "tests", "bin"):
        p = os.path.join(BUILD_DIR, sub, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise TestFailure("binary %s not found under %s (build it first)" % (name, BUILD_DIR))


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_listening(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for(cond, what, timeout=DEFAULT_WAIT, interval=0.1):
    """Poll cond() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except TestFailure:
            raise
        except Exception as e:  # a condition may fail while things start up
            last_exc = e
        if time.monotonic() > deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise TestFailure("timed out after %.0fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def run(cmd, timeout=60 * SLOW, check_rc=None, **kw):
    """Run a short command; returns CompletedProcess with text output."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check_rc is not None and r.returncode != check_rc:
        raise TestFailure("%s: exit %d (wanted %d)\nstdout: %s\nstderr: %s" % (
            " ".join(cmd), r.returncode, check_rc, r.stdout, r.stderr))
    return r


def _die_with_parent():
    """preexec_fn: have the kernel SIGKILL the child if this test process
    dies (e.g. killed by a ctest timeout), so no daemon outlives its test."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # best effort: the normal clean-up still stops everything


class Daemon:
    """One started program; stderr goes to a log file in the test folder."""

    def __init__(self, name, cmd, log_path, cwd):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=cwd,
                                     preexec_fn=_die_with_parent)
        self.expected_dead = False  # set when a test kills it on purpose
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def wait_log(self, needle, timeout=DEFAULT_WAIT, start=0):
        """Wait until `needle` appears in the log after offset `start`."""
        def cond():
            if needle in self.log_text()[start:]:
                return True
            if not self.alive():
                raise TestFailure("%s exited with %s before logging %r:\n%s" % (
                    self.name, self.proc.returncode, needle, tail(self.log_text())))
            return False
        wait_for(cond, "%s to log %r" % (self.name, needle), timeout)

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self):
        self.expected_dead = True
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout=30 * SLOW):
        """SIGTERM and wait; returns the exit status (negative: signal)."""
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test stopped it
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "hung on SIGTERM, killed"
                return self.returncode
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self):
        self.log.close()


def tail(text, n=40):
    lines = text.splitlines()
    return "\n".join("    | " + l for l in lines[-n:])


class Harness:
    """Everything one test needs; use as a context manager or via run_tests."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="rsl-it-%s-" % name)
        self.daemons = []
        self.indicators = os.path.join(SOURCE_DIR, "share", "indicators.csv")
        self.nations = os.path.join(SOURCE_DIR, "share", "nations.csv")
        self.registry_path = self.path("registry.conf")
        with open(self.registry_path, "w") as f:
            f.write("; enrolled agents (written by the test harness)\n")
        self.agg = None  # aggregator settings once configured

    # --- files and keys -------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    # Binaries are looked up when first used, so a test that needs only
    # some of them reports exactly which one is missing.
    @property
    def agent_bin(self):
        return find_binary("resilience-agent")

    @property
    def aggregator_bin(self):
        return find_binary("resilience-aggregator")

    @property
    def ctl_bin(self):
        return find_binary("resilience-ctl")

    @property
    def probe_bin(self):
        return find_binary("rsl_probe")

    def write(self, rel, text, mode=None):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        if mode is not None:
            os.chmod(p, mode)
        return p

    def keygen(self, name):
        """`resilience-ctl keygen --out DIR`; returns the folder."""
        d = self.path("keys", name)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        run([self.ctl_bin, "keygen", "--out", d], check_rc=0)
        for f in ("sign.key", "sign.pub", "curve.key", "curve.pub"):
            check(os.path.isfile(os.path.join(d, f)), "keygen did not write %s" % f)
        return d

    @staticmethod
    def curve_public(keys_dir):
        with open(os.path.join(keys_dir, "curve.pub")) as f:
            return f.read().strip()

    @staticmethod
    def sign_key_id(keys_dir):
        """key_id of a folder's sign.pub: hex of the first 16 bytes of
        SHA-256 of the raw 32-byte Ed25519 key (the SPKI DER's last 32)."""
        import base64
        with open(os.path.join(keys_dir, "sign.pub")) as f:
            b64 = "".join(l.strip() for l in f if l.strip() and not l.startswith("-----"))
        der = base64.b64decode(b64)
        check(len(der) == 44, "sign.pub is not an Ed25519 SubjectPublicKeyInfo")
        return hashlib.sha256(der[-32:]).hexdigest()[:32]

    def enroll(self, agent_id, nation, organisation, keys_dir):
        """Append the `resilience-ctl enroll` output to the registry."""
        r = run([self.ctl_bin, "enroll", "--agent-id", agent_id, "--nation", nation,
                 "--organisation", organisation, "--keys", keys_dir], check_rc=0)
        check("[agent %s]" % agent_id in r.stdout, "enroll output lacks the section:\n" + r.stdout)
        with open(self.registry_path, "a") as f:
            f.write("\n" + r.stdout)
        return r.stdout

    def make_tls(self):
        """Self-signed P-256 certificate for 127.0.0.1/localhost."""
        d = self.path("tls")
        os.makedirs(d, exist_ok=True)
        key, crt = os.path.join(d, "server.key"), os.path.join(d, "server.crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check_rc=0)
        os.chmod(key, 0o600)
        return crt, key

    # --- aggregator -----------------------------------------------------
    def setup_aggregator(self, extra_ingest="", extra="", tokens=None):
        """Generate the aggregator's keys, TLS and tokens; write its config.

        tokens: {name: role}; a staff token is always made. Returns the
        config path. The bearer tokens end up in self.tokens[name]."""
        keys = self.keygen("aggregator")
        crt, key = self.make_tls()
        self.tokens = {}
        roles = {"staff": "staff"}
        roles.update(tokens or {})
        token_sections = ""
        for name, role in roles.items():
            tok = secrets.token_urlsafe(24)
            self.tokens[name] = tok
            token_sections += "[token %s]\nrole = %s\nsha256 = %s\n\n" % (
                name, role, hashlib.sha256(tok.encode()).hexdigest())
        zmq_port, https_port = free_port(), free_port()
        while https_port == zmq_port:
            https_port = free_port()
        self.agg = {
            "keys": keys, "cert": crt, "key": key,
            "zmq_port": zmq_port, "https_port": https_port,
            "endpoint": "tcp://127.0.0.1:%d" % zmq_port,
            "server_key": self.curve_public(keys),
            "store": self.path("store", "aggregator.db"),
        }
        os.makedirs(os.path.dirname(self.agg["store"]), exist_ok=True)
        conf = (
            "; aggregator.conf written by the integration harness\n"
            "[ingest]\n"
            "bind = tcp://127.0.0.1:%(zmq_port)d\n"
            "keys = keys/aggregator\n"
            "registry = registry.conf\n"
            "%(extra_ingest)s\n"
            "[store]\n"
            "path = store/aggregator.db\n\n"
            "[https]\n"
            "listen = 127.0.0.1:%(https_port)d\n"
            "cert = tls/server.crt\n"
            "key = tls/server.key\n"
            "threads = 2\n\n"
            "[taxonomy]\n"
            "path = %(indicators)s\n"
            "nations = %(nations)s\n\n"
            "%(tokens)s"
            "[log]\n"
            "level = debug\n"
            "%(extra)s\n"
        ) % {"zmq_port": zmq_port, "https_port": https_port, "indicators": self.indicators,
             "nations": self.nations, "tokens": token_sections, "extra_ingest": extra_ingest,
             "extra": extra}
        self.agg["conf"] = self.write("aggregator.conf", conf)
        return self.agg["conf"]

    def start_aggregator(self, conf=None, wait_ready=True):
        conf = conf or self.agg["conf"]
        d = self.start("aggregator", [self.aggregator_bin, "-c", conf])
        if wait_ready:
            d.wait_log("ready")
        self.aggregator = d
        return d

    # --- agents ---------------------------------------------------------
    def add_agent(self, agent_id, nation, organisation="Test Ministry", enroll=True):
        """Keys (+ registry entry); returns a dict describing the agent."""
        keys = self.keygen(agent_id)
        if enroll:
            self.enroll(agent_id, nation, organisation, keys)
        return {"id": agent_id, "nation": nation, "organisation": organisation, "keys": keys,
                "spool": self.path("spool", agent_id)}

    def write_agent_conf(self, agent, collectors, endpoints=None, extra_agent="", log="debug"):
        """collectors: {name: {key: value}} written as [collector NAME]."""
        lines = [
            "; agent.conf written by the integration harness",
            "[agent]",
            "id = %s" % agent["id"],
            "nation = %s" % agent["nation"],
            "organisation = %s" % agent["organisation"],
            "keys = keys/%s" % agent["id"],
            "spool = spool/%s" % agent["id"],
            "resend_timeout = 2s",
        ]
        if extra_agent:
            lines.append(extra_agent)
        lines += [
            "",
            "[aggregator]",
            "endpoints = %s" % (endpoints or self.agg["endpoint"]),
            "server_key = %s" % self.agg["server_key"],
            "",
        ]
        for name, kv in collectors.items():
            lines.append("[collector %s]" % name)
            for k, v in kv.items():
                lines.append("%s = %s" % (k, v))
            lines.append("")
        lines += ["[log]", "level = %s" % log, ""]
        p = self.write("agent-%s.conf" % agent["id"], "\n".join(lines))
        agent["conf"] = p
        return p

    def start_agent(self, agent, wait_ready=True):
        d = self.start("agent-" + agent["id"], [self.agent_bin, "-c", agent["conf"]])
        if wait_ready:
            d.wait_log("ready")
        agent["daemon"] = d
        return d

    def pending(self, agent):
        d = os.path.join(agent["spool"], "pending")
        try:
            return sorted(os.listdir(d))
        except FileNotFoundError:
            return []

    # --- processes ------------------------------------------------------
    def start(self, name, cmd):
        log = self.path("%s.%d.log" % (name, len(self.daemons)))
        d = Daemon(name, cmd, log, self.tmp)
        self.daemons.append(d)
        return d

    def stop_all(self):
        """Stop every daemon still running; return a list of problems
        (non-zero exit on SIGTERM, sanitizer reports)."""
        problems = []
        for d in reversed(self.daemons):
            if d.alive():
                rc = d.stop()
                if rc != 0 and not d.expected_dead:
                    problems.append("%s: exit status %s on SIGTERM" % (d.name, rc))
            elif not d.expected_dead and d.proc.returncode != 0:
                # it ended during the test, and not by a test's kill -9
                problems.append("%s: exited with status %s during the test" % (
                    d.name, d.proc.returncode))
            text = d.log_text()
            for m in SANITIZER_MARKERS:
                if m in text:
                    problems.append("%s: log contains %r" % (d.name, m))
            d.close()
        return problems

    def dump_logs(self, out=sys.stdout):
        """Show what matters of each log: the last lines above debug level
        (debug chatter such as one line per HTTP request would hide the
        cause), then the very last lines whatever their level."""
        for d in self.daemons:
            lines = d.log_text().splitlines()
            important = [l for l in lines if " debug " not in l]
            out.write("  --- %s (%s), %d lines; last non-debug lines:\n%s\n" % (
                d.name, d.log_path, len(lines), tail("\n".join(important), 25)))
            out.write("  --- %s: last lines:\n%s\n" % (d.name, tail("\n".join(lines), 8)))

    # --- clients --------------------------------------------------------
    def probe(self, *args, agent=None, curve=True, sign=True, timeout_ms=None):
        """Run rsl_probe against the aggregator; returns (rc, lines).

        agent: fills --agent-id/--nation/--organisation and, unless told
        otherwise, --curve-dir (its transport keys) and --sign-key."""
        cmd = [self.probe_bin, "--endpoint", self.agg["endpoint"],
               "--timeout", str(int(timeout_ms or 5000 * SLOW))]
        if "--plaintext" not in args:
            cmd += ["--server-key", self.agg["server_key"]]
        if agent is not None:
            cmd += ["--agent-id", agent["id"], "--nation", agent["nation"],
                    "--organisation", agent["organisation"]]
            if curve:
                cmd += ["--curve-dir", agent["keys"]]
            if sign:
                cmd += ["--sign-key", os.path.join(agent["keys"], "sign.key")]
        cmd += list(args)
        r = run(cmd, timeout=120 * SLOW)
        check(r.returncode in (0, 3), "rsl_probe failed (exit %d): %s" % (r.returncode, r.stderr))
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        return r.returncode, lines

    def probe_one(self, *args, **kw):
        """Send one message; returns (status, detail) or ("NOACK", "")."""
        rc, lines = self.probe(*args, **kw)
        check(len(lines) == 1, "expected one probe line, got %r" % (lines,))
        return parse_ack(lines[0])

    def https(self, path, token="staff", headers=(), method="GET"):
        """curl the aggregator's HTTPS API; returns (status, body text).

        token: a name in self.tokens, a literal token string, or None."""
        tok = self.tokens.get(token, token) if token else None
        cmd = ["curl", "-sS", "--max-time", str(int(20 * SLOW)), "--cacert", self.agg["cert"],
               "-X", method, "-o", "-", "-w", "\n%{http_code}"]
        if tok:
            cmd += ["-H", "Authorization: Bearer " + tok]
        for h in headers:
            cmd += ["-H", h]
        cmd.append("https://127.0.0.1:%d%s" % (self.agg["https_port"], path))
        r = run(cmd, timeout=60 * SLOW)
        check(r.returncode == 0, "curl %s failed (exit %d): %s" % (path, r.returncode, r.stderr))
        body, _, code = r.stdout.rpartition("\n")
        return int(code), body

    def https_json(self, path, token="staff", want=200):
        code, body = self.https(path, token)
        check(code == want, "GET %s: HTTP %d (wanted %d): %s" % (path, code, want, body[:500]))
        try:
            return json.loads(body)
        except ValueError:
            raise TestFailure("GET %s: not JSON: %r" % (path, body[:500]))

    # --- store (read-only) ----------------------------------------------
    def store_query(self, sql, params=()):
        """Run a read-only query on the aggregator's SQLite store."""
        uri = "file:%s?mode=ro" % self.agg["store"]
        con = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def store_reports(self, agent_id):
        """Sequences stored for an agent, in order (table `reports`)."""
        if not os.path.exists(self.agg["store"]):
            return []
        return [r[0] for r in self.store_query(
            "SELECT sequence FROM reports WHERE agent_id = ? ORDER BY sequence", (agent_id,))]

    # --- clean-up -------------------------------------------------------
    def cleanup(self, failed):
        problems = self.stop_all()
        if failed or problems or os.environ.get("RSL_KEEP_TMP"):
            print("  (test folder kept: %s)" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


def parse_ack(line):
    """'ACK <agent> <seq> <STATUS> <detail>' -> (STATUS, detail); NOACK -> ("NOACK", "")."""
    if line.strip() == "NOACK":
        return "NOACK", ""
    parts = line.split(" ", 4)
    check(len(parts) >= 4 and parts[0] == "ACK", "bad probe line %r" % line)
    return parts[3], parts[4] if len(parts) > 4 else ""


def find_entries(doc, key, value):
    """All dicts anywhere in a JSON document with doc[key] == value."""
    found = []
    if isinstance(doc, dict):
        if doc.get(key) == value:
            found.append(doc)
        for v in doc.values():
            found += find_entries(v, key, value)
    elif isinstance(doc, list):
        for v in doc:
            found += find_entries(v, key, value)
    return found


def run_tests(namespace, only=None):
    """Run every test_* function in `namespace` (a module's globals()), each
    with a fresh Harness; print one line per test and a final
    "N passed, M failed"; exit 1 on any failure."""
    tests = [(n, f) for n, f in sorted(namespace.items())
             if n.startswith("test_") and callable(f)]
    # keep definition order, which reads better than alphabetical
    tests.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
    wanted = only or sys.argv[1:]
    if wanted:
        tests = [(n, f) for n, f in tests if n in wanted]
    passed = failed = 0
    for name, fn in tests:
        started = time.monotonic()
        h = None
        failed_here = False
        try:
            h = Harness(name[5:])
            fn(h)
        except Exception as e:
            failed_here = True
            print("FAIL %s: %s" % (name, e))
            if not isinstance(e, TestFailure):
                traceback.print_exc(file=sys.stdout)
            if h is not None:
                h.dump_logs()
        problems = []
        if h is not None:
            try:
                problems = h.cleanup(failed_here)
            except Exception as e:
                problems = ["clean-up failed: %r" % (e,)]
        if problems and not failed_here:
            failed_here = True
            print("FAIL %s: %s" % (name, "; ".join(problems)))
            h.dump_logs()
        if failed_here:
            failed += 1
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.monotonic() - started))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not tests else 0)
