"""Regressions of the stream-end and retry-policy fixes: a streamed call over libcurl keeps its
provider connection past [DONE]; a connect timeout (nothing sent) is retried; a fast client is not
cut when the provider writes a burst faster than the client parses (backpressure: the provider is
read no faster than the client takes, and only a client that reads nothing is cut); a JSON
completion answering a streamed request is the reply (relayed as SSE chunks), not retried."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "hi"}]


def test_streamed_calls_over_libcurl_keep_their_provider_connection(soma, llm):
    srv = soma(f"llm.base_url=http://127.1:{llm.port}/v1")  # not a literal h1_conn takes (inet_pton): libcurl
    llm.reset()
    llm.control(keep_alive=True)
    c0 = llm.stats()["connections"]
    for _ in range(6):
        r = httpx.post(f"{srv.url}/v1/chat/completions",
                       json={"model": "fake-model", "stream": True, "messages": MESSAGES}, timeout=10)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
    opened = llm.stats()["connections"] - c0 - 1  # the stats call's own
    assert opened <= 2, f"6 streamed calls opened {opened} provider connections"


def test_a_provider_hanging_after_done_does_not_hold_the_client_over_libcurl(soma, llm):
    srv = soma(f"llm.base_url=http://127.1:{llm.port}/v1", "llm.timeout_s=30")
    llm.control(keep_alive=True, after_done="hang")
    t0 = time.monotonic()
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"stream": True, "messages": MESSAGES}, timeout=20)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert '"error"' not in r.text
    assert time.monotonic() - t0 < 3
    # the next call works (the hung transfer was stopped, its connection dropped)
    llm.control(after_done=None)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"stream": True, "messages": MESSAGES}, timeout=20)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1"])
def test_a_connect_timeout_is_retried(soma, llm, host):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fill = []
    for _ in range(4):  # the accept queue is full: SYNs are dropped, connects time out
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(s)
    time.sleep(0.2)
    srv = soma(f"llm.base_url=http://{host}:{port}/v1", "llm.connect_timeout_s=1", "llm.max_retries=2",
               "llm.backoff_ms=100", "llm.retry_wait_s=60")
    t0 = time.monotonic()
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=60)
    took = time.monotonic() - t0
    for s in fill + [ls]:
        s.close()
    assert r.status_code == 502 and r.json()["error"]["code"] == "llm_unreachable", r.text
    assert took >= 2.8, f"one attempt only ({took:.1f} s)"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1"])
def test_a_fast_client_gets_a_burst_whole(soma, llm, host):
    srv = soma(f"llm.base_url=http://{host}:{llm.port}/v1", "stream.max_buffer=65536")
    llm.control(keep_alive=True, reply_bytes=400000, chunks=8000)
    got, cut = 0, False
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions",
                      json={"stream": True, "messages": MESSAGES}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                j = json.loads(line[6:])
                cut = cut or "error" in j
                got += len(((j.get("choices") or [{}])[0].get("delta") or {}).get("content") or "")
            if got < 200000 and got > 100000:
                time.sleep(0.0002)  # a client that parses slower than loopback delivers
    assert not cut and got >= 400000, f"got {got} bytes, cut {cut}"


class JsonProvider(BaseHTTPRequestHandler):
    calls = 0
    body = b""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        b = type(self).body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *a):
        pass


@pytest.fixture
def json_provider():
    hs = ThreadingHTTPServer(("127.0.0.1", 0), JsonProvider)
    threading.Thread(target=hs.serve_forever, daemon=True).start()
    yield hs
    hs.shutdown()


COMPLETION = {"id": "x", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole reply"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1"])
def test_a_json_completion_to_a_streamed_request_is_the_reply(soma, json_provider, host):
    JsonProvider.calls, JsonProvider.body = 0, json.dumps(COMPLETION).encode()
    srv = soma(f"llm.base_url=http://{host}:{json_provider.server_address[1]}/v1")
    r = httpx.post(f"{srv.url}/v1/chat/completions",
                   json={"stream": True, "stream_options": {"include_usage": True}, "messages": MESSAGES},
                   timeout=30)
    assert r.status_code == 200 and JsonProvider.calls == 1, (r.text, JsonProvider.calls)
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == "whole reply"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c["choices"] and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    JsonProvider.calls = 0
    r = httpx.post(f"{srv.url}/v1/llm/invoke/stream", json={"messages": MESSAGES}, timeout=30)
    assert r.status_code == 200 and "whole reply" in r.text and JsonProvider.calls == 1, r.text


def test_a_200_that_is_no_reply_is_not_retried(soma, json_provider):
    JsonProvider.calls, JsonProvider.body = 0, b'{"something": "else"}'
    srv = soma(f"llm.base_url=http://127.0.0.1:{json_provider.server_address[1]}/v1", "llm.backoff_ms=50")
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"stream": True, "messages": MESSAGES}, timeout=30)
    assert r.status_code == 502 and JsonProvider.calls == 1, (r.text, JsonProvider.calls)
    # an error body in a 200 is the provider's failure: retried
    JsonProvider.calls, JsonProvider.body = 0, b'{"error": {"message": "overloaded"}}'
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"stream": True, "messages": MESSAGES}, timeout=30)
    assert r.status_code == 502 and JsonProvider.calls == 4, (r.text, JsonProvider.calls)
