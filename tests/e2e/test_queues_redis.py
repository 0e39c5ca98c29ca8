"""GET /v1/queues on queue.driver=redis: the messages live in Redis, so depth is the queue's band
lists (plus outbox rows not yet relayed), reserved is its entries in kombu's `unacked`, and the
consumers are the cluster's, from every node's heartbeat."""

import time

import pytest

from celery_util import post_task, redis_sets
from e2e_util import check_envelope, http, wait_until
from servers import RedisServer


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def queues(srv):
    r = http().get(srv.url + "/v1/queues", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "cluster", body
    return {q["name"]: q for q in body["queues"]}


def test_depth_and_reserved_come_from_redis_and_consumers_from_the_cluster(soma, redis):
    srv = soma(*redis_sets(redis, "celery.heartbeat_s=1", "queue.routes=soma.echo=parked"))
    # nobody consumes "parked" (a routing target this node does not serve): its messages wait
    for i in range(5):
        post_task(srv, task="soma.echo")
    post_task(srv, task="soma.noop", queue="parked", priority=9)  # a routes target is a queue one may name
    wait_until(lambda: queues(srv).get("parked", {}).get("depth") == 6, 10, what="6 messages in parked")
    c = redis.client()
    # (depth may count a row the relay is still pushing: the lists hold all six a moment later)
    wait_until(lambda: sum(c.llen(k) for k in c.keys("parked*")) == 6, 10, what="6 messages in parked's lists")
    assert len(c.keys("parked*")) == 2
    # a task due in 30 s is delivered and held (unacked, as Celery holds an eta): reserved
    post_task(srv, task="soma.noop", countdown=30)
    wait_until(lambda: queues(srv)["celery"]["reserved"] == 1, 10, what="the held task to be reserved")
    q = wait_until(lambda: (q := queues(srv)["celery"])["consumers"] >= 1 and q, 10,
                   what="the node's heartbeat to count its consumers")
    assert q["depth"] == 0 and q["dead"] == 0 and isinstance(q["rate_1m"], float), q
    assert queues(srv)["parked"]["consumers"] == 0

    redis.stop()
    time.sleep(0.3)
    r = http().get(srv.url + "/v1/queues", timeout=10)
    check_envelope(r, 503, "queue_unavailable")
    assert r.headers.get("Retry-After") == "1"
