"""A connection's output is bounded: a client that pipelines requests and never reads its
responses makes the server stop reading (memory and fds per connection stay bounded), and all
the responses still arrive, in order, once it reads. A client that half-closes after sending
(shutdown(SHUT_WR)) still gets its answers."""

import os
import socket
import threading

import httpx

from e2e_util import create_key, wait_until

# a small ASan quarantine, so that freed memory shows as freed in the RSS (no effect on a
# release build); a long write timeout, so that the connection outlives a client that does not
# read for a while
ASAN_SMALL = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4"}
SLOW_READER = "http.request_timeout_s=120"


def _status_kb(pid, field):
    for ln in open(f"/proc/{pid}/status"):
        if ln.startswith(field + ":"):
            return int(ln.split()[1])
    raise AssertionError(f"no {field}")


def _nfd(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _unread_socket(srv):
    """A connected socket with small kernel buffers, so that what the server writes stays with it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.connect(("127.0.0.1", srv.port))
    return s


def _send_until_blocked(s, data, idle_s=2.0):
    """Sends data; stops early once the server has stopped reading (a send blocks idle_s).
    Returns the bytes sent."""
    s.settimeout(idle_s)
    sent = 0
    while sent < len(data):
        try:
            sent += s.send(data[sent:sent + 65536])
        except socket.timeout:
            break
    return sent


def _read_all(s):
    """Everything the server sends until it closes the connection."""
    s.settimeout(30)
    chunks = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _responses(raw):
    """Splits a stream of responses (each with Content-Length) into (status, headers, body)."""
    out = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        assert end >= 0, f"truncated response head: {raw[pos:pos + 200]!r}"
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers["content-length"])
        assert end + 4 + n <= len(raw), "truncated response body"
        out.append((int(lines[0].split()[1]), headers, raw[end + 4:end + 4 + n]))
        pos = end + 4 + n
    return out


def _pipeline_then_read(s, reqs, last, observe=None):
    """Sends reqs without reading (until the server stops reading), calls observe(), then reads
    while sending the rest and last (which closes the connection); returns the responses."""
    data = b"".join(reqs)
    sent = _send_until_blocked(s, data)
    if observe:
        observe()
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("raw", _read_all(s)))
    reader.start()
    s.settimeout(30)
    s.sendall(data[sent:] + last)
    reader.join(60)
    assert "raw" in got, "the responses did not all arrive"
    return _responses(got["raw"])


def test_unread_pipelined_responses_do_not_grow_memory(soma):
    srv = soma(SLOW_READER, env=ASAN_SMALL)
    pid = srv.proc.pid
    before = _status_kb(pid, "VmRSS")
    n = 60000  # ~3.5 MB of requests: ~10 MB of responses, held in memory when nothing bounds it
    reqs = [b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: p%d\r\n\r\n" % i for i in range(n)]
    last = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: last\r\nConnection: close\r\n\r\n"
    s = _unread_socket(srv)
    try:
        resp = _pipeline_then_read(s, reqs, last)
    finally:
        s.close()
    grown_mb = (_status_kb(pid, "VmHWM") - before) / 1024
    assert grown_mb < 48, f"the server's memory peaked {grown_mb:.0f} MB above its start"
    assert len(resp) == n + 1, f"{len(resp)} responses to {n + 1} requests"
    ids = [h.get("x-request-id") for _st, h, _b in resp]
    assert ids == [f"p{i}" for i in range(n)] + ["last"], "responses out of order"
    assert all(st == 200 for st, _h, _b in resp)
    assert httpx.get(srv.url + "/v1/health", timeout=5).status_code == 200


def test_unread_file_responses_do_not_hold_fds(soma, tmp_path):
    token = create_key(tmp_path / "data", tmp_path, "acme")
    srv = soma(SLOW_READER)
    auth = {"Authorization": f"Bearer {token}"}
    content = b"hello attachment\n" * 64
    r = httpx.post(f"{srv.url}/v1/uploads", files={"files": ("a.txt", content, "text/plain")}, headers=auth,
                   timeout=10)
    assert r.status_code in (200, 201), r.text
    j = r.json()
    items = j if isinstance(j, list) else (j.get("attachments") or j.get("items"))
    att = items[0]["id"]
    pid = srv.proc.pid
    base = _nfd(pid)
    n = 3000
    req = b"GET /v1/attachments/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (
        att.encode(), token.encode())
    peak = [base]

    def leaked():
        peak[0] = max(peak[0], _nfd(pid))
        return peak[0] > base + 40

    def watch():  # the server taking the requests: an observation window, not an assertion
        try:
            wait_until(leaked, timeout=4, what="queued file responses")
        except AssertionError:
            pass

    s = _unread_socket(srv)
    try:
        resp = _pipeline_then_read(s, [req] * n, req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                                   observe=watch)
    finally:
        s.close()
    assert peak[0] <= base + 40, f"{peak[0] - base} fds held by one connection's unread responses"
    assert len(resp) == n + 1, f"{len(resp)} responses to {n + 1} requests"
    assert all(st == 200 and body == content for st, _h, body in resp)
    wait_until(lambda: _nfd(pid) <= base + 5, timeout=10, what="the fds closed")


def test_half_closed_client_gets_its_answers(soma, tmp_path):
    token = create_key(tmp_path / "data", tmp_path, "acme")
    srv = soma()
    body = b'{"message":"half-closed"}'
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /v1/session/message HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n" % (token.encode(), len(body), body))
        s.shutdown(socket.SHUT_WR)
        resp = _responses(_read_all(s))
    assert [st for st, _h, _b in resp] == [200, 200], resp
    assert b"session_id" in resp[0][2], resp[0]
    # three pipelined, then the half-close: all three answered
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        s.shutdown(socket.SHUT_WR)
        assert [st for st, _h, _b in _responses(_read_all(s))] == [200, 200, 200]
