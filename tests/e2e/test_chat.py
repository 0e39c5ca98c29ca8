"""Conversation processing against the fake provider: retries (429 with Retry-After, 500),
errors users can act on (cut stream, rejected key, no key), cancellation by deleting the
session, quick actions, and a reply that survives kill -9 of the server."""

import signal
import time

import pytest

from e2e_util import (STORE, http, check_reply, history, open_stream, post_message, read_reply, wait_terminal,
                      wait_until)


def _only_reply(srv, sid, timeout=10):
    evs = wait_terminal(srv, sid, timeout=timeout)
    assert [e["type"] for e in evs][0] == "user", evs
    assert len(evs) == 2, f"expected the user event and one reply: {evs}"
    return evs[1]


def _error(ev, code, http_status=None):
    assert ev["type"] == "assistant.error" and ev["role"] == "assistant", ev
    err = ev["metadata"]["error"]
    assert err["code"] == code, ev
    assert isinstance(err["detail"], str), ev
    if http_status is not None:
        assert err["http_status"] == http_status, ev
    assert isinstance(ev["message"], str) and len(ev["message"]) > 20, ev
    return err


def test_429_then_success_honours_retry_after(soma, llm):
    srv = soma()
    llm.control(mode="429", times=1, retry_after=1)
    t0 = time.monotonic()
    sid = post_message(srv, "rate me")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        frames = read_reply(s, timeout=10)
    elapsed = time.monotonic() - t0
    check_reply(frames, sid)
    st = llm.stats()
    assert st["requests"] == 2 and st["modes"] == ["429", "ok"], st
    assert elapsed >= 0.9, f"retried {elapsed:.2f} s after a 429 with Retry-After: 1"
    assert [e["type"] for e in history(srv, sid)] == ["user", "assistant.final"]


def test_500_twice_then_success(soma, llm):
    srv = soma("llm.backoff_ms=20")
    llm.control(mode="500", times=2)
    sid = post_message(srv, "flaky")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        frames = read_reply(s, timeout=10)
    check_reply(frames, sid)
    assert llm.stats()["modes"] == ["500", "500", "ok"]
    # the failed attempts left no partial output: one thinking, one final
    types = [e["type"] for _, e in frames]
    assert types.count("assistant.thinking") == 1 and types.count("assistant.final") == 1, types


def test_500_until_retries_run_out(soma, llm):
    srv = soma("llm.backoff_ms=20", "llm.max_retries=1")
    llm.control(mode="500", times=-1)
    sid = post_message(srv, "broken")["session_id"]
    err = _error(_only_reply(srv, sid), "llm_server_error", 500)
    assert llm.stats()["requests"] == 2, (llm.stats(), err)


def test_cut_stream_is_an_error(soma, llm):
    srv = soma()
    llm.control(mode="cut", times=1)
    sid = post_message(srv, "cut me off")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        frames = read_reply(s)
    ev = frames[-1][1]
    _error(ev, "llm_stream_cut")
    deltas = "".join(e["message"] for _, e in frames if e["type"] == "assistant.delta")
    assert deltas, "the cut came after some text"
    hist = history(srv, sid)
    assert [e["type"] for e in hist] == ["user", "assistant.error"], hist
    assert hist[1] == ev
    # text already shown is not generated twice: no retry after a token arrived
    assert llm.stats()["requests"] == 1, llm.stats()


def test_provider_rejects_the_key(soma, llm):
    srv = soma()
    llm.control(mode="401", times=1)
    sid = post_message(srv, "who am i")["session_id"]
    ev = _only_reply(srv, sid)
    _error(ev, "llm_auth", 401)
    assert "llm.api_key" in ev["message"], ev
    assert llm.stats()["requests"] == 1, "a rejected key must not be retried"


def test_no_key_configured(soma, llm):
    srv = soma(llm=False)
    sid = post_message(srv, "anyone there")["session_id"]
    ev = _only_reply(srv, sid)
    _error(ev, "llm_unconfigured")
    assert "llm.api_key" in ev["message"], ev
    assert llm.stats()["requests"] == 0


def test_quick_action(soma, llm):
    srv = soma()
    sid = post_message(srv, "hello")["session_id"]
    wait_terminal(srv, sid)
    r = http().post(srv.url + "/v1/session/action", json={"session_id": sid, "action": "summarize"}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] == sid and r.json()["seq"] == 3, r.json()
    evs = wait_terminal(srv, sid, count=2)
    user = evs[2]
    assert user["type"] == "user" and user["metadata"].get("action") == "summarize", user
    assert user["message"].strip(), user
    assert evs[3]["type"] == "assistant.final", evs
    assert llm.stats()["last_request"]["messages"][-1]["content"] == user["message"]


def test_delete_stops_the_generation(soma, llm):
    """One worker; a slow reply (about 5 s); deleting its session must free the worker at once
    (a reply in another session then arrives quickly) and store nothing."""
    llm.control(chunks=100, delay_ms=50)
    srv = soma("queue.conversation.concurrency=1")
    sid = post_message(srv, "a long story please")["session_id"]
    with open_stream(srv, sid, after=0) as s:
        s.events(lambda e: e["type"] == "assistant.delta", timeout=5)
    t0 = time.monotonic()
    r = http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json() == {"session_id": sid, "status": "deleted"}, r.json()
    llm.control(chunks=12, delay_ms=0)  # replies from now on are quick
    other = post_message(srv, "quick one")["session_id"]
    wait_terminal(srv, other, timeout=8)
    took = time.monotonic() - t0
    assert took < 3, f"the next reply took {took:.1f} s: the deleted session's generation kept the worker"
    assert http().get(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 404
    assert http().get(f"{srv.url}/v1/sessions/{sid}/history", timeout=5).status_code == 404
    ids = [x["session_id"] for x in http().get(srv.url + "/v1/sessions", timeout=5).json()["sessions"]]
    assert ids == [other], ids
    # re-using the id starts from nothing: no late final of the old generation shows up
    out = post_message(srv, "again", session_id=sid)
    assert out["seq"] == 1, out
    evs = wait_terminal(srv, sid)
    time.sleep(0.3)
    evs = history(srv, sid)
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[1]["message"].endswith("You said: again"), evs
    assert http().get(srv.url + "/v1/health", timeout=5).json()["status"] == "ok"
    srv.stop(expect=0)


@pytest.mark.parametrize("when", ["right_after_200", "while_generating"])
def test_reply_survives_kill_9(soma, llm, when):
    """The 200 means the message and its task are durable: kill -9 (at once, or while the
    provider call is in flight) and a restart on the same data dir still produce the reply.
    (On PostgreSQL other nodes may hold reservations, so a start requeues none: the killed
    process's task comes back after its visibility timeout, here the shortest allowed.)"""
    llm.control(mode="hang", times=-1)  # the reply cannot finish
    vt = ("queue.visibility_timeout_s=5",) if STORE == "postgres" else ()
    srv = soma(*vt)
    out = post_message(srv, "remember me")
    sid = out["session_id"]
    if when == "while_generating":
        wait_until(lambda: llm.stats()["requests"] >= 1, 5, what="the provider call")
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(timeout=5)
    srv.checked = True
    llm.control(mode="ok", times=-1)
    srv2 = soma(*vt, data_dir=srv.data_dir)
    evs = wait_terminal(srv2, sid, timeout=8 + (6 if vt else 0))
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[0]["event_id"] == out["event_id"] and evs[0]["message"] == "remember me"
    assert evs[1]["message"].endswith("You said: remember me"), evs
    # exactly once, even a moment later
    time.sleep(0.5)
    assert history(srv2, sid) == evs
    assert llm.stats()["requests"] >= 1
    wait_until(lambda: llm.stats()["modes"][-1] == "ok", 2, what="the retried request")


def test_sigterm_mid_reply_requeues(soma, llm):
    """A shutdown while the provider call hangs: the server still exits 0 within the grace
    period, and the next start answers the message."""
    llm.control(mode="hang", times=-1)
    srv = soma("shutdown.grace_s=2")
    out = post_message(srv, "finish later")
    sid = out["session_id"]
    wait_until(lambda: llm.stats()["requests"] >= 1, 5, what="the provider call")
    t0 = time.monotonic()
    srv.stop(timeout=8, expect=0)
    assert time.monotonic() - t0 < 5, "the hung provider call held the shutdown"
    llm.control(mode="ok", times=-1)
    srv2 = soma(data_dir=srv.data_dir)
    evs = wait_terminal(srv2, sid, timeout=8)
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[1]["message"].endswith("You said: finish later")


def test_message_longer_than_the_context_budget(soma, llm):
    """llm.max_context_tokens=100 (about 400 characters): a 2000-character message must still
    reach the provider (cut to fit), or be answered with an assistant.error; the provider must
    never be asked to reply to a conversation that lacks the message."""
    srv = soma("llm.max_context_tokens=100")
    text = "tell me about " + "x" * 1986
    sid = post_message(srv, text)["session_id"]
    ev = _only_reply(srv, sid)
    st = llm.stats()
    if ev["type"] == "assistant.error":
        assert st["requests"] == 0, st
        return
    msgs = st["last_request"]["messages"]
    assert msgs[-1]["role"] == "user", f"the provider got no user message: {msgs}"
    kept, _, mark = msgs[-1]["content"].partition("\n[Cut: only the first ")
    assert kept and text.startswith(kept), msgs
    assert mark == f"{len(kept)} of {len(text)} characters of this message are included (llm.max_context_tokens)]"
