"""A caller-chosen task id (POST /v1/tasks task_id) belongs to the first tenant that used it.

On the redis driver the store's row is gone once the relay published it, so another tenant's POST
with the same id was taken (202), the relay moved soma-task-owner-<id> to that tenant, and its
revoke revoked the first tenant's task; reusing the id of a finished task answered 202 PENDING for
a task that never ran. On the local queue the answer was 409 "the task already exists", telling
the caller that someone uses the id. Now both answer 409 task_id_taken, the same whether the id is
another tenant's or the caller's own. And an idempotency_key sent with a task_id deduplicates:
"duplicate" is whether the key was already held, not whether the ids differ.
"""
import time

import pytest
from celery_util import redis_sets, wait_task
from e2e_util import bearer, create_key, http, wait_until
from servers import RedisServer

TAKEN = {"code": "task_id_taken", "message": "this task id is in use; choose another"}


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def post(srv, key, **body):
    return http().post(srv.url + "/v1/tasks", json=body, headers=bearer(key), timeout=10)


def get(srv, key, tid):
    return http().get(f"{srv.url}/v1/tasks/{tid}", headers=bearer(key), timeout=10)


def two_tenants(srv, tmp_path):
    ka = create_key(srv.data_dir, tmp_path, "tenant-a")
    kb = create_key(srv.data_dir, tmp_path, "tenant-b")
    wait_until(lambda: all(get(srv, k, "none").status_code != 401 for k in (ka, kb)), 5, what="the keys to load")
    return ka, kb


def taken(r):
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert {"code": err["code"], "message": err["message"]} == TAKEN, r.text


@pytest.mark.store_neutral
def test_another_tenant_cannot_take_or_revoke_a_waiting_task_id(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis, "auth.key_refresh_ms=200"))
    ka, kb = two_tenants(srv, tmp_path)
    r = post(srv, ka, task="soma.echo", args=["A"], task_id="a-later", countdown=4)
    assert r.status_code == 202, r.text
    time.sleep(1)  # relayed: the store's row is gone
    taken(post(srv, kb, task="soma.echo", args=["B"], task_id="a-later", countdown=3600))
    r = http().post(f"{srv.url}/v1/tasks/a-later/revoke", headers=bearer(kb), timeout=10)
    assert r.status_code == 404, r.text
    assert wait_task_as(srv, ka, "a-later", "SUCCESS")["result"]["args"] == ["A"]
    assert get(srv, kb, "a-later").status_code == 404


def wait_task_as(srv, key, tid, status, timeout=20):
    return wait_until(lambda: (r := get(srv, key, tid)).status_code == 200 and r.json()["status"] == status and r.json(),
                      timeout, interval=0.1, what=f"task {tid} to be {status}")


@pytest.mark.store_neutral
def test_a_finished_task_id_is_not_reused_by_anyone(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis, "auth.key_refresh_ms=200"))
    ka, kb = two_tenants(srv, tmp_path)
    assert post(srv, ka, task="soma.echo", args=["A-secret"], task_id="nightly").status_code == 202
    wait_task_as(srv, ka, "nightly", "SUCCESS")
    taken(post(srv, kb, task="soma.echo", args=["B"], task_id="nightly"))  # another tenant's
    taken(post(srv, ka, task="soma.echo", args=["A2"], task_id="nightly"))  # the caller's own: the same answer
    time.sleep(1)
    assert get(srv, ka, "nightly").json()["result"]["args"] == ["A-secret"]
    assert get(srv, kb, "nightly").status_code == 404
    # a fresh id is still anyone's, and B's own id is then refused to A
    assert post(srv, kb, task="soma.echo", args=["B"], task_id="b-own").status_code == 202
    taken(post(srv, ka, task="soma.echo", task_id="b-own"))
    assert wait_task_as(srv, kb, "b-own", "SUCCESS")["result"]["args"] == ["B"]


@pytest.mark.store_neutral
def test_an_idempotency_key_with_a_task_id_publishes_once(soma, redis):
    srv = soma(*redis_sets(redis))
    body = {"task": "soma.echo", "args": [1], "task_id": "order-42", "idempotency_key": "k-42", "countdown": 1}
    answers = [post(srv, None, **body) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert answers[0].json() == {"task_id": "order-42", "status": "PENDING"}
    for a in answers[1:]:
        assert a.json() == {"task_id": "order-42", "status": "PENDING", "duplicate": True}, a.text
    assert wait_task(srv, "order-42", {"SUCCESS"})["result"]["args"] == [1]
    # the same key with another id is a duplicate of the first; the same id with another key is taken
    r = post(srv, None, task="soma.echo", task_id="order-43", idempotency_key="k-42")
    assert r.json() == {"task_id": "order-42", "status": "PENDING", "duplicate": True}, r.text
    taken(post(srv, None, task="soma.echo", task_id="order-42", idempotency_key="k-99"))
    # k-99 was released with the refusal: it publishes with a free id
    r = post(srv, None, task="soma.echo", task_id="order-44", idempotency_key="k-99")
    assert r.json() == {"task_id": "order-44", "status": "PENDING"}, r.text


def test_local_queue_answers_taken_without_saying_whose(soma, tmp_path):
    srv = soma("auth.key_refresh_ms=200")
    ka, kb = two_tenants(srv, tmp_path)
    assert post(srv, ka, task="soma.echo", args=["A"], task_id="shared-name").status_code == 202
    taken(post(srv, kb, task="soma.echo", args=["B"], task_id="shared-name"))
    taken(post(srv, ka, task="soma.echo", args=["A"], task_id="shared-name"))
    assert wait_task_as(srv, ka, "shared-name", "SUCCESS")["result"]["args"] == ["A"]
    assert get(srv, kb, "shared-name").status_code == 404
    # a task still waiting in the queue: the same answer
    assert post(srv, ka, task="soma.echo", args=["A"], task_id="waiting", countdown=30).status_code == 202
    taken(post(srv, kb, task="soma.echo", args=["B"], task_id="waiting"))
    taken(post(srv, ka, task="soma.echo", args=["A"], task_id="waiting"))
