"""The redis queue's give-backs: a graceful restart gives back every message a worker held
(waiting for its countdown, eta or retry backoff, interrupted by the shutdown) together with its
run-lock, so the next process runs it instead of acking it as "running on another worker"."""

import time

import pytest

from celery_util import post_task, redis_sets, wait_task
from e2e_util import wait_until
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


def test_a_retry_held_for_its_backoff_at_a_graceful_restart_runs_after_it(soma, redis):
    backoff = "queue.retry_backoff_ms=8000"  # the first retry is due 4..8 s after the failure
    srv = soma(*redis_sets(redis, backoff))
    tid = post_task(srv, task="soma.fail", kwargs={"message": "once more", "retryable": True},
                    max_retries=1)["task_id"]
    wait_task(srv, tid, {"RETRY"}, timeout=10)
    wait_until(lambda: redis.client().hlen("unacked") == 1, 10, what="the worker to take and hold the retry")
    after = restart(soma, srv, redis, backoff)
    check_runs_after_restart(after, tid, srv, status="FAILURE")  # its second and last try ran
