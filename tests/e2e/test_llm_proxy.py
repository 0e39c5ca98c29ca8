"""/v1/llm/invoke, /v1/llm/invoke/stream and /v1/chat/completions against the fake provider:
shapes, in-band stream errors, provider errors mapped to statuses, client aborts."""

import json
import socket

import httpx

from e2e_util import check_envelope

MESSAGES = [{"role": "user", "content": "hello proxy"}]


def sse_data(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_invoke_returns_content_usage_model(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content"].endswith("You said: hello proxy")
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["model"] == "fake-model" and body["provider"] == "custom"
    assert llm.stats()["last_request"]["messages"] == MESSAGES


def test_invoke_overrides_reach_the_provider(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/llm/invoke", timeout=10,
                   json={"messages": MESSAGES, "overrides": {"model": "other", "temperature": 0.5, "max_tokens": 7}})
    assert r.status_code == 200, r.text
    sent = llm.stats()["last_request"]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("other", 0.5, 7)


def test_invoke_stream_is_openai_chunks_ending_in_done(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/llm/invoke/stream", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.endswith("You said: hello proxy")
    assert not any(c.get("usage") for c in chunks), "no usage chunk unless include_usage was asked"


def test_stream_cut_by_the_provider_ends_with_an_in_band_error_then_done(soma, llm):
    srv = soma()
    llm.control(mode="cut", times=1)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=10)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    err = json.loads(data[-2])
    assert err["error"]["code"] == "llm_stream_cut"


def test_provider_errors_map_to_statuses(soma, llm):
    srv = soma("llm.max_retries=0")
    for mode, status in (("401", 502), ("429", 429), ("500", 502)):
        llm.control(mode=mode, times=1)
        r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
        check_envelope(r, status)
        if status == 429:
            assert r.headers.get("retry-after")


def test_invalid_bodies(soma, llm):
    srv = soma()
    for body, status in (({"messages": []}, 422), ({"messages": [{"role": "wizard", "content": "x"}]}, 422),
                         ({"messages": MESSAGES, "overrides": []}, 422),
                         ({"messages": MESSAGES, "overrides": {"temperature": 9}}, 422),
                         ({"messages": MESSAGES, "stream": "yes"}, 422)):
        path = "/v1/chat/completions" if "stream" in body else "/v1/llm/invoke"
        check_envelope(httpx.post(f"{srv.url}{path}", json=body, timeout=10), status)
    assert llm.stats()["requests"] == 0


def test_client_leaving_mid_stream_is_harmless(soma, llm):
    srv = soma()
    llm.control(chunks=30, delay_ms=30)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()  # mid-stream
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200
