"""The operators' gauges and counters of /metrics after real activity: queue depth, oldest task
age and dead letters (scrape-time figures, cached a few seconds), workers, disk and store,
service status, LLM provider calls (chat, proxy, invoke: outcome, duration, first token,
tokens), open SSE streams, beat's leader; and promtool still accepts the page."""

import json
import shutil
import subprocess
import time

import pytest

from e2e_util import find_samples, http, open_stream, parse_metrics, post_message, wait_until

PROMTOOL = shutil.which("promtool")


def scrape(srv):
    r = http().get(srv.url + "/metrics", timeout=5)
    assert r.status_code == 200, r.text
    return r.text


def value(srv, name, **labels):
    """The one sample's value, or None when the series is absent."""
    found = find_samples(parse_metrics(scrape(srv))[1], name, **labels)
    assert len(found) <= 1, found
    return found[0][1] if found else None


def wait_value(srv, name, pred, timeout=15, **labels):
    return wait_until(lambda: (v := value(srv, name, **labels)) is not None and pred(v) and (v,), timeout,
                      interval=0.2, what=f"{name}{labels}")[0]


def publish(srv, task, **body):
    r = http().post(srv.url + "/v1/tasks", json=dict(body, task=task), timeout=5)
    assert r.status_code == 202, r.text
    return r.json()["task_id"]


def test_queue_figures_workers_disk_and_status(soma):
    srv = soma("queue.routes=soma.echo=parked")  # a queue no worker serves: its tasks wait
    publish(srv, "soma.echo", args=[1])
    assert wait_value(srv, "soma_queue_depth", lambda v: v == 1, queue="parked") == 1
    time.sleep(1.2)
    assert wait_value(srv, "soma_queue_oldest_task_age_seconds", lambda v: v >= 1, queue="parked") < 120
    assert value(srv, "soma_queue_reserved", queue="parked") == 0
    publish(srv, "soma.fail")  # a permanent failure: a dead letter on the celery queue
    assert wait_value(srv, "soma_dead_letters", lambda v: v == 1, queue="celery") == 1
    assert value(srv, "soma_queue_depth", queue="celery") == 0
    types, _ = parse_metrics(scrape(srv))
    assert types["soma_queue_depth"] == "gauge" and types["soma_dead_letters"] == "gauge"

    assert value(srv, "soma_workers", queue="conversation") >= 1
    assert value(srv, "soma_workers_busy", queue="conversation") == 0
    free, size = value(srv, "soma_disk_free_bytes"), value(srv, "soma_disk_size_bytes")
    assert 0 < free <= size, (free, size)
    assert value(srv, "soma_store_storage_full") == 0
    assert value(srv, "soma_service_status", service="http", status="ok") == 1
    assert value(srv, "soma_service_status", service="http", status="degraded") == 0
    assert value(srv, "soma_service_up", service="http") == 1
    assert value(srv, "soma_beat_leader") is None  # beat not configured: no series
    assert value(srv, "soma_redis_aof_enabled") is None  # not the redis driver


def test_llm_calls_and_streams(soma, llm):
    srv = soma("llm.max_retries=0")
    out = post_message(srv, "hello")
    stream = open_stream(srv, out["session_id"])
    try:
        assert wait_value(srv, "soma_sse_streams", lambda v: v == 1, kind="events") == 1
    finally:
        stream.close()
    assert wait_value(srv, "soma_sse_streams", lambda v: v == 0, kind="events") == 0
    assert value(srv, "soma_sse_streams", kind="a2a") == 0

    assert wait_value(srv, "soma_llm_requests_total", lambda v: v == 1, kind="chat", outcome="ok") == 1
    assert value(srv, "soma_llm_tokens_total", kind="chat", direction="prompt") > 0
    assert value(srv, "soma_llm_tokens_total", kind="chat", direction="completion") > 0
    assert value(srv, "soma_llm_request_duration_seconds_count", kind="chat") == 1
    assert value(srv, "soma_llm_first_token_seconds_count", kind="chat") == 1
    assert 0 < value(srv, "soma_llm_request_duration_seconds_sum", kind="chat") < 30

    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = http().post(srv.url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200 and "[DONE]" in r.text, r.text
    assert wait_value(srv, "soma_llm_requests_total", lambda v: v == 1, kind="proxy", outcome="ok") == 1
    assert value(srv, "soma_sse_streams", kind="proxy") == 0  # opened and closed again

    llm.control(mode="500", times=1)  # the provider fails: counted as an error
    r = http().post(srv.url + "/v1/llm/invoke", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code >= 500, r.text
    assert wait_value(srv, "soma_llm_requests_total", lambda v: v == 1, kind="invoke", outcome="error") == 1
    llm.control(mode="429", times=1, retry_after=0)
    r = http().post(srv.url + "/v1/llm/invoke", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 429, r.text
    assert wait_value(srv, "soma_llm_requests_total", lambda v: v == 1, kind="invoke", outcome="rate_limited") == 1
    assert value(srv, "soma_llm_requests_total", kind="chat", outcome="error") == 0
    text = scrape(srv)
    assert "tenant" not in text.split("soma_llm_", 1)[1].split("\n# HELP process", 1)[0]
    if PROMTOOL:
        cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()


def test_beat_leader(soma, tmp_path):
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps([{"name": "hourly", "task": "soma.echo", "every_s": 3600}]))
    srv = soma(f"beat.schedule_file={path}")
    assert wait_value(srv, "soma_beat_leader", lambda v: v == 1) == 1


@pytest.mark.skipif(not PROMTOOL, reason="promtool not installed")
def test_promtool_accepts_the_new_families(soma):
    srv = soma("queue.routes=soma.echo=parked")
    publish(srv, "soma.echo")
    wait_value(srv, "soma_queue_depth", lambda v: v == 1, queue="parked")
    cp = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape(srv).encode(), capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
