"""POST /v1/tasks with an idempotency_key (queue.driver=redis) while the PostgreSQL store is down:
the key is taken on Redis before the publish, and a publish the store refuses releases it, so
the client's retry once PostgreSQL is back publishes the task instead of answering "duplicate"
with the id of a task that was never stored.

Starts its own PostgreSQL (stopped mid-test); runs in the postgres pass only."""

import httpx
import pytest

from celery_util import redis_sets, wait_task
from e2e_util import wait_until
from servers import PostgresServer, RedisServer

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pg():
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def health(srv):
    try:
        return httpx.get(srv.url + "/v1/health", timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_a_publish_refused_by_the_store_releases_its_idempotency_key(pg, redis, soma):
    srv = soma(f"store.url={pg.new_database('idem')}", *redis_sets(redis))
    body = {"task": "soma.echo", "args": ["once"], "idempotency_key": "order-17"}
    pg.stop()
    wait_until(lambda: health(srv) == 503, 10, what="/v1/health to report the store down")
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=30)
    assert r.status_code == 503, r.text
    pg.start()
    wait_until(lambda: health(srv) == 200, 20, what="/v1/health to recover after PostgreSQL came back")
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=10)
    assert r.status_code == 202 and not r.json().get("duplicate"), r.text
    tid = r.json()["task_id"]
    assert wait_task(srv, tid, {"SUCCESS"}, timeout=20)["result"]["args"] == ["once"]
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=10)  # the key holds now
    assert r.status_code == 202 and r.json() == {"task_id": tid, "status": "PENDING", "duplicate": True}, r.text


def test_a_publish_refused_by_the_store_releases_its_task_id(pg, redis, soma):
    """The caller's task_id is claimed on Redis before the publish; a refused publish frees it."""
    srv = soma(f"store.url={pg.new_database('tid')}", *redis_sets(redis))
    body = {"task": "soma.echo", "args": ["mine"], "task_id": "report-7"}
    pg.stop()
    wait_until(lambda: health(srv) == 503, 10, what="/v1/health to report the store down")
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=30)
    assert r.status_code == 503, r.text
    pg.start()
    wait_until(lambda: health(srv) == 200, 20, what="/v1/health to recover after PostgreSQL came back")
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=10)
    assert r.status_code == 202 and r.json() == {"task_id": "report-7", "status": "PENDING"}, r.text
    assert wait_task(srv, "report-7", {"SUCCESS"}, timeout=20)["result"]["args"] == ["mine"]
    r = httpx.post(srv.url + "/v1/tasks", json=body, timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "task_id_taken", r.text
