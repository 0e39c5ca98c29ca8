"""SomaBrain's recall joins the caller's trace (CONTRACTS.md section 7: traceparent is a SomaBrain
header): POST /v1/memory/recall sends the request's SERVER span as the parent, a chat message's
recall the conversation.process span; with tracing off (otel.endpoint empty) no traceparent is
sent (docs/operations.md). Writes go through the outbox, which keeps no trace context: none."""

import pytest

from e2e_util import http, wait_terminal, wait_until
from test_memory import FakeSomaBrain
from test_tracing import GOOD, GOOD_PARENT, GOOD_TRACE, FakeCollector


@pytest.fixture
def brain(tmp_path):
    b = FakeSomaBrain(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def collector(tmp_path):
    c = FakeCollector(tmp_path)
    yield c
    c.stop()


def recall(srv, **headers):
    r = http().post(srv.url + "/v1/memory/recall", json={"query": "hello"}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_recall_api_sends_the_request_span_as_parent(soma, brain, collector):
    srv = soma(*brain.sets(*collector.sets()))
    wait_until(lambda: http().get(srv.url + "/v1/health", timeout=5).json()["services"]["memory"]["status"] == "ok",
               10, what="SomaBrain to be healthy")
    recall(srv, traceparent=GOOD)
    sent = brain.stats()["recall_traceparents"]
    server = collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE and s["kind"] == 2,
                                 "the SERVER span of the recall")
    assert server["name"] == "POST /v1/memory/recall" and server["parentSpanId"] == GOOD_PARENT, server
    assert sent == [f"00-{GOOD_TRACE}-{server['spanId']}-01"], sent


def test_chat_recall_sends_the_task_span_as_parent(soma, brain, collector):
    srv = soma(*brain.sets(*collector.sets("memory.recall_top_k=3")))
    wait_until(lambda: http().get(srv.url + "/v1/health", timeout=5).json()["services"]["memory"]["status"] == "ok",
               10, what="SomaBrain to be healthy")
    r = http().post(srv.url + "/v1/session/message", json={"message": "trace my recall"},
                    headers={"traceparent": GOOD}, timeout=10)
    assert r.status_code == 200, r.text
    wait_terminal(srv, r.json()["session_id"], timeout=20)
    consumer = collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE and s["kind"] == 5,
                                   "the CONSUMER span of conversation.process")
    sent = brain.stats()["recall_traceparents"]
    assert sent and all(tp == f"00-{GOOD_TRACE}-{consumer['spanId']}-01" for tp in sent), (sent, consumer)


def test_no_traceparent_when_tracing_is_off(soma, brain):
    srv = soma(*brain.sets())
    wait_until(lambda: http().get(srv.url + "/v1/health", timeout=5).json()["services"]["memory"]["status"] == "ok",
               10, what="SomaBrain to be healthy")
    recall(srv, traceparent=GOOD)
    assert brain.stats()["recall_traceparents"] == [None]
