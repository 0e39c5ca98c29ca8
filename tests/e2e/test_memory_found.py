"""Memory bugs found by review, each reproduced against the fake SomaBrain
(tests/fakes/somabrain/server.py) and fixed; every test here failed on the build before its fix."""

from e2e_util import http

from test_memory import FakeSomaBrain, drained, memory_health, outbox, remember

import pytest


@pytest.fixture
def brain(tmp_path):
    b = FakeSomaBrain(tmp_path)
    yield b
    b.stop()


def test_key_never_reaches_a_header(soma, brain):
    """A memory key with CR LF once went out as the X-Request-ID header: it added an X-Tenant-ID
    of the client's choosing to the SomaBrain call. Keys are now [A-Za-z0-9._:/-] (422 otherwise)
    and a write's X-Request-ID is a fresh id, never the key."""
    srv = soma(*brain.sets())
    memory_health(srv, "ok")
    for bad in ("abc\r\nX-Tenant-ID: victim\r\nX-Evil: 1", "a b", "k\"y", "caf\u00e9", "a\tb"):
        r = http().post(srv.url + "/v1/memory/remember", json={"value": {"content": "hello"}, "key": bad},
                        timeout=5)
        assert r.status_code == 422, (bad, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_key" and err["request_id"] and "A-Za-z0-9" in err["message"], err
    assert outbox(srv)["pending"] == 0
    # keys of the safe set (the original's tenant/namespace/... paths included) still work
    good = ["my-key_1.v2", "urn:x:1", "acme/wm/s1/user/2024-01-01T00:00:00Z/0123abcd"]
    for key in good:
        assert remember(srv, {"content": f"hello {key}"}, key=key) == {"key": key, "status": "queued"}
    drained(srv)
    st = brain.stats()
    assert sorted(k for _, k in st["order"]) == sorted(good), st
    hdr = st["last_headers"]
    assert hdr["x-tenant-id"] == "default" and "x-evil" not in hdr, hdr
    assert hdr["x-request-id"] and hdr["x-request-id"] not in good, hdr

