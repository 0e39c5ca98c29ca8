"""X-Request-Id: accepted when valid, generated (a UUID) otherwise, echoed on every response."""

import httpx
import pytest

from e2e_util import UUID4_RE, check_envelope

# store_neutral: request ids on the HTTP layer
pytestmark = pytest.mark.store_neutral


def test_valid_request_id_echoed(server):
    rid = "client-req_01.A:b"
    with httpx.Client(base_url=server.url, timeout=5) as c:
        r = c.get("/v1/health", headers={"X-Request-Id": rid})
        assert r.headers["x-request-id"] == rid
        r = c.get("/nope", headers={"X-Request-Id": rid})
        err = check_envelope(r, 404)
        assert err["request_id"] == rid
        r = c.get("/v1/health", headers={"X-Request-Id": "x" * 128})
        assert r.headers["x-request-id"] == "x" * 128
    server.wait_log(lambda o: o.get("request_id") == rid and o.get("status") == 404, timeout=2,
                    what="the access-log line carrying the client's request id")


def test_invalid_request_id_replaced(server):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        for bad in ("has space", "y" * 300, "quote\"d", "semi;colon"):
            r = c.get("/v1/health", headers={"X-Request-Id": bad})
            got = r.headers["x-request-id"]
            assert got != bad and UUID4_RE.match(got), f"{bad!r} -> {got!r}"
        r = c.get("/nope", headers={"X-Request-Id": "y" * 300})
        err = check_envelope(r, 404)
        assert UUID4_RE.match(err["request_id"])


def test_generated_ids_differ(server):
    with httpx.Client(base_url=server.url, timeout=5) as c:
        ids = [c.get("/v1/health").headers["x-request-id"] for _ in range(8)]
    assert all(UUID4_RE.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids
