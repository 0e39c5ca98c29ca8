"""The task API on the embedded queue: POST /v1/tasks with the built-in diagnostic tasks,
GET /v1/tasks/{id}, the operators' views (queues, workers, dead letters with requeue and drop),
tenant isolation and the admin scope; and stopping a reply (POST /v1/sessions/{id}/cancel)."""

import time

from e2e_util import (check_envelope, create_key, http, open_stream, post_message, wait_terminal,
                      wait_until)


def _bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def publish(srv, token=None, expect=202, **body):
    r = http().post(srv.url + "/v1/tasks", json=body, headers=_bearer(token), timeout=5)
    assert r.status_code == expect, r.text
    if expect != 202:
        return r
    out = r.json()
    assert out["status"] == "PENDING" and len(out["task_id"]) == 36, out
    return out["task_id"]


def task(srv, tid, token=None):
    r = http().get(f"{srv.url}/v1/tasks/{tid}", headers=_bearer(token), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(srv, tid, statuses, token=None, timeout=10):
    return wait_until(lambda: (t := task(srv, tid, token))["status"] in statuses and t, timeout,
                      what=f"task {tid} to reach {statuses}")


def queue(srv, name, token=None):
    r = http().get(srv.url + "/v1/queues", headers=_bearer(token), timeout=5)
    assert r.status_code == 200, r.text
    found = [q for q in r.json()["queues"] if q["name"] == name]
    assert len(found) == 1, r.json()
    return found[0]


def test_echo_runs_and_reports_success(server):
    tid = publish(server, task="soma.echo", args=[1, "two"], kwargs={"k": [3]})
    t = wait_status(server, tid, {"SUCCESS"})
    assert t["result"] == {"args": [1, "two"], "kwargs": {"k": [3]}}, t
    assert t["error"] is None and t["completed_at"].endswith("Z"), t
    check_envelope(http().get(server.url + "/v1/tasks/no-such-task", timeout=5), 404, "not_found")


def test_permanent_failure_is_a_dead_letter_that_can_be_requeued_and_dropped(soma):
    srv = soma("queue.retry_backoff_ms=50")
    tid = publish(srv, task="soma.fail", kwargs={"message": "boom on purpose"})
    t = wait_status(srv, tid, {"FAILURE"})
    assert t["error"] == "boom on purpose" and t["dead_letter"] is True, t
    dead = http().get(srv.url + "/v1/dead-letters", timeout=5).json()
    assert [d["task_id"] for d in dead["items"]] == [tid] and dead["next_cursor"] is None, dead
    assert dead["items"][0]["error"] == "boom on purpose" and dead["items"][0]["task"] == "soma.fail"
    assert queue(srv, "celery")["dead"] == 1

    r = http().post(f"{srv.url}/v1/dead-letters/{tid}/requeue", timeout=5)
    assert r.status_code == 200 and r.json() == {"task_id": tid, "status": "requeued"}, r.text
    # it runs again (and fails again: it is soma.fail) -> a dead letter once more
    wait_until(lambda: http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"], 10,
               what="the requeued task to fail again")
    r = http().delete(f"{srv.url}/v1/dead-letters/{tid}", timeout=5)
    assert r.status_code == 200 and r.json() == {"task_id": tid, "status": "deleted"}, r.text
    assert http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"] == []
    check_envelope(http().delete(f"{srv.url}/v1/dead-letters/{tid}", timeout=5), 404, "not_found")
    check_envelope(http().post(f"{srv.url}/v1/dead-letters/{tid}/requeue", timeout=5), 404, "not_found")


def test_retryable_failure_is_retried_then_dead_lettered(soma):
    srv = soma("queue.retry_backoff_ms=20")
    tid = publish(srv, task="soma.fail", kwargs={"retryable": True}, max_retries=2)
    t = wait_status(srv, tid, {"FAILURE"}, timeout=15)
    assert t["retries"] == 2 and t["dead_letter"] is True, t


def test_dead_letters_paginate(soma):
    srv = soma()
    ids = [publish(srv, task="soma.fail") for _ in range(5)]
    for tid in ids:
        wait_status(srv, tid, {"FAILURE"})
    seen, cursor = [], None
    for _ in range(5):
        url = srv.url + "/v1/dead-letters?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = http().get(url, timeout=5).json()
        assert len(page["items"]) <= 2, page
        seen += [d["task_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5, seen
    check_envelope(http().get(srv.url + "/v1/dead-letters?cursor=garbage", timeout=5), 400, "invalid_cursor")


def test_queue_depth_workers_and_countdown(soma):
    srv = soma("queue.celery.concurrency=2")
    sleepers = [publish(srv, task="soma.sleep", kwargs={"seconds": 1.5}) for _ in range(5)]
    later = publish(srv, task="soma.noop", countdown=30)
    q = wait_until(lambda: (q := queue(srv, "celery"))["reserved"] == 2 and q, 5, what="two running sleepers")
    assert q["depth"] == 3 and q["delayed"] == 1 and q["consumers"] == 2 and q["busy"] == 2, q
    workers = http().get(srv.url + "/v1/workers", timeout=5).json()["workers"]
    busy = [w for w in workers if w["queue"] == "celery" and w["state"] == "busy"]
    assert len(busy) == 2 and all(w["task"] == "soma.sleep" and w["task_id"] in sleepers for w in busy), workers
    for tid in sleepers:
        wait_status(srv, tid, {"SUCCESS"}, timeout=15)
    q = queue(srv, "celery")
    assert q["depth"] == 0 and q["reserved"] == 0 and q["delayed"] == 1 and q["rate_1m"] > 0, q
    assert task(srv, later)["status"] == "PENDING"


def test_bad_task_requests_change_nothing(server):
    cases = [
        ({"args": []}, 400, "invalid_task"),
        ({"task": "has spaces"}, 400, "invalid_task"),
        ({"task": "soma.echo", "args": {"a": 1}}, 400, "invalid_args"),
        ({"task": "soma.echo", "kwargs": [1]}, 400, "invalid_kwargs"),
        ({"task": "soma.echo", "queue": "nope"}, 422, "unknown_queue"),
        ({"task": "soma.echo", "countdown": -1}, 400, "invalid_countdown"),
        ({"task": "soma.echo", "max_retries": "3"}, 400, "invalid_max_retries"),
        ({"task": "soma.echo", "eta": "tomorrow"}, 400, "invalid_eta"),
        ({"task": "soma.echo", "priority": 10}, 400, "invalid_priority"),
        ({"task": "soma.echo", "idempotency_key": "k"}, 422, "unsupported_field"),
    ]
    for body, status, code in cases:
        check_envelope(http().post(server.url + "/v1/tasks", json=body, timeout=5), status, code)
    check_envelope(http().post(server.url + "/v1/tasks", content=b"{nope", timeout=5), 400)
    assert queue(server, "celery")["depth"] == 0


def test_tenants_and_admin_scope(soma, tmp_path):
    srv = soma("auth.key_refresh_ms=200")
    acme = create_key(srv.data_dir, tmp_path, "acme")
    evil = create_key(srv.data_dir, tmp_path, "evil")
    admin = create_key(srv.data_dir, tmp_path, "ops", scope="admin")
    wait_until(lambda: all(http().get(srv.url + "/v1/runtime-config", headers=_bearer(k), timeout=5).status_code
                           == 200 for k in (acme, evil, admin)), 5, what="the keys to be picked up")
    mine = publish(srv, token=acme, task="soma.fail")
    wait_status(srv, mine, {"FAILURE"}, token=acme)
    # another tenant cannot see it, and is not an operator
    check_envelope(http().get(f"{srv.url}/v1/tasks/{mine}", headers=_bearer(evil), timeout=5), 404, "not_found")
    for method, path in (("GET", "/v1/queues"), ("GET", "/v1/workers"), ("GET", "/v1/dead-letters"),
                         ("POST", f"/v1/dead-letters/{mine}/requeue"), ("DELETE", f"/v1/dead-letters/{mine}")):
        r = http().request(method, srv.url + path, headers=_bearer(acme), timeout=5)
        check_envelope(r, 403, "forbidden")
    # the operator sees every tenant's dead letters
    items = http().get(srv.url + "/v1/dead-letters", headers=_bearer(admin), timeout=5).json()["items"]
    assert [(d["task_id"], d["tenant"]) for d in items] == [(mine, "acme")], items


def test_stop_keeps_the_partial_reply(soma, llm):
    llm.control(chunks=200, delay_ms=30)  # about 6 s of reply
    srv = soma()
    out = post_message(srv, "tell me a long story")
    sid = out["session_id"]
    with open_stream(srv, sid, after=0) as s:
        s.events(lambda e: e["type"] == "assistant.delta" and e["metadata"]["stream_index"] >= 3, timeout=8)
        t0 = time.monotonic()
        r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=5)
        assert r.status_code == 200 and r.json() == {"session_id": sid, "status": "cancelled"}, r.text
        frames = s.events(lambda e: e["type"] in ("assistant.final", "assistant.error"), timeout=5)
        took = time.monotonic() - t0
    final = frames[-1][1]
    assert final["type"] == "assistant.final" and final["metadata"]["status"] == "cancelled", final
    deltas = "".join(e["message"] for _, e in frames if e["type"] == "assistant.delta")
    assert final["message"] and final["message"].endswith(deltas), (final["message"], deltas)
    assert took < 2, f"the stop took {took:.1f} s"
    evs = wait_terminal(srv, sid)
    assert [e["type"] for e in evs] == ["user", "assistant.final"] and evs[1] == final, evs
    assert task(srv, out["task_id"])["status"] == "SUCCESS"
    # nothing running now: the stop says so; another tenant's or an unknown session is not found
    r = http().post(f"{srv.url}/v1/sessions/{sid}/cancel", timeout=5)
    assert r.json() == {"session_id": sid, "status": "idle"}, r.text
    check_envelope(http().post(f"{srv.url}/v1/sessions/nope/cancel", timeout=5), 404, "not_found")


def test_dead_letters_with_long_ids_page_through_whole(soma):
    """Task ids may be 255 characters (Celery's limit), ':' and non-ASCII included; the dead
    letters' cursor carries the last id whole. Before, it was cut at 128 bytes: the second page
    was refused (400 invalid_cursor) or started at the wrong place."""
    srv = soma("queue.retry_backoff_ms=50")
    ids = [f"acme:report:{i}:" + "é" * 120 + "x" * (255 - 14 - 120) for i in range(3)]
    assert all(len(i) == 255 for i in ids)
    for tid in ids:
        r = http().post(srv.url + "/v1/tasks", json={"task": "soma.fail", "task_id": tid, "kwargs": {"message": "dead"}},
                        timeout=5)
        assert r.status_code == 202 and r.json()["task_id"] == tid, r.text
    wait_until(lambda: len(http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"]) == 3, 15,
               what="three dead letters")
    seen, cursor = [], None
    for _ in range(5):
        r = http().get(srv.url + "/v1/dead-letters", params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                       timeout=5)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [d["task_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3, seen
