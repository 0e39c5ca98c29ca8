"""Focused regression tests for what the crash-consistency work (test_chaos.py) found.

- An early-started chat reply (queue.early_start, queue.driver=local) on PostgreSQL whose message
  went through the group-commit writer instead of a message lane (a message with attachments
  did): its task was inserted `queued` instead of reserved by the worker it was handed to, and the
  commit woke the other workers: a second worker ran it too - two provider calls, two generations
  streaming into the session. The writer now inserts it reserved (pg_chat.c), and a message with
  attachments is no longer started early at all (their ownership is checked by the message's own
  transaction, which an early-started worker would have raced): the test checks both - no
  hand-off, one run.
- A worker of the redis queue that waits for work took a message with BRPOP, then recorded it in
  kombu's `unacked` with a second command: killed between the two (the message delivered, the
  process gone), the message was in no list and no hash - acknowledged to the client, never
  answered, nothing left to restore. The wait is now BLMOVE into a key of the worker's own, which
  the visibility sweep empties back into the queue when its worker is gone."""

import signal
import time

import httpx
import pytest

from e2e_util import (find_samples, history, http, parse_metrics, post_message, store_url, wait_terminal,
                      wait_until)
from servers import RedisServer


def _handed(srv):
    text = http().get(srv.url + "/metrics", timeout=5).text
    return sum(v for _, v in find_samples(parse_metrics(text)[1], "soma_tasks_handed_total"))


def _upload(srv):
    r = httpx.post(f"{srv.url}/v1/uploads", files={"files": ("note.txt", b"some notes\n", "text/plain")}, timeout=10)
    assert r.status_code in (200, 201), r.text
    body = r.json()
    items = body if isinstance(body, list) else body.get("items") or body.get("attachments") or body.get("files")
    return items[0]["id"]


def test_a_message_with_an_attachment_is_not_started_early_and_runs_once(soma, llm):
    srv = soma()
    sid = post_message(srv, "first")["session_id"]
    wait_terminal(srv, sid)  # the pool has grown to two workers; both wait idle now
    llm.control(first_delay_ms=800)  # the handed worker's call is in flight when the commit lands
    handed = _handed(srv)
    out = post_message(srv, "look at this", session_id=sid, attachments=[_upload(srv)])
    evs = wait_terminal(srv, sid, count=2, timeout=20)
    time.sleep(1.5)  # a second run, had there been one, has called the provider by now
    assert _handed(srv) == handed, "a message with attachments was started before its commit checked them"
    assert llm.stats()["requests"] == 2, f"the task ran more than once: {llm.stats()['modes']}"
    evs = history(srv, sid)
    assert [e["type"] for e in evs] == ["user", "assistant.final"] * 2, evs
    assert evs[3]["metadata"]["generation_id"] == out["task_id"]
    wait_until(lambda: http().get(srv.url + "/v1/queues", timeout=5).json()["queues"][0]["reserved"] == 0, 10,
               what="no reservation left")


@pytest.mark.postgres_only
def test_a_worker_killed_as_its_wait_returns_a_message_loses_nothing(soma, llm, tmp_path):
    with RedisServer() as redis:
        r = redis.client()
        common = (f"store.url={store_url(tmp_path / 'fleet')}", "queue.driver=redis", f"redis.url={redis.url()}",
                  "queue.visibility_timeout_s=5")
        gw = soma(*common, role="gateway", data_dir=tmp_path / "g")
        w = soma(*common, role="worker", data_dir=tmp_path / "w")
        sid = post_message(gw, "first")["session_id"]
        wait_terminal(gw, sid, timeout=20)
        # the worker stopped while its threads wait on the queue: the message the gateway relays is
        # handed by Redis to one of the waits (BLMOVE into the thread's inflight key, and the pop
        # script queued behind it records it in unacked), and the process never gets to run it.
        # The message must have been published for that: an empty list alone is also what a relay
        # that has not published it yet leaves (the old check passed on that, never reaching here)
        out = None

        def taken(task_id):
            held = b"".join(r.hvals("unacked")) + b"".join(
                m for k in r.keys("soma-inflight:*") for m in r.lrange(k, 0, -1))
            return r.llen("conversation") == 0 and task_id.encode() in held

        for _ in range(5):
            time.sleep(0.5)  # back to waiting
            w.proc.send_signal(signal.SIGSTOP)
            out = post_message(gw, "second", session_id=sid)
            try:
                wait_until(lambda: taken(out["task_id"]), 5,
                           what="the message taken from the list by a waiting worker thread")
                break
            except AssertionError:  # no thread was waiting when it stopped: the message stays queued
                w.proc.send_signal(signal.SIGCONT)
                wait_terminal(gw, sid, timeout=20, count=2 + _)
                out = None
        assert out is not None, "no worker thread was waiting in five tries"
        w.checked = True
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(timeout=10)
        # another worker: the sweep gives the message back once the visibility timeout has passed
        soma(*common, role="worker", data_dir=tmp_path / "w2")
        evs = wait_terminal(gw, sid, timeout=40, count=sum(e["type"] == "user" for e in history(gw, sid)))
        replies = [e["metadata"]["generation_id"] for e in evs if e["type"] == "assistant.final"]
        assert out["task_id"] in replies, evs
        assert len(replies) == len(set(replies)), f"a task replied twice: {evs}"
