"""Celery messages and results holding what Python's json.dumps writes for a str with U+0000 or a
lone surrogate ("\\u0000", "\\ud800"), against the real python3-celery: such a task runs on our
worker (NUL kept, a lone surrogate read as U+FFFD), a Python worker's result holding them is read
by GET /v1/tasks (it read as PENDING), and a message nobody can read is acked by its delivery tag
(it stayed in unacked and came back after every visibility timeout)."""

import base64
import json

import pytest

from celery_util import PyWorker, get_task, load_app, redis_sets, wait_task, write_app
from e2e_util import http, wait_until
from servers import RedisServer

PY_TASKS = '''

@app.task(name="py.odd")
def py_odd():
    return ["a\\x00b", "\\ud800"]
'''


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def test_args_with_nul_and_lone_surrogate_run(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    srv = soma(*redis_sets(redis))
    r = app.signature("soma.echo", args=["a\x00b", "\ud800", "x\udc00y"], kwargs={"k": "\x00"}).apply_async()
    assert r.get(timeout=20) == {"args": ["a\x00b", "\ufffd", "x\ufffdy"], "kwargs": {"k": "\x00"}}
    t = get_task(srv, r.id)
    assert t["status"] == "SUCCESS"
    assert t["result"] == {"args": ["a\x00b", "\ufffd", "x\ufffdy"], "kwargs": {"k": "\x00"}}
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="the message acked")


def test_python_result_with_nul_and_lone_surrogate_is_read(soma, redis, tmp_path):
    path = write_app(tmp_path, redis.url())
    with open(path, "a") as f:
        f.write(PY_TASKS)
    app = load_app(tmp_path)
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        srv = soma(*redis_sets(redis, "queue.routes=py.*=py"))
        tid = http().post(srv.url + "/v1/tasks", json={"task": "py.odd"}, timeout=10).json()["task_id"]
        assert app.AsyncResult(tid).get(timeout=20) == ["a\x00b", "\ud800"]
        t = wait_task(srv, tid, ("SUCCESS",))
        assert t["result"] == ["a\x00b", "\ufffd"]
    finally:
        py.stop()


def envelope(task, tag, body):
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {"lang": "py", "task": task, "id": tag},
        "properties": {"correlation_id": tag, "body_encoding": "base64", "delivery_tag": tag, "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": "celery"}}})


def test_unreadable_message_is_acked(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    c = redis.client()
    bad_nul = envelope("soma.echo\x00x", "bad-nul-tag", [[1], {}, {}])  # a task name cut at U+0000
    bad_json = envelope("soma.echo", "bad-json-tag", [[1], {}, {}])[:-1] + ', "x": \\ud800}'
    c.lpush("celery", bad_nul, bad_json)
    srv = soma(*redis_sets(redis))
    r = app.send_task("soma.echo", args=["after"])
    assert r.get(timeout=20)["args"] == ["after"]
    wait_until(lambda: not c.hexists("unacked", "bad-nul-tag") and not c.hexists("unacked", "bad-json-tag"), 10,
               what="the unreadable messages acked")
    assert c.llen("celery") == 0
    assert srv.log_text().count("dropping a message") == 2, srv.log_text()
