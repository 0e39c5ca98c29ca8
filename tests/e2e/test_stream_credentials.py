"""An open event stream is as good as the credential it was opened with (src/gateway/stream.c):
revoking its API key (DELETE /v1/keys/{id}) ends it with an unnumbered `error` event
`credentials_revoked`, and no event published after the revocation reaches it; on another node
the revocation arrives with the key cache's refresh (auth.key_refresh_ms) and ends the streams
there too; a stream opened with a JWT ends at the token's exp (+ auth.jwt_leeway_s) with
`credentials_expired`; a stream opened anonymously (loopback, no keys) ends with
`credentials_revoked` once the first API key exists, as anonymous requests then get 401. Before, such streams went on delivering the session for as long as they
stayed open (keepalives held them open)."""

import json
import secrets
import socket
import time

import jwt
import pytest

from e2e_util import bearer, http, open_stream, post_message, read_reply, wait_terminal
from servers import RedisServer

ADMIN = "adm-" + secrets.token_hex(20)
SECRET = "e2e-jwt-secret-0123456789abcdef0123456789"


def _key(srv, tenant):
    r = http().post(f"{srv.url}/v1/keys", json={"tenant": tenant, "scopes": "chat"}, headers=bearer(ADMIN), timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


def _revoke(srv, key):
    r = http().delete(f"{srv.url}/v1/keys/{key['id']}", headers=bearer(ADMIN), timeout=5)
    assert r.status_code == 200, r.text


def _rest(s, timeout):
    """Every frame up to the end of the stream (keepalives left out); fails if it does not end."""
    frames, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            f = s.next_frame(timeout=max(left, 0.01)) if left > 0 else False
        except socket.timeout:
            f = False
        if f is False:
            raise AssertionError(f"the stream did not end within {timeout} s; frames: {frames}")
        if f is None:
            return frames
        if f.data and '"system.keepalive"' in f.data:
            continue
        frames.append(f)


def _check_ended(frames, code, sid):
    """The last frame is the unnumbered error event with this code; nothing else is an event."""
    assert frames, "the stream ended without the error event"
    last = frames[-1]
    assert last.id is None and last.data, (last.id, last.data)
    ev = json.loads(last.data)
    assert ev["type"] == "error" and ev["session_id"] == sid and ev["error"]["code"] == code, ev
    assert ev["error"]["message"] and ev["version"] == "sa01-v1", ev
    return [f for f in frames[:-1] if f.data and '"status"' not in f.data]


@pytest.mark.parametrize("bus", ["local", "redis"])
def test_revoking_the_key_ends_its_stream_and_nothing_later_reaches_it(soma, llm, bus):
    redis = RedisServer() if bus == "redis" else None
    try:
        sets = ("bus.driver=redis", f"redis.url={redis.url()}") if redis else ()
        srv = soma(f"auth.admin_token={ADMIN}", *sets)
        other, k3 = _key(srv, "ta"), _key(srv, "ta")
        sid = post_message(srv, "before", token=other["token"])["session_id"]
        wait_terminal(srv, sid, token=other["token"])
        with open_stream(srv, sid, token=k3["token"], timeout=10) as s:
            llm.control(text="reply before the revoke")
            post_message(srv, "still allowed", token=other["token"], session_id=sid)
            got = read_reply(s)
            assert got[-1][1]["message"] == "reply before the revoke", got[-1]
            _revoke(srv, k3)
            llm.control(text="reply after the revoke")
            post_message(srv, "secret after the revoke", token=other["token"], session_id=sid)
            leaked = _check_ended(_rest(s, 5), "credentials_revoked", sid)
        assert leaked == [], f"events after the revocation reached the stream: {[f.data for f in leaked]}"
        r = http().get(f"{srv.url}/v1/sessions/{sid}/events?stream=true", headers=bearer(k3["token"]), timeout=5)
        assert r.status_code == 401, r.text
        # the other key's stream of the same session goes on
        wait_terminal(srv, sid, token=other["token"], count=3)
    finally:
        if redis:
            redis.close()


def test_a_revoked_key_ends_a_quiet_stream(soma, llm):
    """No event needed: the stream's own tick ends it within a second or so."""
    srv = soma(f"auth.admin_token={ADMIN}")
    k3 = _key(srv, "ta")
    sid = post_message(srv, "hello", token=k3["token"])["session_id"]
    wait_terminal(srv, sid, token=k3["token"])
    with open_stream(srv, sid, token=k3["token"], timeout=10) as s:
        _revoke(srv, k3)
        t0 = time.monotonic()
        assert _check_ended(_rest(s, 5), "credentials_revoked", sid) == []
        assert time.monotonic() - t0 < 3


def test_a_jwt_stream_ends_at_the_tokens_exp(soma, llm):
    srv = soma(f"auth.jwt_secret={SECRET}", "auth.jwt_leeway_s=0")
    now = int(time.time())
    long_lived = jwt.encode({"sub": "alice", "tenant": "acme", "exp": now + 300}, SECRET, algorithm="HS256")
    short = jwt.encode({"sub": "alice", "tenant": "acme", "exp": now + 3}, SECRET, algorithm="HS256")
    sid = post_message(srv, "hello", token=long_lived)["session_id"]
    wait_terminal(srv, sid, token=long_lived)
    with open_stream(srv, sid, token=short, timeout=10) as s, \
            open_stream(srv, sid, token=long_lived, timeout=10) as keeps:
        frames = _rest(s, 8)
        ended = time.time()
        assert _check_ended(frames, "credentials_expired", sid) == []
        assert now + 3 <= ended < now + 6, (now, ended)
        # the long-lived token's stream still delivers
        llm.control(text="later reply")
        post_message(srv, "later", token=long_lived, session_id=sid)
        assert read_reply(keeps)[-1][1]["message"] == "later reply"


def test_an_anonymous_stream_ends_when_the_first_key_is_created(soma, llm):
    srv = soma()
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    with open_stream(srv, sid, timeout=10) as s:
        r = http().post(f"{srv.url}/v1/keys", json={"tenant": "default", "scopes": "chat"}, timeout=5)
        assert r.status_code == 201, r.text
        key = r.json()["token"]
        assert http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 401
        llm.control(text="secret reply after keys exist")
        post_message(srv, "after the key", token=key, session_id=sid)
        leaked = _check_ended(_rest(s, 5), "credentials_revoked", sid)
    assert leaked == [], f"events after the first key reached the anonymous stream: {[f.data for f in leaked]}"
    r = http().get(f"{srv.url}/v1/sessions/{sid}/events?stream=true", timeout=5)
    assert r.status_code == 401, r.text
