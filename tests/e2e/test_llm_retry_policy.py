"""When a provider call is tried again, for a client that waits on it (the proxy) and for the
conversation task (in the background): a Retry-After longer than the time left to retry
(llm.retry_wait_s for the proxy) is passed on at once with the provider's words; the total time
spent retrying is bounded; a provider that stayed silent (our timeout) is not asked again, while
its own 408 is."""

import time

import httpx
import pytest

from e2e_util import check_envelope, post_message, wait_terminal

MESSAGES = [{"role": "user", "content": "hello proxy"}]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/llm/invoke"])
@pytest.mark.parametrize("wait_s", [30, 7200])
def test_a_long_retry_after_is_passed_on_at_once(soma, llm, path, wait_s):
    srv = soma("llm.max_retries=3", "llm.backoff_ms=1")
    llm.control(mode="429", times=4, retry_after=wait_s)
    t0 = time.monotonic()
    r = httpx.post(f"{srv.url}{path}", json={"messages": MESSAGES}, timeout=10)
    elapsed = time.monotonic() - t0
    check_envelope(r, 429)
    assert r.headers.get("retry-after") == str(wait_s), r.headers
    assert r.json()["error"]["message"].endswith("The provider said: Rate limit reached"), r.json()
    assert elapsed < 3 and llm.stats()["requests"] == 1, (elapsed, llm.stats()["modes"])


def test_a_short_retry_after_is_still_waited_for(soma, llm):
    srv = soma("llm.max_retries=3")
    llm.control(mode="429", times=1, retry_after=1)
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=10)
    assert r.status_code == 200, r.text
    assert llm.stats()["modes"] == ["429", "ok"]


def test_the_time_spent_retrying_is_bounded(soma, llm):
    srv = soma("llm.max_retries=6", "llm.backoff_ms=3000", "llm.retry_wait_s=5")
    llm.control(mode="500", times=-1)
    t0 = time.monotonic()
    r = httpx.post(f"{srv.url}/v1/llm/invoke", json={"messages": MESSAGES}, timeout=15)
    elapsed = time.monotonic() - t0
    check_envelope(r, 502)
    assert elapsed < 7, f"the client waited {elapsed:.1f} s with llm.retry_wait_s=5"
    assert 2 <= llm.stats()["requests"] <= 3, llm.stats()["modes"]


@pytest.mark.parametrize("provider_host", ["127.0.0.1", "localhost"])
def test_a_silent_provider_is_not_asked_again(soma, llm, provider_host):
    srv = soma(f"llm.base_url=http://{provider_host}:{llm.port}/v1", "llm.timeout_s=1", "llm.max_retries=3",
               "llm.backoff_ms=1")
    llm.control(mode="hang", times=4)
    t0 = time.monotonic()
    r = httpx.post(f"{srv.url}/v1/chat/completions", json={"messages": MESSAGES}, timeout=15)
    check_envelope(r, 504)
    assert time.monotonic() - t0 < 3 and llm.stats()["requests"] == 1, llm.stats()["modes"]


def test_the_conversation_gives_up_on_a_long_retry_after_with_the_provider_s_words(soma, llm):
    srv = soma("llm.max_retries=3")
    llm.control(mode="429", times=-1, retry_after=600)
    t0 = time.monotonic()
    sid = post_message(srv, "rate me")["session_id"]
    ev = wait_terminal(srv, sid, timeout=20)[-1]
    assert ev["type"] == "assistant.error", ev
    err = ev["metadata"]["error"]
    assert err["code"] == "llm_rate_limited" and "Rate limit reached" in err["detail"], err
    assert time.monotonic() - t0 < 15 and llm.stats()["requests"] == 1, llm.stats()["modes"]
