"""How a tool task ends (src/tasks/tool.c, docs/api.md Tools): a tool's own failure - a refused or
bad URL, a 404 page, a policy deny, arguments that do not fit - is the caller's answer: FAILURE with
the reason and no dead letter, on both queue drivers; only a dependency that did not answer (here a
page server answering 503) is retried and then dead-lettered. Policy tool.execute gets the arguments
(context {tool, args, host}) on the gateway's check and the worker's (fake OPA). A text/plain page is
decoded from its declared charset."""

import json

import pytest

from celery_util import redis_sets
from e2e_util import http, wait_until
from opa_fake import opa, opa_session  # noqa: F401 (fixtures)
from servers import RedisServer
from test_tools import outcome, pages, run, run_tool  # noqa: F401 (pages is a fixture)


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def post_tool_task(srv, tool, args):
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.tool", "kwargs": {"tool": tool, "args": args}},
                    timeout=10)
    assert r.status_code == 202, r.text
    return outcome(srv, r.json()["task_id"], timeout=30)


def not_dead(srv, out):
    """out, which must read dead_letter false at once: a rejected task's FAILURE and the removal of
    its queue row are one commit (no moment where it reads as a dead letter)."""
    assert not out.get("dead_letter"), out
    return out


def check_user_failures_are_not_dead_letters(srv, pages):
    cases = [({"url": "http://10.0.0.1/"}, "not in tools.fetch.allowed_hosts"),
             ({"url": "ftp://x/"}, "only http and https"),
             ({"url": pages + "/to-metadata"}, "not in tools.fetch.allowed_hosts"),
             ({"url": pages + "/missing"}, "HTTP 404"),
             ({"url": pages + "/image.png"}, "not text")]
    for args, why in cases:
        out = not_dead(srv, run_tool(srv, "fetch_page", args))
        assert out["status"] == "FAILURE" and why in out["error"], out
    # the worker's own checks (a task sent through the task API): bad arguments, an unknown tool
    out = not_dead(srv, post_tool_task(srv, "fetch_page", {"url": 5}))
    assert out["status"] == "FAILURE" and "args.url must be a string" in out["error"] and not out.get("dead_letter"), out
    out = not_dead(srv, post_tool_task(srv, "nope", {}))
    assert out["status"] == "FAILURE" and "no such tool" in out["error"] and not out.get("dead_letter"), out

    def clean():  # (the local driver drops the dead row just after the outcome: waited for)
        items = http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"]
        dead = sum(q.get("dead", 0) for q in http().get(srv.url + "/v1/queues", timeout=5).json()["queues"])
        return (items == [] and dead == 0) or print("dead letters:", json.dumps(items)[:800], "dead:", dead)
    wait_until(clean, 5, what="no dead letters")
    assert "dead-lettered" not in srv.log_text()


def check_an_unanswering_page_is_retried_then_dead_lettered(srv, pages):
    out = run_tool(srv, "fetch_page", {"url": pages + "/unavailable"})
    assert out["status"] == "FAILURE" and "HTTP 503" in out["error"], out
    items = wait_until(lambda: http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"], 10,
                       what="the dead letter")
    assert [d["task_id"] for d in items] == [out["task_id"]], items


def test_tool_failures_are_answers_not_dead_letters_local(soma, pages):
    srv = soma("tools.fetch.allowed_hosts=127.0.0.1", "queue.max_retries=1", "queue.retry_backoff_ms=50")
    check_user_failures_are_not_dead_letters(srv, pages)
    check_an_unanswering_page_is_retried_then_dead_lettered(srv, pages)


def test_tool_failures_are_answers_not_dead_letters_redis(soma, redis, pages):
    srv = soma(*redis_sets(redis, "tools.fetch.allowed_hosts=127.0.0.1", "queue.max_retries=1",
                           "queue.retry_backoff_ms=50"))
    check_user_failures_are_not_dead_letters(srv, pages)
    check_an_unanswering_page_is_retried_then_dead_lettered(srv, pages)


def test_policy_sees_the_tool_arguments_and_host(soma, opa):  # noqa: F811
    opa.control(table=[
        {"input": {"action": "tool.execute", "context": {"host": "allowed.example"}},
         "result": {"allow": True, "reason": "allowed"}},
        {"input": {"action": "tool.execute"}, "result": {"allow": False, "reason": "host_not_allowed"}},
        {"input": {}, "result": {"allow": True, "reason": "allowed"}}])
    srv = soma("policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=5000", "policy.cache_ttl_ms=0",
               "tools.fetch.allowed_hosts=127.0.0.1")
    args = {"url": "http://Allowed.EXAMPLE:8080/x?y=1", "max_chars": 10}
    out = run_tool(srv, "fetch_page", args)  # allowed twice, then refused by tools.fetch.allowed_hosts
    assert out["status"] == "FAILURE" and "not in tools.fetch.allowed_hosts" in out["error"], out
    asked = [i for i in opa.stats()["inputs"] if i["action"] == "tool.execute"]
    assert len(asked) == 2, asked  # the gateway's check and the worker's
    for i in asked:
        assert i["resource"] == "tool:fetch_page"
        assert i["context"] == {"tool": "fetch_page", "args": args, "host": "allowed.example"}, i
    r = run(srv, "fetch_page", {"url": "http://other.example/"}, expect=403)
    assert r.json()["error"]["reason"] == "host_not_allowed", r.text
    out = not_dead(srv, post_tool_task(srv, "fetch_page", {"url": "https://user@Other.example/"}))
    assert out["status"] == "FAILURE" and "host_not_allowed" in out["error"] and not out.get("dead_letter"), out
    ctx = [i["context"] for i in opa.stats()["inputs"] if i["action"] == "tool.execute"][-1]
    assert ctx == {"tool": "fetch_page", "args": {"url": "https://user@Other.example/"}, "host": "other.example"}
    run(srv, "echo", {"text": "hi"}, expect=403)
    ctx = [i["context"] for i in opa.stats()["inputs"] if i["action"] == "tool.execute"][-1]
    assert ctx == {"tool": "echo", "args": {"text": "hi"}}, ctx


def test_a_plain_text_page_is_decoded_from_its_charset(soma, pages):
    srv = soma("tools.fetch.allowed_hosts=127.0.0.1")
    out = run_tool(srv, "fetch_page", {"url": pages + "/latin1.txt"})
    assert out["status"] == "SUCCESS" and out["result"]["text"] == "caf\u00e9 cr\u00e8me", out
    out = run_tool(srv, "fetch_page", {"url": pages + "/unknown-charset.txt"})  # taken as UTF-8
    assert out["status"] == "SUCCESS" and out["result"]["text"] == "caf\u00e9", out
