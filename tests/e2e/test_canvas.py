"""Celery's canvas on the redis queue against Debian's python3-celery 5.2 on a real redis-server:
chains, groups and chords through our API (POST /v1/tasks/chain, /group, /chord) and built in
Python (celery.chain / celery.chord, apply_async), run by our worker, a Python worker, or both;
the chord joined with the Redis backend's .j/.t/.s keys by whichever side finishes last."""

import celery
import pytest

from celery_util import PyWorker, load_app, redis_sets, wait_task, write_app
from e2e_util import http
from servers import RedisServer

PY_TASKS = '''

@app.task(name="py.add")
def py_add(x, y):
    if isinstance(x, dict):  # soma.echo's result: {"args": [...], "kwargs": {...}}
        x = x["args"][0]
    return x + y
'''


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def app_with_py(tmp_path, redis):
    path = write_app(tmp_path, redis.url())
    with open(path, "a") as f:
        f.write(PY_TASKS)
    return load_app(tmp_path)


def post(srv, path, body, expect=202):
    r = http().post(srv.url + path, json=body, timeout=10)
    assert r.status_code == expect, r.text
    return r.json()


def echo(*args):
    return {"args": list(args), "kwargs": {}}


def test_chain_and_group_through_our_api(soma, redis):
    srv = soma(*redis_sets(redis))
    out = post(srv, "/v1/tasks/chain", {"tasks": [{"task": "soma.echo", "args": [1]},
                                                  {"task": "soma.echo", "args": [2]},
                                                  {"task": "soma.echo"}]})
    assert len(out["task_ids"]) == 3 and out["task_id"] == out["task_ids"][-1], out
    last = wait_task(srv, out["task_id"], {"SUCCESS"}, timeout=30)
    assert last["result"] == echo(echo(echo(1), 2)), last
    assert wait_task(srv, out["task_ids"][1], {"SUCCESS"})["result"] == echo(echo(1), 2)
    assert redis.client().get(f"soma-task-owner-{out['task_id']}") is not None  # the caller's tenant's
    g = post(srv, "/v1/tasks/group", {"tasks": [{"task": "soma.echo", "args": [i]} for i in range(5)]})
    assert len(g["task_ids"]) == 5 and g["group_id"], g
    for i, tid in enumerate(g["task_ids"]):
        assert wait_task(srv, tid, {"SUCCESS"}, timeout=30)["result"] == echo(i)
    meta = redis.client().get(f"celery-task-meta-{g['task_ids'][0]}")
    assert meta and b'"SUCCESS"' in meta
    # validation
    post(srv, "/v1/tasks/chain", {"tasks": []}, expect=400)
    post(srv, "/v1/tasks/chord", {"header": [{"task": "soma.echo"}]}, expect=400)
    post(srv, "/v1/tasks/group", {"tasks": [{"task": "soma.echo", "args": 1}]}, expect=400)


def test_local_driver_refuses_canvas(soma):
    srv = soma()
    post(srv, "/v1/tasks/chain", {"tasks": [{"task": "soma.echo"}]}, expect=422)


def test_python_chain_mixes_our_worker_and_a_python_worker(soma, redis, tmp_path):
    app = app_with_py(tmp_path, redis)
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        soma(*redis_sets(redis, "queue.routes=proj.*=py,py.*=py"))
        c = celery.chain(app.signature("soma.echo", args=[5]),
                         app.signature("py.add", args=[3], options={"queue": "py"}),
                         app.signature("soma.echo", args=["end"]))
        r = c.apply_async()
        assert r.get(timeout=30) == echo(8, "end")
        assert r.parent.get(timeout=5) == 8
    finally:
        py.stop()


def test_chords_join_on_our_worker(soma, redis, tmp_path):
    app = app_with_py(tmp_path, redis)
    srv = soma(*redis_sets(redis))
    # built in Python
    r = celery.chord([app.signature("soma.echo", args=[i]) for i in range(3)],
                     app.signature("soma.echo", args=["body"])).apply_async()
    assert r.get(timeout=30) == echo([echo(0), echo(1), echo(2)], "body")
    # through our API
    out = post(srv, "/v1/tasks/chord", {"header": [{"task": "soma.echo", "args": [i]} for i in range(3)],
                                        "body": {"task": "soma.echo", "args": ["body"]}})
    assert len(out["task_ids"]) == 3 and out["group_id"] and out["task_id"], out
    assert redis.client().get(f"celery-taskset-meta-{out['group_id']}.s") in (b"3", None)
    body = wait_task(srv, out["task_id"], {"SUCCESS"}, timeout=30)
    assert body["result"] == echo([echo(0), echo(1), echo(2)], "body"), body
    assert app.AsyncResult(out["task_id"]).get(timeout=5) == body["result"]
    assert not redis.client().exists(f"celery-taskset-meta-{out['group_id']}.j")


def test_chord_members_on_both_sides(soma, redis, tmp_path):
    app = app_with_py(tmp_path, redis)
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        srv = soma(*redis_sets(redis, "queue.routes=proj.*=py,py.*=py"))
        for body_queue in ("celery", "py"):
            body = {"task": "soma.echo", "args": ["body"]} if body_queue == "celery" else \
                {"task": "py.add", "args": [[100]], "queue": "py"}
            out = post(srv, "/v1/tasks/chord", {"header": [{"task": "soma.echo", "args": [0]},
                                                           {"task": "proj.add", "args": [1, 1], "queue": "py"},
                                                           {"task": "soma.echo", "args": [2]}],
                                                "body": body})
            got = app.AsyncResult(out["task_id"]).get(timeout=30)
            if body_queue == "celery":
                assert got == echo([echo(0), 2, echo(2)], "body"), got
            else:
                assert got == [echo(0), 2, echo(2), 100], got
        # a chord built in Python with a Python member
        r = celery.chord([app.signature("soma.echo", args=[0]),
                          app.signature("proj.add", args=[1, 1], options={"queue": "py"})],
                         app.signature("soma.echo")).apply_async()
        assert r.get(timeout=30) == echo([echo(0), 2])
    finally:
        py.stop()


def test_failed_chord_member_fails_the_body_and_errbacks_run(soma, redis, tmp_path):
    app = app_with_py(tmp_path, redis)
    srv = soma(*redis_sets(redis))
    out = post(srv, "/v1/tasks/chord", {"header": [{"task": "soma.echo", "args": [0]},
                                                   {"task": "soma.fail", "kwargs": {"message": "nope"}}],
                                        "body": {"task": "soma.echo"}})
    body = wait_task(srv, out["task_id"], {"FAILURE"}, timeout=30)
    assert "ChordError" in str(body) or "Dependency" in str(body), body
    # a Python-built task with a link and a link_error, run by our worker
    ok = app.signature("soma.echo", args=[1]).set(link=app.signature("soma.echo", args=["cb"]))
    r = ok.apply_async()
    assert r.get(timeout=15) == echo(1)
    err_id = "errback-" + r.id
    bad = app.signature("soma.fail", kwargs={"message": "x"}).set(
        link_error=app.signature("soma.echo", args=["eb"]).set(task_id=err_id))
    with pytest.raises(Exception):
        bad.apply_async().get(timeout=15)
    assert app.AsyncResult(err_id).get(timeout=15)["args"][1] == "eb"
