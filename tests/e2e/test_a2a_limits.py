"""A2A under the tenant's limits and policy (docs/api.md, A2A): every A2A stream (message/stream,
SendStreamingMessage, tasks/resubscribe) holds one of limits.streams_per_tenant for its life, like
a session event stream, and gives it back however it ends; beyond the limit, and when policy
(conversation.send), the token budget or the request rate refuses a call, the answer is a JSON-RPC
error (HTTP 200, the request's id, our words, our error code in error.data), not an HTTP 403/429."""

import json
import socket
import time

from a2a_util import error, msg03, msg10, result, rpc, stream
from e2e_util import history, open_stream, post_message, wait_until

LIMITED, POLICY_DENIED = -32051, -32050


def _held_stream(srv, method, params):
    """A streaming call left open: the socket, once the first event came (the stream runs)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    s.sendall(b"POST /a2a HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while b"data: " not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert b" 200 " in got.split(b"\r\n", 1)[0] and b'"result"' in got, got
    return s


def _refused_stream(srv, method, params, id=9):
    _, events = stream(srv, method, params, id=id)
    assert len(events) == 1, events
    err = events[0]
    assert err["id"] == id and "result" not in err, err
    assert err["error"]["code"] == LIMITED, err
    assert "limits.streams_per_tenant" in err["error"]["message"], err
    data = err["error"]["data"]
    if isinstance(data, list):  # spec 1.0: [google.rpc.ErrorInfo]
        assert data[0]["reason"] == "TOO_MANY_STREAMS" and data[0]["metadata"]["retry_after_s"] == "5", data
    else:
        assert data["code"] == "too_many_streams" and data["retry_after_s"] == 5, data
    return err


def _stream_ok(srv, method, params):
    _, events = stream(srv, method, params)
    assert events and all("result" in e for e in events), events
    return events


def test_a2a_streams_take_a_place_of_streams_per_tenant(soma, llm):
    srv = soma("limits.streams_per_tenant=1")
    sid = post_message(srv, "open")["session_id"]
    wait_until(lambda: len(history(srv, sid)) == 2, 10, what="the first reply")
    s = open_stream(srv, sid)  # the one place
    _refused_stream(srv, "message/stream", msg03("over", contextId=sid))
    assert len(history(srv, sid)) == 2, "a refused stream stores no message"
    task = result(srv, "message/send", msg03("blocking sends are no streams"))
    _refused_stream(srv, "tasks/resubscribe", {"id": task["id"]})
    s.close()
    # the place comes back; an A2A stream takes it and gives it back when it ends
    wait_until(lambda: "result" in stream(srv, "message/stream", msg03("now"))[1][0], 10, interval=0.1,
               what="the session stream's place to come back")
    _stream_ok(srv, "SendStreamingMessage", msg10("again"))
    _stream_ok(srv, "tasks/resubscribe", {"id": task["id"]})
    open_stream(srv, sid).close()


def test_a2a_streams_count_against_each_other(soma, llm):
    srv = soma("limits.streams_per_tenant=1")
    llm.control(first_delay_ms=4000)
    held = _held_stream(srv, "message/stream", msg03("slow"))
    _refused_stream(srv, "SendStreamingMessage", msg10("second"))
    err = _refused_stream(srv, "message/stream", msg03("third"), id="x")
    assert err["id"] == "x"
    open_stream(srv, post_message(srv, "s")["session_id"], expect=429)
    held.close()  # the client leaves: its place comes back
    llm.control(first_delay_ms=0)
    wait_until(lambda: "result" in stream(srv, "message/stream", msg03("after"))[1][0], 15, interval=0.2,
               what="the A2A stream's place to come back")


def test_a2a_stream_ended_by_the_task_gives_its_place_back(soma, llm):
    srv = soma("limits.streams_per_tenant=1")
    for i in range(3):  # each ends with the task: the next one is not refused
        events = _stream_ok(srv, "message/stream", msg03(f"turn {i}"))
        assert events[-1]["result"]["final"] is True, events


def _policy_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"soma_policy": {"tenants": {"*": {
        "actions": ["session.read", "task.run", "admin.*"], "models": ["*"], "tools": ["*"], "tasks": ["*"],
        "upload_types": ["*/*"], "delegate_domains": []}}}}))
    return f"policy.file={path}"


def test_policy_denied_send_is_a_jsonrpc_error(soma, tmp_path):
    srv = soma(_policy_file(tmp_path), "limits.streams_per_tenant=1")
    body = error(srv, "message/send", msg03("no"), id="pd")
    e = body["error"]
    assert body["id"] == "pd" and e["code"] == POLICY_DENIED, body
    assert e["message"].startswith("action_not_allowed"), e
    assert e["data"]["code"] == "policy_denied" and e["data"]["reason"] == "action_not_allowed", e
    assert e["data"]["request_id"], e
    # spec 1.0: error.data is a list of typed details (google.rpc.ErrorInfo)
    body = error(srv, "SendMessage", msg10("no"), id=3)
    info = body["error"]["data"][0]
    assert body["id"] == 3 and body["error"]["code"] == POLICY_DENIED, body
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "POLICY_DENIED", info
    assert info["metadata"]["reason"] == "action_not_allowed", info
    # a streaming call: one SSE event with the error; the place it took is given back (the second
    # is refused by policy again, not by limits.streams_per_tenant=1)
    for id in (4, 5):
        _, events = stream(srv, "message/stream", msg03("no"), id=id)
        assert len(events) == 1 and events[0]["id"] == id and events[0]["error"]["code"] == POLICY_DENIED, events


def test_token_budget_refusal_is_a_jsonrpc_error(soma):
    srv = soma("limits.llm_tokens_per_day=1")
    result(srv, "message/send", msg03("spend it"))
    body = error(srv, "message/send", msg03("more"), id=11)
    e = body["error"]
    assert body["id"] == 11 and e["code"] == LIMITED, body
    assert "limits.llm_tokens_per_day" in e["message"] and "00:00 UTC" in e["message"], e
    assert e["data"]["code"] == "llm_budget_exceeded" and e["data"]["retry_after_s"] > 0, e


def test_request_rate_refusal_is_a_jsonrpc_error(soma):
    srv = soma("limits.requests_per_s=1", "limits.requests_burst=1")
    got = [rpc(srv, "tasks/get", {"id": "nope"}, id=i) for i in range(3)]
    assert all(r.status_code == 200 for r in got), [r.text for r in got]
    limited = [r.json() for r in got if r.json()["error"]["code"] == LIMITED]
    assert limited, [r.text for r in got]
    e = limited[0]["error"]
    assert limited[0]["id"] in (1, 2) and "limits.requests_per_s" in e["message"], limited[0]
    assert e["data"]["code"] == "rate_limited" and e["data"]["retry_after_s"] >= 1, e
    time.sleep(1.1)
    assert error(srv, "tasks/get", {"id": "nope"})["error"]["code"] == -32001
