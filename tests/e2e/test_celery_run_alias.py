"""POST /v1/celery/run {task, payload} sends the payload as the task's one positional argument,
as the original did (send_task(task, args=[payload])): its tasks take one dict. It was sent as
kwargs, so every task written for the original failed through the alias (a Python task
`def t(payload)` got payload's keys as keyword arguments)."""
import pytest
from celery_util import PyWorker, redis_sets, wait_task, write_app
from e2e_util import http
from servers import RedisServer

PY = '''

@app.task(name="py.one")
def py_one(payload):
    return {"got": payload}
'''


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def run(srv, body):
    r = http().post(srv.url + "/v1/celery/run", json=body, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["task_id"]


def test_alias_payload_is_the_one_argument_of_a_python_task(soma, redis, tmp_path):
    path = write_app(tmp_path, redis.url())
    with open(path, "a") as f:
        f.write(PY)
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        srv = soma(*redis_sets(redis, "queue.routes=py.*=py"))
        tid = run(srv, {"task": "py.one", "payload": {"a": 1}})
        wait_task(srv, tid, {"SUCCESS", "FAILURE"}, timeout=30)
        out = http().get(f"{srv.url}/v1/celery/runs/{tid}", timeout=5).json()
        assert out["status"] == "SUCCESS" and out["result"] == {"got": {"a": 1}}, out
    finally:
        py.stop()


def test_alias_payload_on_the_local_queue(soma):
    srv = soma()
    tid = run(srv, {"task": "soma.echo", "payload": {"a": [1, 2]}})
    assert wait_task(srv, tid, {"SUCCESS"})["result"] == {"args": [{"a": [1, 2]}], "kwargs": {}}
    tid = run(srv, {"task": "soma.echo"})  # no payload: {} as the original's default
    assert wait_task(srv, tid, {"SUCCESS"})["result"] == {"args": [{}], "kwargs": {}}
    tid = run(srv, {"task": "soma.echo", "payload": [1, 2]})  # whatever it is, the one argument
    assert wait_task(srv, tid, {"SUCCESS"})["result"] == {"args": [[1, 2]], "kwargs": {}}
