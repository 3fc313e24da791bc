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

RSL_VALGRIND=1 runs every program of the build folder that a test starts
(daemons, one-shot agent/ctl commands, rsl_probe) under valgrind memcheck,
with its log in <test folder>/valgrind/vg.<program>.<pid>.log; after each
test the logs are scanned and any memcheck error or definite leak fails the
test with an excerpt (see wrap_cmd and valgrind_problems). Waits scale by
RSL_TEST_SLOW, which defaults to 10 in that mode.

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


# Valgrind mode (RSL_VALGRIND=1): memcheck runs programs 10-50 times slower
# on CPU; these ones mostly wait on sockets and timers, so 10 is enough.
VALGRIND = os.environ.get("RSL_VALGRIND", "") not in ("", "0")
SLOW = float(os.environ.get("RSL_TEST_SLOW") or
             (10 if VALGRIND else 3 if _sanitized_build() else 1))
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


# --- valgrind mode ---------------------------------------------------------
# Exit status valgrind gives a program in which it found an error (or a
# definite leak, with --errors-for-leak-kinds=definite): a number none of
# our programs uses (they exit 0, 1, 2, 3), so a test can tell it apart.
VALGRIND_EXIT = 97
VALGRIND_SUPP = os.path.join(SOURCE_DIR, "tests", "valgrind", "resilience.supp")
# Where the next program's valgrind log goes: the current test's folder
# (set by Harness); a module global because run() and wrap_cmd() are
# plain functions tests call without a Harness at hand.
_valgrind_dir = [None]


def _is_our_program(path):
    """True for an executable inside the build folder (ours: what valgrind
    checks); system tools (openssl, curl, chromium, sh) are left alone."""
    if os.sep not in path:  # a bare name: looked up in PATH, not the cwd
        path = shutil.which(path) or path
        if os.sep not in path:
            return False
    build = os.path.realpath(BUILD_DIR) + os.sep
    return os.path.realpath(path).startswith(build)


def wrap_cmd(cmd):
    """The command line that really runs `cmd`: in valgrind mode, cmd under
    memcheck when cmd[0] is one of our programs; otherwise cmd unchanged.
    Every launch of a program goes through this (run(), Daemon; tests that
    call subprocess themselves wrap their command with it)."""
    cmd = list(cmd)
    if not VALGRIND or not cmd or not _is_our_program(cmd[0]):
        return cmd
    if _sanitized_build():  # ASan's shadow memory and memcheck cannot share a process
        raise TestFailure("RSL_VALGRIND=1 needs a build without -DRESILIENCE_SANITIZE=ON "
                          "(%s is sanitized)" % BUILD_DIR)
    d = _valgrind_dir[0]
    if d is None:  # no Harness yet: still keep the log somewhere findable
        d = os.path.join(tempfile.gettempdir(), "rsl-valgrind-%d" % os.getpid())
    os.makedirs(d, exist_ok=True)
    vg = [
        "valgrind", "--tool=memcheck", "--error-exitcode=%d" % VALGRIND_EXIT,
        # definite leaks are errors (exit status, ERROR SUMMARY); "possibly
        # lost" and "still reachable" blocks of library threads are not
        "--errors-for-leak-kinds=definite", "--leak-check=full",
        "--show-leak-kinds=definite", "--track-fds=no", "--num-callers=30",
        # %p: one log per process, also for a child forked before its exec
        "--log-file=%s" % os.path.join(d, "vg.%s.%%p.log" % os.path.basename(cmd[0])),
    ]
    if os.path.isfile(VALGRIND_SUPP):
        vg.append("--suppressions=" + VALGRIND_SUPP)
    # e.g. RSL_VALGRIND_ARGS=--track-origins=yes when chasing a finding
    vg += os.environ.get("RSL_VALGRIND_ARGS", "").split()
    return vg + cmd


# Records of a log that are not findings: the banner, summaries, hints.
_VG_INFO = ("Memcheck, a memory error detector", "Copyright (C)", "Using Valgrind",
            "Command:", "Parent PID:", "HEAP SUMMARY", "LEAK SUMMARY", "ERROR SUMMARY",
            "For lists of detected", "For counts of detected", "Rerun with",
            "All heap blocks were freed", "To see them, rerun", "Reachable blocks",
            "Warning: set address range perms", "Warning: noted but unhandled ioctl",
            "This could cause spurious", "See README_MISSING_SYSCALL",
            "Searching for pointers to", "Checked ", "(see section Limitations",
            "Warning: invalid file descriptor", "Use --track-origins")


def valgrind_findings(text):
    """(errors, definitely lost bytes, excerpt) of one memcheck log; errors
    is None when the process never reached its summary (killed by SIGKILL,
    or it exec'd another program: nothing to say then)."""
    import re
    errors = None
    m = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", text)
    if m:
        errors = int(m[-1].replace(",", ""))
    lost = 0
    m = re.findall(r"definitely lost: ([\d,]+) bytes", text)
    if m:
        lost = int(m[-1].replace(",", ""))
    # The finding records: blocks of "==PID== " lines separated by empty ones.
    blocks, cur = [], []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if any(body.startswith(i) for i in ("For lists of", "For counts of", "ERROR SUMMARY",
                                            "Use --track-origins", "Rerun with")):
            continue  # closing hints, not part of a record
        if body.strip():
            cur.append(body)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    shown = []
    for b in blocks:
        head = b[0].strip()
        if any(head.startswith(i) or i in head for i in _VG_INFO):
            continue
        if "possibly lost" in head or "still reachable" in head or "indirectly lost" in head:
            continue
        shown.append("\n".join(b[:40]))
        if len(shown) == 4:
            shown.append("(more in the log)")
            break
    return errors, lost, "\n\n".join(shown)


def valgrind_problems(d):
    """Scan every vg.*.log in folder `d`: a list of problems, one per log
    whose process had memcheck errors or definitely lost bytes."""
    problems = []
    try:
        names = sorted(n for n in os.listdir(d) if n.startswith("vg.") and n.endswith(".log"))
    except FileNotFoundError:
        return problems
    for n in names:
        p = os.path.join(d, n)
        try:
            with open(p, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        errors, lost, excerpt = valgrind_findings(text)
        if (errors or 0) > 0 or lost > 0:
            problems.append("valgrind: %s: %s errors, %d bytes definitely lost:\n%s" % (
                p, errors, lost, "\n".join("    | " + l for l in excerpt.splitlines())))
    return problems


def valgrind_summary(d):
    """{program: [logs, logs with a summary, errors, definitely lost bytes]}
    over the logs in `d` (printed per test in valgrind mode)."""
    out = {}
    try:
        names = sorted(n for n in os.listdir(d) if n.startswith("vg.") and n.endswith(".log"))
    except FileNotFoundError:
        return out
    for n in names:
        prog = n[3:].rsplit(".", 2)[0]
        try:
            with open(os.path.join(d, n), errors="replace") as f:
                errors, lost, _ = valgrind_findings(f.read())
        except OSError:
            continue
        row = out.setdefault(prog, [0, 0, 0, 0])
        row[0] += 1
        if errors is not None:
            row[1] += 1
            row[2] += errors
        row[3] += lost
    return out


def run(cmd, timeout=60 * SLOW, check_rc=None, **kw):
    """Run a short command; returns CompletedProcess with text output.
    (In valgrind mode our programs run under memcheck: see wrap_cmd.)"""
    r = subprocess.run(wrap_cmd(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check_rc is not None and r.returncode != check_rc:
        hint = ""
        if VALGRIND and r.returncode == VALGRIND_EXIT:
            hint = " (exit %d: valgrind found errors; see the valgrind logs below)" % (
                VALGRIND_EXIT)
        raise TestFailure("%s: exit %d (wanted %d)%s\nstdout: %s\nstderr: %s" % (
            " ".join(cmd), r.returncode, check_rc, hint, r.stdout, r.stderr))
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

    def __init__(self, name, cmd, log_path, cwd, env=None):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.log = open(log_path, "ab")
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        self.proc = subprocess.Popen(wrap_cmd(cmd), stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=cwd, env=full_env,
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
        # valgrind mode: the logs of the programs this test starts
        self.valgrind_dir = self.path("valgrind")
        _valgrind_dir[0] = self.valgrind_dir

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

    def make_cert(self, name, cn="localhost"):
        """Another self-signed P-256 certificate for 127.0.0.1/localhost
        (e.g. for an HTTPS server a test runs); returns (crt, key)."""
        d = self.path("certs")
        os.makedirs(d, exist_ok=True)
        key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + cn,
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check_rc=0)
        os.chmod(key, 0o600)
        return crt, key

    @staticmethod
    def public_key_pin(crt):
        """libcurl's CURLOPT_PINNEDPUBLICKEY form of a certificate's key:
        "sha256//" + base64 of SHA-256 of the SubjectPublicKeyInfo DER."""
        import base64
        pem = run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"], check_rc=0).stdout
        der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
        return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()

    # --- aggregator -----------------------------------------------------
    def setup_aggregator(self, extra_ingest="", extra="", tokens=None, log_level="debug"):
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
            "level = %(log_level)s\n"
            "%(extra)s\n"
        ) % {"zmq_port": zmq_port, "https_port": https_port, "indicators": self.indicators,
             "nations": self.nations, "tokens": token_sections, "extra_ingest": extra_ingest,
             "extra": extra, "log_level": log_level}
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

    def start_agent(self, agent, wait_ready=True, env=None):
        """Start the agent daemon; env: extra environment variables (its
        exec collectors inherit them)."""
        d = self.start("agent-" + agent["id"], [self.agent_bin, "-c", agent["conf"]], env=env)
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
    def start(self, name, cmd, env=None):
        log = self.path("%s.%d.log" % (name, len(self.daemons)))
        d = Daemon(name, cmd, log, self.tmp, env=env)
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
        if VALGRIND:
            # after stop_all: the daemons wrote their leak reports on exit
            problems += valgrind_problems(self.valgrind_dir)
            summary = valgrind_summary(self.valgrind_dir)
            print("  valgrind: " + (", ".join(
                "%s %d runs (%d finished) %d errors %d B lost" % (p, r[0], r[1], r[2], r[3])
                for p, r in sorted(summary.items())) or "no program run"))
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


# --- agent helpers: CLI, spool, identifiable collectors ------------------------

def agent_cli(h, agent, *args, check_rc=None, env=None, timeout=60 * SLOW):
    """Run `resilience-agent -c CONF ARGS...` (submit, status, --once...)."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    r = run([h.agent_bin, "-c", agent["conf"]] + list(args), check_rc=check_rc,
            timeout=timeout, env=full_env)
    for m in SANITIZER_MARKERS:
        check(m not in r.stderr, "resilience-agent %s: %r in its output:\n%s" % (
            " ".join(args), m, r.stderr[-3000:]))
    return r


def agent_status(h, agent):
    """`resilience-agent status --json`, parsed."""
    r = agent_cli(h, agent, "status", "--json", check_rc=0)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise TestFailure("status --json printed no JSON: %r (stderr %r)" % (r.stdout, r.stderr))


def status_number(st, *names):
    """The first of `names` present in a status document, searched at the top
    level and one level down (e.g. {"spool": {"depth": 3}} answers "depth");
    names may also be dotted paths ("spool.depth")."""
    for name in names:
        if "." in name:
            cur = st
            for part in name.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            if cur is not None:
                return cur
            continue
        if isinstance(st, dict) and name in st:
            return st[name]
        for v in (st.values() if isinstance(st, dict) else ()):
            if isinstance(v, dict) and name in v:
                return v[name]
    raise TestFailure("status has none of %r: %s" % (names, json.dumps(st)))


def spool_sequences(agent, sub="pending"):
    """Sequences of the entries in <spool>/<sub>/ (names %020d.rpt)."""
    d = os.path.join(agent["spool"], sub)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-4]) for n in names if n.endswith(".rpt") and n[:-4].isdigit())


def spool_names(agent, sub):
    try:
        return sorted(os.listdir(os.path.join(agent["spool"], sub)))
    except FileNotFoundError:
        return []


def spool_entry_path(agent, sequence, sub="pending"):
    return os.path.join(agent["spool"], sub, "%020d.rpt" % sequence)


def spool_pending_bytes(agent, on_disk=False):
    """Total size of pending/: the files' lengths, or (on_disk) the space
    they take (allocated blocks)."""
    d = os.path.join(agent["spool"], "pending")
    total = 0
    for n in spool_names(agent, "pending"):
        try:
            st = os.stat(os.path.join(d, n))
        except FileNotFoundError:
            continue  # acked and removed meanwhile
        total += st.st_blocks * 512 if on_disk else st.st_size
    return total


def sequence_file(agent):
    """The persisted counter (<spool>/sequence: the next free number), or
    None while it does not exist."""
    try:
        with open(os.path.join(agent["spool"], "sequence")) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return None


def stored_values(h, agent_id, indicator):
    """[(value, sequence)] of every stored measurement of `indicator` sent
    by `agent_id`, excluded or not."""
    if not os.path.exists(h.agg["store"]):
        return []
    return h.store_query(
        "SELECT m.value, r.sequence FROM measurements m JOIN reports r ON m.report_id = r.id"
        " WHERE r.agent_id = ? AND m.indicator = ? ORDER BY r.sequence", (agent_id, indicator))


# A valid indicator used to make reports big (duplicates in one report are
# allowed; the latest observation wins `current`, which no test looks at).
PAD_LINE = "info.trust_official_info_pct 50 pct"


class CounterCollector:
    """An exec collector whose every run reports the next value of its own
    counter (1, 2, 3 ...) as `indicator`, and first appends "VALUE RUN" to
    its log (RUN: the RSL_RUN environment variable the test gave the agent
    it ran under). So every report is identifiable, and the test knows
    every value that was ever produced, including ones the agent never
    spooled because it was killed first.

    The counter is guarded by flock: a collector orphaned by a kill -9 may
    still be running when the next agent starts the next run. When the
    common STOP file exists, runs print only a comment (no report).
    pad: extra measurement lines to make each report larger."""

    def __init__(self, h, name, indicator, unit, pad=0):
        self.h = h
        self.name = name
        self.indicator = indicator
        self.log = h.path("collectors", "%s.produced" % name)
        state = h.path("collectors", "%s.state" % name)
        stop = stop_file(h)
        pad_cmd = ""
        if pad:
            pad_cmd = "i=0\nwhile [ $i -lt %d ]; do echo '%s'; i=$((i+1)); done\n" % (
                pad, PAD_LINE)
        self.script = h.write("collectors/%s.sh" % name, (
            "#!/bin/sh\n"
            "# counter collector %(name)s: every run reports the next number\n"
            "if [ -e '%(stop)s' ]; then echo '# stopped'; exit 0; fi\n"
            "exec 9>>'%(state)s.lock'\n"
            "flock 9\n"
            "n=$(cat '%(state)s' 2>/dev/null || echo 0)\n"
            "n=$((n + 1))\n"
            "echo $n > '%(state)s.tmp' && mv '%(state)s.tmp' '%(state)s'\n"
            "echo \"$n ${RSL_RUN:-0}\" >> '%(log)s'\n"
            "exec 9>&-\n"
            "echo \"%(indicator)s $n %(unit)s\"\n"
            "%(pad)s") % {"name": name, "stop": stop, "state": state, "log": self.log,
                          "indicator": indicator, "unit": unit, "pad": pad_cmd}, mode=0o755)

    def conf(self, interval="1s", timeout="10s"):
        return {"type": "exec", "interval": interval, "command": self.script,
                "timeout": timeout}

    def produced(self):
        """[(value, run)] in the order produced."""
        out = []
        try:
            with open(self.log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        out.append((int(parts[0]), parts[1]))
        except FileNotFoundError:
            pass
        return out

    def stored(self, agent_id):
        """[(value, sequence)] as stored at the aggregator."""
        return [(int(v), s) for v, s in stored_values(self.h, agent_id, self.indicator)]


def stop_file(h):
    return h.path("collectors", "STOP")


def stop_counters(h):
    """Make every CounterCollector stop reporting (runs print a comment)."""
    os.makedirs(os.path.dirname(stop_file(h)), exist_ok=True)
    with open(stop_file(h), "w") as f:
        f.write("stop\n")


def counters_quiet(h, collectors, settle=2.5):
    """After stop_counters: wait until no counter has produced anything for
    `settle` seconds (a run already past the STOP check finishes first)."""
    last = [None]
    since = [time.monotonic()]

    def cond():
        now = [len(c.produced()) for c in collectors]
        if now != last[0]:
            last[0] = now
            since[0] = time.monotonic()
            return False
        return time.monotonic() - since[0] >= settle
    wait_for(cond, "the counter collectors to go quiet", interval=0.2)


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
        elif problems:
            # already failed: still show what clean-up found (valgrind
            # findings often explain the failure itself)
            print("  also: %s" % "\n  also: ".join(problems))
        if failed_here:
            failed += 1
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.monotonic() - started))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not tests else 0)


# --- aggregator ingest counters (appended by ingest4, issue 4) ------------------

def parse_prometheus(text):
    """Prometheus text format -> {(name, ((label, value), ...)): float}."""
    import re
    samples = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            continue
        labels = tuple(sorted(label_re.findall(m.group(3) or "")))
        try:
            samples[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return samples


# Counter keys of ingest_counters() and where each is found in /metrics.
_INGEST_METRICS = {
    "accepted": ("resilience_reports_accepted_total", ()),
    "duplicate": ("resilience_reports_duplicate_total", ()),
    "disconnected": ("resilience_ingest_connection_events_total", (("event", "disconnected"),)),
}


def ingest_counters(h, daemon=None):
    """The aggregator's ingest counters as a dict: "accepted", "duplicate",
    "rejected:<reason>", "retry_later:<cause>", "excluded:<reason>",
    "disconnected". Read from GET /metrics where it has the sample (the
    process-wide counters, source "metrics"), otherwise tallied from the
    aggregator's log (level debug; one line per verdict), so the tests work
    whichever way the metrics endpoint exposes them. Returns (dict, source
    of each key)."""
    import re
    daemon = daemon or h.aggregator
    samples = {}
    try:
        code, body = h.https("/metrics")
        if code == 200:
            samples = parse_prometheus(body)
    except TestFailure:
        samples = {}
    # From the log: what the aggregator said about each report.
    log = {}
    text = daemon.log_text()

    def bump(key, n=1):
        log[key] = log.get(key, 0) + n
    for line in text.splitlines():
        m = re.search(r"rejected report from .* sequence \d+: ([a-z_]+):", line)
        if m:
            bump("rejected:" + m.group(1))
        if "EQUIVOCATION by agent" in line:
            bump("rejected:equivocation")
        if re.search(r" accepted \S+/\d+ ", line):
            bump("accepted")
            bump("excluded:unknown_indicator", line.count(": unknown indicator"))
            bump("excluded:unit_mismatch", line.count("is not the taxonomy unit"))
            bump("excluded:future_observation", line.count("observed_at_ms is in the future"))
        if re.search(r" duplicate \S+/\d+", line):
            bump("duplicate")
        if "connection closed (fd" in line:
            bump("disconnected")
        m = re.search(r"retry later \S+: ", line)
        if m:
            bump("retry_later:other")
    counts, source = dict(log), {k: "log" for k in log}
    for (name, labels), value in samples.items():
        key = None
        for k, (mname, mlabels) in _INGEST_METRICS.items():
            if name == mname and labels == mlabels:
                key = k
        if name == "resilience_reports_rejected_total" and labels and labels[0][0] == "reason":
            key = "rejected:" + labels[0][1]
        if name == "resilience_reports_retry_later_total" and labels and labels[0][0] == "reason":
            key = "retry_later:" + labels[0][1]
        if name == "resilience_measurements_excluded_total" and labels and labels[0][0] == "reason":
            key = "excluded:" + labels[0][1]
        if key is not None:
            counts[key] = int(value)
            source[key] = "metrics"
    return counts, source


# --- HTTPS API helpers (api5: tests/integration/test_api_*.py, test_dashboard.py)

def api_request(h, path, token="staff", headers=None, method="GET", cert=None, key=None,
                timeout=None):
    """One HTTPS request with Python's http.client, the server verified
    against the harness certificate. token: a name in h.tokens, a literal
    token, or None; cert/key: a client certificate. Returns (status, headers
    with lower-case names, body bytes)."""
    import http.client
    import ssl
    ctx = ssl.create_default_context(cafile=h.agg["cert"])
    if cert:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", h.agg["https_port"], context=ctx,
                                       timeout=timeout or 30 * SLOW)
    hdrs = dict(headers or {})
    tok = h.tokens.get(token, token) if token else None
    if tok:
        hdrs["Authorization"] = "Bearer " + tok
    try:
        conn.request(method, path, headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def api_json(h, path, token="staff", want=200, **kw):
    """GET path, check the status, return the parsed JSON body."""
    status, _, body = api_request(h, path, token=token, **kw)
    check(status == want, "GET %s: HTTP %d (wanted %d): %s" % (path, status, want, body[:400]))
    try:
        return json.loads(body)
    except ValueError:
        raise TestFailure("GET %s: not JSON: %r" % (path, body[:400]))


def api_use_taxonomy(h, indicators_csv, nations_csv):
    """Write a test taxonomy into the test folder and make the next
    setup_aggregator use it."""
    h.indicators = h.write("taxonomy/indicators.csv", indicators_csv)
    h.nations = h.write("taxonomy/nations.csv", nations_csv)


def api_send(h, agent, measures, observed_at_ms, seq):
    """One signed report through rsl_probe with `measures` ({indicator:
    (value, unit)}) observed at `observed_at_ms`; checks it is ACCEPTED."""
    args = ["--seq", str(seq), "--observed-at", str(int(observed_at_ms))]
    for ind, (value, unit) in measures.items():
        args += ["--measure", "%s=%r:%s" % (ind, float(value), unit)]
    status, detail = h.probe_one(*args, agent=agent)
    check(status == "ACCEPTED", "report %s/%d: %s %s" % (agent["id"], seq, status, detail))


def api_client_ca(h, name="client-ca"):
    """A CA for client certificates; returns (crt, key)."""
    d = h.path("clientpki")
    os.makedirs(d, exist_ok=True)
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/O=Test/CN=" + name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check_rc=0)
    os.chmod(key, 0o600)
    return crt, key


def api_client_cert(h, ca, name, subject):
    """A client certificate signed by `ca` ((crt, key)) with the OpenSSL
    -subj form `subject` ("/C=DE/O=Ministry/CN=x"). Returns (crt, key, the
    subject in RFC 2253 form as a [client] section names it)."""
    d = h.path("clientpki")
    key, csr, crt = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".crt"))
    ext = h.write("clientpki/%s.ext" % name,
                  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=clientAuth\n")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", csr, "-subj", subject], check_rc=0)
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext], check_rc=0)
    os.chmod(key, 0o600)
    r = run(["openssl", "x509", "-in", crt, "-noout", "-subject", "-nameopt", "RFC2253"],
            check_rc=0)
    return crt, key, r.stdout.strip().split("=", 1)[1].strip()


# --- the durability check shared by the crash and full-store tests ------------

def check_acked_stored_once(h, accepted, want, measures_per_report):
    """After a run with faults: every (agent_id, sequence) acked ACCEPTED is
    in the store, none twice, exactly the set `want` is stored, each with
    its `measures_per_report` measurement rows."""
    rows = h.store_query("SELECT agent_id, sequence FROM reports")
    in_store = set(rows)
    check(len(rows) == len(in_store), "%d rows for %d distinct (agent, sequence)"
          % (len(rows), len(in_store)))
    lost = accepted - in_store
    check(not lost, "%d reports acked ACCEPTED are not in the store, e.g. %r"
          % (len(lost), sorted(lost)[:5]))
    check(in_store == want, "stored %d of %d reports (missing e.g. %r, extra e.g. %r)" % (
        len(in_store & want), len(want), sorted(want - in_store)[:5],
        sorted(in_store - want)[:5]))
    (n,), = h.store_query("SELECT count(*) FROM measurements")
    check(n == len(want) * measures_per_report, "%d measurement rows for %d reports"
          % (n, len(want)))
