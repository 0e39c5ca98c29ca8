"""Tenant isolation matrix: tenant B using tenant A's ids gets 404 on every tenant-scoped
endpoint (never 403, never A's data), B's lists never show A's rows, and nothing B tries changes
A's state. One server, one set of A's resources, one row per endpoint."""

import pytest

from e2e_util import (bearer, check_envelope, create_key, history, http, open_stream, post_message,
                      wait_terminal, wait_until)

SECRET = "the secret words of tenant a"


@pytest.fixture(scope="module")
def world(module_soma, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso")
    srv = module_soma("auth.key_refresh_ms=200", data_dir=tmp / "data")
    ka, kb = create_key(tmp / "data", tmp, "tenant-a"), create_key(tmp / "data", tmp, "tenant-b")
    wait_until(lambda: all(http().get(srv.url + "/v1/sessions", headers=bearer(k), timeout=5).status_code == 200
                           for k in (ka, kb)), 5, what="both keys to be picked up")
    up = http().post(srv.url + "/v1/uploads", files={"files": ("a.txt", SECRET.encode(), "text/plain")},
                     headers=bearer(ka), timeout=10)
    assert up.status_code == 200, up.text
    att = up.json()[0]["id"]
    out = post_message(srv, SECRET, token=ka, attachments=[att])
    sid = out["session_id"]
    wait_terminal(srv, sid, token=ka)
    task = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": [SECRET]}, headers=bearer(ka),
                       timeout=5).json()["task_id"]
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{task}", headers=bearer(ka), timeout=5).json()["status"]
               == "SUCCESS", 10, what="a's task to finish")
    return {"srv": srv, "ka": ka, "kb": kb, "sid": sid, "att": att, "task": task, "msg_task": out["task_id"],
            "history": history(srv, sid, token=ka)}


def _cases():
    return [
        ("GET", "/v1/sessions/{sid}", None),
        ("GET", "/v1/sessions/{sid}/history", None),
        ("GET", "/v1/sessions/{sid}/events", None),
        ("GET", "/v1/sessions/{sid}/events?after=0", None),
        ("POST", "/v1/sessions/{sid}/pause", {"paused": True}),
        ("POST", "/v1/sessions/{sid}/cancel", None),
        ("POST", "/v1/sessions/{sid}/reset", None),
        ("DELETE", "/v1/sessions/{sid}", None),
        ("POST", "/v1/session/message", {"session_id": "{sid}", "message": "let me in"}),
        ("POST", "/v1/session/action", {"session_id": "{sid}", "action": "summarize"}),
        ("POST", "/v1/session/message", {"message": "use a's file", "attachments": ["{att}"]}),
        ("GET", "/v1/attachments/{att}", None),
        ("GET", "/v1/tasks/{task}", None),
        ("GET", "/v1/tasks/{msg_task}", None),
    ]


def _fill(v, w):
    if isinstance(v, str):
        for k in ("sid", "att", "task", "msg_task"):
            v = v.replace("{" + k + "}", w[k])
        return v
    if isinstance(v, dict):
        return {k: _fill(x, w) for k, x in v.items()}
    if isinstance(v, list):
        return [_fill(x, w) for x in v]
    return v


@pytest.mark.parametrize("method,path,body", _cases(), ids=[f"{m} {p}" for m, p, _ in _cases()])
def test_other_tenants_ids_are_not_found(world, method, path, body):
    srv = world["srv"]
    r = http().request(method, srv.url + _fill(path, world), json=_fill(body, world), headers=bearer(world["kb"]),
                       timeout=5)
    check_envelope(r, 404)
    assert SECRET not in r.text


def test_other_tenants_streams_uploads_and_lists(world):
    srv, kb, sid = world["srv"], world["kb"], world["sid"]
    check_envelope(open_stream(srv, sid, token=kb, expect=404), 404)
    check_envelope(open_stream(srv, sid, token=kb, after=0, expect=404), 404)
    # an upload into a's session is refused
    r = http().post(srv.url + "/v1/uploads", files={"files": ("b.txt", b"b", "text/plain")},
                    data={"session_id": sid}, headers=bearer(kb), timeout=10)
    check_envelope(r, 404)
    assert http().get(srv.url + "/v1/sessions", headers=bearer(kb), timeout=5).json()["sessions"] == []


def test_nothing_b_tried_changed_a(world):
    # runs after the matrix (file order): a's session, history, attachment and tasks are intact
    srv, ka, sid = world["srv"], world["ka"], world["sid"]
    assert history(srv, sid, token=ka) == world["history"]
    s = http().get(f"{srv.url}/v1/sessions/{sid}", headers=bearer(ka), timeout=5).json()
    assert s["paused"] is False and s["tenant"] == "tenant-a", s
    assert http().get(f"{srv.url}/v1/attachments/{world['att']}", headers=bearer(ka), timeout=5).text == SECRET
    t = http().get(f"{srv.url}/v1/tasks/{world['task']}", headers=bearer(ka), timeout=5).json()
    assert t["status"] == "SUCCESS" and t["result"]["args"] == [SECRET], t
    listed = http().get(srv.url + "/v1/sessions", headers=bearer(ka), timeout=5).json()["sessions"]
    assert [x["session_id"] for x in listed] == [sid]
