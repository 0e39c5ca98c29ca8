"""tasks/cancel stops the task's own generation only (reference/interop.md §3.2): not the other
tasks of its context, nor a reply the web UI is waiting for in the same session; a task still
queued is stopped when a worker takes it; a task that ended answers -32002."""

import time

from a2a_util import error, msg03, result
from e2e_util import history, post_message, wait_until


def _state(srv, task):
    return result(srv, "tasks/get", {"id": task["id"]})["status"]["state"]


def _wait_ended(srv, task, timeout=20):
    return wait_until(lambda: (s := _state(srv, task)) not in ("working", "submitted") and s, timeout,
                      what=f"task {task['id']} to end")


def test_cancel_stops_only_that_task_of_the_context(soma, llm):
    srv = soma()
    ctx = result(srv, "message/send", msg03("one"))["contextId"]
    llm.control(delay_ms=200, chunks=15)
    a = result(srv, "message/send", dict(msg03("A", contextId=ctx), configuration={"blocking": False}))
    time.sleep(1.0)
    b = result(srv, "message/send", dict(msg03("B", contextId=ctx), configuration={"blocking": False}))
    time.sleep(0.5)  # both replies are being generated
    assert result(srv, "tasks/cancel", {"id": a["id"]})["status"]["state"] == "canceled"
    assert _wait_ended(srv, a) == "canceled"
    assert _wait_ended(srv, b) == "completed"
    # and cancelling the other one then stops it, not a finished one
    assert error(srv, "tasks/cancel", {"id": a["id"]})["error"]["code"] == -32002


def test_cancel_leaves_the_web_reply_of_the_session(soma, llm):
    srv = soma()
    ctx = result(srv, "message/send", msg03("one"))["contextId"]
    llm.control(delay_ms=200, chunks=15)
    post_message(srv, "web UI message", session_id=ctx)
    time.sleep(0.3)
    b = result(srv, "message/send", dict(msg03("B", contextId=ctx), configuration={"blocking": False}))
    time.sleep(0.5)
    assert result(srv, "tasks/cancel", {"id": b["id"]})["status"]["state"] == "canceled"
    assert _wait_ended(srv, b) == "canceled"

    def finals():
        return [e for e in history(srv, ctx) if e["type"] == "assistant.final"]
    wait_until(lambda: len(finals()) == 3, 20, what="both replies")
    by_status = sorted(e["metadata"].get("status") for e in finals()[1:])
    assert by_status == ["cancelled", "completed"], finals()
    web = [e for e in finals()[1:] if e["metadata"].get("status") == "completed"][0]
    assert web["message"].startswith("Hello from the fake model"), web


def test_cancel_of_a_queued_task_stops_it_when_it_starts(soma, llm):
    srv = soma("queue.conversation.concurrency=1")
    llm.control(delay_ms=150, chunks=15)
    first = result(srv, "message/send", dict(msg03("busy"), configuration={"blocking": False}))
    time.sleep(0.5)
    queued = result(srv, "message/send", dict(msg03("waiting"), configuration={"blocking": False}))
    assert result(srv, "tasks/cancel", {"id": queued["id"]})["status"]["state"] == "canceled"
    assert _wait_ended(srv, first) == "completed"
    assert _wait_ended(srv, queued) == "canceled"
