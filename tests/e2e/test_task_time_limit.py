"""time_limit and soft_time_limit of POST /v1/tasks, on both drivers (the local one on both
stores): a task past its soft limit is asked to stop and ends FAILURE (Celery's
SoftTimeLimitExceeded), past its hard limit likewise (TimeLimitExceeded); a task within its limits
succeeds. A limit counts the run, not the wait for a rate-limit token."""

import time

import pytest

from celery_util import post_task, redis_sets, wait_task
from servers import RedisServer


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.store_neutral)])
def driver_sets(request):
    if request.param == "local":
        yield ()
        return
    with RedisServer() as redis:
        yield redis_sets(redis)


def finished(srv, tid, timeout=20):
    return wait_task(srv, tid, ("SUCCESS", "FAILURE"), timeout=timeout)


def test_soft_and_hard_time_limits_stop_the_task(soma, driver_sets):
    srv = soma(*driver_sets)
    t0 = time.monotonic()
    soft = post_task(srv, task="soma.sleep", args=[3], time_limit=1, soft_time_limit=0.5)["task_id"]
    hard = post_task(srv, task="soma.sleep", args=[3], time_limit=0.5)["task_id"]
    ok = post_task(srv, task="soma.sleep", args=[0.2], time_limit=5, soft_time_limit=4)["task_id"]
    got = finished(srv, soft)
    assert got["status"] == "FAILURE" and "soft time limit exceeded" in got["error"], got
    got = finished(srv, hard)
    assert got["status"] == "FAILURE" and "hard time limit exceeded" in got["error"], got
    assert time.monotonic() - t0 < 2.5  # stopped, not slept out (3 s)
    got = finished(srv, ok)
    assert got["status"] == "SUCCESS" and got["result"] == {"slept": 0.2}, got


def test_time_limit_counts_the_run_not_the_wait_for_a_rate_limit_token(soma, driver_sets):
    srv = soma(*driver_sets, "queue.rate_limits=soma.sleep=20/m")  # a token every 3 s
    first = post_task(srv, task="soma.sleep", args=[0.1])["task_id"]
    assert finished(srv, first)["status"] == "SUCCESS"  # the burst token
    tid = post_task(srv, task="soma.sleep", args=[0.3], time_limit=2)["task_id"]  # waits ~3 s, runs 0.3 s
    got = finished(srv, tid)
    assert got["status"] == "SUCCESS", got
