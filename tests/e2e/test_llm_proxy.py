"""/v1/llm/invoke, /v1/llm/invoke/stream and /v1/chat/completions against the fake provider:
shapes, in-band stream errors, provider errors mapped to statuses, client aborts; the provider call on
the io thread: retries before the first token, timeouts, cancellation, the concurrency slots."""

import json
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e_util import check_envelope

MESSAGES = [{"role": "user", "content": "hello proxy"}]


@pytest.fixture(autouse=True, params=["close", "chunked"])
def provider_framing(request, llm):
    """Every test twice: the fake's streamed replies end with its close, or are chunked on a
    kept-alive connection (src/llm/h1_parse.c reads both framings)."""
    llm.control(keep_alive=request.param == "chunked")
    return request.param


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
        err = r.json()["error"]
        assert err["type"] == "provider_error" and "param" in err and err["param"] is None, err  # OpenAI's four
        assert r.headers.get("x-should-retry") == "false"  # our retries are spent: an SDK must not stack its own
        if status == 429:
            assert r.headers.get("retry-after")


def test_invalid_bodies(soma, llm):
    srv = soma()
    for body, status in (({"messages": []}, 422), ({"messages": [{"role": "wizard", "content": "x"}]}, 422),
                         ({"messages": MESSAGES, "overrides": []}, 422),
                         ({"messages": MESSAGES, "overrides": {"temperature": 9}}, 422),
                         ({"messages": MESSAGES, "stream": "yes"}, 400)):  # OpenAI's 400 on its route
        path = "/v1/chat/completions" if "stream" in body else "/v1/llm/invoke"
        check_envelope(httpx.post(f"{srv.url}{path}", json=body, timeout=10), status)
    assert llm.stats()["requests"] == 0


def test_client_leaving_mid_stream_is_harmless(soma, llm):
    srv = soma()
    llm.control(chunks=30, delay_ms=30)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()  # mid-stream
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200


# ---- the provider call on the io thread: retries, timeouts, cancellation, slots ----------------------

def raw_post(port, path, body):
    """Sends a POST on a fresh socket and returns the socket (the response is read by the caller)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = json.dumps(body).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def read_all(s):
    out = b""
    while not out.endswith(b"0\r\n\r\n"):
        d = s.recv(65536)
        if not d:
            break
        out += d
    return out


def test_retries_before_the_first_token_then_streams(soma, llm):
    srv = soma("llm.max_retries=3", "llm.backoff_ms=1")
    llm.control(mode="429", times=1, retry_after=1)
    llm.control(mode="500", times=1)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=20)
    assert r.status_code == 200, r.text
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1])
    assert text.endswith("You said: hello proxy")
    assert llm.stats()["modes"] == ["429", "500", "ok"]


def test_retries_exhausted_answer_with_the_last_error(soma, llm):
    srv = soma("llm.max_retries=1", "llm.backoff_ms=1")
    llm.control(mode="500", times=2)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=20)
    check_envelope(r, 502)
    assert r.json()["error"]["code"] == "llm_server_error"
    assert llm.stats()["modes"] == ["500", "500"]


def test_unreachable_provider_is_502(soma, llm):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = soma(f"llm.base_url=http://127.0.0.1:{port}/v1", "llm.max_retries=1", "llm.backoff_ms=1")
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=20)
    check_envelope(r, 502)
    assert r.json()["error"]["code"] == "llm_unreachable"


def test_silent_provider_times_out(soma, llm):
    srv = soma("llm.timeout_s=1", "llm.max_retries=0")
    llm.control(mode="hang", times=1)
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=30)
    check_envelope(r, 504)
    assert r.json()["error"]["code"] == "llm_timeout"


def test_usage_chunk_relayed_only_when_asked(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/chat/completions", timeout=10,
                   json={"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(d) for d in sse_data(r.text)[:-1]]
    usage = [c for c in chunks if c.get("usage")]
    assert len(usage) == 1 and usage[0]["choices"] == [] and usage[0]["usage"]["completion_tokens"] > 0


def test_client_leaving_stops_the_provider_call(soma, llm):
    srv = soma()
    llm.control(chunks=60, delay_ms=50)
    s = raw_post(srv.port, "/v1/chat/completions", {"messages": MESSAGES, "stream": True})
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()
    deadline = time.monotonic() + 20
    while llm.stats()["aborted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llm.stats()["aborted"] == 1, "somaagent kept reading the provider after its client left"


def test_calls_beyond_the_concurrency_wait_their_turn(soma, llm):
    srv = soma("llm.proxy_concurrency=1")
    llm.control(chunks=8, delay_ms=20)
    with ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda _: httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=30),
                         range(4)))
    assert [r.status_code for r in rs] == [200] * 4
    assert all(r.json()["content"].endswith("You said: hello proxy") for r in rs)
    assert llm.stats()["requests"] == 4


def test_full_wait_list_is_503_and_waiting_clients_that_leave_are_dropped(soma, llm):
    srv = soma("llm.proxy_concurrency=1")  # one call in flight, 64 waiting
    llm.control(chunks=100, delay_ms=50)
    running = raw_post(srv.port, "/v1/chat/completions", {"messages": MESSAGES, "stream": True})
    assert running.recv(4096).startswith(b"HTTP/1.1 200")
    waiting = [raw_post(srv.port, "/v1/llm/invoke", {"messages": MESSAGES}) for _ in range(65)]
    ready, _, _ = select.select(waiting, [], [], 20)
    assert len(ready) >= 1
    head = ready[0].recv(65536)
    assert head.startswith(b"HTTP/1.1 503") and b"llm_busy" in head, head[:200]
    for s in waiting:
        s.close()
    llm.control(delay_ms=0)  # the running stream finishes quickly now
    assert read_all(running).rstrip().endswith(b"data: [DONE]\n\n\r\n0")
    running.close()
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=20)
    assert r.status_code == 200, r.text
    assert llm.stats()["requests"] == 2, "a waiting job whose client left reached the provider"


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def test_client_members_reach_the_provider_as_sent(soma, llm):
    srv = soma()
    extra = {"tools": TOOLS, "tool_choice": "auto", "top_p": 0.5, "stop": ["\n\n"], "seed": 7,
             "response_format": {"type": "text"}, "user": "u-1", "n": 1, "parallel_tool_calls": False}
    r = httpx.post(f"{srv.url}/v1/chat/completions", timeout=10,
                   json={"messages": MESSAGES, "model": "m2", "persona_id": "p", "session_id": "s", **extra})
    assert r.status_code == 200, r.text
    sent = llm.stats()["last_request"]
    assert {k: sent.get(k) for k in extra} == extra
    assert "persona_id" not in sent and "session_id" not in sent, "the platform's own members stay here"
    assert (sent["model"], sent["messages"], sent["stream"]) == ("m2", MESSAGES, False)


def test_tool_call_reply_is_the_providers_own(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "tools": TOOLS}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "chatcmpl-fake" and body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"echo": "hello proxy"}
    assert body["usage"]["total_tokens"] > 0


def test_tool_call_without_a_content_member_is_relayed(soma, llm):
    srv = soma()
    llm.control(tool_content="absent")
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "tools": TOOLS}, timeout=10)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert "content" not in message and message["tool_calls"][0]["function"]["name"] == "get_weather"


def test_refused_request_says_what_the_provider_said(soma, llm):
    srv = soma()
    for path in ("/v1/chat/completions", "/v1/llm/invoke"):
        llm.control(mode="400", times=1)
        r = httpx.post(f"{srv.url}{path}", json={"messages": MESSAGES, "tools": TOOLS}, timeout=10)
        check_envelope(r, 400)
        err = r.json()["error"]
        assert err["code"] == "llm_bad_request", err  # ours: the provider gave no code
        assert (err["type"], err["param"]) == ("invalid_request_error", "tools[0]"), err  # the provider's
        assert err["message"].endswith("The provider said: Invalid schema for function 'f': 'x' is not valid"), err
        assert "input too long" not in err["message"], err
    llm.control(mode="401", times=1)  # about our key, not the client's request: the provider's words stay here
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    check_envelope(r, 502)
    assert "provider said" not in r.json()["error"]["message"] and "Invalid API Key" not in r.text


def test_streamed_tool_call_arrives_whole(soma, llm):
    srv = soma()
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "tools": TOOLS, "stream": True},
                   timeout=10)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    calls = [tc for c in chunks for tc in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"echo": "hello proxy"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_cut_after_relayed_chunks_is_not_sent_again(soma, llm):
    """A tool call has no content: once its chunks were relayed, a retry would relay them twice."""
    srv = soma("llm.backoff_ms=1")
    llm.control(chunks=6)
    llm.control(mode="cut", times=1)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "tools": TOOLS, "stream": True},
                   timeout=10)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "llm_stream_cut", data[-2:]
    heads = [tc for d in data[:-2] for tc in (json.loads(d)["choices"][0]["delta"].get("tool_calls") or [])
             if tc.get("id")]
    assert len(heads) == 1 and llm.stats()["requests"] == 1
