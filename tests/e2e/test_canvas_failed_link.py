"""A failed chain link, as Celery 5.2's mark_as_failure: every later link that has a task id gets
the same FAILURE meta (a client polling the chain's last id gets an answer instead of PENDING
forever), and a later link that is a chord member (the last link of a chain in a chord's header)
joins its chord as failed, so the body fails with ChordError instead of stalling. Compared with a
Python worker running the same chord."""

import json

import celery
import pytest

from celery_util import PyWorker, load_app, redis_sets, wait_task, write_app
from e2e_util import http, wait_until
from servers import RedisServer

PY_TASKS = '''

@app.task(name="py.fail")
def py_fail(*a, **kw):
    raise ValueError("x")

@app.task(name="py.echo")
def py_echo(*a):
    return list(a)
'''


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def meta(redis, tid):
    raw = redis.client().get(f"celery-task-meta-{tid}")
    return json.loads(raw) if raw else None


def wait_meta(redis, tid, timeout=30):
    return wait_until(lambda: (m := meta(redis, tid)) and m["status"] in ("SUCCESS", "FAILURE") and m,
                      timeout, interval=0.05, what=f"the result of {tid}")


def test_api_chain_failure_fails_every_later_link(soma, redis):
    srv = soma(*redis_sets(redis))
    r = http().post(srv.url + "/v1/tasks/chain", json={"tasks": [
        {"task": "soma.echo", "args": [1]},
        {"task": "soma.fail", "kwargs": {"message": "boom"}},
        {"task": "soma.echo", "args": [2]}, {"task": "soma.echo", "args": [3]}]}, timeout=10)
    assert r.status_code == 202, r.text
    ids = r.json()["task_ids"]
    last = wait_task(srv, r.json()["task_id"], {"SUCCESS", "FAILURE"}, timeout=30)
    assert last["status"] == "FAILURE" and "boom" in json.dumps(last), last
    assert wait_task(srv, ids[0], {"SUCCESS", "FAILURE"})["status"] == "SUCCESS"
    for tid in ids[1:]:
        m = meta(redis, tid)
        assert m["status"] == "FAILURE" and m["result"]["exc_message"] == ["boom"], m


def test_python_chain_failure_answers_the_last_link(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    res = celery.chain(app.signature("soma.fail", kwargs={"message": "boom"}),
                       app.signature("soma.echo", args=[2]), app.signature("soma.echo", args=[3])).apply_async()
    assert wait_meta(redis, res.id)["status"] == "FAILURE"
    with pytest.raises(Exception) as ei:
        app.AsyncResult(res.id).get(timeout=15)
    assert "boom" in str(ei.value), ei.value
    assert app.AsyncResult(res.parent.id).state == "FAILURE"


def chord_with_failing_chain(app, fail, echo):
    return celery.chord([celery.chain(app.signature(fail, kwargs={"message": "x"}), app.signature(echo, args=[2])),
                         app.signature(echo, args=[3])], app.signature(echo, args=["body"]))


def test_chord_with_a_failing_chain_in_its_header_fails_like_celery(soma, redis, tmp_path):
    path = write_app(tmp_path, redis.url())
    with open(path, "a") as f:
        f.write(PY_TASKS)
    app = load_app(tmp_path)
    py = PyWorker(tmp_path, queues="celery")
    try:  # control: Celery alone
        py.wait_ready()
        r = chord_with_failing_chain(app, "py.fail", "py.echo").apply_async()
        want = wait_meta(redis, r.id)
    finally:
        py.stop()
    assert want["status"] == "FAILURE" and want["result"]["exc_type"] == "ChordError", want
    soma(*redis_sets(redis))
    r = chord_with_failing_chain(app, "soma.fail", "soma.echo").apply_async()
    got = wait_meta(redis, r.id)
    assert got["status"] == "FAILURE" and got["result"]["exc_type"] == want["result"]["exc_type"], got
    assert "raised" in got["result"]["exc_message"][0], got
    header = r.parent.results
    assert meta(redis, header[0].id)["status"] == "FAILURE"  # the chain's last link
    assert wait_meta(redis, header[1].id)["status"] == "SUCCESS"
