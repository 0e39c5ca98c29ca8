"""One reply per conversation task, however often Redis delivers it (src/tasks/conversation.c,
migrations 0008 / postgres 0005). The relay publishes a task again when a crash of the store lost
its delete, and the workers' own dedupe (the result meta, the run-lock: src/queue/redis_consume.c)
only catches a copy while one of them exists. The reply is keyed on the task id in the store: a
copy that arrives after its task replied publishes, stores and asks the LLM nothing, and is acked."""

import json
import time

from celery_util import queued_messages, redis_sets
from e2e_util import history, post_message, store_query, wait_terminal, wait_until
from servers import RedisServer


def _run_then_copy(soma, redis, sets, ran):
    """A message whose task runs once, then the same Celery message delivered again after the
    worker's own dedupe forgot it. ran(srv, sid) waits for the first run's effects. Returns the
    node and the session id once the copy is settled."""
    r = redis.client()
    # 1. the gateway alone stores the message and relays its task; no worker takes it, so the
    # exact message the relay published can be kept
    gw = soma(*redis_sets(redis), *sets, role="gateway")
    out = post_message(gw, "answer me once")
    sid, tid = out["session_id"], out["task_id"]
    queued = wait_until(lambda: queued_messages(r), 15, what="the relayed task in Redis")
    assert sum(len(v) for v in queued.values()) == 1, queued
    (key, [raw]), = queued.items()
    assert json.loads(raw)["headers"]["id"] == tid, raw
    gw.stop()

    # 2. a full node runs it
    srv = soma(*redis_sets(redis), *sets)
    ran(srv, sid)
    meta = f"celery-task-meta-{tid}"
    wait_until(lambda: r.exists(meta), 15, what="the task's result meta")

    # 3. its result meta has expired and no run-lock is held (the worker removed it when it acked):
    # only the store can tell that this task ran. The same message arrives again.
    r.delete(meta)
    wait_until(lambda: not r.keys(f"soma-run-{tid}-*") and not r.hlen("unacked"), 15,
               what="the run-lock and the unacked entry to be gone before the copy")
    r.lpush(key, raw)
    # the copy is taken, acked (out of the list and the unacked set) and settled (its result)
    wait_until(lambda: r.exists(meta) and not queued_messages(r) and not r.hlen("unacked"), 30,
               what="the copy to be settled")
    time.sleep(0.5)  # a reply of the copy, had there been one, is committed with its ack
    assert json.loads(r.get(meta))["status"] == "SUCCESS", r.get(meta)
    return srv, sid


def _dropped(srv):
    srv.wait_log(lambda obj: "already has its reply" in json.dumps(obj), what="the copy's log line")


def test_a_copy_of_a_conversation_task_that_replied_is_a_noop(soma, llm):
    with RedisServer() as redis:
        srv, sid = _run_then_copy(soma, redis, (), lambda srv, sid: wait_terminal(srv, sid, timeout=30))
        types = [e["type"] for e in history(srv, sid, limit=50)]
        assert types.count("user") == 1 and types.count("assistant.final") == 1, types
        assert "assistant.error" not in types, types
        assert llm.stats()["requests"] == 1, llm.stats()  # the copy did not generate again
        _dropped(srv)


def test_a_copy_of_a_task_that_policy_denied_writes_nothing(soma, llm, tmp_path_factory):
    """The worker's re-check denies llm.invoke: one policy.denied event and one audit row, and the
    copy adds neither (its deny is not audited: the audit waits for the context read)."""
    from opa_fake import FakeOPA
    opa = FakeOPA(tmp_path_factory.mktemp("fake-opa"))
    try:
        opa.control(table=[
            {"input": {"action": "conversation.send"}, "result": True},
            {"input": {"action": "llm.invoke", "context": {"stream": True}},
             "result": {"allow": False, "reason": "no_models_on_sundays"}},
            {"input": {"action": "session.read"}, "result": True},
        ])
        sets = ("policy.engine=opa", f"policy.opa_url={opa.url}", "policy.opa_timeout_ms=2000")

        def audited(srv):
            return store_query(srv.data_dir, "SELECT count(*) FROM audit WHERE action = ?",
                               ("policy.denied:llm.invoke",))[0][0]

        def ran(srv, sid):
            wait_until(lambda: any(e["type"] == "policy.denied" for e in history(srv, sid)), 15,
                       what="the worker's policy.denied event")
            wait_until(lambda: audited(srv) == 1, 10, what="the deny's audit row")

        with RedisServer() as redis:
            srv, sid = _run_then_copy(soma, redis, sets, ran)
            types = [e["type"] for e in history(srv, sid, limit=50)]
            assert types == ["user", "policy.denied"], types
            assert audited(srv) == 1
            assert llm.stats()["requests"] == 0, llm.stats()
            _dropped(srv)
    finally:
        opa.stop()
