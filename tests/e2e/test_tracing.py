"""Traces (ARCHITECTURE.md section 7, interop.md section 6): W3C traceparent accepted on every
request, a SERVER span per request exported as OTLP/HTTP JSON to otel.endpoint, propagated through
the conversation.process task to the LLM call; a collector that is down, slow, refusing or hung
never affects requests. The collector is the fake of tests/fakes/otlp/server.py, which checks
every body's shape (lowerCamelCase keys, hex ids, decimal-string times) and answers 400 to a bad
one: every test asserts that no export was malformed."""

import json
import signal
import subprocess
import time

import pytest

from e2e_util import (PYTHON, REPO, describe, find_samples, free_port, http, parse_metrics, run_cli,
                      wait_terminal, wait_until)

FAKE = REPO / "tests" / "fakes" / "otlp" / "server.py"
GOOD_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GOOD_PARENT = "00f067aa0ba902b7"
GOOD = f"00-{GOOD_TRACE}-{GOOD_PARENT}-01"


class FakeCollector:
    def __init__(self, log_dir):
        self.port = free_port()
        self.log = open(log_dir / "fake-otlp.log", "wb")
        self.proc = subprocess.Popen([PYTHON, str(FAKE), "--port", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._up, 10, what="the fake OTLP collector to listen")

    def _up(self):
        try:
            return http().get(self.url + "/_received", timeout=1).status_code == 200
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def control(self, **kw):
        assert http().post(self.url + "/_control", json=kw, timeout=5).status_code == 200

    def received(self):
        return http().get(self.url + "/_received", timeout=5).json()["requests"]

    def spans(self):
        return http().get(self.url + "/_spans", timeout=5).json()["spans"]

    def wait_span(self, pred, what, timeout=15):
        return wait_until(lambda: next((s for s in self.spans() if pred(s)), None), timeout, interval=0.1,
                          what=what)

    def assert_well_formed(self):
        for r in self.received():
            assert not r["problems"], r["problems"]
            assert r["content_type"] == "application/json", r["content_type"]

    def sets(self, *extra):
        return (f"otel.endpoint={self.url}",) + extra

    def stop(self):
        http().post(self.url + "/_reset", json={}, timeout=5)  # releases hung requests
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def collector(tmp_path):
    c = FakeCollector(tmp_path)
    yield c
    c.stop()


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        (kind, v), = a["value"].items()
        out[a["key"]] = int(v) if kind == "intValue" else v
    return out


def counter(srv, name):
    _, samples = parse_metrics(http().get(srv.url + "/metrics", timeout=5).text)
    found = find_samples(samples, name)
    assert found, f"{name} is not on /metrics"
    return found[0][1]


def health(srv, traceparent=None, rid=None):
    headers = {}
    if traceparent is not None:
        headers["TraceParent"] = traceparent  # header names are case-insensitive
    if rid:
        headers["X-Request-Id"] = rid
    r = http().get(srv.url + "/v1/health", headers=headers, timeout=5)
    assert r.status_code == 200, r.text
    return r


# ---- server spans -----------------------------------------------------------------------------


def test_valid_traceparent_continues_the_trace(soma, collector):
    srv = soma(*collector.sets("otel.service_name=soma-e2e"))
    health(srv, GOOD, rid="tp-valid")
    s = collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE, "the SERVER span of the request")
    assert s["parentSpanId"] == GOOD_PARENT, s
    assert s["spanId"] != GOOD_PARENT and len(s["spanId"]) == 16, s
    assert s["name"] == "GET /v1/health", s
    assert s["kind"] == 2, s
    assert s["serviceName"] == "soma-e2e", s
    a = attrs(s)
    assert a["http.response.status_code"] == 200 and a["http.route"] == "/v1/health", a
    assert a["http.request.method"] == "GET", a
    assert s["status"].get("code", 0) == 0, s
    line = srv.wait_log(lambda o: o.get("request_id") == "tp-valid" and "status" in o, what="the access log line")
    assert line["trace_id"] == GOOD_TRACE, line
    collector.assert_well_formed()


@pytest.mark.parametrize("bad", [
    GOOD.upper(),                                              # uppercase hex
    f"00-{'0' * 32}-{GOOD_PARENT}-01",                         # all-zero trace id
    f"00-{GOOD_TRACE}-{'0' * 16}-01",                          # all-zero parent id
    f"ff-{GOOD_TRACE}-{GOOD_PARENT}-01",                       # version ff
    f"00-{GOOD_TRACE[:-1]}-{GOOD_PARENT}-01",                  # wrong length
    f"00-{GOOD_TRACE}-{GOOD_PARENT}-01-extra",                 # version 00 with more
    None,                                                      # no header
])
def test_invalid_or_missing_traceparent_starts_a_new_trace(soma, collector, bad):
    srv = soma(*collector.sets())
    health(srv, bad, rid="tp-bad")
    line = srv.wait_log(lambda o: o.get("request_id") == "tp-bad" and "status" in o, what="the access log line")
    tid = line["trace_id"]
    assert len(tid) == 32 and tid != GOOD_TRACE and tid != "0" * 32, line
    s = collector.wait_span(lambda s: s["traceId"] == tid, "the span of the new trace")
    assert "parentSpanId" not in s or not s["parentSpanId"], s
    collector.assert_well_formed()


def test_span_names_use_the_route_template_and_mark_errors(soma, collector):
    srv = soma(*collector.sets())
    r = http().get(srv.url + "/v1/sessions/abc-123/history", headers={"traceparent": GOOD}, timeout=5)
    assert r.status_code in (200, 404), r.text
    s = collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE, "the span of the history request")
    assert s["name"] == "GET /v1/sessions/{id}/history", s
    assert "abc-123" not in s["name"]
    r = http().get(srv.url + "/no/such/route/42", headers={"traceparent": GOOD.replace("4bf9", "5bf9")}, timeout=5)
    assert r.status_code == 404
    s = collector.wait_span(lambda s: s["traceId"].startswith("5bf9"), "the span of the 404")
    assert s["name"] == "GET", s  # no route matched: the method alone, never the raw path
    assert attrs(s)["http.response.status_code"] == 404
    collector.assert_well_formed()


def test_env_alias_sets_the_endpoint(soma, collector):
    srv = soma(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    health(srv, GOOD)
    collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE, "a span exported through the env alias")
    collector.assert_well_formed()


def test_bad_endpoint_is_a_config_error_naming_the_key(tmp_path):
    for sets, env in ((["--set", "otel.endpoint=127.0.0.1:4318"], None),
                      ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://127.0.0.1:4317"})):
        cp = run_cli(["config", "check"] + sets, tmp_path, env=env)
        assert cp.returncode == 2 and "otel.endpoint" in cp.stderr and "http://" in cp.stderr, describe(cp)
    cp = run_cli(["config", "show", "--json"], tmp_path, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert cp.returncode == 0 and "http://c:4318" in cp.stdout and "OTEL_EXPORTER_OTLP_ENDPOINT" in cp.stdout, \
        describe(cp)


def test_no_endpoint_no_export(soma, collector, tmp_path):
    srv = soma("otel.service_name=untraced")  # otel.endpoint empty
    for _ in range(5):
        r = health(srv, GOOD, rid="tp-off")
        assert r.status_code == 200
    line = srv.wait_log(lambda o: o.get("request_id") == "tp-off" and "status" in o, what="the access log line")
    assert "trace_id" not in line, line
    # a second server on the same collector proves that one export would have arrived by now
    other = soma(*collector.sets(), data_dir=tmp_path / "other")  # (a data.dir is one server's)
    health(other, GOOD)
    collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE, "the traced server's span")
    assert not [s for s in collector.spans() if s["serviceName"] == "untraced"]
    assert counter(srv, "soma_trace_spans_exported_total") == 0


# ---- a collector that misbehaves ----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 500])
def test_refused_export_is_not_retried(soma, collector, status):
    srv = soma(*collector.sets())
    collector.control(mode=str(status), times=1)
    health(srv, GOOD)
    wait_until(lambda: counter(srv, "soma_trace_spans_failed_total") >= 1, 15, what="the failed counter")
    second = GOOD.replace("4bf9", "6bf9")
    health(srv, second)
    collector.wait_span(lambda s: s["traceId"].startswith("6bf9"), "the next request's span")
    got = collector.received()
    assert [r["status"] for r in got] == [status, 200], got
    # the refused batch was not sent again (the other spans are the test's own /metrics scrapes)
    assert not any(s["traceId"] == GOOD_TRACE for s in got[1]["spans"]), got[1]["spans"]
    assert counter(srv, "soma_trace_export_retries_total") == 0
    srv.wait_log(lambda o: o.get("service") == "otel" and o.get("level") == "warn", what="the export warning")


def test_429_is_retried_honouring_retry_after(soma, collector):
    srv = soma(*collector.sets())
    collector.control(mode="429", times=1, retry_after=1)
    health(srv, GOOD)
    collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE, "the span, sent again after the 429")
    got = collector.received()
    assert [r["status"] for r in got] == [429, 200], got
    assert got[0]["spans"] == got[1]["spans"]
    assert counter(srv, "soma_trace_export_retries_total") >= 1
    assert counter(srv, "soma_trace_spans_exported_total") >= 1
    assert counter(srv, "soma_trace_spans_failed_total") == 0


def test_collector_down_requests_unaffected(soma):
    srv = soma(f"otel.endpoint=http://127.0.0.1:{free_port()}", "otel.timeout_ms=500", "otel.queue_size=16",
               "otel.batch_size=4")
    for i in range(60):
        health(srv, GOOD)  # each answers 200 at once: nothing waits on the collector
    wait_until(lambda: counter(srv, "soma_trace_spans_dropped_total") > 0, 15, what="spans dropped")
    wait_until(lambda: counter(srv, "soma_trace_spans_failed_total") > 0, 30, what="spans failed")
    assert counter(srv, "soma_trace_spans_exported_total") == 0


def test_hung_collector_requests_unaffected(soma, collector):
    collector.control(mode="hang", times=-1)
    srv = soma(*collector.sets("otel.timeout_ms=1000", "otel.queue_size=16", "otel.batch_size=4"))
    for _ in range(60):
        health(srv, GOOD)
    wait_until(lambda: counter(srv, "soma_trace_spans_dropped_total") > 0, 15, what="spans dropped")
    wait_until(lambda: len(collector.received()) >= 1, 15, what="an export attempt")
    wait_until(lambda: counter(srv, "soma_trace_export_retries_total") >= 1, 15, what="a retry after the timeout")
    # the exporter is stuck on the hung collector: shutdown still ends, within otel.timeout_ms bounds
    assert srv.stop(timeout=15) == 0


def test_shutdown_keeps_to_the_grace_with_busy_http_tasks_and_a_hung_collector(soma, collector):
    """One deadline from SIGTERM: the HTTP drain, the running tasks and the span flush share
    shutdown.grace_s (the old build gave the drain and the tasks the whole grace each, then the
    flush otel.timeout_ms per queued batch: 2 + 2 + 4 x 7 s here)."""
    from celery_util import post_task, wait_task
    collector.control(mode="hang", times=-1)
    grace = 2
    srv = soma(*collector.sets("otel.timeout_ms=4000", "otel.batch_size=1", "otel.queue_size=64"),
               f"shutdown.grace_s={grace}")
    for _ in range(6):
        health(srv, GOOD)  # spans queued behind the hung collector, one batch each
    tid = post_task(srv, task="soma.sleep", args=[60])["task_id"]
    wait_task(srv, tid, ("STARTED",))
    c = srv.connect(timeout=5)  # a request in flight until the end: its body never completes
    c.send(b"POST /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n12345")
    health(srv)
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = srv.wait_exit(timeout=60)
    elapsed = time.monotonic() - t0
    srv.checked = True
    c.close()
    assert rc == 0, srv.log_text()[-3000:]
    assert elapsed <= grace + 3, (f"exited {elapsed:.1f} s after SIGTERM with shutdown.grace_s={grace}; "
                                  f"the server's last lines:\n{srv.log_text()[-4000:]}")


def test_queued_spans_are_flushed_at_shutdown(soma, collector):
    srv = soma(*collector.sets("otel.batch_size=1000"))  # no batch fills up: only the timer or the stop sends
    health(srv, GOOD)
    assert srv.stop(timeout=15) == 0
    assert [s for s in collector.spans() if s["traceId"] == GOOD_TRACE], collector.received()


# ---- one trace from the request to the LLM call -------------------------------------------------


@pytest.fixture
def redis_q():
    from servers import RedisServer
    with RedisServer() as r:
        yield r


@pytest.mark.parametrize("queue", ["local-early", "local", "redis"])
def test_chat_message_is_one_trace_down_to_the_llm(soma, llm, collector, request, queue):
    sets = {"local-early": ("queue.early_start=true",), "local": ("queue.early_start=false",)}.get(queue)
    if sets is None:
        from celery_util import redis_sets
        sets = tuple(redis_sets(request.getfixturevalue("redis_q")))
    srv = soma(*collector.sets(*sets))
    r = http().post(srv.url + "/v1/session/message", json={"message": "trace me"}, headers={"traceparent": GOOD},
                    timeout=10)
    assert r.status_code == 200, r.text
    wait_terminal(srv, r.json()["session_id"], timeout=20)
    in_trace = lambda kind: lambda s: s["traceId"] == GOOD_TRACE and s["kind"] == kind  # noqa: E731
    server = collector.wait_span(in_trace(2), "the SERVER span of the message")
    consumer = collector.wait_span(in_trace(5), "the CONSUMER span of conversation.process")
    ok = lambda s: in_trace(3)(s) and s["status"].get("code", 0) == 0  # noqa: E731
    client = collector.wait_span(ok, "the CLIENT span of the LLM call")
    assert server["name"] == "POST /v1/session/message" and server["parentSpanId"] == GOOD_PARENT, server
    assert consumer["name"] == "conversation.process", consumer
    assert consumer["parentSpanId"] == server["spanId"], (consumer, server)
    assert attrs(consumer)["messaging.message.id"] == r.json()["task_id"], consumer
    assert client["parentSpanId"] == consumer["spanId"], (client, consumer)
    assert client["name"] == "chat fake-model", client
    assert attrs(client)["http.response.status_code"] == 200, client
    # early start: a context read that raced the message's commit is read again and the call made
    # again (conversation.c, redo): the first call's span then ends cancelled, in the same trace
    calls = [s for s in collector.spans() if in_trace(3)(s)]
    redone = [s for s in calls if s is not client and s["spanId"] != client["spanId"]]
    assert len(redone) <= (1 if queue == "local-early" else 0), calls
    assert all(s["parentSpanId"] == consumer["spanId"] and "llm_cancelled" in json.dumps(s) for s in redone), redone
    sent = [tp for tp in llm.stats()["traceparents"] if tp]
    assert sent == [f"00-{GOOD_TRACE}-{s['spanId']}-01" for s in redone + [client]], sent
    collector.assert_well_formed()


def test_llm_error_marks_the_client_span(soma, llm, collector):
    srv = soma(*collector.sets("llm.max_retries=0"))
    llm.control(mode="500", times=1)
    r = http().post(srv.url + "/v1/session/message", json={"message": "fail"}, headers={"traceparent": GOOD},
                    timeout=10)
    assert r.status_code == 200, r.text
    wait_terminal(srv, r.json()["session_id"], timeout=20)
    client = collector.wait_span(lambda s: s["traceId"] == GOOD_TRACE and s["kind"] == 3, "the CLIENT span")
    assert client["status"]["code"] == 2, client
    assert attrs(client)["http.response.status_code"] == 500, client


def test_untraced_message_sends_no_traceparent_when_off(soma, llm):
    srv = soma()  # otel.endpoint empty: nothing is propagated, even a valid incoming traceparent
    r = http().post(srv.url + "/v1/session/message", json={"message": "quiet"}, headers={"traceparent": GOOD},
                    timeout=10)
    assert r.status_code == 200, r.text
    wait_terminal(srv, r.json()["session_id"], timeout=20)
    assert llm.stats()["traceparents"] == [None], llm.stats()["traceparents"]
