"""The redis queue against Debian's real python3-celery 5.2 / kombu 5.2 on a real redis-server:
Python producers and our workers, our producer and Python workers, lost messages recovered
across the two fleets (kill -9 on either side), the poison-task dead letter and its requeue, a
Redis restart under load, and the chat end to end on queue.driver=redis with a worker killed
mid-reply."""

import os
import time

import pytest

from celery_util import (DurableRedis, PyWorker, get_task, load_app, post_task, redis_sets, wait_task,
                         write_app)
from e2e_util import history, http, post_message, wait_terminal, wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


@pytest.fixture
def durable_redis():
    with DurableRedis() as r:
        yield r


def test_python_send_task_runs_on_our_worker(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis))
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    r = app.send_task("soma.echo", args=[1, "two"], kwargs={"k": [3]})
    assert r.get(timeout=15) == {"args": [1, "two"], "kwargs": {"k": [3]}}
    # priority bands, countdown (held unacked until due), and the task API reading Celery's meta
    t0 = time.monotonic()
    later = app.send_task("soma.echo", args=["later"], countdown=1.5)
    high = app.send_task("soma.echo", args=["high"], priority=9)
    assert high.get(timeout=15)["args"] == ["high"]
    assert later.get(timeout=15)["args"] == ["later"] and time.monotonic() - t0 >= 1.4
    t = get_task(srv, r.id)
    assert t["status"] == "SUCCESS" and t["result"]["args"] == [1, "two"] and t["completed_at"].endswith("Z"), t
    # a failure comes back as the exception; an expired task is revoked, not run
    with pytest.raises(Exception, match="boom"):
        app.send_task("soma.fail", kwargs={"message": "boom"}).get(timeout=15)
    with pytest.raises(Exception, match="expired"):
        app.send_task("soma.echo", expires=-1).get(timeout=15)
    meta = redis.client().get(f"celery-task-meta-{r.id}")
    assert b'"date_done":"' in meta and b"Z" not in meta.split(b'"date_done":"')[1][:30], meta  # naive UTC
    assert redis.client().hlen("unacked") == 0 and redis.client().zcard("unacked_index") == 0


def test_our_publish_runs_on_a_python_worker(soma, redis, tmp_path):
    write_app(tmp_path, redis.url())
    py = PyWorker(tmp_path, queues="py")
    try:
        py.wait_ready()
        srv = soma(*redis_sets(redis, "queue.routes=proj.*=py"))
        tid = post_task(srv, task="proj.add", args=[2, 3])["task_id"]
        t = wait_task(srv, tid, {"SUCCESS"}, timeout=30)
        assert t["result"] == 5, t
        assert load_app(tmp_path).AsyncResult(tid).get(timeout=5) == 5
        # the original's aliases
        rid = http().post(srv.url + "/v1/celery/run", json={"task": "soma.echo", "payload": {"x": 1}}).json()["task_id"]
        out = wait_until(lambda: (x := http().get(f"{srv.url}/v1/celery/runs/{rid}").json())["status"] == "SUCCESS"
                         and x, 20, what="the alias run")
        assert out["result"] == {"args": [{"x": 1}], "kwargs": {}}, out  # the payload is the one argument
        # idempotency: the same key twice is the same task
        a = post_task(srv, task="soma.echo", idempotency_key="once")
        b = post_task(srv, task="soma.echo", idempotency_key="once")
        assert a["task_id"] == b["task_id"] and b.get("duplicate") is True, (a, b)
        assert wait_task(srv, a["task_id"], {"SUCCESS"})["result"] == {"args": [], "kwargs": {}}
        # an unknown id is PENDING, as Celery says
        assert get_task(srv, "no-such-task")["status"] == "PENDING"
    finally:
        py.stop()


@pytest.mark.store_neutral  # unacked recovery between Celery peers, all in Redis
def test_python_worker_killed_mid_task_is_recovered_by_ours(soma, redis, tmp_path):
    write_app(tmp_path, redis.url(), vt=5)
    py = PyWorker(tmp_path, queues="shared")
    py.wait_ready()
    tid = load_app(tmp_path).send_task("soma.sleep", args=[3], queue="shared").id
    wait_until(lambda: os.path.exists(tmp_path / "py-ran.log"), 20, what="the python worker to start the task")
    assert redis.client().hlen("unacked") == 1
    py.kill9()
    srv = soma(*redis_sets(redis, "queue.visibility_timeout_s=5", "queue.queues=shared=1"))
    t = wait_task(srv, tid, {"SUCCESS"}, timeout=90)
    assert t["result"] == {"slept": 3.0}, t  # our soma.sleep, not python's
    assert redis.client().hlen("unacked") == 0


@pytest.mark.store_neutral  # unacked recovery between Celery peers, all in Redis
def test_our_worker_killed_mid_task_is_recovered_by_python(soma, redis, tmp_path):
    write_app(tmp_path, redis.url(), vt=5)
    srv = soma(*redis_sets(redis, "queue.visibility_timeout_s=5", "queue.queues=shared=1"))
    # long enough that ours cannot finish before the kill, shorter than python's visibility
    # timeout (5 s) so that python's own sweep does not restore the message it is running
    tid = post_task(srv, task="soma.sleep", args=[4], queue="shared")["task_id"]
    wait_until(lambda: redis.client().hlen("unacked") == 1, 20, what="our worker to take the task")
    srv.proc.kill()
    srv.proc.wait()
    srv.checked = True
    time.sleep(6)  # past the visibility timeout: the python worker's first sweep restores it
    py = PyWorker(tmp_path, queues="shared")
    try:
        py.wait_ready()
        wait_until(lambda: os.path.exists(tmp_path / "py-ran.log"), 30, what="the python worker to restore and run it")
        assert load_app(tmp_path).AsyncResult(tid).get(timeout=90) == {"slept": 4, "by": "python"}
    finally:
        py.stop()


def test_poison_task_is_dead_lettered_after_max_retries_and_requeue_runs_it_again(soma, redis):
    srv = soma(*redis_sets(redis, "queue.max_retries=2", "queue.retry_backoff_ms=50"))
    tid = post_task(srv, task="soma.fail", kwargs={"message": "poison", "retryable": True})["task_id"]
    t = wait_task(srv, tid, {"FAILURE"}, timeout=30)
    assert "poison" in t["error"] and t["dead_letter"] is True, t
    dead = http().get(srv.url + "/v1/dead-letters").json()["items"]
    assert [d["task_id"] for d in dead] == [tid] and dead[0]["retries"] == 2, dead
    first = dead[0]["failed_at"]
    assert http().post(f"{srv.url}/v1/dead-letters/{tid}/requeue").status_code == 200
    again = wait_until(lambda: (d := http().get(srv.url + "/v1/dead-letters").json()["items"]) and
                       d[0]["failed_at"] != first and d, 30, what="the requeued task to run and die again")
    assert again[0]["task_id"] == tid and "poison" in again[0]["error"]


def test_redis_restarted_under_load_loses_nothing(soma, durable_redis):
    # a message a worker held when Redis went away is restored by the visibility sweep: keep it short
    srv = soma(*redis_sets(durable_redis, "queue.visibility_timeout_s=8"))
    ids = []
    for i in range(400):
        ids.append(post_task(srv, task="soma.echo", args=[i])["task_id"])
        if i == 150:
            durable_redis.restart(down_s=1.0)
    for i, tid in enumerate(ids):
        assert wait_task(srv, tid, {"SUCCESS"}, timeout=60)["result"]["args"] == [i]


def test_chat_on_the_redis_queue_and_a_worker_killed_mid_reply(soma, redis, llm, tmp_path):
    srv = soma(*redis_sets(redis))
    out = post_message(srv, "hello over redis")
    evs = wait_terminal(srv, out["session_id"], timeout=20)
    assert [e["type"] for e in evs if e["role"] == "assistant"] == ["assistant.final"], evs
    srv.stop()
    # a slow reply, and the worker dies in the middle: after the visibility timeout the next
    # process restores the message and the reply is committed exactly once
    llm.control(delay_ms=500)
    data = tmp_path / "data2"
    a = soma(*redis_sets(redis, "queue.visibility_timeout_s=5"), data_dir=data)
    sid = post_message(a, "a long one")["session_id"]
    wait_until(lambda: redis.client().hlen("unacked") == 1, 20, what="the worker to take the message")
    time.sleep(0.5)
    a.proc.kill()
    a.proc.wait()
    a.checked = True
    llm.control(delay_ms=0)
    b = soma(*redis_sets(redis, "queue.visibility_timeout_s=5"), data_dir=data)
    evs = wait_terminal(b, sid, timeout=40)
    time.sleep(1)
    finals = [e for e in history(b, sid) if e["type"] == "assistant.final"]
    assert len(finals) == 1, finals


def test_tasks_accepted_while_redis_is_down_run_when_it_is_back(soma, durable_redis):
    # the outbox keeps what the API acknowledged; the relay must not count a message Redis never
    # took as published (it once deleted rows whose LPUSH could not even be queued)
    srv = soma(*redis_sets(durable_redis, "queue.visibility_timeout_s=8"))
    first = post_task(srv, task="soma.echo", args=["before"])["task_id"]
    wait_task(srv, first, {"SUCCESS"})
    durable_redis.stop()
    ids = [post_task(srv, task="soma.echo", args=[i])["task_id"] for i in range(40)]
    time.sleep(2.5)  # the relay and the workers try, fail and back off meanwhile
    ids += [post_task(srv, task="soma.echo", args=[40 + i])["task_id"] for i in range(10)]
    durable_redis.start()
    for i, tid in enumerate(ids):
        assert wait_task(srv, tid, {"SUCCESS"}, timeout=60)["result"]["args"] == [i]


def test_a_result_that_meets_a_redis_outage_is_written_when_redis_is_back(soma, durable_redis):
    # the outcome of a task that ran is kept until Redis confirms it, and written again when Redis is
    # back, instead of relying on the visibility restore (a message taken by BRPOP is recorded in
    # unacked only afterwards): with a 120 s visibility timeout only that can make the 30 s below
    srv = soma(*redis_sets(durable_redis, "queue.visibility_timeout_s=120"))
    tid = post_task(srv, task="soma.sleep", kwargs={"seconds": 2})["task_id"]
    wait_task(srv, tid, {"STARTED", "PENDING"}, timeout=10)
    wait_until(lambda: durable_redis.client().hlen("unacked") == 1, 10, what="the worker to take the task")
    durable_redis.stop()
    time.sleep(3.5)  # the task finishes while Redis is down
    durable_redis.start()
    assert wait_task(srv, tid, {"SUCCESS"}, timeout=30)["status"] == "SUCCESS"
    wait_until(lambda: durable_redis.client().hlen("unacked") == 0, 10, what="the ack")
    assert any("writing the outcome of task " + tid in ln for ln in srv.log_lines()), "it did not wait"


def test_a_result_redis_refuses_for_now_is_written_when_it_takes_writes(soma, redis):
    # a Redis that answers BUSY (a script runs past busy-reply-threshold; LOADING after a restart
    # is the same case) did not take the write: the worker writes the outcome again until Redis
    # takes it, instead of counting the error as confirmed and leaving the task to the 120 s
    # visibility restore
    import threading
    srv = soma(*redis_sets(redis, "queue.visibility_timeout_s=120"))
    tid = post_task(srv, task="soma.sleep", kwargs={"seconds": 1})["task_id"]
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take the task")
    redis.client().config_set("busy-reply-threshold", 50)

    def busy():
        try:
            redis.client().eval("while true do end", 0)
        except Exception:  # killed below
            pass

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    time.sleep(2.5)  # the task finishes while Redis answers BUSY
    deadline = time.monotonic() + 10  # kill until it has ended: a kill before it began is NOTBUSY
    while t.is_alive() and time.monotonic() < deadline:
        try:
            redis.client().script_kill()
        except Exception:
            pass
        t.join(0.2)
    assert not t.is_alive(), "the spinning script could not be killed"
    assert wait_task(srv, tid, {"SUCCESS"}, timeout=30)["status"] == "SUCCESS"
    assert any("cannot take writes yet" in ln for ln in srv.log_lines()), "no write was refused"


@pytest.mark.store_neutral  # the keys live in Redis
def test_idempotency_keys_of_two_tenants_never_meet(soma, redis):
    """Tenant "a-b" with key "x" and tenant "a" with key "b-x": two keys, two tasks (the Redis key
    once joined them as soma-idem-a-b-x, so "a" got "a-b"'s task id and its own task was dropped)."""
    srv = soma(*redis_sets(redis))
    tokens = {}
    for tenant in ("ops", "a-b", "a"):  # the first as the anonymous admin, then with its admin key
        auth = {"Authorization": f"Bearer {tokens['ops']}"} if tokens else {}
        body = {"tenant": tenant, "scopes": "admin"} if tenant == "ops" else {"tenant": tenant}
        r = http().post(srv.url + "/v1/keys", json=body, headers=auth, timeout=10)
        assert r.status_code == 201, r.text
        tokens[tenant] = r.json()["token"]

    def post(tenant, key):
        r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": [tenant], "idempotency_key": key},
                        headers={"Authorization": f"Bearer {tokens[tenant]}"}, timeout=10)
        assert r.status_code == 202, r.text
        return r.json()

    first, second = post("a-b", "x"), post("a", "b-x")
    assert first["task_id"] != second["task_id"] and not second.get("duplicate"), (first, second)
    assert post("a", "b-x")["task_id"] == second["task_id"]  # each tenant's own key still dedupes


@pytest.mark.store_neutral
def test_a_tenant_revokes_its_delayed_task_after_its_result_ttl(soma, redis):
    """The owner key of a delayed task lasts until its eta plus queue.result_expires_s: the tenant
    can still revoke (and read) it after result_expires_s has passed (it expired with the result
    TTL, and an id without an owner is not a tenant's to revoke)."""
    srv = soma(*redis_sets(redis, "queue.result_expires_s=1"))
    admin = http().post(srv.url + "/v1/keys", json={"tenant": "ops", "scopes": "admin"}, timeout=10).json()["token"]
    key = http().post(srv.url + "/v1/keys", json={"tenant": "acme"}, headers={"Authorization": f"Bearer {admin}"},
                      timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {key}"}
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "countdown": 30}, headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]
    wait_until(lambda: redis.client().exists(f"soma-task-owner-{tid}"), 10, what="the relay to publish it")
    time.sleep(2.5)  # past result_expires_s
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", headers=auth, timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "REVOKED", r.text
    other = http().post(srv.url + "/v1/keys", json={"tenant": "other"}, headers={"Authorization": f"Bearer {admin}"},
                        timeout=10).json()["token"]
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert r.status_code == 404, r.text
