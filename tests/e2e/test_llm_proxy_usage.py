"""/v1/chat/completions streamed without include_usage: the proxy drops the provider's usage chunk
(top-level "choices" an empty array, src/gateway/llm_proxy.c usage_only) and only it. A reply whose
text spells a usage chunk ("choices": [] inside a string, with and without whitespace) is relayed
whole: every content chunk arrives, none is taken for the usage chunk."""

import json

import httpx

MESSAGES = [{"role": "user", "content": "hello proxy"}]
TRICKY = 'see {"choices": []} and {"choices":[]} and "choices" : [ ] \\"choices\\":[] - '


def sse_data(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_a_reply_that_spells_a_usage_chunk_is_relayed_whole(soma, llm):
    srv = soma()
    llm.control(text=TRICKY, chunks=1)  # one chunk holds all of it
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=10)
    assert r.status_code == 200, r.text
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["choices"] for c in chunks), "an empty choices chunk was relayed without include_usage"
    assert not any(c.get("usage") for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == TRICKY, text
