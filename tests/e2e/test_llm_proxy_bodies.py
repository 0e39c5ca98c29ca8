"""POST /v1/chat/completions bodies: read from their text when they can be (src/gateway/llm_ask.c)
or from a tree (llm_routes.c), with the same answer either way. Each bad body gets its 4xx
envelope and reaches no provider; each good one reaches the provider as the same JSON."""

import json

import httpx
import pytest

from e2e_util import check_envelope

M = '[{"role":"user","content":"hi"}]'
BAD_PARAMS = ("invalid_parameters",
              "model must be a string, temperature a number from 0 to 2, max_tokens a positive integer")
BAD_LIST = ("invalid_messages", "messages must be a non-empty array of {role, content}")


def bad_at(i):
    return ("invalid_messages", f"messages[{i}] must have role system|developer|user|assistant|tool and a content "
            "(an assistant's may be absent or null with tool_calls or a refusal)")


# (raw body, status, (code, message) or None: only the status and envelope are checked); a bad
# member is OpenAI's 400 invalid_request_error on this route (our 422 elsewhere)
CASES = [
    ("", 400, None),
    ("[1]", 400, ("invalid_json", "the body must be a JSON object")),
    ('{"messages":' + M + ',}', 400, None),
    ('{"messages":' + M + ',"model":"a","model":"b"}', 400, None),  # a repeated key: the tree refuses it
    ('{"messages":[{"role":"user","role":"user","content":"x"}]}', 400, None),
    ('{"messages":' + M + ',"stream":"yes"}', 400, ("invalid_parameters", "stream must be a boolean")),
    ('{"messages":' + M + ',"stream":1}', 400, ("invalid_parameters", "stream must be a boolean")),
    ('{"messages":[]}', 400, BAD_LIST),
    ('{"messages":{}}', 400, BAD_LIST),
    ('{"model":"x"}', 400, BAD_LIST),
    ('{"messages":[{"role":"user","content":"x"},{"role":"wizard","content":"x"}]}', 400, bad_at(1)),
    ('{"messages":[{"role":"user","content":7}]}', 400, bad_at(0)),
    ('{"messages":[{"role":"user"}]}', 400, bad_at(0)),
    ('{"messages":["user"]}', 400, bad_at(0)),
    # an assistant's turn of tool calls (or a refusal) may lack content, as OpenAI allows; text and tree ways
    ('{"messages":' + M[:-1] + ',{"role":"assistant","tool_calls":[]},{"role":"assistant","refusal":"no"}]}', 200, None),
    ('{"messages":' + M[:-1] + ',{"r\\u006fle":"assistant","tool_calls":[]}]}', 200, None),
    ('{"messages":' + M[:-1] + ',{"role":"assistant"}]}', 400, bad_at(1)),
    ('{"messages":' + M[:-1] + ',{"role":"user","tool_calls":[]}]}', 400, bad_at(1)),
    ('{"messages":[{"r\\u006fle":"user","content":"x"}]}', 200, None),  # an escaped key: the tree reads it
    ('{"messages":' + M + ',"temperature":3}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"temperature":"1"}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"max_tokens":0}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"max_tokens":1.5}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"model":7}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"model":"' + "m" * 128 + '"}', 400, BAD_PARAMS),
    ('{"messages":' + M + ',"model":"' + "\\u00e9" * 64 + '"}', 400, BAD_PARAMS),  # 128 bytes unescaped
    ('{"messages":' + M + ',"model":"' + "\\u0041" * 127 + '"}', 200, None),  # 127 once unescaped
    ('{"messages":' + M + ',"model":null,"temperature":null,"max_tokens":null,"stream":null}', 200, None),
    ('{"messages":[{"role":"us\\u0065r","content":"x"}]}', 200, None),
    ('{"messages":' + json.dumps([{"role": "user", "content": "x"}] * 4097) + '}', 400, BAD_LIST),
    ('{"messages":' + json.dumps([{"role": "user", "content": "x"}] * 4096) + '}', 200, None),
    ('{"messages":' + json.dumps([1] * 4097) + '}', 400, BAD_LIST),  # too many first, as the tree counts
    # a key repeated anywhere is the tree's 400, even after an earlier fault of another kind
    ('{"messages":[{"role":"bad","content":""},{"role":"user","role":"user","content":""}]}', 400, None),
    ('{"messages":' + M + ',"stream":1,"stream_options":{"a":1,"a":2}}', 400, None),
    ('{"messages":[{"role":"user","content":[{"type":"text","type":"text"}]}],"temperature":5}', 400, None),
]


@pytest.mark.parametrize("raw,status,error", CASES, ids=[str(i) for i in range(len(CASES))])
def test_body_answers(soma, llm, raw, status, error):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/chat/completions", content=raw.encode(),
                   headers={"Content-Type": "application/json"}, timeout=20)
    if status != 200:
        check_envelope(r, status)
        if error:
            assert (r.json()["error"]["code"], r.json()["error"]["message"]) == error, r.text
        assert llm.stats()["requests"] == 0
        return
    assert r.status_code == 200, r.text
    assert llm.stats()["requests"] == 1


def test_the_provider_gets_the_same_json(soma, llm):
    """Escapes, spacing and unicode as the client wrote them: the provider parses the same values."""
    srv = soma()
    asked = ('{ "model" : "m\\u00e9", "messages" : [ {"role":"user", "content":[{"type":"text","text":"h\\u00e9 \\"q\\""}]} ],'
             '"stream":true, "stream_options":{"include_usage":false}, "temperature": 0.25, "max_tokens": 9,'
             '"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],'
             '"persona_id":"p\\u0031", "session_id":"s", "metadata": {"a": [1, 2.5, true, null]}}')
    r = httpx.post(f"{srv.url}/v1/chat/completions", content=asked.encode(),
                   headers={"Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text
    sent, want = llm.stats()["last_request"], json.loads(asked)
    for k in ("model", "messages", "temperature", "max_tokens", "tools", "metadata"):
        assert sent[k] == want[k], k
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "persona_id" not in sent and "session_id" not in sent
    assert not any(json.loads(d[6:]).get("usage") for d in r.text.split("\n")
                   if d.startswith("data: {")), "the client did not ask for usage"


@pytest.mark.parametrize("depth,status", [(32, 200), (33, 400)])
def test_nesting_limit_counts_brackets_outside_strings(soma, llm, depth, status):
    """GW_JSON_MAX_DEPTH (32) levels in all; brackets, quotes and backslashes inside strings do not
    count (the check skips strings eight bytes at a time)."""
    srv = soma()
    inner = "[" * (depth - 1) + "]" * (depth - 1)  # the body is the first level
    content = json.dumps("[[[{{{\\\" é " * 20 + "\\")
    raw = '{"messages":[{"role":"user","content":' + content + '}],"metadata":' + (inner or "1") + '}'
    r = httpx.post(f"{srv.url}/v1/chat/completions", content=raw.encode(),
                   headers={"Content-Type": "application/json"}, timeout=20)
    if status == 400:
        check_envelope(r, 400)
        assert "nested deeper than 32" in r.json()["error"]["message"], r.text
    else:
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("model", ['""', "null"])
def test_an_empty_model_asks_for_the_configured_one(soma, llm, model):
    srv = soma()
    raw = '{"messages":' + M + ',"model":' + model + '}'
    r = httpx.post(f"{srv.url}/v1/chat/completions", content=raw.encode(),
                   headers={"Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200, r.text
    assert llm.stats()["last_request"]["model"] == "fake-model"
