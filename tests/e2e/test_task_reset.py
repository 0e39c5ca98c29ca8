"""A session reset erases the conversation; no task of the erased turns may answer into the fresh
one (src/tasks/conversation.c, the store's context read and reply insert: the task names its
user message, `reply_to`, and the store refuses both once that message is gone).

One reply per task is otherwise kept by the outcome event stored with the task id
(test_task_once.py); a reset deletes that event too, so without the check a copy of a task
delivered after the reset (relayed again after a crash, a run-out reservation) would run its LLM
call and reply again. The same holds for a task that was still in Redis when the reset came (the
local queue deletes its queued tasks in the reset's transaction, Redis cannot), and for a reply
that a worker on another node finishes after the reset (one that did not hear the reset's cancel
notice: bus.driver=local on that node; with the Redis bus the notice stops it)."""

import json
import time

import pytest

from celery_util import queued_messages, redis_sets
from e2e_util import STORE, history, http, post_message, store_url, wait_terminal, wait_until
from servers import RedisServer


def _relayed(soma, redis, text):
    """A gateway alone stores a message and relays its task to Redis; returns (gateway, session
    id, task id, queue key, the raw Celery message). No worker has taken it."""
    r = redis.client()
    gw = soma(*redis_sets(redis), role="gateway")
    out = post_message(gw, text)
    queued = wait_until(lambda: queued_messages(r), 15, what="the relayed task in Redis")
    assert sum(len(v) for v in queued.values()) == 1, queued
    (key, [raw]), = queued.items()
    assert json.loads(raw)["headers"]["id"] == out["task_id"], raw
    return gw, out["session_id"], out["task_id"], key, raw


def _reset(srv, sid):
    r = http().post(f"{srv.url}/v1/sessions/{sid}/reset", timeout=5)
    assert r.status_code == 200 and r.json() == {"session_id": sid, "status": "reset"}, r.text
    assert history(srv, sid) == []


def _settled(r, tid):
    """Waits until the task's message is taken, acked and its result meta written."""
    meta = f"celery-task-meta-{tid}"
    wait_until(lambda: r.exists(meta) and not queued_messages(r) and not r.hlen("unacked"), 30,
               what="the task to be settled")
    time.sleep(0.5)  # a reply, had there been one, is committed before the ack
    assert json.loads(r.get(meta))["status"] == "SUCCESS", r.get(meta)


def _gone_logged(srv, tid):
    srv.wait_log(lambda o: tid in o.get("msg", "") and "nothing to answer" in o.get("msg", ""),
                 what="the dropped task's log line")


def _goes_on(srv, sid):
    """The reset conversation still works: a new message gets its one reply, alone in it."""
    post_message(srv, "fresh start", session_id=sid)
    evs = wait_terminal(srv, sid, timeout=30)
    assert [e["type"] for e in evs] == ["user", "assistant.final"], evs
    assert evs[0]["message"] == "fresh start", evs


def test_a_copy_arriving_after_a_reset_does_not_reply(soma, llm):
    with RedisServer() as redis:
        r = redis.client()
        gw, sid, tid, key, raw = _relayed(soma, redis, "answer me once")
        gw.stop()
        srv = soma(*redis_sets(redis))  # a full node runs the task once
        wait_terminal(srv, sid, timeout=30)
        meta = f"celery-task-meta-{tid}"
        wait_until(lambda: r.exists(meta), 15, what="the task's result meta")
        _reset(srv, sid)

        # the same message again, after the workers' own dedupe forgot it (see test_task_once.py)
        r.delete(meta)
        wait_until(lambda: not r.keys(f"soma-run-{tid}-*") and not r.hlen("unacked"), 15,
                   what="the run-lock and the unacked entry to be gone before the copy")
        r.lpush(key, raw)
        _settled(r, tid)
        assert history(srv, sid) == [], "the copy replied into the reset conversation"
        assert llm.stats()["requests"] == 1, llm.stats()  # the copy did not generate again
        _gone_logged(srv, tid)
        _goes_on(srv, sid)


def test_a_task_still_queued_when_its_message_was_reset_does_not_reply(soma, llm):
    with RedisServer() as redis:
        r = redis.client()
        gw, sid, tid, _, _ = _relayed(soma, redis, "erase me before you answer")
        _reset(gw, sid)  # the task is in Redis already: the reset cannot take it back
        gw.stop()
        srv = soma(*redis_sets(redis))
        _settled(r, tid)
        assert history(srv, sid) == [], "the task replied into the reset conversation"
        assert llm.stats()["requests"] == 0, llm.stats()
        _gone_logged(srv, tid)
        _goes_on(srv, sid)


@pytest.mark.skipif(STORE != "postgres", reason="two nodes share one store: PostgreSQL only")
@pytest.mark.parametrize("queue", ["local", "redis"])
@pytest.mark.parametrize("worker_bus", ["redis", "local"])
def test_a_reply_finished_on_another_node_after_a_reset_is_not_stored(soma, llm, tmp_path, queue, worker_bus):
    """The worker node is generating when the gateway node resets the session. With the Redis bus the
    reset's cancel notice reaches the worker, which stops the reply (the provider's stream is
    abandoned); a worker that does not hear it (bus.driver=local) finishes and commits, and the store
    refuses the reply. Either way nothing lands in the reset conversation."""
    with RedisServer() as redis:
        url = store_url(tmp_path / "gw")
        sets = (f"store.url={url}", f"queue.driver={queue}", f"redis.url={redis.url()}")
        gw = soma(*sets, "bus.driver=redis", role="gateway", data_dir=tmp_path / "gw")
        worker = soma(*sets, f"bus.driver={worker_bus}", role="worker", data_dir=tmp_path / "w")
        llm.control(chunks=10, delay_ms=300)  # ~3 s of reply
        out = post_message(gw, "take your time")
        sid = out["session_id"]
        wait_until(lambda: llm.stats()["requests"] == 1, 15, what="the worker's LLM call")
        _reset(gw, sid)

        def dropped():
            return any(sid in o.get("msg", "") and "dropping" in o.get("msg", "") for o in worker.logs_quiet())

        if worker_bus == "redis":
            wait_until(lambda: llm.stats()["aborted"] >= 1, 10, what="the worker's reply stopped by the notice")
        else:
            wait_until(lambda: dropped() or history(gw, sid), 30, what="the worker to finish its reply")
        time.sleep(0.5)
        assert history(gw, sid) == [], "the reply landed in the reset conversation"
        if worker_bus == "local":
            assert dropped()
        llm.control(chunks=12, delay_ms=0)
        _goes_on(gw, sid)
