"""A request body is read only for a caller with valid credentials: without them the answer (401)
comes from the head alone, before any of the body is buffered, and the connection closes after
it. Otherwise anyone could make the server hold http.max_body bytes per open connection."""

import socket
import time

import pytest

from e2e_util import check_envelope, create_key, http, post_message

MIB = 1024 * 1024


@pytest.fixture
def keyed(soma, tmp_path):
    """A server that requires credentials, and a valid key for it."""
    token = create_key(tmp_path / "data", tmp_path, "acme")
    # a small ASan quarantine, so that freed memory shows as freed in the RSS (no effect on a
    # release build)
    srv = soma("auth.require=true", env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4"})
    return srv, token


def _head(path, length, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(length).encode() + b"\r\n" + extra + b"\r\n")


def _answer_to_head_alone(srv, head):
    """The response to a head whose body is never sent; fails if the server waits for the body."""
    with srv.connect(timeout=5) as c:
        c.send(head)
        t0 = time.monotonic()
        try:
            r = c.read_response(timeout=3)
        except socket.timeout:
            raise AssertionError("no answer before the body: the server waits to buffer it")
        assert time.monotonic() - t0 < 2, "the answer waited for something"
        assert (r.header("connection") or "").lower() == "close", r
        assert c.closed_by_peer(timeout=4), "the connection stays open with the body unread"
    return r


def _rss(pid):
    for ln in open(f"/proc/{pid}/status"):
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_unauthenticated_body_is_refused_from_the_head(keyed):
    srv, token = keyed
    r = _answer_to_head_alone(srv, _head(b"/v1/session/message", MIB, b"X-Request-Id: early-401\r\n"))
    err = check_envelope(r, 401, "unauthorized")
    assert err["request_id"] == "early-401", err
    assert r.header("www-authenticate") and r.header("www-authenticate").startswith("Bearer"), r
    bad = _answer_to_head_alone(srv, _head(b"/v1/session/message", MIB, b"Authorization: Bearer sa01_nope\r\n"))
    check_envelope(bad, 401, "unauthorized")
    # an unknown path is no way around it
    check_envelope(_answer_to_head_alone(srv, _head(b"/v1/no-such-route", MIB)), 401, "unauthorized")
    # with credentials the body is read as before, on a connection that stays open
    with srv.connect(timeout=5) as c:
        body = b'{"message":"hello"}'
        c.send(_head(b"/v1/session/message", len(body),
                     b"Authorization: Bearer " + token.encode() + b"\r\nExpect: 100-continue\r\n"))
        assert c.read_response(timeout=3).status == 100
        c.send(body)
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.read_response(timeout=5).status == 200
    post_message(srv, "still served", token=token)
    assert http().get(srv.url + "/v1/health", timeout=5).status_code == 200


def test_unauthenticated_bodies_do_not_grow_memory(keyed):
    srv, _token = keyed
    pid = srv.proc.pid
    before = _rss(pid)
    body = b"x" * (MIB - 64)
    conns = []
    try:
        for _ in range(100):  # 100 MB of bodies, none of them authorised
            s = socket.create_connection((srv.host, srv.port), timeout=5)
            conns.append(s)
            try:
                s.sendall(_head(b"/v1/session/message", len(body)) + body)
            except OSError:
                pass  # refused and closed before all of it went out: as it should be
        time.sleep(0.5)
        grown = _rss(pid) - before
    finally:
        for s in conns:
            s.close()
    assert grown < 40 * MIB, f"RSS grew by {grown / MIB:.0f} MB for 100 unauthenticated 1 MB bodies"
    assert http().get(srv.url + "/v1/health", timeout=5).status_code == 200
