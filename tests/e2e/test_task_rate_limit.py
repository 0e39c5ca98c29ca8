"""Per-task rate limits (queue.rate_limits): a task that waits for its token is held by its
worker, so the wait must neither run a task revoked or expired meanwhile (revoked / expires are
checked after the wait, as Celery does) nor let the reservation lapse (else a second worker
reserves, and runs, the same task). Both drivers; the local one on both stores."""

import time

import httpx

import pytest

from celery_util import get_task, post_task, redis_sets, wait_task
from e2e_util import find_samples, http, parse_metrics, wait_until
from servers import RedisServer


def runs(srv, outcome, task="soma.echo"):
    _, samples = parse_metrics(httpx.get(srv.url + "/metrics", timeout=5).text)
    return sum(v for _, v in find_samples(samples, "soma_tasks_total", task=task, outcome=outcome))


def revoke(srv, tid):
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


@pytest.mark.store_neutral
def test_redis_task_revoked_while_it_waits_for_its_token_does_not_run(soma):
    with RedisServer() as redis:
        srv = soma(*redis_sets(redis, "queue.rate_limits=soma.echo=20/m"))  # a token every 3 s
        first = post_task(srv, task="soma.echo", args=[1])["task_id"]
        wait_task(srv, first, ("SUCCESS",))  # the burst token
        second = post_task(srv, task="soma.echo", args=[2])["task_id"]
        time.sleep(0.5)  # delivered: its worker waits ~2.5 s more for the next token
        assert revoke(srv, second)["status"] == "REVOKED"
        wait_until(lambda: runs(srv, "revoked") == 1, 10, what="the worker to skip the revoked task")
        time.sleep(0.5)
        assert get_task(srv, second)["status"] == "REVOKED"
        assert runs(srv, "success") == 1


def test_task_that_expires_while_it_waits_for_its_token_does_not_run(soma):
    srv = soma("queue.rate_limits=soma.echo=20/m")
    first = post_task(srv, task="soma.echo", args=[1])["task_id"]
    wait_task(srv, first, ("SUCCESS",))  # the burst token: the next is due in 3 s
    second = post_task(srv, task="soma.echo", args=[2], expires=1)["task_id"]
    wait_until(lambda: runs(srv, "revoked") == 1, 10, what="the worker to skip the expired task")
    time.sleep(3)  # past its token: the old build ran it then
    assert runs(srv, "success") == 1
    got = get_task(srv, second)
    assert got["status"] == "REVOKED" and got["error"] == "expired" and not got["dead_letter"], got


def test_a_long_wait_for_tokens_keeps_each_reservation(soma):
    """Six tasks at 30/m wait up to 10 s for their tokens on four workers, twice the visibility
    timeout: each runs once (the old build ran some twice, and the second outcome was refused)."""
    srv = soma("queue.rate_limits=soma.echo=30/m", "queue.visibility_timeout_s=5", "queue.celery.concurrency=4")
    ids = [post_task(srv, task="soma.echo", args=[i])["task_id"] for i in range(6)]
    for tid in ids:
        wait_task(srv, tid, ("SUCCESS",), timeout=30)
    time.sleep(6)  # a reservation that lapsed meanwhile would have been reserved and run again by now
    assert runs(srv, "success") == 6
    assert "could not record the outcome" not in srv.log_text()
