"""Error envelopes and the HTTP limits: 404, 405 + Allow, 413, 431, 400, 505, 411, 408.
Framing errors are produced over raw sockets."""

import time

import httpx
import pytest

from e2e_util import check_envelope, find_samples, parse_metrics, raw_request

# store_neutral: HTTP limits and error envelopes, answered before any route reads the store
pytestmark = pytest.mark.store_neutral

MAX_BODY = 1024
MAX_HEADER = 2048


@pytest.fixture(scope="module")
def srv(module_soma):
    return module_soma(f"http.max_body={MAX_BODY}", f"http.max_header={MAX_HEADER}", "http.request_timeout_s=1")


def _closes(resp):
    assert (resp.header("connection") or "").lower() == "close", f"framing error without Connection: close: {resp!r}"


def test_404_unknown_route(srv):
    r = httpx.get(srv.url + "/v1/no-such-thing", timeout=5)
    err = check_envelope(r, 404, "not_found")
    assert "/v1/no-such-thing" in err["message"]


def test_405_with_allow(srv):
    r = httpx.post(srv.url + "/v1/health", timeout=5)
    check_envelope(r, 405)
    allow = [m.strip() for m in r.headers.get("allow", "").split(",")]
    assert "GET" in allow, f"Allow: {r.headers.get('allow')!r}"
    r = httpx.delete(srv.url + "/metrics", timeout=5)
    check_envelope(r, 405)
    assert "GET" in r.headers.get("allow", "")


def test_413_body_too_large(srv):
    body = b"x" * (2 * MAX_BODY)
    head = f"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    r = raw_request(srv, head + body)
    check_envelope(r, 413)
    _closes(r)


def test_413_from_the_header_alone(srv):
    """The size check must not wait for the body: only the head is sent."""
    with srv.connect(timeout=3) as c:
        t0 = time.monotonic()
        c.send(b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n")
        r = c.read_response()
        assert time.monotonic() - t0 < 0.9, "413 came only after the request timeout"
    check_envelope(r, 413)
    _closes(r)


def test_body_at_the_limit_is_accepted(srv):
    body = b"x" * MAX_BODY
    head = f"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    r = raw_request(srv, head + body)
    check_envelope(r, 405)  # read and routed, not refused for size


def test_431_headers_too_large(srv):
    big = "a" * (MAX_HEADER + 100)
    r = raw_request(srv, f"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n".encode())
    check_envelope(r, 431)
    _closes(r)


def test_431_unterminated_head_over_the_limit(srv):
    """A head that never ends must be refused once it passes the limit, not buffered on."""
    big = "a" * (MAX_HEADER + 100)
    with srv.connect(timeout=3) as c:
        c.send(f"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}".encode())
        r = c.read_response()
    check_envelope(r, 431)


def test_400_malformed_request_line(srv):
    for bad in (b"GARBAGE\r\n\r\n", b"GET /v1/health\r\nHost: localhost\r\n\r\n", b"GET v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"):
        r = raw_request(srv, bad)
        check_envelope(r, 400)
        _closes(r)


def test_400_http11_without_host(srv):
    r = raw_request(srv, b"GET /v1/health HTTP/1.1\r\n\r\n")
    check_envelope(r, 400)


def test_505_http2_request_line(srv):
    r = raw_request(srv, b"GET /v1/health HTTP/2.0\r\nHost: localhost\r\n\r\n")
    check_envelope(r, 505)
    _closes(r)


def test_411_chunked(srv):
    r = raw_request(srv, b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    check_envelope(r, 411)
    _closes(r)


def test_408_request_head_timeout(srv):
    with srv.connect(timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        r = c.read_response()
        elapsed = time.monotonic() - t0
    check_envelope(r, 408)
    assert 0.8 <= elapsed <= 3.0, f"408 after {elapsed:.2f} s with http.request_timeout_s=1"


def test_408_request_body_timeout(srv):
    with srv.connect(timeout=5) as c:
        t0 = time.monotonic()
        c.send(b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345")
        r = c.read_response()
        elapsed = time.monotonic() - t0
    check_envelope(r, 408)
    assert 0.8 <= elapsed <= 3.0, elapsed


def test_idle_connection_not_answered_408(srv):
    """An idle keep-alive connection with no request started gets no 408."""
    with srv.connect(timeout=1.6) as c:
        c.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_by_peer(timeout=1.5) is False


def test_framing_errors_close_the_connection(srv):
    """After an error answered before routing (Connection: close), the server must close."""
    for bad in (
        b"GARBAGE\r\n\r\n",
        b"GET /v1/health HTTP/2.0\r\nHost: localhost\r\n\r\n",
        b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n",  # 408 after http.request_timeout_s
    ):
        with srv.connect(timeout=3) as c:
            c.send(bad)
            r = c.read_response()
            _closes(r)
            assert c.closed_by_peer(timeout=2), f"connection left open after {r.status} for {bad!r}"


def test_framing_errors_are_counted_and_logged(srv):
    """400/413/505 responses are requests answered: they appear in the access log and metrics."""
    rid_by_status = {}
    for bad, status in (
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/health HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
        (b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n", 413),
    ):
        r = raw_request(srv, bad)
        assert r.status == status
        rid_by_status[status] = r.header("x-request-id")
    text = httpx.get(srv.url + "/metrics", timeout=5).text
    _, samples = parse_metrics(text)
    for status in rid_by_status:
        assert find_samples(samples, "soma_http_requests_total", status=str(status)), (
            f"no soma_http_requests_total sample with status={status}"
        )
    for status, rid in rid_by_status.items():
        srv.wait_log(lambda o, rid=rid: o.get("request_id") == rid, timeout=2,
                     what=f"an access-log line for the {status} response (request_id {rid})")


def test_request_id_echoed_on_413(srv):
    """The head was parsed, so the client's X-Request-Id is known and must be echoed."""
    r = raw_request(srv, b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: big-upload-1\r\n"
                         b"Content-Length: 100000\r\n\r\n")
    check_envelope(r, 413)
    assert r.header("x-request-id") == "big-upload-1"
