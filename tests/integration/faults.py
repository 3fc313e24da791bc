"""Fault harness for the integration tests (issue 8, section 3): the
nemeses that break things while the real daemons run.

- KillNemesis: kill -9 at random moments and restart, seeded by
  RSL_TEST_SEED (the seed is printed, so a failing run can be repeated).
- TcpProxy: a loopback TCP proxy put between the agent and the aggregator
  (point the agent's endpoint at proxy.endpoint). cut() resets every
  connection and refuses new ones (RST), pause() stops forwarding while the
  sockets stay open (a silent partition: only a heartbeat can notice it),
  pause(one_way="to_client") lets requests through but no answers (lost
  acks), resume() heals any of them.
- SmallFs: a tmpfs of a few MiB mounted over a folder (the spool, the
  store), fill() takes every free byte with a filler file, free() gives it
  back. Needs root (CI runs the tests as root); without it, or when the
  mount fails, small_fs_unavailable() says why and the test module skips
  itself loudly (skip_all).
- PendingSampler: every sequence ever seen in an agent's pending/, i.e.
  what it accepted, for "nothing accepted is lost" checks.

Why a proxy and not iptables: it needs no privileges and no kernel
modules, works in any container, and its pause is exact - nothing is read
from either side, so TCP windows fill just as they do when a link goes
dark, while the kernel keeps both connections "established".

Standard library only, like harness.py. Every mount is undone when the
test's `with SmallFs(...)` block ends, whether the test passed or not
(lazily if a daemon still holds files there), so a failed test leaves no
mount behind; keep_on_failure= copies the contents out first.
"""

import errno
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, TestFailure, check, spool_sequences, wait_for  # noqa: E402


# --- seeds ---------------------------------------------------------------------

def fault_seed(what="these fault moments"):
    """The seed of this run: RSL_TEST_SEED if set, else a fresh random one.
    Printed either way, so any run can be repeated exactly."""
    seed = int(os.environ.get("RSL_TEST_SEED") or random.randrange(1 << 30))
    print("  (seed %d: RSL_TEST_SEED=%d repeats %s)" % (seed, seed, what))
    sys.stdout.flush()
    return seed


# --- (a) kill -9 at random moments ---------------------------------------------

class KillNemesis:
    """kill -9 a harness Daemon at random moments and restart it.

    rng: a random.Random seeded by RSL_TEST_SEED (fault_seed); tests use it
    for every other random choice too, so one seed repeats the whole run.
    kills: how many kill -9 were delivered.

    Typical use:
        nemesis = KillNemesis("aggregator")
        for _ in range(20):
            nemesis.kill_and_restart(h.aggregator, h.start_aggregator,
                                     after=(0.2, 1.5))
    """

    def __init__(self, what="the kill moments", seed=None):
        self.seed = fault_seed(what) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.kills = 0

    def sleep(self, lo, hi):
        """Sleep a random time in [lo, hi] seconds (scaled by RSL_TEST_SLOW:
        a sanitizer build gets through the same work in the window)."""
        t = self.rng.uniform(lo, hi) * SLOW
        time.sleep(t)
        return t

    def kill(self, daemon, must_be_alive=True):
        """kill -9 now. must_be_alive: fail if it already died by itself
        (a crash the test would otherwise mistake for its own kill)."""
        if must_be_alive:
            check(daemon.alive(), "%s died by itself before kill %d (exit %s):\n%s" % (
                daemon.name, self.kills + 1, daemon.proc.returncode, daemon.log_text()[-3000:]))
        daemon.kill9()
        self.kills += 1

    def kill_and_restart(self, daemon, restart, after=None):
        """Optionally wait a random time in `after` (lo, hi), kill -9
        `daemon`, then call restart() and return what it returns (the new
        Daemon, as Harness.start_aggregator/start_agent do)."""
        if after is not None:
            self.sleep(*after)
        self.kill(daemon)
        return restart()



class PendingSampler(threading.Thread):
    """Lists an agent's pending/ in a loop and remembers every sequence it
    ever saw there: what the agent accepted (spooled), even if it was sent,
    acked and removed a moment later. Use as a context manager, or
    start()/stop(); `seen` is the set."""

    def __init__(self, agent, interval=0.02):
        super().__init__(daemon=True)
        self.agent = agent
        self.interval = interval
        self.seen = set()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.seen.update(spool_sequences(self.agent))
            time.sleep(self.interval)

    def sample(self):
        """One listing now (e.g. right after a kill); returns what it saw."""
        now = set(spool_sequences(self.agent))
        self.seen.update(now)
        return now

    def stop(self):
        self.done.set()
        self.join(timeout=10)
        self.sample()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# --- (b) a loopback TCP proxy that cuts and pauses ------------------------------

class _Pair:
    """One proxied connection: the client's socket and ours to the target,
    with what is read but not yet written in each direction."""

    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.to_upstream = bytearray()
        self.to_client = bytearray()


def _reset(sock):
    """Close with RST (SO_LINGER on, timeout 0), not a FIN: the peer sees
    ECONNRESET at once, like a middlebox tearing the connection down."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpProxy:
    """Forward 127.0.0.1:<port> to target_host:target_port, with faults.

    States:
      open    accept and forward both ways
      paused  read and write nothing, accept nothing (connections made
              meanwhile wait in the kernel's backlog, handshake done but
              silent): every existing connection stays ESTABLISHED and dead
      half    pause(one_way="to_client"): the client's bytes still reach
              the target, nothing comes back (lost acks: the target acts
              on what it gets, the client never hears of it)
      cut     every connection reset (RST), the listener closed: connects
              are refused (RST) until resume()
    resume() goes back to open from either (after a cut, the listener is
    bound again to the same port).

    One thread owns every socket; the control methods hand it a command
    and wait until it is done, so after pause() returns, nothing more is
    forwarded. Counters: accepted (connections), cuts, pauses, bytes_up,
    bytes_down (forwarded client->target and back).
    """

    BUFFER_MAX = 1 << 20  # per direction: stop reading beyond this

    def __init__(self, target_port, target_host="127.0.0.1", port=None, name="proxy"):
        self.name = name
        self.target = (target_host, target_port)
        self.port = port
        self.state = "new"
        self.accepted = self.cuts = self.pauses = 0
        self.bytes_up = self.bytes_down = 0
        self.errors = []          # unexpected exceptions of the proxy thread
        self._pairs = []
        self._listener = None
        self._sel = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._commands = []
        self._lock = threading.Lock()
        self._fwd_up = self._fwd_down = True  # which ways bytes flow now
        self._thread = None

    # -- control (test thread) --
    @property
    def endpoint(self):
        """The ZeroMQ endpoint to give the agent instead of the aggregator's."""
        return "tcp://127.0.0.1:%d" % self.port

    def start(self):
        self._listen()
        self.state = "open"
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._sel.register(self._listener, selectors.EVENT_READ, ("accept", None))
        self._thread = threading.Thread(target=self._loop, name="TcpProxy", daemon=True)
        self._thread.start()
        return self

    def cut(self):
        self._command("cut")

    def pause(self, one_way=None):
        """Silent partition; one_way="to_client" blocks only the way back."""
        if one_way not in (None, "to_client"):
            raise ValueError("one_way: None or 'to_client', not %r" % (one_way,))
        self._command("half" if one_way else "pause")

    def resume(self):
        self._command("resume")

    def stop(self):
        if self._thread is not None and self._thread.is_alive():
            self._command("stop")
            self._thread.join(timeout=10)
        self._thread = None

    def connections(self):
        """Proxied connections currently open."""
        return self._command("count")

    def __enter__(self):
        return self.start() if self._thread is None else self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _command(self, what):
        if self._thread is None or not self._thread.is_alive():
            raise TestFailure("%s: the proxy thread is not running (%s)" % (
                self.name, "; ".join(self.errors) or "stopped"))
        done = threading.Event()
        box = {}
        with self._lock:
            self._commands.append((what, done, box))
        self._wake_w.send(b"x")
        if not done.wait(timeout=30):
            raise TestFailure("%s: the proxy thread did not carry out %r" % (self.name, what))
        if "error" in box:
            raise TestFailure("%s: %s failed: %s" % (self.name, what, box["error"]))
        return box.get("result")

    # -- the proxy thread --
    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.bind(("127.0.0.1", self.port or 0))
                break
            except OSError as e:
                # After a cut the port may linger a moment; nobody else
                # should take it on loopback in that moment.
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    s.close()
                    raise
                time.sleep(0.05)
        s.listen(128)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self._listener = s

    def _loop(self):
        try:
            while True:
                for key, events in self._sel.select(timeout=1.0):
                    kind, pair = key.data
                    if kind == "wake":
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                        if self._run_commands():
                            return
                    elif kind == "accept":
                        self._accept()
                    elif pair in self._pairs:
                        self._service(pair, key.fileobj, events)
        except Exception as e:  # report, never hang the test
            self.errors.append(repr(e))
        finally:
            self._close_all(reset=True)
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _run_commands(self):
        with self._lock:
            cmds, self._commands = self._commands, []
        stop = False
        for what, done, box in cmds:
            try:
                if what == "cut":
                    self.cuts += 1
                    self._close_all(reset=True)
                    if self._listener is not None:
                        self._unregister(self._listener)
                        # Closing the listener also resets whatever waits
                        # in its backlog.
                        self._listener.close()
                        self._listener = None
                    self.state = "cut"
                elif what in ("pause", "half"):
                    if self.state == "open":
                        self.pauses += 1
                        self.state = "paused" if what == "pause" else "half"
                        self._fwd_up = what == "half"
                        self._fwd_down = False
                        if what == "pause":
                            self._unregister(self._listener)
                        for p in self._pairs:
                            self._update(p)
                elif what == "resume":
                    if self._listener is None:
                        self._listen()
                    self.state = "open"
                    self._fwd_up = self._fwd_down = True
                    self._unregister(self._listener)
                    self._sel.register(self._listener, selectors.EVENT_READ, ("accept", None))
                    for p in self._pairs:
                        self._update(p)
                elif what == "count":
                    box["result"] = len(self._pairs)
                elif what == "stop":
                    stop = True
            except Exception as e:
                box["error"] = repr(e)
            done.set()
        return stop

    def _unregister(self, sock):
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _accept(self):
        while self.state in ("open", "half") and self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # the target is down: refuse like it would
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            p = _Pair(client, upstream)
            self._pairs.append(p)
            self._update(p)

    def _update(self, p):
        """(Re)register both sockets for what they may do now: read only
        what may flow on, write only what may arrive."""
        for sock, inbox, outbox, may_read, may_write in (
                (p.client, p.to_upstream, p.to_client, self._fwd_up, self._fwd_down),
                (p.upstream, p.to_client, p.to_upstream, self._fwd_down, self._fwd_up)):
            ev = 0
            if may_read and len(inbox) < self.BUFFER_MAX:
                ev |= selectors.EVENT_READ
            if may_write and outbox:
                ev |= selectors.EVENT_WRITE
            self._unregister(sock)
            if ev:
                self._sel.register(sock, ev, ("pair", p))

    def _service(self, p, sock, events):
        src_is_client = sock is p.client
        inbox = p.to_upstream if src_is_client else p.to_client
        outbox = p.to_client if src_is_client else p.to_upstream
        try:
            if events & selectors.EVENT_READ:
                data = sock.recv(65536)
                if not data:
                    # The peer closed. A real partition would keep that
                    # from the other side too, but holding half-closed
                    # pairs buys nothing: both ends notice soon anyway.
                    self._close_pair(p, reset=False)
                    return
                inbox += data
                if src_is_client:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                other = p.upstream if src_is_client else p.client
                self._flush(other, inbox)
            if events & selectors.EVENT_WRITE and outbox:
                self._flush(sock, outbox)
        except (ConnectionError, OSError):
            self._close_pair(p, reset=True)
            return
        self._update(p)

    @staticmethod
    def _flush(sock, buf):
        try:
            n = sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        del buf[:n]

    def _close_pair(self, p, reset):
        for s in (p.client, p.upstream):
            self._unregister(s)
            if reset:
                _reset(s)
            else:
                try:
                    s.close()
                except OSError:
                    pass
        if p in self._pairs:
            self._pairs.remove(p)

    def _close_all(self, reset):
        for p in list(self._pairs):
            self._close_pair(p, reset)


# --- (c) a small file system that fills up --------------------------------------

class Unavailable(Exception):
    """The fault cannot be set up here (not root, mount refused ...)."""


def small_fs_unavailable():
    """None when a tmpfs can be mounted here, else the reason why not
    (checked by really mounting and unmounting a tiny one)."""
    if os.geteuid() != 0:
        return "not root (euid %d): mounting a tmpfs needs CAP_SYS_ADMIN" % os.geteuid()
    d = tempfile.mkdtemp(prefix="rsl-fs-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        if r.returncode != 0:
            return "mount -t tmpfs failed (exit %d): %s" % (r.returncode, r.stdout.strip())
        subprocess.run(["umount", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return "cannot run mount: %r" % (e,)
    finally:
        try:
            os.rmdir(d)
        except OSError:
            pass


def skip_all(reason):
    """End a test module that cannot run here: say so loudly and exit 77,
    which tests/CMakeLists.txt declares as ctest's SKIP_RETURN_CODE (the
    test shows as skipped, with the reason in its output)."""
    print("SKIPPED (every test of %s): %s" % (os.path.basename(sys.argv[0]), reason))
    print("0 passed, 0 failed, all skipped")
    sys.stdout.flush()
    sys.exit(77)


class SmallFs:
    """A tmpfs of `size` (mount's syntax: "2m", "512k") mounted over
    `path` (created if missing; whatever it held is hidden while mounted,
    so mount before the daemon writes there).

        with SmallFs(h.path("spool", "A"), "2m") as fs:
            ...
            fs.fill()      # every free byte taken
            ...
            fs.free()      # all given back

    The mount is undone when the block ends, also on failure; a daemon
    still holding files open there gets a lazy unmount (umount -l) so the
    test never leaves a mount behind.
    """

    FILLER = ".filler"

    def __init__(self, path, size="2m", mode="0700", keep_on_failure=None):
        self.path = path
        self.size = size
        self.mode = mode
        self.keep_on_failure = keep_on_failure  # copy the contents there if the block fails
        self.mounted = False
        self.filled = 0

    def mount(self):
        os.makedirs(self.path, exist_ok=True)
        opts = "size=%s,mode=%s" % (self.size, self.mode)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", self.path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise Unavailable("mount -t tmpfs -o size=%s %s: exit %d: %s" % (
                self.size, self.path, r.returncode, r.stdout.strip()))
        self.mounted = True
        return self

    def umount(self):
        """Unmount (lazily if busy); returns a problem string or None."""
        if not self.mounted:
            return None
        self.mounted = False
        r = subprocess.run(["umount", self.path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        if r.returncode == 0:
            return None
        r2 = subprocess.run(["umount", "-l", self.path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=30)
        if r2.returncode == 0:
            return None
        return "umount %s failed: %s / %s" % (self.path, r.stdout.strip(), r2.stdout.strip())

    def __enter__(self):
        return self.mount()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.keep_on_failure and self.mounted:
            # What the daemon left is the evidence; the mount takes it away.
            try:
                self.free()
                shutil.copytree(self.path, self.keep_on_failure, dirs_exist_ok=True)
                print("  (contents of the small file system kept in %s)" % self.keep_on_failure)
            except OSError as e:
                print("  (could not keep the small file system's contents: %r)" % (e,))
        problem = self.umount()
        if problem:
            print("  WARNING: %s" % problem)
        return False

    # -- space --
    def free_bytes(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def total_bytes(self):
        st = os.statvfs(self.path)
        return st.f_blocks * st.f_frsize

    def fill(self, leave=0):
        """Grow the filler until the file system is full (or only `leave`
        bytes are free). Returns the bytes the filler holds. Space freed
        later (acked entries removed) is free again: call fill() again to
        take it too."""
        p = os.path.join(self.path, self.FILLER)
        chunk = b"\0" * 65536
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                room = self.free_bytes() - leave
                if room <= 0:
                    break
                try:
                    n = os.write(fd, chunk[:min(len(chunk), room)])
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        break
                    raise
                if n <= 0:
                    break
            os.fsync(fd)
        finally:
            os.close(fd)
        self.filled = os.path.getsize(p)
        return self.filled

    def free(self):
        """Remove the filler: the space it took is free again."""
        try:
            os.unlink(os.path.join(self.path, self.FILLER))
        except FileNotFoundError:
            pass
        self.filled = 0

    def is_full(self, slack=0):
        return self.free_bytes() <= slack


def wait_full(fs, what="the small file system to be full"):
    """Refill until a fill leaves no room at all (a daemon may free a little
    meanwhile, e.g. an acked entry); returns the filler size."""
    def cond():
        fs.fill()
        return fs.free_bytes() == 0
    wait_for(cond, what)
    return fs.filled
