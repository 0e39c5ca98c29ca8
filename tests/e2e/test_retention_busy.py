"""Retention and a reply still running (src/store/sqlite_retention.c, pg_retention.c).

A session's updated_ms moves only when an event is stored, so a reply that generated for longer
than retention.sessions_idle_s (long tool loops, slow providers) left its session looking idle and
the sweep deleted it midway: the user's message and the reply gone (history 404). Now a session
with a task queued or reserved (its reply still to come) is never swept, however old its last
event; once the reply is stored the session ages as any other. On queue.driver=redis a published
task has no row: a reply running on the sweeping node's workers keeps its session too. Ages are made by moving the
session's timestamp back in the store. Runs on both stores."""

import time

from celery_util import redis_sets
from e2e_util import history, http, post_message, store_exec, store_query, wait_terminal, wait_until
from servers import RedisServer

DAY_MS = 86400 * 1000


def _age(srv, sid, days=2):
    store_exec(srv.data_dir, f"UPDATE sessions SET updated_ms = updated_ms - {days * DAY_MS} WHERE id = '{sid}'")


def test_a_session_whose_reply_is_running_is_not_swept(soma, llm):
    srv = soma("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1")
    llm.control(delay_ms=500, chunks=12)  # a reply of about 6 s
    out = post_message(srv, "answer me slowly", session_id="ret-busy")
    wait_until(lambda: store_query(srv.data_dir, "SELECT 1 FROM tasks WHERE session_id = 'ret-busy'"), 5,
               what="the reply's task")
    _age(srv, "ret-busy")  # idle for two days by its last event, but its reply is generating
    time.sleep(3)  # three sweeps
    r = http().get(f"{srv.url}/v1/sessions/ret-busy/history", timeout=5)
    assert r.status_code == 200, f"the session was swept while its reply ran: {r.status_code} {r.text}"
    evs = wait_terminal(srv, "ret-busy", timeout=20)
    assert out["event_id"] in [e.get("event_id") for e in evs], "the user's message is gone"
    assert [e["type"] for e in evs if e["type"].startswith("assistant.")][-1] == "assistant.final", evs
    # the reply stored, nothing runs for it: it ages and goes as any other session
    wait_until(lambda: not store_query(srv.data_dir, "SELECT 1 FROM tasks WHERE session_id = 'ret-busy' "
                                       "AND state IN ('queued', 'reserved', 'relaying')"), 10, what="the task's end")
    _age(srv, "ret-busy")
    wait_until(lambda: http().get(f"{srv.url}/v1/sessions/ret-busy/history", timeout=5).status_code == 404, 10,
               what="the idle session swept once its reply was stored")


def test_a_queued_task_keeps_its_session_too(soma):
    # a task queued for the session (here: on a queue no worker serves) is a reply still to come
    srv = soma("retention.sessions_idle_s=86400", "retention.sweep_interval_s=1")
    post_message(srv, "first", session_id="ret-queued")
    wait_terminal(srv, "ret-queued")
    now = int(time.time() * 1000)
    store_exec(srv.data_dir, "INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, "
               f"available_ms, created_ms, updated_ms) VALUES ('ret-q-task', 'zz-nobody', 'soma.echo', 'default', "
               f"'ret-queued', '{{}}', 'queued', {now + DAY_MS}, {now}, {now})")
    _age(srv, "ret-queued")
    time.sleep(3)
    assert history(srv, "ret-queued"), "the session with a queued task was swept"
    store_exec(srv.data_dir, "DELETE FROM tasks WHERE id = 'ret-q-task'")
    wait_until(lambda: http().get(f"{srv.url}/v1/sessions/ret-queued/history", timeout=5).status_code == 404, 10,
               what="the session swept once no task is left for it")


def test_on_redis_a_reply_running_on_this_node_is_not_swept(soma, llm):
    # queue.driver=redis: the published task has left the store (no row), it runs on this node
    with RedisServer() as redis:
        srv = soma(*redis_sets(redis, "retention.sessions_idle_s=86400", "retention.sweep_interval_s=1"))
        llm.control(delay_ms=500, chunks=12)  # a reply of about 6 s
        out = post_message(srv, "answer me slowly", session_id="ret-busy-redis")
        wait_until(lambda: not store_query(srv.data_dir, "SELECT 1 FROM tasks WHERE session_id = 'ret-busy-redis'"),
                   5, what="the task relayed to Redis")
        time.sleep(0.5)  # (a worker of this node takes it)
        _age(srv, "ret-busy-redis")
        time.sleep(3)  # three sweeps
        r = http().get(f"{srv.url}/v1/sessions/ret-busy-redis/history", timeout=5)
        assert r.status_code == 200, f"the session was swept while its reply ran: {r.status_code} {r.text}"
        evs = wait_terminal(srv, "ret-busy-redis", timeout=20)
        assert out["event_id"] in [e.get("event_id") for e in evs], "the user's message is gone"
        _age(srv, "ret-busy-redis")
        wait_until(lambda: http().get(f"{srv.url}/v1/sessions/ret-busy-redis/history", timeout=5).status_code == 404,
                   10, what="the idle session swept once its reply was stored")
        srv.stop()
