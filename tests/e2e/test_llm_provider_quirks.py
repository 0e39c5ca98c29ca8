"""What a provider may do that is legal, or at least common, and must not break a reply: end its
stream with [DONE] and then hang, close without the body's last chunk or send more; put a `ping`
or a value over several data: lines in its stream; answer 408 (retried, as OpenAI's SDKs do);
give Retry-After as an HTTP-date. Both provider paths: a literal address (our HTTP/1.1 client)
and a host name (libcurl)."""

import email.utils
import json
import time

import httpx
import pytest

from e2e_util import post_message, wait_terminal

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=["127.0.0.1", "localhost"])
def provider_host(request):
    return request.param


def start(soma, llm, host, *sets):
    return soma(f"llm.base_url=http://{host}:{llm.port}/v1", *sets)


def sse_events(text):
    """The data of each event of an SSE body, its data: lines joined as a client joins them."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln[6:] if ln.startswith("data: ") else ln[5:] for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def streamed(srv, timeout=20):
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={"messages": MSGS, "stream": True},
                      timeout=timeout) as r:
        assert r.status_code == 200
        return "".join(r.iter_text())


@pytest.mark.parametrize("after_done", ["hang", "close", "junk"])
def test_a_stream_that_sent_done_is_whole_whatever_follows(soma, llm, provider_host, after_done):
    llm.control(after_done=after_done, chunks=3)
    srv = start(soma, llm, provider_host, "llm.timeout_s=2")
    events = sse_events(streamed(srv))
    assert events[-1] == "[DONE]", events
    assert not any("error" in e for e in events), events  # no llm_stream_cut, no junk passed on
    content = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                      for e in events[:-1] if json.loads(e)["choices"])
    assert content.startswith("Hello"), content
    sid = post_message(srv, "hello")["session_id"]  # the conversation's reply, too
    final = wait_terminal(srv, sid, timeout=20)[-1]
    assert final["type"] == "assistant.final", final


def test_events_that_are_no_chunks_and_values_over_several_lines(soma, llm, provider_host):
    llm.control(odd_events=True, chunks=3)
    srv = start(soma, llm, provider_host)
    events = sse_events(streamed(srv))
    assert "ping" not in events, events
    for e in events[:-1]:
        json.loads(e)  # every event the client gets is a chunk it can read
    assert any('"+"' in e for e in events), "the chunk given over several lines is relayed, readable"


def test_408_is_retried(soma, llm, provider_host):
    llm.control(mode="408", times=1)
    srv = start(soma, llm, provider_host, "llm.max_retries=2")
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=20)
    assert r.status_code == 200, r.text
    assert llm.stats()["requests"] == 2


def test_retry_after_as_an_http_date_is_waited_for(soma, llm, provider_host):
    srv = start(soma, llm, provider_host, "llm.max_retries=2")
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    llm.control(mode="429", times=1, retry_after=when)
    t0 = time.monotonic()
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=20)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 >= 0.9, "the retry waited for the date (a whole second at least)"
    check = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=20)
    assert check.status_code == 200


def test_our_429_passes_on_the_provider_s_wait(soma, llm, provider_host):
    srv = start(soma, llm, provider_host, "llm.max_retries=0")
    llm.control(mode="429", times=1, retry_after=7)
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=20)
    assert r.status_code == 429 and r.headers.get("retry-after") == "7", (r.status_code, r.headers)


def test_groq_usage_in_x_groq_is_counted(soma, llm, provider_host):
    """Groq streams the usage in x_groq.usage of the last chunk, with no usage chunk: the reply's
    tokens are those, in the final event and in the tenant's token budget."""
    llm.control(groq_usage=True, chunks=3, text="x" * 400)  # the fake's usage: 101 completion tokens
    srv = start(soma, llm, provider_host, "limits.llm_tokens_per_day=150")
    sid = post_message(srv, "hello")["session_id"]
    final = wait_terminal(srv, sid, timeout=20)[-1]
    assert final["type"] == "assistant.final", final
    usage = final["metadata"]["usage"]
    prompt = sum(len(str(m.get("content", ""))) for m in llm.stats()["last_request"]["messages"]) // 4 + 1
    assert usage["output_tokens"] == 101 and usage["input_tokens"] == prompt, usage
    events = sse_events(streamed(srv))  # the proxy relays Groq's chunks as they are
    assert '"x_groq"' in events[-2], events[-2:]
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=20)
    assert r.status_code == 429 and r.json()["error"]["code"] == "llm_budget_exceeded", r.text
