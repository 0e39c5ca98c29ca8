"""Focused regression tests for what the crash-consistency work (test_chaos.py) found.

- An early-started chat reply (queue.early_start, queue.driver=local) on PostgreSQL whose message
  goes through the group-commit writer instead of a message lane (a message with attachments
  does): its task must be inserted already reserved by the worker it was handed to, as on the
  lanes and on SQLite. It was inserted `queued`, and the commit woke the other workers: a second
  worker reserved the same task and ran it too - two provider calls, two generations streaming
  into the session (the second's final refused as a duplicate)."""

import time

import httpx
import pytest

from e2e_util import find_samples, history, http, parse_metrics, post_message, wait_terminal, wait_until


def _handed(srv):
    text = http().get(srv.url + "/metrics", timeout=5).text
    return sum(v for _, v in find_samples(parse_metrics(text)[1], "soma_tasks_handed_total"))


def _upload(srv):
    r = httpx.post(f"{srv.url}/v1/uploads", files={"files": ("note.txt", b"some notes\n", "text/plain")}, timeout=10)
    assert r.status_code in (200, 201), r.text
    body = r.json()
    items = body if isinstance(body, list) else body.get("items") or body.get("attachments") or body.get("files")
    return items[0]["id"]


@pytest.mark.postgres_only
def test_an_early_started_message_with_an_attachment_runs_once(soma, llm):
    srv = soma()
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)  # the pool has grown to two workers; both wait idle now
    llm.control(first_delay_ms=800)  # the handed worker's call is in flight when the commit lands
    handed = _handed(srv)
    out = post_message(srv, "look at this", session_id=sid, attachments=[_upload(srv)])
    evs = wait_terminal(srv, sid, count=2, timeout=20)
    time.sleep(1.5)  # a second run, had there been one, has called the provider by now
    assert _handed(srv) == handed + 1, "the message was not handed over: the test proves nothing"
    assert llm.stats()["requests"] == 2, f"the task ran more than once: {llm.stats()['modes']}"
    evs = history(srv, sid)
    assert [e["type"] for e in evs] == ["user", "assistant.final"] * 2, evs
    assert evs[3]["metadata"]["generation_id"] == out["task_id"]
    wait_until(lambda: http().get(srv.url + "/v1/queues", timeout=5).json()["queues"][0]["reserved"] == 0, 10,
               what="no reservation left")
