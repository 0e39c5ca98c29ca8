"""An A2A run is as good as the credential it was opened with, like a session's event stream
(src/gateway/cred_hold.c): revoking its API key ends a message/stream or tasks/resubscribe with
one SSE event carrying a JSON-RPC error (-32000, "credentials revoked: ...") and no later
artifact; a blocking message/send waiting answers that error; a stream opened with a JWT ends at
the token's exp. Before, such runs went on delivering the task to the end."""

import json
import secrets
import threading
import time

import jwt

from a2a_util import msg03, result
from e2e_util import bearer, http

ADMIN = "adm-" + secrets.token_hex(20)
SECRET = "e2e-jwt-secret-0123456789abcdef0123456789"


def _key(srv, tenant="ta"):
    r = http().post(f"{srv.url}/v1/keys", json={"tenant": tenant, "scopes": "chat"}, headers=bearer(ADMIN), timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


def _revoke(srv, key):
    r = http().delete(f"{srv.url}/v1/keys/{key['id']}", headers=bearer(ADMIN), timeout=5)
    assert r.status_code == 200, r.text


def _slow_reply(llm):
    llm.control(reply_bytes=4000, chunks=40, delay_ms=250)  # ~10 s of artifact updates


def _follow(srv, method, params, token, on_first_artifact=None, timeout=20):
    """Events of a streaming call until the server closes: (events, seconds from the first
    artifact's callback to the end)."""
    events, t0 = [], None
    with http().stream("POST", srv.url + "/a2a", timeout=timeout,
                       json={"jsonrpc": "2.0", "id": 7, "method": method, "params": params},
                       headers={"Accept": "text/event-stream", **bearer(token)}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            events.append(ev)
            if t0 is None and "artifact-update" in line:
                t0 = time.monotonic()
                if on_first_artifact:
                    on_first_artifact()
    return events, (time.monotonic() - t0) if t0 is not None else None


def _check_revoked(events, waited, word):
    assert events, "no events"
    last = events[-1]
    assert last.get("id") == 7 and "result" not in last and last.get("error"), last
    assert last["error"]["code"] == -32000 and last["error"]["message"].startswith(f"credentials {word}:"), last
    assert not any("error" in e for e in events[:-1]), events
    assert not any(e["result"].get("final") for e in events[:-1]), "the task ran to its end"
    assert waited < 4, f"the stream went on {waited:.1f} s after the credential was gone"


def test_revoking_the_key_ends_a_message_stream(soma, llm):
    srv = soma(f"auth.admin_token={ADMIN}")
    k = _key(srv)
    _slow_reply(llm)
    events, waited = _follow(srv, "message/stream", msg03("long"), k["token"], lambda: _revoke(srv, k))
    _check_revoked(events, waited, "revoked")
    arts = [e for e in events if e.get("result", {}).get("kind") == "artifact-update"]
    assert len(arts) < 20, f"{len(arts)} artifact updates after the revoke"


def test_revoking_the_key_ends_a_resubscribe_and_a_blocking_send(soma, llm):
    srv = soma(f"auth.admin_token={ADMIN}")
    k, other = _key(srv), _key(srv)
    _slow_reply(llm)
    task = result(srv, "message/send", dict(msg03("long"), configuration={"blocking": False}), token=k["token"])
    events, waited = _follow(srv, "tasks/resubscribe", {"id": task["id"]}, k["token"], lambda: _revoke(srv, k))
    _check_revoked(events, waited, "revoked")
    # a blocking send waiting for its task
    k2 = _key(srv)
    t0 = time.monotonic()
    threading.Timer(1.5, lambda: _revoke(srv, k2)).start()
    r = http().post(srv.url + "/a2a", timeout=30, headers={"Content-Type": "application/json", **bearer(k2["token"])},
                    content=json.dumps({"jsonrpc": "2.0", "id": 3, "method": "message/send", "params": msg03("b")}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["error"]["code"] == -32000 and body["error"]["message"].startswith("credentials revoked:"), body
    assert time.monotonic() - t0 < 5
    # the other key's calls go on
    assert result(srv, "tasks/get", {"id": task["id"]}, token=other["token"])["id"] == task["id"]


def test_a_jwt_stream_ends_at_the_tokens_exp(soma, llm):
    srv = soma(f"auth.jwt_secret={SECRET}", "auth.jwt_leeway_s=0")
    short = jwt.encode({"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 3}, SECRET, algorithm="HS256")
    _slow_reply(llm)
    events, waited = _follow(srv, "message/stream", msg03("long"), short)
    _check_revoked(events, 0, "expired")
    assert time.time() < int(jwt.decode(short, options={"verify_signature": False})["exp"]) + 4
