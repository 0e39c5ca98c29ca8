"""The audit trail: session deletions and resets, dead-letter actions and key changes leave rows;
GET /v1/admin/audit lists them newest first, paginated, admin only; rows cannot be changed."""

import httpx

from e2e_util import check_envelope, create_key, http, post_message, run_cli, store_exec, wait_terminal, wait_until


def _bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def audit(srv, token=None, **params):
    r = http().get(srv.url + "/v1/admin/audit", params=params, headers=_bearer(token), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_deletions_and_admin_actions_are_audited(soma):
    srv = soma()
    sid = post_message(srv, "audit me")["session_id"]
    wait_terminal(srv, sid)
    r = http().post(f"{srv.url}/v1/sessions/{sid}/reset", headers={"X-Request-Id": "req-reset-1"}, timeout=5)
    assert r.status_code == 200, r.text
    assert http().delete(f"{srv.url}/v1/sessions/{sid}", timeout=5).status_code == 200
    tid = http().post(srv.url + "/v1/tasks", json={"task": "soma.fail"}, timeout=5).json()["task_id"]
    wait_until(lambda: http().get(f"{srv.url}/v1/tasks/{tid}", timeout=5).json()["status"] == "FAILURE", 10,
               what="the task to fail")
    assert http().delete(f"{srv.url}/v1/dead-letters/{tid}", timeout=5).status_code == 200

    rows = wait_until(lambda: a if len(a := audit(srv)["items"]) >= 3 else None, 5, what=f"3 audit rows: {audit(srv)}")
    assert [(r["action"], r["resource"]) for r in rows] == [
        ("admin.dead_letter.delete", f"task:{tid}"), ("session.delete", f"session:{sid}"),
        ("session.reset", f"session:{sid}")], rows
    reset = rows[2]
    assert reset["tenant"] == "default" and reset["subject"] == "anonymous" and reset["decision"] == "done"
    assert reset["request_id"] == "req-reset-1" and reset["at"].endswith("Z"), reset
    assert rows[0]["id"] > rows[1]["id"] > rows[2]["id"]

    # pages of one, following next_cursor, give the same rows
    seen, cursor = [], None
    while True:
        page = audit(srv, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == rows
    check_envelope(http().get(srv.url + "/v1/admin/audit?cursor=abc", timeout=5), 400, "invalid_cursor")
    check_envelope(http().get(srv.url + "/v1/admin/audit?tenant=bad%20id", timeout=5), 400, "invalid_tenant")
    assert audit(srv, tenant="someone.else")["items"] == []  # tenant ids may hold dots

    # the table refuses changes, whoever asks (SQLite's triggers, or PostgreSQL's)
    for sql in ("UPDATE audit SET decision = 'allow'", "DELETE FROM audit"):
        try:
            store_exec(srv.data_dir, sql)
            raise AssertionError(f"{sql} was allowed")
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - sqlite3.DatabaseError or psycopg2.Error
            assert "append-only" in str(e), e


def test_key_changes_from_the_cli_are_audited_and_only_admins_read_the_trail(soma, tmp_path):
    srv = soma("auth.key_refresh_ms=200")
    user = create_key(srv.data_dir, tmp_path, "acme")
    admin = create_key(srv.data_dir, tmp_path, "ops", scope="admin")
    key_id = user.split("_")[1]
    cp = run_cli(["keys", "revoke", key_id, "--set", f"data.dir={srv.data_dir}"], tmp_path)
    assert cp.returncode == 0, cp.stderr
    wait_until(lambda: httpx.get(srv.url + "/v1/admin/audit", headers=_bearer(admin), timeout=5).status_code == 200,
               5, what="the admin key to be picked up")
    rows = audit(srv, admin)["items"]
    assert [(r["action"], r["tenant"], r["subject"]) for r in rows[:3]] == [
        ("key.revoke", "acme", "cli"), ("key.create", "ops", "cli"), ("key.create", "acme", "cli")], rows
    assert rows[0]["resource"] == f"key:{key_id}"
    text = str(rows)
    assert user not in text and admin not in text, "a token leaked into the audit trail"
    other = create_key(srv.data_dir, tmp_path, "acme")
    wait_until(lambda: httpx.get(srv.url + "/v1/admin/audit", headers=_bearer(other), timeout=5).status_code == 403,
               5, what="403 for a key without scope admin")
    check_envelope(httpx.get(srv.url + "/v1/admin/audit", headers=_bearer(other), timeout=5), 403, "forbidden")
    check_envelope(httpx.get(srv.url + "/v1/admin/audit", timeout=5), 401, "unauthorized")
