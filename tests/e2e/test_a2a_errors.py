"""A2A JSON-RPC errors (reference/interop.md §3.2, §3.6): HTTP 200 for every JSON-RPC error but
unparseable JSON (400, -32700, id null), the id echoed with its JSON type, streaming methods' errors
as one SSE event, and another tenant's task is -32001."""

import pytest

from a2a_util import error, msg03, msg10, result, rpc, stream
from e2e_util import bearer, create_key, http, wait_until


@pytest.fixture(scope="module")
def srv(module_soma):
    return module_soma()


def test_unparseable_json_is_400_parse_error_with_id_null(srv):
    for raw in ("{not json", ""):
        r = rpc(srv, None, raw=raw)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": body["error"]["message"]}}


@pytest.mark.parametrize("raw,id", [
    ('{"jsonrpc":"1.0","id":3,"method":"tasks/get","params":{}}', 3),
    ('{"id":"a","method":"tasks/get","params":{}}', "a"),
    ('{"jsonrpc":"2.0","id":4,"params":{}}', 4),
    ('{"jsonrpc":"2.0","id":{"x":1},"method":"tasks/get","params":{}}', None),
    ('{"jsonrpc":"2.0","id":[1],"method":"tasks/get"}', None),
    ('[{"jsonrpc":"2.0","id":1,"method":"tasks/get"}]', None),
    ('"just a string"', None),
])
def test_invalid_request(srv, raw, id):
    body = error(srv, None, raw=raw)
    assert body["error"]["code"] == -32600 and body["id"] == id, body


def test_method_not_found_echoes_the_id_and_its_type(srv):
    for id in (7, "7", 1.5, None):
        body = error(srv, "tasks/list", {}, id=id)
        assert body["error"]["code"] == -32601 and body["id"] == id and type(body["id"]) is type(id), body


@pytest.mark.parametrize("method,params", [
    ("message/send", {}),
    ("message/send", {"message": {"role": "user", "parts": [{"kind": "text", "text": "x"}]}}),  # no messageId
    ("message/send", {"message": {"role": "agent", "messageId": "m", "parts": [{"kind": "text", "text": "x"}]}}),
    ("message/send", {"message": {"role": "user", "messageId": "m", "parts": []}}),
    ("message/send", msg03("   ")),
    ("message/send", msg03("x", contextId="bad id!")),
    ("SendMessage", {"message": "text"}),
    ("tasks/get", {}),
    ("GetTask", {"id": 5}),
    ("tasks/cancel", {}),
])
def test_invalid_params(srv, method, params):
    body = error(srv, method, params, id="p")
    assert body["error"]["code"] == -32602 and body["id"] == "p", body


def test_params_must_be_an_object(srv):
    body = error(srv, None, raw='{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":[1]}')
    assert body["error"]["code"] == -32602, body


def test_unknown_task_is_task_not_found(srv):
    for tid in ("nope", "s.1.x", "01a2.99.01a2-3"):
        assert error(srv, "tasks/get", {"id": tid})["error"]["code"] == -32001
        assert error(srv, "CancelTask", {"id": tid})["error"]["code"] == -32001


def test_file_parts_are_content_type_not_supported(srv):
    params = {"message": {"role": "user", "messageId": "m", "kind": "message",
                          "parts": [{"kind": "file", "file": {"uri": "http://x/y.png"}}]}}
    assert error(srv, "message/send", params)["error"]["code"] == -32005


def test_unsupported_features(srv):
    for method in ("tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get",
                   "CreateTaskPushNotificationConfig", "ListTaskPushNotificationConfigs"):
        assert error(srv, method, {"id": "x"})["error"]["code"] == -32003, method
    push = dict(msg03("x"), configuration={"pushNotificationConfig": {"url": "http://127.0.0.1:9/"}})
    assert error(srv, "message/send", push)["error"]["code"] == -32003
    assert error(srv, "message/send", msg03("x", taskId="t"))["error"]["code"] == -32004
    assert error(srv, "ListTasks", {})["error"]["code"] == -32004
    assert error(srv, "agent/getAuthenticatedExtendedCard", {})["error"]["code"] == -32007


def test_stream_errors_are_one_sse_event_with_the_request_id(srv):
    headers, evs = stream(srv, "message/stream", {"message": {}}, id="e1")
    assert headers["content-type"].startswith("text/event-stream")
    assert len(evs) == 1 and evs[0]["id"] == "e1" and evs[0]["error"]["code"] == -32602, evs
    _, evs = stream(srv, "SubscribeToTask", {"id": "a.1.b"}, id=8)
    assert len(evs) == 1 and evs[0]["id"] == 8 and evs[0]["error"]["code"] == -32001, evs


def test_another_tenants_task_is_not_found(module_soma, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("a2a-iso")
    s = module_soma("auth.key_refresh_ms=200", data_dir=tmp / "data")
    ka, kb = create_key(tmp / "data", tmp, "tenant-a"), create_key(tmp / "data", tmp, "tenant-b")
    wait_until(lambda: all(http().get(s.url + "/v1/sessions", headers=bearer(k), timeout=5).status_code == 200
                           for k in (ka, kb)), 5, what="both keys to be picked up")
    assert rpc(s, "tasks/get", {"id": "a.1.b"}).status_code == 401  # credentials as every /v1 route
    assert http().get(s.url + "/.well-known/agent-card.json").status_code == 200  # the card is public
    task = result(s, "message/send", msg03("secret of a"), token=ka)
    assert task["status"]["state"] == "completed"
    for method in ("tasks/get", "tasks/cancel"):
        body = error(s, method, {"id": task["id"]}, token=kb)
        assert body["error"]["code"] == -32001 and "secret" not in str(body), body
    _, evs = stream(s, "tasks/resubscribe", {"id": task["id"]}, token=kb)
    assert evs[0]["error"]["code"] == -32001
    # b cannot send into a's context
    body = error(s, "SendMessage", msg10("b here", contextId=task["contextId"]), token=kb)
    assert body["error"]["code"] == -32602, body
    assert result(s, "tasks/get", {"id": task["id"]}, token=ka)["status"]["state"] == "completed"


def test_nul_in_the_text_is_invalid_params_not_a_parse_error(srv):
    raw = ('{"jsonrpc":"2.0","id":"n1","method":"message/send","params":{"message":{"kind":"message",'
           '"role":"user","messageId":"m","parts":[{"kind":"text","text":"a\\u0000b"}]}}}')
    body = error(srv, None, raw=raw)
    assert body["id"] == "n1" and body["error"]["code"] == -32602, body
    assert "NUL" in body["error"]["message"], body
    r = rpc(srv, None, raw=raw.replace("message/send", "message/stream"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    assert '"code":-32602' in r.text, r.text


@pytest.mark.parametrize("raw_id,echo", [
    ("9223372036854775808", None),  # 2^63: not an int64
    ("-99999999999999999999", None),
    ('"s\\u0000t"', "s\x00t"),  # a string id is echoed as sent, NUL and all
])
def test_valid_json_ids_are_answered_as_json_rpc(srv, raw_id, echo):
    raw = '{"jsonrpc":"2.0","id":%s,"method":"tasks/get","params":{"id":"x.1.y"}}' % raw_id
    r = rpc(srv, None, raw=raw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == echo and body["error"]["code"] in (-32600, -32001), body
    if echo is None:
        assert body["error"]["code"] == -32600 and "64 bits" in body["error"]["message"], body


def test_big_integer_in_params_with_a_string_id(srv):
    raw = '{"jsonrpc":"2.0","id":"big","method":"tasks/get","params":{"id":"x","historyLength":18446744073709551616}}'
    body = error(srv, None, raw=raw)
    assert body["id"] == "big" and body["error"]["code"] == -32600, body
