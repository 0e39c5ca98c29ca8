"""Keep-alive, pipelining, HTTP/1.0, HEAD."""

import pytest

from e2e_util import check_envelope

# store_neutral: HTTP/1.x framing and keep-alive, below any route that reads the store
pytestmark = pytest.mark.store_neutral


def test_pipelined_requests_answered_in_order(server):
    with server.connect() as c:
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: p1\r\n\r\n"
               b"GET /nope HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: p2\r\n\r\n"
               b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: p3\r\n\r\n")
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert (r1.status, r1.header("x-request-id")) == (200, "p1")
    assert (r2.status, r2.header("x-request-id")) == (404, "p2")
    check_envelope(r2, 404)
    assert (r3.status, r3.header("x-request-id")) == (200, "p3")
    assert r1.json()["status"] == "ok"


def test_keep_alive_serves_sequential_requests(server):
    with server.connect() as c:
        for i in range(5):
            c.send(f"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: k{i}\r\n\r\n".encode())
            r = c.read_response()
            assert r.status == 200 and r.header("x-request-id") == f"k{i}"
            assert (r.header("connection") or "").lower() != "close"


def test_http10_without_keep_alive_closes(server):
    with server.connect() as c:
        c.send(b"GET /v1/health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert (r.header("connection") or "").lower() == "close", r
        assert c.closed_by_peer(timeout=2)


def test_http10_keep_alive_stays_open(server):
    with server.connect() as c:
        for _ in range(2):
            # a 1.0 client closes unless the response says keep-alive (RFC 9112 9.3)
            c.send(b"GET /v1/health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and (r.header("connection") or "").lower() == "keep-alive", r
        c.send(b"GET /v1/health HTTP/1.0\r\n\r\n")
        assert (c.read_response().header("connection") or "").lower() == "close"
        assert c.closed_by_peer(timeout=2)


def test_http10_expect_gets_no_100_continue(server):
    with server.connect() as c:
        # RFC 9110 10.1.1: a 1.0 client's Expect: 100-continue is ignored; the final answer comes
        # first (405: POST is not a method of /v1/health)
        c.send(b"POST /v1/health HTTP/1.0\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nping")
        r = c.read_response()
        assert r.status == 405, r
        assert c.closed_by_peer(timeout=2)


def test_http11_connection_close(server):
    with server.connect() as c:
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and (r.header("connection") or "").lower() == "close"
        assert c.closed_by_peer(timeout=2)


def test_head_has_length_but_no_body(server):
    with server.connect() as c:
        # the GET right behind the HEAD shows whether any body bytes followed the HEAD's headers
        c.send(b"HEAD /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: h1\r\n\r\n"
               b"GET /nope HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: h2\r\n\r\n")
        r1 = c.read_response(head_request=True)
        assert r1.status == 200 and int(r1.header("content-length")) > 0
        r2 = c.read_response()
        assert (r2.status, r2.header("x-request-id")) == (404, "h2"), "HEAD response carried a body"


def test_expect_100_continue(server):
    with server.connect() as c:
        c.send(b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response()
        assert interim.status == 100, interim
        c.send(b"abcd")
        r = c.read_response()
        assert r.status == 405


def test_idle_keep_alive_connection_closed(soma):
    srv = soma("http.idle_timeout_s=1")
    with srv.connect() as c:
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_by_peer(timeout=3), "idle keep-alive connection not closed after http.idle_timeout_s"
    with srv.connect() as c:  # a connection that never sends anything
        assert c.closed_by_peer(timeout=3)
