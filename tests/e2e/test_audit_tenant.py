"""An operator's change to another tenant's data is audited under that tenant (docs/security.md:
"The tenant of a row is the tenant whose data changed"), with the operator's subject and key:
dead-letter requeue and delete (both stores) and a revoke on queue.driver=redis, where an admin
may revoke any tenant's task. The memory outbox's retry and drop are checked in test_memory.py."""

import pytest

from celery_util import redis_sets
from e2e_util import create_key, http, wait_until
from servers import RedisServer


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def key_id(token):
    return token.split("_")[1]


def audit(srv, admin, tenant, tid):
    """tenant's audit rows about task tid, newest first."""
    r = http().get(srv.url + "/v1/admin/audit", params={"tenant": tenant}, headers=bearer(admin), timeout=5)
    assert r.status_code == 200, r.text
    return [row for row in r.json()["items"] if row["resource"] == f"task:{tid}"]


def status(srv, token, tid):
    return http().get(f"{srv.url}/v1/tasks/{tid}", headers=bearer(token), timeout=5).json()["status"]


def check_row(row, action, tid, admin):
    assert (row["action"], row["resource"], row["tenant"]) == (action, f"task:{tid}", "victim"), row
    assert row["subject"] == f"key:{key_id(admin)}" and row["key_id"] == key_id(admin), row


def test_dead_letter_changes_are_audited_under_the_tasks_tenant(soma, tmp_path):
    data = tmp_path / "data"
    victim = create_key(data, tmp_path, "victim")
    admin = create_key(data, tmp_path, "ops", scope="admin")
    srv = soma()
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.fail", "max_retries": 0}, headers=bearer(victim),
                    timeout=5)
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]
    wait_until(lambda: status(srv, victim, tid) == "FAILURE", 10, what="the task to fail")
    r = http().post(f"{srv.url}/v1/dead-letters/{tid}/requeue", headers=bearer(admin), timeout=5)
    assert r.status_code == 200, r.text
    # requeued, it runs again, fails again and is a dead letter again
    wait_until(lambda: tid in [d["task_id"] for d in http().get(srv.url + "/v1/dead-letters", headers=bearer(admin),
                                                                   timeout=5).json()["items"]],
               10, what="the requeued task to fail again")
    r = http().delete(f"{srv.url}/v1/dead-letters/{tid}", headers=bearer(admin), timeout=5)
    assert r.status_code == 200, r.text

    rows = wait_until(lambda: a if len(a := audit(srv, admin, "victim", tid)) >= 2 else None, 5,
                      what="the victim's two audit rows")
    check_row(rows[0], "admin.dead_letter.delete", tid, admin)
    check_row(rows[1], "admin.dead_letter.requeue", tid, admin)
    assert audit(srv, admin, "ops", tid) == []


@pytest.fixture
def redis():
    with RedisServer() as r:
        yield r


def test_admin_revoke_on_redis_is_audited_under_the_tasks_tenant(soma, tmp_path, redis):
    data = tmp_path / "data"
    victim = create_key(data, tmp_path, "victim")
    admin = create_key(data, tmp_path, "ops", scope="admin")
    srv = soma(*redis_sets(redis))
    r = http().post(srv.url + "/v1/tasks", json={"task": "soma.echo", "args": [1], "countdown": 3600},
                    headers=bearer(victim), timeout=5)
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]
    # relayed: Redis knows the task's owner (else the revoke could not tell whose it is)
    wait_until(lambda: redis.client().get(f"soma-task-owner-{tid}") == b"victim", 10, what="the task to be relayed")
    r = http().post(f"{srv.url}/v1/tasks/{tid}/revoke", headers=bearer(admin), timeout=5)
    assert r.status_code == 202, r.text
    rows = wait_until(lambda: audit(srv, admin, "victim", tid) or None, 5, what="the victim's audit row")
    check_row(rows[0], "task.revoke", tid, admin)
    assert audit(srv, admin, "ops", tid) == []
