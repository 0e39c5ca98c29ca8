"""A task's failure text cut inside a multi-byte character (soma.fail with a long message of
'é', over the 512 bytes an error keeps) is stored as valid UTF-8: the task reads back (before, its
row could not be read: GET /v1/tasks/{id} answered 500) and its dead letter is listed (before, it
was dead-lettered but invisible). Both queue drivers."""

import time

import pytest

from e2e_util import http
from servers import RedisServer

MESSAGE = "é" * 300  # 600 bytes: cut at 511, inside a character


@pytest.fixture(params=["local", "redis"])
def queue_sets(request):
    if request.param == "local":
        yield ("queue.retry_backoff_ms=20",)
    else:
        with RedisServer() as r:
            yield ("queue.driver=redis", f"redis.url={r.url()}", "queue.retry_backoff_ms=20")


def publish(srv, **body):
    r = http().post(srv.url + "/v1/tasks", json=body, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["task_id"]


def final(srv, tid, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        r = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5)
        assert r.status_code == 200, r.text  # every read answers, never 500
        if r.json()["status"] in ("FAILURE", "SUCCESS", "REVOKED"):
            return r.json()
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.05)


@pytest.mark.parametrize("retryable", [False, True])
def test_a_failure_text_cut_inside_a_character_reads_back(soma, queue_sets, retryable):
    srv = soma(*queue_sets)
    tid = publish(srv, task="soma.fail", kwargs={"message": MESSAGE, "retryable": retryable}, max_retries=1)
    t = final(srv, tid)
    assert t["status"] == "FAILURE", t
    assert "éééé" in t["error"] and "\ufffd" not in t["error"], t["error"][:80]
    dead = http().get(srv.url + "/v1/dead-letters", timeout=5)
    assert dead.status_code == 200, dead.text
    assert tid in [d.get("task_id") or d.get("id") for d in dead.json()["items"]], dead.json()
