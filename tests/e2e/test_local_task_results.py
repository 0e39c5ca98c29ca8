"""The local queue's task results (SQLite and PostgreSQL stores): a finished task shows the fields
CONTRACTS.md §3 lists ({task_id, task, status, result, error, retries, started_at, completed_at}),
and its result lives queue.result_expires_s, as on Redis. Results were kept forever, and a finished
task had no `retries` or `started_at` and a null `task`."""
import os
import sqlite3

from celery_util import post_task, wait_task
from e2e_util import http, wait_until

FIELDS = {"task_id", "task", "status", "result", "error", "retries", "started_at", "completed_at"}


def gone(srv, tid):
    r = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_finished_task_fields_and_result_expiry(soma):
    srv = soma("queue.result_expires_s=2")
    tid = post_task(srv, task="soma.echo", args=[1])["task_id"]
    t = wait_task(srv, tid, {"SUCCESS"})
    assert FIELDS <= set(t), t
    assert t["task"] == "soma.echo" and t["retries"] == 0 and t["result"] == {"args": [1], "kwargs": {}}, t
    assert t["started_at"] and t["completed_at"] and t["started_at"] <= t["completed_at"], t
    f = wait_task(srv, post_task(srv, task="soma.fail", kwargs={"message": "no"})["task_id"], {"FAILURE"})
    assert FIELDS <= set(f) and f["task"] == "soma.fail", f
    # past queue.result_expires_s the result is gone, as Redis's meta would be
    wait_until(lambda: gone(srv, tid), 30, interval=0.2, what="the result to expire")
    # later tasks sweep the expired rows, and their own results are there
    for _ in range(3):
        n = post_task(srv, task="soma.echo", args=[2])["task_id"]
        assert wait_task(srv, n, {"SUCCESS"})["result"] == {"args": [2], "kwargs": {}}
    assert gone(srv, tid)
    db = os.path.join(srv.data_dir, "somaagent.db")
    if os.path.exists(db):  # the SQLite store: the row itself was deleted
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT count(*) FROM task_results WHERE task_id = ?", (tid,)).fetchone()[0] == 0


def test_results_are_kept_without_expiry(soma):
    srv = soma("queue.result_expires_s=0")
    tid = post_task(srv, task="soma.echo")["task_id"]
    assert wait_task(srv, tid, {"SUCCESS"})["task"] == "soma.echo"


def test_a_revoked_task_keeps_its_name(soma):
    srv = soma()
    tid = post_task(srv, task="soma.echo", args=[1], countdown=60)["task_id"]
    assert http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5).status_code in (200, 202)
    body = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json()
    assert body["status"] == "REVOKED" and body["task"] == "soma.echo", body
    for field in ("task_id", "result", "error", "retries", "started_at", "completed_at"):
        assert field in body, (field, body)
