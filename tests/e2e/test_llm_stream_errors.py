"""A provider's failure inside a 200 answer, and the end of a stream at [DONE]: an error event in
the stream (before any content or after some, [DONE] following as vLLM sends it), a 200 that is no
event stream (a JSON error body) or an event stream closed before any event, and what follows
[DONE] (nothing of it is relayed, and the reply ends at once). Both on the conversation path
(assistant.error with the provider's words as the detail) and the /v1/chat/completions proxy.
Both provider paths: a literal address (our HTTP/1.1 client) and a host name (libcurl)."""

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
    return [ln[6:] for ln in text.split("\n") if ln.startswith("data: ")]


def streamed(srv, timeout=30):
    t0 = time.monotonic()
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={"messages": MSGS, "stream": True},
                      timeout=timeout) as r:
        body = "".join(r.iter_text())
        return r.status_code, body, time.monotonic() - t0


def conversation_end(srv):
    sid = post_message(srv, "hello")["session_id"]
    return wait_terminal(srv, sid, timeout=30)[-1]


def assert_error(ev, code, said):
    assert ev["type"] == "assistant.error", ev
    err = ev["metadata"]["error"]
    assert err["code"] == code, ev
    assert said in err["detail"] and "No error" not in err["detail"], ev


def test_error_event_mid_stream_is_a_cut_reply(soma, llm, provider_host):
    llm.control(mode="error_mid", times=-1, chunks=3)
    srv = start(soma, llm, provider_host)
    assert_error(conversation_end(srv), "llm_stream_cut", "Internal server error")
    status, body, _ = streamed(srv)
    events = sse_events(body)
    assert status == 200 and events[-1] == "[DONE]", events
    assert json.loads(events[0])["choices"], events  # the content before the error was relayed
    errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
    assert errors[0]["message"] == "Internal server error", events  # the provider's event, as it came
    assert errors[-1]["code"] == "llm_stream_cut", events
    assert "No error" not in srv.log_text()


def test_error_event_before_any_content_is_a_server_error(soma, llm, provider_host):
    llm.control(mode="error_first", times=-1)
    srv = start(soma, llm, provider_host, "llm.max_retries=0")
    assert_error(conversation_end(srv), "llm_server_error", "Internal server error")
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS, "stream": True}, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] == "llm_server_error", r.text
    llm.control(mode="ok", times=-1)
    llm.control(mode="error_first", times=1)  # retried, as a failure before any token is
    srv.stop()
    srv2 = start(soma, llm, provider_host, "llm.max_retries=1")
    status, body, _ = streamed(srv2)
    events = sse_events(body)
    assert status == 200 and not any("error" in e for e in events), events


@pytest.mark.parametrize("keep_alive", [False, True])
def test_stream_ends_at_done_when_the_provider_then_idles(soma, llm, provider_host, keep_alive):
    llm.control(after_done="hang", chunks=3, keep_alive=keep_alive)
    srv = start(soma, llm, provider_host, "llm.timeout_s=10")
    status, body, took = streamed(srv)
    events = sse_events(body)
    assert status == 200 and events[-1] == "[DONE]" and not any("error" in e for e in events), events
    assert took < 3, f"the stream ended {took:.1f} s after its start, not at the provider's [DONE]"
    t0 = time.monotonic()
    final = conversation_end(srv)
    assert final["type"] == "assistant.final" and final["metadata"]["status"] == "completed", final
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("keep_alive", [False, True])
def test_nothing_after_done_is_relayed(soma, llm, provider_host, keep_alive):
    llm.control(after_done="junk", chunks=3, keep_alive=keep_alive)
    srv = start(soma, llm, provider_host)
    for _ in range(2):
        status, body, _ = streamed(srv)
        events = sse_events(body)
        assert status == 200 and events[-1] == "[DONE]", events
        assert not any("junk" in e or "error" in e for e in events), events


def test_a_200_json_error_to_a_stream_is_a_server_error(soma, llm, provider_host):
    llm.control(mode="200_error", times=-1)
    srv = start(soma, llm, provider_host, "llm.max_retries=0")
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS, "stream": True}, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] == "llm_server_error", r.text
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS}, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] == "llm_server_error", r.text
    assert_error(conversation_end(srv), "llm_server_error", "model overloaded")
    log = srv.log_text()
    assert "model overloaded" in log and "No error" not in log, log[-2000:]


def test_an_empty_200_stream_is_a_server_error_and_retried(soma, llm, provider_host):
    llm.control(mode="200_empty", times=-1)
    srv = start(soma, llm, provider_host, "llm.max_retries=0")
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSGS, "stream": True}, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] == "llm_server_error", r.text
    assert_error(conversation_end(srv), "llm_server_error", "")
    assert "No error" not in srv.log_text()
    llm.control(mode="ok", times=-1)
    llm.control(mode="200_empty", times=1)
    srv.stop()
    srv2 = start(soma, llm, provider_host, "llm.max_retries=1")
    before = llm.stats()["requests"]
    status, body, _ = streamed(srv2)
    assert status == 200 and sse_events(body)[-1] == "[DONE]" and "error" not in body, body
    assert llm.stats()["requests"] - before == 2
