"""A task's result on Redis is its tenant's only, however long the task ran, and a result with no
owner (sent by a Python producer) is not shown to another tenant.

The relay writes soma-task-owner-<id> at publish with queue.result_expires_s; a chain whose last
link ran after that had expired left a result with no owner, and GET /v1/tasks/{id} showed it to
any tenant that had the id. The worker now writes the owner into the result meta (soma_tenant),
and a result without an owner is shown only to an admin or the default tenant.
"""
import json

import httpx
import pytest
from celery_util import redis_sets
from e2e_util import create_key, wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def H(t):
    return {"Authorization": f"Bearer {t}"}


def status_of(srv, tid, token):
    r = httpx.get(f"{srv.url}/v1/tasks/{tid}", headers=H(token), timeout=5)
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text)


def test_late_chain_result_is_the_owner_tenants_only(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis, "queue.result_expires_s=4", "auth.key_refresh_ms=200"))
    a = create_key(srv.data_dir, tmp_path, "acme")
    b = create_key(srv.data_dir, tmp_path, "globex")
    wait_until(lambda: httpx.get(srv.url + "/v1/tasks/x", headers=H(b), timeout=5).status_code != 401, 5)
    # the first link outlives the owner key the relay wrote at publish (4 s)
    r = httpx.post(srv.url + "/v1/tasks/chain", headers=H(a), timeout=10, json={"tasks": [
        {"task": "soma.sleep", "args": [5]}, {"task": "soma.echo", "args": ["acme-secret"]}]})
    assert r.status_code == 202, r.text
    last = r.json()["task_id"]
    done = wait_until(lambda: (s := status_of(srv, last, a))[0] == 200 and s[1]["status"] == "SUCCESS" and s,
                      30, interval=0.05, what="acme's chain to finish")
    assert done[1]["result"]["args"][-1] == "acme-secret", done
    code, body = status_of(srv, last, b)
    assert code == 404, f"tenant globex reads acme's result: {body}"
    assert body["error"]["code"] == "not_found", body
    # the result says whose it is (the owner key written at publish is gone): in the meta itself,
    # a member Python's Celery ignores, so no write of its own per task
    c = redis.client()
    assert c.get(f"soma-task-owner-{last}") is None, "(the test's premise: the publish's owner key expired)"
    assert json.loads(c.get(f"celery-task-meta-{last}"))["soma_tenant"] == "acme"


def test_result_without_owner_is_not_shown_to_other_tenants(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis, "auth.key_refresh_ms=200"))
    b = create_key(srv.data_dir, tmp_path, "globex")
    d = create_key(srv.data_dir, tmp_path, "default")
    # both keys: a refresh between the two creations makes b valid before d
    wait_until(lambda: all(httpx.get(srv.url + "/v1/tasks/x", headers=H(k), timeout=5).status_code != 401
                           for k in (b, d)), 5)
    tid = "py-produced-1"
    meta = {"status": "SUCCESS", "result": {"secret": 1}, "traceback": None, "children": [],
            "date_done": "2030-01-01T00:00:00.000000", "task_id": tid}
    redis.client().set(f"celery-task-meta-{tid}", json.dumps(meta))  # as a Python worker stores it
    code, body = status_of(srv, tid, b)
    assert code == 404, f"tenant globex reads a result with no owner: {body}"
    code, body = status_of(srv, tid, d)
    assert code == 200 and body["result"] == {"secret": 1}, (code, body)
    # an id nobody knows is still PENDING, as Celery says
    code, body = status_of(srv, "no-such-task", b)
    assert code == 200 and body["status"] == "PENDING", (code, body)


def test_a_task_retrying_past_the_publish_owner_key_can_still_be_revoked_by_its_tenant(soma, redis, tmp_path):
    """The owner key written at publish lives queue.result_expires_s; a task still retrying after
    that is its tenant's by the soma_tenant of its RETRY result, for reading and for revoking."""
    srv = soma(*redis_sets(redis, "queue.result_expires_s=3", "queue.retry_backoff_ms=8000",
                           "auth.key_refresh_ms=200"))
    a = create_key(srv.data_dir, tmp_path, "acme")
    wait_until(lambda: httpx.get(srv.url + "/v1/tasks/x", headers=H(a), timeout=5).status_code != 401, 5)
    r = httpx.post(srv.url + "/v1/tasks", headers=H(a), timeout=10,
                   json={"task": "soma.fail", "kwargs": {"retryable": True}, "max_retries": 5})
    tid = r.json()["task_id"]
    c = redis.client()
    wait_until(lambda: not c.exists(f"soma-task-owner-{tid}") and status_of(srv, tid, a)[1].get("status") == "RETRY",
               15, interval=0.1, what="the publish's owner key to expire while the task retries")
    r = httpx.post(f"{srv.url}/v1/tasks/{tid}/revoke", headers=H(a), timeout=5)
    assert r.status_code == 202 and r.json()["status"] == "REVOKED", r.text
