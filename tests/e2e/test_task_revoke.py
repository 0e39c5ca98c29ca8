"""POST /v1/tasks/{id}/revoke on the embedded queue: a queued task ends REVOKED and never runs;
a finished task keeps its outcome (409); unknown ids and other tenants' tasks are 404. A task
that expires before it runs, or is revoked once a worker holds it, ends REVOKED too: not a
FAILURE, not a dead letter."""

import time

from e2e_util import create_key, http, wait_until


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_revoke_queued_task_never_runs(soma):
    srv = soma()
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": [1], "countdown": 2}, timeout=5)
    tid = r.json()["task_id"]
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5)
    assert r.status_code == 202, r.text
    assert r.json() == {"task_id": tid, "status": "REVOKED", "revoked": True}
    time.sleep(3)  # past its countdown: it would have run by now
    got = http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json()
    assert got["status"] == "REVOKED" and got["result"] is None, got
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5)
    assert r.status_code == 409 and r.json()["error"]["code"] == "task_finished", r.text


def test_revoke_finished_unknown_and_other_tenant(soma, tmp_path):
    data = tmp_path / "data"
    alice = create_key(data, tmp_path, "alice")
    bob = create_key(data, tmp_path, "bob")
    srv = soma()
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.noop"}, headers=bearer(alice), timeout=5)
    tid = r.json()["task_id"]
    deadline = time.monotonic() + 10
    while http().get(f"{srv.url}/v1/tasks/{tid}", headers=bearer(alice)).json()["status"] != "SUCCESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", headers=bearer(alice), timeout=5)
    assert r.status_code == 409 and "SUCCESS" in r.json()["error"]["message"], r.text
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", headers=bearer(bob), timeout=5)
    assert r.status_code == 404, r.text
    r = http().post(f"{srv.url}/v1/tasks/no-such-task/revoke", headers=bearer(alice), timeout=5)
    assert r.status_code == 404, r.text
    r = http().post(f"{srv.url}/v1/tasks/bad%20id/revoke", headers=bearer(alice), timeout=5)
    assert r.status_code == 404, r.text


def _dead_ids(srv):
    return [d["task_id"] for d in http().get(srv.url + "/v1/dead-letters", timeout=5).json()["items"]]


def test_expired_task_ends_revoked_not_dead_lettered(soma):
    srv = soma()
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "countdown": 2, "expires": 1}, timeout=5)
    tid = r.json()["task_id"]
    got = wait_until(lambda: (g := http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json())["status"]
                     not in ("PENDING", "STARTED") and g, 10, what="the expired task to be skipped")
    assert got["status"] == "REVOKED" and got["error"] == "expired" and got["result"] is None, got
    assert not got["dead_letter"], got
    assert tid not in _dead_ids(srv)


def test_task_revoked_while_held_for_its_rate_limit_ends_revoked(soma):
    """Revoked after a worker reserved it (it waits for its rate-limit token): the worker skips it."""
    srv = soma("queue.rate_limits=soma.echo=20/m")
    first = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo"}, timeout=5).json()["task_id"]
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{first}").json()["status"] == "SUCCESS", 10,
               what="the first task (the burst token)")
    tid = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo"}, timeout=5).json()["task_id"]
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{tid}").json()["status"] == "STARTED", 5,
               what="a worker to hold the task")
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", timeout=5)
    assert r.status_code == 202, r.text
    got = wait_until(lambda: (g := http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json())["status"]
                     != "STARTED" and g, 10, what="the worker to skip the revoked task")
    assert got["status"] == "REVOKED" and got["error"] == "revoked" and not got["dead_letter"], got
    assert tid not in _dead_ids(srv)
