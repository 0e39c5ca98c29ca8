"""A dead letter of the redis queue keeps the task's canvas and options: requeued, the message
carries the rest of its chain and its time limits again (a requeued chain link used to run alone,
and its chain never continued)."""

import base64
import json

import celery
import pytest

from celery_util import load_app, redis_sets, write_app
from e2e_util import http, store_exec, wait_until
from servers import RedisServer

pytestmark = pytest.mark.store_neutral


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def test_a_requeued_dead_chain_link_keeps_its_chain_and_time_limits(soma, redis, tmp_path):
    srv = soma(*redis_sets(redis))
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    first = app.signature("soma.fail", kwargs={"message": "dead"}, time_limit=30, soft_time_limit=20)
    celery.chain(first, app.signature("soma.echo", args=["next"])).apply_async()
    dead = wait_until(lambda: http().get(srv.url + "/v1/dead-letters").json()["items"], 20,
                      what="the first link's dead letter")
    tid = dead[0]["task_id"]
    srv.stop()
    # a gateway only: the requeued message stays in Redis to be read here
    gw = soma(*redis_sets(redis), role="gateway", data_dir=srv.data_dir)
    assert http().post(f"{gw.url}/v1/dead-letters/{tid}/requeue").status_code == 200
    c = redis.client()
    wait_until(lambda: c.llen("celery") == 1, 15, what="the requeued message in Redis")
    env = json.loads(c.lindex("celery", 0))
    args, kwargs, embed = json.loads(base64.b64decode(env["body"]))
    assert env["headers"]["id"] == tid and kwargs == {"message": "dead"}, env
    assert [s["task"] for s in (embed or {}).get("chain") or []] == ["soma.echo"], embed
    assert env["headers"]["timelimit"] == [30, 20], env["headers"]
    assert env["headers"]["root_id"] == tid, env["headers"]


def test_a_requeued_dead_chain_link_that_succeeds_runs_the_rest_of_its_chain(soma, redis, tmp_path):
    """The first link's failure wrote FAILURE for the later links (as Celery does); a requeue that
    succeeds must clear those, else the worker takes the next link for a copy and the chain's last
    result stays FAILURE for good."""
    srv = soma(*redis_sets(redis))
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    r = celery.chain(app.signature("soma.fail", args=["x"], kwargs={"message": "transient"}),
                     app.signature("soma.echo", args=["next"])).apply_async()
    dead = wait_until(lambda: http().get(srv.url + "/v1/dead-letters").json()["items"], 20,
                      what="the first link's dead letter")
    tid = dead[0]["task_id"]
    c = redis.client()
    assert b"FAILURE" in c.get(f"celery-task-meta-{r.id}"), "the later link failed with the first"
    # the operator fixed what made the first link fail (here: the row now names a task that succeeds)
    store_exec(srv.data_dir, f"UPDATE tasks SET name = 'soma.echo' WHERE id = '{tid}'")
    assert http().post(f"{srv.url}/v1/dead-letters/{tid}/requeue").status_code == 200
    wait_until(lambda: b"SUCCESS" in (c.get(f"celery-task-meta-{r.id}") or b""), 20,
               what="the chain's last link to run after the requeue")
    body = http().get(f"{srv.url}/v1/tasks/{r.id}").json()
    assert body["status"] == "SUCCESS" and body["result"]["args"][-1] == "next", body


def test_a_requeued_dead_letter_keeps_arguments_holding_a_nul(soma, redis, tmp_path):
    """Python writes "a\\x00b" as "a\\u0000b", which our worker now reads; the dead letter's row kept
    it, but was read back without NUL allowed: the requeued message lost its args, kwargs and chain."""
    srv = soma(*redis_sets(redis))
    write_app(tmp_path, redis.url())
    app = load_app(tmp_path)
    celery.chain(app.signature("soma.fail", args=["a\x00b"], kwargs={"message": "dead"}),
                 app.signature("soma.echo", args=["next"])).apply_async()
    dead = wait_until(lambda: http().get(srv.url + "/v1/dead-letters").json()["items"], 20,
                      what="the first link's dead letter")
    tid = dead[0]["task_id"]
    srv.stop()
    gw = soma(*redis_sets(redis), role="gateway", data_dir=srv.data_dir)
    assert http().post(f"{gw.url}/v1/dead-letters/{tid}/requeue").status_code == 200
    c = redis.client()
    wait_until(lambda: c.llen("celery") == 1, 15, what="the requeued message in Redis")
    args, kwargs, embed = json.loads(base64.b64decode(json.loads(c.lindex("celery", 0))["body"]))
    assert args == ["a\x00b"] and kwargs == {"message": "dead"}, (args, kwargs)
    assert [s["task"] for s in (embed or {}).get("chain") or []] == ["soma.echo"], embed
