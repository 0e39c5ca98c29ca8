"""The redis queue's give-backs and prefetch: a graceful restart gives back every message a
worker held (waiting for its countdown or eta, interrupted by the shutdown) together with its
run-lock, so the next process runs it instead of acking it as "running on another worker"; and a
message waiting in a worker's prefetch while the task before it runs past the visibility timeout
runs once, not once by the sweep's new taker and once more from the buffer."""

import time

import httpx
import pytest

from celery_util import get_task, load_app, post_task, queued_messages, redis_sets, wait_task, write_app
from e2e_util import find_samples, parse_metrics, wait_until
from servers import RedisServer

pytestmark = pytest.mark.store_neutral

LOST = "runs on another worker now; acking this copy"


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def restart(soma, srv, redis, *sets):
    srv.stop()
    return soma(*redis_sets(redis, *sets), data_dir=srv.data_dir)


def check_runs_after_restart(srv, tid, before, status="SUCCESS"):
    """The task given back at the restart ends (status) on the new process, which acked no copy
    of it."""
    st = wait_task(srv, tid, {"SUCCESS", "FAILURE"}, timeout=20)
    assert st["status"] == status, st
    assert not any(LOST in ln for ln in srv.log_lines()), srv.log_text()
    assert not any(LOST in ln for ln in before.log_lines()), before.log_text()


def test_a_countdown_task_held_at_a_graceful_restart_runs_after_it(soma, redis):
    srv = soma(*redis_sets(redis))
    tid = post_task(srv, task="soma.echo", args=["later"], countdown=6)["task_id"]
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take and hold the task")
    time.sleep(1.0)
    after = restart(soma, srv, redis)
    check_runs_after_restart(after, tid, srv)


def test_a_task_interrupted_by_a_graceful_restart_runs_after_it(soma, redis):
    srv = soma(*redis_sets(redis, "shutdown.grace_s=1"))
    tid = post_task(srv, task="soma.sleep", kwargs={"seconds": 4})["task_id"]
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take the task")
    time.sleep(1.0)  # it runs; the shutdown interrupts it
    after = restart(soma, srv, redis)
    check_runs_after_restart(after, tid, srv)


def test_prefetched_messages_given_back_at_a_graceful_restart_run_after_it(soma, redis, tmp_path):
    # queued before the server starts: its first worker takes all four in one batch, and the
    # echoes wait in its prefetch behind the sleep when the stop comes
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    slow = app.send_task("soma.sleep", kwargs={"seconds": 3})
    echoes = [app.send_task("soma.echo", args=[i]) for i in range(3)]
    srv = soma(*redis_sets(redis, "shutdown.grace_s=1"))
    wait_until(lambda: redis.client().hlen("unacked") == 4, 10, what="the worker to take the batch")
    time.sleep(0.5)
    after = restart(soma, srv, redis)
    for i, r in enumerate(echoes):
        assert r.get(timeout=20) == {"args": [i], "kwargs": {}}
    assert slow.get(timeout=20)["slept"] == 3
    assert not any(LOST in ln for ln in after.log_lines() + srv.log_lines()), after.log_text()


def test_a_retry_held_for_its_backoff_at_a_graceful_restart_runs_after_it(soma, redis):
    backoff = "queue.retry_backoff_ms=8000"  # the first retry is due 4..8 s after the failure
    srv = soma(*redis_sets(redis, backoff))
    tid = post_task(srv, task="soma.fail", kwargs={"message": "once more", "retryable": True},
                    max_retries=1)["task_id"]
    wait_task(srv, tid, {"RETRY"}, timeout=10)
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take and hold the retry")
    after = restart(soma, srv, redis, backoff)
    check_runs_after_restart(after, tid, srv, status="FAILURE")  # its second and last try ran


def test_a_revoke_of_a_task_waiting_for_its_retry_outlives_a_restart(soma, redis):
    # the REVOKED result replaces the RETRY one (it was stored SET NX: not at all), so the retry
    # given back at the restart is acked unrun by the next process, which never heard the revoke
    backoff = "queue.retry_backoff_ms=8000"
    srv = soma(*redis_sets(redis, backoff))
    tid = post_task(srv, task="soma.fail", kwargs={"message": "again", "retryable": True},
                    max_retries=3)["task_id"]
    wait_task(srv, tid, {"RETRY"}, timeout=10)
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take and hold the retry")
    r = httpx.post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5)
    assert r.status_code == 202 and r.json()["status"] == "REVOKED", r.text
    assert get_task(srv, tid)["status"] == "REVOKED"
    after = restart(soma, srv, redis, backoff)
    wait_until(lambda: redis.client().hlen("unacked") == 0 and not queued_messages(redis.client()), 15,
               what="the given-back retry to be taken and acked")
    time.sleep(0.5)
    assert get_task(after, tid)["status"] == "REVOKED"
    _, samples = parse_metrics(httpx.get(after.url + "/metrics", timeout=5).text)
    assert not find_samples(samples, "soma_tasks_total", task="soma.fail"), "the revoked retry ran"


def echo_runs(srv):
    _, samples = parse_metrics(httpx.get(srv.url + "/metrics", timeout=5).text)
    return sum(v for _, v in find_samples(samples, "soma_tasks_total", task="soma.echo"))


def test_prefetched_messages_run_once_when_the_task_before_them_outlasts_the_visibility_timeout(
        soma, redis, tmp_path):
    # the four messages are queued before the server starts: its first worker takes them in one
    # batch, runs the sleep, and the echoes wait in its prefetch past the 5 s visibility timeout
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    slow = app.send_task("soma.sleep", kwargs={"seconds": 9})
    echoes = [app.send_task("soma.echo", args=[i]) for i in range(3)]
    srv = soma(*redis_sets(redis, "queue.visibility_timeout_s=5"))
    for i, r in enumerate(echoes):
        assert r.get(timeout=30) == {"args": [i], "kwargs": {}}
    assert slow.get(timeout=30)["slept"] == 9
    time.sleep(1.0)  # the buffered copies, if any, run right after the sleep
    assert echo_runs(srv) == 3, srv.log_text()
    wait_until(lambda: redis.client().hlen("unacked") == 0, 10, what="every ack")
    for r in echoes:
        assert get_task(srv, r.id)["status"] == "SUCCESS"
