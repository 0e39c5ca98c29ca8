"""Task ids of up to 255 characters, as Celery callers choose them (f"{tenant}:{kind}:{uuid}:{ts}",
with ':' '/' spaces and non-ASCII letters): sent by Python and run on our worker, revoked, and in a
group and a chord; an id of 256 characters gets a FAILURE result naming the limit. The task API
takes such an id (POST /v1/tasks task_id) for a Python worker or ours, reads and revokes it."""

import json
import time
import urllib.parse
import uuid

import celery
import pytest

from celery_util import PyWorker, get_task, load_app, post_task, redis_sets, wait_task, write_app
from e2e_util import http, wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def long_id(n, tag="x"):
    """An id of exactly n characters with the odd ones a caller may use."""
    head = f"acme:report/{tag} é☃:{uuid.uuid4()}:{time.time():.6f}:"
    return head + "p" * (n - len(head))


def meta(redis, tid):
    raw = redis.client().get(f"celery-task-meta-{tid}")
    return json.loads(raw) if raw else None


@pytest.mark.store_neutral  # all in Redis
def test_python_send_task_with_a_200_char_id_runs_on_our_worker(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    tid = long_id(200)
    assert len(tid) == 200
    r = app.send_task("soma.echo", args=[1], task_id=tid)
    assert r.get(timeout=15) == {"args": [1], "kwargs": {}}
    assert r.id == tid and meta(redis, tid)["task_id"] == tid
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="the message acked")


@pytest.mark.store_neutral
def test_a_255_char_id_runs_and_a_256_char_id_gets_the_failure_result(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    ok = app.send_task("soma.echo", args=["edge"], task_id=long_id(255, "e"))
    assert ok.get(timeout=15)["args"] == ["edge"]
    bad = app.send_task("soma.echo", args=[1], task_id=long_id(256))
    with pytest.raises(Exception, match="at most 255"):
        bad.get(timeout=15)
    assert bad.state == "FAILURE"
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="every message acked")


@pytest.mark.store_neutral
def test_a_long_id_is_revoked_before_it_runs(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    tid = long_id(220, "rev")
    r = app.send_task("soma.echo", args=["never"], task_id=tid, countdown=3)
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="our worker to hold the delayed task")
    app.control.revoke(tid)
    with pytest.raises(Exception):
        r.get(timeout=15)
    assert r.state == "REVOKED", r.state
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="the message acked")


@pytest.mark.store_neutral
def test_a_group_and_a_chord_of_long_ids(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    soma(*redis_sets(redis))
    ids = [long_id(230, f"m{i}") for i in range(3)]
    g = celery.group([app.signature("soma.echo", args=[i]).set(task_id=ids[i]) for i in range(3)])
    gid = long_id(240, "grp")
    res = g.apply_async(task_id=gid)  # a group's id is its task_id option (Celery 5.2)
    assert res.id == gid
    assert [x["args"] for x in res.get(timeout=20)] == [[0], [1], [2]]
    body_id = long_id(250, "body")
    header = [app.signature("soma.echo", args=[i]).set(task_id=long_id(200, f"h{i}")) for i in range(2)]
    c = celery.chord(header, app.signature("soma.echo", args=["body"]).set(task_id=body_id)).apply_async()
    assert c.id == body_id
    got = c.get(timeout=30)
    assert [x["args"] for x in got["args"][0]] == [[0], [1]] and got["args"][1] == "body", got


def path_of(tid):
    return urllib.parse.quote(tid, safe="")  # '/', ':', spaces and non-ASCII percent-encoded


def test_our_post_with_a_200_char_task_id_runs_on_a_python_worker_and_on_ours(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        srv = soma(*redis_sets(redis, "queue.routes=proj.*=py"))
        theirs, ours = long_id(200, "py"), long_id(200, "ours")
        assert post_task(srv, task="proj.add", args=[2, 3], task_id=theirs)["task_id"] == theirs
        assert wait_task(srv, path_of(theirs), {"SUCCESS"}, timeout=30)["result"] == 5
        assert load_app(tmp_path).AsyncResult(theirs).get(timeout=5) == 5
        assert post_task(srv, task="soma.echo", args=["c"], task_id=ours)["task_id"] == ours
        t = wait_task(srv, path_of(ours), {"SUCCESS"}, timeout=30)
        assert t["result"] == {"args": ["c"], "kwargs": {}} and t["task_id"] == ours, t
        # revoked through the task API before it runs
        later = long_id(210, "later")
        post_task(srv, task="soma.echo", countdown=30, task_id=later)
        wait_until(lambda: redis.client().exists(f"soma-task-owner-{later}"), 10, what="the relay to publish it")
        r = http().post(f"{srv.url}/v1/tasks/{path_of(later)}/revoke", timeout=10)
        assert r.status_code == 202 and r.json()["status"] == "REVOKED", r.text
        # (the REVOKED result is written by the revoke's broadcast: a moment later on a loaded machine)
        assert wait_task(srv, path_of(later), {"REVOKED"}, timeout=15)["status"] == "REVOKED"
        # over 255 characters, or with a control character: refused before anything is stored
        for bad in (long_id(256), "a\tb", ""):
            assert post_task(srv, 400, task="soma.echo", task_id=bad)["error"]["code"] == "invalid_task_id"
    finally:
        py.stop()
