"""A revoke with terminate stops a task running on our worker (queue.driver=redis), as Celery's
worker kills the child running it: `app.control.revoke(id, terminate=True)`,
`AsyncResult.revoke(terminate=True)` and `celery control terminate SIGTERM <id>`. Our tasks run on
threads, so the stop is cooperative (the task's cancel flag; soma.sleep stops sleeping), and the
task ends as Celery's worker ends a terminated request (worker/request.py _announce_revoked):
result REVOKED (TaskRevokedError('terminated')), task-revoked with terminated=True, signum, and
expired=False; the reply of the control is Celery 5.2's ('terminate: <ids>', or 'terminate: tasks
unknown' when none runs here). `inspect reserved` lists the messages a worker thread holds
prefetched behind a running task, and `inspect query_task` answers them 'reserved'. Before: the
task slept on to its end (30 s) and SUCCESS.
A terminated chat reply (conversation.process) keeps the text so far as its `cancelled` final and
still ends REVOKED; before, its commit of that final counted as its ack: SUCCESS, no task-revoked."""

import json
import subprocess
import time

import pytest

from e2e_util import clean_env, history, http, open_stream, post_message, wait_terminal, wait_until
from test_celery_control import Capture, app, redis_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.store_neutral


@pytest.fixture
def node(soma, redis_server, tmp_path):
    redis_server.client().flushdb()

    def start(*sets):
        return soma("queue.driver=redis", f"redis.url={redis_server.url()}", "celery.nodename=soma@e2e-t",
                    "queue.celery.concurrency=1", *sets, data_dir=tmp_path / "soma-e2e-t")
    return start


def running(app, task_id):
    got = app.control.inspect(timeout=1, destination=["soma@e2e-t"]).active() or {}
    return any(t["id"] == task_id for t in got.get("soma@e2e-t", []))


def test_revoke_terminate_stops_a_running_task(node, app):
    cap = Capture(app)
    node("celery.events=true")
    try:
        res = app.send_task("soma.sleep", args=[30])
        wait_until(lambda: running(app, res.id), 10, interval=0.2, what="the sleep to run")
        t0 = time.monotonic()
        got = app.control.revoke(res.id, terminate=True, reply=True, timeout=3, destination=["soma@e2e-t"])
        assert got == [{"soma@e2e-t": {"ok": f"terminate: {res.id}"}}], got
        wait_until(lambda: res.state == "REVOKED", 5, interval=0.1, what="REVOKED")
        assert time.monotonic() - t0 < 5
        assert type(res.result).__name__ == "TaskRevokedError" and "terminated" in str(res.result), res.result
        wait_until(lambda: cap.of("task-revoked", uuid=res.id), 5, what="task-revoked")
        (rv,) = cap.of("task-revoked", uuid=res.id)
        assert (rv["terminated"], rv["signum"], rv["expired"]) == (True, 15, False), rv
        assert not cap.of("task-succeeded", uuid=res.id) and not cap.of("task-failed", uuid=res.id)
        assert cap.state.tasks[res.id].state == "REVOKED"
        # the one worker thread of the queue is free again
        nxt = app.send_task("soma.echo", args=[1])
        assert nxt.get(timeout=5) == {"args": [1], "kwargs": {}}
        assert res.id in app.control.inspect(timeout=2, destination=["soma@e2e-t"]).revoked()["soma@e2e-t"]
        time.sleep(0.5)
        assert res.state == "REVOKED"  # not overwritten by the sleep's own outcome
    finally:
        cap.close()


def test_async_result_revoke_and_cli_terminate(node, app, redis_server):
    node()
    a = app.send_task("soma.sleep", args=[30])
    wait_until(lambda: running(app, a.id), 10, interval=0.2, what="the sleep to run")
    a.revoke(terminate=True, signal="SIGKILL")
    wait_until(lambda: a.state == "REVOKED", 5, interval=0.1, what="REVOKED after AsyncResult.revoke")
    b = app.send_task("soma.sleep", args=[30])
    wait_until(lambda: running(app, b.id), 10, interval=0.2, what="the second sleep to run")
    cp = subprocess.run(["/usr/bin/python3", "-m", "celery", "-b", redis_server.url(), "control", "terminate",
                         "SIGTERM", b.id, "--timeout", "3"], capture_output=True, text=True, timeout=30,
                        env=clean_env())
    assert cp.returncode == 0 and f"terminate: {b.id}" in cp.stdout, cp.stdout + cp.stderr
    wait_until(lambda: b.state == "REVOKED", 5, interval=0.1, what="REVOKED after control terminate")
    # nothing of that id runs here: Celery's answer, and the id is still flagged revoked
    got = app.control.revoke("not-running-here", terminate=True, reply=True, timeout=3,
                             destination=["soma@e2e-t"])
    assert got == [{"soma@e2e-t": {"ok": "terminate: tasks unknown"}}], got
    assert "not-running-here" in app.control.inspect(timeout=2).revoked()["soma@e2e-t"]
    # a plain revoke of a running task still lets it run (Celery: it is only flagged; the
    # text as Celery 5.3 words it, as before)
    c = app.send_task("soma.sleep", args=[1.5])
    wait_until(lambda: running(app, c.id), 10, interval=0.2, what="the third sleep to run")
    got = app.control.revoke(c.id, reply=True, timeout=3, destination=["soma@e2e-t"])
    assert got == [{"soma@e2e-t": {"ok": f"tasks {{'{c.id}'}} flagged as revoked"}}], got
    assert c.get(timeout=10) == {"slept": 1.5}


def test_inspect_reserved_lists_prefetched_messages(node, app):
    """A worker thread takes a batch of messages at once (queue.prefetch): those behind its running
    task are delivered to the node and not started, what `inspect reserved` lists (Celery 5.2:
    Request.info(), not started, not acknowledged). It answered []."""
    # sent before the node starts: its first pop takes both, the sleep first
    first = app.send_task("soma.sleep", args=[30])
    behind = app.send_task("soma.echo", args=[5], kwargs={"k": 1})
    node()
    wait_until(lambda: running(app, first.id), 10, interval=0.2, what="the sleep to run")
    i = app.control.inspect(timeout=2, destination=["soma@e2e-t"])
    got = i.reserved()["soma@e2e-t"]
    assert [r["id"] for r in got] == [behind.id], got
    (info,) = got
    assert (info["name"], info["type"], info["args"], info["kwargs"]) == ("soma.echo", "soma.echo", [5], {"k": 1})
    assert (info["hostname"], info["time_start"], info["acknowledged"], info["worker_pid"]) == (
        "soma@e2e-t", None, False, None), info
    assert info["delivery_info"]["routing_key"] == "celery", info
    first.revoke(terminate=True)
    assert behind.get(timeout=5) == {"args": [5], "kwargs": {"k": 1}}
    assert i.reserved() == {"soma@e2e-t": []}


def test_query_task_answers_a_reserved_message(node, app, redis_server):
    """Celery 5.2's query_task answers {id: [state, Request.info()]} for the requests a worker
    holds, 'active' or 'reserved', and nothing for an id it does not hold. A message prefetched
    behind a running task was not answered (only running tasks were)."""
    first = app.send_task("soma.sleep", args=[30])
    behind = app.send_task("soma.echo", args=[5], kwargs={"k": 1})
    node()
    wait_until(lambda: running(app, first.id), 10, interval=0.2, what="the sleep to run")
    i = app.control.inspect(timeout=2, destination=["soma@e2e-t"])
    (listed,) = i.reserved()["soma@e2e-t"]
    got = i.query_task(behind.id)["soma@e2e-t"]
    assert got == {behind.id: ["reserved", listed]}, got
    assert sorted(got[behind.id][1]) == ["acknowledged", "args", "delivery_info", "hostname", "id", "kwargs",
                                         "name", "time_start", "type", "worker_pid"], got
    assert i.query_task("not-held-here") == {"soma@e2e-t": {}}
    both = i.query_task([first.id, behind.id, "not-held-here"])["soma@e2e-t"]
    assert sorted(both) == sorted([first.id, behind.id]), both
    assert (both[first.id][0], both[behind.id][0]) == ("active", "reserved"), both
    cli = ["/usr/bin/python3", "-m", "celery", "-b", redis_server.url(), "inspect", "query_task"]
    cp = subprocess.run([*cli, behind.id, "--timeout", "3", "--json"], capture_output=True, text=True, timeout=30,
                        env=clean_env())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads(cp.stdout) == {"soma@e2e-t": {behind.id: ["reserved", listed]}}, cp.stdout
    cp = subprocess.run([*cli, behind.id, "--timeout", "3"], capture_output=True, text=True, timeout=30,
                        env=clean_env())
    assert cp.returncode == 0 and "soma@e2e-t: OK" in cp.stdout and '"reserved"' in cp.stdout, cp.stdout
    first.revoke(terminate=True)
    assert behind.get(timeout=5) == {"args": [5], "kwargs": {"k": 1}}
    assert i.query_task(behind.id) == {"soma@e2e-t": {}}  # done: no longer held


def test_revoke_terminate_of_a_chat_reply_keeps_its_text_and_ends_revoked(node, app, llm):
    llm.control(chunks=60, delay_ms=100)  # a whole reply takes about six seconds
    cap = Capture(app)
    srv = node("celery.events=true")
    try:
        sent = post_message(srv, "a long answer, please")
        sid, tid = sent["session_id"], sent["task_id"]
        with open_stream(srv, sid, after=0, timeout=20) as s:
            s.events(lambda e: e.get("type") == "assistant.delta", timeout=20)
        wait_until(lambda: running(app, tid), 10, interval=0.2, what="the reply to run")
        got = app.control.revoke(tid, terminate=True, reply=True, timeout=3, destination=["soma@e2e-t"])
        assert got == [{"soma@e2e-t": {"ok": f"terminate: {tid}"}}], got
        res = app.AsyncResult(tid)
        wait_until(lambda: res.state != "PENDING", 10, interval=0.1, what="the reply's result")
        assert res.state == "REVOKED", (res.state, res.result)
        assert type(res.result).__name__ == "TaskRevokedError" and "terminated" in str(res.result), res.result
        wait_until(lambda: cap.of("task-revoked", uuid=tid), 5, what="task-revoked")
        (rv,) = cap.of("task-revoked", uuid=tid)
        assert (rv["terminated"], rv["signum"], rv["expired"]) == (True, 15, False), rv
        assert not cap.of("task-succeeded", uuid=tid) and not cap.of("task-failed", uuid=tid)
        r = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "REVOKED", r.text
        # the session holds the text so far as a cancelled final, and the reply is not made again
        finals = [e for e in wait_terminal(srv, sid) if e["type"] == "assistant.final"]
        assert [f["metadata"]["status"] for f in finals] == ["cancelled"], finals
        assert 0 < len(finals[0]["message"]) < 200, finals
        time.sleep(1)
        assert [e["type"] for e in history(srv, sid)].count("assistant.final") == 1
        assert llm.stats()["requests"] == 1 and res.state == "REVOKED"
    finally:
        cap.close()
