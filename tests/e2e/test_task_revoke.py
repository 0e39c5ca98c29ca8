"""POST /v1/tasks/{id}/revoke on the embedded queue: a queued task ends REVOKED and never runs;
a finished task keeps its outcome (409); unknown ids and other tenants' tasks are 404."""

import time

from e2e_util import create_key, http


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
