"""A canvas task delivered again after its result was stored: its follow-ups still go out, once.

The case: a worker wrote a chain link's (or chord member's) result meta, then stopped before Redis
took its follow-ups (the next link, the chord join), so the message came back (visibility restore,
or a relay's second publish). Our worker's dedupe sees the stored result and does not run the task
again; it must still write the follow-ups from that result, and for a copy whose follow-ups did
go out, write nothing twice. The state is built directly: Python Celery publishes the canvas while
no worker runs, the test stores the first task's result as a worker would have, then our worker
starts. The stored result differs from what the task would return, so a re-run would show."""

import base64
import datetime
import json

import celery
import pytest

from celery_util import load_app, redis_sets, write_app
from e2e_util import wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def make_app(tmp_path, redis):
    write_app(tmp_path, redis.url())
    return load_app(tmp_path)


def store_result(redis, task_id, result):
    meta = {"status": "SUCCESS", "result": result, "traceback": None, "children": [],
            "date_done": datetime.datetime.utcnow().isoformat(), "task_id": task_id}
    redis.client().set(f"celery-task-meta-{task_id}", json.dumps(meta))


def messages(redis, queue):
    """The [args, kwargs, embed] bodies of the messages waiting in queue, with their task ids."""
    out = []
    for raw in redis.client().lrange(queue, 0, -1):
        env = json.loads(raw)
        out.append((env["headers"]["id"], json.loads(base64.b64decode(env["body"]))))
    return out


def drained(redis):
    c = redis.client()
    wait_until(lambda: c.llen("celery") == 0 and c.hlen("unacked") == 0, 30, interval=0.1,
               what="our worker to take and ack every message")


def test_a_chain_link_with_a_stored_result_sends_the_next_link_from_it_once(soma, redis, tmp_path):
    app = make_app(tmp_path, redis)
    # the second link waits on a queue nobody consumes, where the test can count it
    c = celery.chain(app.signature("soma.echo", args=[1]),
                     app.signature("soma.echo", args=[2], options={"queue": "parked"}))
    r = c.apply_async()
    first = r.parent.id
    raw = redis.client().lindex("celery", 0)
    assert raw and json.loads(raw)["headers"]["id"] == first
    store_result(redis, first, "stored")  # its worker wrote this, then stopped
    soma(*redis_sets(redis))
    wait_until(lambda: redis.client().llen("parked") == 1, 30, what="the next link to be sent")
    drained(redis)
    [(tid, body)] = messages(redis, "parked")
    assert tid == r.id
    assert body[0] == ["stored", 2], body  # from the stored result: the first link did not run again
    # the same message once more (a copy whose follow-ups went out): nothing is sent twice
    redis.client().lpush("celery", raw)
    drained(redis)
    assert [t for t, _ in messages(redis, "parked")] == [r.id]


def test_a_chord_member_with_a_stored_result_still_joins_and_fires_the_body(soma, redis, tmp_path):
    app = make_app(tmp_path, redis)
    r = celery.chord([app.signature("soma.echo", args=[0]), app.signature("soma.echo", args=[1])],
                     app.signature("soma.echo", args=["body"])).apply_async()
    first = [tid for tid, body in messages(redis, "celery") if body[0] == [0]]
    assert len(first) == 1, messages(redis, "celery")
    store_result(redis, first[0], "stored")
    soma(*redis_sets(redis))
    assert r.get(timeout=30) == {"args": [["stored", {"args": [1], "kwargs": {}}], "body"], "kwargs": {}}
    drained(redis)
