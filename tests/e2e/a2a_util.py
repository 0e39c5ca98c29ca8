"""Helpers of the A2A e2e tests: JSON-RPC calls to POST /a2a and SSE reading."""

import json

from e2e_util import bearer, http


def rpc(srv, method, params=None, id=1, token=None, raw=None, timeout=20):
    """POST /a2a; returns the httpx response."""
    body = raw if raw is not None else json.dumps({"jsonrpc": "2.0", "id": id, "method": method,
                                                   "params": params if params is not None else {}})
    return http().post(srv.url + "/a2a", content=body, timeout=timeout,
                       headers={"Content-Type": "application/json", **bearer(token)})


def result(srv, method, params=None, id=1, token=None):
    """A call that must succeed: its result."""
    r = rpc(srv, method, params, id=id, token=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == id and "error" not in body, body
    return body["result"]


def error(srv, method, params=None, id=1, token=None, raw=None):
    """A call that must fail with a JSON-RPC error in an HTTP 200: the whole envelope."""
    r = rpc(srv, method, params, id=id, token=token, raw=raw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "result" not in body, body
    assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str), body
    return body


def msg03(text, mid="m-1", **kw):
    return {"message": dict({"kind": "message", "role": "user", "messageId": mid,
                             "parts": [{"kind": "text", "text": text}]}, **kw)}


def msg10(text, mid="m-1", **kw):
    return {"message": dict({"role": "ROLE_USER", "messageId": mid, "parts": [{"text": text}]}, **kw)}


def stream(srv, method, params, id=1, token=None, timeout=20):
    """A streaming call: (response headers, [parsed data of each event]) once the server closes."""
    events = []
    with http().stream("POST", srv.url + "/a2a", timeout=timeout,
                       json={"jsonrpc": "2.0", "id": id, "method": method, "params": params},
                       headers={"Accept": "text/event-stream", **bearer(token)}) as r:
        assert r.status_code == 200, r.read()
        text = r.read().decode()
    assert text.endswith("\n\n"), text
    for block in text.split("\n\n")[:-1]:  # our events: one data line each
        lines = block.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        events.append(json.loads(lines[0][6:]))
    return r.headers, events
