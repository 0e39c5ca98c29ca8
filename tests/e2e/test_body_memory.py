"""Request bodies held in memory share one budget (http.body_memory_mb): a body that would go
over it is refused from its head (503 server_busy, Retry-After, before any of it is buffered),
so stalled bodies on many connections cannot grow the server's memory without bound; requests
without a body are still served, and a body closed or timed out gives its bytes back."""

import socket
import time

from e2e_util import check_envelope, http, wait_until

MIB = 1024 * 1024
BODY = MIB - 1


def _head(length):
    return (b"POST /v1/session/message HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n")


def _stall(srv):
    """A connection that sent a head and most of a BODY-byte body, then stops."""
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    s.sendall(_head(BODY) + b"x" * (BODY - 100))
    return s


def _post(srv, message):
    return http().post(srv.url + "/v1/session/message", json={"message": message}, timeout=10).status_code


def _rss(pid):
    for ln in open(f"/proc/{pid}/status"):
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_bodies_over_the_budget_are_refused_and_the_budget_comes_back(soma):
    srv = soma("http.body_memory_mb=3", "http.request_timeout_s=3",
               env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4"})
    stalled = [_stall(srv) for _ in range(3)]  # 3 MB - 3 bytes of the 3 MB budget
    try:
        time.sleep(0.3)
        before = _rss(srv.proc.pid)
        with srv.connect(timeout=5) as c:
            c.send(_head(BODY) + b"x" * 1000)
            r = c.read_response(timeout=3)
            err = check_envelope(r, 503, "server_busy")
            assert "http.body_memory_mb" in err["message"], err
            assert r.header("retry-after"), r
            assert c.closed_by_peer(timeout=4)
        # many more bodies: refused from the head, none buffered
        extra = []
        for _ in range(40):
            s = socket.create_connection((srv.host, srv.port), timeout=5)
            extra.append(s)
            try:
                s.sendall(_head(BODY) + b"x" * (BODY - 100))
            except OSError:
                pass
        time.sleep(0.5)
        grown = _rss(srv.proc.pid) - before
        for s in extra:
            s.close()
        assert grown < 20 * MIB, f"RSS grew by {grown / MIB:.0f} MB with the budget full"
        assert http().get(srv.url + "/v1/health", timeout=5).status_code == 200
        # a closed body gives its bytes back
        stalled.pop().close()
        wait_until(lambda: _post(srv, "fits again") == 200, 5, interval=0.2,
                   what="a body accepted after one closed")
        # and so do bodies that time out (408)
        for s in stalled:
            s.close()
        stalled = [_stall(srv) for _ in range(3)]
        time.sleep(4)  # http.request_timeout_s: they get 408
        assert _post(srv, "after the timeouts") == 200
    finally:
        for s in stalled:
            s.close()
