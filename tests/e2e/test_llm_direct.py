"""The proxy's direct client for a plain-HTTP provider at a literal address (src/llm/h1_conn.c):
chunked replies over kept-alive connections, connections the provider closes or drops, answers
that are not HTTP, and an HTTP proxy in the environment (then libcurl carries the call)."""

import json
import socket

import httpx
import pytest

from e2e_util import check_envelope

MESSAGES = [{"role": "user", "content": "hello direct"}]
STREAM = {"messages": MESSAGES, "stream": True}


def sse_data(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def streamed_text(r):
    assert r.status_code == 200, r.text
    data = sse_data(r.text)
    assert data[-1] == "[DONE]", data[-3:]
    chunks = [json.loads(d) for d in data[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def connections_made(llm, before):
    """Connections the fake accepted since `before` (a stats() figure), this stats call excluded."""
    return llm.stats()["connections"] - before - 1


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chunked_replies_reuse_one_connection(soma, llm):
    srv = soma()
    llm.control(keep_alive=True, chunks=20)
    before = llm.stats()["connections"]
    with httpx.Client(timeout=10) as client:
        texts = [streamed_text(client.post(f"{srv.url}/v1/chat/completions", json=STREAM)) for _ in range(5)]
        whole = client.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES})
    assert all(t.endswith("You said: hello direct") and t.startswith("Hello from the fake model") for t in texts)
    assert whole.status_code == 200 and whole.json()["content"] == texts[0]
    assert connections_made(llm, before) == 1, "each call opened its own provider connection"


def test_cut_chunked_stream_ends_with_an_in_band_error(soma, llm):
    srv = soma()
    llm.control(keep_alive=True)
    llm.control(mode="cut", times=1)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json=STREAM, timeout=10)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == "llm_stream_cut", data[-2]
    # the cut connection is not reused: the next call is whole
    assert streamed_text(httpx.post(f"{srv.url}/v1/chat/completions", json=STREAM, timeout=10))


def test_connection_closed_while_idle_is_not_reused(soma, llm):
    srv = soma()
    llm.control(keep_alive=True, drop_idle=True)
    before = llm.stats()["connections"]
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert streamed_text(client.post(f"{srv.url}/v1/chat/completions", json=STREAM))
    stats = llm.stats()
    assert stats["modes"] == ["ok"] * 3 and stats["dropped"] == 0
    assert stats["connections"] - before - 1 == 3


def test_request_dropped_on_a_reused_connection_is_sent_again(soma, llm):
    srv = soma("llm.max_retries=0")  # sent again without a retry: none is allowed
    llm.control(keep_alive=True, drop_reused=True)
    with httpx.Client(timeout=10) as client:
        texts = [streamed_text(client.post(f"{srv.url}/v1/chat/completions", json=STREAM)) for _ in range(3)]
    assert all(t.endswith("You said: hello direct") for t in texts)
    stats = llm.stats()
    assert stats["dropped"] == 2 and stats["modes"] == ["ok"] * 3


def test_answer_that_is_not_http_is_502(soma, llm):
    srv = soma("llm.max_retries=0")
    llm.control(mode="garbage", times=1)
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    check_envelope(r, 502)
    srv.wait_log(lambda o: "not valid HTTP" in o.get("msg", ""), what="the log naming the broken answer")
    assert httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10).status_code == 200


def test_connect_refused_names_the_address(soma, llm):
    port = closed_port()
    srv = soma(f"llm.base_url=http://127.0.0.1:{port}/v1", "llm.max_retries=0")
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    check_envelope(r, 502)
    assert r.json()["error"]["code"] == "llm_unreachable"
    srv.wait_log(lambda o: f"connect to 127.0.0.1:{port}: Connection refused" in o.get("msg", ""),
                 what="the log naming the address")


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.1"])
def test_http_proxy_in_the_environment_is_honoured(soma, llm, no_proxy):
    env = {"http_proxy": f"http://127.0.0.1:{closed_port()}", "no_proxy": no_proxy or "", "NO_PROXY": ""}
    srv = soma("llm.max_retries=0", env=env)
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=10)
    if no_proxy:  # libcurl, told to go direct for this host
        assert r.status_code == 200 and r.json()["content"].endswith("You said: hello direct")
    else:  # through the (absent) proxy: unreachable, the provider never asked
        check_envelope(r, 502)
        assert llm.stats()["requests"] == 0


def test_large_request_reaches_the_provider_whole(soma, llm):
    """A request bigger than a socket takes at once is written in parts as the socket drains."""
    srv = soma("http.max_body=16777216")
    big = "abc " * 1_500_000  # 6 MB
    with httpx.Client(timeout=30) as client:
        for stream in (True, False):  # the second goes over the kept connection
            r = client.post(f"{srv.url}/v1/chat/completions",
                            json={"messages": [{"role": "user", "content": big}], "stream": stream})
            assert r.status_code == 200, r.text[:300]
            assert llm.stats()["last_request"]["messages"][0]["content"] == big


def test_answer_before_the_whole_request_went_closes_the_connection(soma, llm):
    """A provider that answers (401) while the request's body is still being written leaves the
    rest of that body unread: the connection must not carry the next request, whose bytes would
    be read as the old body's."""
    srv = soma("http.max_body=16777216", "llm.timeout_s=5", "llm.max_retries=0")
    llm.control(keep_alive=True, answer_before_body=1)
    big = "abc " * 2_000_000  # 8 MB: more than the socket takes at once
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{srv.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": big}]})
        check_envelope(r, 502)  # our key was refused: a provider failure, not the client's
        before = llm.stats()["connections"]
        for stream in (True, False):
            r = client.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES, "stream": stream})
            if stream:
                assert "You said: hello direct" in streamed_text(r)
            else:
                assert r.status_code == 200, r.text[:300]
                assert r.json()["choices"][0]["message"]["content"].endswith("You said: hello direct")
        assert connections_made(llm, before) == 1, "the next request did not go on a new connection"
