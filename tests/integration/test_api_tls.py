#!/usr/bin/env python3
"""HTTPS done properly, checked from outside with openssl s_client and raw
sockets against the real binary.

- TLS 1.0 and 1.1 are refused even by a client that lowers its own
  security level to offer them; TLS 1.2 and 1.3 work; TLS 1.2 without
  forward secrecy or AEAD is refused.
- A client that sends its request headers one byte a second is cut off
  (evhttp's own timeout restarts with every byte; the aggregator's
  per-connection deadline does not), and the server keeps answering
  others meanwhile.
- Keep-alive: several requests over one connection.
- Limits: oversized headers and bodies are refused.
- Headers: HSTS (and hsts = false turns it off), nosniff, no-store on
  data, the page's Content-Security-Policy without inline script.
"""
import os
import select
import socket
import ssl
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SLOW, api_request, check, run, run_tests  # noqa: E402


def s_client(h, *args):
    """openssl s_client against the aggregator; returns (handshake ok, output)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % h.agg["https_port"],
           "-servername", "localhost", "-CAfile", h.agg["cert"]] + list(args)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60 * SLOW)
    out = r.stdout
    ok = r.returncode == 0 and "Cipher is (NONE)" not in out and "New, TLSv1." in out and \
        "Verify return code: 0" in out
    return ok, out


def test_protocol_floor(h):
    h.setup_aggregator()
    h.start_aggregator()
    for proto in ("-tls1", "-tls1_1"):
        ok, out = s_client(h, proto, "-cipher", "DEFAULT:@SECLEVEL=0")
        check(not ok, "%s handshake succeeded:\n%s" % (proto, out[-800:]))
    for proto, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        ok, out = s_client(h, proto)
        check(ok and ("New, %s," % name) in out, "%s handshake failed:\n%s" % (proto, out[-800:]))
    # TLS 1.2 suites outside the Mozilla intermediate list are refused.
    for cipher in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        ok, out = s_client(h, "-tls1_2", "-cipher", cipher + ":@SECLEVEL=0")
        check(not ok, "TLS 1.2 with %s accepted:\n%s" % (cipher, out[-600:]))
    ok, out = s_client(h, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
    check(ok, "ECDHE-ECDSA-CHACHA20-POLY1305 refused:\n%s" % out[-600:])


def tls_connect(h):
    ctx = ssl.create_default_context(cafile=h.agg["cert"])
    raw = socket.create_connection(("127.0.0.1", h.agg["https_port"]), timeout=30 * SLOW)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_peer(sock):
    """True if the server has closed the connection (EOF or reset). The
    socket is also readable when TLS 1.3 session tickets arrive: reading
    those yields no data and times out, which is not a close."""
    r, _, _ = select.select([sock], [], [], 0)
    if not r and not sock.pending():
        return False
    old = sock.gettimeout()
    sock.settimeout(0.2)
    try:
        return sock.recv(4096) == b""
    except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
        return False
    except (ssl.SSLError, OSError):
        return True
    finally:
        sock.settimeout(old)


def test_slow_headers_are_cut_off(h):
    h.setup_aggregator()
    h.start_aggregator()
    request = (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow-" +
               b"x" * 60 + b"\r\nAccept: */*\r\n\r\n")
    sock = tls_connect(h)
    sent = 0
    cut = False
    other_ok = False
    try:
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except (ssl.SSLError, OSError):
                cut = True
                break
            sent += 1
            # Meanwhile the server answers everyone else.
            if sent == 3:
                status, _, body = api_request(h, "/healthz", token=None)
                other_ok = status == 200
                check(other_ok, "another client got %d %r" % (status, body[:200]))
            time.sleep(1.0)
            if closed_by_peer(sock):
                cut = True
                break
    finally:
        sock.close()
    check(other_ok, "another client was not served while the slow one was connected")
    check(cut, "a client sending one header byte a second was never cut off (%d of %d bytes "
          "sent)" % (sent, len(request)))
    check(sent < len(request), "cut only after the whole request")
    print("    slow client cut off after %d of %d header bytes" % (sent, len(request)))


def test_idle_connection_without_handshake_is_closed(h):
    h.setup_aggregator()
    h.start_aggregator()
    raw = socket.create_connection(("127.0.0.1", h.agg["https_port"]), timeout=60 * SLOW)
    try:
        raw.settimeout(60 * SLOW)
        data = raw.recv(100)  # blocks until the server closes
        check(data == b"", "server sent %r to a silent client" % data)
    except ConnectionResetError:
        pass
    finally:
        raw.close()


def test_keep_alive_and_limits(h):
    h.setup_aggregator()
    h.start_aggregator()
    import http.client
    ctx = ssl.create_default_context(cafile=h.agg["cert"])
    conn = http.client.HTTPSConnection("127.0.0.1", h.agg["https_port"], context=ctx,
                                       timeout=30 * SLOW)
    auth = {"Authorization": "Bearer " + h.tokens["staff"]}
    socks = set()
    for path in ("/healthz", "/v1/summary", "/v1/requirements", "/v1/nations/DEU"):
        conn.request("GET", path, headers=auth)
        r = conn.getresponse()
        r.read()
        check(r.status == 200, "%s: %d" % (path, r.status))
        check((r.getheader("Connection") or "").lower() != "close", "server closed keep-alive")
        socks.add(id(conn.sock))
    check(len(socks) == 1, "requests did not share one connection")
    conn.close()

    # Headers over 8 KiB are refused before any handler runs.
    status = None
    try:
        status, _, _ = api_request(h, "/healthz", token=None, headers={"X-Pad": "a" * 10000})
    except (ConnectionError, OSError, Exception):
        status = "closed"
    check(status != 200, "10 KB of headers accepted")
    # A request body over the 1 KiB limit is refused before any handler
    # (every route is a GET; a small body reaches the handler: 405).
    big = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", h.agg["cert"],
               "-X", "POST", "--data-binary", "x" * 4096,
               "https://127.0.0.1:%d/v1/summary" % h.agg["https_port"]])
    check(big.stdout.strip() not in ("200", "405"), "4 KiB body: HTTP %s" % big.stdout)
    status, _, _ = api_request(h, "/v1/summary", method="POST", headers={"Content-Length": "0"})
    check(status == 405, "POST: %d" % status)


def test_security_headers_and_hsts_switch(h):
    h.setup_aggregator()
    h.start_aggregator()
    status, headers, body = api_request(h, "/v1/summary")
    check(status == 200, "summary %d" % status)
    check(headers.get("strict-transport-security", "").startswith("max-age="), "no HSTS")
    check(headers.get("x-content-type-options") == "nosniff", "no nosniff")
    check(headers.get("cache-control") == "no-store", "data cache-control %r" %
          headers.get("cache-control"))
    status, headers, body = api_request(h, "/", token=None)
    csp = headers.get("content-security-policy", "")
    check(status == 200 and "script-src 'self'" in csp and "unsafe-inline" not in csp and
          "frame-ancestors 'none'" in csp, "page CSP %r" % csp)
    check(b"<script>" not in body and b"<script src=\"/assets/app.js\"" in body,
          "the page must load its script from /assets/app.js, with no inline script")
    check(headers.get("etag"), "page without ETag")
    status, _, _ = api_request(h, "/", token=None, headers={"If-None-Match": headers["etag"]})
    check(status == 304, "If-None-Match: %d" % status)
    h.stop_all()

    # hsts = false (a site that terminates TLS elsewhere may not want it).
    conf = h.agg["conf"]
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("threads = 2\n", "threads = 2\nhsts = false\n", 1))
    h.start_aggregator()
    status, headers, _ = api_request(h, "/v1/summary")
    check(status == 200 and "strict-transport-security" not in headers, "hsts = false ignored")


if __name__ == "__main__":
    run_tests(globals())
